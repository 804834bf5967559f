"""Publish the boot tree (a mounted CephFS folder): atomic, only what changed, with a previous
generation per host, never following a link, and repairing what others changed."""
from __future__ import annotations

import grp
import os
import re
import stat
import sys
import threading
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed
from .uptodate import OutputsKept, config_changed

from . import artifacts, inventory, selection
from .fileio import (Folder, GroupError, digest, file_sha256, identity_key, open_regular, read_regular,
                     identity_of, is_temp, kind, report, tmp_name)
from .initrd import BASE_NAMES, base_path, bases_in_use, built_stamp, kernels_in_use, vmlinuz_path
from .inventory import TREE_MARKER, Host
from .overlay import LAYER, MONOLITHIC
from .layout import SITE, host_file, site_file
from .templating import code_digest
from .bootnet import grub_routes
from .render import SEALED_PATH, SITE_GRUB, routes_by_host, site_outputs
from .stage import UNCHANGED, Stage, Unit, record_outputs, stage_task
from .failures import failure, guarded

PUBLIC = 0o644
PUBLIC_DIR = 0o755
# a host's folder: the web server (others) may open files by name but not list them
HOST_DIR = 0o751
PREVIOUS = "previous"
MARKER_TEXT = b"This folder is a boot tree that cephboot publishes; do not remove this file.\n"
MARKER = ".publishing"
# the files of one generation of a host, in the order they are replaced: the
# script that names the others goes last, so a new script never finds old layers missing
HOST_FILES = artifacts.TREE_FILES
HOST_IPXE = artifacts.BY_NAME["boot.ipxe"].tree  # the script that names the others
SECRET_FILES = artifacts.SECRET_TREE_FILES  # they hold the cephx key (and the LUKS key)
# grub/: the site's GRUB routes for grub-secureboot hosts, where Debian's signed GRUB looks
# for them: $prefix/grub.cfg, its built-in prefix being /grub on the TFTP server it came from
# (dnsmasq's tftp-root is the tree; TFTP_DIR holds the first stages of `doit dnsmasq`)
GRUB_DIR = "grub"
_KVER_IN_SCRIPT = re.compile(rb"/kernels/([^/\s]+)/vmlinuz")
FOLDERS = {PREVIOUS, "by-uuid", "by-mac"}  # the entries the publisher makes as folders (checked when opened)
SCRIPT_LIMIT = 1 << 16
LAYER_LIMIT = 1 << 20  # of a published layer read for its keys (a few KB; a host can write it)  # of a previous boot.ipxe read for its kernel version (a host can write it)


class PublishError(Exception):
    """Publishing cannot go on; the message says what to do."""


def _group_problem(e: GroupError) -> PublishError:
    name = _group_name(e.gid)
    return PublishError(
        f"cannot give {e.path} to group {name}: {e.why}. Publish as root, as a member of {name}, "
        f"or make the tree's folders setgid {name} (chgrp -R {name} DIR; find DIR -type d -exec chmod g+s {{}} +)"
    )


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def put(folder: Folder, src: str | Path, name: str, mode: int, gid: int | None) -> bool:
    """Make ``name`` in ``folder`` a copy of the build file ``src`` with ``mode`` and ``gid``:
    rewritten when its bytes differ, else at most its mode and group fixed.  True if anything was set."""
    if folder.same_content(src, name):
        return folder.fix_mode(name, mode, gid)
    folder.copy_in(src, name, mode, gid)
    return True


def clear_unexpected(folder: Folder, expected: set[str], locked: bool) -> bool:
    """Remove the temporaries of killed publishers and, reported by path, every entry the
    publisher does not write here (a link planted by a host, a file it left); also an entry
    of an expected name that is no regular file or folder (a link, a FIFO) where it is
    a file.  True when anything but temporaries was removed."""
    folder.remove_stale_temps(locked)
    removed = False
    for name in folder.names():
        if is_temp(name):
            continue
        st = folder.entry(name)
        if st is None:
            continue
        if name not in expected:
            report(folder.where(name), f"{kind(st)} the publisher did not write: removed, not followed")
        elif (stat.S_ISDIR if name in FOLDERS else stat.S_ISREG)(st.st_mode):
            continue
        else:
            belongs = "a folder" if name in FOLDERS else "a file"
            report(folder.where(name), f"{kind(st)} where {belongs} belongs: removed, not followed")
        folder.remove(name)
        removed = True
    return removed


