"""Per-host stages (tasks/stage.py): one doit task per step that redoes only the hosts whose inputs
changed, keeps its own record of each host, and comes back to exactly what a stopped run left."""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from builtsite import HOSTS, a_built_site, the_built_example  # noqa: F401  (fixtures)
from conftest import Site
from mounts import doit_over_tmpfs

MONITOR = ("192.0.2.13", "192.0.2.99")  # the third monitor of hosts/site.yaml, and a new address


def hosts_in(ran: set[str], stage: str) -> set[str]:
    return {t.split(":", 1)[1] for t in ran if t.startswith(stage + ":")}


def settled(site: Site) -> Site:
    """The built example after one plain `doit` (the fixture builds every stage but lint)."""
    site.doit()
    assert site.doit().ran == set()
    return site


def test_each_stage_task_lists_the_hosts_it_redid(a_built_site: Site) -> None:
    settled(a_built_site)
    a_built_site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset")  # reaches boot.ipxe only
    run = a_built_site.doit()
    assert {"render:hosts", "publish:hosts"} <= run.tasks and "overlay:hosts" not in run.tasks
    assert "  - render:hosts --only notus\n" in run.stdout and "  - publish:hosts --only notus\n" in run.stdout
    assert run.ran == {"render:notus", "publish:notus"}


def test_a_failing_host_fails_alone_and_the_next_run_publishes_only_it(a_built_site: Site) -> None:
    """A monitor change is due for every host; the second host's published folder is on a
    read-only disk.  Every other host is published and recorded; the stage fails naming that
    host, the path and why; the next run publishes that host only."""
    site_yaml = (a_built_site.hosts / "site.yaml").read_text()
    assert site_yaml.count(MONITOR[0]) == 1, "the example's third monitor moved: update MONITOR"
    a_built_site.edit("site.yaml", MONITOR[0], MONITOR[1])
    a_built_site.edit("site.yaml", "publish:\n", "publish:\n  parallel: 1\n")  # one host after the other: a fixed order
    order = sorted(HOSTS)  # the inventory lists hosts by file name
    blocked = a_built_site.build / "publish/hosts" / order[1]
    failed = doit_over_tmpfs(a_built_site, blocked, "ro,size=64k")
    assert failed.returncode != 0
    out = failed.stdout + failed.stderr
    assert f"cephboot: publish: host {order[1]}: {blocked.relative_to(a_built_site.root)}: Read-only file system" in out, out
    assert "1 of 3 hosts failed" in out and "Traceback" not in out
    assert hosts_in(failed.ran, "publish") == HOSTS - {order[1]}  # every other host, recorded
    assert hosts_in(failed.ran, "overlay") == HOSTS

    again = a_built_site.doit()
    assert hosts_in(again.ran, "publish") == {order[1]}
    assert not hosts_in(again.ran, "render") and not hosts_in(again.ran, "overlay")
    assert a_built_site.doit().ran == set()


def test_a_damaged_record_redoes_every_host_once_and_changes_nothing(a_built_site: Site) -> None:
    record = a_built_site.build / "state/render.json"
    assert set(json.loads(record.read_text())["hosts"]) == HOSTS
    before = a_built_site.snapshot()
    record.write_text("{ not json")
    run = a_built_site.doit()
    assert hosts_in(run.ran, "render") == HOSTS
    # the same bytes again: no rendered file rewritten, so nothing after render runs
    assert not hosts_in(run.ran, "overlay") and not hosts_in(run.ran, "publish")
    after = a_built_site.snapshot()
    assert {k: v for k, v in after.items() if not k.startswith("build/state/")} == {k: v for k, v in before.items() if not k.startswith("build/state/")}
    assert a_built_site.doit().ran == set()


def test_a_hand_edited_rendered_file_is_packed_again(a_built_site: Site) -> None:
    """The overlay stage looks at its inputs' size and mtime, as make does: a rendered file
    edited by hand goes into the host's layer (and render does not undo the edit)."""
    settled(a_built_site)
    conf = a_built_site.build / "hosts/zephyr/rootfs/etc/ceph/ceph.conf"
    conf.write_text(conf.read_text() + "# local experiment\n")
    run = a_built_site.doit()
    assert run.ran == {"overlay:zephyr", "publish:zephyr"}


