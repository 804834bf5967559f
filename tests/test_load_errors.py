"""The machine refusing while doit loads the tasks (build/ made and cleaned, the inventory and its
cache read, the no-op's manifest, doit's records): one `cephboot: <path>: <what>; <expected>`
line and exit status 2, never a traceback or a hang; nothing published or built is touched."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from builtsite import the_built_example  # noqa: F401  (fixture)
from conftest import PROJECT, DoitRun, Site, copy_site
from mounts import doit_over_tmpfs
from tasks import inventory
from test_bad_input import _tree_digest

LIMIT = 60  # seconds (a run here takes a few): one that blocks (on a FIFO) fails instead of hanging the suite


def run(site: Site, *args: str) -> DoitRun:
    cmd = [sys.executable, "-m", "doit", "-f", str(site.dodo), "-d", str(site.root), *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=LIMIT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"doit {' '.join(args)} did not end in {LIMIT} s (blocked?)") from None
    return DoitRun(p.returncode, p.stdout, p.stderr)


def in_place(rel: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    """Whatever is at ``root/rel`` removed, then ``make(path)`` puts something else there."""
    def apply(root: Path) -> None:
        p = root / rel
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        make(p)

    return apply


def a_file(rel: str) -> Callable[[Path], None]:
    return in_place(rel, lambda p: p.write_text("not a folder\n"))


def a_link(rel: str, to: str) -> Callable[[Path], None]:
    return in_place(rel, lambda p: p.symlink_to(to))


def a_fifo(rel: str) -> Callable[[Path], None]:
    return in_place(rel, os.mkfifo)


def a_folder(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).unlink(missing_ok=True)
        (root / rel).mkdir()

    return apply


WRITABLE = "expected a folder that this user can write (build/ and its folders are cephboot's own: move what is in the way)"
RECORDS = ("expected doit's records of the tasks (an SQLite database): move it away and run doit again "
           "(doit starts new records; the stages check every host again)")

# what is put in the way -> the one line doit ends with
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "build-state-is-a-file": (a_file("build/state"), f"cephboot: build/state: is a file; {WRITABLE}"),
    "build-tmp-is-a-file": (a_file("build/tmp"), f"cephboot: build/tmp: is a file; {WRITABLE}"),
    "build-hosts-links-to-nothing": (a_link("build/hosts", "gone"), f"cephboot: build/hosts: is a symbolic link to nothing; {WRITABLE}"),
    "build-site-loops": (a_link("build/site", "site"), f"cephboot: build/site: Too many levels of symbolic links; {WRITABLE}"),
    "doit-records-are-a-fifo": (a_fifo("build/doit.sqlite3"), f"cephboot: build/doit.sqlite3: is a special file; {RECORDS}"),
    "doit-records-are-a-folder": (a_folder("build/doit.sqlite3"), f"cephboot: build/doit.sqlite3: is a folder; {RECORDS}"),
    "doit-records-are-no-database": (lambda root: (root / "build/doit.sqlite3").write_text("garbage\n"),
                                     f"cephboot: build/doit.sqlite3: is not an SQLite database; {RECORDS}"),
}


def settled_copy(built: Site, dst: Path) -> Site:
    """A copy of the built example whose caches and records are its own (one run in its folder)."""
    shutil.copytree(built.root, dst, symlinks=True,
                    copy_function=lambda s, d: os.link(s, d) if os.path.getsize(s) > 1 << 20 else shutil.copy2(s, d))
    site = Site(dst)
    run(site, "render")
    return site


def assert_refused(site: Site, done: DoitRun, line: str, before: dict[str, tuple[int, bytes]], hosts: dict[str, str]) -> None:
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert done.stderr.splitlines() == [line], out
    assert "Traceback" not in out and not done.stdout.strip(), out
    assert site.snapshot() == before, "a file under build/ (the published tree too) changed"
    assert _tree_digest(site.hosts) == hosts


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", [["render"], []], ids=["render", "plain"])
def test_build_in_the_way_is_one_line_and_changes_nothing(case: str, command: list[str], the_built_example: Site, tmp_path: Path) -> None:
    """A plain `doit` after a no-op (its manifest there: the fast path looks first) and `doit render`."""
    site = settled_copy(the_built_example, tmp_path / "site")
    if not command:
        run(site)
        run(site)  # the manifest of a no-op is written
    mutate, line = CASES[case]
    mutate(site.root)
    before, hosts = site.snapshot(), _tree_digest(site.hosts)
    assert_refused(site, run(site, *command), line, before, hosts)


def test_a_plain_list_with_doit_records_in_the_way_is_one_line(the_built_example: Site, tmp_path: Path) -> None:
    """`doit list` from the last run's summary would hand doit a FIFO to open: it loads as usual and says what is wrong."""
    site = settled_copy(the_built_example, tmp_path / "site")
    assert run(site, "list").returncode == 0
    a_fifo("build/doit.sqlite3")(site.root)
    done = run(site, "list")
    assert done.returncode == 2 and done.stderr.splitlines() == [f"cephboot: build/doit.sqlite3: is a special file; {RECORDS}"], done.stderr