# --- settings ------------------------------------------------------------------------

def tree_root(settings: dict[str, Any]) -> Path:
    """The publish target, relative to the site folder (doit's working directory)."""
    return Path(settings["publish"]["target"])


def open_tree(settings: dict[str, Any]) -> Folder:
    """The tree's top folder, made if missing and marked as cephboot's (the inventory
    publishes only into a new or empty folder, or one that holds this marker)."""
    top = Folder.root(tree_root(settings), PUBLIC_DIR)
    try:
        if top.entry(TREE_MARKER) is None:
            top.write(TREE_MARKER, MARKER_TEXT, PUBLIC, None, durable=True)
    except BaseException:
        top.close()
        raise
    return top


def web_gid(settings: dict[str, Any]) -> int | None:
    group = settings["publish"]["group"]
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise PublishError(f"publish.group {group!r} in hosts/site.yaml: no such group on this machine") from None


def host_sources(host: Host) -> dict[str, str]:
    """Published name -> build file (build/hosts/<host>/<name>), for one host's current generation."""
    base = host_file(host.name, "")
    return {n: base + rel for n, rel in artifacts.tree_members(host.cfg).items()}  # strings: built per host on every run


def _mode(name: str, settings: dict[str, Any]) -> int:
    return settings["publish"]["secret_mode"] if name in SECRET_FILES else PUBLIC


# --- actions -------------------------------------------------------------------------

def _failed(what: str, e: Exception) -> TaskFailed:
    """A `cephboot: publish:` failure naming the path (ENOSPC, EROFS, a refused chown ...)."""
    if isinstance(e, GroupError):
        e = _group_problem(e)
    if isinstance(e, OSError):
        return failure(f"publish: {what}", e, what)
    return TaskFailed(f"cephboot: publish: {what}: {e}")


def publish_kernel(settings: dict[str, Any], kver: str, methods: list[str], kept: OutputsKept) -> TaskFailed | dict[str, Any]:
    """doit action: kernels/<kver>/{vmlinuz,initrd.img,initrd-sysfs.img}, the bases of ``methods``,
    world-readable (no host data, no secrets), each checked against the digest recorded when it
    was built.  A base no host uses any more stays until its kernel folder goes: a previous
    generation may still boot from it."""
    sources = (vmlinuz_path(kver), *(base_path(kver, m) for m in methods))
    stamp = built_stamp(kver)
    for src in sources:
        if stamp.get(src.name) != file_sha256(src):
            src.unlink()  # the next `doit` builds it again
            return TaskFailed(f"cephboot: publish: kernel {kver}: {src} is not what initrd:{kver} built (damaged or changed since): "
                              "not published; removed, run doit again to rebuild it")
    try:
        with ExitStack() as stack:
            top = stack.enter_context(open_tree(settings))
            with top.lock():
                kernels = stack.enter_context(top.folder("kernels", PUBLIC_DIR))
            folder = stack.enter_context(kernels.folder(kver, PUBLIC_DIR))
            locked = stack.enter_context(folder.lock())
            clear_unexpected(folder, {src.name for src in sources} | BASE_NAMES, locked)
            for src in sources:
                put(folder, src, src.name, PUBLIC, None)
            folder.fsync()
    except (OSError, GroupError) as e:
        return _failed(f"kernel {kver}", e)
    return {"outputs": kept.keys()}


