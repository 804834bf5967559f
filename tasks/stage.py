"""Per-host stages: one doit task does one step (render, lint, overlay, publish) for every host,
and only for the hosts whose inputs changed.

doit spends ~0.25 ms per task on every run just to load it and check it (a Task
object, a state row, a stat of each file, the uptodate callables): at 10,000
hosts, three tasks per host cost ~8 s before any work, and a no-op is that slow.
So a stage is a single task, and it keeps its own record of each host in
build/state/<stage>.json: a short description of the host's settings and the
size, mtime (in ns) and mode of each input file when the host was last done (as make
and doit do, no inode: a copied site, mtimes kept, stays up to date), and the stat
key of each output as the work left it (publish: with inode and ctime, see
fileio.identity_key, so that a published file someone else changed is seen).  The
stage's uptodate check compares that record with the files as they are now (one
stat per file per run, shared with the other stages: fileio.file_key); when
anything differs, the action redoes exactly the hosts that differ and prints one
`  - <task> --only <host>` line (`  - render:hosts --only zephyr`) for each whose work changed something (a command doit takes back).

A host's record is written only after its work succeeded, and the record file is
saved even when a later host fails: a run stopped half-way (a failure, ^C)
redoes only what it had not finished.  A stage made with ``keep_going`` (publish)
does every other host when one fails, then fails naming each failed host.  A
damaged record file redoes every host, with one line saying so.  The stage-wide settings (code, templates,
site settings) are part of the record: when they change, every host is redone.
"""
from __future__ import annotations

import errno
import gc
import inspect
import json
import os
import shutil
import sys
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from doit.exceptions import TaskFailed

from . import engine, quiet, selection
from .failures import environmental, failure
from .layout import STATE
from .fileio import file_key, key_of, open_regular, report, shard_count, stat_memo_forget, stat_memo_off, write_if_changed

STATE_DIR = str(STATE)
LINE = selection.LINE  # prefix of the per-host lines a stage prints (bench.run.tasks_ran reads them)
ONLY = selection.ONLY  # a per-host line is a command doit takes back: `  - render:hosts --only zephyr`
FORMAT = "4"  # of the records: a new format redoes every host once
# what an action returns when it found nothing to change (a host checked again, not redone): no line
UNCHANGED = "unchanged"


class Unit(NamedTuple):
    """One host's share of a stage."""

    inputs: list[str]  # files whose content the work reads
    outputs: list[str]  # files the work writes (their keys after the work are recorded)
    config: str  # everything else about this host that the work depends on
    action: Callable[..., Any] | None  # returns None, or a TaskFailed that stops the stage
    args: tuple[Any, ...] = ()


class Due(NamedTuple):
    """What a stage's check found, handed to its action through ``task.meta`` (which reaches a
    child process with ``doit -n``); `doit info` shows it as one line, whatever the number of hosts."""

    todo: list[str]  # the hosts to redo, in order
    now: dict[str, str]  # the record of every host's inputs as they are now
    outs: dict[str, str]  # the keys of the outputs of every host that is not due

    def __repr__(self) -> str:
        shown = ", ".join(self.todo[:5]) + (", ..." if len(self.todo) > 5 else "")
        return f"<{len(self.todo)} of {len(self.now)} hosts due{': ' + shown if self.todo else ''}>"


