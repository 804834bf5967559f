"""doit's command line as cephboot reads it (tasks/cmdline.py) is the one doit reads: every form
replayed through doit's own parsers, and `doit -s A B`, which doit would run as `doit -s A`, refused."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from doit import doit_cmd
from doit.control import TaskControl
from doit.doit_cmd import DoitMain
from doit.task import Task

from conftest import Site

from tasks import cmdline, listing, quiet, selection

DOIT = "/venv/bin/doit"
# Every form that matters: loader options (attached, long, abbreviated, -k), options with values,
# bool options, `--`, variables anywhere, doit's commands, tasks with options and subtasks.
FORMS = [
    [], ["-f", "x/dodo.py", "-d", "site"], ["-fx/dodo.py", "--dir=site"], ["--fi", "x/dodo.py"], ["-k"], ["--"],
    ["-v", "2"], ["-v2"], ["--verbosity=2"], ["-n", "2"], ["-n", "2", "-P", "thread"], ["--db-file", "x"], ["-a"], ["--always"],
    ["-c"], ["-s", "render", "overlay"], ["--single", "render"], ["x=1"], ["render", "x=1"], ["-d", "site", "x=1", "list"],
    ["list"], ["list", "-q"], ["list", "--quiet"], ["list", "--all"], ["list", "render"], ["-d", "site", "list"],
    ["--db-file", "x", "list"], ["info", "render"], ["forget", "provision:zephyr"], ["-d", "site", "forget", "provision:zephyr"],
    ["provision", "--only", "zephyr"], ["provision", "--only=zephyr"], ["provision", "--on", "zephyr"],
    ["provision", "x=1", "--only", "zephyr"], ["render:hosts", "--only", "a", "--only", "b", "overlay:hosts", "--only", "c"],
    ["rollback", "zephyr", "notus"], ["render:*", "overlay"], ["--", "render"], ["-v", "2", "--", "render", "--only", "zephyr"],
]


def _doit_reads(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any], list[str], list[str]]:
    """What doit itself makes of ``args``: (command, the options given, the variables, the words left), caught
    where its command would start executing."""
    seen: dict[str, Any] = {}
    for name, cls in cmdline.COMMANDS.items():
        def execute(self: Any, params: Any, pos: list[str], name: str = name) -> int:
            seen.update(command=name, params=dict(params), defaults=self.get_options(), pos=list(pos))
            return 0
        monkeypatch.setattr(cls, "execute", execute)
    assert DoitMain().run(list(args)) == 0 and seen
    given = {o.name: seen["params"][o.name] for o in seen["defaults"] if seen["params"].get(o.name) != o.default}
    return seen["command"], given, sorted(f"{k}={v}" for k, v in doit_cmd._CMDLINE_VARS.items()), seen["pos"]


@pytest.mark.parametrize("args", FORMS, ids=" ".join)
def test_each_form_is_read_as_doit_reads_it(args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no doit.cfg or pyproject.toml of the project's own
    line = cmdline.read([DOIT, *args])
    assert line is not None and line.understood
    command, given, variables, words = _doit_reads(args, monkeypatch)
    assert (line.command, sorted(line.variables), line.words) == (command, variables, words)
    assert {k: v for k, v in line.options.items() if given.get(k, v) == v} == line.options and set(given) <= set(line.options)


def test_only_the_plain_forms_take_the_fast_paths() -> None:
    """A plain `doit` (quiet.fast): no option but -f/-d and -v (which only prints more of what runs), no
    variable, no task; a plain `doit list` (listing): -f/-d and -q alone."""
    plain = {(), ("-f", "x/dodo.py", "-d", "site"), ("-fx/dodo.py", "--dir=site"), ("--fi", "x/dodo.py"), ("--",),
             ("-v", "2"), ("-v2",), ("--verbosity=2",)}
    listed = {("list",), ("list", "-q"), ("list", "--quiet"), ("-d", "site", "list")}
    for args in FORMS:
        assert quiet.plain([DOIT, *args]) == (tuple(args) in plain), args
        assert listing.plain_list([DOIT, *args]) == (tuple(args) in listed), args
    assert listing.plain_list(["/usr/lib/python3/site-packages/doit/__main__.py", "--dir=site", "list"])
    assert not quiet.plain(["/venv/bin/pytest"]) and not listing.plain_list(["/venv/bin/pytest", "list"])  # doit called from another program


@pytest.mark.parametrize("args", [a for a in FORMS if cmdline.read([DOIT, *a]).command == "run"], ids=" ".join)  # type: ignore[union-attr]
def test_each_task_gets_the_options_doit_gives_it(args: list[str]) -> None:
    """The tasks named and the --only of each, as doit's task selection hands them out (every task here takes --only)."""
    line = cmdline.read([DOIT, *args])
    assert line is not None
    names = {w for w in line.words if not w.startswith("-") and "*" not in w} | {"render:hosts", "overlay:hosts"}
    tasks = {n: Task(n, None, params=[selection.param("")]) for n in names}
    control = TaskControl(list(tasks.values()))
    try:
        expected = [(n, {"only": tasks[n].options["only"]} if "*" not in n and tasks[n].options["only"] else {})
                    for n in control._process_filter(line.words)]
    except Exception:  # doit rejects it: so does cephboot (the normal path)
        expected = None
    got = selection.run_tasks([DOIT, *args])
    if got is not None:  # a pattern stands for the tasks it matches, with no options
        got = [(m, {k: v for k, v in o.items() if v}) for n, o in got for m in (control._get_wild_tasks(n) if "*" in n else [n])]
    assert got == expected