def newc_members(data: bytes) -> tuple[dict[bytes, bytes], int | None]:
    """The members (name -> bytes) of the newc cpio archive at the start of ``data``, and where
    it ends (its trailer, padded to 512 bytes as cpio and overlay.pack write it), or None when
    it is cut short or no archive."""
    members: dict[bytes, bytes] = {}
    pos = 0
    while True:
        header = data[pos:pos + 110]
        if len(header) < 110 or header[:6] != b"070701":
            return members, None
        try:
            size, namesize = int(header[54:62], 16), int(header[94:102], 16)
        except ValueError:
            return members, None
        name = data[pos + 110:pos + 110 + namesize - 1]
        pos = pos + 110 + namesize
        pos += -pos % 4
        members[name] = data[pos:pos + size]
        pos += size + (-size % 4)
        if pos > len(data):
            return members, None
        if name == b"TRAILER!!!":
            pos += -pos % 512
            return members, pos if pos <= len(data) else None


def layer_secrets(data: bytes) -> dict[bytes, bytes]:
    """The keys a host layer holds: its keyring(s) and LUKS key, or their envelope sealed to
    the machine secret (sealing is deterministic: another envelope means another key or secret)."""
    sealed = SEALED_PATH.lstrip("/").encode()
    return {n: b for n, b in newc_members(data)[0].items() if n.endswith((b".keyring", b"/luks.key")) or n == sealed}


def layer_complete(layer: str, prefix_of: str | None = None) -> bool:
    """True when the host layer ``layer`` is one complete archive (and, with ``prefix_of``,
    when that file starts with exactly this layer: a monolithic initrd)."""
    try:
        data = read_regular(layer)
        if newc_members(data)[1] != len(data):
            return False
        if prefix_of is None:
            return True
        with open_regular(prefix_of) as f:
            return f.read(len(data)) == data
    except OSError:
        return False


def damaged_source(name: str, src: str, sources: dict[str, str]) -> str | None:
    """Why the build file ``src`` (published as ``name``) must not be published, or None."""
    if name == LAYER and not layer_complete(src):
        return "not a complete cpio archive"
    if name == MONOLITHIC:
        try:
            if os.stat(src).st_size <= os.stat(sources[LAYER]).st_size:
                return "shorter than its host layer"
        except FileNotFoundError:
            return "missing"
        if not layer_complete(sources[LAYER], prefix_of=src):
            return "does not start with the host's complete layer"
    return None


def publish_host(settings: dict[str, Any], name: str, sources: dict[str, str], routes: list[str],
                 recorded: dict[str, str] | None = None) -> TaskFailed | str | None:
    """doit action: hosts/<name>/ (when anything changed, the current files first become
    previous/), then the host's routes, which name its boot.ipxe.  ``recorded``: the stage's
    record of the published files (what it holds of a file someone else changed differs).
    Returns UNCHANGED when every published file already was what the build holds."""
    for n, src in sources.items():
        why = damaged_source(n, src, sources)
        if why:
            Path(src).unlink(missing_ok=True)  # the overlay stage makes it again
            return TaskFailed(f"cephboot: publish: host {name}: {src}: damaged build output ({why}): not published; "
                              "removed, the next doit builds it again")
    _warn_without_group(settings)
    prefix = os.path.join(tree_root(settings), "hosts", name) + "/"
    mine = {p[len(prefix):]: k for p, k in (recorded or {}).items() if p.startswith(prefix)}
    try:
        gid = web_gid(settings)
        with ExitStack() as stack:
            top = stack.enter_context(open_tree(settings))
            with top.lock():  # hosts/ is shared: one publisher (thread) repairs it at a time
                hosts = stack.enter_context(top.folder("hosts", PUBLIC_DIR))
            folder = stack.enter_context(hosts.folder(name, HOST_DIR, gid))
            locked = stack.enter_context(folder.lock())
            wrote = _publish_host(settings, folder, sources, gid, locked, mine) or folder.fixed
            if routes:
                wrote = publish_routes(top, routes) or wrote
    except (OSError, GroupError, PublishError) as e:
        return _failed(f"host {name}", e)
    return None if wrote else UNCHANGED


