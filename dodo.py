"""cephboot: the doit entry point. Wires the task generators in tasks/; does no work while loading."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tasks.imagenative import task_imagenative  # noqa: E402
from tasks.initrd import task_initrd  # noqa: E402
from tasks.lint import task_lint  # noqa: E402
from tasks.nginx import task_nginx  # noqa: E402
from tasks.overlay import task_overlay  # noqa: E402
from tasks.provision import task_provision, task_verify  # noqa: E402  (changes the cluster: never default)
from tasks.publish import task_publish, task_rollback  # noqa: E402
from tasks.render import task_render  # noqa: E402

os.makedirs("build", exist_ok=True)  # doit opens its state file before any task runs

DOIT_CONFIG = {
    "backend": "sqlite3",  # dbm and json lose records when two runs overlap
    "dep_file": "build/doit.sqlite3",
    "default_tasks": ["render", "lint", "initrd", "overlay", "publish", "nginx", "imagenative"],
    "verbosity": 1,
    # print what ran, not the thousands of tasks that were up to date
    # (`doit --reporter console` lists those too)
    "reporter": "executed-only",
}

__all__ = ["task_render", "task_lint", "task_initrd", "task_overlay", "task_publish", "task_rollback", "task_nginx", "task_imagenative", "task_provision", "task_verify", "DOIT_CONFIG"]
