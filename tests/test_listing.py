"""A plain `doit list` from the last run's summary of top-level tasks (tasks/listing.py)."""
from __future__ import annotations

from pathlib import Path

from conftest import PROJECT, copy_site

from tasks import listing


def test_doit_list_prints_what_a_full_load_prints_and_follows_site_yaml(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    summary = site.root / listing.SUMMARY
    full = site.doit("list").stdout  # no summary yet: every task loaded
    assert "render" in full and "http://192.0.2.5/boot/" in full and not summary.exists()
    site.doit("render")  # a run writes the summary
    assert summary.stat().st_mode & 0o777 == 0o600
    assert site.doit("list").stdout == full
    site.edit("nodes/notus.yaml", "panic=30,", "panic=31,")  # a host edit changes no top-level name or doc
    assert site.doit("list").stdout == full
    site.edit("site.yaml", "http_base: http://192.0.2.5/boot", "http_base: http://192.0.2.6/boot")
    listed = site.doit("list").stdout  # site.yaml changed: the summary is not used
    assert "http://192.0.2.6/boot/" in listed and "http://192.0.2.5/boot/" not in listed
    assert site.doit("list", "--all").stdout.count("\n") > listed.count("\n")


def test_doit_list_follows_what_doit_cfg_asks_of_it(tmp_path: Path) -> None:
    """`doit list` where doit.cfg says `[list] subtasks = True` prints every subtask too, as `doit list
    --all` does: the summary (top-level names and docs only) is not used then."""
    site = copy_site(PROJECT, tmp_path / "site")
    site.doit("render")  # a run writes the summary
    here = tmp_path / "here"
    here.mkdir()
    (here / "doit.cfg").write_text("[list]\nsubtasks = True\n")  # the option `--all` sets
    every = site.doit("list", cwd=here).stdout
    assert every == site.doit("list", "--all").stdout and "render:site" in every
    (here / "doit.cfg").write_text("[list]\nquiet = True\n")  # what a plain `doit list -q` prints
    assert site.doit("list", cwd=here).stdout == site.doit("list", "-q").stdout
