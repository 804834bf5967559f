"""The machine refusing (a full disk, a read-only mount) ends any task with one `cephboot:` line
naming the task, the host and the path, never a traceback (tasks/failures.py); what was there
before stays byte for byte, and the stages keep the record of what they finished."""
from __future__ import annotations

import errno
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from doit.exceptions import TaskFailed

from builtsite import HOSTS, a_built_site, kver, the_built_example  # noqa: F401  (fixtures)
from conftest import PROJECT, Site, copy_site
from mounts import doit_in_full_folder, doit_over_tmpfs
from tasks import failures

MONITOR = ("192.0.2.13", "192.0.2.99")  # the third monitor of hosts/site.yaml: every host's conf.d names it


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rendered(run_stdout: str) -> set[str]:
    return {line.split(" --only ")[1] for line in run_stdout.splitlines() if line.startswith("  - render:hosts --only ")}


def test_a_full_disk_in_render_names_the_host_and_the_path_and_keeps_what_was_done(a_built_site: Site, tmp_path: Path) -> None:
    """Every host is due; the second host's folder is a full tmpfs.  The first host is rendered and
    recorded, the stage stops at the second with one line, the second's files are as they were,
    the third is not touched; the next run renders the second and the third only."""
    site = a_built_site
    order = sorted(HOSTS)  # the inventory's order: by file name
    first, blocked, last = order
    site.edit("site.yaml", MONITOR[0], MONITOR[1])
    folder = site.build / "hosts" / blocked
    before, tree, untouched = files(folder), files(site.build / "publish"), files(site.build / "hosts" / last)
    full = doit_in_full_folder(site, folder, tmp_path / "after", "render:hosts")
    out = full.stdout + full.stderr
    assert full.returncode != 0 and "Traceback" not in out and "PythonAction Error" not in out, out
    said = [line for line in out.splitlines() if line.startswith("cephboot: render:hosts: ")]
    assert len(said) == 1 and said[0].startswith(f"cephboot: render:hosts: {blocked}: build/hosts/{blocked}/"), out
    assert said[0].endswith(": No space left on device"), out
    assert rendered(full.stdout) == {first}
    after = files(tmp_path / "after")
    assert after.pop(".filler") and after == before, "the full folder holds what it held, no temp file left"
    assert files(site.build / "hosts" / last) == untouched and files(site.build / "publish") == tree

    again = site.doit("render:hosts")
    assert rendered(again.stdout) == {blocked, last}, "the first host's record was kept"
    assert MONITOR[1] in (folder / "initramfs-tools/conf.d/cephboot").read_text()


def test_a_read_only_folder_fails_a_task_that_is_no_stage_in_one_line(a_built_site: Site) -> None:
    """nginx writes build/site/nginx.conf; with build/site read-only: one line with the path."""
    a_built_site.doit("forget", "nginx")
    ro = doit_over_tmpfs(a_built_site, a_built_site.build / "site", "ro,size=64k", "-s", "nginx")  # -s: not its task_dep
    out = ro.stdout + ro.stderr
    assert ro.returncode != 0 and "Traceback" not in out, out
    assert "cephboot: nginx: build/site/" in out and ": Read-only file system" in out, out


def in_the_way(run_stdout: str, run_stderr: str, start: str, end: str) -> None:
    """One `cephboot:` line starting with ``start`` and ending with ``end``; no traceback, exit non-zero."""
    out = run_stdout + run_stderr
    assert "Traceback" not in out and "PythonAction Error" not in out, out
    said = [line for line in out.splitlines() if line.startswith(start)]
    assert len(said) == 1 and said[0].endswith(end), out


def test_something_in_the_way_of_a_task_is_one_line_naming_the_path(a_built_site: Site) -> None:
    """A host's build folder a link that loops (render:hosts, overlay, publish:hosts: the other
    hosts still published), a built initrd's path a folder (initrd:<kver>, the temporary not
    named): ELOOP, EISDIR, ENOTDIR are a `cephboot:` line naming the path, never a traceback."""
    site = a_built_site
    loop = site.build / "hosts" / "boreas"  # the first host in the inventory's order
    shutil.rmtree(loop)
    loop.symlink_to("boreas")
    site.edit("site.yaml", MONITOR[0], MONITOR[1])
    run = site.doit("render:hosts", check=False)
    assert run.returncode != 0
    in_the_way(run.stdout, run.stderr, "cephboot: render:hosts: boreas: build/hosts/boreas/", ": Too many levels of symbolic links")
    run = site.doit("-s", "overlay", check=False)
    assert run.returncode != 0
    in_the_way(run.stdout, run.stderr, "cephboot: overlay:hosts: boreas: build/hosts/boreas/", ": Too many levels of symbolic links")
    site.doit("forget", "publish:hosts")  # every host due
    run = site.doit("-s", "publish:hosts", check=False)
    assert run.returncode != 0
    in_the_way(run.stdout, run.stderr, "cephboot: publish:hosts: boreas: build/hosts/boreas/", ": Too many levels of symbolic links")
    assert "cephboot: publish: 1 of 3 hosts failed, every other host is done:" in run.stdout + run.stderr

    base = site.build / "kernels" / kver() / "initrd.img"
    base.unlink()
    (base / "in-the-way").mkdir(parents=True)
    site.doit("forget", f"initrd:{kver()}")
    run = site.doit("-s", f"initrd:{kver()}", check=False)
    assert run.returncode != 0
    in_the_way(run.stdout, run.stderr, f"cephboot: initrd:{kver()}: ", f"build/kernels/{kver()}/initrd.img: Is a directory")
    assert (base / "in-the-way").is_dir() and not [p for p in base.parent.iterdir() if ".tmp" in p.name]


