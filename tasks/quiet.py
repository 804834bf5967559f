"""A no-op `doit` that loads no host: the manifest of every path the last run's checks looked at, and the fast path that trusts it.

At the end of a plain `doit` (tasks/reporter.py) in which every task was up to date or
succeeded, and the only tasks that did work were per-host stages (their writes are what the
stat memo of tasks/fileio.py forgot and looked at again), build/state/quiet is written:

- every path a check looked at through the stat memo (fileio.file_key: stage inputs and
  outputs, host files, profiles, site.yaml, the kernel folders) with the key those checks
  compared (size, mtime, mode), taken when they looked;
- every entry looked at through fileio.identity_key (published files: size, mtime, mode,
  inode, ctime, owner, group, of the entry itself), also taken when they looked;
- stricter keys (with inode and ctime) of what the tasks read while loading and doit's own
  checks look at: the code (tasks/*.py, dodo.py), templates/ and each folder in it, hosts/
  and its folders (whose listings are the hosts and profiles), every file_dep and target,
  the shellcheck binary; stat'd before the tasks load and again at the end (when they differ,
  no manifest is written); and the stage records in build/state, as the run left them;
- one digest of all of those keys, of doit's own records of every task (doit.sqlite3: what
  `doit forget` and a failed run change), and of the environment;
- the names and docs of the default tasks, and what loading them printed on stderr.

A plain `doit` (no task, no option after -f/-d) stats every path of the manifest first (a
flat list, NUL-separated: reading it costs less than the stats) and, when the digest is the
same, loads the default tasks from the manifest alone: up to date (doit's records, what
their own checks compare with, are unchanged), with actions that cannot run.  Otherwise,
and for every other command, the manifest is removed before any task loads and the tasks
load as usual.  A run in which another task did work (its writes are not accounted for)
writes none: the next full no-op does.  ``build/state/quiet.last`` says which way the last
load went (``fast``, or ``full: <why>``), for tests.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import sys
from array import array
from typing import Any, Callable, Iterator

from doit.exceptions import TaskFailed
from doit.reporter import ExecutedOnlyReporter

from . import layout, listing
from .fileio import fresh_key, identity_of, read_private, stat_memo_seen, write_private

MANIFEST = layout.STATE / "quiet"
TAKEN = layout.STATE / "quiet.last"
DOIT_DB = layout.BUILD / "doit.sqlite3"  # DOIT_CONFIG's dep_file (tasks/everything.py)
FORMAT = b"cephboot-quiet 1"
CODE = layout.PROJECT / "tasks"
# variables that change between shells, not what a task does
_NOISE = {"_", "OLDPWD", "PWD", "SHLVL", "TERM", "COLUMNS", "LINES", "DISPLAY", "WINDOWID", "SSH_CLIENT",
          "SSH_CONNECTION", "SSH_TTY", "SSH_AUTH_SOCK", "TMUX", "TMUX_PANE", "STY", "XDG_SESSION_ID"}
_NONE = ((1 << 64) - 1,) * 3  # no such file, in what fileio.file_key compares: size, mtime, mode
_STRICT = struct.Struct("<5Q")  # those and inode, ctime
_NONE_STRICT = b"\xff" * _STRICT.size

_state: dict[str, Any] = {"why": "not a plain doit", "before": {}, "said": [], "tee": None, "broken": ""}


# --- the keys, the same way in both directions ----------------------------------------------

def _weak(paths: list[bytes]) -> bytes:
    """size, mtime, mode of each path (~1.7 million at 100,000 hosts: written for speed)."""
    out: list[int] = []
    extend, look = out.extend, os.stat
    for p in paths:
        try:
            st = look(p)
        except (FileNotFoundError, NotADirectoryError):
            extend(_NONE)
            continue
        extend((st.st_size, st.st_mtime_ns, st.st_mode))
    return array("Q", out).tobytes()


def _strict_one(p: str | bytes) -> bytes:
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        return _NONE_STRICT
    return _STRICT.pack(st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino, st.st_ctime_ns)


def _idents(paths: list[bytes]) -> bytes:
    out = []
    for p in paths:
        try:
            st: os.stat_result | None = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        out.append(identity_of(st))
    return "\0".join(out).encode()


def _weak_of(keys: list[str]) -> bytes:
    """fileio.file_key's "size:mtime_ns:mode(octal)" of each path, as _weak packs them."""
    out: list[int] = []
    extend = out.extend
    for key in keys:
        if not key:
            extend(_NONE)
            continue
        size, mtime, mode = key.split(":")
        extend((int(size), int(mtime), int(mode, 8)))
    return array("Q", out).tobytes()


