"""Publishing the boot tree: layout, permissions, only-what-changed, removal, rollback, atomic under SIGKILL."""
from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builtsite import HOSTS, a_built_site, kver, the_built_example  # noqa: F401  (fixtures)
from conftest import Site
from tasks import inventory


def tree(site: Site) -> Path:
    return site.build / "publish"


def stages(run_ran: set[str], stage: str) -> set[str]:
    return {t.split(":", 1)[1] for t in run_ran if t.startswith(stage + ":")}


def test_the_tree_has_the_documented_layout(the_built_example: Site) -> None:
    root = tree(the_built_example)
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    expected = {"boot.ipxe", f"kernels/{kver()}/vmlinuz", f"kernels/{kver()}/initrd.img", f"kernels/{kver()}/initrd-sysfs.img",
                "hosts/notus/initrd.img"}
    expected |= {f"hosts/{h}/{n}" for h in HOSTS for n in ("boot.ipxe", "overlay.cpio")}
    expected |= {f"ipxe/{p.relative_to(the_built_example.build / 'site/ipxe')}" for p in (the_built_example.build / "site/ipxe").rglob("*.ipxe")}
    assert files == expected | {".cephboot-tree"}  # the marker that makes it a tree cephboot owns
    files.discard(".cephboot-tree")
    for rel in files:
        src = {"kernels": the_built_example.build / "kernels", "hosts": the_built_example.build / "hosts"}.get(rel.split("/")[0], the_built_example.build / "site")
        src = src / rel.split("/", 1)[1] if rel.startswith(("kernels/", "hosts/")) else src / rel
        assert (root / rel).read_bytes() == src.read_bytes(), rel


def test_every_published_file_has_its_permissions(the_built_example: Site) -> None:
    root = tree(the_built_example)
    for p in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        rel = str(p.relative_to(root))
        if p.is_dir():
            # host folders: the web server may open files by name, nobody may list them
            assert mode == (0o751 if rel.startswith("hosts/") else 0o755), rel
        elif p.name in ("overlay.cpio",) or (p.name == "initrd.img" and rel.startswith("hosts/")):
            assert mode == 0o640, rel  # publish.secret_mode: owner and the web server's group
        else:
            assert mode == 0o644, rel  # kernels, base initrds, iPXE scripts: world-readable
        assert not (mode & 0o004 and p.is_file() and ("overlay" in rel or rel.startswith("hosts/notus/initrd"))), rel


def test_the_web_servers_group_gets_the_layers(a_built_site: Site) -> None:
    a_built_site.edit("site.yaml", "  target: build/publish", "  target: build/publish\n  group: nogroup\n  secret_mode: '0660'")
    run = a_built_site.doit("publish")
    assert stages(run.ran, "publish") >= HOSTS
    nogroup = __import__("grp").getgrnam("nogroup").gr_gid
    for h in HOSTS:
        st = (tree(a_built_site) / f"hosts/{h}/overlay.cpio").stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (nogroup, 0o660)


def test_publishing_without_a_web_servers_group_warns_once(a_built_site: Site) -> None:
    a_built_site.edit("site.yaml", "192.0.2.13]", "192.0.2.14]")
    run = a_built_site.doit("publish")
    assert stages(run.ran, "publish") == HOSTS
    assert run.stderr.count("cephboot: hosts/site.yaml: publish.group is not set") == 1, run.stderr
    a_built_site.edit("site.yaml", "  target: build/publish", "  target: build/publish\n  group: nogroup")
    assert "publish.group" not in a_built_site.doit("publish").stderr


def test_a_second_run_publishes_nothing(a_built_site: Site) -> None:
    assert stages(a_built_site.doit("publish").ran, "publish") == set()


