"""A no-op `doit` that loads no host, and a one-host edit that loads that host alone: the
manifest of every path the last run's checks looked at, grouped by the host they belong to.

At the end of a plain `doit` (tasks/reporter.py) in which every task was up to date or
succeeded, and the only tasks that did work were per-host stages (their writes are what the
stat memo of tasks/fileio.py forgot and looked at again), the manifest is written:
build/state/quiet (its header and the keys) and build/state/quiet.paths (the paths), one
generation each so that a pair half-written by a killed run is never believed.  It holds

- every path a check looked at through the stat memo (fileio.file_key: stage inputs and
  outputs, host files, profiles, site.yaml, the kernel folders) with the key those checks
  compared (size, mtime, mode), taken when they looked;
- every entry looked at through fileio.identity_key (published files: size, mtime, mode,
  inode, ctime, owner, group, of the entry itself), also taken when they looked;
- both in groups: a host's group holds the paths that only its work looks at (its units'
  inputs and outputs in every stage, its inventory files); group 0 the rest (site.yaml,
  profiles, kernels, whatever two hosts share);
- stricter keys (with inode and ctime) of what the tasks read while loading and doit's own
  checks look at: the code (tasks/*.py, dodo.py), templates/ and each folder in it, hosts/
  and its folders (whose listings are the hosts and profiles), every file_dep and target,
  the shellcheck binary; stat'd before the tasks load and again at the end (when they differ,
  no manifest is written); and the stage records in build/state, as the run left them;
- a digest of doit's own records of every task (doit.sqlite3: what `doit forget` and a
  failed run change) and of the environment;
- the names and docs of the default tasks, and what loading them printed on stderr.

A plain `doit` (no task, no option after -f/-d) stats every path of the manifest first (a
flat list, NUL-separated: reading it costs less than the stats) and compares the keys:

- all the same: the default tasks load from the manifest alone, up to date, with actions that
  cannot run (``fast``);
- only some hosts' groups differ (and each of those hosts' work is only its own: no path of
  it is a file_dep of a site-wide task), the strict keys and the digest are the same (a host
  file replaced by an editor changes its folder: that folder's names are compared then),
  and at most a quarter of the hosts: the run is scoped to those hosts (``scoped: N hosts``).
  The inventory loads them alone (tasks/inventory.load_scoped), the stages check and redo
  them alone, and every other task is up to date (tasks/scope.py: the site-wide tasks read of
  each host only what tasks/scope.py compares before and after; when that differs, the
  inventory says no and the tasks load as usual).  The manifest is then updated: those
  hosts' groups taken again, every other group kept as the check found it;
- otherwise, and for every other command, the manifest is removed before any task loads and
  the tasks load as usual.

A run in which another task did work (its writes are not accounted for) writes none: the
next full no-op does.  ``build/state/quiet.last`` says which way the last load went
(``fast``, ``scoped: N hosts``, or ``full: <why>``), for tests.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import sqlite3
import struct
import sys
from array import array
from typing import Any, Callable, Iterator

from doit.exceptions import TaskFailed
from doit.reporter import ExecutedOnlyReporter

from . import cmdline, layout
from .fileio import IDENTITY_MASK, NO_IDENTITY, check_folders, doit_db_problem, fresh_key, read_private, stat_memo_seen, write_private

MANIFEST = layout.STATE / "quiet"
PATHS = layout.STATE / "quiet.paths"
TAKEN = layout.STATE / "quiet.last"
DOIT_DB = layout.DOIT_DB
FORMAT = b"cephboot-quiet 2"
CODE = layout.PROJECT / "tasks"
NODES = os.path.join("hosts", "nodes")  # the folder whose names are the hosts (as _loading_inputs names it)
# doit's run options that change only what is printed: a run with them is as plain as `doit`
PRINTING = frozenset({"verbosity", "failure_verbosity"})
# doit's commands that change nothing (they load the tasks and print): they keep a manifest that holds
READ_ONLY = frozenset({"list", "info", "help", "dumpdb", "tabcompletion"})
SCOPE_SHARE = 4  # a run is scoped to at most 1/SCOPE_SHARE of the hosts; more: the tasks load as usual
# variables that change between shells, not what a task does
_NOISE = {"_", "OLDPWD", "PWD", "SHLVL", "TERM", "COLUMNS", "LINES", "DISPLAY", "WINDOWID", "SSH_CLIENT",
          "SSH_CONNECTION", "SSH_TTY", "SSH_AUTH_SOCK", "TMUX", "TMUX_PANE", "STY", "XDG_SESSION_ID"}
_NONE = ((1 << 64) - 1,) * 3  # no such file, in what fileio.file_key compares: size, mtime, mode
_WEAK = 24  # bytes per weak key: size, mtime, mode
_IDENT = 8  # per identity key (fileio.identity_number)
_STRICT = struct.Struct("<5Q")  # size, mtime, mode, inode, ctime
_NONE_STRICT = b"\xff" * _STRICT.size

_state: dict[str, Any] = {"why": "not a plain doit", "before": {}, "said": [], "tee": None, "broken": "",
                          "scope": None, "old": None, "partial": False, "names": None}


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
    except OSError:  # none, or none that can be looked at (a link that loops): the load says why
        return _NONE_STRICT
    return _STRICT.pack(st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino, st.st_ctime_ns)


def _idents(paths: list[bytes]) -> bytes:
    """fileio.identity_number of each entry (its body, inline: ~800,000 at 100,000 hosts)."""
    out: list[int] = []
    append, look, mask = out.append, os.lstat, IDENTITY_MASK
    for p in paths:
        try:
            st = look(p)
        except (FileNotFoundError, NotADirectoryError):
            append(NO_IDENTITY)
            continue
        append(hash((st.st_size, st.st_mtime_ns, st.st_mode, st.st_ino, st.st_ctime_ns, st.st_uid, st.st_gid)) & mask)
    return array("Q", out).tobytes()


def _weak_of(keys: list[str]) -> bytes:
    """fileio.file_key's "size:mtime_ns:mode(octal)" of each path, as _weak packs them (in
    chunks: no list of ~5 million numbers at 100,000 hosts)."""
    packed = array("Q")
    for start in range(0, len(keys), 65536):
        out: list[int] = []
        extend = out.extend
        for key in keys[start:start + 65536]:
            if not key:
                extend(_NONE)
                continue
            size, mtime, mode = key.split(":")
            extend((int(size), int(mtime), int(mode, 8)))
        packed.extend(out)
    return packed.tobytes()


def _idents_of(keys: list[str]) -> bytes:
    """fileio.identity_key's hex of each entry, as _idents packs them."""
    return array("Q", [int(k, 16) if k else NO_IDENTITY for k in keys]).tobytes()