def _publish_host(settings: dict[str, Any], folder: Folder, sources: dict[str, str], gid: int | None, locked: bool,
                  mine: dict[str, str]) -> bool:
    """Publish one host's folder; True when anything in it was written or repaired."""
    repaired = clear_unexpected(folder, {*HOST_FILES, PREVIOUS, MARKER}, locked)
    # A publisher killed half-way leaves this marker: the files then are a mix of
    # two generations, which must not replace the good previous/ generation.
    interrupted = folder.entry(MARKER) is not None
    entries = {n: folder.entry(n) for n in HOST_FILES}
    current = {n for n, st in entries.items() if st is not None}
    # files someone else wrote (a host in its /boot) never become the previous generation
    ours = not mine or all(mine.get(n) == identity_of(entries[n]) for n in current)
    changed = (current - set(sources)) | {n for n, src in sources.items() if not folder.same_content(src, n)}
    repaired = _check_previous(folder, mine, locked, interrupted) or repaired
    if changed:
        if LAYER in changed and _key_rotated(folder, sources[LAYER]):
            # the previous generation holds the old key: it must not stay readable, and it
            # could not boot anyway once the old key is revoked
            if folder.entry(PREVIOUS) is not None:
                report(folder.where(PREVIOUS), "the host's key changed: the previous generation, which holds the old key, is removed")
                folder.remove(PREVIOUS)
        elif current and not interrupted and ours:
            _save_previous(folder, current, gid, locked)
        folder.touch(MARKER)
    for n in HOST_FILES:  # the layers first, the script that names them last
        if n not in sources:
            continue
        mode = _mode(n, settings)
        st = entries[n]
        if n in changed:
            folder.copy_in(sources[n], n, mode, gid)
        elif mine and mine.get(n) != identity_of(st) and st is not None and (
                stat.S_IMODE(st.st_mode) != mode or (gid is not None and st.st_gid != gid)):
            folder.copy_in(sources[n], n, mode, gid)  # never chmod/chown a file someone else made
            repaired = True
        elif folder.fix_mode(n, mode, gid):
            repaired = True
    for n in current - set(sources):  # e.g. initrd.img after monolithic was turned off
        folder.remove(n)
    folder.fsync()
    folder.unlink(MARKER)
    return bool(changed) or repaired


_WARNED = threading.Lock()  # held for good once the warning is out


def _warn_without_group(settings: dict[str, Any]) -> None:
    """Once per run: without publish.group, the web server cannot read a host layer (403)."""
    p = settings["publish"]
    if p["group"] is None and not p["secret_mode"] & 0o004 and _WARNED.acquire(blocking=False):
        report("hosts/site.yaml", f"publish.group is not set: host layers are mode {p['secret_mode']:04o} with the publisher's "
               "group, so the web server cannot read them (403); set it to the web server's group (www-data for Debian's nginx)")


def _key_rotated(folder: Folder, layer: str) -> bool:
    """True when the published layer holds other keys than the built one (a rotated keyring or
    LUKS key)."""
    old = folder.read(LAYER, LAYER_LIMIT)
    if not old:
        return False
    before = layer_secrets(old)
    return bool(before) and before != layer_secrets(read_regular(layer))


def _check_previous(folder: Folder, mine: dict[str, str], locked: bool, interrupted: bool) -> bool:
    """previous/ as the publisher left it: a link or file in its place is removed (reported),
    and so is a previous/ that someone else changed (it is no generation the publisher made).
    True when anything was removed."""
    st = folder.entry(PREVIOUS)
    if st is None:
        return False
    if mine and not interrupted and mine.get(PREVIOUS) not in (None, identity_of(st)):
        report(folder.where(PREVIOUS), "changed by someone else since it was published: removed (no fallback generation until the next change)")
        folder.remove(PREVIOUS)
        return True
    if not stat.S_ISDIR(st.st_mode):
        report(folder.where(PREVIOUS), f"{kind(st)} where a folder belongs: removed, not followed")
        folder.remove(PREVIOUS)
        return True
    prev = folder.existing(PREVIOUS)
    if prev is None:
        return False
    with prev:
        return clear_unexpected(prev, set(HOST_FILES), locked)


