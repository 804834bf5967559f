"""Render per-host and site-wide boot files from the inventory and templates/."""
from __future__ import annotations

import os
import shutil
from itertools import chain
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Callable, Iterator

from doit.exceptions import TaskFailed

from .uptodate import config_changed

from . import artifacts, inventory
from .artifacts import BY_NAME, SEALED_STAMP
from .fileio import digest, files_digest, read_regular, write_if_changed
from .bootnet import grub_routes
from .inventory import Host, Site
from .model import STATELESS_FILES, HostView, mapped_root, stateless
from .quoting import UnsafeValue, quote
from .stage import Stage, Unit, stage_task
from . import sealed
from .layout import HOSTS, SITE, TEMPLATES, base_name, host_dir, host_file, site_file
from .templating import code_digest, env, header
from .failures import guarded, host_values, site_values, unsafe
from .checks import MAX_KEYRING, MAX_LUKS_KEY
from .yamlfiles import secret_bytes

# where some per-host outputs land under build/hosts/<host>/ (the table in tasks/artifacts.py owns them)
CONFD = BY_NAME["conf.d"].build
CEPH_CONF = BY_NAME["ceph.conf"].build
FSTAB = BY_NAME["fstab"].build
CRYPTTAB = BY_NAME["crypttab"].build
LUKS_KEY = BY_NAME["LUKS key"].build
HOST_IPXE = BY_NAME["boot.ipxe"].build
HOST_GRUB = BY_NAME["grub.cfg"].build  # boot.loader: grub-secureboot
SITE_GRUB = "grub.cfg"  # build/site/grub.cfg: the MAC routes of grub-secureboot hosts (the tree's grub/grub.cfg)


# machine mode: the keys sealed to the machine secret, as the layer carries them
SEALED = BY_NAME["sealed keys"].build
# paths on the booted system / inside the initrd
LUKS_KEY_PATH = "/" + BY_NAME["LUKS key"].layer
SEALED_PATH = "/" + BY_NAME["sealed keys"].layer  # machine mode: the keys sealed to the machine secret (tasks/sealed.py)
SITE_TEMPLATES = {"boot.ipxe": "tree/boot.ipxe.j2", "route": "tree/ipxe/route.ipxe.j2", SITE_GRUB: "tree/grub.cfg.j2"}


def keyring_path(cfg: HostView) -> str:
    """Where the client's keyring lives on the host and in its initrd layer."""
    return "/" + artifacts.path(artifacts.KEYRING, cfg)


def machine_mode(cfg: HostView) -> bool:
    """Whether the host's keys travel sealed to its machine secret (secrets.mode: machine)."""
    return cfg.secrets.mode == "machine"


def host_outputs(host: Host) -> dict[str, int]:
    """Every file render writes for ``host``, relative to its build folder, with its mode."""
    return {rel: a.mode for rel, a in artifacts.built_by("render", host.cfg).items()}


def _code_digest() -> str:
    return code_digest(__name__)


@lru_cache(maxsize=None)
def templates_digest(kind: str) -> str:
    names = artifacts.templates() if kind == "host" else SITE_TEMPLATES.values()
    return files_digest([TEMPLATES / n for n in sorted(names)])


def cmdline(cfg: HostView) -> str:
    """The kernel arguments as boot.ipxe carries them (grub_cmdline: as grub.cfg does)."""
    return " ".join(quote(w, "cmdline") for w in inventory.cmdline_words(cfg))


def grub_cmdline(cfg: HostView) -> str:
    return " ".join(quote(quote(w, "cmdline"), "grub") for w in inventory.cmdline_words(cfg))


def render_host(site: Site, host: Host) -> TaskFailed | None:
    """Render every file of one host; write only those whose content changed (the stage's work:
    from outside the stage, call render_hosts, which also keeps the stage's record).  A value a
    template's quoting refuses fails the host with one line naming its file and key, before
    anything of it is written."""
    template = ""
    try:
        made: list[tuple[Path, bytes, int]] = []
        for entry in _host_files(site, host):
            template, path, make, mode = entry  # the template named if make() refuses a value
            made.append((path, make(), mode))
    except UnsafeValue as e:
        return unsafe(f"render:hosts: {host.name}", e, chain(host_values(host), site_values(site.settings)), f"templates/{template}" if template else "")
    _write_host(site, host, made)
    return None


