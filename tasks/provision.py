"""Provision a host on the cluster (RBD namespace, root image, cephx client, CephFS /boot) and verify it, read-only.

`doit provision --only <host>` changes the cluster, so it is never a default task.
Every step first looks, then acts only where the cluster differs from the
inventory; a second run changes nothing and says so.  Data is never destroyed:
an image that holds data is rebuilt only when the host sets `rbd.reimage: true`.
Task loading does no Ceph I/O; all of it happens in the actions.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import golden, inventory, rootfs
from .cephcli import Admin, CephError, connect
from .golden import Refused  # provisioning stops here to keep data or to avoid guessing; the message says what would allow it
from .fileio import tmp_name, write_if_changed
from .inventory import Host, InventoryError, Site
from .layout import PROVISION
from .model import HostView, stateless
from .render import render_hosts
from .selection import DETAIL, Reach, command, per_host_task, say
from .failures import guarded
from .checks import MAX_KEYRING
from .yamlfiles import secret_bytes

STAMP_KEY = "cephboot.root"  # image metadata: the digest of what the root image was built from
INPUTS_KEY = "cephboot.root.inputs"  # image metadata: that digest input by input (JSON), to say what changed
NEW, OLD = ".cephboot-new", ".cephboot-old"  # an image being built, and one being replaced
PROVISION_TOOLS = ("ceph", "rbd", "ceph-fuse", "mkfs.ext4", "cp", "tar")
# The mark that a cephx client is cephboot's: a monitor config-key naming the host it was made
# for.  Provisioning sets it before creating a client and changes no client that lacks it.
CLIENT_MARK = "cephboot/clients/{entity}"
QUOTA_XATTR = "ceph.quota.max_bytes"
NAMESPACE_XATTR = "ceph.dir.layout.pool_namespace"


@dataclass
class Report:
    """What one host's run found and did, line by line."""

    host: str
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def did(self, what: str) -> None:
        self.changed.append(what)
        say(what)

    def ok(self, what: str) -> None:
        self.kept.append(what)

    def summary(self) -> str:
        if self.changed:
            return f"{len(self.changed)} change(s); already as the inventory says: {', '.join(self.kept) or 'nothing'}"
        return f"nothing to change ({', '.join(self.kept)})"


# ---- what the inventory asks for ------------------------------------------------

# `_` and `-` are escaped, so a `-` in a namespace always stands for a `/` of the path: no two
# paths share a namespace (`/hosts/x-y` is fs-hosts-x_dy, `/hosts-x/y` is fs-hosts_dx-y), and a
# cap on exactly one namespace never reaches another folder's objects.
_ESCAPES = {"_": "__", "-": "_d", "/": "-"}


def boot_namespace(path: str) -> str:
    """The RADOS namespace holding the file objects of CephFS folder ``path``: ``fs`` + the path, escaped injectively."""
    return "fs" + "".join(_ESCAPES.get(c, c) for c in path)


def wanted_caps(cfg: HostView, fs_name: str, data_pool: str) -> dict[str, str]:
    """Least privilege: RBD in the host's namespace only; CephFS in its /boot directory and that directory's RADOS namespace only."""
    rbd = cfg.rbd
    # A clone's client reads its golden image (krbd reads unwritten extents from the parent), and nothing else there;
    # a stateless host's client has nothing but that read: it has no image of its own.
    parent = f"profile rbd-read-only pool={rbd.pool} namespace={golden.namespace_of(cfg.root.image)}" if cfg.root.image else ""
    own = "" if stateless(cfg) else f"profile rbd pool={rbd.pool} namespace={rbd.namespace}"
    return {
        "mds": f"allow rw fsname={fs_name} path={cfg.boot_path}",
        "mon": f"profile rbd, allow r fsname={fs_name}",
        "osd": ", ".join(c for c in (own, parent, f"allow rw pool={data_pool} namespace={boot_namespace(cfg.boot_path)}") if c),
    }


def tree_caps(fs_name: str, data_pool: str, boot_tree: str, write: bool) -> dict[str, str]:
    """The publisher's caps (``write``) or the web server's (read-only): the boot tree and its one RADOS namespace, nothing else.

    The namespace is named exactly, never with a wildcard: hosts' folders live outside the
    tree, so nothing below it needs a namespace of its own.
    """
    mode = "rw" if write else "r"
    tree = boot_tree or "/"
    return {
        "mds": f"allow {mode} fsname={fs_name} path={tree}",
        "mon": f"allow r fsname={fs_name}",
        "osd": f"allow {mode} pool={data_pool} namespace={boot_namespace(tree)}",
    }


