"""The plain YAML inventories are written in, read without PyYAML, to exactly what PyYAML's safe
loader makes of it; None for anything else, which PyYAML then reads (tasks/yamlfiles.py), so that
every error message is still PyYAML's.

Importing PyYAML costs ~9 ms of CPU, a fifth of what a one-host edit costs above a no-op, for one
small file. The plain form:

- ASCII, lines ending in a newline alone, spaces for indentation (no tab), no ``---``;
- blank lines, comment lines, and a comment after a value (`` # ...``, after a blank);
- block mappings nested by indentation, each key a word of at most 129 characters (a letter or
  ``_``, then letters, digits, ``_`` and ``-``; a leading ``+``) right before its ``:``, never
  twice in one mapping;
- each value: nothing (null, or the mapping on the lines below), a quoted string without escapes
  (``"..."``, ``'...'``), a decimal integer, ``true`` or ``false``, a plain word, or a one-line
  flow list of those.

A plain word is text only where YAML 1.1 cannot read it as anything else: it starts with a letter
and is no yes/no/on/off/true/false/null word in any case; or it holds a ``/`` (no implicit type
has one); or it starts with a digit and holds a letter no number or date has (``6.1.0-57-amd64``,
``40G``); or it is dotted numbers (``192.0.2.1``: no number has two dots) or a UUID (hex groups of
8-4-4-4-12: no date, time or number looks like one). Anything else (anchors, aliases, tags, block
lists, text on several lines, escapes, other numbers, other booleans, dates) is not plain.
"""
from __future__ import annotations

import re
from typing import Any

_KEY_LINE = re.compile(r"( *)(\+?[A-Za-z_][A-Za-z0-9_-]{0,127}):(?: +(.*))?")  # a longer key: PyYAML's limit is 1,024
_NOT_TEXT = frozenset(("yes", "no", "on", "off", "true", "false", "null"))  # YAML 1.1 booleans and null, any case
_INT = re.compile(r"0|[1-9][0-9]{0,17}")
_BOOLEANS = {"true": True, "false": False}  # in these words only (YAML 1.1 has a dozen more)
_WORD = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./=+@:-]*")  # in a flow list no ':' (below)
# text for sure: a letter first; a '/'; a letter no number or date of YAML 1.1 holds (hex digits,
# 0x, 0b, exponents, T and Z are the ones they do) after a digit first (6.1.0-57-amd64, 40G);
# dotted numbers; a UUID
_TEXT = re.compile(r"[A-Za-z].*|.*/.*|[0-9].*[g-su-wyG-SU-WY].*|[0-9]+(?:\.[0-9]+){2,}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_DOUBLE = re.compile(r'"([^"\\\x00-\x1f\x7f]*)"')
_SINGLE = re.compile(r"'([^'\x00-\x1f\x7f]*)'")
_COMMENT = re.compile(r"(?: +#.*)?")
_ITEM = re.compile(r' *("[^"\\\x00-\x1f\x7f]*"|\'[^\'\x00-\x1f\x7f]*\'|[A-Za-z0-9_./][A-Za-z0-9_./=+@-]*) *(,|\])')


class _NotPlain(Exception):
    pass


def read(data: bytes) -> dict[str, Any] | None:
    """The top-level mapping of ``data`` when it is plain YAML (above), as PyYAML's safe loader reads it; else None."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines.pop() != "" or not all(line.isprintable() for line in lines):  # no tab, CR or other control character
        return None
    try:
        return _mapping(lines)
    except _NotPlain:
        return None


def _mapping(lines: list[str]) -> dict[str, Any] | None:
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(0, root)]
    pending: tuple[int, dict[str, Any], str] | None = None  # a key with no value yet: a mapping below, or null
    for line in lines:
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        m = _KEY_LINE.fullmatch(line)
        if m is None:
            raise _NotPlain
        indent, key, rest = len(m[1]), m[2], m[3]
        if pending is not None:
            at, parent, name = pending
            if indent > at:
                parent[name] = {}
                stack.append((indent, parent[name]))
            else:
                parent[name] = None
            pending = None
        while stack[-1][0] > indent:
            stack.pop()
        level, here = stack[-1]
        if level != indent or key in here or key.lstrip("+").lower() in _NOT_TEXT:
            raise _NotPlain
        if rest is None or rest.startswith("#"):
            here[key] = None
            pending = (indent, here, key)
        else:
            here[key] = _value(rest)
    if pending is not None:
        pending[1][pending[2]] = None
    return root or None


def _value(rest: str) -> Any:
    if rest.startswith("["):
        return _flow_list(rest)
    for quoted in (_DOUBLE, _SINGLE):
        m = quoted.match(rest)
        if m:
            if not _COMMENT.fullmatch(rest, m.end()):
                raise _NotPlain
            return m[1]
    word, _, comment = rest.partition(" ")
    if comment and not _COMMENT.fullmatch(" " + comment):
        raise _NotPlain
    return _scalar(word, _WORD)


def _scalar(word: str, shape: re.Pattern[str]) -> Any:
    if _INT.fullmatch(word):
        return int(word)
    if word in _BOOLEANS:
        return _BOOLEANS[word]
    if not shape.fullmatch(word) or word.endswith(":") or not _TEXT.fullmatch(word) or word.lower() in _NOT_TEXT:
        raise _NotPlain
    return word


def _flow_list(rest: str) -> list[Any]:
    items: list[Any] = []
    pos = 1
    if re.match(r" *\]", rest[pos:]):
        pos = rest.index("]") + 1
    else:
        while True:
            m = _ITEM.match(rest, pos)
            if m is None:
                raise _NotPlain
            token = m[1]
            items.append(token[1:-1] if token[0] in "\"'" else _scalar(token, _WORD))
            pos = m.end()
            if m[2] == "]":
                break
    if not _COMMENT.fullmatch(rest, pos):
        raise _NotPlain
    return items