def test_a_read_only_build_is_one_line(the_example_site: Site) -> None:
    """build/ on a read-only mount: what could not be written, and what was expected."""
    done = doit_over_tmpfs(the_example_site, the_example_site.build, "ro,size=64k", "render")
    out = done.stdout + done.stderr
    assert done.returncode == 2 and "Traceback" not in out, out
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("cephboot: "), out
    assert done.stderr.rstrip().endswith(f": Read-only file system; {WRITABLE}"), out


def test_the_inventory_folder_that_loops_is_an_inventory_error(the_built_example: Site, tmp_path: Path) -> None:
    site = settled_copy(the_built_example, tmp_path / "site")
    before = site.snapshot()
    shutil.move(site.hosts, site.root / "hosts-elsewhere")
    site.hosts.symlink_to("hosts")
    done = run(site, "render")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == ["cephboot: invalid inventory:",
                                        "  hosts: cannot read: Too many levels of symbolic links; expected the inventory folder (hosts/site.yaml, hosts/nodes/)"]
    assert site.snapshot() == before


LOOPS = {  # an inventory file replaced by a link to itself, after a load that cached it
    "site.yaml": "hosts/site.yaml: cannot read: Too many levels of symbolic links",
    "nodes/notus.yaml": "hosts/nodes/notus.yaml: cannot read: Too many levels of symbolic links",
    "profiles/rack-a.yaml": "hosts/profiles/rack-a.yaml: cannot read: Too many levels of symbolic links",
    "keys/notus.keyring": "hosts/nodes/notus.yaml: keyring: 'keys/notus.keyring': cannot read ",
    "keys/zephyr.secret": "hosts/nodes/zephyr.yaml: secrets.machine_secret: 'keys/zephyr.secret': cannot read ",
}


@pytest.mark.parametrize("rel", sorted(LOOPS))
def test_a_cached_inventory_file_that_loops_is_an_inventory_error(rel: str, tmp_path: Path) -> None:
    """The cache compares each input's stat key first: a link that loops is a problem of that file, as for a first load."""
    site = copy_site(PROJECT, tmp_path / "site")
    inventory.load(site.root)  # writes the cache
    (site.hosts / rel).unlink()
    (site.hosts / rel).symlink_to(Path(rel).name)
    with pytest.raises(inventory.InventoryError) as e:
        inventory.load(site.root)
    assert LOOPS[rel] in str(e.value), str(e.value)
    if "keys/" in rel:
        assert "Too many levels of symbolic links; expected a regular file" in str(e.value)


SITE_IN_THE_WAY: dict[str, tuple[Callable[[Path], None], str]] = {  # hosts/site.yaml that cannot be read -> the one problem
    "loops": (a_link("hosts/site.yaml", "site.yaml"), "hosts/site.yaml: cannot read: Too many levels of symbolic links"),
    "a-folder": (a_folder("hosts/site.yaml"), "hosts/site.yaml: is a folder, not a regular file"),
    "a-fifo": (a_fifo("hosts/site.yaml"), "hosts/site.yaml: is a FIFO, not a regular file"),
}


@pytest.mark.parametrize("cached", [False, True], ids=["first-load", "cached"])
@pytest.mark.parametrize("case", sorted(SITE_IN_THE_WAY))
def test_a_site_file_that_cannot_be_read_is_said_once(case: str, cached: bool, tmp_path: Path) -> None:
    """An unreadable site.yaml is that one problem: its settings, which were never read, are not
    reported missing key by key (no "ceph.fsid: missing" after it)."""
    site = copy_site(PROJECT, tmp_path / "site")
    if cached:
        inventory.load(site.root)  # writes the cache
    apply, problem = SITE_IN_THE_WAY[case]
    apply(site.root)
    with pytest.raises(inventory.InventoryError) as e:
        inventory.load(site.root)
    assert [str(p) for p in e.value.problems] == [problem], str(e.value)


def test_a_stage_record_that_is_a_fifo_never_blocks(the_built_example: Site, tmp_path: Path) -> None:
    """A stage's record in build/state is read while doit checks the tasks: a FIFO there is damage, said in one line."""
    site = settled_copy(the_built_example, tmp_path / "site")
    a_fifo("build/state/render.json")(site.root)
    done = run(site, "render:hosts")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cephboot: build/state/render.json: damaged record (a special file where a file belongs (not opened)): every host of render is redone" in done.stderr



def test_a_stage_record_that_is_a_link_is_never_followed(the_built_example: Site, tmp_path: Path) -> None:
    """A link in place of a record cephboot wrote (to a copy of the record itself) is damage, never read through."""
    site = settled_copy(the_built_example, tmp_path / "site")
    record = site.build / "state/render.json"
    elsewhere = tmp_path / "render.json"
    shutil.copy2(record, elsewhere)
    kept = elsewhere.read_bytes()
    record.unlink()
    record.symlink_to(elsewhere)
    done = run(site, "render:hosts")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cephboot: build/state/render.json: damaged record (a symbolic link where a file belongs (not followed)): every host of render is redone" in done.stderr
    assert not record.is_symlink() and elsewhere.read_bytes() == kept, "the new record replaces the link, not written through it"
