"""cephboot's doit reporter: doit's executed-only output, and the end of the stat memo once a task runs."""
from __future__ import annotations

import gc
from typing import Any

from doit.reporter import ExecutedOnlyReporter

from .fileio import stat_memo_off

# True once this reporter runs the show: only then does someone end the stat memo
# before a task changes files (with `doit --reporter console`, stages stat plainly)
ACTIVE = False


class Reporter(ExecutedOnlyReporter):
    """Prints what ran (not the thousands of tasks that were up to date).

    doit calls execute_task() before it runs a task's actions: from then on files
    may change, so unless the task is a stage, which forgets what it writes, the
    stat memo (tasks/fileio.py) stops answering from memory.
    """

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        """Every task is loaded: the collector may run again, but not over what exists now (dodo.py)."""
        global ACTIVE
        ACTIVE = True
        gc.freeze()
        gc.enable()
        super().initialize(tasks, selected_tasks)

    def execute_task(self, task: Any) -> None:
        # a group task (`render`, run after its subtasks) changes nothing; a stage
        # (tasks/stage.py) forgets exactly the files it writes
        if task.actions and not (task.meta or {}).get("stage"):
            stat_memo_off()
        super().execute_task(task)
