"""Shared fixtures: a temporary copy of the example site and a way to run doit on it as a user does."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench.run import steps, tasks_ran  # noqa: E402  (one parser of doit's output for tests and bench)
from tasks import examplekeys  # noqa: E402
from tasks.inventory import validate  # noqa: E402
from tasks.model import host_view  # noqa: E402
from tasks.schema import HOST  # noqa: E402

# Set by .ci/run: a test that cannot run here fails instead of being skipped, so a
# missing package in scripts/setup cannot hide behind a skip.
REQUIRED_ENV = "CEPHBOOT_E2E_REQUIRED"


def _required() -> bool:
    return os.environ.get(REQUIRED_ENV) == "1"


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (path, line, "Skipped: reason").
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """With CEPHBOOT_E2E_REQUIRED=1, a skipped test fails (an xfail stays an xfail)."""
    outcome = yield
    report = outcome.get_result()
    if _required() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"{REQUIRED_ENV}=1 but this test was skipped: {_skip_reason(report.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    """The same for a whole module skipped while it is collected."""
    outcome = yield
    report = outcome.get_result()
    if _required() and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{REQUIRED_ENV}=1 but {collector.nodeid} was skipped: {_skip_reason(report.longrepr)}"


@dataclass
class DoitRun:
    """The outcome of one `doit` process."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ran(self) -> set[str]:
        """The work done: each host a stage redid ('render:zephyr', from the stage's
        '  - render:zephyr' line) and each other task doit executed ('.  render:site');
        not the stage tasks themselves ('render:hosts'), nor tasks doit found up to date."""
        return steps(tasks_ran(self.stdout))

    @property
    def tasks(self) -> set[str]:
        """Every task doit executed, stage tasks included ('.  render:hosts')."""
        return {t for t in tasks_ran(self.stdout) if t in self._task_lines()}

    def _task_lines(self) -> set[str]:
        return {line[3:].strip() for line in self.stdout.splitlines() if line.startswith(".  ")}

    @property
    def skipped(self) -> set[str]:
        return {line[3:].strip() for line in self.stdout.splitlines() if line.startswith("-- ")}


class Site:
    """A site folder (hosts/ + build/) driven by the project's dodo.py."""

    def __init__(self, root: Path, project: Path = PROJECT):
        self.root = root
        self.dodo = project / "dodo.py"
        self.hosts = root / "hosts"
        self.build = root / "build"

    def doit(self, *args: str, check: bool = True, env: dict[str, str] | None = None, cwd: Path | None = None) -> DoitRun:
        """`doit -f dodo.py -d SITE ARGS`, started in ``cwd`` (where doit reads doit.cfg and pyproject.toml)."""
        cmd = [sys.executable, "-m", "doit", "-f", str(self.dodo), "-d", str(self.root), *args]
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=1800, cwd=cwd)
        run = DoitRun(p.returncode, p.stdout, p.stderr)
        if check and p.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return run

    def snapshot(self) -> dict[str, tuple[int, bytes]]:
        """(mtime_ns, content) of every file under build/ (but doit's own state, and the no-op's
        manifest and its note of how the last run loaded: tasks/quiet.py)."""
        out = {}
        for p in sorted(self.build.rglob("*")):
            if p.is_file() and not p.name.startswith(("doit.sqlite3", ".inventory")) and not (
                    p.parent == self.build / "state" and p.name.startswith("quiet")):
                out[str(p.relative_to(self.root))] = (p.stat().st_mtime_ns, p.read_bytes())
        return out

    def edit(self, rel: str, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in hosts/<rel> (the text must be there exactly once)."""
        p = self.hosts / rel
        text = p.read_text()
        assert text.count(old) == 1, f"{old!r} not found exactly once in {p}"
        p.write_text(text.replace(old, new))


def copy_site(src: Path, dst: Path) -> Site:
    """Copy a site's hosts/ (secrets made if missing) into ``dst``."""
    shutil.copytree(src / "hosts", dst / "hosts", ignore=shutil.ignore_patterns("keys"))
    keys = src / "hosts" / "keys"
    if keys.is_dir():
        shutil.copytree(keys, dst / "hosts" / "keys")
    examplekeys.ensure(dst)
    return Site(dst)


def copy_project(dst: Path) -> Path:
    """A private copy of cephboot's code and templates, for tests that edit them."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("dodo.py", ".shellcheckrc"):
        if (PROJECT / name).exists():
            shutil.copy2(PROJECT / name, dst / name)
    for name in ("tasks", "templates"):
        shutil.copytree(PROJECT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture
def the_example_site(tmp_path: Path) -> Site:
    """A private copy of the bundled example site, with fresh secrets, not yet built."""
    return copy_site(PROJECT, tmp_path / "site")


def a_host_record(**keys: object) -> dict:
    """A validated host record with ``keys`` (sections as mappings, merged with their defaults), one
    DHCP Ceph NIC unless given, and every other key at its schema default: for code that reads a host."""
    raw = {"nics": {"ceph": {"macs": ["52:54:00:00:00:01"], "address": "dhcp"}}, **keys}
    problems: list = []
    data = validate(HOST, raw, {}, "hosts/nodes/test.yaml", problems)
    assert not problems, problems
    return {**data, "kernel_version": "6.1.0-57-amd64"}


def a_host_view(**keys: object) -> object:
    """The typed view (tasks/model.py) of a_host_record(**keys)."""
    return host_view(a_host_record(**keys))
