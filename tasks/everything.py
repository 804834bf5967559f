"""cephboot's tasks and DOIT_CONFIG, as dodo.py loads them for every command but a plain `doit list`; does no work while loading."""
from . import engine, layout, quiet
from .imagenative import task_imagenative  # noqa: F401 (in __all__ below)
from .initrd import task_initrd  # noqa: F401 (in __all__ below)
from .lint import task_lint  # noqa: F401 (in __all__ below)
from .nginx import task_nginx  # noqa: F401 (in __all__ below)
from .overlay import task_overlay  # noqa: F401 (in __all__ below)
from .publish import task_publish  # noqa: F401 (in __all__ below)
from .render import task_render  # noqa: F401 (in __all__ below)
from .reporter import Reporter
from .scope import scoped_tasks

DEFAULT = ["render", "lint", "initrd", "overlay", "publish", "nginx", "imagenative"]

if not quiet.partial():  # a run scoped to a few hosts (tasks/quiet.py) runs the default tasks alone: nothing else loads
    from .dhcpsnippets import task_dhcp_snippets  # noqa: F401 (ISC dhcpd / Kea snippets: not a default task)
    from .dnsmasq import task_dnsmasq  # noqa: F401 (DHCP/TFTP front end: `doit dnsmasq`, not a default task)
    from .golden import task_image  # noqa: F401 (changes the cluster: never default)
    from .provision import task_move_root, task_provision, task_rollback_root, task_verify  # noqa: F401 (changes the cluster: never default)
    from .publish import task_rollback  # noqa: F401 (in __all__ below)
    from .rotate import task_retire, task_rotate  # noqa: F401 (changes the cluster and hosts/keys: never default)

# The process-wide setup, once, before any task loads: build/ made private and cleaned, garbage
# collection paused and one stat per file while tasks load (its contract: tasks/engine.py)
engine.setup(DEFAULT)

# In a run scoped to the hosts whose files changed, every task but the per-host stages stands
# in, up to date (tasks/scope.py): every generator goes through scoped_tasks
__all__ = [name for name in globals() if name.startswith("task_")]
for _name in __all__:
    globals()[_name] = scoped_tasks(globals()[_name])
del _name

DOIT_CONFIG = {
    "backend": "sqlite3",  # dbm and json lose records when two runs overlap
    "dep_file": str(layout.DOIT_DB),
    "default_tasks": DEFAULT,
    "verbosity": 1,
    # print what ran, not the thousands of tasks that were up to date
    # (`doit --reporter console` lists those too)
    "reporter": Reporter,  # doit's executed-only, and the end of the stat memo once a task runs
}
__all__ += ["DOIT_CONFIG"]