def image_spec(cfg: HostView, suffix: str = "") -> str:
    r = cfg.rbd
    return f"{r.pool}/{r.namespace}/{r.image}{suffix}"


# ---- the steps -------------------------------------------------------------------

def _check_pool(admin: Admin, host: Host) -> None:
    """rbd.pool exists and is no CephFS pool (a host's RBD cap on it would reach file objects)."""
    pool = host.cfg.rbd.pool
    if pool not in admin.pools():
        raise Refused(f"RBD pool {pool!r} (rbd.pool) does not exist; pools are the cluster admin's choice: "
                      f"create it with `ceph osd pool create {pool} && rbd pool init {pool}`")
    for fs in admin.ceph_json("fs", "ls"):
        if pool == fs["metadata_pool"] or pool in fs["data_pools"]:
            raise Refused(f"host {host.name}: rbd.pool {pool!r} ({host.source}) is a pool of CephFS {fs['name']!r}; "
                          "a host's RBD cap on it would reach file objects of other folders. Name a pool of its own for RBD images")


def _namespace(admin: Admin, cfg: HostView, report: Report) -> None:
    pool, ns = cfg.rbd.pool, cfg.rbd.namespace
    if any(n["name"] == ns for n in admin.rbd_json("namespace", "ls", pool)):
        report.ok(f"namespace {pool}/{ns}")
    else:
        admin.rbd("namespace", "create", f"{pool}/{ns}")
        report.did(f"created RBD namespace {pool}/{ns}")


def _boot_dir(admin: Admin, cfg: HostView, report: Report) -> None:
    """The host's /boot directory, with its own RADOS namespace set before any file of it is written, and its quota."""
    path, ns = cfg.boot_path, boot_namespace(cfg.boot_path)
    quota = str(rootfs.size_bytes(cfg.boot_quota))
    with admin.cephfs() as root:
        d = root / path.lstrip("/")
        if d.is_symlink():
            raise Refused(f"CephFS {path} (boot_path) is a symbolic link; a host's /boot must be a folder of its own")
        created = not d.is_dir()
        d.mkdir(parents=True, exist_ok=True)
        if created:
            report.did(f"created CephFS directory {path}")
        kept = True
        if _xattr(d, NAMESPACE_XATTR) != ns:
            os.setxattr(d, NAMESPACE_XATTR, ns.encode())
            report.did(f"set {path}'s RADOS namespace to {ns}")
            kept = False
        if _xattr(d, QUOTA_XATTR) != quota:
            os.setxattr(d, QUOTA_XATTR, quota.encode())
            report.did(f"set {path}'s quota to {cfg.boot_quota} ({quota} bytes)")
            kept = False
        if kept and not created:
            report.ok(f"/boot {path}")
        # Files written before the namespace was set keep their objects outside it,
        # where the host's OSD cap no longer reaches: rewrite them into it.  The folder is
        # the host's: walk it by folder descriptors, never following a link it planted.
        moved = 0
        for _, _, names, dir_fd in os.fwalk(d, follow_symlinks=False):
            moved += sum(_rewrite_into(dir_fd, name, ns) for name in names)
        if moved:
            report.did(f"rewrote {moved} file(s) in {path} that predate its RADOS namespace")


def _rewrite_into(dir_fd: int, name: str, ns: str) -> bool:
    """Replace regular file ``name`` of ``dir_fd`` by a copy of itself when its objects are outside ``ns``; links are never followed."""
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:  # a link (ELOOP), or gone
        return False
    tmp = tmp_name(name)  # fileio's one temp-name scheme: a killed run's leftover is recognised and removed
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode) or _xattr(src, "ceph.file.layout.pool_namespace") == ns:
            return False
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            while os.sendfile(dst, src, None, 1 << 20):
                pass
            os.fchown(dst, st.st_uid, st.st_gid)
            # its own mode, whatever the umask, and after the chown, which clears set-id bits
            os.fchmod(dst, stat.S_IMODE(st.st_mode))
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(dst)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return True
    finally:
        os.close(src)


def _xattr(p: Path | int, name: str) -> str:
    try:
        return os.getxattr(p, name).decode()
    except OSError:
        return ""


def _auth(admin: Admin, entity: str) -> dict[str, Any] | None:
    """The cluster's record of ``entity`` (key, caps), or None when it has none."""
    try:
        return admin.ceph_json("auth", "get", entity)[0]
    except CephError as e:
        if e.not_found:
            return None
        raise


