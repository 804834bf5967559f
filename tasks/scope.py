"""A run scoped to the hosts whose files changed: what the site-wide tasks read of a host, and their stand-ins.

tasks/quiet.py finds, before any task loads, that only a few hosts' files changed since the
last run (their inputs, their outputs, their published files); tasks/inventory.load_scoped
loads those hosts alone.  The per-host stages then check and redo them alone
(tasks/stage.py).  Every other task is site-wide: it reads every host (routes, kernels and
map methods in use, address-bound hosts, ...), and it is up to date when what it reads of
each host is what it read in the last run, and its own files and doit's records of it are
unchanged (tasks/quiet.py compared those).  So a scoped run holds when, for each scoped host,
``site_view`` of the host as the inventory cache had it equals that of the host now; when it
does not, the inventory loads every host and the tasks load as usual.  In a scoped run the
site-wide tasks are stand-ins (``standin``): up to date, never run, their names there for the
stages' task_dep.  The test of all this is tests/test_scoped.py: after each kind of edit, a
full load of every task afterwards finds nothing to do.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from doit.exceptions import TaskFailed

from . import quiet
from .model import Host, Site
from .stage import Stage


def site_view(site: Site, host: Host) -> Any:
    """What the site-wide tasks read of ``host``: each of their tables (a union over the hosts)
    worked out for a site of this host alone, and the settings they read of it directly."""
    from . import artifacts
    from .bootnet import grub_routes
    from .initrd import bases_in_use, kernels_in_use
    from .nginx import bound_hosts
    from .render import routes_by_host

    one = Site(site.root, site.settings, {host.name: host}, site.kernels)
    cfg = host.cfg
    return (routes_by_host(one),  # render:site, publish:site (the routes and the hosts they lead to)
            grub_routes(one), artifacts.has(cfg, ("grub",)),  # render:site, publish:site, lint:grub
            kernels_in_use(one), bases_in_use(one),  # initrd:<kver>, publish:<kver>, lint:base, publish:hosts's task_dep
            cfg.monolithic and cfg.kernel_version,  # overlay:hosts's task_dep
            bound_hosts(one),  # nginx
            cfg.secrets.mode,  # overlay's warning of keys served in the clear
            bool(cfg.image_root))  # imagenative: a stage, or nothing to do


def differs_for_site_tasks(site: Site, before: dict[str, Host]) -> str | None:
    """Why a run scoped to ``site``'s hosts (``before``: as the cache had them) would leave a
    site-wide task out of date; None when it would not."""
    for name, host in site.hosts.items():
        if site_view(site, host) != site_view(site, before[name]):
            return f"{host.source}: what the site-wide tasks read of host {name} changed"
    return None


def _cannot_run() -> TaskFailed:
    return TaskFailed("cephboot: a site-wide task of a scoped run never runs (remove build/state/quiet and run doit again)")


def standin(task: dict[str, Any]) -> dict[str, Any]:
    """``task`` itself outside a scoped run, or when it is a per-host stage or a group; else its
    stand-in: the same name and doc, up to date, never run."""
    if quiet.scoped() is None or "name" in task and task["name"] is None:
        return task
    if any(isinstance(u, Stage) for u in task.get("uptodate") or ()):
        return task
    out = {k: task[k] for k in ("basename", "name", "doc") if k in task}
    name = f"{task['basename']}:{task['name']}" if task.get("name") else task["basename"]
    out.update(actions=[_cannot_run], uptodate=[True], file_dep=quiet.recorded_deps(name))
    return out


def scoped_tasks(creator: Callable[..., Any]) -> Callable[..., Any]:
    """A ``task_*`` generator whose tasks are stood in for in a scoped run (``standin``)."""

    @functools.wraps(creator)  # its name, doc and doit's marks (doit_create_after)
    def create(*args: Any, **kwargs: Any) -> Any:
        made = creator(*args, **kwargs)  # a generator: the scope is known once it loaded the inventory
        if isinstance(made, dict):
            return standin(made)
        return (standin(t) if isinstance(t, dict) else t for t in made)

    # doit orders creators by the line they start on, which it finds by tokenizing their source
    # (inspect.getsourcelines, through __wrapped__ to the creator's whole body: ~5 ms a run that
    # loads tasks, more than a host's own work). Without it doit reads these few lines: every
    # creator starts on the same one and they keep the order doit reads them in (by name; it was
    # the line in each one's own module, which said nothing across modules).
    del create.__wrapped__
    return create
