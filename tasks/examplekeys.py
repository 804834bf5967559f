"""Generate a site's missing secrets (cephx keyrings, LUKS key files, machine secrets) where its hosts name them.

The example site ships no secrets: run ``python -m tasks.examplekeys [SITE]`` once
(scripts/setup does) and each host of hosts/nodes/ (``.yaml`` or ``.yml``), with its values
resolved as the inventory resolves them (site.yaml's ``defaults:`` < its profiles < its file),
gets a fresh, valid but unused cephx key at its ``keyring`` path for its ``client``, a random
key file at ``luks.keyfile`` if it has ``luks:``, and in ``secrets.mode: machine`` a random
machine secret at ``secrets.machine_secret`` (32 characters, 160 bits, to set in the machine's
SMBIOS field).  Each is created owner-only (0600) from its first byte, below hosts/ without
following a link; a file that exists (or anything else by that name) is never touched.  A host
that does not resolve gets nothing: its problem is one `cephboot:` line naming the file and
key, as the inventory says it, and the command exits 2.
"""
from __future__ import annotations

import base64
import errno
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

from .fileio import kind
from .inventory import Host, InventoryError, Problem, merged_hosts
from .model import MAX_SAID

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def cephx_secret() -> str:
    """A new cephx secret in the format `ceph-authtool --gen-print-key` prints."""
    now = time.time()
    raw = struct.pack("<HIIH", 1, int(now), int(now % 1 * 1e9), 16) + os.urandom(16)
    return base64.b64encode(raw).decode()


def machine_secret() -> str:
    """A new machine secret: 32 base32 characters (160 random bits) that any SMBIOS string field holds."""
    return base64.b32encode(os.urandom(20)).decode()


class _Hosts:
    """hosts/ and the folders below it that secrets go to, each opened once, one component at a
    time, never through a link (a missing one is made, 0700)."""

    def __init__(self, root: Path):
        self.path = root / "hosts"
        self.fds: dict[str, int] = {}

    def folder(self, rel: str) -> int:
        """The descriptor of hosts/<rel> ("" for hosts/ itself, opened as the site names it)."""
        fd = self.fds.get(rel)
        if fd is not None:
            return fd
        if not rel:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            up, _, name = rel.rpartition("/")
            parent = self.folder(up)
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
            except FileExistsError:
                pass
            try:
                fd = os.open(name, _DIR, dir_fd=parent)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    try:
                        what = kind(os.stat(name, dir_fd=parent, follow_symlinks=False))
                    except OSError:
                        what = "something else"
                    why = f"{what} where a folder belongs" + (" (not followed)" if what == "a symbolic link" else "")
                    raise OSError(e.errno, why, f"hosts/{rel}") from None
                raise OSError(e.errno, e.strerror, f"hosts/{rel}") from None
        self.fds[rel] = fd
        return fd

    def create(self, rel: str, data: bytes) -> bool:
        """Write ``data`` to the new file hosts/<rel>, 0600 from its first byte; False when
        anything is there by that name already (it is left as it is)."""
        up, _, name = rel.rpartition("/")
        if os.path.lexists(self.path / rel):
            return False  # never touched, wherever the folders on the way lead
        try:
            fd = os.open(name, _NEW, 0o600, dir_fd=self.folder(up))
        except FileExistsError:
            return False
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.unlink(name, dir_fd=self.folder(up))  # no half a secret left to be taken for one
            raise
        finally:
            os.close(fd)
        return True

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _wanted(host: Host) -> list[tuple[str, str, bytes]]:
    """(key, path relative to hosts/, new content) of each secret ``host``'s values name."""
    cfg = host.cfg
    out = [("keyring", cfg.keyring, f"[client.{cfg.client}]\n\tkey = {cephx_secret()}\n".encode())]
    if cfg.luks:
        out.append(("luks.keyfile", cfg.luks.keyfile, base64.b64encode(os.urandom(48)) + b"\n"))
    if cfg.secrets.mode == "machine":
        out.append(("secrets.machine_secret", cfg.secrets.machine_secret, f"{machine_secret()}\n".encode()))
    return out


def make(root: Path) -> tuple[list[Path], list[Problem]]:
    """Create every missing secret that the hosts of ``root/hosts`` name: the new files, and the
    problems that kept a host (or a secret of it) from getting its secrets."""
    hosts, problems = merged_hosts(root)
    created: list[Path] = []
    folders = _Hosts(root)
    refused: dict[str, list[Any]] = {}  # a folder that failed -> [its problem, secrets not made there]: said once
    try:
        for host in hosts.values():
            for key, rel, data in _wanted(host):
                up = rel.rpartition("/")[0]
                if up in refused:
                    refused[up][1] += 1
                    continue
                try:
                    if folders.create(rel, data):
                        created.append(root / "hosts" / rel)
                except OSError as e:
                    where = e.filename if isinstance(e.filename, str) and e.filename.startswith("hosts/") else f"hosts/{rel}"
                    refused[up] = [Problem(host.origin(key), key, f"{rel!r}: {where}: {e.strerror or e}; expected a folder below hosts/ "
                                           "where the secret can be created, owner-only"), 0]
    finally:
        folders.close()
    for problem, more in refused.values():
        problems.append(Problem(problem.file, problem.key, problem.message + (f" ({more} more secret(s) of this folder not made)" if more else "")))
    return created, problems


def ensure(root: Path) -> list[Path]:
    """make() for a caller that wants only the new files (a host that does not resolve gets none; doit names its problem)."""
    return make(root)[0]


def main(argv: list[str]) -> int:
    created, problems = make(Path(argv[0] if argv else "."))
    for p in created:
        print(f"created {p}")
    said = InventoryError(problems).problems  # each once (a bad default is every host's), as the inventory says them
    for problem in said[:MAX_SAID]:
        sys.stderr.write(f"cephboot: {problem}\n")
    if len(said) > MAX_SAID:
        sys.stderr.write(f"cephboot: ... and {len(said) - MAX_SAID} more problems\n")
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
