"""Build a host's root file system image: a root tree (debootstrap, a folder or a tarball), the host's files, mkfs.ext4 -d, LUKS2."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import artifacts, imagenative, luks
from .fileio import digest, folder_there, open_to_write, read_regular
from .inventory import Host, Site
from .layout import ROOTFS

CACHE_ENV = "CEPHBOOT_ROOTFS_CACHE"  # where debootstrap results are kept; default build/rootfs
MIRROR_ENV = "CEPHBOOT_DEBIAN_MIRROR"  # overrides the mirror found in the apt configuration
APT_SOURCES = Path("/etc/apt")
STAMP_VERSION = "2"  # bump when the image layout changes, so reimage-able hosts are rebuilt
_UNITS = {"M": 20, "G": 30, "T": 40}

Content = imagenative.Content


class RootfsError(RuntimeError):
    """The root tree or image cannot be built; the message says why and what to do."""


def size_bytes(size: str) -> int:
    """'10G' -> bytes (binary units, as rbd reads them)."""
    return int(size[:-1]) << _UNITS[size[-1]]


# ---- the host's files in its root ---------------------------------------------

def host_files(host: Host) -> dict[str, tuple[Content, int]]:
    """What provisioning puts into a fresh root: the image-native install's files, plus the table's
    fresh-root rows (/etc/hostname)."""
    files: dict[str, tuple[Content, int]] = dict(imagenative.image_files(host))
    files.update(artifacts.fresh_root_members(host.name, host.cfg))
    return files


def install_host_files(root: Path, host: Host) -> None:
    """Install the host's files into the root tree ``root`` through image-native mode's entry point (one code path for both)."""
    try:
        imagenative.install_files(imagenative.check_root(str(root)), host_files(host))
    except imagenative.OutsideRoot as e:
        raise RootfsError(f"{host.name}: {e}") from None


# ---- root trees ----------------------------------------------------------------

# What the root's own initrd needs, whatever the inventory lists: the local-top script runs
# `ip` (minbase has neither iproute2 nor busybox, and klibc has no `ip`).
BOOT_PACKAGES = ("iproute2",)


def packages(host: Host) -> list[str]:
    """What debootstrap installs on top of minbase for ``host``."""
    return debootstrap_packages(host.cfg.rootfs.packages, bool(host.cfg.luks))


def debootstrap_packages(wanted: Iterable[str], luks: bool) -> list[str]:
    """The inventory's list, plus what the root's own initrd needs to boot it (and cryptsetup for LUKS)."""
    extra = [*BOOT_PACKAGES, "cryptsetup-bin"] if luks else BOOT_PACKAGES  # the hook refuses LUKS without cryptsetup
    return sorted({*wanted, *extra})


def apt_mirror(suite: str, apt_dir: Path = APT_SOURCES) -> tuple[str, list[str]]:
    """The (URI, components) of the first 'deb' source of this machine's apt configuration that carries ``suite``."""
    override = os.environ.get(MIRROR_ENV)
    if override:
        return override, ["main"]
    entries: list[tuple[str, list[str], list[str]]] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list")), *sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        entries += _deb822(text) if f.suffix == ".sources" else _one_line(text)
    for uri, suites, components in entries:
        if suite in suites:
            return uri, components or ["main"]
    raise RootfsError(f"no 'deb' source for suite {suite!r} in {apt_dir}/sources.list or sources.list.d/: debootstrap needs a mirror of it "
                      f"(set rootfs.suite to a suite this machine's apt knows, or {MIRROR_ENV})")


def _one_line(text: str) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            out.append((words[1], [words[2]], words[3:]))
    return out


def _deb822(text: str) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
            for uri in fields.get("uris", "").split():
                out.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    return out


def cache_root(site: Site) -> Path:
    return Path(os.environ.get(CACHE_ENV) or site.root / ROOTFS)


