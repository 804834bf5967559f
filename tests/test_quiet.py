"""A plain no-op `doit` from the manifest of the last run (tasks/quiet.py): taken only when nothing changed.

Real doit processes on a copy of the built example site.  Which way a run loaded its tasks is
read from build/state/quiet.last ("fast", or "full: <why>"), not from timings."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from builtsite import STAGES, a_built_site, kver, the_built_example  # noqa: F401  (fixtures)
from conftest import PROJECT, DoitRun, Site, copy_project

from tasks import quiet


def taken(site: Site) -> str:
    return (site.root / quiet.TAKEN).read_text().strip()


def quiet_site(site: Site) -> DoitRun:
    """Plain `doit` until a run takes the fast path (the first writes the manifest after the
    runs that did other work); that run's outcome."""
    for _ in range(3):
        run = site.doit()
        if taken(site) == "fast":
            assert run.stdout == "" and run.ran == set(), run.stdout
            return run
    raise AssertionError(f"no plain doit took the fast path: {taken(site)}")


def test_a_noop_after_a_noop_loads_no_host_and_prints_what_the_full_noop_prints(a_built_site: Site) -> None:
    fast = quiet_site(a_built_site)
    manifest = a_built_site.root / quiet.MANIFEST
    assert manifest.stat().st_mode & 0o777 == 0o600
    manifest.unlink()
    full = a_built_site.doit()
    assert taken(a_built_site) == "full: no manifest" and full.ran == set()
    assert (full.stdout, full.stderr) == (fast.stdout, fast.stderr)
    assert a_built_site.doit().returncode == 0 and taken(a_built_site) == "fast"
    a_built_site.doit("-v", "2")  # prints more of what runs (nothing): as plain
    assert taken(a_built_site) == "fast" and manifest.exists()
    a_built_site.doit("render")  # another command line that may run tasks: loads as usual, and the manifest goes
    assert taken(a_built_site) == "full: not a plain doit" and not manifest.exists()


@pytest.mark.parametrize("command", [["info", "render:site"], ["list", "--all"], ["list", "render"], ["help", "render:site"]])
def test_a_command_that_changes_nothing_keeps_a_manifest_that_holds(a_built_site: Site, command: list[str]) -> None:
    quiet_site(a_built_site)
    manifest = a_built_site.root / quiet.MANIFEST
    before = manifest.read_bytes()
    assert a_built_site.doit(*command).stdout
    assert taken(a_built_site) == "full: not a plain doit" and manifest.read_bytes() == before
    assert a_built_site.doit().returncode == 0 and taken(a_built_site) == "fast"


@pytest.mark.parametrize("command", [["info", "render:site"], ["list", "--all"]])
def test_a_command_that_changes_nothing_after_an_edit_drops_the_manifest(a_built_site: Site, command: list[str]) -> None:
    """Its load takes the edit into the inventory cache, which a scoped run compares with: the next
    plain doit must load every task and redo the routes the edit changed, leaving nothing for a full load."""
    quiet_site(a_built_site)
    a_built_site.edit("nodes/zephyr.yaml", '"52:54:00:b1:00:01"', '"52:54:00:b1:00:09"')
    shown = a_built_site.doit(*command, check=False)  # `doit info` exits 1: the task is due
    assert "render:site" in shown.stdout and "Traceback" not in shown.stderr, shown.stdout + shown.stderr
    assert not (a_built_site.root / quiet.MANIFEST).exists()
    run = a_built_site.doit()
    assert taken(a_built_site) == "full: no manifest" and "render:site" in run.ran, run.stdout
    assert quiet_site(a_built_site).ran == set()


def _published_tampered(site: Site) -> None:
    """Same size and mtime, other bytes, another inode and ctime: only the publisher's identity key sees it."""
    p = site.build / "publish/hosts/notus/boot.ipxe"
    st = p.stat()
    tmp = p.with_name("swap")
    data = p.read_bytes()
    tmp.write_bytes(data[:-2] + b"#\n")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, p)


