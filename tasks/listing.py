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

from . import cmdline
from .fileio import doit_db_problem, read_private_json, write_private_json

SUMMARY = "build/.tasks.json"
CODE = Path(__file__).resolve().parent
FORMAT = 1


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


def plain_list(argv: list[str]) -> bool:
    """Whether ``argv`` (sys.argv) is, as doit reads it (tasks/cmdline.py), a plain `doit list` (or
    `list -q`), with the site the folder doit runs in (-f/-d, not -k); the same of what doit's config files set."""
    line = cmdline.read(argv)
    return (line is not None and line.understood and line.command == "list" and not line.words and not line.variables
            and set(line.options) | set(line.configured) <= cmdline.LOADER_PLAIN | {"quiet"})


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
