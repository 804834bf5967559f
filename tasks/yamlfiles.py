"""Read the inventory's files without surprises: each file's type is checked before it is
opened (a FIFO never blocks a run), sizes are bounded, and YAML that would silently lose data
(a duplicate key) or expand without bound (aliases) is refused with a message."""
from __future__ import annotations

import errno
import os
import stat
from typing import Any

from . import plainyaml
from .model import kind
from .schema import shown

MAX_FILE = 1 << 20  # bytes of one YAML file
MAX_VALUES = 100_000  # values in one YAML file, aliases counted each time they are used


class Unreadable(Exception):
    """A file that is not read: missing, not a regular file, too large or unreadable."""


def read_secret(path: str, limit: int) -> bytes:
    """The bytes of a secret of the inventory (a keyring, a LUKS key, a machine secret) where it
    is used: read_regular, and the open file must be owned by this user or root with no bit for
    group or others, as the inventory's checks found it (tasks/checks.py) — whatever was put in
    its place since (another user's file, a looser mode) is refused, not read."""
    return read_regular(path, limit, private=True)


def secret_bytes(path: str, limit: int) -> bytes:
    """read_secret where a task uses the secret: what is wrong is a PermissionError naming the path
    (one `cephboot:` line for the host, tasks/failures.py), never a traceback."""
    try:
        return read_secret(path, limit)
    except Unreadable as e:
        raise PermissionError(errno.EACCES, f"{e}; expected what the inventory's checks found (a file of this user's, 0600)", path) from None


def read_regular(path: str, limit: int, private: bool = False) -> bytes:
    """The bytes of ``path`` if it is a regular file (a link to one is followed) of at most ``limit`` bytes.

    The type is checked before the file is opened and again on the open file, which
    is opened non-blocking: a FIFO or device named like an input never blocks a run.
    ``private``: the open file must also be owner-only and this user's or root's (read_secret).
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(f"is {kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise Unreadable(f"is {st.st_size} bytes; expected at most {limit}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable("cannot read: no such file") from None
    except OSError as e:
        raise Unreadable(f"cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable(f"is {kind(st.st_mode)}, not a regular file")
        if private and st.st_uid not in (os.geteuid(), 0):
            raise Unreadable(f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}) or root: its owner could choose the key")
        if private and st.st_mode & 0o077:
            raise Unreadable(f"has mode {stat.S_IMODE(st.st_mode):04o}; expected 0600: a secret only its owner reads")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Unreadable(f"is larger than {limit} bytes")
    return data


_LOADER: list[Any] = []


def _yaml_loader() -> Any:
    """yaml's C safe loader (~5x faster), refusing duplicate keys instead of keeping the last."""
    if _LOADER:
        return _LOADER[0]
    import yaml  # only when the cache missed: an unchanged inventory is never parsed

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {shown(key)} (first at line {seen[key].line + 1}): YAML would keep only the last one; merge the two", key_node.start_mark)
                seen[key] = key_node.start_mark
            return super().construct_mapping(node, deep)

    _LOADER.append(Loader)
    return Loader


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(data: Any) -> str | None:
    """Why ``data`` is not plain JSON-like data of a bounded size, or None.

    An alias is counted each time it is used: a few lines of anchors can stand for
    billions of values ("billion laughs"), which printing, merging or hashing would expand.
    """
    budget = MAX_VALUES
    stack = [data]
    while stack:
        v = stack.pop()
        budget -= 1
        if budget < 0:
            return f"more than {MAX_VALUES} values (aliases counted each time they are used); expected a small file of keys"
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    return f"a key that is not text ({shown(k)}); write it in quotes"
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif not isinstance(v, _PLAIN):
            return f"a YAML {type(v).__name__} value ({shown(v)}); write it in quotes if it is text"
    return None


def _pyyaml(raw: bytes) -> Any:
    import yaml  # only when the cache missed and the file is not plain YAML: an unchanged inventory is never parsed

    try:
        return yaml.load(raw, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise Unreadable(f"not valid YAML{at}: {shown(str(getattr(e, 'problem', None) or e))[1:-1]}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # an int of 5,000 digits, nesting too deep
        raise Unreadable(f"not usable YAML: {shown(str(e))[1:-1]}") from None


def read_yaml(path: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty when the file is); Unreadable says why not."""
    raw = read_regular(path, MAX_FILE)
    data = plainyaml.read(raw)  # plain YAML, read as PyYAML reads it, without importing it (tasks/plainyaml.py)
    if data is None:
        data = _pyyaml(raw)
    if data is None:
        return {}
    why = _check_plain(data)
    if why:
        raise Unreadable(f"holds {why}")
    if not isinstance(data, dict):
        raise Unreadable(f"expected a mapping of keys at the top level, got {type(data).__name__}")
    return data