def _output_rewritten(site: Site) -> None:
    p = site.build / "hosts/notus/overlay.cpio"
    p.write_bytes(p.read_bytes() + b"\0")


def _host_added(site: Site) -> None:
    (site.hosts / "nodes/eurus.yaml").write_text('nics: {ceph: {macs: ["52:54:00:a4:00:01"], address: 192.0.2.24/24}}\n')
    from tasks import examplekeys

    examplekeys.ensure(site.root)


def _link_planted(site: Site) -> None:
    (site.build / "publish/hosts/boreas/leak").symlink_to("/etc/passwd")


# each change, the way the next plain `doit` loads (a run scoped to the one host whose files
# changed, or every task), and work it must do
CHANGES: dict[str, tuple[Callable[[Site], None], str, set[str]]] = {
    "host edited": (lambda s: s.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset"), "scoped: 1 hosts", {"render:notus"}),
    "host added": (_host_added, "full:", {"render:eurus", "publish:eurus"}),
    "host removed": (lambda s: (s.hosts / "nodes/notus.yaml").unlink(), "full:", {"render:site"}),
    "profile edited": (lambda s: s.edit("profiles/secure.yaml", "ms_mode=secure", "ms_mode=crc"), "scoped: 1 hosts", {"render:boreas"}),
    "site.yaml edited": (lambda s: s.edit("site.yaml", "http_base: http://192.0.2.5/boot", "http_base: http://192.0.2.6/boot"), "full:",
                         {"render:notus", "render:site"}),
    "build output deleted": (lambda s: (s.build / "hosts/notus/boot.ipxe").unlink(), "scoped: 1 hosts", {"render:notus"}),
    "build output rewritten": (_output_rewritten, "scoped: 1 hosts", {"overlay:notus"}),
    "published file tampered": (_published_tampered, "scoped: 1 hosts", {"publish:notus"}),
    "link planted in a published folder": (_link_planted, "scoped: 1 hosts", {"publish:boreas"}),
    "doit forgot a stage": (lambda s: s.doit("forget", "render:hosts"), "full:", {"render:notus", "render:zephyr", "render:boreas"}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_after_a_change_the_work_is_done_then_the_noop_is_fast_again(a_built_site: Site, change: str) -> None:
    quiet_site(a_built_site)
    make, way, work = CHANGES[change]
    make(a_built_site)
    run = a_built_site.doit()
    assert taken(a_built_site).startswith(way), taken(a_built_site)
    assert work <= run.ran, run.stdout
    if way.startswith("scoped"):  # it did all there was to do: every task loaded finds nothing more
        (a_built_site.root / quiet.MANIFEST).unlink()
        assert a_built_site.doit().ran == set()
    quiet_site(a_built_site)


def test_a_noop_right_after_a_run_that_redid_hosts_is_fast(a_built_site: Site) -> None:
    quiet_site(a_built_site)
    a_built_site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset")
    assert "render:notus" in a_built_site.doit().ran
    assert (a_built_site.root / quiet.MANIFEST).exists()  # only stages did work: the manifest follows it
    again = a_built_site.doit()
    assert taken(a_built_site) == "fast" and again.stdout == ""


def test_a_failed_run_leaves_no_manifest(a_built_site: Site) -> None:
    quiet_site(a_built_site)
    host = a_built_site.hosts / "nodes/notus.yaml"
    good = host.read_bytes()
    st = host.stat()
    host.write_bytes(good.replace(b"address: dhcp", b"address: 192.0.2.999/24"))
    failed = a_built_site.doit(check=False)
    assert failed.returncode != 0 and "notus" in failed.stderr and taken(a_built_site).startswith("full:")
    assert not (a_built_site.root / quiet.MANIFEST).exists()
    host.write_bytes(good)
    os.utime(host, ns=(st.st_atime_ns, st.st_mtime_ns))
    a_built_site.doit()
    assert taken(a_built_site) == "full: no manifest"
    quiet_site(a_built_site)


def test_doit_a_is_never_fast(a_built_site: Site) -> None:
    quiet_site(a_built_site)
    run = a_built_site.doit("-a")
    assert taken(a_built_site) == "full: not a plain doit"
    assert {"render:site", f"initrd:{kver()}"} <= run.ran


@pytest.fixture
def a_built_site_with_its_own_code(a_built_site: Site, tmp_path: Path) -> Site:
    site = Site(a_built_site.root, copy_project(tmp_path / "project"))
    quiet_site(site)
    return site


def test_a_template_or_code_edit_is_never_fast(a_built_site_with_its_own_code: Site) -> None:
    site = a_built_site_with_its_own_code
    project = site.dodo.parent
    template = project / "templates/rootfs/etc/fstab.j2"
    template.write_text(template.read_text() + "# edited\n")
    assert "render:notus" in site.doit().ran and taken(site).startswith("full:")
    quiet_site(site)
    code = project / "tasks/overlay.py"
    code.write_text(code.read_text() + "# edited\n")
    assert "overlay:notus" in site.doit().ran and taken(site).startswith("full:")
    quiet_site(site)


def test_the_manifest_names_every_kind_of_input_and_output(a_built_site: Site) -> None:
    """If a category of path were missing, a change to it would leave the fast path taken."""
    quiet_site(a_built_site)
    raw = (a_built_site.root / quiet.PATHS).read_bytes()
    paths = {os.path.normpath(os.path.join(a_built_site.root, p)) for p in raw.split(b"\n", 2)[2].decode().split("\0")}
    root, project = str(a_built_site.root), str(PROJECT)
    wanted = [
        f"{root}/hosts", f"{root}/hosts/nodes", f"{root}/hosts/nodes/notus.yaml", f"{root}/hosts/profiles/secure.yaml",
        f"{root}/hosts/site.yaml", f"{root}/hosts/keys/notus.keyring",
        f"{project}/dodo.py", f"{project}/tasks/render.py", f"{project}/templates", f"{project}/templates/rootfs/etc/fstab.j2",
        "/boot", "/lib/modules",  # where kernels are found
        f"{root}/build/hosts/notus/boot.ipxe", f"{root}/build/hosts/notus/overlay.cpio",  # stage outputs
        f"{root}/build/publish/hosts/notus/boot.ipxe",  # published (identity keys)
        f"{root}/build/state/render.json",  # a stage's record
        f"{root}/build/kernels/{kver()}/initrd.img",  # a non-stage task's file_dep / target
    ]
    missing = [p for p in wanted if p not in paths]
    assert not missing, missing


def test_a_copied_site_is_not_fast(a_built_site: Site, tmp_path: Path) -> None:
    quiet_site(a_built_site)
    copy = Site(tmp_path / "copy", a_built_site.dodo.parent)
    shutil.copytree(a_built_site.root, copy.root, symlinks=True)
    copy.doit()
    assert taken(copy).startswith("full:")


def test_doit_config_files_where_doit_starts_are_read_as_its_command_line(a_built_site: Site, tmp_path: Path) -> None:
    """doit takes options from doit.cfg and pyproject.toml's [tool.doit] in the folder it starts in:
    a plain `doit` whose config says `always` runs every task, as `doit -a` does, never the fast path."""
    quiet_site(a_built_site)
    here = tmp_path / "here"
    here.mkdir()
    (here / "doit.cfg").write_text("[GLOBAL]\nverbosity = 2\n")  # prints more: as plain
    assert a_built_site.doit(cwd=here).ran == set() and taken(a_built_site) == "fast"
    (here / "doit.cfg").write_text("[run]\nalways = True\n")
    run = a_built_site.doit(cwd=here)
    assert taken(a_built_site) == "full: not a plain doit"
    assert {"render:site", f"initrd:{kver()}"} <= run.ran, run.stdout
    (here / "doit.cfg").unlink()
    (here / "pyproject.toml").write_text('[tool.doit.tasks."render:site"]\nonly = "zephyr"\n')  # a task's own option
    a_built_site.doit(cwd=here)
    assert taken(a_built_site).startswith("full: ")
    (here / "pyproject.toml").unlink()
    quiet_site(a_built_site)  # nothing configured any more: fast again