def _context(records: dict[str, str] | None = None) -> str:
    """doit's records of every task and the environment: what the stat keys do not show (and each
    task's record as doit keeps it, JSON, into ``records``)."""
    # a copied or moved site, or another copy of the code, loads as usual
    h = hashlib.blake2b(os.fsencode(f"{os.getcwd()}\0{layout.PROJECT}"), digest_size=32)
    for k, v in sorted(os.environ.items()):
        if k not in _NOISE:
            h.update(f"{k}={v}\0".encode("utf-8", "surrogateescape"))
    try:
        if doit_db_problem():  # a FIFO would block sqlite: the full load says what it is
            raise sqlite3.Error
        with sqlite3.connect(f"file:{DOIT_DB}?mode=ro", uri=True) as db:
            for name, data in db.execute("SELECT task_id, task_data FROM doit ORDER BY task_id"):
                if records is not None:
                    records[name] = data
                h.update(f"\1{name}\0{data}".encode("utf-8", "surrogateescape"))
    except sqlite3.Error:
        h.update(b"\2no records")
    return h.hexdigest()


def _names_digest() -> str:
    """The host files hosts/nodes/ lists (what the inventory reads of the folder itself); once a run."""
    if _state["names"] is None:
        _state["names"] = _list_names()
    return _state["names"]


