"""doit's command line as doit itself reads it: the one parser of sys.argv for every part of cephboot that looks at it.

doit (doit_cmd.DoitMain.run, cmdparse, control.TaskControl._process_filter) reads its
command line in this order, and so does ``read``, with doit's own option tables:

1. the task loader's options (-f/--file, -d/--dir, -k/--seek-file), getopt-style, up to the
   first word that is not one of them (when another option comes first, they are left to
   the command, which takes them too);
2. every word that does not start with '-' and holds '=' is a variable (`name=value`),
   wherever it stands;
3. the first word left is the command when it is one of doit's (`list`, `info` ...); else
   the command is `run`;
4. the command's options, getopt-style (long ones by any unique prefix, `--` ends them);
5. the words left: for `run`, the tasks to run, each task name followed by its own
   options (``tasks``).

doit also takes options from its config files (doit.cfg, pyproject.toml's [tool.doit]) in the
folder where it started: their GLOBAL section and the command's own set defaults, a
``task:NAME`` section a task's options. ``read`` names them (``Line.configured``), found on the
running DoitMain, so that a command line that looks plain but is not is never taken for one.

A form this module does not know (a command line that is not doit's own, a plugin command)
is never read as a plain one: the caller takes its normal path.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from doit.cmd_base import DodoTaskLoader, DoitCmdBase
from doit.cmdparse import CmdOption, CmdParse, CmdParseError, TaskParse
from doit.doit_cmd import DoitMain

COMMANDS = {cls.get_name(): cls for cls in DoitMain.DOIT_CMDS}
PLUGIN_COMMANDS = frozenset({"auto"})  # doit's own plugin (doit-auto): a command whose options are not read here
_LOADER = CmdParse([CmdOption(o) for o in DodoTaskLoader.cmd_options])
_PARSERS: dict[str, CmdParse] = {}
# the loader's options that leave the site the folder doit runs in (-f dodo.py, -d SITE; not -k, which seeks dodo.py upwards)
LOADER_PLAIN = frozenset({"dodoFile", "cwdPath"})


@dataclass
class Line:
    """One doit command line: ``command`` with the ``options`` given on it (by name, as doit names
    them: ``file``, ``verbosity``, ``single`` ...), its ``variables``, and the words after its
    options (``words``: for `run`, the tasks and their options)."""

    command: str
    options: dict[str, Any] = field(default_factory=dict)
    variables: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    understood: bool = True  # False: a form read no further (a plugin command, options doit rejects)
    configured: dict[str, Any] = field(default_factory=dict)  # options doit's config files set for the command (``configured``)


def is_doit(argv: list[str]) -> bool:
    """Whether ``argv`` is doit's own command line (`doit ...`, `python -m doit ...`), not a program that calls doit."""
    if not argv:
        return False
    name = os.path.basename(argv[0])
    return name == "doit" or (name == "__main__.py" and os.path.basename(os.path.dirname(argv[0])) == "doit")


def configured(command: str) -> dict[str, Any]:
    """The options that doit's config files, as the running doit read them (DoitMain.config), set
    for ``command`` (its GLOBAL section's, then the command's), with their values as written;
    ``task:NAME`` for each task's section. Empty when no DoitMain runs this process (then no
    config file was read)."""
    frame = sys._getframe(1)
    while frame is not None:
        main = frame.f_locals.get("self")
        if isinstance(main, DoitMain):
            config = main.config
            return {**config.get("GLOBAL", {}), **config.get(command, {}),
                    **{name: values for name, values in config.items() if name.startswith("task:") and values}}
        frame = frame.f_back
    return {}


def option(line: Line, name: str) -> Any:
    """The value of option ``name`` for ``line``'s command: given on the line, else as doit's config
    files set it (converted as doit converts it), else None."""
    if name in line.options:
        return line.options[name]
    if name not in line.configured:
        return None
    try:
        return _parser(line.command)._options[name].str2type(line.configured[name])
    except (CmdParseError, KeyError):  # not an option of the command: doit ignores it too
        return None


def _parser(command: str) -> CmdParse:
    if command not in _PARSERS:
        cls = COMMANDS[command]
        opts = cls.cmd_options
        if issubclass(cls, DoitCmdBase):
            opts = DoitCmdBase.base_options + DodoTaskLoader.cmd_options + tuple(opts)
        _PARSERS[command] = CmdParse([CmdOption(o) for o in opts])
    return _PARSERS[command]


def read(argv: list[str]) -> Line | None:
    """``argv`` (sys.argv) as doit reads it; None when it is not doit's own command line."""
    if not is_doit(argv):
        return None
    args = argv[1:]
    if args and args[0] in ("--version", "--help"):
        return Line(args[0], understood=False)
    try:
        loader, rest = _LOADER.parse_only(args)
    except CmdParseError:
        loader, rest = {}, args
    variables = [a for a in rest if a[:1] != "-" and "=" in a]
    rest = [a for a in rest if a[:1] == "-" or "=" not in a]
    command = "run"
    if rest and (rest[0] in COMMANDS or rest[0] in PLUGIN_COMMANDS):
        command = rest.pop(0)
    if command not in COMMANDS:
        return Line(command, dict(loader), variables, rest, understood=False)
    try:
        options, words = _parser(command).parse_only(rest)
    except CmdParseError:  # doit stops with its own message before any task loads
        return Line(command, dict(loader), variables, rest, understood=False)
    return Line(command, {**loader, **options}, variables, words, configured=configured(command))


def tasks(words: list[str], params: Callable[[str], Iterable[dict[str, Any]] | None]) -> list[tuple[str, dict[str, Any]]] | None:
    """The tasks ``words`` (a `run` command line's words) name, each with the options given to it,
    as doit's task selection reads them: a task name (``params(name)``: its params, None when the
    name is no task, a target) takes the options right after it, getopt-style (given again, the last
    wins); a pattern with '*' takes none.  None when doit would reject them (an option a task does not take)."""
    out: list[tuple[str, dict[str, Any]]] = []
    seq = list(words)
    while seq:
        name = seq.pop(0)
        opts: dict[str, Any] = {}
        taken = None if "*" in name else params(name)
        if taken is not None:
            try:
                opts, seq = TaskParse([CmdOption(p) for p in taken]).parse_only(seq)
            except CmdParseError:
                return None
        out.append((name, opts))
    return out


def _single_runs_one() -> bool:
    """Whether this doit runs only the first task named after `-s` (pydoit/doit#446, doit 0.34 to
    at least 0.37): it reads the task selection twice, and a task's options only once
    (Task.init_options returns None the second time, which ends the selection)."""
    from doit.task import Task

    probe = Task("probe", None)
    probe.init_options(["next"])
    return probe.init_options(["next"]) is None


def single_drops(argv: list[str], named: list[tuple[str, dict[str, Any]]] | None, default: list[str]) -> tuple[str, list[str]] | None:
    """For a `doit -s A B ...` command line (``named``: its tasks, ``tasks``; none: the ``default``
    tasks), the task this doit would run and those it would silently not: every name after the
    first that is no pattern.  None when it runs what was asked."""
    line = read(argv)
    if line is None or line.command != "run" or not option(line, "single") or named is None:
        return None
    names = [n for n, _ in named] or list(default)
    first = next((i for i, n in enumerate(names) if "*" not in n), len(names))
    if first >= len(names) - 1 or not _single_runs_one():
        return None
    return names[first], names[first + 1:]