def _context() -> bytes:
    """doit's records of every task and the environment: what the stat keys do not show."""
    # a copied or moved site, or another copy of the code, loads as usual
    h = hashlib.blake2b(os.fsencode(f"{os.getcwd()}\0{layout.PROJECT}"), digest_size=32)
    for k, v in sorted(os.environ.items()):
        if k not in _NOISE:
            h.update(f"{k}={v}\0".encode("utf-8", "surrogateescape"))
    try:
        with sqlite3.connect(f"file:{DOIT_DB}?mode=ro", uri=True) as db:
            for name, data in db.execute("SELECT task_id, task_data FROM doit ORDER BY task_id"):
                h.update(f"\1{name}\0{data}".encode("utf-8", "surrogateescape"))
    except sqlite3.Error:
        h.update(b"\2no records")
    return h.digest()


def _digest(context: bytes, weak: bytes, strict: bytes, idents: bytes) -> str:
    h = hashlib.blake2b(context, digest_size=32)
    for part in (weak, strict, idents):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


# --- the fast path ----------------------------------------------------------------------------

def plain(argv: list[str]) -> bool:
    """Whether ``argv`` is a plain `doit`: the default tasks, no option that changes what runs or is printed."""
    return listing.doit_args(argv) == []


def fast(argv: list[str]) -> dict[str, Any] | None:
    """The manifest's header (default tasks, what loading printed) when ``argv`` is a plain
    `doit` and nothing in the manifest changed; else None (why: in build/state/quiet.last)."""
    if not plain(argv):
        _state["why"] = "not a plain doit"
        return None
    raw = read_private(MANIFEST)
    if raw is None:
        _state["why"] = "no manifest"
        return None
    try:
        head, digest, counts, tasks, said, body = raw.split(b"\n", 5)
        weak_n, strict_n = (int(n) for n in counts.split())
        paths = body.split(b"\0") if body else []
        rows = [line.split(b"\0", 1) for line in tasks.split(b"\1")]
        if head != FORMAT or len(paths) < weak_n + strict_n or any(len(r) != 2 for r in rows):
            raise ValueError
    except ValueError:
        _state["why"] = "damaged manifest"
        return None
    try:
        now = _digest(_context(), _weak(paths[:weak_n]), b"".join(_strict_one(p) for p in paths[weak_n:weak_n + strict_n]),
                      _idents(paths[weak_n + strict_n:]))
    except OSError as e:  # a path cannot be looked at: the full load says why
        _state["why"] = f"{os.fsdecode(e.filename or '')}: {e.strerror}"
        return None
    if now.encode() != digest:
        _state["why"] = "changed since the manifest"
        return None
    write_private(TAKEN, b"fast\n")
    return {"tasks": [[n.decode(), d.decode()] for n, d in rows], "said": said.decode().replace("\1", "\n")}


def creator(found: dict[str, Any]) -> Callable[[], Iterator[dict[str, Any]]]:
    """The default tasks, up to date: doit's records of them and every file their checks look at are unchanged."""
    sys.stderr.write(found["said"])
    sys.stderr.flush()

    def task_quiet() -> Iterator[dict[str, Any]]:
        for name, doc in found["tasks"]:
            yield {"basename": name, "doc": doc, "actions": [_cannot_run], "uptodate": [True]}

    return task_quiet


def config(found: dict[str, Any]) -> dict[str, Any]:
    return {"backend": "sqlite3", "dep_file": str(DOIT_DB), "verbosity": 1,
            "default_tasks": [n for n, _ in found["tasks"]], "reporter": ExecutedOnlyReporter}