def _keyring_text(site: Site, cfg: HostView) -> str:
    """The host's keyring as the inventory's checks found it (a private file of this user's: yamlfiles.read_secret)."""
    return secret_bytes(site.path_str(cfg.keyring), MAX_KEYRING).decode(errors="replace")


def _key_on_file(site: Site, cfg: HostView) -> str:
    try:
        return inventory.cephx_key(_keyring_text(site, cfg), cfg.client)
    except (OSError, ValueError):
        return ""


def entity_of(site: Site, cfg: HostView) -> str:
    """The host's cephx entity: its client, or the key generation its keyring holds after `doit rotate`."""
    try:
        return "client." + inventory.keyring_entity(_keyring_text(site, cfg), cfg.client)[0]
    except (OSError, ValueError):
        return f"client.{cfg.client}"


def _mark(admin: Admin, entity: str) -> str | None:
    """The host a client was made (or adopted) for by cephboot, or None: the client is not cephboot's."""
    try:
        return admin.ceph("config-key", "get", CLIENT_MARK.format(entity=entity)).strip()
    except CephError as e:
        if e.not_found:
            return None
        raise


def _owned_client(admin: Admin, site: Site, host: Host) -> dict[str, Any] | None:
    """The cluster's record of the host's client, after making sure provisioning may change it.

    None when the client does not exist yet.  A client that exists and is not marked as made
    for this host (the admin, the publisher, a client made by hand or for another host) is refused.
    """
    entity = entity_of(site, host.cfg)
    if entity in ("client.admin", admin.entity):
        raise Refused(f"host {host.name}: client {host.cfg.client!r} ({host.source}) is the cluster admin's identity; "
                      "a host never gets it. Give the host a client of its own (the default is its name)")
    current = _auth(admin, entity)
    mark = _mark(admin, entity)
    if current is None or mark == host.name:
        return current
    whose = f"it was made by cephboot for host {mark!r}" if mark else "cephboot did not create it"
    raise Refused(f"host {host.name}: {entity} exists on the cluster and {whose}; provisioning never changes such a client "
                  f"(its caps would be replaced by the host's and its key published in the host's layer). "
                  f"If {entity} is meant to be {host.name}'s, adopt it deliberately: "
                  f"`ceph config-key set {CLIENT_MARK.format(entity=entity)} {host.name}`, then run `doit provision --only {host.name}` again")


def _client(admin: Admin, site: Site, host: Host, current: dict[str, Any] | None, data_pool: str, report: Report) -> bool:
    """The host's cephx client with exactly the wanted caps, and its keyring file where the inventory points.

    ``current`` is what _owned_client found.  True when the keyring file was rewritten (the
    host's rendered files are then stale).
    """
    cfg = host.cfg
    entity = entity_of(site, cfg)
    caps = wanted_caps(cfg, admin.fs_name, data_pool)
    keyring = Path(site.path_str(cfg.keyring))
    flat = [w for kind in sorted(caps) for w in (kind, caps[kind])]
    if current is None:
        # The keyring the inventory already holds (made by `python -m tasks.examplekeys`
        # or by hand) becomes the client's key, so rendered files stay valid.  The mark
        # goes first: a run interrupted in between leaves a mark without a client, never
        # a client that the next run would refuse as someone else's.
        try:
            key = inventory.cephx_key(_keyring_text(site, cfg), cfg.client)
        except OSError as e:
            raise Refused(f"host {host.name}: {e.filename}: {e.strerror}") from None
        admin.ceph("config-key", "set", CLIENT_MARK.format(entity=entity), host.name)
        admin.ceph("auth", "add", entity, *flat, "-i", "-", input=f"[{entity}]\n\tkey = {key}\n".encode())
        report.did(f"created {entity} with the key from {site.display(cfg.keyring)}")
        return False
    if current.get("caps", {}) != caps:
        admin.ceph("auth", "caps", entity, *flat)
        report.did(f"set {entity}'s caps to {caps}")
    else:
        report.ok(f"{entity} caps")
    key = current["key"]
    if _key_on_file(site, cfg) != key:
        write_if_changed(keyring, f"[{entity}]\n\tkey = {key}\n".encode(), 0o600, durable=True)
        report.did(f"wrote the cluster's key of {entity} to {site.display(cfg.keyring)}")
        return True
    return False