@contextmanager
def _no_collection() -> Iterator[None]:
    """No cyclic garbage collection while a stage is checked: its units and records are tables of
    strings, no cycles, and a stage checked after another one ran (collection on since, see
    tasks/engine.py) made tens of collections over them (a one-host edit cost more than a no-op
    at 10,000 hosts); what the check keeps is then frozen out of sight of later collections."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def state_path(stage: str) -> str:
    return f"{STATE_DIR}/{stage.replace(':', '-')}.json"


SHARD_HOSTS = 256  # hosts per shard of a record: a record of more is split (see save_state)
# what this process read or wrote of each stage's shards (all, or those of a scoped run's hosts):
# save_state writes only those that changed
_SHARDS: dict[str, tuple[int, list[Any], dict[int, dict[str, Any]]]] = {}


def _shard_path(stage: str, k: int) -> str:
    return f"{STATE_DIR}/{stage.replace(':', '-')}/{k}.json"


def load_state(stage: str, only: frozenset[str] | None = None) -> dict[str, Any]:
    """The stage's record; none, or a damaged one (said in one line), means every host is redone.

    Up to SHARD_HOSTS hosts, it is one file; beyond, that file names the shards
    (build/state/<stage>/<k>.json, the hosts split by a hash of their names) by the
    generation each was last written at, so that a run that changes a few hosts rewrites
    their shards alone, and a shard the record does not name (a run killed between the
    two) counts as damage.  ``only``: the shards of those hosts are read, no other (a run
    scoped to them: the record then holds them and the hosts that share their shards)."""
    path = state_path(stage)
    _SHARDS.pop(stage, None)
    try:
        data = _read_record(path)
        why = _damage(data)
        if why is None and "shards" not in data and only is not None:  # one file: all of it, to save it whole
            _SHARDS[stage] = (1, [None], {0: {"hosts": dict(data["hosts"]), "outs": dict(data["outs"])}})
        if why is None and "shards" in data:
            count, gens, shards = data["shards"], data["gens"], {}
            data = {"config": data["config"], "ok": data.get("ok", True), "hosts": {}, "outs": {}}
            wanted = range(count) if only is None else sorted({zlib.crc32(n.encode()) % count for n in only})
            for k in wanted:
                shard = _read_record(_shard_path(stage, k))
                why = _damage({"config": "", **shard}) if isinstance(shard, dict) else "a shard is not a JSON object"
                if why is None and shard.get("gen") != gens[k]:
                    why = f"shard {k} is not the one the record names"
                if why is not None:
                    break
                shards[k] = shard
                data["hosts"].update(shard["hosts"])
                data["outs"].update(shard["outs"])
            if why is None:
                _SHARDS[stage] = (count, gens, shards)
    except FileNotFoundError as e:
        if e.filename == path:
            return {"config": None, "hosts": {}, "outs": {}}
        why = "a shard is missing"
    except _NotAFile as e:
        why = str(e)
    except (OSError, ValueError) as e:
        why = f"unreadable: {e.__class__.__name__}"
    if why is None:
        return data
    report(path, f"damaged record ({why}): every host of {stage} is redone")
    return {"config": None, "hosts": {}, "outs": {}, "damaged": why}


class _NotAFile(ValueError):
    """A record's path holds something else (a FIFO, a device, a folder)."""


def _read_record(path: str) -> Any:
    """The JSON of a record file, opened as every file cephboot wrote is (fileio.open_regular): a
    FIFO in its place never blocks a run, a link is never followed; either is damage."""
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise _NotAFile(e.strerror) from None
        raise
    with f:
        return json.load(f)


def _damage(data: Any) -> str | None:
    """What is wrong with a record read from JSON, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not isinstance(data.get("config"), str):
        return "no config"
    if "shards" in data:
        count, gens = data["shards"], data.get("gens")
        if not isinstance(count, int) or count < 1 or count > 1 << 20 or not isinstance(gens, list) or len(gens) != count:
            return "its shards are not named"
        return None
    for part in ("hosts", "outs"):
        table = data.get(part)
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            return f"{part!r} is not a table of strings"
    return None


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def can_save_touched(stage: str, hosts: int) -> bool:
    """Whether save_state may be given the touched hosts alone, for a record of ``hosts`` hosts:
    this process knows the record's shards, and their number stays."""
    before = _SHARDS.get(stage)
    return before is not None and before[0] == shard_count(hosts, SHARD_HOSTS) > 1