def _host_files(site: Site, host: Host) -> Iterator[tuple[str, Path, Callable[[], bytes], int]]:
    """(template, path, what makes its bytes, mode) of every file render writes for ``host``."""
    cfg, s = host.cfg, site.settings
    base = host_dir(host.name)
    # the client of the keyring's current key generation (`doit rotate`): the boot maps as it;
    # the keyring's path on the host stays the one of the host's client
    client, key = inventory.keyring_entity(secret_bytes(site.path_str(cfg.keyring), MAX_KEYRING).decode(errors="replace"), cfg.client)
    common = {
        "h": {**host.data, "client": client},
        "s": s,
        "kver": cfg.kernel_version,
        "base": base_name(cfg.map.method),
        "keyring_path": keyring_path(cfg),
        "luks_key_path": LUKS_KEY_PATH,
        "sealed_path": SEALED_PATH,
        "root_device": f"/dev/mapper/{cfg.luks.name}" if cfg.luks else "/dev/rbd0",
        "cmdline": cmdline(cfg),
        "grub_cmdline": grub_cmdline(cfg),
        "key": key,
        "mapped": mapped_root(cfg),
        "stateless_files": STATELESS_FILES if stateless(cfg) else "",
        # address mode: the addresses the web server serves this host's keys to
        "reserved": [ip for _, _, ip in host.reservations(s["dhcp"]["network"])] if cfg.secrets.mode == "address" else [],
    }
    for rel, a in artifacts.built_by("render", cfg).items():
        if a.source == "seal":
            continue  # sealed from the keys (_write_host)
        if a.source == "keyfile":  # the LUKS key is copied byte for byte
            yield "", base / rel, partial(secret_bytes, site.path_str(cfg.luks.keyfile), MAX_LUKS_KEY), a.mode
        else:
            sources = [host.source, site.display(cfg.keyring)] if a is BY_NAME["keyring"] else host.sources
            yield a.template, base / rel, partial(_render, a.template, header(sources, a.template), common), a.mode
    # its routes: the site-wide by-uuid/by-mac entries that lead to its boot.ipxe
    # (a route the host no longer has is removed by render:site, which runs when the set changes)
    t = SITE_TEMPLATES["route"]
    for rel, (kind, value) in host_routes(host).items():
        yield t, SITE / rel, partial(_render, t, header([host.source], t), {"s": s, "h": host.data, "kind": kind, "key": value}), 0o644


def _render(template: str, head: str, values: dict[str, Any]) -> bytes:
    return env().get_template(template).render(header=head, **values).encode()


def _write_host(site: Site, host: Host, made: list[tuple[Path, bytes, int]]) -> None:
    """Write the rendered files of ``host`` that changed, seal its keys, remove what it no longer has."""
    cfg = host.cfg
    base = host_dir(host.name)
    for path, data, mode in made:
        write_if_changed(path, data, mode)
    outputs = artifacts.built_by("render", cfg)
    if machine_mode(cfg):
        keys = {"keyring": read_regular(base / "rootfs" / keyring_path(cfg).lstrip("/"))}
        if cfg.luks:
            keys["luks"] = read_regular(base / LUKS_KEY)
        sealed.seal_to_file(base / SEALED, base / SEALED_STAMP, host.name, keys,
                            site.path_str(cfg.secrets.machine_secret), site.settings["ceph"]["fsid"])
    # files that this host no longer has (LUKS turned off, client renamed, clear mode)
    for stale in (base / "rootfs/etc/ceph").glob("ceph.client.*.keyring"):
        if str(stale.relative_to(base)) not in outputs:
            stale.unlink()
    for rel in (*artifacts.render_conditional(), SEALED_STAMP):
        if rel not in outputs and (rel != SEALED_STAMP or SEALED not in outputs):
            (base / rel).unlink(missing_ok=True)


def host_routes(host: Host) -> dict[str, tuple[str, str]]:
    """The host's routing entries under build/site/ (and the tree): path -> (kind, UUID or MAC)."""
    cfg = host.cfg
    out = {f"ipxe/by-uuid/{cfg.uuid}.ipxe": ("UUID", cfg.uuid)} if cfg.uuid else {}
    for nic in (cfg.nics.ceph, cfg.nics.user):
        for mac in nic.macs if nic else []:
            out[f"ipxe/by-mac/{mac.replace(':', '-')}.ipxe"] = ("MAC", mac)
    return out


def routes_by_host(site: Site) -> dict[str, dict[str, tuple[str, str]]]:
    """host_routes() of every host (once per site: several task generators ask; read it, never change it)."""
    return site.derived("routes", lambda: {name: host_routes(host) for name, host in site.hosts.items()})


def site_outputs(site: Site) -> dict[str, tuple[str, Host | None, str]]:
    """Site-wide files under build/site/: boot.ipxe and one route per UUID and per MAC (once per
    site: read it, never change it)."""
    return site.derived("site_outputs", lambda: _site_outputs(site))