def test_doit_clean_removes_a_stages_outputs_and_its_record(a_built_site: Site) -> None:
    settled(a_built_site)
    published = {p: p.stat().st_ino for p in (a_built_site.build / "publish/hosts").rglob("*") if p.is_file()}
    a_built_site.doit("clean", "overlay")
    assert not list(a_built_site.build.glob("hosts/*/overlay.cpio"))
    assert not (a_built_site.build / "state/overlay.json").exists()
    run = a_built_site.doit()
    assert hosts_in(run.ran, "overlay") == HOSTS
    # new files (mtimes), so publish looks at every host, as make would; the same bytes, so it
    # replaces nothing (and names no host)
    assert "publish:hosts" in run.tasks and hosts_in(run.ran, "publish") == set()
    assert {p: p.stat().st_ino for p in (a_built_site.build / "publish/hosts").rglob("*") if p.is_file()} == published


def test_doit_list_explains_each_stage(the_built_example: Site) -> None:
    out = the_built_example.doit("list", "--all").stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for stage in ("render:hosts", "overlay:hosts", "publish:hosts", "lint:rendered"):
        assert stage in lines, out
    assert f"of the {len(HOSTS)} hosts" in lines["render:hosts"]


def test_doit_clean_leaves_the_boot_tree_alone(a_built_site: Site) -> None:
    """Booting machines read the published tree: `doit clean` empties build/, not the tree."""
    settled(a_built_site)
    published = sorted(p for p in (a_built_site.build / "publish").rglob("*") if p.is_file())
    assert published
    a_built_site.doit("clean")
    assert not list(a_built_site.build.glob("hosts/*/overlay.cpio"))
    assert sorted(p for p in (a_built_site.build / "publish").rglob("*") if p.is_file()) == published


def test_parallel_runs_see_each_stages_new_files(a_built_site: Site) -> None:
    """`doit -n 2` runs actions in child processes; the stages after render must still see
    the files render rewrote there (the main process forgets what it remembered of them)."""
    settled(a_built_site)
    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    run = a_built_site.doit("-n", "2")
    # what the check found reaches the child process: only zephyr's steps, as without -n
    assert run.ran == {"render:zephyr", "lint:rendered", "overlay:zephyr", "publish:zephyr"}, run.stdout
    assert b"192.0.2.41" in (a_built_site.build / "publish/hosts/zephyr/overlay.cpio").read_bytes()
    assert a_built_site.doit().ran == set()


def test_hosts_published_at_once_all_finish_but_the_failed_one(a_built_site: Site) -> None:
    """With publish.parallel (8 by default) a host that fails stops only itself; the next
    run publishes exactly that host."""
    a_built_site.edit("site.yaml", MONITOR[0], MONITOR[1])
    failed = doit_over_tmpfs(a_built_site, a_built_site.build / "publish/hosts/notus", "ro,size=64k")
    assert failed.returncode != 0 and "cephboot: publish: host notus: " in failed.stdout + failed.stderr
    assert hosts_in(failed.ran, "publish") == HOSTS - {"notus"}
    assert hosts_in(a_built_site.doit().ran, "publish") == {"notus"}
    for h in HOSTS:
        assert (a_built_site.build / f"publish/hosts/{h}/overlay.cpio").read_bytes() == (a_built_site.build / f"hosts/{h}/overlay.cpio").read_bytes()


def test_doit_info_says_which_hosts_are_due(a_built_site: Site) -> None:
    settled(a_built_site)
    a_built_site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, quiet")
    info = a_built_site.doit("info", "render:hosts", check=False).stdout  # exit 1: not up to date
    assert "<stage render: 1 of 3 hosts due: notus; records in build/state/render.json>" in info, info
    a_built_site.doit("forget", "render:hosts")
    info = a_built_site.doit("info", "render:hosts", check=False).stdout  # exit 1: not up to date
    assert "3 of 3 hosts due (every host: doit forgot the stage)" in info, info


def test_only_publishes_the_named_hosts_and_leaves_the_rest_due(a_built_site: Site) -> None:
    """A canary: `doit publish:hosts --only zephyr` builds everything but publishes one host."""
    settled(a_built_site)
    a_built_site.edit("site.yaml", MONITOR[0], MONITOR[1])
    tree = a_built_site.build / "publish/hosts"
    before = {h: (tree / h / "overlay.cpio").read_bytes() for h in HOSTS}
    canary = a_built_site.doit("publish:hosts", "--only", "zephyr")
    assert hosts_in(canary.ran, "overlay") == HOSTS and hosts_in(canary.ran, "publish") == {"zephyr"}
    assert (tree / "zephyr/overlay.cpio").read_bytes() != before["zephyr"]
    assert all((tree / h / "overlay.cpio").read_bytes() == before[h] for h in HOSTS - {"zephyr"})
    assert a_built_site.doit("publish:hosts", "--only", "zephyr").ran == set()  # that host is up to date
    rest = a_built_site.doit()
    assert hosts_in(rest.ran, "publish") == HOSTS - {"zephyr"}
    unknown = a_built_site.doit("publish:hosts", "--only", "zephyr,nobody", check=False)
    assert unknown.returncode != 0 and "no host 'nobody' in hosts/nodes/ (no nobody.yaml); the hosts are: boreas, notus, zephyr" in unknown.stdout + unknown.stderr


