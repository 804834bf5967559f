"""Pack each host's layer: a small reproducible newc cpio of its conf.d, ceph.conf and keys, clear or sealed (and the monolithic initrd)."""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator


from . import artifacts, inventory, quiet
from .fileio import digest, file_key, file_parts, read_regular, write_if_changed, write_parts_if_changed
from .initrd import base_path, source_date_epoch
from .inventory import Host
from .stage import Stage, Unit, stage_task
from .layout import host_dir, host_file
from .templating import code_digest
from .failures import guarded

LAYER = artifacts.BY_NAME["layer"].build
MONOLITHIC = artifacts.BY_NAME["monolithic initrd"].build
SECRET = artifacts.SECRET
# directories the layer creates (the kernel skips a file whose folder does not exist yet)
DIRS = artifacts.LAYER_DIRS


def layer_members(host: Host) -> dict[str, tuple[str, int]]:
    """Path inside the initrd -> (file under the host's build folder, mode): the keys
    themselves, or in machine mode only their envelope sealed to the machine secret."""
    return artifacts.layer_members(host.cfg)


def layer_outputs(host: Host) -> list[str]:
    return list(artifacts.built_by("overlay", host.cfg))


def pack(members: dict[str, tuple[Path, int]], epoch: int) -> bytes:
    """A newc cpio of ``members`` (archive path -> (source file, mode)), byte for byte what
    GNU ``cpio --create --format=newc --reproducible --owner=0:0`` makes of the same tree.

    Sorted member names with their folders, owner 0:0, every mtime ``epoch``,
    inodes numbered in order, device numbers 0, padded to 512-byte blocks: the
    same files give the same bytes.  Written here rather than by running cpio
    because a staging folder and a process per host cost ~15 ms each, minutes at
    10,000 hosts; tests/test_overlay.py holds it to GNU cpio's exact output.
    """
    dirs = {d: m for d, m in DIRS.items() if any(name.startswith(d + "/") for name in members)}
    out = bytearray()
    for ino, name in enumerate(sorted([*dirs, *members])):
        if name in dirs:
            subdirs = sum(1 for d in dirs if d.rpartition("/")[0] == name)
            _append(out, name, ino, 0o040000 | dirs[name], 2 + subdirs, epoch, b"")
        else:
            src, mode = members[name]
            _append(out, name, ino, 0o100000 | mode, 1, epoch, read_regular(src))
    _append(out, "TRAILER!!!", 0, 0, 1, 0, b"")
    out += bytes(-len(out) % 512)
    return bytes(out)


def _append(out: bytearray, name: str, ino: int, mode: int, nlink: int, mtime: int, data: bytes) -> None:
    """One newc member: header, NUL-terminated name and data, each padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, 0, 0, len(encoded), 0)
    out += b"070701" + "".join(f"{f:08X}" for f in fields).encode() + encoded
    out += bytes(-len(out) % 4)
    out += data
    out += bytes(-len(out) % 4)


def monolithic_parts(layer: bytes, base: Path) -> Callable[[], Iterator[bytes]]:
    """layer + base as one initrd, as parts of at most fileio.CHUNK bytes each (the layer is a few
    KB): the kernel unpacks concatenated archives in order.

    The uncompressed layer goes first, the way Debian prepends early microcode:
    lsinitramfs and unmkinitramfs read that shape (they cannot read an
    uncompressed archive after a compressed one), and the kernel finds the
    compressed base at the layer's 512-byte block boundary.  Order does not
    change what the booted initrd holds: the base carries no file of the layer.
    Streamed, never whole: a site's monolithic hosts cost no more memory than one block.
    """
    assert len(layer) % 4 == 0, "a cpio archive ends on a 4-byte boundary"

    def parts() -> Iterator[bytes]:
        yield layer
        yield from file_parts(base)
    return parts


def build_layer(host: Host) -> None:
    """doit action: pack the host's layer, and its monolithic initrd when asked; write only what changed."""
    base = host_dir(host.name)
    members = {name: (base / rel, mode) for name, (rel, mode) in layer_members(host).items()}
    data = pack(members, int(source_date_epoch()))
    write_if_changed(base / LAYER, data, SECRET)
    if host.cfg.monolithic:
        kernel_base = base_path(host.cfg.kernel_version, host.cfg.map.method)
        size = len(data) + kernel_base.stat().st_size
        write_parts_if_changed(base / MONOLITHIC, monolithic_parts(data, kernel_base), size, SECRET)
    else:
        (base / MONOLITHIC).unlink(missing_ok=True)


def clear_hosts_warning(site: inventory.Site) -> str:
    """The warnings doit prints while hosts' keys travel unsealed ('' when none do): secrets.mode
    clear (to anyone) and address (to the host's reserved address only, but readable on the wire)."""
    out = ""
    for mode, how in (("clear", "are served in the clear, to any client that can reach the web server"),
                      ("address", "are served in the clear to their reserved addresses only; anyone who sniffs the boot "
                                  "network or takes such an address on it gets them")):
        names = sorted(name for name, host in site.hosts.items() if host.cfg.secrets.mode == mode)
        if names:
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            out += f"cephboot: warning: secrets.mode: {mode}: the cephx keys (and LUKS keys) of {len(names)} host(s) {how}: {shown}\n"
    return out


@lru_cache(maxsize=None)
def _code_digest() -> str:
    return code_digest(__name__)


@guarded
def task_overlay() -> Iterator[dict[str, Any]]:
    """Pack each host's layer (overlay.cpio) from its rendered files; monolithic hosts also get base + layer."""
    site = inventory.load_for_tasks()
    code = _code_digest()
    epoch = source_date_epoch()
    yield {"basename": "overlay", "name": None, "doc": "Host layers: a small cpio per host with its conf.d, ceph.conf and keys."}
    kernels = sorted({h.cfg.kernel_version for h in site.hosts.values() if h.cfg.monolithic})
    if quiet.scoped() is None:  # a scoped run prints the last full load's warnings (the same: tasks/scope.py)
        sys.stderr.write(clear_hosts_warning(site))

    def units() -> dict[str, Unit]:
        out: dict[str, Unit] = {}
        members_of, built_by = artifacts.layer_members, artifacts.built_by
        for name, host in site.hosts.items():
            cfg = host.cfg
            base = host_file(name, "")
            deps = [base + rel for rel, _ in members_of(cfg).values()]  # layer_members(host)'s files
            if cfg.monolithic:
                deps.append(str(base_path(cfg.kernel_version, cfg.map.method)))
            outputs = [base + o for o in built_by("overlay", cfg)]  # layer_outputs(host), as paths
            # the members follow from the client name, LUKS and the mode; the rest is in the inputs
            config = f"{cfg.client}|{bool(cfg.luks)}|{cfg.monolithic}|{cfg.secrets.mode}"
            out[name] = Unit(deps, outputs, config, build_layer, (host,))
        return out

    yield stage_task(
        "overlay",
        f"{LAYER} of each of the {len(site.hosts)} hosts whose rendered files changed (monolithic hosts: also {MONOLITHIC}, base + layer)",
        # a layer damaged since it was packed (another size or mtime) is packed again, never published
        Stage("overlay", units, digest(epoch, code), output_key=file_key),
        task_dep=["render:hosts", *(f"initrd:{k}" for k in kernels)],
    )