def test_a_host_edit_publishes_that_host_and_keeps_its_previous_generation(a_built_site: Site) -> None:
    root = tree(a_built_site)
    old = {n: (root / "hosts/zephyr" / n).read_bytes() for n in ("boot.ipxe", "overlay.cpio")}
    other = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "zephyr" not in str(p)}
    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    run = a_built_site.doit("render", "initrd", "overlay", "publish")
    assert stages(run.ran, "publish") == {"zephyr"}
    assert stages(run.ran, "initrd") == set()
    assert {p: p.stat().st_mtime_ns for p in other} == other  # nothing else rewritten
    for n, data in old.items():
        assert (root / "hosts/zephyr/previous" / n).read_bytes() == data
    assert b"192.0.2.41" not in old["overlay.cpio"]
    assert b"192.0.2.41" in (root / "hosts/zephyr/overlay.cpio").read_bytes()
    assert stat.S_IMODE((root / "hosts/zephyr/previous/overlay.cpio").stat().st_mode) == 0o640


def test_a_monitor_change_republishes_every_host_and_no_kernel(a_built_site: Site) -> None:
    a_built_site.edit("site.yaml", "192.0.2.13]", "192.0.2.14]")
    run = a_built_site.doit("render", "initrd", "overlay", "publish")
    assert stages(run.ran, "publish") == HOSTS
    assert stages(run.ran, "initrd") == set()


def test_a_profile_edit_republishes_its_hosts(a_built_site: Site) -> None:
    a_built_site.edit("profiles/secure.yaml", "ms_mode=secure", "ms_mode=crc")
    run = a_built_site.doit("render", "initrd", "overlay", "publish")
    assert stages(run.ran, "publish") == {"boreas"}


def test_a_removed_host_leaves_the_tree(a_built_site: Site) -> None:
    root = tree(a_built_site)
    notus_route = root / "ipxe/by-uuid/0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44.ipxe"
    assert notus_route.exists()
    (a_built_site.hosts / "nodes/notus.yaml").unlink()
    run = a_built_site.doit("render", "initrd", "overlay", "publish")
    assert "publish:site" in run.ran
    assert not (root / "hosts/notus").exists()
    assert not notus_route.exists()
    assert not (root / "ipxe/by-mac/52-54-00-a3-00-01.ipxe").exists()
    assert (root / "hosts/zephyr/overlay.cpio").exists()


def test_a_changed_mac_moves_the_hosts_route(a_built_site: Site) -> None:
    root = tree(a_built_site)
    old, new = "ipxe/by-mac/52-54-00-a3-00-01.ipxe", "ipxe/by-mac/52-54-00-a3-00-99.ipxe"
    a_built_site.edit("nodes/notus.yaml", "52:54:00:a3:00:01", "52:54:00:a3:00:99")
    run = a_built_site.doit("render", "initrd", "overlay", "publish")
    assert {"render:notus", "publish:notus", "render:site", "publish:site"} <= run.ran
    for base in (a_built_site.build / "site", root):
        assert not (base / old).exists(), base
        assert "/hosts/notus/boot.ipxe" in (base / new).read_text()
    assert a_built_site.doit("render", "initrd", "overlay", "publish").ran == set()


def test_rollback_swaps_the_generations_and_a_second_undoes_it(a_built_site: Site) -> None:
    root = tree(a_built_site) / "hosts/zephyr"
    first = (root / "overlay.cpio").read_bytes()
    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    a_built_site.doit("render", "overlay", "publish")
    second = (root / "overlay.cpio").read_bytes()
    assert first != second
    a_built_site.doit("rollback", "--only", "zephyr")
    assert (root / "overlay.cpio").read_bytes() == first
    assert (root / "previous/overlay.cpio").read_bytes() == second
    assert stat.S_IMODE((root / "overlay.cpio").stat().st_mode) == 0o640
    assert stages(a_built_site.doit("publish").ran, "publish") == set()  # the rollback holds
    a_built_site.doit("rollback", "--only", "zephyr")
    assert (root / "overlay.cpio").read_bytes() == second