def _image_names(admin: Admin, cfg: HostView) -> set[str]:
    r = cfg.rbd
    return {str(n) for n in admin.rbd_json("ls", "--pool", r.pool, "--namespace", r.namespace)}


def _stamp(admin: Admin, spec: str, key: str = STAMP_KEY) -> str:
    try:
        return admin.rbd("image-meta", "get", spec, key).strip()
    except CephError as e:
        if e.not_found:
            return ""
        raise


def _recover(admin: Admin, cfg: HostView, names: set[str], report: Report) -> set[str]:
    """Complete or undo what an interrupted run left: a half-imported image, an image set aside."""
    image = cfg.rbd.image
    if image + NEW in names:
        admin.rbd("rm", "--no-progress", image_spec(cfg, NEW))
        report.did(f"removed {image_spec(cfg, NEW)}, left half-made by an interrupted run")
    if image + OLD in names:
        if image not in names:
            admin.rbd("rename", image_spec(cfg, OLD), image_spec(cfg))
            report.did(f"put back {image_spec(cfg)}, set aside by an interrupted run")
        elif cfg.rbd.reimage:
            admin.rbd("rm", "--no-progress", image_spec(cfg, OLD))
            report.did(f"removed {image_spec(cfg, OLD)}, replaced by a reimage that an interrupted run finished")
        else:
            report.ok(f"{image_spec(cfg, OLD)} kept (an earlier reimage's old image; remove it by hand once it is not needed)")
    return _image_names(admin, cfg)


def _image(admin: Admin, site: Site, host: Host, report: Report) -> None:
    cfg = host.cfg
    spec = image_spec(cfg)
    names = _recover(admin, cfg, _image_names(admin, cfg), report)
    if cfg.root.image:
        _clone(admin, site, host, names, report)
        return
    inputs = rootfs.image_inputs(site, host)
    stamp = rootfs.image_stamp(inputs)
    replace, why = False, ""
    if cfg.rbd.image in names:
        found = _stamp(admin, spec)
        if found == stamp:
            report.ok(f"image {spec}")
            return
        if admin.rbd_json("diff", spec):  # extents that hold data
            if not cfg.rbd.reimage:
                if found:
                    report.ok(f"image {spec} (provisioned earlier from other inputs; kept, as rbd.reimage is false)")
                    return
                raise Refused(f"host {host.name}: image {spec} exists and holds data that cephboot did not write; "
                              f"refusing to overwrite it. Set `rbd: {{reimage: true}}` in {host.source} to replace it (its data is lost)")
            watchers = admin.rbd_json("status", spec).get("watchers", [])
            if watchers:
                raise Refused(f"host {host.name}: image {spec} is in use ({', '.join(w.get('address', '?') for w in watchers)}); "
                              "rbd.reimage is true, but an image that is mapped is never replaced: shut the host down first")
        replace = True
        why = f" ({_what_changed(admin, spec, inputs)})" if found else " (it was not written by cephboot)"
    work = site.root / PROVISION / host.name
    rootfs.remove_tree(work)
    try:
        with private_files(work):
            img = rootfs.make_image(site, host, work, say=say)
        features = ",".join(cfg.rbd.features)
        argv = ["import", "--no-progress", "--image-format", "2"]
        argv += ["--image-feature", features] if features else ["--rbd-default-features", "0"]
        admin.rbd(*argv, str(img), image_spec(cfg, NEW))
        admin.rbd("image-meta", "set", image_spec(cfg, NEW), INPUTS_KEY, json.dumps(inputs, sort_keys=True))
        admin.rbd("image-meta", "set", image_spec(cfg, NEW), STAMP_KEY, stamp)
        if replace:
            admin.rbd("rename", spec, image_spec(cfg, OLD))
        admin.rbd("rename", image_spec(cfg, NEW), spec)
        if replace:
            admin.rbd("rm", "--no-progress", image_spec(cfg, OLD))
        report.did(f"{'rebuilt' if replace else 'wrote'} root image {spec} ({cfg.rbd.size}{', LUKS2' if cfg.luks else ''}) "
                   f"from {_describe(rootfs.source_spec(site, host))}{why}")
    finally:
        rootfs.remove_tree(work)


@contextmanager
def private_files(work: Path) -> Iterator[None]:
    """Create ``work`` owner-only, and let everything created inside the block be owner-only from its first byte.

    A root image holds the host's keyring and LUKS key in the clear until it is imported:
    no other local user may read it, not even while it is being written (umask 077; the
    folder alone would do, but a file moved out of it keeps its mode).
    """
    old = os.umask(0o077)
    try:
        work.mkdir(mode=0o700, parents=True)
        yield
    finally:
        os.umask(old)