def _cannot_run() -> TaskFailed:
    return TaskFailed("cephboot: the quiet path's tasks never run (remove build/state/quiet and run doit again)")


# --- the full path: the manifest, written at the end of a run --------------------------------

class _Tee:
    """sys.stderr while the tasks load: what is written is kept (a fast no-op prints it again)."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> int:
        _state["said"].append(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _loading_inputs() -> list[str]:
    """What the tasks read while loading, besides what the stat memo sees: code, templates, folder listings."""
    out = [str(CODE / n) for n in sorted(os.listdir(CODE)) if n.endswith(".py")]
    out += [str(CODE), str(layout.PROJECT / "dodo.py"), str(layout.PROJECT / ".shellcheckrc")]
    for folder, dirs, names in os.walk(layout.TEMPLATES):
        dirs.sort()
        out.append(folder)
        out += [os.path.join(folder, n) for n in sorted(names)]
    out.append("hosts")
    try:
        out += sorted(e.path for e in os.scandir("hosts") if e.is_dir(follow_symlinks=False))
    except OSError:
        pass
    return out


def full_begins() -> None:
    """The tasks load as usual (engine.setup): the manifest goes, what loading reads is stat'd first."""
    try:
        MANIFEST.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        _state["broken"] = "the old manifest could not be removed"
    write_private(TAKEN, f"full: {_state['why']}\n".encode())
    _state["before"] = {p: _strict_one(p) for p in _loading_inputs()}
    if plain(sys.argv):
        _state["tee"] = sys.stderr
        sys.stderr = _Tee(sys.stderr)


def run_starts(tasks: dict[str, Any], selected: list[str]) -> None:
    """Every task is loaded (the reporter's initialize): doit's own checks' files are stat'd before it looks."""
    if _state["tee"] is not None:
        sys.stderr = _state["tee"]
        _state["tee"] = None
    before = _state["before"]
    extra: list[str] = []
    for task in tasks.values():
        extra += [*task.file_dep, *task.targets]
    from .lint import shellcheck_binary  # the findings' key names the binary

    try:
        extra.append(shellcheck_binary())
    except RuntimeError:
        pass
    for p in extra:
        before.setdefault(str(p), _strict_one(str(p)))
    _state["tasks"] = [[name, tasks[name].doc or ""] for name in selected]


def untracked(why: str) -> None:
    """A task wrote files the stat memo cannot account for: no manifest this run."""
    _state["broken"] = _state["broken"] or why


def finish(ok: bool) -> None:
    """The end of the run (the reporter's complete_run, after doit saved its records)."""
    seen = stat_memo_seen()
    if not ok or not plain(sys.argv) or _state["broken"] or seen is None or "tasks" not in _state:
        return
    keys, idents, forgotten = seen
    for p in forgotten:  # written by a stage and not looked at since: as the run left them
        if p not in keys and p not in idents:
            keys[p] = fresh_key(p)
    before = _state["before"]
    for p, key in before.items():
        if _strict_one(p) != key:
            return  # changed while the run looked at it: the next run loads as usual
    state = [os.path.join(d, n) for d, _, names in os.walk(layout.STATE) for n in sorted(names)
             if n not in (MANIFEST.name, TAKEN.name) and not n.startswith(".")]
    strict = {**before, **{p: _strict_one(p) for p in state}}
    weak_paths = list(keys)
    ident_paths = list(idents)
    try:
        weak = _weak_of([keys[p] for p in weak_paths])
    except ValueError:
        return
    digest = _digest(_context(), weak, b"".join(strict.values()), "\0".join(idents[p] for p in ident_paths).encode())
    rows = b"\1".join(f"{n}\0{d}".replace("\n", " ").encode() for n, d in _state["tasks"])
    said = "".join(_state["said"]).replace("\n", "\1").encode()
    body = "\0".join([*weak_paths, *strict, *ident_paths]).encode("utf-8", "surrogateescape")  # os.fsencode, at once
    write_private(MANIFEST, b"\n".join([FORMAT, digest.encode(), f"{len(weak_paths)} {len(strict)}".encode(), rows, said, body]))
