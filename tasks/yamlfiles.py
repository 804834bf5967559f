"""Read the inventory's files without surprises: each file's type is checked before it is
opened (a FIFO never blocks a run), sizes are bounded, and YAML that would silently lose data
(a duplicate key), change silently (an integer YAML 1.1 reads in another base, a date) or expand
without bound (aliases) is refused with a message naming the key."""
from __future__ import annotations

import datetime
import errno
import os
import re
import stat
from typing import Any

from . import plainyaml
from .model import kind
from .schema import SHOWN, shown

MAX_FILE = 1 << 20  # bytes of one YAML file
MAX_VALUES = 100_000  # values in one YAML file, aliases counted each time they are used
MAX_MESSAGE = 1000  # characters of a message PyYAML composes (it may quote a tag of the file)


class Unreadable(Exception):
    """A file that is not read: missing, not a regular file, too large or unreadable; ``key``
    names the key path (``rbd.image``) when one value is the reason."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


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


_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)")  # the one form of integer that reads as what it says


class NotDecimal:
    """An integer YAML 1.1 reads from another form than plain decimal (0100 is 64, 0x1f 31,
    1_000 1000, 1:30 90): what the loader makes of it, so that no key ever takes it (read_yaml
    refuses it, naming the key); a name written so would silently become another one."""

    __slots__ = ("text", "value", "line")

    def __init__(self, text: str, value: int, line: int):
        self.text, self.value, self.line = text, value, line

    def __repr__(self) -> str:
        return self.text

    def why(self) -> str:
        t = self.text.lstrip("+-").lower()
        form = ("sexagesimal (base 60) number" if ":" in t else "hexadecimal number" if t.startswith("0x")
                else "binary number" if t.startswith("0b") else "octal number" if t.startswith("0") else "number")
        mode = " or a file mode" if form == "octal number" else ""
        return (f"{shown(self.text)[1:-1]} (line {self.line}) is read by YAML 1.1 as the {form} {shown(self.value)}: "
                f"write it as a decimal number, or in quotes for a name{mode}")


def one_line(text: str) -> str:
    """A message PyYAML (or Python) composed, whole on one line: control characters escaped, at
    most MAX_MESSAGE characters (it may quote a tag of any length from the file)."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return out if len(out) <= MAX_MESSAGE else out[: MAX_MESSAGE - 30] + f"... ({len(out)} characters)"


_LOADER: list[Any] = []


def _yaml_loader() -> Any:
    """yaml's C safe loader (~5x faster), refusing duplicate keys instead of keeping the last,
    making a NotDecimal of each integer not written in decimal, and saying where a value that
    Python refuses (an int of 5,000 digits, a 13th month) is."""
    if _LOADER:
        return _LOADER[0]
    import yaml  # only when the cache missed: an unchanged inventory is never parsed

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except ValueError as e:
                raise yaml.constructor.ConstructorError(None, None, str(e), node.start_mark) from None

        def construct_yaml_int(self, node: Any) -> Any:
            text = self.construct_scalar(node)
            try:
                value = super().construct_yaml_int(node)
            except ValueError:  # more digits than Python converts (4,300)
                raise yaml.constructor.ConstructorError(None, None, f"a number of {len(text)} characters; no key takes more than 20 digits", node.start_mark) from None
            return value if _DECIMAL.fullmatch(text) else NotDecimal(text, value, node.start_mark.line + 1)

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

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    _LOADER.append(Loader)
    return Loader


_PLAIN = (str, int, float, bool, type(None))


def _plain(data: Any) -> bool:
    """Whether ``data`` is plain JSON-like data of at most MAX_VALUES values (_check_plain, without
    the key paths a message needs: what every parsed file costs).

    An alias is counted each time it is used: a few lines of anchors can stand for
    billions of values ("billion laughs"), which printing, merging or hashing would expand.
    """
    budget = MAX_VALUES
    stack = [data]
    while stack:
        v = stack.pop()
        budget -= 1
        if budget < 0:
            return False
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                return False
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif not isinstance(v, _PLAIN):
            return False
    return True


