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


# --- one stat per file per run ------------------------------------------------------
# A no-op run at 10,000 hosts looks at ~150,000 files, and a stat costs ~3.5 us on
# the reference machine: a file that is an output of one stage and an input of the
# next must not be looked at twice.  The memo holds while only stages run: before
# one runs, cephboot's reporter makes it forget the files it is about to write
# (stat_memo_forget()); before any other task runs, the reporter calls
# stat_memo_off(), and from then on every call is a real stat.

_KEYS: dict[str, str] = {}
_memo_on = False  # dodo.py turns it on for a doit process; a library user gets plain stats


def stat_memo_on() -> None:
    global _memo_on
    _memo_on = True


def file_key(path: str) -> str:
    """What make would compare of a file: "size:mtime_ns:mode" ("" when it does not exist);
    remembered until stat_memo_forget(path) or stat_memo_off().  Called ~150,000 times by
    a no-op at 10,000 hosts, so it is kept to a dictionary lookup when remembered."""
    if _memo_on:
        key = _KEYS.get(path)
        if key is not None:
            return key
    try:
        st = os.stat(path)
        key = f"{st.st_size}:{st.st_mtime_ns}:{st.st_mode:o}"
    except (FileNotFoundError, NotADirectoryError):
        key = ""
    if _memo_on:
        _KEYS[path] = key
    return key


# file_key(path) if it is remembered, else None (always None while the memo is off: it is empty)
remembered_key = _KEYS.get


def stat_memo_off() -> None:
    """Forget every remembered stat and remember no more (a task is about to change files)."""
    global _memo_on
    _memo_on = False
    _KEYS.clear()


def stat_memo_forget(paths: list[str]) -> None:
    """Forget what is remembered of ``paths`` (the caller has just written them)."""
    for p in paths:
        _KEYS.pop(p, None)
