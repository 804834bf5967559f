"""Publish the boot tree (a mounted CephFS folder): atomic, only what changed, with a previous generation per host."""
from __future__ import annotations

import errno
import fcntl
import grp
import os
import re
import shutil
import socket
import sys
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed
from .uptodate import config_changed

from . import inventory
from .fileio import digest, files_digest
from .initrd import base_path, kernels_in_use, vmlinuz_path
from .inventory import Host, Site
from .overlay import LAYER, MONOLITHIC
from .render import BUILD, HOST_IPXE, routes_by_host, site_outputs
from .stage import Stage, Unit, stage_task

PUBLIC = 0o644
PUBLIC_DIR = 0o755
# a host's folder: the web server (others) may open files by name but not list them
HOST_DIR = 0o751
PREVIOUS = "previous"
MARKER = ".publishing"
CHUNK = 1 << 20
# the files of one generation of a host, in the order they are replaced: the
# script that names the others goes last, so a new script never finds old layers missing
HOST_FILES = (MONOLITHIC, LAYER, HOST_IPXE)
SECRET_FILES = {LAYER, MONOLITHIC}  # they hold the cephx key (and the LUKS key)
_TMP = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<node>[^.]+)\.(?P<pid>\d+)$")
_KVER_IN_SCRIPT = re.compile(rb"/kernels/([^/\s]+)/vmlinuz")


class PublishError(Exception):
    """Publishing cannot go on; the message says what to do."""


# --- one file, atomically ----------------------------------------------------------

def same_content(src: Path | str, dst: Path) -> bool:
    """True when ``dst`` exists with exactly the bytes of ``src``."""
    try:
        if os.stat(dst).st_size != os.stat(src).st_size:
            return False
    except FileNotFoundError:
        return False
    with open(src, "rb") as a, open(dst, "rb") as b:
        while True:
            x, y = a.read(CHUNK), b.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