def save_state(stage: str, config: str, hosts: dict[str, str], outs: dict[str, str], ok: bool,
               touched: set[str] | None = None, total: int | None = None) -> None:
    """Write the record: ``hosts`` and ``outs`` of every host.  ``touched``: the only hosts whose
    entries may differ from the record as this process last read or wrote it (every other host
    in it, the same; a host gone from it, touched): then only their shards are looked at, and no
    pass is made over the other hosts; ``hosts`` and ``outs`` may then hold only the touched
    hosts, with ``total`` the number of hosts of the record (only when can_save_touched)."""
    os.makedirs(STATE_DIR, exist_ok=True)
    count = shard_count(len(hosts) if total is None else total, SHARD_HOSTS)
    before = _SHARDS.get(stage)
    if touched is not None and before is not None and before[0] == count > 1:
        _save_touched(stage, config, hosts, outs, ok, touched, before)
        return
    assert total is None or total == len(hosts), "the touched hosts alone, but the record's shards are not known"
    if count == 1:
        _SHARDS.pop(stage, None)
        write_if_changed(Path(state_path(stage)), _dump({"config": config, "hosts": hosts, "outs": outs, "ok": ok}), 0o600)
        return
    split: list[dict[str, Any]] = [{"hosts": {}, "outs": {}} for _ in range(count)]
    for name, record in hosts.items():
        k = zlib.crc32(name.encode()) % count
        split[k]["hosts"][name] = record
        if name in outs:
            split[k]["outs"][name] = outs[name]
    same = before is not None and before[0] == count
    gen = int.from_bytes(os.urandom(6), "little")
    gens: list[Any] = list(before[1]) if same else [None] * count  # type: ignore[index]
    os.makedirs(os.path.dirname(_shard_path(stage, 0)), mode=0o700, exist_ok=True)
    for k, shard in enumerate(split):
        old = before[2].get(k) if same else None  # type: ignore[union-attr]
        if old is not None and old["hosts"] == shard["hosts"] and old["outs"] == shard["outs"]:
            continue  # as this process read or wrote it
        gens[k] = gen
        write_if_changed(Path(_shard_path(stage, k)), _dump({"gen": gen, **shard}), 0o600)
    for k, shard in enumerate(split):
        shard["gen"] = gens[k]
    write_if_changed(Path(state_path(stage)), _dump({"config": config, "shards": count, "gens": gens, "ok": ok}), 0o600)
    _SHARDS[stage] = (count, gens, dict(enumerate(split)))


def save_scoped(stage: str, config: str, hosts: dict[str, str], outs: dict[str, str], ok: bool, touched: set[str]) -> None:
    """save_state in a run scoped to a few hosts (load_state(only=...) read their part of the
    record): the entries of ``touched`` updated, every other host's left as it is."""
    before = _SHARDS.get(stage)
    assert before is not None, "a scoped run saves only a record it read"
    if before[0] > 1:
        _save_touched(stage, config, hosts, outs, ok, touched, before)
        return
    whole = before[2][0]
    for name in touched:
        for part, table in (("hosts", hosts), ("outs", outs)):
            if name in table:
                whole[part][name] = table[name]
            else:
                whole[part].pop(name, None)
    write_if_changed(Path(state_path(stage)), _dump({"config": config, "hosts": whole["hosts"], "outs": whole["outs"], "ok": ok}), 0o600)


def _save_touched(stage: str, config: str, hosts: dict[str, str], outs: dict[str, str], ok: bool, touched: set[str],
                  before: tuple[int, list[Any], dict[int, dict[str, Any]]]) -> None:
    """save_state of the hosts ``touched`` alone: their entries updated in the shards as this
    process knows them, and the shards that changed written (with the record that names them)."""
    count, gens, shards = before
    _SHARDS.pop(stage)  # back once written: a failed write leaves nothing half-known
    dirty: set[int] = set()
    for name in touched:
        k = zlib.crc32(name.encode()) % count
        shard = shards[k]
        for part, table in (("hosts", hosts), ("outs", outs)):
            value = table.get(name)
            if shard[part].get(name) == value:
                continue
            if value is None:
                del shard[part][name]
            else:
                shard[part][name] = value
            dirty.add(k)
    gen = int.from_bytes(os.urandom(6), "little")
    for k in sorted(dirty):
        gens[k] = shards[k]["gen"] = gen
        write_if_changed(Path(_shard_path(stage, k)), _dump({"gen": gen, "hosts": shards[k]["hosts"], "outs": shards[k]["outs"]}), 0o600)
    write_if_changed(Path(state_path(stage)), _dump({"config": config, "shards": count, "gens": gens, "ok": ok}), 0o600)
    _SHARDS[stage] = before


def record_outputs(stage: str, name: str, keys: str) -> None:
    """Take ``keys`` as what the stage's work left of host ``name``'s outputs (`doit rollback`
    swaps published files: the swapped files are the publisher's own)."""
    saved = load_state(stage)
    if name in saved["outs"]:
        saved["outs"][name] = keys
        save_state(stage, saved["config"], saved["hosts"], saved["outs"], saved.get("ok", True), {name})


