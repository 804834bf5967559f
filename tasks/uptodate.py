"""doit uptodate checks: config_changed, cheap enough to run for every task of a 10,000-host site,
and OutputsKept, a task's targets as its last run left them."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from doit.tools import config_changed as _doit_config_changed

from .fileio import identity_key

_SIGNATURE = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("task", "values")])


class config_changed(_doit_config_changed):  # noqa: N801 - a drop-in for doit's class of that name
    """doit.tools.config_changed with its call signature declared up front.

    doit calls inspect.signature() on every callable uptodate check of every
    task on every run, to decide whether to pass ``task`` and ``values``; for a
    callable object that costs ~0.1 ms, a second per run at 10,000 hosts.  A
    declared ``__signature__`` is returned at once.  The saved value keeps
    doit's key, so state written by either class is read by the other.
    """

    __signature__ = _SIGNATURE


class OutputsKept:
    """doit uptodate: the task's targets are as its last successful run left them.  doit itself
    only asks whether a target exists; the action returns {"outputs": keys()}, so that a
    target someone changed or damaged since (a truncated base initrd, a published file a host
    rewrote) makes the task run again.  ``key``: fileio.file_key in build/, identity_key
    where others can write."""

    __signature__ = _SIGNATURE

    def __init__(self, paths: list[str], key: Callable[[str], str] = identity_key):
        self.paths = paths
        self.key = key

    def keys(self) -> list[str]:
        return [self.key(p) for p in self.paths]

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        return values.get("outputs") == self.keys()