def _clone(admin: Admin, site: Site, host: Host, names: set[str], report: Report) -> None:
    """The host's root as a clone of its golden image's current version, with its own files; an existing root is kept."""
    cfg = host.cfg
    spec = image_spec(cfg)
    image = golden.image_of(site, host)
    assert image is not None
    parent = golden.current_parent(admin, site, image)
    inputs = golden.clone_inputs(host, parent)
    stamp = rootfs.image_stamp(inputs)
    if cfg.rbd.image in names:
        found, was = _stamp(admin, spec), golden.parent_of(admin, spec)
        if found == stamp:
            report.ok(f"image {spec} (a clone of {parent})")
            return
        if found and was and was != parent:
            report.ok(f"image {spec} (a clone of {was}; {parent} is newer: `doit move-root --only {host.name}` moves it, keeping this root)")
            return
        if found:
            report.ok(f"image {spec} (a clone of {was or '?'} with other host files; kept: after the first boot it is the host's own)")
            return
        if admin.rbd_json("diff", spec) and not cfg.rbd.reimage:
            raise Refused(f"host {host.name}: image {spec} exists and holds data that cephboot did not write; refusing to touch it. "
                          f"Set `rbd: {{reimage: true}}` in {host.source} to set it aside (it is kept as {golden.kept_name(cfg)}) and clone {parent}")
        if golden.in_use(admin, spec):
            raise Refused(f"host {host.name}: image {spec} is in use; shut the host down first")
        aside = _aside(admin, cfg)  # a free name: a former root set aside in the same second keeps its own
        admin.rbd("rename", spec, f"{cfg.rbd.pool}/{cfg.rbd.namespace}/{aside}")
        report.did(f"set {spec} aside as {aside} (it was not written by cephboot)")
    golden.make_clone(admin, site, host, image, parent, image_spec(cfg, NEW))
    admin.rbd("image-meta", "set", image_spec(cfg, NEW), INPUTS_KEY, json.dumps(inputs, sort_keys=True))
    admin.rbd("image-meta", "set", image_spec(cfg, NEW), STAMP_KEY, stamp)
    admin.rbd("rename", image_spec(cfg, NEW), spec)
    report.did(f"cloned {parent} as root image {spec} with its {len(golden.clone_files(host))} host files")


def _what_changed(admin: Admin, spec: str, inputs: dict[str, str]) -> str:
    """Which of the image's inputs changed since it was built, as far as its metadata tells."""
    changed = rootfs.changed_inputs(_stamp(admin, spec, INPUTS_KEY), inputs)
    return f"changed since it was built: {', '.join(changed)}" if changed else "it was built by cephboot from other inputs"


def _describe(spec: dict[str, Any]) -> str:
    if "debootstrap" in spec:
        return f"debootstrap {spec['debootstrap']} + {', '.join(spec['packages']) or 'minbase'}"
    return spec.get("directory") or spec["tarball"]


def provision_host(site: Site, host: Host) -> TaskFailed | None:
    """Make the cluster match ``host``'s inventory entry; print what changed, or that nothing did."""
    missing = [t for t in PROVISION_TOOLS if shutil.which(t) is None]
    if missing:
        return TaskFailed(f"{command('provision', host.name)}: missing {', '.join(missing)} (scripts/setup installs them)")
    report = Report(host.name)
    try:
        admin = connect(site)
        data_pool = admin.fs_data_pool()
        # Everything that would refuse is asked before anything changes.
        _check_pool(admin, host)
        current = _owned_client(admin, site, host)
        if stateless(host.cfg):
            snap = _golden_snapshot(admin, site, host)  # refused before anything changes when it is not there
        else:
            _namespace(admin, host.cfg, report)
        _boot_dir(admin, host.cfg, report)
        if _client(admin, site, host, current, data_pool, report):
            render_hosts(site, [host.name])  # the image must carry the key the cluster knows
        if stateless(host.cfg):
            report.ok(f"root {snap} mapped read-only (stateless: no image of its own)")
        else:
            _image(admin, site, host, report)
    except (Refused, CephError, rootfs.RootfsError, InventoryError) as e:
        say(report.summary())
        return TaskFailed(f"{command('provision', host.name)}: {e}")
    say(report.summary())
    return None