_MADE: list["Stage"] = []  # every stage of this process (the quiet manifest groups their paths by host)


def release_records() -> None:
    """The run is over and doit saved its records: drop what the stages read and worked out of
    theirs (every host's entry, twice over at 100,000 hosts), so that the quiet manifest built
    now takes that memory instead of adding to the process's peak. Their units stay (unit_paths)."""
    _SHARDS.clear()
    for stage in _MADE:
        stage.recorded = {}
        stage._due = None


def unit_paths() -> Iterator[tuple[str, list[str], bool]]:
    """(host, paths, whether its work writes them) of each unit made so far in this process: its inputs, then its outputs."""
    for stage in _MADE:
        for name, unit in (stage._units or {}).items():
            yield name, unit.inputs, False
            yield name, unit.outputs, True


class Stage:
    """The units of one stage, their check (doit's uptodate) and their work (doit's action).

    In a run scoped to a few hosts (tasks/quiet.py: only their files changed since the last
    run), the units are those hosts' alone: the check reads and the work saves only their part
    of the record, and every other host stays as recorded."""

    def __init__(self, name: str, units: Callable[[], dict[str, Unit]], config: str,
                 batch: Callable[[list[str]], Any] | None = None, workers: int = 1,
                 output_key: Callable[[str], str] | None = None, keep_going: bool = False, pass_recorded: bool = False,
                 skipped: Callable[[], dict[str, str]] = dict):
        self.name = name
        self.task = name  # the doit task that runs it (stage_task sets it): what its per-host lines name
        # the key recorded of each output: None, only that it exists (make's way: a rendered
        # file edited by hand stays as edited); file_key (memoized: an output of one stage is
        # an input of the next), so a damaged output is made again; or fileio.identity_key
        # where others can write the outputs
        self.output_key = output_key
        self.keep_going = keep_going  # one host's failure stops only that host
        # the action also gets recorded={output: key as the last run left it} (publish: is
        # a published file still the one it wrote?)
        self.pass_recorded = pass_recorded
        # hosts worked on at once, in threads: for work that waits on the disk (publish's
        # fsyncs), not for Python work (render, overlay), which holds the interpreter lock
        self.workers = workers
        self.skipped = skipped  # hosts that have no unit -> why (`--only` naming one is an error that says so)
        self._make_units = units  # called when the stage is first checked or run: `doit list` never pays for it
        self._units: dict[str, Unit] | None = None
        self.config = f"{FORMAT}|{config}"
        self.batch = batch  # does the work of all due hosts at once (instead of Unit.action per host)
        self._due: Due | None = None
        self.recorded: dict[str, str] = {}  # each host's output keys as the last run left them
        self._removed = False
        self._every = ""  # why every host is due, when it is
        self._ok = True  # what the record says of doit's last run of the stage
        # the hosts not due whose entry in the record changes all the same (removed ones), as due()
        # found them; None when every entry may change
        self._touched: set[str] | None = None
        self._scope = quiet.scoped()  # the hosts of a scoped run, or None
        self._broken = ""  # why a scoped run cannot do this stage's work (its record says every host is due)
        _MADE.append(self)

    @property
    def units(self) -> dict[str, Unit]:
        if self._units is None:
            self._units = self._make_units()
        return self._units

    # doit calls inspect.signature() on every uptodate callable (declared, it costs nothing)
    # and passes the values the last successful run returned
    __signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("task", "values")])

    def due(self, forget: bool = False) -> Due:
        """(hosts to redo, in order; the record of every host's inputs as they are now; the
        keys of the outputs of every host that is not due)."""
        saved = load_state(self.name, self._scope)
        self._ok = saved.get("ok", True)
        forgotten = forget and self._ok
        same = saved["config"] == self.config
        old = saved["hosts"] if same and not forgotten else {}
        self.recorded = saved["outs"]  # also after a forget or a new config: the files are what they are
        self._every = ("no records yet" if saved["config"] is None and "damaged" not in saved else "its record was damaged"
                       if "damaged" in saved else "the stage's settings, code or templates changed"
                       if not same else "doit forgot the stage" if forgotten else "")
        if self._scope is not None:
            if self._every:  # the other hosts too: not a scoped run's work (quiet.fast() rules it out; a record changed since)
                self._broken = self._every
            old = {n: old[n] for n in self._scope if n in old}
        todo: list[str] = []
        now: dict[str, str] = {}
        outs: dict[str, str] = {}
        key = key_of  # file_key without a Python frame for a remembered file: ~250,000 files at 10,000 hosts
        okey = self.output_key
        memo = okey is file_key
        recorded = old.get
        left = saved["outs"].get if old else {}.get
        differs: list[str] = []  # hosts not due whose record is saved otherwise than it was read
        for name, unit in self.units.items():  # a few us per host: written for speed
            # the record: the unit's config and the size, mtime and mode of each input
            s = now[name] = "|".join((unit.config, *map(key, unit.inputs)))
            if recorded(name) != s:
                todo.append(name)
                continue
            if okey is None:
                if not all(map(key, unit.outputs)):
                    todo.append(name)
                    continue
                outs[name] = ""  # what _outputs_now records of it: without it, every shard of the record
                if left(name) != "":  # differed from the one read and was rewritten after any edit
                    differs.append(name)  # recorded otherwise (by an earlier version): saved again
                continue
            o = "|".join(map(key if memo else okey, unit.outputs))
            if left(name) != o:  # an output changed, or went, since the work left it
                todo.append(name)
                continue
            outs[name] = o
        gone = set(old) - set(self.units)
        self._removed = bool(gone) or not same
        # what save_state may look at alone (see _do); None: every host
        self._touched = None if not old else gone.union(differs)
        return Due(todo, now, outs)

    def __call__(self, task: Any, values: dict[str, Any]) -> bool:
        """doit uptodate: True when no host is due and no host was removed.

        When doit has no record of the stage's last success although that run
        succeeded (`doit forget <stage>`), every host is redone: `doit forget
        publish:hosts && doit` looks at every host again, as users of doit expect.
        (doit also drops its record of a task that failed; then the stage's own
        records say which hosts are done.)
        """
        if not engine.memo_managed():  # nobody would end the memo before other tasks write files (tasks/engine.py)
            stat_memo_off()
        with _no_collection():
            self._due = self.due(forget=values.get("records") != state_path(self.name))
        if task is not None:  # for run(), also in a child process (`doit -n N` sends it the task's meta)
            task.meta["due"] = self._due
        if self._broken:
            return False  # the action says why
        only = (getattr(task, "options", None) or {}).get(selection.OPTION)
        if only:  # --only: up to date when those hosts are (an unknown name: run, to say so)
            try:
                chosen = set(self.choose(only))
            except selection.Unknown:
                return False
            return not set(self._due[0]) & chosen
        return not self._due[0] and not self._removed

    def run(self, task: Any, only: str = "") -> TaskFailed | dict[str, str]:
        """doit action: redo each due host; print one line per host done.  ``only``
        (`doit publish:hosts --only zephyr,notus`) limits the run to those hosts: the
        other due hosts stay due (a canary: build everything, publish one host).

        Returns the values doit keeps for the next run's check (see __call__)."""
        # what the check found (task.meta reaches a child process too); not checked (doit -a): every host
        checked = task.meta.get("due")
        if self._broken:
            quiet.untracked("a scoped run found a stage to redo every host")
            return TaskFailed(f"cephboot: {self.task}: every host is due ({self._broken}), but this run was scoped to the "
                              f"{len(self._scope or ())} host(s) whose files changed: run doit again (it loads every host)")
        todo, now, outs = checked if checked is not None else self.due(forget=True)
        task.meta["due"] = self._due = None
        due = set(todo)
        if only:
            try:
                chosen = set(self.choose(only))
            except selection.Unknown as e:
                return TaskFailed(str(e))
            for name in sorted(chosen - due):
                sys.stdout.write(f"  ({self.task}{ONLY}{name}: up to date)\n")
            todo = [n for n in todo if n in chosen]  # the others get no record: still due next run
        return self._do(todo, due, now, outs)

    def redo(self, names: list[str]) -> TaskFailed | None:
        """Do the work of hosts ``names`` now, due or not, and record them as the stage's task
        would: the entry point for code outside the stage (provisioning renders a host again once
        it rewrote its keyring).  Other hosts keep their records; no per-host lines."""
        todo, now, outs = self.due()
        unknown = sorted(set(names) - set(self.units))
        if unknown:
            return TaskFailed(f"cephboot: {self.name}: no host {', '.join(unknown)}")
        # quiet, and the record's "ok" (did doit's last run of the stage succeed?) left as it was
        result = self._do([n for n in self.units if n in set(names)], set(todo) | set(names), now, outs, outside=True)
        return result if isinstance(result, TaskFailed) else None

    def _do(self, todo: list[str], due: set[str], now: dict[str, str], outs: dict[str, str], outside: bool = False) -> TaskFailed | dict[str, str]:
        """Work on ``todo`` and save the record: ``now`` of the hosts done and of those not ``due``."""
        done: set[str] = set()  # the hosts of ``todo`` done (their outputs' keys now in ``outs``)
        failed: TaskFailed | None = None
        ok = False  # stays so after an exception (^C) too
        try:
            failed = self._work_on(todo, done, outs, outside)
            ok = failed is None
        finally:  # also after ^C: what was finished stays finished
            try:
                self._save(due, done, now, outs, self._ok if outside else ok)
            except OSError as e:  # the record as it was stays: the hosts done now are redone next run
                if not environmental(e):
                    raise
                unsaved = failure(f"{self.task}: its record (the hosts done now are done again next run)", e)
                failed = TaskFailed(f"{failed.message}\n{unsaved.message}") if failed else unsaved
            sys.stdout.flush()
        return failed or {"records": state_path(self.name)}

    def _work_on(self, todo: list[str], done: set[str], outs: dict[str, str], outside: bool) -> TaskFailed | None:
        """Do the work of ``todo``, entering each host done in ``done`` and ``outs``; what failed, or None."""
        if self.batch is not None:
            result = self.batch(todo) if todo else None
            if isinstance(result, TaskFailed):
                return result
            for name in todo:
                outs[name] = self._outputs_now(name)
                done.add(name)
            return None
        out = sys.stdout
        failed: list[str] = []
        for name, result in self._work(todo):
            if isinstance(result, TaskFailed):
                if not self.keep_going:
                    return result
                failed.append(result.message.strip())
                continue
            # the record taken before the work (_save): an input edited meanwhile is seen next run
            outs[name] = self._outputs_now(name)
            done.add(name)
            if result != UNCHANGED and not outside:
                out.write(f"{LINE}{self.task}{ONLY}{name}\n")
        if failed:
            return selection.hosts_failed(self.name, failed, len(todo))
        return None

    def _save(self, due: set[str], done: set[str], now: dict[str, str], outs: dict[str, str], ok: bool) -> None:
        """Save the record: each host done and each host not ``due`` with its record ``now`` (the
        record taken before the work: an input edited meanwhile is seen next run) and ``outs``.
        When the check knew which hosts' entries change (the due ones, the removed ones), only
        those are looked at: no pass over every host (a one-host edit at 10,000 hosts)."""
        units = self.units
        if self._scope is not None:
            touched = (self._touched or set()) | due
            hosts = {n: now[n] for n in touched if n in done or (n in units and n not in due)}
            save_scoped(self.name, self.config, hosts, {n: outs[n] for n in hosts if n in outs}, ok, touched)
            return
        kept = len(units) - len(due) + len(done)
        if self._touched is not None and can_save_touched(self.name, kept):
            touched = self._touched | due
            hosts = {n: now[n] for n in touched if n in done or (n in units and n not in due)}
            save_state(self.name, self.config, hosts, {n: outs[n] for n in hosts if n in outs}, ok, touched, kept)
            return
        hosts = {n: now[n] for n in units if n not in due or n in done}
        save_state(self.name, self.config, hosts, {n: outs[n] for n in hosts if n in outs}, ok)

    def choose(self, only: str) -> list[str]:
        """The hosts `--only` names (selection.choose)."""
        return selection.choose(self.task, only, self.units, skipped=self.skipped)

    def _outputs_now(self, name: str) -> str:
        """The keys of a host's outputs as its work left them (fresh stats)."""
        if self.output_key is None:
            return ""
        paths = self.units[name].outputs
        if self.output_key is file_key:
            stat_memo_forget(paths)
        return "|".join([self.output_key(f) for f in paths])

    def _work(self, todo: list[str]) -> Iterator[tuple[str, Any]]:
        """(host, what its action returned) for each host of ``todo`` that was done, in the
        order they finish; stops at the first failure (hosts still running finish first),
        unless the stage keeps going."""
        recorded = (self.recorded or load_state(self.name)["outs"]) if self.pass_recorded and todo else {}

        def work(name: str) -> Any:
            unit = self.units[name]
            try:
                if not self.pass_recorded:
                    return unit.action(*unit.args)
                keys = recorded.get(name, "").split("|")
                return unit.action(*unit.args, recorded=dict(zip(unit.outputs, keys)) if len(keys) == len(unit.outputs) else {})
            except OSError as e:  # a full disk, a read-only mount ...: one line naming the host and the path
                if not environmental(e):
                    raise
                return failure(f"{self.task}: {name}", e)

        if self.workers <= 1 or len(todo) <= 1:
            for name in todo:
                yield name, work(name)
            return
        from concurrent.futures import ThreadPoolExecutor, as_completed  # (with logging, ~3 ms: a one-host run never needs them)

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            running = {pool.submit(work, n): n for n in todo}
            try:
                for future in as_completed(running):
                    result = future.result()  # an exception stops the stage, as it would one by one
                    yield running[future], result
                    if isinstance(result, TaskFailed) and not self.keep_going:
                        return
            finally:
                for future in running:
                    future.cancel()  # not started yet: stays due

    def __repr__(self) -> str:
        """What `doit info <stage>` shows of the check: which hosts are due, and why all are."""
        where = f"records in {state_path(self.name)}"
        if self._due is None:
            return f"<stage {self.name}: {where}>"
        todo = self._due[0]
        why = f" (every host: {self._every})" if self._every else ""
        shown = ", ".join(todo[:5]) + (", ..." if len(todo) > 5 else "")
        return f"<stage {self.name}: {len(todo)} of {len(self.units)} hosts due{why}{': ' + shown if todo else ''}; {where}>"

    def forget_outputs(self) -> None:
        """The stage is about to run (cephboot's reporter calls this, in doit's main process
        also when tasks run in child processes): what is remembered of the files it will
        write is forgotten, so that the next stage's check sees them as they will be."""
        names = self._due[0] if self._due is not None else self.units
        stat_memo_forget([o for name in names for o in self.units[name].outputs])

    def clean(self) -> None:
        """doit clean: remove every output and the record."""
        for unit in self.units.values():
            for o in unit.outputs:
                try:
                    os.unlink(o)
                except FileNotFoundError:
                    pass
        try:
            os.unlink(state_path(self.name))
        except FileNotFoundError:
            pass
        shutil.rmtree(os.path.dirname(_shard_path(self.name, 0)), ignore_errors=True)


def stage_task(basename: str, doc: str, stage: Stage, name: str = "hosts", clean: bool = True, **extra: Any) -> dict[str, Any]:
    """The doit task `<basename>:<name>` that runs ``stage``; ``clean``: `doit clean` removes
    its outputs (never for publish: `doit clean` must not empty the boot tree).  ``name`` "": the
    task is `<basename>` itself (`doit imagenative --only zephyr`)."""
    stage.task = f"{basename}:{name}" if name else basename
    selection.refuse_old_forms(basename, stage.task, sys.argv)  # `doit render:zephyr`: one line saying the form to use
    if "task_dep" in extra and selection.names_unknown(stage.task, sys.argv, stage.choose):
        extra = {**extra, "task_dep": []}  # fail at once, before the stages it depends on run
    return {
        "basename": basename,
        **({"name": name} if name else {}),
        "doc": doc,
        "actions": [stage.run],
        "uptodate": [stage],
        "params": [selection.param("redo only these hosts of the stage; the others stay due")],
        **({"clean": [stage.clean]} if clean else {}),
        "verbosity": 2,  # the per-host lines are the record of what ran
        "meta": {"due": None},  # what the check found, for the action (see Stage.__call__)
        **extra,
    }