def test_forgetting_publish_brings_the_current_build_back_after_a_rollback(a_built_site: Site) -> None:
    root = tree(a_built_site) / "hosts/zephyr"
    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    a_built_site.doit("render", "overlay", "publish")
    current = (root / "overlay.cpio").read_bytes()
    a_built_site.doit("rollback", "--only", "zephyr")
    assert (root / "overlay.cpio").read_bytes() != current
    untouched = {h: (tree(a_built_site) / f"hosts/{h}/overlay.cpio").stat().st_ino for h in HOSTS - {"zephyr"}}
    a_built_site.doit("forget", "publish:hosts")
    run = a_built_site.doit("publish")
    # every host looked at again, and only the rolled-back one rewritten (one line each)
    assert "publish:hosts" in run.tasks and stages(run.ran, "publish") == {"zephyr"}
    assert (root / "overlay.cpio").read_bytes() == current
    assert {h: (tree(a_built_site) / f"hosts/{h}/overlay.cpio").stat().st_ino for h in untouched} == untouched


def test_rollback_without_a_previous_generation_says_so(a_built_site: Site) -> None:
    run = a_built_site.doit("rollback", "--only", "notus", check=False)
    assert run.returncode != 0 and "no previous generation" in run.stdout + run.stderr


def test_the_fallback_script_loads_the_previous_layer_relative_to_itself(a_built_site: Site) -> None:
    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    a_built_site.doit("render", "overlay", "publish")
    script = (tree(a_built_site) / "hosts/zephyr/previous/boot.ipxe").read_text()
    assert "initrd --name overlay.cpio overlay.cpio" in script  # i.e. hosts/zephyr/previous/overlay.cpio
    assert f"/kernels/{kver()}/" in script
    assert (tree(a_built_site) / f"kernels/{kver()}/initrd.img").exists()


def test_a_reader_never_sees_a_torn_file_when_the_publisher_is_killed(a_built_site: Site) -> None:
    """SIGKILL `doit publish` mid-copy, again and again, while a reader reads the monolithic initrd."""
    target = tree(a_built_site) / "hosts/notus/initrd.img"
    versions = {hashlib.sha256(target.read_bytes()).hexdigest()}
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(hashlib.sha256(target.read_bytes()).hexdigest())
            except FileNotFoundError:
                seen.append("missing")

    t = threading.Thread(target=reader)
    t.start()
    killed = 0
    try:
        for i in range(8):
            a_built_site.edit("nodes/notus.yaml", f"net.ifnames=0{', x' * i}]", f"net.ifnames=0{', x' * (i + 1)}]")
            a_built_site.doit("render", "overlay")
            versions.add(hashlib.sha256((a_built_site.build / "hosts/notus/initrd.img").read_bytes()).hexdigest())
            cmd = [sys.executable, "-m", "doit", "-f", str(a_built_site.dodo), "-d", str(a_built_site.root), "publish:hosts"]  # only notus changed
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # kill it the moment its temporary copy exists: mid-copy, whatever the machine's speed
            deadline = time.monotonic() + 60
            while p.poll() is None and time.monotonic() < deadline:
                if any(".tmp." in name for name in os.listdir(target.parent)):
                    p.send_signal(signal.SIGKILL)
                    killed += 1
                    break
                time.sleep(0.0005)
            p.wait()
    finally:
        stop.set()
        t.join()
    assert killed, "the publisher always finished before the kill; nothing was tested"
    assert len(seen) > 20
    assert set(seen) <= versions, "a reader saw a file that is no complete version"
    a_built_site.doit("publish")
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256((a_built_site.build / "hosts/notus/initrd.img").read_bytes()).hexdigest()
    assert not [p for p in tree(a_built_site).rglob(".*") if ".tmp." in p.name], "temporary files left behind"


def test_the_publisher_marks_the_tree_it_owns_so_the_inventory_keeps_accepting_it(a_built_site: Site) -> None:
    """A target with files in it is refused unless it carries the marker; the publisher writes
    the marker into the tree it creates, so a file someone adds beside it changes nothing."""
    root = tree(a_built_site)
    marker = root / inventory.TREE_MARKER
    assert marker.is_file() and marker.stat().st_mode & 0o777 == 0o644
    (root / "notes.txt").write_text("an operator's notes\n")
    inventory.load(a_built_site.root, use_cache=False)  # no InventoryError: the marker says it is ours
    marker.unlink()
    with pytest.raises(inventory.InventoryError, match="no .cephboot-tree marker"):
        inventory.load(a_built_site.root, use_cache=False)
