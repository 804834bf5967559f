"""cephboot: the doit entry point. Wires the task generators in tasks/; does no work while loading."""
import gc
import os
import sys

# No cyclic garbage collection while the tasks load: its full passes would walk the
# inventory's and the tasks' 100,000s of objects again and again (~1 s a run at
# 10,000 hosts), and loading makes no cycles worth collecting.  The reporter turns
# it back on, with everything loaded so far frozen out of its sight, before the run.
gc.disable()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tasks.dhcpsnippets import task_dhcp_snippets  # noqa: E402  (ISC dhcpd / Kea snippets: not a default task)
from tasks.dnsmasq import task_dnsmasq  # noqa: E402  (DHCP/TFTP front end: `doit dnsmasq`, not a default task)
from tasks.fileio import prepare_build, stat_memo_on  # noqa: E402
from tasks.golden import task_image  # noqa: E402  (changes the cluster: never default)
from tasks.imagenative import task_imagenative  # noqa: E402
from tasks.initrd import task_initrd  # noqa: E402
from tasks.lint import task_lint  # noqa: E402
from tasks.nginx import task_nginx  # noqa: E402
from tasks.overlay import task_overlay  # noqa: E402
from tasks.provision import task_move_root, task_provision, task_rollback_root, task_verify  # noqa: E402  (changes the cluster: never default)
from tasks.publish import task_publish, task_rollback  # noqa: E402
from tasks.render import task_render  # noqa: E402
from tasks.reporter import Reporter  # noqa: E402
from tasks.rotate import task_retire, task_rotate  # noqa: E402  (changes the cluster and hosts/keys: never default)

# One stat per file while the tasks load and are checked (tasks/fileio.py); the
# reporter ends it as soon as a task that may change files runs.
stat_memo_on()

# build/ owner-only whatever the umask (umask 077 for this process), and what killed runs left
# there removed; before any task runs, since doit opens its state file in it first
prepare_build()

DOIT_CONFIG = {
    "backend": "sqlite3",  # dbm and json lose records when two runs overlap
    "dep_file": "build/doit.sqlite3",
    "default_tasks": ["render", "lint", "initrd", "overlay", "publish", "nginx", "imagenative"],
    "verbosity": 1,
    # print what ran, not the thousands of tasks that were up to date
    # (`doit --reporter console` lists those too)
    "reporter": Reporter,  # doit's executed-only, and the end of the stat memo once a task runs
}

__all__ = ["task_dnsmasq", "task_dhcp_snippets", "task_render", "task_lint", "task_initrd", "task_overlay", "task_publish", "task_rollback", "task_nginx", "task_imagenative", "task_provision", "task_verify", "task_image", "task_move_root", "task_rollback_root", "task_rotate", "task_retire", "DOIT_CONFIG"]
