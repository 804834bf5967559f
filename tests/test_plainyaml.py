"""tasks/plainyaml.py reads plain YAML exactly as the PyYAML path of tasks/yamlfiles.py does (PyYAML's
safe loader with cephboot's checks: duplicate keys, integers not written in decimal, dates), and declines
everything else: checked on every inventory file of the project and on tens of thousands of generated
documents made of the shapes YAML 1.1 reads in surprising ways."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT
from tasks import plainyaml, yamlfiles
from tasks.yamlfiles import Unreadable, read_yaml

# values YAML 1.1 reads as booleans, nulls, numbers, dates, or not at all; and plain text
WORDS = [
    "yes", "No", "ON", "off", "True", "TRUE", "true", "false", "False", "null", "Null", "NULL", "~", "y", "n", "Y",
    "0", "7", "007", "0640", "1_000", "1:30", "12:30:00", "0x1F", "0b101", "0o17", "+7", "-0", "00", "0_0", "1e5", "1.5", "1.0e+5", "1.", ".5", ".inf", ".NaN",
    "2026-11-30", "2001-12-14t21:59:43.10-05:00", "2026-11-30T10:00:00Z", "99999999999999999999999", "-1", "+1", "-x",
    "192.0.2.1", "192.0.2.0/24", "198.19.251.15/15", "1.2", "1.2.3", "6.1.0-57-amd64", "40G", "40T", "4b", "3e", "12ab",
    "0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44", "c3b0b5e0-0000-4000-8000-000000000004", "0D6F3E90-6A36-4F0E-B1D7-3C2A9E5F7B44",
    "http://192.0.2.5/boot", "/tree", "/", "a:b", "a:", "panic=30", "net.ifnames=0", "console=ttyS0,115200n8", "+x", "_x",
    "@x", "%x", "!x", "!!str x", "&a x", "*a", "|", ">", "'q'", '"q"', '"a\\"b"', "'it''s'", '"a # b"', "'a, b'", "#x", "a#b",
    "a #b", "a b", "a  # c", "x ", "[a, b]", "[]", "[ ]", "[a,]", "[a,b]", "[[a]]", "['x', \"y\", 3, on]", "[a b]",
    "[192.0.2.11, 192.0.2.12]", "[nomodeset]", "{a: 1}", "=", "<<", "rbd", "dhcp", "zstd", "\"\"", "''", "[\"\", '']",
]
PLAINISH = ["rbd", "dhcp", "0", "7", "true", "false", "192.0.2.1", "192.0.2.0/24", "6.1.0-57-amd64", "40G", "/tree", "a:b",
            "panic=30", "'q'", '"q"', "[a, b]", "[]", "[192.0.2.11, 192.0.2.12]", "0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44",
            "http://192.0.2.5/boot", '"a # b"', "[\"\", '']"]
KEYS = ["a", "b", "key", "k" * 128, "k" * 1024, "k" * 1100, "kernel_args", "+kernel_args", "_k", "k-1", "on", "yes", "Null", "y", "1", "a b", "a:b", "\"q\"", "-", "? x"]


def _doc(rng: random.Random) -> str:
    lines: list[str] = []
    indents = [0]
    for _ in range(rng.randint(1, 8)):
        roll = rng.random()
        if roll < 0.03:
            lines.append(rng.choice(["", "# a comment", "   # indented comment", "  ", "---", "- item", "\t", "a: b\tc"]))
            continue
        indent = rng.choice(indents if rng.random() < 0.9 else [indents[-1] + 2, indents[-1] + rng.choice([1, 3, 4])])
        key = rng.choice(KEYS if rng.random() < 0.1 else KEYS[:3])
        if rng.random() < 0.3:
            lines.append(f"{' ' * indent}{key}:" + rng.choice(["", " # below", "  "]))
            indents = [i for i in indents if i <= indent] + [indent + rng.choice([2, 4])]
        else:
            value = rng.choice(WORDS if rng.random() < 0.3 else PLAINISH)
            lines.append(f"{' ' * indent}{key}:{rng.choice([' '] * 8 + ['  ', ''])}{value}{rng.choice(['', '', '', ' # c', '#c', ' '])}")
            indents = [i for i in indents if i <= indent] or [0]
    return "\n".join(lines) + rng.choice(["\n"] * 8 + ["", "\r\n"])


def _pyyaml(text: bytes) -> Any:
    """What read_yaml makes of ``text`` when the plain reader declines it: the data, or its refusal as (key, message)."""
    try:
        return yamlfiles.checked(yamlfiles._pyyaml(text))
    except Unreadable as e:
        return ("refused", e.key, str(e))


def _plain(text: bytes) -> Any:
    """What read_yaml makes of ``text`` by the plain reader; None when that declines it."""
    got = plainyaml.read(text)
    try:
        return None if got is None else yamlfiles.checked(got)
    except Unreadable as e:
        return ("refused", e.key, str(e))


def test_every_generated_document_is_read_as_pyyaml_reads_it_or_left_to_it() -> None:
    rng = random.Random(15)
    plain = not_decimal = 0
    for _ in range(30_000):
        text = _doc(rng).encode()
        got, want = _plain(text), _pyyaml(text)
        not_decimal += "write it as a decimal number" in str(want)
        if got is None:
            continue
        plain += 1
        assert repr(got) == repr(want), text  # repr: True is not 1, and the keys' order counts
    assert plain > 2_000  # the plain form is common, or this checks little
    assert not_decimal > 100  # the integers the PyYAML path refuses are common too: the plain reader must decline each


@pytest.mark.parametrize("text", [
    b"a: yes\n", b"a: on\n", b"a: 0640\n", b"a: 1:30\n", b"a: 2026-11-30\n", b"a: 1.5\n", b"a: ~\n", b"a: 1_000\n", b"on: 1\n",
    b"a: 1\na: 2\n", b"a: b\n  c: d\n", b"a:\n  b: 1\n c: 2\n", b"  a: 1\n", b"- a\n", b"a: &x 1\n", b"a: \"b\\n\"\n",
    b"a: b\n", b"a: b\r\n", b"a: b", b"a: \x01\n", b"# \x0c\na: b\n", "a: b\u00e9\n".encode(), b"a: [b, [c]]\n", b"a: b: c\n",
])
def test_what_yaml_reads_another_way_is_left_to_pyyaml(text: bytes) -> None:
    if text in (b"a: b\n",):
        assert plainyaml.read(text) == {"a": "b"}
    else:
        assert plainyaml.read(text) is None


def test_every_inventory_file_of_the_project_reads_alike() -> None:
    files = [p for p in PROJECT.rglob("*.yaml") if ".venv" not in p.parts and "build" not in p.parts]
    assert len(files) > 10
    for p in files:
        data = p.read_bytes()
        got = _plain(data)
        assert got is None or repr(got) == repr(_pyyaml(data)), p


@pytest.mark.parametrize(("word", "form", "value"), [
    ("0100", "octal", "64"), ("00", "octal", "0"), ("-0640", "octal", "-416"), ("0x1f", "hexadecimal", "31"), ("0b101", "binary", "5"),
    ("1_000", "", "1000"), ("+7", "", "7"), ("1:30", "sexagesimal (base 60)", "90"), ("-1:00:00", "sexagesimal (base 60)", "-3600"),
])
def test_an_integer_not_written_in_decimal_is_refused_naming_the_key(word: str, form: str, value: str, tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    for text, key, items in ((f"rbd:\n  image: {word}\n", "rbd.image", ""), (f"a: [x, {{b: [y, {word}]}}]\n", "a[1].b", "item 1: "),
                             (f"link_timeout: !!int '{word}'\n", "link_timeout", "")):
        path.write_text(text)
        assert plainyaml.read(path.read_bytes()) is None  # left to PyYAML, which refuses it
        with pytest.raises(Unreadable) as e:
            read_yaml(str(path))
        assert e.value.key == key
        line = text.count("\n", 0, text.index(word)) + 1
        assert str(e.value) == (f"{items}{word} (line {line}) is read by YAML 1.1 as the {form + ' ' if form else ''}number {value}: "
                                f"write it as a decimal number, or in quotes for a name{' or a file mode' if form == 'octal' else ''}")


@pytest.mark.parametrize(("word", "value"), [("0", 0), ("7", 7), ("-1", -1), ("-0", 0), ("100", 100), ("0o17", "0o17"), ("'0100'", "0100")])
def test_a_decimal_integer_and_text_are_read_as_written(word: str, value: Any, tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text(f"k: {word}\n")
    assert read_yaml(str(path)) == {"k": value}
    assert _pyyaml(path.read_bytes()) == {"k": value}  # and the same by PyYAML when the plain reader reads it


def test_a_message_pyyaml_composes_is_whole_on_one_line() -> None:
    assert yamlfiles.one_line("duplicate key 'kernel_args' (first at line 7): YAML would keep only the last one; merge the two") == \
        "duplicate key 'kernel_args' (first at line 7): YAML would keep only the last one; merge the two"
    assert yamlfiles.one_line("a\nb\x01c\u200bd\te") == "a\\nb\\x01c\\u200bd\\te"
    long = yamlfiles.one_line("t" * 5000)
    assert len(long) <= yamlfiles.MAX_MESSAGE and long.endswith("... (5000 characters)")


def test_read_yaml_gives_the_same_answers_and_errors_either_way(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text('nics:\n  ceph:\n    macs: ["52:54:00:a1:00:01"]\n    address: 192.0.2.21/24\nmonolithic: true\n')
    assert plainyaml.read(path.read_bytes()) is not None
    assert read_yaml(str(path)) == {"nics": {"ceph": {"macs": ["52:54:00:a1:00:01"], "address": "192.0.2.21/24"}}, "monolithic": True}
    path.write_text("a: 1\na: 2\n")  # declined: PyYAML's loader says what is wrong
    with pytest.raises(Unreadable, match="duplicate key 'a'"):
        read_yaml(str(path))
    path.write_text("a: [b\n")
    with pytest.raises(Unreadable, match="not valid YAML"):
        read_yaml(str(path))


def test_a_plain_file_of_too_many_values_is_refused_as_any_other(tmp_path: Path) -> None:
    path = tmp_path / "h.yaml"
    path.write_text("k: [" + ", ".join(["1"] * yamlfiles.MAX_VALUES) + "]\n")  # within the size limit
    assert plainyaml.read(path.read_bytes()) is not None
    with pytest.raises(Unreadable, match=f"more than {yamlfiles.MAX_VALUES} values"):
        read_yaml(str(path))