def debootstrap_key(suite: str, pkgs: list[str]) -> str:
    return f"debootstrap-{suite}-{digest(suite, *pkgs)[:12]}"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder of a cached tree at a time (two doit processes may want the same one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_to_write(path, truncate=False) as f:  # a FIFO planted there: one line, not a wait for a reader
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def debootstrap_tree(cache: Path, suite: str, pkgs: list[str], say: Any = print) -> Path:
    """A minbase root of ``suite`` with ``pkgs``, built once and kept in ``cache`` (key: suite + packages)."""
    key = debootstrap_key(suite, pkgs)
    tree = cache / key
    with _locked(cache / f"{key}.lock"):
        if folder_there(tree):  # a file or a FIFO in its place is said, not built over
            return tree
        if shutil.which("debootstrap") is None:
            raise RootfsError("rootfs.source is debootstrap but debootstrap is not installed (apt-get install debootstrap)")
        mirror, components = apt_mirror(suite)
        tmp = cache / f"{key}.partial"
        remove_tree(tmp)  # what an interrupted run left
        argv = ["debootstrap", "--variant=minbase", f"--components={','.join(components)}"]
        if pkgs:
            argv.append(f"--include={','.join(pkgs)}")
        argv += [suite, str(tmp), mirror]
        say(f"rootfs: debootstrap {suite} with {', '.join(pkgs) or 'minbase only'} (once; kept in {tree})")
        log = cache / f"{key}.log"
        with open_to_write(log) as out:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            remove_tree(tmp)
            tail = read_regular(log).decode(errors="replace").strip().splitlines()[-5:]
            raise RootfsError(f"debootstrap failed ({done.returncode}); the end of {log}:\n  " + "\n  ".join(tail))
        for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()  # what `apt-get clean` would drop: ~30% of the tree
        (tmp / "etc/hostname").unlink(missing_ok=True)  # the build machine's; each host gets its own
        os.rename(tmp, tree)
    return tree


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].encode().decode("unicode_escape") for line in f]
    return sorted((p for p in points if p.startswith(prefix) or p == prefix[:-1]), key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rm -rf a root tree, after unmounting what a failed debootstrap may have left mounted in it (/proc, /sys)."""
    if not path.exists() and not path.is_symlink():
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_under(path):
        raise RootfsError(f"{path}: still has mounts inside; not removing it")
    shutil.rmtree(path)


def source_spec(site: Site, host: Host) -> dict[str, Any]:
    """What the host's root tree is made from, as recorded in the image's stamp."""
    return tree_source(site, host.cfg.rootfs, host.source, bool(host.cfg.luks))


def tree_source(site: Site, r: Any, origin: str, luks: bool = False) -> dict[str, Any]:
    """What a `rootfs:` section (its view, of a host or a golden image, set in ``origin``) makes a root tree from."""
    if r.source == "debootstrap":
        return {"debootstrap": r.suite, "packages": debootstrap_packages(r.packages, luks)}
    p = Path(site.path_str(r.source))
    try:
        st = p.stat()
    except OSError as e:
        raise RootfsError(f"{origin}: rootfs.source {r.source!r}: {e.strerror} ({p})") from None
    if p.is_dir():
        return {"directory": str(p)}
    return {"tarball": str(p), "size": st.st_size, "mtime": st.st_mtime_ns}


def make_tree(site: Site, host: Host, tree: Path, say: Any = print) -> None:
    """Fill the empty folder ``tree`` with the host's root: its source, its files, and its own initrds rebuilt with them."""
    fill_tree(site, source_spec(site, host), tree, say)
    install_host_files(tree, host)
    if imagenative.builds_initrds(tree):
        # As `doit imagenative` would, confined to the tree: the image's own initrd then boots it from the start.
        say(f"rootfs: update-initramfs inside the root for {', '.join(imagenative.image_kernels(tree))}")
        try:
            imagenative.update_initramfs(tree)
        except imagenative.ImageError as e:
            raise RootfsError(f"{host.name}: {e}") from None


def fill_tree(site: Site, spec: dict[str, Any], tree: Path, say: Any = print) -> None:
    """Fill the empty folder ``tree`` with the root tree ``spec`` (tree_source) describes."""
    if "debootstrap" in spec:
        src = debootstrap_tree(cache_root(site), spec["debootstrap"], spec["packages"], say)
        _copy(src, tree)
    elif "directory" in spec:
        _copy(Path(spec["directory"]), tree)
    else:
        tree.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-p", "--numeric-owner", "-f", spec["tarball"], "-C", str(tree)], check=True, capture_output=True)


def _copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    subprocess.run(["cp", "-a", "--reflink=auto", f"{src}/.", f"{dst}/"], check=True, capture_output=True)


# ---- the image -----------------------------------------------------------------

def image_inputs(site: Site, host: Host) -> dict[str, str]:
    """What the root image is made from, input by input: name -> digest.

    Kept in the image's metadata next to the stamp, so that a rebuild (and `verify`)
    can name the inputs that changed since the image was written.
    """
    cfg = host.cfg
    parts: dict[str, list[str | bytes]] = {
        "layout": [STAMP_VERSION],
        "rootfs.source": [json.dumps(source_spec(site, host), sort_keys=True)],
        "rbd.size": [cfg.rbd.size],
        "root_fs": [cfg.root_fs],
        "luks": [json.dumps(cfg.luks and dataclasses.asdict(cfg.luks), sort_keys=True)],
    }
    if cfg.luks:
        parts["luks.keyfile content"] = [Path(site.path_str(cfg.luks.keyfile)).read_bytes()]
    for rel, (content, mode) in sorted(host_files(host).items()):
        parts[f"/{rel}"] = [oct(mode), imagenative.content_bytes(content)]
    return {name: digest(*p) for name, p in parts.items()}


def image_stamp(inputs: dict[str, str]) -> str:
    """One digest of all of ``image_inputs``; kept in the image's metadata."""
    return digest(json.dumps(inputs, sort_keys=True))


def changed_inputs(recorded: str, inputs: dict[str, str]) -> list[str]:
    """Names of the inputs that differ from ``recorded`` (the metadata's JSON); [] when it is unreadable."""
    try:
        old = json.loads(recorded)
    except ValueError:
        return []
    if not isinstance(old, dict):
        return []
    return sorted(name for name in set(old) | set(inputs) if old.get(name) != inputs.get(name))


def make_image(site: Site, host: Host, work: Path, say: Any = print) -> Path:
    """Build ``host``'s root image in ``work`` (a fresh folder) and return its path.

    A sparse file of rbd.size holding an ext4 made with `mkfs.ext4 -d` from the
    root tree; for LUKS hosts, a LUKS2 container of that size with the ext4 inside.
    """
    cfg = host.cfg
    if cfg.root_fs != "ext4":
        raise RootfsError(f"{host.source}: root_fs {cfg.root_fs!r}: provisioning writes ext4 roots only (mkfs.ext4 -d)")
    total = size_bytes(cfg.rbd.size)
    tree = work / "tree"
    try:
        make_tree(site, host, tree, say)
        fs_size = luks.payload_size(total) if cfg.luks else total
        plain = work / ("root.plain" if cfg.luks else "root.img")
        with open(plain, "xb") as f:
            f.truncate(fs_size)
        argv = ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree)]
        if cfg.luks:
            argv += ["-E", luks.MKFS_EXTENDED]
        done = subprocess.run([*argv, str(plain)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RootfsError(f"mkfs.ext4 -d failed for {host.name} (is rbd.size {cfg.rbd.size} big enough for the root tree?): {done.stderr.strip()}")
    finally:
        remove_tree(tree)
    if not cfg.luks:
        return plain
    luks.zero_journal(plain)
    out = work / "root.img"
    luks.wrap(plain, out, Path(site.path_str(cfg.luks.keyfile)))
    plain.unlink()
    return out
