"""Templates' compiled code kept in build/state/templates/ (tasks/templating._code_cache): loaded
only when it is ours, nobody else may write it, it is no link and it was compiled from the
template's source as it is now, by this Jinja and this Python; written owner-only."""
from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pytest

from tasks import templating
from tasks.layout import TEMPLATE_CODE


@pytest.fixture
def site_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "build/state").mkdir(parents=True, mode=0o700)
    return tmp_path


def environment(sources: dict[str, str]) -> tuple[jinja2.Environment, list[str]]:
    """A fresh environment (a new process, as far as the cache can tell) that records what it compiles."""
    compiled: list[str] = []

    class Counting(jinja2.Environment):
        def compile(self, source, name=None, filename=None, raw=False, defer_init=False):  # type: ignore[no-untyped-def,override]
            compiled.append(name)
            return super().compile(source, name, filename, raw, defer_init)

    return Counting(loader=jinja2.DictLoader(sources), bytecode_cache=templating._code_cache(jinja2)), compiled


def test_a_template_compiled_once_is_loaded_by_the_next_run(site_dir: Path) -> None:
    first, compiled = environment({"t.j2": "hello {{ who }}"})
    assert first.get_template("t.j2").render(who="zephyr") == "hello zephyr"
    assert compiled == ["t.j2"]
    kept = list(TEMPLATE_CODE.iterdir())
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600
    second, compiled = environment({"t.j2": "hello {{ who }}"})
    assert second.get_template("t.j2").render(who="notus") == "hello notus"
    assert compiled == []
    edited, compiled = environment({"t.j2": "goodbye {{ who }}"})  # the source changed: compiled again
    assert edited.get_template("t.j2").render(who="notus") == "goodbye notus"
    assert compiled == ["t.j2"]


def planted_code(site_dir: Path) -> Path:
    """A kept file whose code is another template's (what an attacker would want loaded)."""
    env, _ = environment({"t.j2": "hello {{ who }}"})
    env.get_template("t.j2")
    kept, = TEMPLATE_CODE.iterdir()
    other, _ = environment({"evil.j2": "owned"})
    code = other.compile("owned", "t.j2")
    head = kept.read_bytes().split(b"\n", 1)[0]
    import marshal

    kept.write_bytes(head + b"\n" + marshal.dumps(code))
    return kept


def test_the_right_head_and_code_of_ours_is_trusted_like_the_code_itself(site_dir: Path) -> None:
    planted_code(site_dir)  # ours, 0600: as trusted as templates/ (only we can write either)
    env, compiled = environment({"t.j2": "hello {{ who }}"})
    assert env.get_template("t.j2").render(who="x") == "owned" and compiled == []


def test_code_anyone_may_write_is_not_loaded(site_dir: Path) -> None:
    planted_code(site_dir).chmod(0o666)
    env, compiled = environment({"t.j2": "hello {{ who }}"})
    assert env.get_template("t.j2").render(who="x") == "hello x" and compiled == ["t.j2"]


def test_code_behind_a_link_is_not_loaded_and_the_link_not_written_through(site_dir: Path) -> None:
    kept = planted_code(site_dir)
    target = site_dir / "elsewhere"
    os.rename(kept, target)
    os.symlink(target, kept)
    before = target.read_bytes()
    env, compiled = environment({"t.j2": "hello {{ who }}"})
    assert env.get_template("t.j2").render(who="x") == "hello x" and compiled == ["t.j2"]
    assert target.read_bytes() == before and not kept.is_symlink()


def test_damaged_code_is_compiled_again(site_dir: Path) -> None:
    env, _ = environment({"t.j2": "hello {{ who }}"})
    env.get_template("t.j2")
    kept, = TEMPLATE_CODE.iterdir()
    kept.write_bytes(kept.read_bytes()[:-7])  # cut short
    env, compiled = environment({"t.j2": "hello {{ who }}"})
    assert env.get_template("t.j2").render(who="x") == "hello x" and compiled == ["t.j2"]


def test_outside_a_site_nothing_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env, compiled = environment({"t.j2": "hello {{ who }}"})
    assert env.get_template("t.j2").render(who="x") == "hello x" and compiled == ["t.j2"]
    assert list(tmp_path.iterdir()) == []