def test_a_large_record_is_split_and_a_run_rewrites_only_the_shards_it_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks import stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "SHARD_HOSTS", 4)
    hosts = {f"h{i:03d}": f"record {i}" for i in range(40)}
    outs = {name: f"out {name}" for name in hosts}
    stage.save_state("render", "cfg", hosts, outs, True)
    shards = sorted((tmp_path / "build/state/render").iterdir())
    assert len(shards) == 16 and all(p.stat().st_mode & 0o777 == 0o600 for p in shards)
    assert stage.load_state("render") == {"config": "cfg", "ok": True, "hosts": hosts, "outs": outs}
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    stage.save_state("render", "cfg", {**hosts, "h007": "changed"}, outs, True)
    assert [p for p in shards if p.stat().st_mtime_ns != mtimes[p]] == [tmp_path / f"build/state/render/{zlib.crc32(b'h007') % 16}.json"]
    assert stage.load_state("render")["hosts"]["h007"] == "changed"
    # a shard the record does not name (a run killed between the two): damage, said in one line
    (tmp_path / f"build/state/render/{zlib.crc32(b'h007') % 16}.json").write_text(json.dumps({"gen": 1, "hosts": {}, "outs": {}}))
    assert stage.load_state("render")["config"] is None
    assert "damaged record (shard" in capsys.readouterr().err


def test_a_record_saved_for_the_touched_hosts_alone_is_the_whole_record_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """save_state told which hosts changed (as a stage's run is) updates their shards in place,
    with no pass over the other hosts: what it writes reads back as the record saved whole, a
    host gone from it is gone, and only the touched hosts' shards are written."""
    from tasks import stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "SHARD_HOSTS", 4)
    hosts = {f"h{i:03d}": f"record {i}" for i in range(40)}
    outs = {name: f"out {name}" for name in hosts}
    stage.save_state("render", "cfg", hosts, outs, True)
    stage.load_state("render")  # what this process knows of the record: its shards as read
    shards = sorted((tmp_path / "build/state/render").iterdir())
    mtimes = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards}  # a write is a new file (a rename)
    hosts = {**hosts, "h007": "changed", "h040": "new"}
    del hosts["h011"]
    outs = {**{n: o for n, o in outs.items() if n != "h011"}, "h007": "out changed", "h040": "out new"}
    stage.save_state("render", "cfg", hosts, outs, False, touched={"h007", "h011", "h040"})
    assert stage.load_state("render") == {"config": "cfg", "ok": False, "hosts": hosts, "outs": outs}
    written = {p for p in shards if (p.stat().st_ino, p.stat().st_mtime_ns) != mtimes[p]}
    assert written == {tmp_path / f"build/state/render/{zlib.crc32(n.encode()) % 16}.json" for n in ("h007", "h011", "h040")}
    stage.save_state("render", "cfg", hosts, outs, False, touched={"h007"})  # nothing changed: nothing written
    assert {p for p in shards if (p.stat().st_ino, p.stat().st_mtime_ns) != mtimes[p]} == written


def test_provisionings_render_entry_point_keeps_the_stages_record(a_built_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """render.render_hosts (what provisioning calls once it wrote a host's keyring) renders the
    host and records it as `doit render:hosts --only HOST` would: the stage then has nothing left
    to do for it, and a host that was due and not named stays due."""
    from tasks import examplekeys, inventory, render

    settled(a_built_site)
    keyring = a_built_site.hosts / "keys/zephyr.keyring"
    key = examplekeys.cephx_secret()
    keyring.write_text(f"[client.zephyr]\n\tkey = {key}\n")  # the cluster's key, as provisioning writes it
    a_built_site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset")
    monkeypatch.chdir(a_built_site.root)
    site = inventory.load(a_built_site.root, use_cache=False)
    render.render_hosts(site, ["zephyr"])
    rendered = a_built_site.build / "hosts/zephyr/rootfs" / render.keyring_path(site.hosts["zephyr"].cfg).lstrip("/")
    assert key in rendered.read_text()
    run = a_built_site.doit("render:hosts")
    assert hosts_in(run.ran, "render") == {"notus"}, run.stdout
