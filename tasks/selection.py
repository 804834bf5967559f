"""Which hosts a per-host command names: one grammar, one parameter and one error for all of them.

Every command that works host by host (the stages `render:hosts` ... `publish:hosts`, and
`provision`, `verify`, `move-root`, `rollback-root`, `rotate`, `retire`, `rollback`) is one doit
task that takes `--only NAME[,NAME...]`, where `@PROFILE` stands for every host that takes values
from hosts/profiles/PROFILE.yaml (its includes counted) and `*` for every host the command works
on.  The commands that change hosts one by one on the cluster or in the tree (`move-root`,
`rollback-root`, `rotate`, `retire`, `rollback`) run only with `--only`: without it they stop
before anything runs (``refuse_without_hosts``), so a slip of the keyboard never changes the
whole fleet; the others take none as every host.  A task per host would cost doit
~0.25 ms per host on every run just to load (tasks/stage.py).  The per-host lines the commands
print, `  - TASK --only NAME`, are commands doit takes back as they are.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import cmdline
from .failures import ClusterWide, environmental, failure, stop
from .inventory import load_for_tasks
from .model import Host

OPTION = "only"
PROFILE_MARK = "@"  # no host name holds an '@' (tasks/schema.py)
EVERY = "*"  # `--only '*'`: every host the command works on (no host or profile name holds a '*': tasks/schema.py)
LINE = "  - "  # the prefix of a per-host line (bench.run.tasks_ran reads them)
ONLY = f" --{OPTION} "
SHOWN = 8  # names listed in an error; the rest are counted


class Unknown(Exception):
    """A name or profile that no host has; the message lists the valid ones."""


@dataclass(frozen=True)
class Reach:
    """The hosts a per-host command works on, and why it does not work on the others."""

    names: list[str]  # in the inventory's order: those a profile or `*` chooses
    skipped: dict[str, str] = field(default_factory=dict)  # every other host -> why (`has no root.image (hosts/nodes/zephyr.yaml)`)
    # hosts of ``names`` that a profile or `*` chooses (the command says what it does not do
    # there) but that are refused when named alone, as ``skipped`` ones are (why)
    alone: dict[str, str] = field(default_factory=dict)


def param(what: str, required: bool = False) -> dict[str, Any]:
    """The doit parameter of every per-host command; ``what`` says what naming hosts does there;
    ``required``: the command does not run without it (refuse_without_hosts)."""
    return {"name": OPTION, "long": OPTION, "type": str, "default": "",
            "help": f"HOST[,HOST...] (@PROFILE: its hosts, '{EVERY}': every host it works on){' (required)' if required else ''}: {what}"}


def hosts_required(task: str, pattern: str = "") -> str:
    """What a command that runs only on hosts named says when it has none (after `cephboot: `);
    ``pattern``: the task pattern that selected it (doit gives a pattern's tasks no options)."""
    how = f" (the pattern {pattern!r} selects it with no --{OPTION})" if pattern else ""
    return (f"{task}{how} changes each host it runs on, so it runs only on the hosts named: "
            f"`doit {task}{ONLY}HOST[,HOST...]`, `{ONLY.strip()} @PROFILE` (a profile's hosts) or `{ONLY.strip()} '{EVERY}'` (every host it works on)")


def line(task: str, name: str) -> str:
    """The per-host line of ``task`` for host ``name``: a command that `doit` takes back."""
    return f"{LINE}{task}{ONLY}{name}"


def command(task: str, name: str) -> str:
    """`TASK --only NAME`, as a message names the command to run (in backquotes)."""
    return f"{task}{ONLY}{name}"


def words(only: str) -> list[str]:
    return [w.strip() for w in only.split(",") if w.strip()]


def profiles_of(host: Host) -> list[str]:
    """The profiles a host's values come from, its includes expanded (their files are among its sources)."""
    return [Path(src).stem for src in host.sources if src.startswith("hosts/profiles/")]


def members(hosts: Iterable[Host]) -> dict[str, list[str]]:
    """profile -> the names of its hosts, sorted."""
    out: dict[str, list[str]] = {}
    for host in hosts:
        for profile in profiles_of(host):
            out.setdefault(profile, []).append(host.name)
    return {p: sorted(names) for p, names in sorted(out.items())}


def _listed(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "") if names else "none"


def choose(task: str, only: str, names: Iterable[str], hosts: Callable[[], Mapping[str, Host]] = lambda: load_for_tasks().hosts,
           skipped: Callable[[], Mapping[str, str]] = dict, alone: Callable[[], Mapping[str, str]] = dict) -> list[str]:
    """The hosts ``only`` names, in the order of ``names`` (every host the task works on); `*`
    names all of them.  Raises Unknown for a name that is no host, or a host the task does not
    work on (``skipped``: such hosts -> why, `has no image_root (hosts/nodes/zephyr.yaml)`; or
    ``alone``: hosts of ``names`` refused when named by their name, why), or a profile that
    none of its hosts uses, or a profile or `*` that reaches no host the task works on.
    ``hosts`` is called only when a profile is named (it gives each host's sources; by default,
    the inventory the tasks were loaded from); ``skipped`` only when a name is not among
    ``names`` (or nothing is), ``alone`` only when a host is named by its name."""
    known = list(names)
    wanted = words(only)
    chosen: set[str] = set()
    by_profile = members(hosts().values()) if any(w.startswith(PROFILE_MARK) for w in wanted) else {}
    every = set(known)
    by_name = [w for w in wanted if not w.startswith(PROFILE_MARK) and w != EVERY]
    missing = [w for w in by_name if w not in every]
    refused = alone() if by_name else {}
    if missing:
        first = missing[0]
        other = skipped()
        if first in other:
            raise Unknown(f"cephboot: {task}{ONLY}{only}: host {first!r} {other[first]}, and {task} works only on the hosts that do; "
                          f"those are: {_listed(sorted(every - set(refused)))}")
        raise Unknown(f"cephboot: {task}{ONLY}{only}: no host {first!r} in hosts/nodes/ (no {first}.yaml); "
                      f"the hosts are: {_listed(sorted({*known, *other}))}")
    single = [w for w in by_name if w in refused]
    if single:
        raise Unknown(f"cephboot: {task}{ONLY}{only}: host {single[0]!r} {refused[single[0]]}, and {task} works only on the hosts that do; "
                      f"those are: {_listed(sorted(every - set(refused)))}")
    for w in wanted:
        if w == EVERY:
            if not known:
                other = skipped()
                first = next(iter(sorted(other)), "")
                raise Unknown(f"cephboot: {task}{ONLY}{only}: no host is one {task} works on" + (f": host {first!r} {other[first]}" if first else ""))
            chosen.update(known)
        elif w.startswith(PROFILE_MARK):
            if w[1:] not in by_profile:
                raise Unknown(f"cephboot: {task}{ONLY}{only}: no host takes values from a profile {w[1:]!r} "
                              f"(hosts/profiles/{w[1:]}.yaml); the profiles in use are: {_listed(list(by_profile))}")
            reached = [n for n in by_profile[w[1:]] if n in every]
            if not reached:
                first = by_profile[w[1:]][0]
                raise Unknown(f"cephboot: {task}{ONLY}{only}: none of the hosts of profile {w[1:]!r} (hosts/profiles/{w[1:]}.yaml) "
                              f"is one {task} works on: host {first!r} {skipped().get(first, 'is not')}; those it works on: {_listed(sorted(known))}")
            chosen.update(reached)
        else:
            chosen.add(w)
    return [n for n in known if n in chosen]


DETAIL = "    "  # what a per-host command prints of a host goes under its line, indented


def say(text: str) -> None:
    """Print one line of what a per-host command found or did for the host whose line is above it."""
    print(f"{DETAIL}{text}", flush=True)


# the names of the subtasks the stages have besides their per-host one (`render:site`, `lint:static`
# ...; kernels are named by version): `render:site` is that task even if a host is called site
SUBTASKS = frozenset({"hosts", "rendered", "site", "tftp", "static", "base", "grub", "dhcpd", "kea"})


def run_tasks(argv: list[str]) -> list[tuple[str, dict[str, Any]]] | None:
    """The tasks doit's command line ``argv`` (sys.argv) asks `run` to run, each with the options
    given to it, as doit reads them (tasks/cmdline.py); every name is read as a task that may take
    --only (doit refuses the option to one that does not).  None when ``argv`` is not doit's `run`
    command line, or doit would reject it before any task runs."""
    line = cmdline.read(argv)
    if line is None or not line.understood or line.command != "run":
        return None
    return cmdline.tasks(line.words, lambda name: [param("")])


def old_forms(basename: str, argv: list[str], hosts: Callable[[], Iterable[str]]) -> list[str]:
    """The hosts that doit's command line ``argv`` (sys.argv) names for ``basename`` the old ways,
    which doit rejects as unknown tasks: `BASENAME:HOST` (`provision:zephyr`, `render:zephyr`) and
    `BASENAME HOST ...` (`rollback zephyr`), among the words doit reads as tasks and their options
    (not those of its own commands: `doit forget publish:zephyr`).  ``hosts`` (the inventory's
    names) is called only when a word could be one."""
    line = cmdline.read(argv)
    if line is None or line.command != "run":
        return []
    words: list[str] = []
    after = False  # the word before was the task, or a host named after it
    for w in line.words:
        if w.startswith(f"{basename}:"):
            words.append(w.split(":", 1)[1])
        elif after and not w.startswith("-"):
            words.append(w)
            continue
        after = w == basename
    words = [w for w in words if w not in SUBTASKS]
    if not words:
        return []
    known = set(hosts())
    return [w for w in words if w in known or (w.startswith(PROFILE_MARK) and len(w) > 1)]


def refuse_old_forms(basename: str, task: str, argv: list[str]) -> None:
    """Stop doit with the one line that says the form to use when ``argv`` names hosts of
    ``basename`` the old way (old_forms), e.g. ``cephboot: use `doit provision --only zephyr` ...``."""
    named = old_forms(basename, argv, lambda: load_for_tasks().hosts)
    if named:
        raise SystemExit(f"cephboot: use `doit {task}{ONLY}{','.join(dict.fromkeys(named))}` "
                         f"(a per-host command names its hosts with --{OPTION} HOST[,HOST...], @PROFILE for a profile's hosts)")


def without_hosts(basename: str, argv: list[str]) -> str | None:
    """How doit's command line ``argv`` (sys.argv) runs task ``basename`` with no host named: its
    first mention (doit sets a task's options once, at the first) is ``basename`` itself given no
    `--only`, or a task pattern that matches it (doit gives a pattern's tasks no options), and
    doit's config files give it none (``[task:BASENAME]``); None when it does not run it so."""
    line = cmdline.read(argv)
    if line is None or not line.understood or line.command != "run":
        return None
    named = cmdline.tasks(line.words, lambda name: [param("")])
    configured = line.configured.get(f"task:{basename}") or {}
    if named is None or words(str(configured.get(OPTION) or "")):
        return None
    for name, opts in named:
        if name == basename:
            return None if words(opts.get(OPTION, "")) else name
        if "*" in name and fnmatchcase(basename, name):
            return name
    return None


def refuse_without_hosts(basename: str, argv: list[str]) -> None:
    """Stop doit, before any task runs, with the one line that says how to name hosts when
    ``argv`` runs task ``basename``, which changes each host it runs on, with none named."""
    how = without_hosts(basename, argv)
    if how is not None:
        stop(hosts_required(basename, "" if how == basename else how))


def per_host_task(basename: str, doc: str, action: Callable[..., Any], what: str,
                  task_dep: tuple[str, ...] = (), required: bool = False,
                  reach: Callable[[Any], Reach] | None = None) -> dict[str, Any]:
    """The doit task `doit BASENAME [--only HOST,@PROFILE...]` that runs ``action(site, host)`` for
    each host named (every host when none is, unless ``required``: then a run with none stops
    before any task runs), in the inventory's order, every time (the cluster is the state: look
    each run); a host that fails fails alone, a cluster-wide error stops it (run_hosts).
    ``reach``: the hosts the command works on (default: every host).  Loading it reads nothing
    (unless doit's command line names hosts)."""
    refuse_old_forms(basename, basename, sys.argv)
    if required:
        refuse_without_hosts(basename, sys.argv)
    return {
        "basename": basename,
        "doc": doc,
        "actions": [(_run_hosts, [basename, action, reach, required])],
        "params": [param(what, required)],
        # a name that is no host fails at once, not after the stages it depends on ran
        "task_dep": [] if names_unknown(basename, sys.argv, lambda only: _choose(basename, reach, load_for_tasks(), only)) else list(task_dep),
        "uptodate": [False],
        "verbosity": 2,
    }


def _choose(basename: str, reach: Callable[[Any], Reach] | None, site: Any, only: str) -> list[str]:
    """choose() for task ``basename`` among the hosts of the inventory ``site`` it works on (``reach``: every host if None)."""
    if reach is None:
        return choose(basename, only, site.hosts, lambda: site.hosts)
    r = reach(site)
    return choose(basename, only, r.names, lambda: site.hosts, lambda: r.skipped, lambda: r.alone)


def named(basename: str, argv: list[str]) -> list[str]:
    """The value of `--only` given to each mention of task ``basename`` on doit's command line
    ``argv`` (sys.argv), as doit reads it (run_tasks: `--only=A`, `--on A`, the last of two wins;
    doit hands a task's options to its actions only, after its dependencies ran)."""
    return [opts[OPTION] for name, opts in run_tasks(argv) or () if name == basename and opts.get(OPTION)]


def names_unknown(basename: str, argv: list[str], chosen: Callable[[str], list[str]]) -> bool:
    """Whether `--only` names, for task ``basename``, a host or profile that no host has (or that
    the task does not work on: ``chosen``, the task's own choose, raises Unknown then)."""
    values = named(basename, argv)
    if not values:
        return False
    try:
        for only in values:
            chosen(only)
    except Unknown:
        return True
    return False


def hosts_failed(task: str, failed: list[str], of: int) -> TaskFailed:
    """The end of a per-host command or stage that went on past failing hosts: each one and why."""
    rest = ", every other host is done" if len(failed) < of else ""
    return TaskFailed(f"cephboot: {task}: {len(failed)} of {of} hosts failed{rest}:\n" + "\n".join(failed))


def _run_hosts(basename: str, action: Callable[..., Any], reach: Callable[[Any], Reach] | None, required: bool,
               only: str = "") -> TaskFailed | None:
    if required and not words(only):  # a way of running it that refuse_without_hosts did not see (`doit auto`)
        return TaskFailed(f"cephboot: {hosts_required(basename)}")
    site = load_for_tasks()
    try:
        names = _choose(basename, reach, site, only) if only else list(site.hosts)
    except Unknown as e:
        return TaskFailed(str(e))
    return run_hosts(basename, action, site, names)


def run_hosts(basename: str, action: Callable[[Any, Host], TaskFailed | None], site: Any, names: list[str]) -> TaskFailed | None:
    """Run ``action(site, host)`` for each host of ``names``, its line first.  A host the action
    refuses (a TaskFailed: a client someone else made, an image with data ...) fails alone and
    the others go on; an error no other host would escape (ClusterWide: the cluster unreachable,
    the admin refused; the machine refusing, failures.environmental) stops at once.  The end
    names each failed host and why.  ``site``: the inventory (``site.hosts``)."""
    failed: list[str] = []
    for i, name in enumerate(names):
        print(line(basename, name), flush=True)
        try:
            result = action(site, site.hosts[name])
        except ClusterWide as e:
            stop = TaskFailed(f"cephboot: {basename}: {e}")
        except OSError as e:
            if not environmental(e):
                raise
            stop = failure(command(basename, name), e)
        else:
            if isinstance(result, TaskFailed):
                failed.append(result.message.strip())
            continue
        left = names[i + 1:]
        after = f"; stopped before {_listed(left)}" if left else ""
        return TaskFailed(stop.message + after + ("\n" + hosts_failed(basename, failed, i).message if failed else ""))
    return hosts_failed(basename, failed, len(names)) if failed else None
