"""cephboot's doit reporter: doit's executed-only output, and the end of the stat memo once a task runs."""
from __future__ import annotations

import gc
from typing import Any

from doit.reporter import ExecutedOnlyReporter

from . import listing
from .fileio import stat_memo_off

# True once this reporter runs the show: only then does someone end the stat memo
# before a task changes files (with `doit --reporter console`, stages stat plainly)
ACTIVE = False


class Reporter(ExecutedOnlyReporter):
    """Prints what ran (not the thousands of tasks that were up to date).

    doit calls execute_task() before it runs a task's actions (in its main process,
    also when the actions run in a child process): from then on files may change.  A
    stage forgets what it is about to write; for any other task the stat memo
    (tasks/fileio.py) stops answering from memory.
    """

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        """Every task is loaded: the collector may run again, but not over what exists now (dodo.py)."""
        global ACTIVE
        ACTIVE = True
        listing.write(tasks)  # the names and docs a plain `doit list` prints next time
        gc.freeze()
        gc.enable()
        super().initialize(tasks, selected_tasks)

    def execute_task(self, task: Any) -> None:
        # a group task (`render`, run after its subtasks) changes nothing; a stage
        # (tasks/stage.py) knows which files it is about to write
        if task.actions:
            stages = [u for u, _, _ in task.uptodate if hasattr(u, "forget_outputs")]
            if stages:
                for stage in stages:
                    stage.forget_outputs()
            else:
                stat_memo_off()
        super().execute_task(task)
