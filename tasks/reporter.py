"""cephboot's doit reporter: doit's executed-only output, and the engine's hand-off (tasks/engine.py) when the run starts and before each task."""
from __future__ import annotations

from typing import Any

from doit.reporter import ExecutedOnlyReporter

from . import engine, listing, quiet


class Reporter(ExecutedOnlyReporter):
    """Prints what ran (not the thousands of tasks that were up to date).

    doit calls execute_task() before it runs a task's actions (in its main process,
    also when the actions run in a child process): from then on files may change.
    """

    def initialize(self, tasks: Any, selected_tasks: Any) -> None:
        engine.run_starts()
        if not quiet.partial():  # a scoped run has the default tasks alone, of some hosts, and stand-ins
            listing.write(tasks)  # the names and docs a plain `doit list` prints next time
        quiet.run_starts(tasks, selected_tasks)  # and the files a plain `doit` looks at first next time
        super().initialize(tasks, selected_tasks)

    def execute_task(self, task: Any) -> None:
        engine.files_may_change(task)
        super().execute_task(task)

    def complete_run(self) -> None:
        quiet.finish(not self.failures and not self.runtime_errors)  # doit has saved its records by now
        super().complete_run()