def _golden_snapshot(admin: Admin, site: Site, host: Host) -> str:
    """The golden snapshot a stateless host boots, once it is sure that it exists and is frozen."""
    image = golden.image_of(site, host)
    assert image is not None
    snap = host.cfg.root.snapshot
    spec = image.snapshot_spec(snap)
    versions = golden.versions(admin, image)
    if snap not in versions:
        built = ", ".join(sorted(versions)) or "none"
        raise Refused(f"host {host.name}: root.snapshot {snap!r} ({host.origin('root.snapshot')}) is no version of golden image {image.name} "
                      f"(built: {built}); `doit image --only {image.name}` builds the one of its current inputs and prints its name")
    if not versions[snap]:
        raise Refused(f"host {host.name}: {spec} is not frozen yet (an interrupted build): run `doit image --only {image.name}` again")
    return spec


# ---- moving a clone to a newer golden version, and back ---------------------------

def clones(site: Site) -> Reach:
    """The hosts move-root and rollback-root work on: those with a root.image.  A stateless one has
    no root of its own: a profile or `*` chooses it and the command says how it moves; named alone,
    it is refused, as a host without root.image is (tasks/selection.py)."""
    names: list[str] = []
    skipped: dict[str, str] = {}
    alone: dict[str, str] = {}
    for name, host in site.hosts.items():
        if not host.cfg.root.image:
            skipped[name] = f"has no root.image ({host.source})"
            continue
        names.append(name)
        if stateless(host.cfg):
            alone[name] = (f"has no root of its own (stateless: it boots {_golden_root(host)} read-only; root.snapshot "
                           f"({host.origin('root.snapshot')}) moves it and rolls it back, at its next boot after `doit`)")
    return Reach(names, skipped, alone)


def _golden_root(host: Host) -> str:
    """What a stateless host boots: its golden image's version, as the pool's namespace/image."""
    cfg = host.cfg
    return f"{golden.namespace_of(cfg.root.image)}/{cfg.root.image}-{cfg.root.snapshot}"


def _movable(admin: Admin, site: Site, host: Host) -> str:
    """The root spec of a host with a root of its own cloned from root.image (clones()), once it is
    sure that it exists, is a clone and is not mapped."""
    cfg = host.cfg
    spec = image_spec(cfg)
    if cfg.rbd.image not in _image_names(admin, cfg):
        raise Refused(f"host {host.name}: {spec} does not exist: `doit provision --only {host.name}` clones it")
    users = golden.in_use(admin, spec)
    if users:
        raise Refused(f"host {host.name}: {spec} is mapped ({', '.join(users)}); a root in use is never swapped: shut the host down first")
    return spec


def _aside(admin: Admin, cfg: HostView) -> str:
    """A free name for setting the host's current root aside (its former roots are sorted by it)."""
    taken = set(golden.kept_roots(admin, cfg))
    name = golden.kept_name(cfg)
    while name in taken:
        name += "+"
    return name


def move_root(site: Site, host: Host) -> TaskFailed | None:
    """Give the host a clone of its golden image's current version; its former root is kept beside it, whole."""
    cfg = host.cfg
    if stateless(cfg):  # chosen by a profile or `*` (clones())
        say(f"stateless, root is {_golden_root(host)} read-only, nothing to move here: "
            f"change root.snapshot ({host.origin('root.snapshot')}) and run `doit`")
        return None
    try:
        admin = connect(site)
        spec = _movable(admin, site, host)
        image = golden.image_of(site, host)
        assert image is not None
        parent = golden.current_parent(admin, site, image)
        was = golden.parent_of(admin, spec)
        if was == parent:
            say(f"root {spec} is a clone of {parent}, the current version: nothing to move")
            return None
        aside = _aside(admin, cfg)
        base = f"{cfg.rbd.pool}/{cfg.rbd.namespace}"
        admin.rbd("rename", spec, f"{base}/{aside}")
        try:
            inputs = golden.clone_inputs(host, parent)
            golden.make_clone(admin, site, host, image, parent, image_spec(cfg, NEW))
            admin.rbd("image-meta", "set", image_spec(cfg, NEW), INPUTS_KEY, json.dumps(inputs, sort_keys=True))
            admin.rbd("image-meta", "set", image_spec(cfg, NEW), STAMP_KEY, rootfs.image_stamp(inputs))
            admin.rbd("rename", image_spec(cfg, NEW), spec)
        except BaseException:
            admin.rbd("rename", f"{base}/{aside}", spec)  # the host keeps the root it had
            raise
        say(f"root was a clone of {was or '(no golden image)'}, is now a clone of {parent}; "
              f"the former root is kept as {base}/{aside} (`doit rollback-root --only {host.name}` brings it back)")
    except (Refused, CephError, rootfs.RootfsError, InventoryError) as e:
        return TaskFailed(f"{command('move-root', host.name)}: {e}")
    return None