def _save_previous(folder: Folder, current: set[str], gid: int | None, locked: bool) -> None:
    """Make previous/ the exact generation now in ``folder`` (hard links; the current files stay)."""
    with folder.folder(PREVIOUS, HOST_DIR, gid) as prev:
        clear_unexpected(prev, set(HOST_FILES), locked)
        for n in HOST_FILES:
            if n in current:
                prev.link_from(folder, n)
            else:
                prev.remove(n)
        prev.fsync()


ROUTE_DIRS = ("ipxe/by-uuid", "ipxe/by-mac")


def publish_routes(top: Folder, routes: list[str]) -> bool:
    """A host's by-uuid/by-mac entries (after its folder: a route never names a missing script),
    under the tree's lock.  True when any was written."""
    wrote = False
    with top.lock(), top.folder("ipxe", PUBLIC_DIR) as ipxe:
        opened: dict[str, Folder] = {}
        try:
            for rel in routes:
                sub, name = rel.split("/")[1:]
                if sub not in opened:
                    opened[sub] = ipxe.folder(sub, PUBLIC_DIR)
                wrote = put(opened[sub], SITE / rel, name, PUBLIC, None) or wrote
            if wrote:
                for f in opened.values():
                    f.fsync()
        finally:
            for f in opened.values():
                f.close()
    return wrote


def publish_site(settings: dict[str, Any], routes: list[str], hosts: list[str], kvers: list[str], kept: OutputsKept) -> TaskFailed | dict[str, Any]:
    """doit action: boot.ipxe; remove the routes, hosts and kernels the inventory no longer has
    (publish:hosts publishes each host's routes)."""
    try:
        with open_tree(settings) as top, top.lock() as locked:
            top.remove_stale_temps(locked)
            _publish_site(top, SITE, routes, hosts, kvers, locked)
    except (OSError, GroupError) as e:
        return _failed("site", e)
    return {"outputs": kept.keys()}


def _publish_site(top: Folder, src_root: Path, routes: list[str], hosts: list[str], kvers: list[str], locked: bool) -> None:
    wanted = set(routes)
    put(top, src_root / "boot.ipxe", "boot.ipxe", PUBLIC, None)
    with top.folder("ipxe", PUBLIC_DIR) as ipxe:
        clear_unexpected(ipxe, {d.split("/")[1] for d in ROUTE_DIRS}, locked)
        for d in ROUTE_DIRS:
            with ipxe.folder(d.split("/")[1], PUBLIC_DIR) as folder:
                mine = {rel.rsplit("/", 1)[1] for rel in wanted if rel.startswith(d + "/")}
                for name in folder.names():  # the routes of removed hosts and of changed MACs go
                    if name not in mine and name.endswith(".ipxe") and folder.is_file(name):
                        folder.unlink(name)
                clear_unexpected(folder, mine, locked)
                folder.fsync()
        ipxe.fsync()
    _publish_grub_routes(top, src_root)
    top.fsync()
    # removed hosts: their keys must not stay readable, and their script must not boot a stale image
    if top.entry("hosts") is not None:
        with top.folder("hosts", PUBLIC_DIR) as folder:
            keep = set(hosts)
            for name in folder.names():
                if name not in keep:
                    folder.remove(name)
            used = set(kvers) | kernels_named_by_previous(folder)
    else:
        used = set(kvers)
    # kernels no current or previous host script names
    if top.entry("kernels") is not None:
        with top.folder("kernels", PUBLIC_DIR) as folder:
            for name in folder.names():
                if name not in used:
                    folder.remove(name)


def _publish_grub_routes(top: Folder, src_root: Path) -> None:
    """grub/grub.cfg: the site's GRUB routes while any host boots with grub-secureboot; gone otherwise."""
    src = src_root / SITE_GRUB
    if src.is_file():
        with top.folder(GRUB_DIR, PUBLIC_DIR) as folder:
            if put(folder, src, SITE_GRUB, PUBLIC, None):
                folder.fsync()
    elif top.entry(GRUB_DIR) is not None:
        top.remove(GRUB_DIR)


