"""`doit list` without the inventory: the names and docs of the top-level tasks, as the last run
that loaded every task saw them (build/.tasks.json, written by cephboot's reporter).

A top-level task's name and doc depend only on the code and on hosts/site.yaml (a per-host
task is a subtask, listed only by `doit list --all`), so the summary is used while the stat
keys of those files are as when it was written; otherwise every task is loaded as usual.  Like
the inventory cache it is plain JSON, owner-only, never followed through a link and believed
only when it is ours.  `doit list` does not check the inventory: `doit` and `doit info` do.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

from .fileio import doit_db_problem, read_private_json, write_private_json

SUMMARY = "build/.tasks.json"
CODE = Path(__file__).resolve().parent
FORMAT = 1
# doit's options that come before the command and take a value (its task loader's)
_LOADER_OPTIONS = {"-f", "--file", "-d", "--dir"}
_QUIET = {"-q", "--quiet"}


def _key(site: str) -> list[Any]:
    """The stat keys of what a top-level task's name or doc can depend on."""
    paths = [os.path.join(site, "hosts", "site.yaml"), str(CODE.parent / "dodo.py")]
    paths += sorted(str(CODE / n) for n in os.listdir(CODE) if n.endswith(".py"))
    out: list[Any] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append([p, st.st_mtime_ns, st.st_size, st.st_ino])
        except OSError:
            out.append([p, None])
    return out


def doit_args(argv: list[str]) -> list[str] | None:
    """What follows doit's loader options (-f/-d ...) on ``argv`` when it is doit's own command
    line (not a test runner that calls doit) and the site is the folder doit runs in; else None."""
    if not argv or os.path.basename(argv[0]) not in ("doit", "__main__.py") or (
            os.path.basename(argv[0]) == "__main__.py" and os.path.basename(os.path.dirname(argv[0])) != "doit"):
        return None
    args = argv[1:]
    i = 0
    while i < len(args) and args[i] in _LOADER_OPTIONS | {"-k", "--seek-file"} or (i < len(args) and args[i].startswith(("--file=", "--dir="))):
        if args[i] in ("-k", "--seek-file"):
            return None  # the site is wherever doit finds dodo.py: load as usual
        i += 2 if args[i] in _LOADER_OPTIONS else 1
    return args[i:]


def plain_list(argv: list[str]) -> bool:
    """Whether ``argv`` (doit's command line) is a plain `doit list` (or `list -q`)."""
    args = doit_args(argv)
    return bool(args) and args[0] == "list" and set(args[1:]) <= _QUIET  # type: ignore[index]


def read(site: str) -> list[list[str]] | None:
    """[[name, doc], ...] of the top-level tasks, when the summary is there and still true (and doit's
    records are usable: else the full load says what is wrong with them)."""
    if doit_db_problem():
        return None
    data = read_private_json(Path(site) / SUMMARY)
    try:
        if data["format"] != FORMAT or data["key"] != _key(os.path.abspath(site)):
            return None
        tasks = data["tasks"]
        if not all(isinstance(t, list) and len(t) == 2 and all(isinstance(s, str) for s in t) for t in tasks):
            return None
        return tasks
    except (KeyError, TypeError):
        return None


def write(tasks: dict[str, Any]) -> None:
    """Keep the names and docs of the top-level tasks of a run that loaded every task (doit's
    working directory is the site's)."""
    rows = sorted([name, task.doc or ""] for name, task in tasks.items() if not task.subtask_of)
    data = {"format": FORMAT, "key": _key(os.getcwd()), "tasks": rows}
    if read_private_json(Path(SUMMARY)) != data:
        write_private_json(Path(SUMMARY), data)


def creator(rows: list[list[str]]) -> Callable[[], Iterator[dict[str, Any]]]:
    """A task creator that yields the summary's tasks (names and docs; `doit list` runs nothing)."""

    def task_listed() -> Iterator[dict[str, Any]]:
        for name, doc in rows:
            yield {"basename": name, "doc": doc, "actions": None}

    return task_listed
