"""A plain `doit` after a few hosts' files changed is scoped to them (tasks/quiet.py, tasks/scope.py).

Real doit processes on a copy of the built example site (three hosts: a run is scoped to at
most one).  Which way a run loaded is read from build/state/quiet.last; that a scoped run did
all there was to do is checked the strongest way there is: with the manifest removed, a run
that loads every host and every task finds nothing left to do."""
from __future__ import annotations

import shutil
from array import array
from typing import Callable

import pytest

from builtsite import a_built_site, the_built_example  # noqa: F401  (fixtures)
from conftest import Site
from test_quiet import quiet_site, taken

from tasks import quiet


def _two_hosts_edited(site: Site) -> None:
    site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset")
    site.edit("nodes/zephyr.yaml", "address: 192.0.2.21/24", "address: 192.0.2.31/24")


def _secret_shared(site: Site) -> None:
    """notus's machine secret becomes zephyr's: a scoped run must not skip the check that every machine has its own."""
    shutil.copyfile(site.hosts / "keys/zephyr.secret", site.hosts / "keys/notus.secret")


def _replaced(site: Site) -> None:
    """As editors save: a new file renamed over the old one (hosts/nodes/ changes too, its names do not)."""
    new = site.hosts / "nodes/notus.yaml.new"
    new.write_text((site.hosts / "nodes/notus.yaml").read_text().replace("panic=30", "panic=20"))
    new.rename(site.hosts / "nodes/notus.yaml")


# change -> (what it does, the work the run must do)
SCOPED: dict[str, tuple[Callable[[Site], None], set[str]]] = {
    "static address edited": (lambda s: s.edit("nodes/zephyr.yaml", "address: 192.0.2.21/24", "address: 192.0.2.31/24"),
                              {"render:zephyr", "overlay:zephyr", "publish:zephyr"}),
    # the host's files change (no LUKS key any more): its group of the manifest is made again
    "LUKS turned off": (lambda s: s.edit("nodes/boreas.yaml", "luks:\n  name: cryptroot\n  keyfile: keys/boreas.luks\n", ""),
                        {"render:boreas", "overlay:boreas", "publish:boreas"}),
    "editor's way: a new file in place of the old": (_replaced, {"render:notus", "publish:notus"}),
    # a profile: the hosts it reaches (secure.yaml: boreas alone)
    "profile edited": (lambda s: s.edit("profiles/secure.yaml", "ms_mode=secure", "ms_mode=crc"), {"render:boreas", "publish:boreas"}),
}

# change -> (what it does, how quiet.last begins)
FULL: dict[str, tuple[Callable[[Site], None], str]] = {
    "a MAC changed (the site's routes)": (lambda s: s.edit("nodes/zephyr.yaml", '"52:54:00:b1:00:01"', '"52:54:00:b1:00:09"'),
                                          "full: hosts/nodes/zephyr.yaml: what the site-wide tasks read of host zephyr changed"),
    "another map method (the base initrds in use)": (lambda s: s.edit("nodes/boreas.yaml", "method: sysfs", "method: cli"),
                                                     "full: hosts/nodes/boreas.yaml: what the site-wide tasks read of host boreas changed"),
    "two hosts edited (more than a quarter)": (_two_hosts_edited, "full: changed since the manifest (too many hosts"),
    "a profile that reaches two hosts": (lambda s: s.edit("profiles/rack-a.yaml", "deadline: 180", "deadline: 170"), "full: changed since the manifest"),
    "site.yaml edited": (lambda s: s.edit("site.yaml", "deadline: 120", "deadline: 110"), "full: changed since the manifest"),
    "a host file added": (lambda s: (s.hosts / "nodes/eurus.yaml").write_text((s.hosts / "nodes/notus.yaml").read_text()),
                          "full: changed since the manifest"),
}