def rollback_root(site: Site, host: Host) -> TaskFailed | None:
    """Make the host's newest former root its root again; the root it replaces is kept in turn (nothing is removed)."""
    cfg = host.cfg
    if stateless(cfg):  # chosen by a profile or `*` (clones())
        say(f"stateless, root is {_golden_root(host)} read-only, nothing to roll back here: "
            f"set root.snapshot ({host.origin('root.snapshot')}) back to the version it booted and run `doit`")
        return None
    try:
        admin = connect(site)
        spec = _movable(admin, site, host)
        kept = golden.kept_roots(admin, cfg)
        if not kept:
            raise Refused(f"host {host.name}: no former root beside {spec} ({cfg.rbd.image}{golden.KEPT}*): nothing to roll back to")
        base = f"{cfg.rbd.pool}/{cfg.rbd.namespace}"
        back, aside = kept[-1], _aside(admin, cfg)
        was = golden.parent_of(admin, spec)
        admin.rbd("rename", spec, f"{base}/{aside}")
        admin.rbd("rename", f"{base}/{back}", spec)
        say(f"root was a clone of {was or '(no golden image)'}, is again {base}/{back}, "
              f"a clone of {golden.parent_of(admin, spec) or '(no golden image)'}; the root it replaces is kept as {base}/{aside}")
    except (Refused, CephError, rootfs.RootfsError, InventoryError) as e:
        return TaskFailed(f"{command('rollback-root', host.name)}: {e}")
    return None


# ---- verify (read-only) -----------------------------------------------------------

def verify_host(site: Site, host: Host) -> TaskFailed | None:
    """Compare the cluster with ``host``'s inventory entry without changing anything; one line per item."""
    cfg = host.cfg
    problems: list[str] = []
    lines: list[str] = []

    def check(item: str, ok: bool, detail: str) -> None:
        lines.append(f"{DETAIL}{'ok      ' if ok else 'MISMATCH'} {item}: {detail}")
        if not ok:
            problems.append(item)

    try:
        admin = connect(site)
        data_pool = admin.fs_data_pool()
        pool, ns = cfg.rbd.pool, cfg.rbd.namespace
        if stateless(cfg):
            try:
                check("root", True, f"{_golden_snapshot(admin, site, host)} exists and is frozen (stateless: mapped read-only)")
            except Refused as e:
                check("root", False, str(e))
            has_ns = False
        else:
            has_ns = pool in admin.pools() and any(n["name"] == ns for n in admin.rbd_json("namespace", "ls", pool))
            check("namespace", has_ns, f"{pool}/{ns}" + ("" if has_ns else " does not exist"))
        spec = image_spec(cfg)
        info = None
        if has_ns and cfg.rbd.image in _image_names(admin, cfg):
            info = admin.rbd_json("info", spec)
        if info is None and not stateless(cfg):
            check("image", False, f"{spec} does not exist")
        elif info is not None:
            image = golden.image_of(site, host)
            shape = image.cfg if image else cfg.rbd  # a clone has its golden image's size and features
            size = rootfs.size_bytes(shape.size)
            # "operations" is set by Ceph itself on clones of format 2, never asked for
            feats = sorted(f for f in info.get("features", []) if f != "operations")
            wanted = sorted(shape.features)
            check("image size", info["size"] == size, f"{spec} is {info['size']} bytes, the inventory says {shape.size} ({size})")
            check("image features", feats == wanted, f"{', '.join(feats) or 'none'} (inventory: {', '.join(wanted) or 'none'})")
            stamp = _stamp(admin, spec)
            if image is not None:
                parent, current = golden.parent_of(admin, spec), golden.current_parent(admin, site, image)
                check("image parent", parent == current, f"{spec} is a clone of {parent or 'nothing'}" + ("" if parent == current else
                      f"; the current version is {current} (`doit move-root --only {host.name}`)"))
                inputs = golden.clone_inputs(host, parent)
            else:
                inputs = rootfs.image_inputs(site, host)
            same = stamp == rootfs.image_stamp(inputs)
            check("image content", same, "built from the inventory's current inputs" if same else
                  (_what_changed(admin, spec, inputs) if stamp else "not written by cephboot"))
        entity = entity_of(site, cfg)
        caps = wanted_caps(cfg, admin.fs_name, data_pool)
        current = _auth(admin, entity)
        if current is None:
            check("client", False, f"{entity} does not exist")
        else:
            have = current.get("caps", {})
            diff = [f"{k} is {have.get(k)!r}, wants {caps.get(k)!r}" for k in sorted(set(have) | set(caps)) if have.get(k) != caps.get(k)]
            check("client caps", not diff, "; ".join(diff) or f"{entity}: {caps}")
            mark = _mark(admin, entity)
            check("client owner", mark == host.name, f"{entity} is marked as made by cephboot for {host.name}" if mark == host.name else
                  f"{entity} is {'marked for host ' + repr(mark) if mark else 'not marked as made by cephboot'} ({CLIENT_MARK.format(entity=entity)})")
            on_file = _key_on_file(site, cfg)
            check("keyring", on_file == current["key"], f"{site.display(cfg.keyring)} " + ("holds the cluster's key" if on_file == current["key"] else "does not hold the cluster's key"))
        bns = boot_namespace(cfg.boot_path)
        with admin.cephfs() as root:
            d = root / cfg.boot_path.lstrip("/")
            if not d.is_dir():
                check("/boot", False, f"{cfg.boot_path} does not exist on CephFS {admin.fs_name}")
            else:
                got = _xattr(d, NAMESPACE_XATTR)
                check("/boot", got == bns, f"{cfg.boot_path} RADOS namespace {got or '(none)'} (wants {bns})")
                quota, wanted = _xattr(d, QUOTA_XATTR), str(rootfs.size_bytes(cfg.boot_quota))
                check("/boot quota", quota == wanted, f"{cfg.boot_path} {QUOTA_XATTR} {quota or '(none)'} (wants {wanted}, boot_quota {cfg.boot_quota})")
    except (CephError, Refused, InventoryError) as e:
        return TaskFailed(f"{command('verify', host.name)}: {e}")
    print("\n".join(lines), flush=True)
    if problems:
        return TaskFailed(f"{command('verify', host.name)}: does not match the inventory: {', '.join(problems)} (`doit {command('provision', host.name)}` makes it match; an image with data only with rbd.reimage)")
    return None


