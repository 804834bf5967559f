"""Atomic, write-only-if-changed file output and content hashing."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def write_if_changed(path: Path, data: bytes, mode: int = 0o644, durable: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically (temp file + rename) unless it already holds it.

    Returns True when the file was (re)written.  An unchanged file keeps its
    mtime, so doit tasks that depend on it stay up to date.  The rename alone
    means a reader or an interrupted run never sees a half-written file;
    ``durable`` adds an fsync so the new content also survives a power cut
    (wanted for published files, not worth its cost for build/ outputs that
    doit can make again).
    """
    try:
        st = path.stat()
        if st.st_size == len(data) and (st.st_mode & 0o7777) == mode and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not loosen or tighten what we ask for
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def digest(*parts: bytes | str) -> str:
    """A short stable digest of several strings or byte strings."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()[:32]


def files_digest(paths: list[Path]) -> str:
    """Digest of the contents of ``paths`` (in the given order)."""
    return digest(*(p.read_bytes() for p in paths))