def kernels_named_by_previous(hosts: Folder) -> set[str]:
    """Kernel versions that some host's previous generation boots (they stay published for rollback)."""
    out: set[str] = set()
    for name in hosts.names():
        host = hosts.existing(name)
        if host is None:
            continue
        with host:
            prev = host.existing(PREVIOUS)
            if prev is None:
                continue
            with prev:
                script = prev.read(HOST_IPXE, SCRIPT_LIMIT) or b""
        out.update(m.decode(errors="replace") for m in _KVER_IN_SCRIPT.findall(script))
    return out


def rollback(settings: dict[str, Any], name: str) -> None:
    """Swap a host's current and previous generations (a second rollback undoes the first)."""
    where = tree_root(settings) / "hosts" / name / PREVIOUS
    with open_tree(settings) as top, ExitStack() as stack:
        hosts = top.existing("hosts")
        folder = hosts and stack.enter_context(hosts)
        folder = folder and folder.existing(name)
        prev = folder and stack.enter_context(folder) and folder.existing(PREVIOUS)
        if not prev or not prev.is_file(HOST_IPXE):
            raise PublishError(f"host {name!r} has no previous generation in {where}")
        stack.enter_context(prev)
        with folder.lock() as locked:
            folder.remove_stale_temps(locked)
            prev.remove_stale_temps(locked)
            _swap(folder, prev)


def _swap(folder: Folder, prev: Folder) -> None:
    cur_files = {n for n in HOST_FILES if folder.is_file(n)}
    prev_files = {n for n in HOST_FILES if prev.is_file(n)}
    for n in HOST_FILES:  # layers first, the script last, as when publishing
        keep = tmp_name(f"{n}.swap")  # removed by the next publish if we are killed here
        if n in cur_files:
            folder.hard_link(n, prev, keep)
        if n in prev_files:
            prev.move(n, folder, n)
        elif n in cur_files:
            folder.unlink(n)
        if n in cur_files:
            prev.move(keep, prev, n)
    prev.fsync()
    folder.fsync()


def rollback_action(only: str = "") -> TaskFailed | None:
    """doit action of `doit rollback --only HOST[,HOST...]` (hosts named as every per-host command names them)."""
    if not selection.words(only):  # a way of running it that refuse_without_hosts did not see (`doit auto`)
        return TaskFailed(f"cephboot: {selection.hosts_required('rollback')}")
    site = inventory.load_for_tasks()
    try:
        hosts = selection.choose("rollback", only, site.hosts, lambda: site.hosts)
    except selection.Unknown as e:
        return TaskFailed(str(e))
    by_host = routes_by_host(site)
    for name in hosts:
        try:
            rollback(site.settings, name)
        except PublishError as e:
            return TaskFailed(f"cephboot: rollback: {e}")
        except OSError as e:
            return failure(f"rollback: host {name}", e, name)
        # the swapped files are the publisher's own: the rollback holds
        outputs = host_outputs(str(tree_root(site.settings)), name, host_sources(site.hosts[name]), list(by_host[name]))
        record_outputs("publish", name, "|".join(identity_key(o) for o in outputs))
        sys.stdout.write(f"{selection.line('rollback', name)}\n{selection.DETAIL}the previous generation is now current (run `doit {selection.command('rollback', name)}` again to undo)\n")
    return None


def host_outputs(root: str, name: str, sources: dict[str, str], routes: list[str]) -> list[str]:
    """What publish:hosts records of a host, as paths: its folder, its files, previous/, its routes."""
    folder = f"{root}/hosts/{name}"
    return [folder, *(f"{folder}/{n}" for n in sources), f"{folder}/{PREVIOUS}", *(f"{root}/{r}" for r in routes)]