def test_only_reads_every_spelling_doit_takes() -> None:
    assert selection.named("provision", [DOIT, "provision", "--on", "a"]) == ["a"]
    assert selection.named("provision", [DOIT, "provision", "x=1", "--only=a"]) == ["a"]
    assert selection.named("provision", [DOIT, "provision", "--only", "a", "--only", "b"]) == ["b"]  # doit: the last wins
    assert selection.named("provision", [DOIT, "-d", "site", "provision", "--only", "a", "verify", "--only", "b"]) == ["a"]
    assert selection.named("provision", [DOIT, "forget", "provision", "--only", "a"]) == []  # not the run command
    assert selection.named("provision", ["/venv/bin/pytest", "provision", "--only", "a"]) == []


def test_doit_s_with_several_tasks_stops_before_anything_is_touched(the_example_site: Site) -> None:
    """doit 0.37 runs `doit -s render overlay` as `doit -s render` (pydoit/doit#446): one line, exit 2, nothing built."""
    run = the_example_site.doit("-s", "render", "overlay", check=False)
    assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
    assert run.stderr.splitlines() == ["cephboot: doit -s would run render alone, not overlay (doit runs only the first "
                                       "task given to -s: pydoit/doit#446): run one `doit -s TASK` per task, or name them without -s"]
    assert not (the_example_site.build / "hosts").exists()
    refused = the_example_site.doit("-s", "render:hosts", "--only", "zephyr", "overlay:hosts", "--only=zephyr", check=False)
    assert refused.returncode == 2 and "not overlay:hosts (" in refused.stderr
    every = the_example_site.doit("-s", check=False)  # no task: the default tasks, of which doit would run render alone
    assert every.returncode == 2 and "cephboot: doit -s would run render alone, not lint, initrd, overlay, publish, nginx, imagenative (" in every.stderr
    assert not (the_example_site.build / "hosts").exists()
    one = the_example_site.doit("-s", "render:hosts", "--only", "zephyr")  # one task: as doit runs it
    assert one.ran == {"render:zephyr"}, one.stdout
    # doit.cfg where doit starts may say `single` as well: the same run, the same refusal
    here = the_example_site.root.parent / "here"
    here.mkdir()
    (here / "doit.cfg").write_text("[run]\nsingle = yes\n")
    configured = the_example_site.doit("render:hosts", "--only", "zephyr", "overlay:hosts", check=False, cwd=here)
    assert configured.returncode == 2 and "cephboot: doit -s would run render:hosts alone, not overlay:hosts (" in configured.stderr
    assert cmdline.option(cmdline.Line("run", configured={"single": "no"}), "single") is False  # as doit reads it
    assert cmdline.option(cmdline.Line("run", {"single": False}, configured={"single": "yes"}), "single") is False  # the line wins
    assert cmdline.option(cmdline.Line("run", configured={"no_such": "1"}), "no_such") is None
