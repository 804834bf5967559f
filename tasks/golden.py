"""Golden images: one root per hosts/images/<name>.yaml, written to RBD once and frozen as a protected snapshot; a copy-on-write clone of it per host.

Layout on the cluster (docs/golden-images.md): golden image NAME lives in the RBD namespace
``golden-NAME`` of its pool; each version is an image ``NAME-<digest>`` with one protected
snapshot ``<digest>``, the digest of everything it was built from, so an unchanged golden image
is never built again and a changed one is a new version beside the old (kept while clones use
it).  A host with ``root.image: NAME`` gets its root as an ``rbd clone`` of the current version
into its own namespace; its own files are then written into the clone's ext4 with debugfs
through a FUSE export of the clone (qemu-storage-daemon): no kernel RBD client, no loop device,
no mount on the build machine, and the golden image is never written.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from . import cephcli, imagenative, inventory, rootfs, selection
from .cephcli import Admin, CephError
from .fileio import digest, open_to_write
from .layout import GOLDEN
from .inventory import Host, InventoryError, Problem, Site
from .model import HostView, golden_namespace, golden_version, image_view, stateless
from .schema import IMAGE, Invalid, host_name
from .failures import ClusterWide, guarded, stop

LAYOUT = "1"  # bump when a golden image's layout changes: every golden image is then a new version
INPUTS_KEY = "cephboot.golden.inputs"  # image metadata of a version: what it was built from, input by input
PARENT_KEY = "cephboot.root.parent"  # image metadata of a clone: the snapshot it was cloned from
NEW = ".cephboot-new"  # a version being imported
KEPT = ".kept-"  # a host's former root, set aside by a move or a rollback: <image>.kept-<UTC time>
EXPORT_TIMEOUT = 30
# The first kernel whose krbd maps an image with each feature (and a clone from another namespace).
KRBD_SINCE = {"layering": (3, 10), "exclusive-lock": (4, 9), "deep-flatten": (5, 1), "object-map": (5, 3), "fast-diff": (5, 3)}
KRBD_NAMESPACES = (4, 19)


class Refused(Exception):
    """A golden-image step stops here to keep data or to avoid guessing; the message says what would allow it."""


@dataclass(frozen=True)
class Image:
    """A golden image from hosts/images/<name>.yaml, validated."""

    name: str
    source: str  # its file, relative to the site
    data: dict[str, Any]

    @cached_property
    def cfg(self) -> Any:  # an ImageView (tasks/model.py)
        """The typed, read-only view of ``data``."""
        return image_view(self.data)

    @property
    def namespace(self) -> str:
        return namespace_of(self.name)

    def version(self, snap: str) -> str:
        """The RBD image (without pool and namespace) that holds the version frozen as snapshot ``snap``."""
        return golden_version(self.name, snap)

    def snapshot_spec(self, snap: str) -> str:
        return f"{self.cfg.pool}/{self.namespace}/{self.version(snap)}@{snap}"


namespace_of = golden_namespace


# ---- the inventory ---------------------------------------------------------------

def load_images(site: Site) -> dict[str, Image]:
    """hosts/images/*.yaml, validated against schema.IMAGE, and every host's root.image checked against them.

    Raises InventoryError with every problem at once, as the inventory does.
    """
    problems: list[Problem] = []
    images: dict[str, Image] = {}
    broken: set[str] = set()  # images whose own file has problems: their hosts are not checked against them
    folder = site.root / "hosts" / "images"
    for file in inventory._yaml_names(folder):
        rel = f"hosts/images/{file}"
        name = file.rsplit(".", 1)[0]
        try:
            host_name(name)
        except Invalid as e:
            problems.append(Problem(rel, "", f"the file name {name!r} is not a golden image name: {e}"))
            continue
        before = len(problems)
        data = inventory.validate(IMAGE, inventory._read_yaml(folder / file, rel, problems), {}, rel, problems)
        if len(problems) == before:
            images[name] = Image(name, rel, data)
        else:
            broken.add(name)
    for host in site.hosts.values():
        if host.cfg.root.image not in broken:
            problems += host_problems(site, host, images)
    if problems:
        raise InventoryError(problems)
    return images


def host_problems(site: Site, host: Host, images: Mapping[str, Image]) -> list[Problem]:
    """What stops ``host`` from being a clone of its golden image (none when it has no root.image)."""
    cfg = host.cfg
    if cfg.rbd.namespace.startswith("golden-"):
        return [Problem(host.source, "rbd.namespace", f"{cfg.rbd.namespace!r}: namespaces golden-* belong to golden images")]
    wanted = cfg.root.image
    if not wanted:
        return []
    if wanted not in images:
        known = ", ".join(sorted(images)) or "none valid"
        return [Problem(host.source, "root.image", f"{wanted!r}: no golden image hosts/images/{wanted}.yaml (known: {known})")]
    image = images[wanted]
    out = []
    if cfg.luks:
        out.append(Problem(host.source, "root.image", f"{wanted!r}: a LUKS host cannot be a clone of a golden image: every clone of one "
                           "LUKS image shares its master key, so one host's key would open every other host's root. "
                           "Remove `luks:` (the host's data is then unencrypted) or `root.image:` (the host gets its own LUKS root)"))
    if cfg.rbd.pool != image.cfg.pool:
        out.append(Problem(host.source, "root.image", f"{wanted!r} lives in pool {image.cfg.pool!r} ({image.source}), "
                           f"the host's rbd.pool is {cfg.rbd.pool!r}: a clone and its golden image share a pool"))
    kver = inventory.resolve_kernel(cfg.kernel, site.kernels) if site.kernels else ""
    out += [Problem(image.source, "features", m) for m in krbd_problems(image.cfg.features, kver, host.name)]
    return out


def _version(kver: str) -> tuple[int, int]:
    parts = kver.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return (0, 0)


def krbd_problems(features: list[str], kver: str, host: str) -> list[str]:
    """Why the kernel ``kver`` that ``host`` boots could not map a clone with ``features`` ([] when it can)."""
    if not kver:
        return []
    have = _version(kver)
    out = []
    if "layering" not in features:
        out.append(f"{features}: a golden image needs the layering feature: its hosts' roots are clones of it")
    if have < KRBD_NAMESPACES:
        out.append(f"host {host} boots kernel {kver}, whose krbd has no RBD namespaces (Linux {KRBD_NAMESPACES[0]}.{KRBD_NAMESPACES[1]})")
    for f in features:
        since = KRBD_SINCE[f]
        if have < since:
            out.append(f"{f}: host {host} boots kernel {kver}, whose krbd maps no image with {f} (Linux {since[0]}.{since[1]}); remove it")
    return out


def image_of(site: Site, host: Host) -> Image | None:
    """The golden image ``host`` is a clone of, validated, or None."""
    if not host.cfg.root.image:
        return None
    return load_images(site)[host.cfg.root.image]


# ---- what a version is made of -----------------------------------------------------

def tree_digest(folder: Path) -> str:
    """A digest of a folder's entries as make sees them (path, type, mode, owner, size, mtime, link target)."""
    items: list[str] = []
    for dirpath, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            target = os.readlink(p) if os.path.islink(p) else ""
            items.append(f"{os.path.relpath(p, folder)}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{st.st_mtime_ns}\0{target}")
    return digest(*items)


def image_inputs(site: Site, image: Image) -> dict[str, str]:
    """What a golden image is made of, input by input: name -> digest (kept in each version's metadata)."""
    spec = rootfs.tree_source(site, image.cfg.rootfs, image.source)
    parts: dict[str, list[str | bytes]] = {
        "layout": [LAYOUT, rootfs.STAMP_VERSION],
        "rootfs.source": [json.dumps(spec, sort_keys=True)],
        "size": [image.cfg.size],
        "features": [",".join(image.cfg.features)],
    }
    if "directory" in spec:
        parts["rootfs.source content"] = [tree_digest(Path(spec["directory"]))]
    for rel, (content, mode) in sorted(imagenative.static_files().items()):
        parts[f"/{rel}"] = [oct(mode), imagenative.content_bytes(content)]
    return {name: digest(*p) for name, p in parts.items()}


def snapshot_name(inputs: dict[str, str]) -> str:
    """The snapshot (and version) name of a golden image: 16 hex digits of its inputs' digest."""
    return rootfs.image_stamp(inputs)[:16]


def clone_files(host: Host) -> dict[str, tuple[rootfs.Content, int]]:
    """What a host's clone gets on top of its golden image: the provisioning files less those every image has."""
    static = imagenative.static_files()
    return {rel: v for rel, v in rootfs.host_files(host).items() if rel not in static}


def clone_inputs(host: Host, parent: str) -> dict[str, str]:
    """What a host's clone is made of: its parent snapshot and its own files."""
    parts: dict[str, list[str | bytes]] = {"parent": [parent]}
    for rel, (content, mode) in sorted(clone_files(host).items()):
        parts[f"/{rel}"] = [oct(mode), imagenative.content_bytes(content)]
    return {name: digest(*p) for name, p in parts.items()}


# ---- building a version ------------------------------------------------------------

def _images_in(admin: Admin, pool: str, ns: str) -> set[str]:
    return {str(n) for n in admin.rbd_json("ls", "--pool", pool, "--namespace", ns)}


def _protected_snaps(admin: Admin, spec: str) -> set[str]:
    return {s["name"] for s in admin.rbd_json("snap", "ls", spec) if str(s.get("protected")) == "true"}


def children(admin: Admin, snap_spec: str) -> list[str]:
    """The clones of a golden version, as pool/namespace/image."""
    out = []
    for c in admin.rbd_json("children", snap_spec) or []:
        out.append(f"{c['pool']}/{c.get('pool_namespace', '')}/{c['image']}" if c.get("pool_namespace") else f"{c['pool']}/{c['image']}")
    return out


def build_image(admin: Admin, site: Site, image: Image, say: Callable[[str], None]) -> str:
    """Make sure the version of ``image`` for its current inputs exists and is frozen; return its snapshot spec.

    Builds nothing when it does.  Older versions are kept; each is named with its clones.
    """
    pool, ns = image.cfg.pool, image.namespace
    inputs = image_inputs(site, image)
    snap = snapshot_name(inputs)
    version = image.version(snap)
    if pool not in admin.pools():
        raise Refused(f"golden image {image.name}: RBD pool {pool!r} ({image.source}: pool) does not exist; "
                      f"create it with `ceph osd pool create {pool} && rbd pool init {pool}`")
    if not any(n["name"] == ns for n in admin.rbd_json("namespace", "ls", pool)):
        admin.rbd("namespace", "create", f"{pool}/{ns}")
        say(f"created RBD namespace {pool}/{ns}")
    names = _images_in(admin, pool, ns)
    spec = f"{pool}/{ns}/{version}"
    if version + NEW in names:
        admin.rbd("rm", "--no-progress", spec + NEW)
        say(f"removed {spec + NEW}, left half-made by an interrupted run")
    if version in names:
        if snap in _protected_snaps(admin, spec):
            say(f"{image.snapshot_spec(snap)} is current (built from the inventory's inputs): nothing to build")
            _say_versions(admin, site, image, names, snap, say)
            return image.snapshot_spec(snap)
        # A version without its protected snapshot was never handed out: nothing can be cloned from it.
        for s in admin.rbd_json("snap", "ls", spec):
            if str(s.get("protected")) == "true":
                admin.rbd("snap", "unprotect", f"{spec}@{s['name']}")
            admin.rbd("snap", "rm", "--no-progress", f"{spec}@{s['name']}")
        admin.rbd("rm", "--no-progress", spec)
        say(f"removed {spec}, which an interrupted run left without its snapshot")
    work = site.root / GOLDEN / image.name
    rootfs.remove_tree(work)
    work.mkdir(parents=True)
    try:
        tree = work / "tree"
        rootfs.fill_tree(site, rootfs.tree_source(site, image.cfg.rootfs, image.source), tree, say)
        try:
            imagenative.install_files(tree, imagenative.static_files())
        except imagenative.OutsideRoot as e:
            raise rootfs.RootfsError(f"golden image {image.name}: {e}") from None
        img = work / "root.img"
        with open(img, "xb") as f:
            f.truncate(rootfs.size_bytes(image.cfg.size))
        done = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(img)], capture_output=True, text=True, check=False)
        rootfs.remove_tree(tree)
        if done.returncode != 0:
            raise rootfs.RootfsError(f"mkfs.ext4 -d failed for golden image {image.name} (is size {image.cfg.size} big enough?): {done.stderr.strip()}")
        admin.rbd("import", "--no-progress", "--image-format", "2", "--image-feature", ",".join(image.cfg.features), str(img), spec + NEW)
        admin.rbd("image-meta", "set", spec + NEW, INPUTS_KEY, json.dumps(inputs, sort_keys=True))
        admin.rbd("rename", spec + NEW, spec)
        admin.rbd("snap", "create", f"{spec}@{snap}")
        admin.rbd("snap", "protect", f"{spec}@{snap}")
    finally:
        rootfs.remove_tree(work)
    older = [n for n in names if n.startswith(f"{image.name}-") and n != version and NEW not in n]
    changed = _what_changed(admin, pool, ns, older, inputs)
    say(f"built {image.snapshot_spec(snap)} ({image.cfg.size}, {', '.join(image.cfg.features)}){changed}")
    _say_versions(admin, site, image, names | {version}, snap, say)
    return image.snapshot_spec(snap)


def _what_changed(admin: Admin, pool: str, ns: str, older: list[str], inputs: dict[str, str]) -> str:
    if not older:
        return ""
    newest = max(older, key=lambda n: admin.rbd_json("info", f"{pool}/{ns}/{n}").get("create_timestamp", ""))
    try:
        recorded = admin.rbd("image-meta", "get", f"{pool}/{ns}/{newest}", INPUTS_KEY)
    except CephError:
        return ""
    changed = rootfs.changed_inputs(recorded, inputs)
    return f"; changed since {newest}: {', '.join(changed)}" if changed else ""


def _say_versions(admin: Admin, site: Site, image: Image, names: set[str], current: str, say: Callable[[str], None]) -> None:
    """One line per older version: which hosts still use it (kept while any does)."""
    prefix = f"{image.name}-"
    for n in sorted(names):
        if not n.startswith(prefix) or NEW in n or n == image.version(current):
            continue
        snap = n[len(prefix):]
        used = children(admin, image.snapshot_spec(snap))
        booted = stateless_users(site, image, snap)
        users = ([f"the root of {len(used)} clone(s): {', '.join(used)}"] if used else []) + \
            ([f"booted read-only by {len(booted)} stateless host(s): {', '.join(booted)}"] if booted else [])
        say(f"older version {image.snapshot_spec(snap)}: " + (f"kept, {'; '.join(users)}" if users else
            f"no clone or stateless host uses it; remove it with `rbd snap unprotect {image.snapshot_spec(snap)} && rbd snap purge "
            f"{image.cfg.pool}/{image.namespace}/{n} && rbd rm {image.cfg.pool}/{image.namespace}/{n}`"))


# ---- writing a host's files into its clone ----------------------------------------

@contextmanager
def exported(admin: Admin, spec: str, work: Path) -> Iterator[Path]:
    """The RBD image ``spec`` (pool/namespace/image) as a writable regular file, through qemu-storage-daemon's FUSE export.

    The daemon is ours: stopped by its PID when the block ends, which flushes what was written.
    """
    pool, ns, name = spec.split("/")
    if shutil.which("qemu-storage-daemon") is None:
        raise Refused("writing a host's files into its clone needs qemu-storage-daemon (apt-get install qemu-system-common)")
    target = work / "image"
    target.touch()
    user = admin.entity.split(".", 1)[1]
    argv = ["qemu-storage-daemon",
            "--blockdev", f"driver=rbd,node-name=root,pool={pool},namespace={ns},image={name},conf={admin.conf},user={user}",
            "--export", f"type=fuse,id=root,node-name=root,mountpoint={target},writable=on"]
    log = open_to_write(work / "qemu-storage-daemon.log")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        cephcli.wait_mounted(proc, target, EXPORT_TIMEOUT, work / "qemu-storage-daemon.log")
        yield target
    finally:
        proc.terminate()  # the daemon flushes what was written and removes its export
        cephcli.stop(proc, EXPORT_TIMEOUT)
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
        log.close()


def debugfs_script(files: Mapping[str, tuple[rootfs.Content, int]], staged: Mapping[str, Path]) -> str:
    """debugfs commands that put ``files`` (path -> (content, mode)) into an ext4, owned by root, replacing what is there.

    ``staged`` maps each path to a local file with its content.  Paths are the inventory's
    table (tasks/imagenative.py), never a host's data: no quoting is needed.
    """
    lines: list[str] = []
    made: set[str] = set()
    for rel, (_, mode) in sorted(files.items()):
        folder, _, name = rel.rpartition("/")
        parts = folder.split("/") if folder else []
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in made:
                made.add(d)
                lines.append(f"mkdir {d}")
        lines += [f"cd /{folder}", f"rm {name}", f"write {staged[rel]} {name}",
                  f"sif {name} mode 0{0o100000 | mode:o}", f"sif {name} uid 0", f"sif {name} gid 0"]
    return "\n".join(lines) + "\n"


def write_files(image_file: Path, files: Mapping[str, tuple[rootfs.Content, int]], work: Path) -> None:
    """Write ``files`` into the ext4 in ``image_file`` with debugfs, then read each back: it must hold exactly its content."""
    stage = Path(tempfile.mkdtemp(prefix="files-", dir=work))  # holds keys: owner-only
    staged: dict[str, Path] = {}
    for i, (rel, (content, _)) in enumerate(sorted(files.items())):
        staged[rel] = stage / str(i)
        fd = os.open(staged[rel], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(imagenative.content_bytes(content))
    try:
        done = subprocess.run(["debugfs", "-w", "-f", "-", str(image_file)], input=debugfs_script(files, staged).encode(),
                              capture_output=True, check=False)
        if done.returncode != 0:
            raise rootfs.RootfsError(f"debugfs -w on {image_file} failed: {done.stderr.decode(errors='replace').strip()}")
        for rel, (content, _) in sorted(files.items()):
            got = subprocess.run(["debugfs", "-R", f"cat /{rel}", str(image_file)], capture_output=True, check=False).stdout
            want = imagenative.content_bytes(content)
            if got != want:
                raise rootfs.RootfsError(f"/{rel} in {image_file} does not hold what was written (debugfs: {done.stderr.decode(errors='replace').strip()[-500:]})")
    finally:
        shutil.rmtree(stage)


# ---- a host's clone ------------------------------------------------------------------

def current_parent(admin: Admin, site: Site, image: Image) -> str:
    """The snapshot spec of ``image``'s version for its current inputs; refused when it was not built."""
    snap = snapshot_name(image_inputs(site, image))
    spec = f"{image.cfg.pool}/{image.namespace}/{image.version(snap)}"
    if not _has_namespace(admin, image) or image.version(snap) not in _images_in(admin, image.cfg.pool, image.namespace):
        raise Refused(f"golden image {image.name} has no version for its current inputs ({image.snapshot_spec(snap)}): run `doit image:{image.name}` first")
    if snap not in _protected_snaps(admin, spec):
        raise Refused(f"golden image {image.name}: {spec} is not frozen yet (an interrupted build): run `doit image:{image.name}` again")
    return image.snapshot_spec(snap)


def versions(admin: Admin, image: Image) -> dict[str, bool]:
    """The versions of ``image`` on the cluster: snapshot name -> whether it is frozen (protected)."""
    if not _has_namespace(admin, image):
        return {}
    prefix = f"{image.name}-"
    out = {}
    for n in _images_in(admin, image.cfg.pool, image.namespace):
        if n.startswith(prefix) and NEW not in n:
            snap = n[len(prefix):]
            out[snap] = snap in _protected_snaps(admin, f"{image.cfg.pool}/{image.namespace}/{n}")
    return out


def stateless_users(site: Site, image: Image, snap: str) -> list[str]:
    """The stateless hosts of the inventory that boot version ``snap`` of ``image``."""
    return sorted(h.name for h in site.hosts.values()
                  if stateless(h.cfg) and h.cfg.root.image == image.name and h.cfg.root.snapshot == snap)


def _has_namespace(admin: Admin, image: Image) -> bool:
    return any(n["name"] == image.namespace for n in admin.rbd_json("namespace", "ls", image.cfg.pool))


def parent_of(admin: Admin, spec: str) -> str:
    """The snapshot a clone was cloned from (pool/namespace/image@snap), or '' for an image that is no clone."""
    p = admin.rbd_json("info", spec).get("parent")
    if not p:
        return ""
    ns = p.get("pool_namespace", "")
    return f"{p['pool']}/{ns + '/' if ns else ''}{p['image']}@{p['snapshot']}"


def make_clone(admin: Admin, site: Site, host: Host, image: Image, parent: str, spec: str) -> None:
    """Clone ``parent`` as ``spec`` and write the host's files into it; the golden image is only read."""
    # A clone in another namespace than its parent needs clone format 2 (Mimic); krbd follows either.
    admin.rbd("clone", "--rbd-default-clone-format", "2", "--image-feature", ",".join(image.cfg.features), parent, spec)
    work = site.root / GOLDEN / f"clone-{host.name}"
    rootfs.remove_tree(work)
    old = os.umask(0o077)  # the host's keyring passes through here
    try:
        work.mkdir(parents=True, mode=0o700)
        with exported(admin, spec, work) as image_file:
            write_files(image_file, clone_files(host), work)
    finally:
        os.umask(old)
        rootfs.remove_tree(work)
    admin.rbd("image-meta", "set", spec, PARENT_KEY, parent)


def in_use(admin: Admin, spec: str) -> list[str]:
    return [w.get("address", "?") for w in admin.rbd_json("status", spec).get("watchers", [])]


def kept_roots(admin: Admin, cfg: HostView) -> list[str]:
    """The host's former roots, oldest first (their names carry the UTC time they were set aside)."""
    r = cfg.rbd
    return sorted(n for n in _images_in(admin, r.pool, r.namespace) if n.startswith(r.image + KEPT))


def kept_name(cfg: HostView) -> str:
    return cfg.rbd.image + KEPT + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


# ---- tasks ---------------------------------------------------------------------------

def build_action(site: Site, name: str) -> Any:
    """doit action of `image:<name>`: build the version of its current inputs unless it exists."""
    from doit.exceptions import TaskFailed

    def say(m: str) -> None:
        print(f"image:{name}: {m}", flush=True)

    try:
        image = load_images(site)[name]
        admin = cephcli.connect(site)
        build_image(admin, site, image, say)
    except InventoryError as e:
        return TaskFailed(f"cephboot: {e}")
    except ClusterWide as e:  # no usable admin keyring, the monitors silent, another cluster
        return TaskFailed(f"cephboot: image:{name}: {e}")
    except (Refused, CephError, rootfs.RootfsError) as e:
        return TaskFailed(f"image:{name}: {e}")
    return None


def refuse_unknown_images(images: list[str], argv: list[str]) -> None:
    """Stop doit, before any task runs, with one line listing ``images`` (the names of
    hosts/images/) when its command line ``argv`` (sys.argv) names `image:NAME` for no such image."""
    for name, _ in selection.run_tasks(argv) or ():
        base, _, sub = name.partition(":")
        if base == "image" and sub and "*" not in sub and sub not in images:  # (a pattern that matches none: doit runs nothing)
            stop(f"{name}: no golden image {sub!r} in hosts/images/ (no {sub}.yaml); the images are: {', '.join(images) or 'none'}")


@guarded
def task_image() -> Iterator[dict[str, Any]]:
    """`doit image:NAME`: build golden image NAME (hosts/images/NAME.yaml) into RBD once per change of its inputs, frozen as a protected snapshot."""
    site = inventory.load_for_tasks()
    names = [file.rsplit(".", 1)[0] for file in inventory._yaml_names(site.root / "hosts" / "images")]
    refuse_unknown_images(names, sys.argv)  # `doit image:dekstop`: one line, not a run that builds nothing
    yield {"basename": "image", "name": None, "doc": "Build golden images into RBD, each version frozen as a protected snapshot (changes the cluster: not a default task)."}
    for name in names:
        yield {
            "basename": "image",
            "name": name,
            "doc": f"golden image {name}: built and frozen once per change of its inputs",
            "actions": [(build_action, [site, name])],
            "uptodate": [False],  # the cluster is the state: look each run
            "verbosity": 2,
        }