# --- tasks ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _code_digest() -> str:
    return code_digest(__name__)


@guarded
def task_publish() -> Iterator[dict[str, Any]]:
    """Publish kernels, base initrds, host layers and scripts, and the routes into the boot tree."""
    site = inventory.load_for_tasks()
    s = site.settings
    root = tree_root(s)
    config = digest(str(root), str(s["publish"]["group"]), str(s["publish"]["secret_mode"]), _code_digest())
    yield {"basename": "publish", "name": None, "doc": f"Publish the boot tree to {root}/ (atomic, only what changed)."}
    kvers = list(kernels_in_use(site))
    bases = bases_in_use(site)
    for kver in kvers:
        sources = [vmlinuz_path(kver), *(base_path(kver, m) for m in bases[kver])]
        targets = [str(root / "kernels" / kver / p.name) for p in sources]
        kept = OutputsKept(targets)
        yield {
            "basename": "publish",
            "name": kver,  # as initrd:<kver>
            "doc": f"kernels/{kver}/vmlinuz and its base initrds (world-readable)",
            "actions": [(publish_kernel, [s, kver, bases[kver], kept])],
            "file_dep": [str(p) for p in sources],
            "targets": targets,
            "uptodate": [config_changed(config), kept],
        }

    top = str(root)

    def units() -> dict[str, Unit]:
        out: dict[str, Unit] = {}
        by_host = routes_by_host(site)
        for host in site.hosts.values():
            sources = host_sources(host)
            routes = list(by_host[host.name])
            inputs = [*sources.values(), *(site_file(r) for r in routes)]
            out[host.name] = Unit(inputs, host_outputs(top, host.name, sources, routes), "", publish_host, (s, host.name, sources, routes))
        return out

    yield stage_task(
        "publish",
        f"hosts/<host>/ (boot.ipxe, {LAYER}, {MONOLITHIC} if monolithic; the previous generation kept) and the routes of each of the {len(site.hosts)} hosts whose files changed",
        # hosts are independent (each folder has its own lock; routes take the tree's):
        # several at once overlap their fsyncs, which are most of the time.  A host can
        # write its own folder: what was published is recorded with inode and ctime, one
        # host's failure stops only that host, and the action learns what it last wrote.
        Stage("publish", units, config, workers=s["publish"]["parallel"], output_key=identity_key, keep_going=True, pass_recorded=True),
        clean=False,  # `doit clean` must not take the boot tree away from booting machines
        task_dep=["render:hosts", "overlay:hosts", *(f"publish:{kver}" for kver in kvers)],
    )
    routes = sorted(site_outputs(site))
    hosts = sorted(site.hosts)
    kept = OutputsKept([os.path.join(root, "boot.ipxe")])
    yield {
        "basename": "publish",
        "name": "site",
        "doc": "boot.ipxe; removes the routes, hosts and kernels that are gone",
        "actions": [(publish_site, [s, routes, hosts, kvers, kept])],
        "file_dep": [site_file("boot.ipxe"), *([site_file(SITE_GRUB)] if grub_routes(site) else [])],
        "targets": [os.path.join(root, "boot.ipxe")],
        "task_dep": ["publish:hosts"],  # routes go after the scripts they name
        "uptodate": [config_changed(digest(config, " ".join(hosts), " ".join(kvers), "\n".join(routes), repr(grub_routes(site)))), kept],
    }


@guarded
def task_rollback() -> dict[str, Any]:
    """`doit rollback --only HOST,@PROFILE`: swap each host's published generation with the previous one."""
    selection.refuse_old_forms("rollback", "rollback", sys.argv)  # `doit rollback zephyr`
    selection.refuse_without_hosts("rollback", sys.argv)  # `doit rollback`: never every host by default
    return {
        "basename": "rollback",
        "doc": "doit rollback --only HOST[,HOST...]: make the previous published generation of HOST current (again to undo)",
        "actions": [(rollback_action,)],
        "params": [selection.param("the hosts to roll back", required=True)],
        "verbosity": 2,
    }