@pytest.mark.parametrize("change", list(SCOPED))
def test_a_host_change_is_scoped_to_it_and_leaves_nothing_for_a_full_load(a_built_site: Site, change: str) -> None:
    quiet_site(a_built_site)
    make, work = SCOPED[change]
    make(a_built_site)
    run = a_built_site.doit()
    assert taken(a_built_site) == "scoped: 1 hosts"
    assert work <= run.ran, run.stdout
    host = next(iter(work)).split(":")[1]
    # no other host's work, no site-wide task (lint:rendered: a stage whose batch names no host)
    assert {t for t in run.ran if t.split(":")[1] != host} <= {"lint:rendered"}, run.ran
    (a_built_site.root / quiet.MANIFEST).unlink()
    full = a_built_site.doit()
    assert taken(a_built_site) == "full: no manifest" and full.ran == set(), full.stdout
    assert quiet_site(a_built_site).ran == set()


@pytest.mark.parametrize("change", list(FULL))
def test_a_change_the_site_wide_tasks_see_loads_every_task(a_built_site: Site, change: str) -> None:
    quiet_site(a_built_site)
    make, way = FULL[change]
    make(a_built_site)
    a_built_site.doit(check=False)
    assert taken(a_built_site).startswith(way), taken(a_built_site)


def test_a_scoped_run_prints_the_warnings_a_full_load_prints(a_built_site: Site) -> None:
    a_built_site.edit("nodes/notus.yaml", "monolithic: true", "monolithic: true\nsecrets: {mode: clear}")
    full = quiet_site(a_built_site)
    warning = "cephboot: warning: secrets.mode: clear: the cephx keys (and LUKS keys) of 1 host(s) are served in the clear"
    assert full.stderr.count(warning) == 1, full.stderr
    a_built_site.edit("nodes/notus.yaml", "panic=30", "panic=20")
    run = a_built_site.doit()
    assert taken(a_built_site) == "scoped: 1 hosts" and "render:notus" in run.ran
    assert run.stderr.count(warning) == 1, run.stderr  # once: the last full load's, not the scoped site's too


def test_a_machine_secret_made_another_hosts_is_caught(a_built_site: Site) -> None:
    quiet_site(a_built_site)
    _secret_shared(a_built_site)
    run = a_built_site.doit(check=False)
    assert taken(a_built_site).startswith("full: hosts/nodes/notus.yaml: its machine secret changed"), taken(a_built_site)
    assert run.returncode != 0 and "holds the same secret as host" in run.stderr, run.stderr


def test_a_stage_record_changed_since_the_manifest_loads_every_task(a_built_site: Site) -> None:
    quiet_site(a_built_site)
    a_built_site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset")
    record = a_built_site.build / "state/render.json"
    record.write_text(record.read_text())  # another mtime: a record is never taken on trust in a scoped run
    a_built_site.doit()
    assert taken(a_built_site) == "full: changed since the manifest"


def test_half_of_a_manifest_pair_is_never_believed(a_built_site: Site) -> None:
    quiet_site(a_built_site)
    paths = a_built_site.root / quiet.PATHS
    kept = paths.read_bytes()
    a_built_site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset")
    a_built_site.doit()  # scoped, and the path lists the same: the header alone is written again
    assert taken(a_built_site) == "scoped: 1 hosts" and paths.read_bytes() == kept
    gen, rest = kept.split(b"\n", 1)
    paths.write_bytes(b"0" * len(gen) + b"\n" + rest)  # as a run killed between the two files would leave it
    a_built_site.doit()
    assert taken(a_built_site) == "full: damaged manifest"


def test_changed_groups_are_found_by_halving_and_capped() -> None:
    ends = array("Q", [2, 3, 7, 8, 10])
    old = array("Q", range(10)).tobytes()
    now = array("Q", [0, 1, 2, 99, 4, 5, 6, 7, 8, 99]).tobytes()
    assert quiet._changed_groups(old, old, ends, 8, 5) == set()
    assert quiet._changed_groups(old, now, ends, 8, 5) == {2, 4}
    assert quiet._changed_groups(old, now, ends, 8, 1) is None