def _check_plain(data: Any) -> tuple[str, str] | None:
    """(key path, why) when ``data`` is not plain JSON-like data of a bounded size (_plain), else None."""
    if _plain(data):
        return None
    budget = MAX_VALUES
    stack: list[tuple[Any, Any, Any]] = [(None, None, data)]  # (the parent's entry, key or list index, value)
    while stack:
        entry = stack.pop()
        v = entry[2]
        budget -= 1
        if budget < 0:
            return "", f"holds more than {MAX_VALUES} values (aliases counted each time they are used); expected a small file of keys"
        if isinstance(v, dict):
            for k in v:
                if not isinstance(k, str):
                    return _where(entry, f"holds a key that is not text ({shown(k)}); write it in quotes")
            stack.extend(reversed([(entry, k, x) for k, x in v.items()]))  # the first in the file is said
        elif isinstance(v, list):
            stack.extend(reversed([(entry, i, x) for i, x in enumerate(v)]))
        elif isinstance(v, NotDecimal):
            return _where(entry, v.why())
        elif isinstance(v, datetime.date):  # and datetime
            return _where(entry, f"{v.isoformat()} is read by YAML 1.1 as a date: write it in quotes if it is text")
        elif not isinstance(v, _PLAIN):
            return _where(entry, f"holds a YAML {type(v).__name__} value ({shown(v)}); write it in quotes if it is text")
    return None


def _where(entry: tuple[Any, Any, Any], why: str) -> tuple[str, str]:
    """(the key path of a _check_plain entry, ``why`` after the list items it is in):
    ``a[1].b`` and "item 0: ..." for the 0 in ``a: [x, {b: [0]}]``."""
    parts: list[Any] = []
    while entry[0] is not None:
        parts.append(entry[1])
        entry = entry[0]
    parts.reverse()
    items = ""
    while parts and isinstance(parts[-1], int):
        items = f"item {parts.pop()}: " + items
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    return (key if len(key) <= SHOWN else shown(key)), items + why


def _pyyaml(raw: bytes) -> Any:
    import yaml  # only when the cache missed and the file is not plain YAML: an unchanged inventory is never parsed

    try:
        return yaml.load(raw, Loader=_yaml_loader())
    except yaml.reader.ReaderError as e:  # not UTF-8, or a control character: PyYAML gives the byte's offset
        at = raw[: e.position].count(b"\n") + 1 if isinstance(e.position, int) else None
        raise Unreadable(f"not valid YAML{f' (line {at})' if at else ''}: {one_line(str(e).split(chr(10))[0])}") from None
    except yaml.YAMLError as e:
        mark, context, context_mark = (getattr(e, name, None) for name in ("problem_mark", "context", "context_mark"))
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        within = f" ({context} at line {context_mark.line + 1})" if context and context_mark else f" ({context})" if context else ""
        raise Unreadable(f"not valid YAML{at}: {one_line(str(getattr(e, 'problem', None) or e) + within)}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # nesting too deep
        raise Unreadable(f"not usable YAML: {one_line(str(e) or type(e).__name__)}") from None


def checked(data: Any) -> dict[str, Any]:
    """``data`` as a file's top-level mapping (empty for an empty file), once it holds only plain
    values of a bounded size; Unreadable (naming the key) says why not."""
    if data is None:
        return {}
    why = _check_plain(data)
    if why:
        raise Unreadable(why[1], key=why[0])
    if not isinstance(data, dict):
        raise Unreadable(f"expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def read_yaml(path: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty when the file is); Unreadable says why not."""
    raw = read_regular(path, MAX_FILE)
    data = plainyaml.read(raw)  # plain YAML, read as PyYAML reads it, without importing it (tasks/plainyaml.py)
    return checked(_pyyaml(raw) if data is None else data)
