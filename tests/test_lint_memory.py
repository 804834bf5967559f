"""A shape shellcheck (or grub-script-check) found clean in an earlier run is not checked again
(tasks/lint.CleanShapes): a host edit that changes values alone runs no checker, and nothing
else is skipped. The checkers are the real ones; the tests only count their runs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tasks import lint
from tasks.layout import CLEAN_SHAPES

CLEAN = "#!/bin/sh\n# generated for {host}\nCEPHBOOT_HOST='{host}'\nexport CEPHBOOT_HOST\necho \"$CEPHBOOT_HOST\"\n"


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """A site folder with build/ (the memory lives in build/state), and every shellcheck run recorded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "build").mkdir(mode=0o700)
    runs: list[list[str]] = []
    real = lint.shellcheck

    def shellcheck(files: list[str]) -> bool:
        runs.append(files)
        return real(files)

    monkeypatch.setattr(lint, "shellcheck", shellcheck)
    return runs


def conf(tmp_path: Path, host: str, text: str = CLEAN) -> str:
    p = tmp_path / f"{host}.sh"
    p.write_text(text.format(host=host))
    return str(p)


def test_a_shape_found_clean_is_not_checked_again_by_the_same_shellcheck(tmp_path: Path, counted: list[list[str]]) -> None:
    assert lint.lint_changed([conf(tmp_path, "zephyr")])
    assert len(counted) == 1
    assert lint.lint_changed([conf(tmp_path, "notus")])  # another host, the same shape: remembered
    assert len(counted) == 1
    assert (CLEAN_SHAPES.stat().st_mode & 0o777) == 0o600
    other = conf(tmp_path, "eurus", CLEAN + "if [ -n \"$CEPHBOOT_HOST\" ]; then echo set; fi\n")  # a new shape
    assert lint.lint_changed([other])
    assert counted[-1] == [other]


def test_a_shape_with_findings_is_checked_on_every_run(tmp_path: Path, counted: list[list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    bad = conf(tmp_path, "zephyr", CLEAN + "echo $1\n")
    assert not lint.lint_changed([bad])
    assert not lint.lint_changed([bad])  # never remembered: it fails again, with its findings
    assert len(counted) == 2
    assert capsys.readouterr().err.count("SC2086") == 2


def test_another_shellcheck_or_rcfile_forgets_every_shape(tmp_path: Path, counted: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    assert lint.lint_changed([conf(tmp_path, "zephyr")])
    monkeypatch.setattr(lint, "shellcheck_key", lambda: "another shellcheck binary or rcfile")
    assert lint.lint_changed([conf(tmp_path, "notus")])
    assert len(counted) == 2


def test_a_memory_not_ours_or_a_link_is_not_believed(tmp_path: Path, counted: list[list[str]]) -> None:
    assert lint.lint_changed([conf(tmp_path, "zephyr")])
    remembered = CLEAN_SHAPES.read_bytes()
    CLEAN_SHAPES.chmod(0o666)  # anyone may write it: a planted memory
    assert lint.lint_changed([conf(tmp_path, "notus")])
    assert len(counted) == 2
    planted = tmp_path / "planted"
    planted.write_bytes(remembered)
    planted.chmod(0o600)
    CLEAN_SHAPES.unlink()
    os.symlink(planted, CLEAN_SHAPES)
    assert lint.lint_changed([conf(tmp_path, "eurus")])
    assert len(counted) == 3
    assert planted.read_bytes() == remembered  # the memory is written anew, never through the link
    assert not CLEAN_SHAPES.is_symlink()


def test_grub_script_check_remembers_clean_shapes_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not __import__("shutil").which("grub-script-check"):
        pytest.fail("grub-script-check is missing: scripts/setup installs grub-common")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "build").mkdir(mode=0o700)
    runs: list[list[str]] = []
    real = lint.subprocess.run
    monkeypatch.setattr(lint.subprocess, "run", lambda cmd, **kw: runs.append(cmd) or real(cmd, **kw))
    good = [conf(tmp_path, h, "set default='{host}'\nmenuentry 'Linux' {{\n  linux /vmlinuz\n}}\n") for h in ("zephyr", "notus")]
    assert lint.grub_script_check(good[:1]) is None
    assert lint.grub_script_check(good[1:]) is None
    assert len(runs) == 1
    assert "grub-script-check" in json.loads(CLEAN_SHAPES.read_text())