def _tmp_name(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.tmp.{socket.gethostname().split('.')[0]}.{os.getpid()}")


def _set_group(fd: int, path: Path, gid: int | None) -> None:
    """Give the file to the web server's group; explain what to do where the file system refuses."""
    if gid is None:
        return
    try:
        os.fchown(fd, -1, gid)
    except OSError as e:
        if os.fstat(fd).st_gid == gid:  # a setgid folder already gave it that group
            return
        name = _group_name(gid)
        raise PublishError(
            f"cannot give {path} to group {name}: {e.strerror}. Publish as root, as a member of {name}, "
            f"or make the tree's folders setgid {name} (chgrp -R {name} DIR; find DIR -type d -exec chmod g+s {{}} +)"
        ) from None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def fix_mode(path: Path, mode: int, gid: int | None) -> None:
    """Set mode and group of an existing file when they differ (no rewrite)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if gid is not None and st.st_gid != gid:
            _set_group(fd, path, gid)
        if st.st_mode & 0o7777 != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def copy_atomic(src: Path | str, dst: Path, mode: int, gid: int | None) -> None:
    """Copy ``src`` to ``dst`` so that a reader sees the old file or the new one, never a part.

    The copy goes to a temporary name in the same folder, gets its mode and group
    before it has a name readers know, is fsynced, then renamed over ``dst``.
    A publisher killed mid-copy leaves only the temporary file (removed by the
    next publish of that folder; the web server config hides dot files).
    """
    tmp = _tmp_name(dst)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        _set_group(fd, dst, gid)
        os.fchmod(fd, mode)
        with open(src, "rb") as f:
            while True:
                block = f.read(CHUNK)
                if not block:
                    break
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, dst)


def link_atomic(src: Path, dst: Path) -> None:
    """Make ``dst`` the same file as ``src`` (a hard link: no bytes written), replacing ``dst`` atomically."""
    try:
        if os.path.samefile(src, dst):
            return  # rename(2) of one hard link over another of the same file does nothing
    except FileNotFoundError:
        pass
    tmp = _tmp_name(dst)
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        st = os.stat(src)
        copy_atomic(src, dst, st.st_mode & 0o7777, st.st_gid)
        return
    os.replace(tmp, dst)


def ensure_dir(path: Path, mode: int, gid: int | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)
    if gid is not None and st.st_gid != gid:
        try:
            os.chown(path, -1, gid)
        except OSError:
            pass  # a folder's group only matters for setgid inheritance; files get theirs explicitly


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (FUSE) refuse fsync on folders; the renames are already visible
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: Path) -> Iterator[bool]:
    """Hold an exclusive flock on ``folder`` itself; yields False where the file system has no flock."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        yield locked
    finally:
        os.close(fd)  # closing releases the lock


def remove_stale_temps(folder: Path, locked: bool = True) -> None:
    """Remove temporary files that killed publishers left in ``folder``.

    With the folder locked every temporary file is stale (its writer held the
    lock); without flock, only those of this machine's dead processes are.
    """
    node = socket.gethostname().split(".")[0]
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for e in entries:
        m = _TMP.match(e.name)
        if not m:
            continue
        if not locked:
            if m["node"] != node:
                continue
            try:
                os.kill(int(m["pid"]), 0)
                continue  # a live publisher is writing it
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        Path(e.path).unlink(missing_ok=True)


# --- settings ------------------------------------------------------------------------

def tree_root(settings: dict[str, Any]) -> Path:
    """The publish target, relative to the site folder (doit's working directory)."""
    return Path(settings["publish"]["target"])


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
    names = (HOST_IPXE, LAYER, MONOLITHIC) if host.data["monolithic"] else (HOST_IPXE, LAYER)
    folder = f"build/hosts/{host.name}"
    return {n: f"{folder}/{n}" for n in names}  # strings: built per host on every run


def _mode(name: str, settings: dict[str, Any]) -> int:
    return settings["publish"]["secret_mode"] if name in SECRET_FILES else PUBLIC


# --- actions -------------------------------------------------------------------------

def _failed(e: PublishError) -> TaskFailed:
    return TaskFailed(f"cephboot: publish: {e}")


def publish_kernel(settings: dict[str, Any], kver: str) -> TaskFailed | None:
    """doit action: kernels/<kver>/{vmlinuz,initrd.img}, world-readable (no host data, no secrets)."""
    folder = tree_root(settings) / "kernels" / kver
    for d in (folder.parent, folder):
        ensure_dir(d, PUBLIC_DIR, None)
    with folder_lock(folder) as locked:
        remove_stale_temps(folder, locked)
        for src in (vmlinuz_path(kver), base_path(kver)):
            dst = folder / src.name
            if same_content(src, dst):
                fix_mode(dst, PUBLIC, None)
            else:
                copy_atomic(src, dst, PUBLIC, None)
        fsync_dir(folder)
    return None


def publish_host(settings: dict[str, Any], name: str, sources: dict[str, str], routes: list[str]) -> TaskFailed | None:
    """doit action: hosts/<name>/ (when anything changed, the current files first become
    previous/), then the host's routes, which name its boot.ipxe."""
    try:
        gid = web_gid(settings)
        root = tree_root(settings)
        folder = root / "hosts" / name
        ensure_dir(folder.parent, PUBLIC_DIR, None)
        ensure_dir(folder, HOST_DIR, gid)
        with folder_lock(folder) as locked:
            _publish_host(settings, folder, sources, gid, locked)
        if routes:
            publish_routes(root, routes)
    except PublishError as e:
        return _failed(e)
    except OSError as e:  # the tree is not as publish left it (a file where hosts/<name>/ should be, a full disk)
        where = e.filename or tree_root(settings) / "hosts" / name
        return TaskFailed(f"cephboot: publish: host {name}: {where}: {e.strerror or e}")
    return None


def _publish_host(settings: dict[str, Any], folder: Path, sources: dict[str, str], gid: int | None, locked: bool) -> None:
    remove_stale_temps(folder, locked)
    remove_stale_temps(folder / PREVIOUS, locked)
    # A publisher killed half-way leaves this marker: the files then are a mix of
    # two generations, which must not replace the good previous/ generation.
    marker = folder / MARKER
    interrupted = marker.exists()
    current = {n for n in HOST_FILES if (folder / n).is_file()}
    changed = (current - set(sources)) | {n for n, src in sources.items() if not same_content(src, folder / n)}
    if changed:
        if current and not interrupted:
            _save_previous(folder, current, gid, locked)
        marker.touch()
    for n in HOST_FILES:  # the layers first, the script that names them last
        if n not in sources:
            continue
        dst = folder / n
        if n in changed:
            copy_atomic(sources[n], dst, _mode(n, settings), gid)
        else:
            fix_mode(dst, _mode(n, settings), gid)
    for n in current - set(sources):  # e.g. initrd.img after monolithic was turned off
        (folder / n).unlink()
    fsync_dir(folder)
    marker.unlink(missing_ok=True)


def _save_previous(folder: Path, current: set[str], gid: int | None, locked: bool) -> None:
    """Make previous/ the exact generation now in ``folder`` (hard links; the current files stay)."""
    prev = folder / PREVIOUS
    ensure_dir(prev, HOST_DIR, gid)
    for n in HOST_FILES:
        if n in current:
            link_atomic(folder / n, prev / n)
        else:
            (prev / n).unlink(missing_ok=True)
    fsync_dir(prev)


ROUTE_DIRS = ("ipxe/by-uuid", "ipxe/by-mac")


@contextmanager
def site_folders(root: Path) -> Iterator[bool]:
    """The tree's site-wide folders exist, and their lock is held (yields whether flock works)."""
    for folder in ("", "ipxe", *ROUTE_DIRS):
        ensure_dir(root / folder, PUBLIC_DIR, None)
    with folder_lock(root) as locked:
        yield locked


def _copy_public(rels: list[str], src_root: Path, root: Path) -> bool:
    """Copy each changed file (public: no host secret) from the build to the tree; True if any was written."""
    wrote = False
    for rel in rels:
        src, dst = src_root / rel, root / rel
        if same_content(src, dst):
            fix_mode(dst, PUBLIC, None)
        else:
            copy_atomic(src, dst, PUBLIC, None)
            wrote = True
    return wrote


def publish_routes(root: Path, routes: list[str]) -> None:
    """A host's by-uuid/by-mac entries (after its folder: a route never names a missing script)."""
    with site_folders(root):
        if _copy_public(routes, BUILD / "site", root):
            for folder in ROUTE_DIRS:
                fsync_dir(root / folder)


def publish_site(settings: dict[str, Any], routes: list[str], hosts: list[str], kvers: list[str]) -> TaskFailed | None:
    """doit action: boot.ipxe; remove the routes, hosts and kernels the inventory no longer has
    (publish:hosts publishes each host's routes)."""
    root = tree_root(settings)
    with site_folders(root) as locked:
        for folder in ("", *ROUTE_DIRS):
            remove_stale_temps(root / folder, locked)
        _publish_site(root, BUILD / "site", routes, hosts, kvers)
    return None


def _publish_site(root: Path, src_root: Path, routes: list[str], hosts: list[str], kvers: list[str]) -> None:
    wanted = set(routes)
    _copy_public(["boot.ipxe"], src_root, root)
    for folder in ROUTE_DIRS:
        for e in os.scandir(root / folder):
            if e.name.endswith(".ipxe") and f"{folder}/{e.name}" not in wanted:
                os.unlink(e.path)
        fsync_dir(root / folder)
    fsync_dir(root)
    # removed hosts: their keys must not stay readable, and their script must not boot a stale image
    keep = set(hosts)
    if (root / "hosts").is_dir():
        for e in os.scandir(root / "hosts"):
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and e.name not in keep:
                shutil.rmtree(e.path)
    # kernels no current or previous host script names
    used = set(kvers) | kernels_named_by_previous(root)
    if (root / "kernels").is_dir():
        for e in os.scandir(root / "kernels"):
            if e.is_dir(follow_symlinks=False) and e.name not in used:
                shutil.rmtree(e.path)


def kernels_named_by_previous(root: Path) -> set[str]:
    """Kernel versions that some host's previous generation boots (they stay published for rollback)."""
    out: set[str] = set()
    for script in (root / "hosts").glob(f"*/{PREVIOUS}/{HOST_IPXE}"):
        out.update(m.decode() for m in _KVER_IN_SCRIPT.findall(script.read_bytes()))
    return out


def rollback(settings: dict[str, Any], name: str) -> None:
    """Swap a host's current and previous generations (a second rollback undoes the first)."""
    folder = tree_root(settings) / "hosts" / name
    prev = folder / PREVIOUS
    if not (prev / HOST_IPXE).is_file():
        raise PublishError(f"host {name!r} has no previous generation in {prev}")
    with folder_lock(folder) as locked:
        remove_stale_temps(folder, locked)
        remove_stale_temps(prev, locked)
        _swap(folder, prev)


def _swap(folder: Path, prev: Path) -> None:
    cur_files = {n for n in HOST_FILES if (folder / n).is_file()}
    prev_files = {n for n in HOST_FILES if (prev / n).is_file()}
    for n in HOST_FILES:  # layers first, the script last, as when publishing
        keep = _tmp_name(prev / f"{n}.swap")
        if n in cur_files:
            os.link(folder / n, keep)
        if n in prev_files:
            os.replace(prev / n, folder / n)
        elif n in cur_files:
            (folder / n).unlink()
        if n in cur_files:
            os.replace(keep, prev / n)
    fsync_dir(prev)
    fsync_dir(folder)


def rollback_action(hosts: list[str]) -> TaskFailed | None:
    """doit action of `doit rollback HOST...`."""
    if not hosts:
        return TaskFailed("cephboot: rollback: name the host(s): doit rollback HOST [HOST...]")
    settings = inventory.load_for_tasks().settings
    for name in hosts:
        try:
            rollback(settings, name)
        except PublishError as e:
            return TaskFailed(f"cephboot: rollback: {e}")
        sys.stdout.write(f"cephboot: {name}: the previous generation is now current (run `doit rollback {name}` again to undo)\n")
    return None


# --- tasks ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _code_digest() -> str:
    return files_digest([Path(__file__)])


def task_publish() -> Iterator[dict[str, Any]]:
    """Publish kernels, base initrds, host layers and scripts, and the routes into the boot tree."""
    site = inventory.load_for_tasks()
    s = site.settings
    root = tree_root(s)
    config = digest(str(root), str(s["publish"]["group"]), str(s["publish"]["secret_mode"]), _code_digest())
    yield {"basename": "publish", "name": None, "doc": f"Publish the boot tree to {root}/ (atomic, only what changed)."}
    kvers = list(kernels_in_use(site))
    for kver in kvers:
        yield {
            "basename": "publish",
            "name": f"kernel-{kver}",
            "doc": f"kernels/{kver}/vmlinuz and initrd.img (world-readable)",
            "actions": [(publish_kernel, [s, kver])],
            "file_dep": [str(vmlinuz_path(kver)), str(base_path(kver))],
            "targets": [str(root / "kernels" / kver / n) for n in ("vmlinuz", "initrd.img")],
            "uptodate": [config_changed(config)],
        }
    hosts_root = os.path.join(root, "hosts")  # strings, not Paths: this loop runs per host on every run
    def units() -> dict[str, Unit]:
        out: dict[str, Unit] = {}
        by_host = routes_by_host(site)
        for host in site.hosts.values():
            sources = host_sources(host)
            routes = list(by_host[host.name])
            inputs = [*sources.values(), *(f"build/site/{r}" for r in routes)]
            outputs = [*(f"{hosts_root}/{host.name}/{n}" for n in sources), *(f"{root}/{r}" for r in routes)]
            out[host.name] = Unit(inputs, outputs, "", publish_host, (s, host.name, sources, routes))
        return out

    yield stage_task(
        "publish",
        f"hosts/<host>/ (boot.ipxe, {LAYER}, {MONOLITHIC} if monolithic; the previous generation kept) and the routes of each of the {len(site.hosts)} hosts whose files changed",
        # hosts are independent (each folder has its own lock; routes take the tree's):
        # several at once overlap their fsyncs, which are most of the time
        Stage("publish", units, config, workers=s["publish"]["parallel"]),
        clean=False,  # `doit clean` must not take the boot tree away from booting machines
        task_dep=["render:hosts", "overlay:hosts", *(f"publish:kernel-{kver}" for kver in kvers)],
    )
    routes = sorted(site_outputs(site))
    hosts = sorted(site.hosts)
    yield {
        "basename": "publish",
        "name": "site",
        "doc": "boot.ipxe; removes the routes, hosts and kernels that are gone",
        "actions": [(publish_site, [s, routes, hosts, kvers])],
        "file_dep": ["build/site/boot.ipxe"],
        "targets": [os.path.join(root, "boot.ipxe")],
        "task_dep": ["publish:hosts"],  # routes go after the scripts they name
        "uptodate": [config_changed(digest(config, " ".join(hosts), " ".join(kvers), "\n".join(routes)))],
    }


def task_rollback() -> dict[str, Any]:
    """`doit rollback HOST...`: swap a host's published generation with the previous one."""
    return {
        "basename": "rollback",
        "doc": "doit rollback HOST...: make the previous published generation of HOST current (again to undo)",
        "actions": [(rollback_action,)],
        "pos_arg": "hosts",
        "verbosity": 2,
    }