def _site_outputs(site: Site) -> dict[str, tuple[str, Host | None, str]]:
    out: dict[str, tuple[str, Host | None, str]] = {"boot.ipxe": ("boot.ipxe", None, "")}
    for name, routes in routes_by_host(site).items():
        host = site.hosts[name]
        for rel, (kind, value) in routes.items():
            out[rel] = (kind, host, value)
    return out


def render_site(site: Site) -> TaskFailed | None:
    """Render boot.ipxe (and the grub-secureboot routes); remove the routes and build folders of
    removed hosts (render:hosts writes each host's routes).  A value a template's quoting refuses:
    one line naming its file and key, nothing written."""
    base = SITE
    outputs = site_outputs(site)
    routes = grub_routes(site)
    t = SITE_TEMPLATES["boot.ipxe"]
    try:
        ipxe = _render(t, header(["hosts/site.yaml"], t), {"s": site.settings, "hosts": len(site.hosts)})
        t = SITE_TEMPLATES[SITE_GRUB]
        grub = _render(t, header(["hosts/site.yaml", "hosts/nodes/"], t), {"routes": routes, "hosts": len({name for _, name in routes})}) if routes else None
    except UnsafeValue as e:
        values = (v for name in sorted({name for _, name in routes}) for v in host_values(site.hosts[name]))
        return unsafe("render:site", e, chain(site_values(site.settings), values), f"templates/{t}")
    write_if_changed(base / "boot.ipxe", ipxe)
    if grub is not None:
        write_if_changed(base / SITE_GRUB, grub)
    else:
        (base / SITE_GRUB).unlink(missing_ok=True)
    for folder in ("ipxe/by-uuid", "ipxe/by-mac"):
        for p in (base / folder).glob("*.ipxe"):
            if f"{folder}/{p.name}" not in outputs:
                p.unlink()
    hosts_root = HOSTS
    if hosts_root.is_dir():
        for d in os.scandir(hosts_root):
            if d.is_dir() and d.name not in site.hosts:
                shutil.rmtree(d.path)
    return None


def render_stage(site: Site) -> Stage:
    """The render stage of ``site``: its hosts' units (made when first needed) and its settings."""
    def units() -> dict[str, Unit]:
        out: dict[str, Unit] = {}
        routes = routes_by_host(site)
        built_by = artifacts.built_by
        site_dir = site_file("")
        for name, host in site.hosts.items():
            cfg = host.cfg
            deps = [site.path_str(cfg.keyring)]
            if cfg.luks:
                deps.append(site.path_str(cfg.luks.keyfile))
            if machine_mode(cfg):
                deps.append(site.path_str(cfg.secrets.machine_secret))
            base = host_file(name, "")
            outputs = [base + rel for rel in built_by("render", cfg)]  # host_outputs(host), as paths
            outputs += [site_dir + rel for rel in routes[name]]
            out[name] = Unit(deps, outputs, host.digest, render_host, (site, host))
        return out

    return Stage("render", units, digest(templates_digest("host"), _code_digest(), site.site_digest))


def render_hosts(site: Site, names: list[str]) -> None:
    """Render the files of hosts ``names`` now and record them in the render stage's record, as
    `doit render:hosts --only NAMES` would: the entry point for code outside the stage
    (provisioning, once it rewrote a host's keyring).  A name that is no host of ``site`` is
    the caller's mistake: ValueError."""
    failed = render_stage(site).redo(names)
    if failed is not None:
        raise ValueError(failed.message)


@guarded
def task_render() -> Iterator[dict[str, Any]]:
    """Render the boot files of every host (conf.d, ceph.conf, keyring, fstab, crypttab, iPXE) and the site-wide routes."""
    site = inventory.load_for_tasks()
    code = _code_digest()
    yield {"basename": "render", "name": None, "doc": "Render per-host and site-wide boot files from hosts/ and templates/."}
    yield stage_task(
        "render",
        f"conf.d, ceph.conf, keyring, fstab, crypttab (LUKS), boot.ipxe and the by-uuid/by-mac routes of each of the {len(site.hosts)} hosts whose inputs changed",
        render_stage(site),
    )
    routes = sorted((rel, host.name if host else "") for rel, (_, host, _) in site_outputs(site).items())
    yield {
        "basename": "render",
        "name": "site",
        "doc": "boot.ipxe; removes the routes and build folders that removed hosts (or changed MACs and UUIDs) left",
        "actions": [(render_site, [site])],
        "targets": [site_file("boot.ipxe")],
        "uptodate": [config_changed(digest(repr(routes), repr(grub_routes(site)), str(len(site.hosts)), site.settings["pxe"]["http_base"], templates_digest("site"), code))],
        "clean": True,
    }
