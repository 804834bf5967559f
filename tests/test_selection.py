"""How a per-host command goes through its hosts (tasks/selection.py): a host that is refused
fails alone, an error no other host would escape stops at once, and the end names each failed host."""
from __future__ import annotations

import errno
from types import SimpleNamespace
from typing import Any

import subprocess
import sys
from pathlib import Path

import pytest
from doit.exceptions import TaskFailed

from conftest import PROJECT, Site, copy_site
from tasks.failures import ClusterWide
from tasks.selection import SUBTASKS, old_forms, run_hosts

NAMES = ["a", "b", "c", "d"]


def a_site() -> Any:
    return SimpleNamespace(hosts={n: SimpleNamespace(name=n) for n in NAMES})


def test_a_refused_host_fails_alone_and_the_end_names_each_failed_host(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def action(site: Any, host: Any) -> TaskFailed | None:
        done.append(host.name)
        if host.name in ("a", "c"):
            return TaskFailed(f"provision --only {host.name}: host {host.name}: client.{host.name} exists and cephboot did not create it")
        return None

    got = run_hosts("provision", action, a_site(), NAMES)
    assert done == NAMES, "every host was tried"
    assert isinstance(got, TaskFailed)
    assert got.message.splitlines() == [
        "cephboot: provision: 2 of 4 hosts failed, every other host is done:",
        "provision --only a: host a: client.a exists and cephboot did not create it",
        "provision --only c: host c: client.c exists and cephboot did not create it",
    ]
    assert capsys.readouterr().out.splitlines() == [f"  - provision --only {n}" for n in NAMES]


def test_every_host_done_is_success() -> None:
    assert run_hosts("verify", lambda site, host: None, a_site(), NAMES) is None


def test_a_cluster_wide_error_stops_at_once_and_names_what_had_failed_before(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def action(site: Any, host: Any) -> TaskFailed | None:
        done.append(host.name)
        if host.name == "a":
            return TaskFailed("provision --only a: host a: refused")
        if host.name == "b":
            raise ClusterWide("the cluster did not answer its admin (192.0.2.11): `ceph fsid` exited 1: auth failed")
        return None

    got = run_hosts("provision", action, a_site(), NAMES)
    assert done == ["a", "b"], "nothing after the cluster-wide error"
    assert isinstance(got, TaskFailed)
    assert got.message.splitlines() == [
        "cephboot: provision: the cluster did not answer its admin (192.0.2.11): `ceph fsid` exited 1: auth failed; stopped before c, d",
        "cephboot: provision: 1 of 1 hosts failed:",
        "provision --only a: host a: refused",
    ]
    assert "  - provision --only c" not in capsys.readouterr().out


def test_the_machine_refusing_stops_at_once_and_a_bug_is_not_hidden() -> None:
    def full(site: Any, host: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", f"build/provision/{host.name}.img")

    got = run_hosts("provision", full, a_site(), NAMES)
    assert isinstance(got, TaskFailed)
    assert got.message == "cephboot: provision --only a: build/provision/a.img: No space left on device; stopped before b, c, d"

    def bug(site: Any, host: Any) -> None:
        raise KeyError("rbd")

    with pytest.raises(KeyError):
        run_hosts("provision", bug, a_site(), NAMES)


@pytest.fixture(scope="module")
def the_example_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The example site, copied (nothing built: these runs stop while doit loads the tasks)."""
    return copy_site(PROJECT, tmp_path_factory.mktemp("old-forms") / "site")


@pytest.mark.parametrize(("old", "new"), [
    (["provision:zephyr"], "provision --only zephyr"),
    (["verify:notus"], "verify --only notus"),
    (["move-root:zephyr"], "move-root --only zephyr"),
    (["rollback-root:zephyr"], "rollback-root --only zephyr"),
    (["rotate:boreas", "rotate:notus"], "rotate --only boreas,notus"),
    (["retire:zephyr"], "retire --only zephyr"),
    (["render:zephyr"], "render:hosts --only zephyr"),
    (["lint:zephyr"], "lint:rendered --only zephyr"),
    (["overlay:zephyr"], "overlay:hosts --only zephyr"),
    (["publish:zephyr"], "publish:hosts --only zephyr"),
    (["rollback", "zephyr", "notus"], "rollback --only zephyr,notus"),
    (["provision", "zephyr"], "provision --only zephyr"),
])
def test_an_old_way_of_naming_a_host_gets_one_line_with_the_form_to_use(the_example_site: Site, old: list[str], new: str) -> None:
    run = the_example_site.doit(*old, check=False)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[0].startswith(f"cephboot: use `doit {new}` ("), run.stderr
    assert len(run.stderr.splitlines()) == 1 and not run.stdout.strip(), run.stdout + run.stderr


def test_the_form_a_message_names_is_one_doit_takes(the_example_site: Site) -> None:
    """What the line says to use runs (render touches neither the cluster nor the tree)."""
    run = the_example_site.doit("render:zephyr", check=False)
    new = run.stderr.split("`doit ")[1].split("`")[0].split()
    done = the_example_site.doit(*new)
    assert "  - render:hosts --only zephyr" in done.stdout.splitlines(), done.stdout


def test_old_forms_reads_only_what_doit_would_reject() -> None:
    hosts = ["zephyr", "site", "notus"]
    doit = "/venv/bin/doit"
    assert old_forms("render", [doit, "render:site", "render:hosts", "--only", "zephyr"], lambda: hosts) == []  # tasks, and the new form
    assert old_forms("publish", [doit, "forget", "publish:zephyr"], lambda: hosts) == []  # doit's own command: its own message
    assert old_forms("publish", [doit, "-d", "site", "x=1", "forget", "publish:zephyr"], lambda: hosts) == []  # however it is reached
    assert old_forms("rollback", [doit, "rollback", "--only", "zephyr"], lambda: hosts) == []
    assert old_forms("rollback", [doit, "rollback", "zephyr", "-v", "2"], lambda: hosts) == ["zephyr"]
    assert old_forms("rollback", [doit, "-v", "2", "rollback", "x=1", "zephyr"], lambda: hosts) == ["zephyr"]
    assert old_forms("provision", [doit, "provision:@compute", "provision:nobody"], lambda: hosts) == ["@compute"]
    assert old_forms("provision", ["/venv/bin/pytest", "provision:zephyr"], lambda: hosts) == []  # not doit's command line

    def unread() -> list[str]:
        raise AssertionError("the inventory is read only when a word could be a host")

    assert old_forms("render", [doit, "render:hosts", "lint", "publish:site"], unread) == []


def test_no_subtask_the_dodo_defines_is_read_as_a_host(the_example_site: Site) -> None:
    """selection.SUBTASKS holds every subtask name but kernels' (`render:site` stays that task for
    a site with a host called site); a new subtask name must be added there."""
    from builtsite import kver

    out = the_example_site.doit("list", "--all", "--quiet").stdout
    subs = {line.split()[0].split(":", 1)[1] for line in out.splitlines() if ":" in line.split()[0]}
    assert subs and subs - {kver()} <= SUBTASKS, subs - SUBTASKS


# Every per-host command, as `doit list` names it: one task taking --only (imagenative's hosts have image_root).
PER_HOST = {"render:hosts", "lint:rendered", "overlay:hosts", "publish:hosts", "imagenative",
            "provision", "verify", "move-root", "rollback-root", "rotate", "retire", "rollback"}
LOAD = (
    "import os, runpy, sys\n"
    "from doit.loader import load_tasks\n"
    "os.chdir(sys.argv[1])\n"
    "tasks = load_tasks(runpy.run_path(sys.argv[2]), (), allow_delayed=False)\n"
)


def test_every_per_host_line_pastes_back_into_doit(the_example_site: Site) -> None:
    """For every task that takes --only, the line selection.line() prints for a host is parsed by
    doit, with that task's own options, as that task with --only HOST and nothing left over."""
    script = LOAD + (
        "from doit.cmdparse import CmdOption, TaskParse\n"
        "from tasks.selection import OPTION, line\n"
        "for t in tasks:\n"
        "    if any(p['name'] == OPTION for p in t.params):\n"
        "        words = line(t.name, 'zephyr').split()\n"
        "        assert words[0] == '-' and words[1] == t.name, words\n"
        "        opts, rest = TaskParse([CmdOption(p) for p in t.params]).parse(words[2:])\n"
        "        print(t.name, opts[OPTION], rest)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(the_example_site.root), str(the_example_site.dodo)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    parsed = {line.split()[0]: line.split(None, 1)[1] for line in done.stdout.splitlines()}
    assert set(parsed) == PER_HOST, "a new per-host command: add it to PER_HOST (and to this test's runs)"
    assert set(parsed.values()) == {"zephyr []"}


def test_every_say_call_in_tasks_binds_to_say() -> None:
    """say() takes one line; a call that would raise TypeError (say(..., flush=True) did, in
    paths only a cluster reaches) is found here, whatever the path."""
    import ast
    import inspect

    from tasks.selection import say

    calls = 0
    for path in sorted((PROJECT / "tasks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "say":
                calls += 1
                args = [None] * len(node.args)
                kwargs = {k.arg: None for k in node.keywords if k.arg}
                try:
                    inspect.signature(say).bind(*args, **kwargs)
                except TypeError as e:
                    raise AssertionError(f"{path.name}:{node.lineno}: say() {e}") from None
    assert calls >= 10


def test_each_host_line_comes_before_what_is_said_of_it_through_a_pipe(tmp_path: Path) -> None:
    """doit's stdout is a pipe under tests, CI and `| tee`: each host's line and what is said of
    it come out in order, also when a program the action runs writes to the same stdout."""
    script = (
        "import subprocess, sys\n"
        "from types import SimpleNamespace\n"
        "from tasks.selection import run_hosts, say\n"
        "def act(site, host):\n"
        "    say(f'found {host.name}')\n"
        "    subprocess.run(['echo', f'    a program ran for {host.name}'], check=True)\n"
        "site = SimpleNamespace(hosts={n: SimpleNamespace(name=n) for n in ('zephyr', 'notus')})\n"
        "run_hosts('verify', act, site, ['zephyr', 'notus'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "  - verify --only zephyr", "    found zephyr", "    a program ran for zephyr",
        "  - verify --only notus", "    found notus", "    a program ran for notus",
    ]


def test_stage_and_command_lines_are_printed_and_run_as_pasted(tmp_path: Path) -> None:
    """Real runs: the render stage prints a line per host it rendered; move-root of a profile says
    under a stateless host's line how it moves (no cluster needed); each printed line, pasted
    back, runs: the stage's for that host alone, move-root's refuses the stateless host alone, saying why."""
    site = copy_site(PROJECT, tmp_path / "site")
    render = site.doit("render:hosts")
    lines = [line for line in render.stdout.splitlines() if line.startswith("  - render:hosts")]
    assert lines == [f"  - render:hosts --only {h}" for h in ("boreas", "notus", "zephyr")], render.stdout
    (tmp_path / "src").mkdir()
    (site.hosts / "images").mkdir()
    (site.hosts / "images" / "base.yaml").write_text(f"rootfs: {{source: {tmp_path / 'src'}}}\n")
    site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", "profiles: [rack-a]\nroot: {image: base, mode: stateless, snapshot: '0123456789abcdef'}")
    moved = site.doit("move-root", "--only", "@rack-a")
    out = moved.stdout.splitlines()
    assert [line for line in out if line.startswith("  - move-root")] == ["  - move-root --only zephyr"], moved.stdout
    head = out.index("  - move-root --only zephyr")
    assert out[head + 1] == ("    stateless, root is golden-base/base-0123456789abcdef read-only, nothing to move here: "
                             "change root.snapshot (hosts/nodes/zephyr.yaml) and run `doit`"), moved.stdout
    site.edit("site.yaml", "192.0.2.13", "192.0.2.99")  # every host due again
    again = site.doit(*lines[2].split()[1:])
    assert [line for line in again.stdout.splitlines() if line.startswith("  - ")] == [lines[2]], again.stdout
    pasted = site.doit(*out[head].split()[1:], check=False)
    assert pasted.returncode == 1 and pasted.tasks == {"move-root"}, pasted.stdout + pasted.stderr
    assert ("cephboot: move-root --only zephyr: host 'zephyr' has no root of its own (stateless: it boots golden-base/base-0123456789abcdef "
            "read-only; root.snapshot (hosts/nodes/zephyr.yaml) moves it and rolls it back, at its next boot after `doit`), "
            "and move-root works only on the hosts that do; those are: none") in pasted.stdout.splitlines(), pasted.stdout


@pytest.mark.parametrize(("task", "only"), [(t, ["--only", "nobody"]) for t in sorted(PER_HOST)] + [
    # every spelling doit takes (tasks/cmdline.py)
    ("publish:hosts", ["--only=nobody"]), ("provision", ["--on", "nobody"]), ("verify", ["x=1", "--only", "nobody"]),
    ("render:hosts", ["--only", "zephyr", "--only", "nobody"]),
])
def test_every_per_host_task_refuses_a_name_that_is_no_host_alike(the_example_site: Site, task: str, only: list[str]) -> None:
    """`--only` naming no host: the same one line from every per-host task, before any task it
    depends on runs (imagenative too, on a site where no host has image_root), however the option is spelled."""
    run = the_example_site.doit(task, *only, check=False)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
    assert (f"cephboot: {task} --only nobody: no host 'nobody' in hosts/nodes/ (no nobody.yaml); "
            "the hosts are: boreas, notus, zephyr") in run.stdout.splitlines(), run.stdout
    assert run.tasks == {task}, "nothing ran before it"


@pytest.mark.parametrize(("only", "line"), [
    ("zephyr", "cephboot: imagenative --only zephyr: host 'zephyr' has no image_root (hosts/nodes/zephyr.yaml), "
               "and imagenative works only on the hosts that do; those are: none"),
    ("@rack-a", "cephboot: imagenative --only @rack-a: none of the hosts of profile 'rack-a' (hosts/profiles/rack-a.yaml) is one "
                "imagenative works on: host 'boreas' has no image_root (hosts/nodes/boreas.yaml); those it works on: none"),
])
def test_imagenative_only_a_host_without_image_root_is_an_error(the_example_site: Site, only: str, line: str) -> None:
    """No host of the example site has image_root: naming one (or its profile) says so, non-zero, nothing run."""
    run = the_example_site.doit("imagenative", "--only", only, check=False)
    assert run.returncode == 1 and line in run.stdout.splitlines(), run.stdout + run.stderr
    assert run.tasks == {"imagenative"}


def test_imagenative_only_names_the_hosts_with_image_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One host has image_root: another host named is refused (naming the one there is) before
    render:hosts runs; its profile, shared with that host, chooses that host alone."""
    site = copy_site(PROJECT, tmp_path / "site")
    (tmp_path / "image").mkdir()
    site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", f"profiles: [rack-a]\nimage_root: {tmp_path / 'image'}")
    run = site.doit("imagenative", "--only", "boreas", check=False)
    assert run.returncode == 1 and run.tasks == {"imagenative"}, run.stdout + run.stderr
    assert ("cephboot: imagenative --only boreas: host 'boreas' has no image_root (hosts/nodes/boreas.yaml), "
            "and imagenative works only on the hosts that do; those are: zephyr") in run.stdout.splitlines(), run.stdout

    from tasks import inventory
    from tasks.imagenative import imagenative_stage

    monkeypatch.chdir(site.root)  # the inventory a profile's hosts are taken from (load_for_tasks)
    stage = imagenative_stage(inventory.load_for_tasks())
    stage.task = "imagenative"
    assert stage.choose("@rack-a") == ["zephyr"] and stage.choose("zephyr") == ["zephyr"]
