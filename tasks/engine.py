"""The doit process's setup and its hand-off from loading tasks to running them: one owner for process-wide state.

The contract, in the order doit goes:

1. ``setup()`` (dodo.py calls it once, before any task loads): build/ owner-only and what
   killed runs left there removed (doit opens its state file in it first); cyclic garbage
   collection off while the tasks load (its full passes would walk the inventory's and the
   tasks' 100,000s of objects again and again, ~1 s a run at 10,000 hosts; loading makes no
   cycles worth collecting), nor at exit (the interpreter's own last collection); and one stat
   per file while tasks load and are checked (the stat memo of tasks/fileio.py).
2. ``run_starts()`` (cephboot's reporter, when doit has every task): from now on someone ends
   the memo before a task writes files (``files_may_change``).
3. ``files_may_change(task)`` (the reporter, before each task's actions, in doit's main
   process also when they run in child processes with ``-n``): a stage forgets what it is
   about to write; for any other task the memo stops answering from memory.  Before the
   first task that does work, collection comes back on, with everything so far frozen out
   of its sight.  The checks before it (every stage's record of every host) make no cycles
   either: with collection on, its passes over their objects were ~6% of a no-op's CPU time
   at 10,000 hosts and ~18% of perf's samples of a one-host edit at 100,000 (gc_collect_main,
   visit_decref, visit_reachable), so a run in which nothing is due never collects.

Under another reporter (``doit --reporter console``), step 2 never happens: a stage's check
then ends the memo itself, so every stage sees the same files and does the same work under
every reporter, only with more stats.
"""
from __future__ import annotations

import atexit
import gc
import sys
from typing import Any

from . import cmdline, quiet, selection
from .failures import loading, stop
from .fileio import prepare_build, stat_memo_off, stat_memo_on
from .layout import BUILD

_state = {"handed_off": False}


def setup(default: list[str]) -> None:
    """Once per doit process, before the tasks load (step 1 above); ``default``: the default tasks."""
    _refuse_what_doit_would_drop(default)
    gc.disable()
    # at exit, everything out of sight of the interpreter's last full collection, which runs even
    # with collection off and would walk every object of the run (~7% of a no-op at 10,000 hosts)
    atexit.register(gc.freeze)
    stat_memo_on()
    # build/ unusable (a file or a link to nothing in the place of one of its folders, a read-only
    # mount ...): one line, exit 2, before any task loads (tasks/failures.py)
    with loading(f"expected a folder that this user can write ({BUILD}/ and its folders are cephboot's own: move what is in the way)"):
        prepare_build()
        quiet.full_begins()


def _refuse_what_doit_would_drop(default: list[str]) -> None:
    """`doit -s A B` (or `doit -s`, the default tasks): this doit would run A alone and say nothing
    of B (tasks/cmdline.single_drops): one line and exit 2 before anything is touched, rather
    than a run that looks complete."""
    found = cmdline.single_drops(sys.argv, selection.run_tasks(sys.argv), default)
    if found:
        ran, dropped = found
        stop(f"doit -s would run {ran} alone, not {', '.join(dropped)} (doit runs only the first task given to -s: "
             "pydoit/doit#446): run one `doit -s TASK` per task, or name them without -s")


def run_starts() -> None:
    """Every task is loaded and cephboot's reporter will call files_may_change (step 2)."""
    _state["handed_off"] = True


def _collect_from_now() -> None:
    """Cyclic garbage collection back on (once), everything allocated so far frozen out of its sight."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def memo_managed() -> bool:
    """Whether files_may_change will run before any task writes files (else a stage's check ends the memo)."""
    return _state["handed_off"]


def files_may_change(task: Any) -> None:
    """``task`` is about to run its actions (step 3): a group task changes nothing; a stage knows which files it will write."""
    if not task.actions:
        return
    _collect_from_now()
    from .stage import Stage  # the stages are above this module

    stages = [u for u, _, _ in task.uptodate if isinstance(u, Stage)]
    for stage in stages:
        stage.forget_outputs()
    if not stages:
        quiet.untracked(f"{task.name} did work")
        stat_memo_off()
