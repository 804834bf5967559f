"""Pack each host's layer: a small reproducible newc cpio of its conf.d, ceph.conf and keys (and the monolithic initrd)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from doit.tools import config_changed

from . import inventory
from .fileio import digest, files_digest, write_if_changed
from .initrd import base_path, source_date_epoch
from .inventory import Host
from .render import CEPH_CONF, CONFD, LUKS_KEY, LUKS_KEY_PATH, SECRET, host_dir, keyring_path

LAYER = "overlay.cpio"
MONOLITHIC = "initrd.img"
# directories the layer creates (the kernel skips a file whose folder does not exist yet)
DIRS = {"conf": 0o755, "conf/conf.d": 0o755, "etc": 0o755, "etc/ceph": 0o755, "etc/cephboot": 0o700}


def layer_members(host: Host) -> dict[str, tuple[str, int]]:
    """Path inside the initrd -> (rendered file under the host's build folder, mode)."""
    h = host.data
    members = {
        "conf/conf.d/cephboot": (CONFD, 0o644),
        "etc/ceph/ceph.conf": (CEPH_CONF, 0o644),
        keyring_path(h).lstrip("/"): ("rootfs" + keyring_path(h), SECRET),
    }
    if h["luks"]:
        members[LUKS_KEY_PATH.lstrip("/")] = (LUKS_KEY, SECRET)
    return members


def layer_outputs(host: Host) -> list[str]:
    return [LAYER, MONOLITHIC] if host.data["monolithic"] else [LAYER]


def pack(members: dict[str, tuple[Path, int]], epoch: int) -> bytes:
    """A newc cpio of ``members`` (archive path -> (source file, mode)) made by GNU cpio --reproducible.

    Sorted member names, owner 0:0, every mtime ``epoch``, inode numbers renumbered:
    the same files give the same bytes.
    """
    dirs = {d: m for d, m in DIRS.items() if any(name.startswith(d + "/") for name in members)}
    with tempfile.TemporaryDirectory(prefix=".layer-") as tmp:
        stage = Path(tmp)
        os.chmod(stage, 0o700)
        for d, mode in sorted(dirs.items()):
            (stage / d).mkdir(mode=mode)
            os.chmod(stage / d, mode)
        for name, (src, mode) in members.items():
            fd = os.open(stage / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(src.read_bytes())
                os.fchmod(f.fileno(), mode)
        names = sorted([*dirs, *members])
        for name in reversed(names):  # children first, so a file's utime does not move its folder's
            os.utime(stage / name, (epoch, epoch), follow_symlinks=False)
        r = subprocess.run(
            ["cpio", "--quiet", "--create", "--format=newc", "--reproducible", "--owner=0:0"],
            input="".join(f"{n}\n" for n in names).encode(),
            cwd=stage,
            capture_output=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"cpio failed: {r.stderr.decode(errors='replace').strip()}")
        return r.stdout


def concatenate(layer: bytes, base: Path) -> bytes:
    """layer + base as one initrd: the kernel unpacks concatenated archives in order.

    The uncompressed layer goes first, the way Debian prepends early microcode:
    lsinitramfs and unmkinitramfs read that shape (they cannot read an
    uncompressed archive after a compressed one), and the kernel finds the
    compressed base at the layer's 512-byte block boundary.  Order does not
    change what the booted initrd holds: the base carries no file of the layer.
    """
    assert len(layer) % 4 == 0, "a cpio archive ends on a 4-byte boundary"
    return layer + base.read_bytes()


def build_layer(host: Host) -> None:
    """doit action: pack the host's layer, and its monolithic initrd when asked; write only what changed."""
    base = host_dir(host.name)
    members = {name: (base / rel, mode) for name, (rel, mode) in layer_members(host).items()}
    data = pack(members, int(source_date_epoch()))
    write_if_changed(base / LAYER, data, SECRET)
    if host.data["monolithic"]:
        write_if_changed(base / MONOLITHIC, concatenate(data, base_path(host.data["kernel_version"])), SECRET)
    else:
        (base / MONOLITHIC).unlink(missing_ok=True)


@lru_cache(maxsize=None)
def _code_digest() -> str:
    return files_digest([Path(__file__)])


def task_overlay() -> Iterator[dict[str, Any]]:
    """Pack each host's layer (overlay.cpio) from its rendered files; monolithic hosts also get base + layer."""
    site = inventory.load_for_tasks()
    code = _code_digest()
    epoch = source_date_epoch()
    yield {"basename": "overlay", "name": None, "doc": "Host layers: a small cpio per host with its conf.d, ceph.conf and keys."}
    for host in site.hosts.values():
        folder = host_dir(host.name)
        members = layer_members(host)
        deps = [str(folder / rel) for rel, _ in members.values()]
        if host.data["monolithic"]:
            deps.append(str(base_path(host.data["kernel_version"])))
        yield {
            "basename": "overlay",
            "name": host.name,
            "doc": f"{LAYER}{' and monolithic ' + MONOLITHIC if host.data['monolithic'] else ''} of {host.name}",
            "actions": [(build_layer, [host])],
            "file_dep": deps,
            "targets": [str(folder / out) for out in layer_outputs(host)],
            "uptodate": [config_changed(digest(repr(sorted(members.items())), str(host.data["monolithic"]), epoch, code))],
            "clean": True,
        }
