"""cephboot's tasks and DOIT_CONFIG, as dodo.py loads them for every command but a plain `doit list`; does no work while loading."""
from . import engine
from .scope import scoped_tasks
from .dhcpsnippets import task_dhcp_snippets  # ISC dhcpd / Kea snippets: not a default task
from .dnsmasq import task_dnsmasq  # DHCP/TFTP front end: `doit dnsmasq`, not a default task
from .golden import task_image  # changes the cluster: never default
from .imagenative import task_imagenative
from .initrd import task_initrd
from .lint import task_lint
from .nginx import task_nginx
from .overlay import task_overlay
from .provision import task_move_root, task_provision, task_rollback_root, task_verify  # changes the cluster: never default
from .publish import task_publish, task_rollback
from .render import task_render
from .reporter import Reporter
from .rotate import task_retire, task_rotate  # changes the cluster and hosts/keys: never default

# The process-wide setup, once, before any task loads: build/ made private and cleaned, garbage
# collection paused and one stat per file while tasks load (its contract: tasks/engine.py)
engine.setup()

# In a run scoped to the hosts whose files changed (tasks/quiet.py), every task but the per-host
# stages stands in, up to date (tasks/scope.py): every generator goes through scoped_tasks
for _name, _creator in list(globals().items()):
    if _name.startswith("task_"):
        globals()[_name] = scoped_tasks(_creator)
del _name, _creator

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