# ---- tasks ---------------------------------------------------------------------------
# None is a default task; each is one task whatever the number of hosts, named hosts by
# `--only HOST,@PROFILE` (tasks/selection.py): `doit list` and a plain `doit` pay nothing for them.

@guarded
def task_provision() -> dict[str, Any]:
    """`doit provision [--only HOST,@PROFILE]`: create hosts' RBD namespace, root image, cephx client and CephFS /boot (changes the cluster: never a default task)."""
    return per_host_task("provision", "Create hosts on the Ceph cluster: namespace, root image, client, /boot (every host unless --only; not a default task).",
                         provision_host, "provision only these hosts", task_dep=("render:hosts",))  # its files go into its image and its stamp


@guarded
def task_verify() -> dict[str, Any]:
    """`doit verify [--only HOST,@PROFILE]`: check, read-only, that hosts' namespace, image, client caps and /boot match the inventory."""
    return per_host_task("verify", "Check hosts on the Ceph cluster against the inventory (every host unless --only; read-only).",
                         verify_host, "check only these hosts", task_dep=("render:hosts",))


@guarded
def task_move_root() -> dict[str, Any]:
    """`doit move-root --only HOST,@PROFILE,*`: a clone of its golden image's current version as each host's root, the former one kept."""
    return per_host_task("move-root", "Move hosts' roots to their golden image's current version, keeping the former root (--only required; not a default task).",
                         move_root, "the hosts whose roots to move (hosts with root.image)", task_dep=("render:hosts",),
                         required=True, reach=clones)


@guarded
def task_rollback_root() -> dict[str, Any]:
    """`doit rollback-root --only HOST,@PROFILE,*`: each host's newest former root becomes its root again, the current one kept."""
    return per_host_task("rollback-root", "Give hosts back their former root (--only required; not a default task).",
                         rollback_root, "the hosts to give their former root (hosts with root.image)", task_dep=("render:hosts",),
                         required=True, reach=clones)


if __name__ == "__main__":  # pragma: no cover - a debugging aid: python -m tasks.provision HOST
    s = inventory.load()
    sys.exit(1 if provision_host(s, s.hosts[sys.argv[1]]) else 0)
