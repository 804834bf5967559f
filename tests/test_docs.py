"""The docs match the code: every task that README.md and docs/*.md name is one the dodo defines,
and every repository file or folder they name exists.

Names are read from `code spans` and ```sh blocks; placeholders stand for real values
(`<host>`, `<h>`, `HOST`: a host of the example site; `<kver>`: the example's kernel).
"""
from __future__ import annotations

import glob
import re
from pathlib import Path

import pytest

from builtsite import HOSTS, kver
from conftest import PROJECT, copy_site

DOCS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
# the repository's own top-level entries: a name starting with one of them is a path in the repository
TOP = ("tasks/", "templates/", "tests/", "docs/", "bench/", "scripts/", ".ci/")
# initramfs-tools' own folders, not the repository's scripts/
NOT_REPO = ("scripts/local-", "scripts/init-", "scripts/nfs", "scripts/panic")
TOP_FILES = ("dodo.py", "pyproject.toml", "README.md", "BENCHMARKS.md", "hosts/site.yaml", ".shellcheckrc")
_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_DOIT = re.compile(r"(?:^|[ \t(])(?:\.venv/bin/)?doit[ \t]+([^`\n]*)")
_TASK = re.compile(r"^(?P<base>[a-z][a-z_-]*)(?::(?P<sub>[A-Za-z0-9<>$_.-]+))?$")
_OPTION_VALUE = ("--only", "-n", "--reporter", "-f", "-d")
DOIT_COMMANDS = ("list", "info", "clean", "forget", "ignore", "help", "run", "strace", "dumpdb", "auto", "tabcompletion")
# tasks whose subtasks are named after files the example site does not have (image: one per
# hosts/images/NAME.yaml): `doit list --all` does not show them, so `<base>:<image>` is checked
# by its base.  Every other per-host command is one task that takes --only (tasks/selection.py).
PER_HOST_LATER = {"image"}


def texts() -> list[tuple[Path, str]]:
    return [(p, p.read_text()) for p in DOCS]


@pytest.fixture(scope="module")
def the_task_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every task and subtask the dodo defines for the example site (`doit list --all`)."""
    site = copy_site(PROJECT, tmp_path_factory.mktemp("docs") / "site")
    out = site.doit("list", "--all", "--quiet").stdout
    names = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"render", "publish", "publish:hosts"} <= names, out
    return names


def instances(name: str) -> list[str]:
    """``name`` with its placeholders replaced by the example site's values (one per host)."""
    out = [name.replace("<kver>", kver()).replace("KVER", kver())]
    for ph in ("<host>", "<h>", "HOST"):
        if ph in out[0]:
            out = [n.replace(ph, h) for n in out for h in sorted(HOSTS)]
    return out


def block_lines(text: str) -> list[str]:
    """The lines of the fenced blocks that are shell (no language, sh or console)."""
    out: list[str] = []
    lang = None  # None: outside a block
    for line in text.splitlines():
        if line.startswith("```"):
            lang = line[3:].strip() if lang is None else None
        elif lang in ("", "sh", "console"):
            out.append(line)
    return out


def task_words(text: str) -> list[str]:
    """Task names in `doit ...` commands: in a sh block every word of the command (options and
    their values skipped, up to a comment); in a code span the first word and any `stage:name`."""
    found: list[str] = []
    commands = [(m, True) for line in block_lines(text) for m in _DOIT.findall(line)]
    commands += [(m, False) for span in _SPAN.findall(text) for m in _DOIT.findall(span)]
    for command, whole in commands:
        skip = False
        for i, w in enumerate(command.split()):
            if w.startswith("#"):
                break
            if skip or w.startswith("-"):
                skip = w in _OPTION_VALUE and not skip
                continue
            if w in DOIT_COMMANDS:
                continue  # doit's own commands; the task names after them are checked
            if _TASK.match(w) and (whole or i == 0 or ":" in w):
                found.append(w)
    return found


def test_every_task_the_docs_name_exists(the_task_names: set[str]) -> None:
    bases = {n.split(":")[0] for n in the_task_names}
    missing = []
    for path, text in texts():
        names = set(task_words(text))
        # code spans of the form stage:name whose stage is a task (`overlay:hosts`, `publish:<kver>`)
        names |= {s for s in _SPAN.findall(text) if (m := _TASK.match(s)) and m["sub"] and m["base"] in bases}
        for name in sorted(names):
            later = ":" in name and name.split(":")[0] in PER_HOST_LATER and name.split(":")[0] in the_task_names
            if not later and not any(n in the_task_names for n in instances(name)):
                missing.append(f"{path.relative_to(PROJECT)}: {name}")
    assert not missing, "tasks named in the docs that `doit list --all` does not have:\n" + "\n".join(missing)


def repo_paths(text: str, doc: Path) -> list[str]:
    out = []
    for span in _SPAN.findall(text):
        for word in span.split():
            word = word.rstrip(".,;:)").lstrip("(")
            if (word.startswith(TOP) and not word.startswith(NOT_REPO)) or word in TOP_FILES:
                out.append(word)
    for link in _LINK.findall(text):
        if "://" not in link and not link.startswith("mailto:"):
            out.append(str((doc.parent / link).resolve().relative_to(PROJECT)))
    return out


def exists(name: str) -> bool:
    """A repository path (a glob; a placeholder stands for each example host) exists; ``file.py::test`` names a test in it."""
    name, _, test = name.partition("::")
    for n in [name, *instances(name)]:
        for p in glob.glob(str(PROJECT / n), recursive=True):
            if not test or re.search(rf"^def {re.escape(test)}\(", Path(p).read_text(), re.M):
                return True
    return False


def test_every_repository_path_the_docs_name_exists() -> None:
    missing = []
    for path, text in texts():
        for name in sorted(set(repo_paths(text, path))):
            if "<" in name.replace("<h>", "").replace("<host>", "") or "{" in name or "..." in name:
                continue  # a pattern with a placeholder that stands for no file here (<tree>, <case>, {a,b})
            if not exists(name):
                missing.append(f"{path.relative_to(PROJECT)}: {name}")
    assert not missing, "files named in the docs that the repository does not have:\n" + "\n".join(missing)


def test_the_docs_checker_sees_a_missing_task_and_a_missing_file() -> None:
    """The extraction finds what it must (else the two tests above would pass on anything)."""
    text = ("Run `doit render lint:hosts --only zephyr` then `overlay:hosts`, `doit move-root --only <host> moves it`; "
            "see `tasks/nothing.py`, `tests/test_docs.py::test_nothing` and [x](docs/none.md).\n"
            "```sh\n.venv/bin/doit publish:<kver> -n 2 nginx   # not: this\n```\n")
    assert set(task_words(text)) == {"render", "lint:hosts", "move-root", "publish:<kver>", "nginx"}
    paths = repo_paths(text, PROJECT / "README.md")
    assert set(paths) == {"tasks/nothing.py", "tests/test_docs.py::test_nothing", "docs/none.md"}
    assert not any(exists(p) for p in paths)
    assert exists("tests/test_docs.py::test_every_repository_path_the_docs_name_exists") and exists("templates/tree/hosts/HOST/boot.ipxe.j2")
