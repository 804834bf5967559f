"""The build/ caches' reader and writer (tasks/fileio.py): owner-only, atomic, never through a link."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from tasks.fileio import read_private_json, tmp_name, write_private_json


def test_a_cache_is_written_owner_only_from_its_first_byte_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    old = os.umask(0)
    try:
        assert write_private_json(path, {"hosts": ["zephyr"], "n": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert read_private_json(path) == {"hosts": ["zephyr"], "n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json"]  # no temporary left


def test_a_leftover_temporary_of_our_pid_is_replaced_not_written_through(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    (tmp_path / tmp_name(path.name)).symlink_to(victim)  # what a killed run (or someone else) left
    assert write_private_json(path, [1, 2])
    assert victim.read_text() == "untouched\n" and read_private_json(path) == [1, 2]


def test_a_cache_that_is_a_link_or_writable_by_others_is_not_believed(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    assert write_private_json(real, {"a": 1})
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert read_private_json(link) is None
    os.chmod(real, 0o622)
    assert read_private_json(real) is None
    os.chmod(real, 0o600)
    assert read_private_json(real) == {"a": 1}
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    assert read_private_json(fifo) is None  # no hang on a planted FIFO


def test_what_json_cannot_hold_costs_only_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    assert not write_private_json(path, {"x": float("nan")})
    assert not write_private_json(path, {"x": object()})
    assert list(tmp_path.iterdir()) == []
    path.write_text("{cut off")
    os.chmod(path, 0o600)
    assert read_private_json(path) is None
