"""Caches in build/ as plain JSON (never a format that runs code when loaded): written owner-only
and atomically, read only when the file is ours, nobody else may write it, and it is no link."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from .fileio import tmp_name


def read_private_json(path: Path) -> Any:
    """JSON from ``path`` if it is a regular file of ours that nobody else may write; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def write_private_json(path: Path, data: Any) -> bool:
    """Write ``data`` to ``path`` as JSON, owner-only (0600; build/ is made 0700), atomically; a failure only costs the cache."""
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        for folder in (path.parent.parent, path.parent) if path.parent.name == ".inventory" else (path.parent,):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass
        tmp = path.parent / tmp_name(path.name)
        try:
            os.unlink(tmp)  # a leftover of a killed run with our pid
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True
    except (OSError, TypeError, ValueError):
        try:
            os.unlink(path.parent / tmp_name(path.name))
        except OSError:
            pass
        return False