def _list_names() -> str:
    try:
        names = sorted(n for n in os.listdir(NODES) if n.endswith((".yaml", ".yml")) and not n.startswith("."))
    except OSError:
        return ""
    return hashlib.blake2b("\0".join(names).encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


# --- the manifest ------------------------------------------------------------------------------

class _Manifest:
    """The two files of the manifest, read (or about to be written)."""

    def __init__(self) -> None:
        self.gen = ""
        self.context = ""
        self.rows: list[list[str]] = []
        self.said = ""
        self.names = ""  # _names_digest() when written
        self.groups: list[str] = [""]  # group 0: the site's; then one per host
        self.wends = array("Q")  # where each group's weak paths end
        self.iends = array("Q")  # and its identity paths
        self.flags = b""  # per group: 1 when a run may be scoped to it
        self.users = b""  # which hosts each profile in group 0 reaches: "<its weak index>:<group> <group>...;..." (users())
        self.strict: list[bytes] = []
        self.strict_keys = b""
        self.weak: list[bytes] = []
        self.weak_keys: bytes | list[bytes | memoryview] = b""  # bytes, or its parts in order (written without joining)
        self.ident: list[bytes] = []
        self.ident_keys: bytes | list[bytes | memoryview] = b""

    @classmethod
    def read(cls) -> "_Manifest":
        """The manifest as the last run wrote it; ValueError when it is missing, damaged, or half of a pair."""
        head, paths = read_private(MANIFEST), read_private(PATHS)
        if head is None or paths is None:
            raise ValueError("no manifest")
        m = cls()
        try:
            fmt, gen, context, counts, rows, said, names, m.users, blob = head.split(b"\n", 8)
            pgen, groups, body = paths.split(b"\n", 2)
            n_groups, n_weak, n_ident, n_strict = (int(n) for n in counts.split())
            every = body.split(b"\0") if body else []
            if fmt != FORMAT or gen != pgen or len(every) != n_strict + n_weak + n_ident:
                raise ValueError
            m.gen, m.context, m.names = gen.decode(), context.decode(), names.decode()
            m.rows = [[n.decode(), d.decode()] for n, d in (line.split(b"\0", 1) for line in rows.split(b"\1"))]
            m.said = said.decode().replace("\1", "\n")
            m.groups = groups.decode("utf-8", "surrogateescape").split("\0")
            sizes = [n_strict * _STRICT.size, n_weak * _WEAK, n_ident * _IDENT, n_groups * 8, n_groups * 8, n_groups]
            if len(blob) != sum(sizes) or len(m.groups) != n_groups or not n_groups:
                raise ValueError
            parts, at = [], 0
            for size in sizes:
                parts.append(blob[at:at + size])
                at += size
            m.strict_keys, m.weak_keys, m.ident_keys, wends, iends, m.flags = parts
            m.wends, m.iends = array("Q", wends), array("Q", iends)
            if (m.wends and m.wends[-1] != n_weak) or (m.iends and m.iends[-1] != n_ident):
                raise ValueError
            m.strict, m.weak, m.ident = every[:n_strict], every[n_strict:n_strict + n_weak], every[n_strict + n_weak:]
        except (ValueError, UnicodeDecodeError):
            raise ValueError("damaged manifest") from None
        return m

    def write(self, paths_too: bool) -> None:
        """Both files (``paths_too``, with a new generation), or the header alone (the paths are the same)."""
        if paths_too:
            self.gen = os.urandom(8).hex()
            head = b"\n".join([self.gen.encode(), "\0".join(self.groups).encode("utf-8", "surrogateescape"), b""])
            if not write_private(PATHS, _joined([head], [self.strict, self.weak, self.ident])):
                return
        rows = b"\1".join(f"{n}\0{d}".replace("\n", " ").encode() for n, d in self.rows)
        counts = f"{len(self.groups)} {len(self.weak)} {len(self.ident)} {len(self.strict)}".encode()
        head = b"\n".join([FORMAT, self.gen.encode(), self.context.encode(), counts, rows, self.said.replace("\n", "\1").encode(), self.names.encode(),
                           self.users, b""])
        parts = [head, self.strict_keys]
        for keys in (self.weak_keys, self.ident_keys):
            parts += keys if isinstance(keys, list) else [keys]
        write_private(MANIFEST, [*parts, self.wends.tobytes(), self.iends.tobytes(), self.flags])

    def group_range(self, ends: array, g: int) -> tuple[int, int]:
        return (ends[g - 1] if g else 0), ends[g]

    def profile_users(self) -> dict[int, list[int]]:
        """weak index of each profile in group 0 -> the groups of the hosts it reaches (read when group 0 changed)."""
        out: dict[int, list[int]] = {}
        for item in self.users.split(b";") if self.users else []:
            index, groups = item.split(b":")
            out[int(index)] = [int(g) for g in groups.split()]
        return out

    def set_profile_users(self, users: dict[int, list[int]]) -> None:
        self.users = ";".join(f"{i}:{' '.join(map(str, sorted(set(gs))))}" for i, gs in sorted(users.items())).encode()


def _joined(head: list[bytes], lists: list[list[str] | list[bytes]]) -> Iterator[bytes]:
    """``head``, then every path of ``lists`` (str from a full run, bytes as read) with a NUL between
    two, encoded 65,536 at a time: never one copy of them all (~150 MiB at 100,000 hosts, which
    the full run's peak memory would pay twice)."""
    yield from head
    first = True
    for paths in lists:
        for start in range(0, len(paths), 65536):
            chunk = paths[start:start + 65536]
            joined = "\0".join(chunk).encode("utf-8", "surrogateescape") if isinstance(chunk[0], str) else b"\0".join(chunk)  # type: ignore[arg-type]
            yield joined if first else b"\0" + joined
            first = False


def _changed_groups(old: bytes, now: bytes, ends: array, size: int, limit: int) -> set[int] | None:
    """The groups whose keys differ between ``old`` and ``now`` (halving: a few changed groups
    cost a few comparisons of big slices, not one per group); None when more than ``limit``."""
    if old == now:
        return set()
    found: set[int] = set()

    def walk(lo: int, hi: int) -> bool:
        a, b = (ends[lo - 1] if lo else 0) * size, ends[hi - 1] * size
        if old[a:b] == now[a:b]:
            return True
        if hi - lo == 1:
            found.add(lo)
            return len(found) <= limit
        mid = (lo + hi) // 2
        return walk(lo, mid) and walk(mid, hi)

    if len(old) != len(now) or not walk(0, len(ends)):
        return None
    return found


# --- the fast path and the scoped run ---------------------------------------------------------

def plain(argv: list[str]) -> bool:
    """Whether ``argv`` (sys.argv) is, as doit reads it (tasks/cmdline.py), a plain `doit`: the default
    tasks, no option that changes what runs or how it is checked (`-v 2` only prints more of what
    runs), no variable, the site the folder doit runs in; the same of what doit's config files set."""
    line = cmdline.read(argv)
    return (line is not None and line.understood and line.command == "run" and not line.words and not line.variables
            and set(line.options) | set(line.configured) <= cmdline.LOADER_PLAIN | PRINTING)


def reads_only(argv: list[str]) -> bool:
    """Whether ``argv`` is one of doit's commands that change nothing (`doit info`, `doit list --all` ...)."""
    line = cmdline.read(argv)
    return line is not None and line.command in READ_ONLY


def _holds(m: _Manifest) -> tuple[bool, bool, bytes, bytes, list[bytes], dict[str, str]]:
    """Whether every key of ``m`` is as it is now, whether its context (doit's records, the
    environment) is; the keys now (weak, identity, strict) and doit's records of each task."""
    weak, ident = _weak(m.weak), _idents(m.ident)
    strict = [_strict_one(p) for p in m.strict]
    records: dict[str, str] = {}
    context = _context(records) == m.context
    same = context and weak == m.weak_keys and ident == m.ident_keys and b"".join(strict) == m.strict_keys
    return same, context, weak, ident, strict, records


def _inventory_cache_key() -> bytes:
    """The strict keys of the inventory cache (build/.inventory.json and its shards), which a scoped
    run takes for what the hosts were at the last run (tasks/inventory.load_scoped)."""
    paths = [str(layout.INVENTORY_CACHE), str(layout.INVENTORY_SHARDS)]
    try:
        paths += sorted(e.path for e in os.scandir(layout.INVENTORY_SHARDS))
    except OSError:
        pass
    return "\0".join(paths).encode("utf-8", "surrogateescape") + b"".join(_strict_one(p) for p in paths)


def _kept_unless_cache_changed(before: bytes) -> None:
    """At the end of a command that changes nothing: the manifest it kept goes when its load rewrote
    the inventory cache (it took an edit made since the last run, which a scoped run must see)."""
    if _inventory_cache_key() != before:
        _forget_manifest()


def fast(argv: list[str]) -> dict[str, Any] | None:
    """The manifest's header (default tasks, what loading printed) when ``argv`` is a plain
    `doit` and nothing in the manifest changed; else None (why: in build/state/quiet.last), and
    when only a few hosts' files changed, the run is scoped to them (scoped())."""
    if not plain(argv):
        _state["why"] = "not a plain doit"
        return None
    try:
        check_folders()  # build/ in the way of the full load is said by it (tasks/engine.py), in every run
        m = _Manifest.read()
    except ValueError as e:
        _state["why"] = str(e)
        return None
    except OSError as e:
        _state["why"] = f"{os.fsdecode(e.filename or '')}: {e.strerror}"
        return None
    try:
        same, context, weak, ident, strict, records = _holds(m)
    except OSError as e:  # a path cannot be looked at: the full load says why
        _state["why"] = f"{os.fsdecode(e.filename or '')}: {e.strerror}"
        return None
    size = _STRICT.size
    if same:
        write_private(TAKEN, b"fast\n")
        return {"tasks": m.rows, "said": m.said}
    _state["why"] = "changed since the manifest"
    if not context:
        return None
    for i, key in enumerate(strict):
        if key != m.strict_keys[i * size:(i + 1) * size] and not (m.strict[i] == NODES.encode() and _names_digest() == m.names):
            return None  # the code, a template, the site's folders, a stage's record, a site-wide task's file
    limit = max(1, (len(m.groups) - 1) // SCOPE_SHARE)
    changed = _changed_groups(m.weak_keys, weak, m.wends, _WEAK, limit)
    idents = _changed_groups(m.ident_keys, ident, m.iends, _IDENT, limit)
    if changed is None or idents is None:
        _state["why"] = "changed since the manifest (too many hosts for a scoped run)"
        return None
    changed |= idents
    if 0 in changed and 0 not in idents:  # profiles edited: the hosts they reach, when nothing else of group 0 changed
        try:
            users = m.profile_users()
        except ValueError:
            _state["why"] = "damaged manifest"
            return None
        a, b = m.group_range(m.wends, 0)
        edited = [i for i in range(a, b) if weak[i * _WEAK:(i + 1) * _WEAK] != m.weak_keys[i * _WEAK:(i + 1) * _WEAK]]
        if all(i in users for i in edited):
            changed.discard(0)
            changed.update(g for i in edited for g in users[i])
    if 0 in changed or not all(m.flags[g] for g in changed) or len(changed) > limit:
        return None
    m.weak_keys, m.ident_keys = weak, ident  # every other group as it is now (and was)
    _state["old"] = m
    _state["records"] = records
    _state["scope"] = frozenset(m.groups[g] for g in changed)
    _state["partial"] = True
    return None


def recorded_deps(task: str) -> list[str]:
    """The file_dep doit recorded of ``task`` when it last ran (a scoped run's stand-in declares them:
    doit runs a task whose file_dep list changed; they are unchanged, fast() compared them)."""
    try:
        deps = json.loads(_state["records"][task]).get("deps:") or []
    except (KeyError, ValueError, AttributeError):
        return []
    return [d for d in deps if isinstance(d, str)]


def partial() -> bool:
    """Whether this run began scoped (fast() found a few hosts changed), even if the scope was
    dropped since: its tasks are then the default tasks alone (tasks/everything.py)."""
    return _state["partial"]


def scoped() -> frozenset[str] | None:
    """The hosts this run is scoped to (fast() found only their files changed); None: every host."""
    return _state["scope"]


def scope_taken() -> None:
    """The inventory loaded the scoped hosts alone: the run stays scoped."""
    write_private(TAKEN, f"scoped: {len(_state['scope'])} hosts\n".encode())
    sys.stderr.write(_state["old"].said)  # what the full load would print (the same hosts, the same warnings)
    sys.stderr.flush()
    if _state["tee"] is not None:  # the said of the manifest stays
        sys.stderr = _state["tee"]
        _state["tee"] = None


def scope_dropped(why: str) -> None:
    """The tasks load as usual after all (the inventory said why): as if fast() had found no scope."""
    _state["scope"] = _state["old"] = None
    _state["why"] = why
    _forget_manifest()
    write_private(TAKEN, f"full: {why}\n".encode())


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


def _forget_manifest() -> None:
    for p in (MANIFEST, PATHS):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            _state["broken"] = "the old manifest could not be removed"


def full_begins() -> None:
    """The tasks load (engine.setup): as usual, the manifest goes (a scoped run keeps it, to update
    it; a command that changes nothing keeps it unless its load rewrote the inventory cache);
    what loading reads is stat'd first."""
    if _state["scope"] is None:
        if reads_only(sys.argv):  # a command that changes nothing keeps the manifest (the next fast() compares every key)
            atexit.register(_kept_unless_cache_changed, _inventory_cache_key())
        else:
            _forget_manifest()
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
    _state["tasks"] = _state["old"].rows if _state["old"] is not None else [[name, tasks[name].doc or ""] for name in selected]


def untracked(why: str) -> None:
    """A task wrote files the stat memo cannot account for: no manifest this run."""
    _state["broken"] = _state["broken"] or why


def _host_paths(names: frozenset[str] | None) -> Iterator[tuple[str, list[str], bool]]:
    """(host, paths, whether its work writes them) of what each host's work looked at: its units in every stage, its inventory files."""
    from .inventory import host_paths
    from .stage import unit_paths

    yield from host_paths(names)
    yield from unit_paths()


def finish(ok: bool) -> None:
    """The end of the run (the reporter's complete_run, after doit saved its records)."""
    seen = stat_memo_seen()
    if not ok or not plain(sys.argv) or _state["broken"] or seen is None or "tasks" not in _state:
        if _state["scope"] is not None:
            _forget_manifest()
        return
    keys, idents, forgotten = seen
    for p in forgotten:  # written by a stage and not looked at since: as the run left them
        if p not in keys and p not in idents:
            keys[p] = fresh_key(p)
    before = _state["before"]
    for p, key in before.items():
        if _strict_one(p) != key:  # changed while the run looked at it: the next run loads as usual
            _forget_manifest()
            return
    if _state["scope"] is not None:
        _finish_scoped(keys, idents)
    else:
        _finish_full(keys, idents, before)


def _state_files() -> list[str]:
    return [os.path.join(d, n) for d, _, names in os.walk(layout.STATE) for n in sorted(names)
            if n not in (MANIFEST.name, PATHS.name, TAKEN.name) and not n.startswith(".")]


def _finish_full(keys: dict[str, str], idents: dict[str, str], before: dict[str, bytes]) -> None:
    """The manifest of a run that loaded every task: every path in the group of the one host it
    belongs to, or the site's (also a site-wide task's file: its strict key is compared)."""
    from .stage import release_records

    release_records()  # (peak memory at 100,000 hosts: the stages' records are not needed any more)
    strict = {**before, **{p: _strict_one(p) for p in _state_files()}}
    owner: dict[str, str] = {}
    unscopable: set[str] = set()  # hosts whose work writes a site-wide task's file
    for host, paths, writes in _host_paths(None):
        for p in paths:
            if p in strict:
                owner[p] = ""
                if writes:
                    unscopable.add(host)
            elif owner.setdefault(p, host) != host:
                owner[p] = ""  # two hosts': the site's
    weak: dict[str, list[str]] = {"": []}
    ident: dict[str, list[str]] = {"": []}
    for table, out in ((keys, weak), (idents, ident)):
        get = owner.get
        for p in table:
            g = get(p, "")
            (out.get(g) or out.setdefault(g, [])).append(p)
    del owner  # (peak memory at 100,000 hosts: every table of this run is still alive)
    m = _Manifest()
    m.groups = ["", *sorted((set(weak) | set(ident)) - {""})]
    m.strict = list(strict)  # type: ignore[arg-type]
    m.strict_keys = b"".join(strict.values())
    order_w: list[str] = []
    order_i: list[str] = []
    flags = bytearray()
    for g in m.groups:
        w, i = sorted(weak.get(g, ())), sorted(ident.get(g, ()))
        order_w += w
        order_i += i
        m.wends.append(len(order_w))
        m.iends.append(len(order_i))
        flags.append(1 if g and g not in unscopable else 0)
    del weak, ident
    m.flags = bytes(flags)
    try:
        m.weak_keys = _weak_of([keys[p] for p in order_w])
        m.ident_keys = _idents_of([idents[p] for p in order_i])
    except ValueError:
        return
    m.weak, m.ident = order_w, order_i  # str: encoded when joined (write)
    m.context, m.names = _context(), _names_digest()
    from .inventory import profile_users

    where = {p: i for i, p in enumerate(order_w[:m.wends[0]])}
    group = {name: g for g, name in enumerate(m.groups)}
    m.set_profile_users({where[p]: [group[h] for h in hosts if h in group] for p, hosts in profile_users(None).items() if p in where})
    m.rows = _state["tasks"]
    m.said = "".join(_state["said"])
    m.write(paths_too=True)


def _finish_scoped(keys: dict[str, str], idents: dict[str, str]) -> None:
    """The manifest of a scoped run: the scoped hosts' groups taken again, every other group as fast() found it."""
    m: _Manifest = _state["old"]
    scope = _state["scope"]
    size = _STRICT.size
    strict = [_strict_one(p) for p in m.strict]
    state = os.fsencode(str(layout.STATE)) + b"/"
    changed_strict = [m.strict[i] for i, key in enumerate(strict) if key != m.strict_keys[i * size:(i + 1) * size]]
    for path in changed_strict:
        if not path.startswith(state) and path != NODES.encode():
            _forget_manifest()  # a site-wide task's file changed under a scoped run: the next run loads every task
            return
    site = {os.fsdecode(p) for p in m.weak[:m.wends[0]]} | {os.fsdecode(p) for p in m.ident[:m.iends[0]]}
    strict_set = {os.fsdecode(p) for p in m.strict}
    site |= strict_set
    mine: dict[str, set[str]] = {}
    unscopable: set[str] = set()
    for host, paths, writes in _host_paths(scope):
        if host in scope:
            mine.setdefault(host, set()).update(p for p in paths if p not in site)
            if writes and not strict_set.isdisjoint(paths):
                unscopable.add(host)
    index = {name: g for g, name in enumerate(m.groups) if name in scope}
    if set(index) != set(scope):
        _forget_manifest()
        return
    new: dict[int, tuple[list[bytes], bytes, list[bytes], bytes]] = {}
    flags = bytearray(m.flags)
    for name, g in index.items():
        paths = mine.get(name, set())
        w, i = sorted(p for p in paths if p in keys), sorted(p for p in paths if p in idents)
        try:
            new[g] = ([os.fsencode(p) for p in w], _weak_of([keys[p] for p in w]), [os.fsencode(p) for p in i], _idents_of([idents[p] for p in i]))
        except ValueError:
            _forget_manifest()
            return
        flags[g] = 0 if name in unscopable else 1
    same = all(new[g][0] == m.weak[slice(*m.group_range(m.wends, g))] and new[g][2] == m.ident[slice(*m.group_range(m.iends, g))] for g in new)
    if same:  # each key array as fast() found it, the scoped groups' slices replaced (parts: no copy)
        m.weak_keys = _patched(m.weak_keys, [(m.group_range(m.wends, g), v[1]) for g, v in sorted(new.items())], _WEAK)
        m.ident_keys = _patched(m.ident_keys, [(m.group_range(m.iends, g), v[3]) for g, v in sorted(new.items())], _IDENT)
    else:
        _splice(m, new)
    m.flags = bytes(flags)
    if not _scoped_users(m, index):
        _forget_manifest()
        return
    m.strict_keys = b"".join(strict)
    m.context = _context()
    if m.names and any(p == NODES.encode() for p in changed_strict):
        m.names = _names_digest()  # hosts/nodes/ changed (its names did not: fast() compared them)
    m.write(paths_too=not same)


def _scoped_users(m: _Manifest, index: dict[str, int]) -> bool:
    """The scoped hosts' profiles taken again in ``m``'s profile users (index: host -> group); False when
    a profile of theirs is not in group 0."""
    from .inventory import profile_users, scoped_sources_changed

    if not scoped_sources_changed():  # the profiles each scoped host reaches are as they were
        return True
    users = m.profile_users()
    mine = set(index.values())
    users = {i: [g for g in gs if g not in mine] for i, gs in users.items()}
    where = {os.fsdecode(p): i for i, p in enumerate(m.weak[:m.wends[0]])}
    for path, hosts in profile_users(frozenset(index)).items():
        if path not in where:
            return False
        users.setdefault(where[path], []).extend(index[h] for h in hosts)
    m.set_profile_users(users)
    return True


def _patched(keys: Any, slices: list[tuple[tuple[int, int], bytes]], size: int) -> list[bytes | memoryview]:
    """``keys`` with each ((start, end), new keys) of ``slices`` (in order, the same length) in place, as parts."""
    view, at, out = memoryview(keys), 0, []
    for (a, b), new in slices:
        out += [view[at * size:a * size], new]
        at = b
    out.append(view[at * size:])
    return out


def _splice(m: _Manifest, new: dict[int, tuple[list[bytes], bytes, list[bytes], bytes]]) -> None:
    """The groups ``new`` replaced in ``m`` (their path lists changed): every list and end made again."""
    weak: list[bytes] = []
    ident: list[bytes] = []
    wkeys: list[bytes] = []
    ikeys: list[bytes] = []
    wends, iends = array("Q"), array("Q")
    for g in range(len(m.groups)):
        if g in new:
            w, wk, i, ik = new[g]
        else:
            a, b = m.group_range(m.wends, g)
            w, wk = m.weak[a:b], m.weak_keys[a * _WEAK:b * _WEAK]
            a, b = m.group_range(m.iends, g)
            i, ik = m.ident[a:b], m.ident_keys[a * _IDENT:b * _IDENT]
        weak += w
        ident += i
        wkeys.append(wk)
        ikeys.append(ik)
        wends.append(len(weak))
        iends.append(len(ident))
    m.weak, m.ident, m.weak_keys, m.ident_keys, m.wends, m.iends = weak, ident, b"".join(wkeys), b"".join(ikeys), wends, iends