def test_every_action_of_every_task_is_guarded(tmp_path: Path) -> None:
    """Each Python action (and clean action) of every task the dodo defines goes through
    failures.guard: a new task generator without @guarded fails here."""
    site = copy_site(PROJECT, tmp_path / "site")
    script = (
        "import os, runpy, sys\n"
        "from doit.action import PythonAction\n"
        "from doit.loader import load_tasks\n"
        f"os.chdir({str(site.root)!r})\n"
        f"ns = runpy.run_path({str(site.dodo)!r})\n"
        "from tasks.failures import GUARDED\n"
        "seen = bare = 0\n"
        "for t in load_tasks(ns, (), allow_delayed=False):\n"
        "    for a in [*t.actions, *t.clean_actions]:\n"
        "        if isinstance(a, PythonAction):\n"
        "            seen += 1\n"
        "            if not getattr(a.py_callable, GUARDED, False):\n"
        "                bare += 1; print('unguarded:', t.name, a.py_callable)\n"
        "print('actions', seen)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=site.root, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "unguarded" not in done.stdout, done.stdout
    assert int(done.stdout.split("actions ")[1]) >= 20, done.stdout


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.EMFILE,
                                  errno.ENOTDIR, errno.EISDIR, errno.ELOOP])
def test_the_machine_refusing_is_a_line_and_a_bug_keeps_its_traceback(code: int) -> None:
    def write() -> None:
        raise OSError(code, os.strerror(code), "build/hosts/zephyr/x")

    got = failures.guard("render:site", write)()
    assert isinstance(got, TaskFailed) and got.message == f"cephboot: render:site: build/hosts/zephyr/x: {os.strerror(code)}"

    def bug() -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "tasks/nothing")

    with pytest.raises(FileNotFoundError):
        failures.guard("render:site", bug)()


def test_a_guarded_generator_keeps_what_doit_reads_of_it() -> None:
    """doit finds a creator's line, doc, delayed-creation mark and an action's parameters through the wrapper."""
    def act(task, only: str = "") -> None:  # noqa: ANN001
        return None

    def task_x() -> dict:
        """Doc of x."""
        return {"basename": "x", "actions": [(act, [1]), act, "echo shell"]}

    task_x.doit_create_after = "marked"  # type: ignore[attr-defined]
    wrapped = failures.guarded(task_x)
    made = wrapped()
    assert wrapped.__doc__ == "Doc of x." and wrapped.doit_create_after == "marked"  # type: ignore[attr-defined]
    assert inspect.getsourcelines(wrapped)[1] == inspect.getsourcelines(task_x)[1]
    first, second, shell = made["actions"]
    assert list(inspect.signature(first[0]).parameters) == ["task", "only"] and first[1] == [1]
    assert getattr(second, failures.GUARDED) and shell == "echo shell"


def test_doit_reads_a_few_lines_of_a_scoped_creator_not_its_whole_body() -> None:
    """The outermost wrapper (tasks/scope.py) keeps the creator's name, doc and doit's marks, but
    doit finds its line in the wrapper's own few lines: it tokenizes what it reads (~20 us a line),
    and a creator's body is tens of lines in every run that loads tasks."""
    from tasks import render, scope

    wrapped = scope.scoped_tasks(failures.guarded(render.task_render))
    assert wrapped.__name__ == "task_render" and wrapped.__doc__ == render.task_render.__doc__
    assert not hasattr(wrapped, "__wrapped__")
    lines, _ = inspect.getsourcelines(wrapped)
    body, _ = inspect.getsourcelines(render.task_render)
    assert inspect.getsourcefile(wrapped) == inspect.getsourcefile(scope) and len(lines) < 10 < len(body)
    marked = failures.guarded(render.task_render)
    marked.doit_create_after = "marked"  # type: ignore[attr-defined]
    assert scope.scoped_tasks(marked).doit_create_after == "marked"  # type: ignore[attr-defined]
