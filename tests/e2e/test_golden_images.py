"""Golden images (issue 14) on the session's cluster: one image, a copy-on-write clone per host.

`doit image:base` writes a small busybox root (tests/e2e/root_image.py) once into `golden-base`;
`doit provision` clones it for two hosts with their own files; `doit` publishes them into a boot
tree of this site's own, served by nginx of its own from a read-only view, with the site's
`doit dnsmasq` config as the boot network's DHCP server. Each guest PXE-boots its clone;
the root's init (tests/e2e/rootfs/sbin/init) prints its host name, the golden version it was
cloned from and what earlier boots of the same root wrote, then writes one line more.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from .boot_tree import NginxServer, WebServerView
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .dnsmasq import BootNetwork
from .e2e_site import GUEST_GATEWAY
from .netns import NetworkNamespace
from .provision_site import ProvisionSite, publish_into, said, site_front_end
from .qemu_vm import QemuMachine
from .root_image import build_root_tree

pytestmark = pytest.mark.e2e


def _of(out: str, task: str, host: str) -> str:
    """What `doit TASK` printed of ``host`` (the lines under its `  - TASK --only HOST` line)."""
    return "\n".join(said(out, task, host))


BOOT_TREE = "/golden-tree"
HTTP_PORT = 8085
BOOT_TIMEOUT = 300
HOSTS = {"gold-a": ("52:54:00:e9:00:01", "198.51.100.51/24"), "gold-b": ("52:54:00:e9:00:02", "198.51.100.52/24")}
STATELESS = ("gold-s", "52:54:00:e9:00:03", "198.51.100.53/24")  # boots the first version read-only, under a tmpfs overlay


class GoldenSite:
    def __init__(self, site: ProvisionSite, tree: Path, bridge: BootNetwork) -> None:
        self.site, self.tree, self.bridge = site, tree, bridge
        self.http: NginxServer | None = None
        self.runs: dict[str, str] = {}

    def set_version(self, version: str) -> None:
        (self.tree / "etc" / "e2e-version").write_text(f"{version}\n")

    def boot(self, bridge_guest: Callable[..., QemuMachine], host: str) -> str:
        """Boot ``host`` on the bridge: its reserved address from the site's dnsmasq, its files
        from the site's nginx at that address; its console."""
        assert self.http is not None
        stateless = host == STATELESS[0]
        mac, address = (STATELESS[1:] if stateless else HOSTS[host])
        address = address.split("/")[0]
        mark = self.http.mark()
        guest = bridge_guest([mac])
        guest.wait_for(rf"CEPHBOOT-E2E-(OK|FAIL) host={host}", BOOT_TIMEOUT)
        console = guest.console()
        # init mounts a stateless host's root as the overlay local-top prepared (its source is "overlay")
        assert f"CEPHBOOT-E2E-OK host={host} root={'overlay' if stateless else '/dev/rbd0'}" in console, console[-3000:]
        guest.wait_exit(60)  # off the bridge before the next guest of the same MAC comes
        assert self.bridge.acks("golden", mac)[-1:] == [address]
        fetched = [(r.path, r.status, r.client) for r in self.http.requests_since(mark)]
        assert (f"/hosts/{host}/overlay.cpio", 200, address) in fetched, fetched
        return console


def _writes(console: str, host: str) -> list[str]:
    m = re.search(rf"^CEPHBOOT-E2E-WRITES host={host} before=\[(.*)\]", console, re.MULTILINE)
    assert m, console[-3000:]
    return m.group(1).split()


def _version(console: str, host: str) -> str:
    m = re.search(rf"^CEPHBOOT-E2E-VERSION host={host} (\S+)", console, re.MULTILINE)
    assert m, console[-3000:]
    return m.group(1)


@pytest.fixture(scope="module")
def a_golden_site(
    a_ceph_cluster: CephCluster, a_network_namespace: NetworkNamespace, a_boot_bridge: BootNetwork,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GoldenSite]:
    """Golden image `base` (v1) built, two hosts cloned from it, provisioned and published."""
    work = tmp_path_factory.mktemp("golden")
    a_ceph_cluster.make_fs_dir(BOOT_TREE)
    empty = work / "no-rendered-files"
    empty.mkdir()
    tree = work / "tree"
    build_root_tree(tree, "template", empty)
    (tree / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
    (tree / "usr" / "sbin" / "update-initramfs").write_text("#!/bin/sh\n")  # initramfs-tools' entry point
    with WebServerView(a_ceph_cluster, BOOT_TREE, work, "cephboot-web-golden") as view:
        site = ProvisionSite(
            a_ceph_cluster, a_network_namespace, work / "site", BOOT_TREE, f"http://{a_network_namespace.address}:{HTTP_PORT}",
            {"rbd": {"pool": RBD_POOL}, "kernel_args": ["console=ttyS0,115200n8", "panic=10"], "map": {"deadline": 90}},
            publish=publish_into(a_ceph_cluster, view, BOOT_TREE), kernels={"nic_modules": ["virtio_net", "virtio_pci"]},
        )
        (site.hosts / "images").mkdir()
        (site.hosts / "images" / "base.yaml").write_text(yaml.safe_dump({"rootfs": {"source": str(tree)}, "size": "64M", "pool": RBD_POOL}))
        for name, (mac, address) in HOSTS.items():
            site.add_host(name, mac, root={"image": "base"}, nics={"ceph": {"macs": [mac], "address": address, "gateway": GUEST_GATEWAY}})
        golden = GoldenSite(site, tree, a_boot_bridge)
        golden.set_version("v1")
        golden.runs["image"] = site.doit("image:base").stdout
        golden.runs["image again"] = site.doit("image:base").stdout
        # a stateless host names the version it boots: the one `doit image:base` just printed
        built = re.search(r"^image:base: built \S+@([0-9a-f]{16}) ", golden.runs["image"], re.MULTILINE)
        assert built, golden.runs["image"]
        name, mac, address = STATELESS
        site.add_host(name, mac, root={"image": "base", "mode": "stateless", "snapshot": built.group(1)},
                      nics={"ceph": {"macs": [mac], "address": address, "gateway": GUEST_GATEWAY}})
        golden.runs["provision"] = site.doit("provision").stdout
        golden.runs["doit"] = site.doit().stdout
        with site_front_end(site, view, a_boot_bridge, "golden", HTTP_PORT) as http:
            golden.http = http
            yield golden
    for name in HOSTS:
        for image in a_ceph_cluster.rbd("ls", f"{RBD_POOL}/{name}").stdout.split():
            a_ceph_cluster.rbd("rm", "--no-progress", f"{RBD_POOL}/{name}/{image}", check=False)


def _wait_unmapped(cluster: CephCluster, spec: str, timeout: float = 90) -> None:
    """A guest that powered off holds its watch until the OSD times it out (osd_client_watch_timeout, 30 s)."""
    deadline = time.monotonic() + timeout
    while json.loads(cluster.rbd("status", "--format", "json", spec).stdout).get("watchers"):
        assert time.monotonic() < deadline, f"{spec} still has watchers after {timeout} s"
        time.sleep(2)


def _parent(cluster: CephCluster, spec: str) -> str:
    info = yaml.safe_load(cluster.rbd("info", "--format", "json", spec).stdout)
    p = info.get("parent") or {}
    return f"{p.get('pool')}/{p.get('pool_namespace')}/{p.get('image')}@{p.get('snapshot')}" if p else ""


def test_a_golden_image_is_built_once_and_each_host_gets_a_clone_of_it(a_golden_site: GoldenSite, a_ceph_cluster: CephCluster) -> None:
    runs = a_golden_site.runs
    built = re.search(rf"^image:base: built ({RBD_POOL}/golden-base/base-([0-9a-f]{{16}})@\2) \(64M, layering\)$", runs["image"], re.MULTILINE)
    assert built, runs["image"]
    assert f"image:base: {built.group(1)} is current (built from the inventory's inputs): nothing to build" in runs["image again"]
    for name in HOSTS:
        assert re.search(rf"^cloned {re.escape(built.group(1))} as root image {RBD_POOL}/{name}/root with its \d+ host files$",
                         _of(runs["provision"], "provision", name), re.MULTILINE), runs["provision"]
        assert _parent(a_ceph_cluster, f"{RBD_POOL}/{name}/root") in (built.group(1),)
        caps = a_ceph_cluster.ceph_json("auth", "get", f"client.{name}")[0]["caps"]["osd"]
        assert f"profile rbd-read-only pool={RBD_POOL} namespace=golden-base" in caps, caps
    again = a_golden_site.site.doit("provision").stdout
    assert "nothing to change" in again and "cloned" not in again, again
    verify = a_golden_site.site.doit("verify", "--only", "gold-a").stdout
    assert re.search(rf"^ok +image parent: {RBD_POOL}/gold-a/root is a clone of {re.escape(built.group(1))}$", _of(verify, "verify", "gold-a"), re.MULTILINE), verify
    assert re.search(r"^ok +client caps: ", _of(verify, "verify", "gold-a"), re.MULTILINE), verify


def test_two_clones_boot_with_their_own_host_names_and_keep_their_own_writes(
    a_golden_site: GoldenSite, bridge_guest: Callable[..., QemuMachine]
) -> None:
    first = a_golden_site.boot(bridge_guest, "gold-a")
    assert "CEPHBOOT-E2E-ROOT host=gold-a root=/dev/rbd0" in first
    second = a_golden_site.boot(bridge_guest, "gold-a")
    assert len(_writes(second, "gold-a")) == len(_writes(first, "gold-a")) + 1, "the first boot's write survived the reboot"
    assert all(w.startswith("gold-a@") for w in _writes(second, "gold-a"))
    other = a_golden_site.boot(bridge_guest, "gold-b")
    assert "CEPHBOOT-E2E-ROOT host=gold-b root=/dev/rbd0" in other
    assert not any(w.startswith("gold-a@") for w in _writes(other, "gold-b")), "a clone never sees another clone's writes"


def test_a_host_client_reads_its_golden_image_but_cannot_write_it_or_read_another_clone(
    a_golden_site: GoldenSite, a_ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    a = a_golden_site.site.client("gold-a")
    snap = _parent(a_ceph_cluster, f"{RBD_POOL}/gold-a/root")
    parent = snap.split("@")[0]
    assert a_ceph_cluster.rbd("info", parent, client=a, check=False).returncode == 0, "a clone's client reads its parent"
    # the whole clone, its parent's extents included, read with the host's own key
    assert a_ceph_cluster.rbd("export", "--no-progress", f"{RBD_POOL}/gold-a/root", str(tmp_path / "a.img"), client=a, check=False).returncode == 0
    assert (tmp_path / "a.img").stat().st_size == 64 << 20
    write = a_ceph_cluster.rbd("bench", "--io-type", "write", "--io-total", "4096", "--io-size", "4096", parent, client=a, check=False)
    assert write.returncode != 0, f"the host wrote its golden image: {write.stdout}"
    snap_create = a_ceph_cluster.rbd("snap", "create", f"{parent}@by-gold-a", client=a, check=False)
    assert snap_create.returncode != 0, "the host made a snapshot of its golden image"
    for args in (("info", f"{RBD_POOL}/gold-b/root"), ("export", "--no-progress", f"{RBD_POOL}/gold-b/root", str(tmp_path / "b.img"))):
        assert a_ceph_cluster.rbd(*args, client=a, check=False).returncode != 0, f"gold-a could {args[0]} gold-b's clone"
    assert a_ceph_cluster.rbd("info", f"{RBD_POOL}/gold-a/root", client=a_golden_site.site.client("gold-b"), check=False).returncode != 0


def test_a_golden_update_moves_only_the_canary_and_a_rollback_brings_back_its_old_root(
    a_golden_site: GoldenSite, a_ceph_cluster: CephCluster, bridge_guest: Callable[..., QemuMachine]
) -> None:
    site = a_golden_site.site
    before = a_golden_site.boot(bridge_guest, "gold-a")
    assert _version(before, "gold-a") == "v1"
    old_writes = _writes(before, "gold-a")
    old = _parent(a_ceph_cluster, f"{RBD_POOL}/gold-a/root")
    a_golden_site.set_version("v2")
    built = site.doit("image:base").stdout
    new = re.search(rf"^image:base: built ({RBD_POOL}/golden-base/base-([0-9a-f]{{16}})@\2) .*changed since base-[0-9a-f]+: rootfs.source content",
                    built, re.MULTILINE)
    assert new and new.group(1) != old, built
    assert re.search(rf"^image:base: older version {re.escape(old)}: kept, the root of 2 clone\(s\)", built, re.MULTILINE), built
    provision = site.doit("provision").stdout
    assert "is newer: `doit move-root --only gold-a` moves it" in provision and "cloned" not in provision, provision
    _wait_unmapped(a_ceph_cluster, f"{RBD_POOL}/gold-a/root")
    moved = site.doit("move-root", "--only", "gold-a").stdout
    assert re.search(rf"^root was a clone of {re.escape(old)}, is now a clone of {re.escape(new.group(1))}; "
                     rf"the former root is kept as {RBD_POOL}/gold-a/root\.kept-\d{{8}}T\d{{6}}Z", _of(moved, "move-root", "gold-a"), re.MULTILINE), moved
    assert _parent(a_ceph_cluster, f"{RBD_POOL}/gold-b/root") == old, "only the canary moved"
    behind = site.doit("verify", "--only", "gold-b", check=False)
    assert behind.returncode != 0 and re.search(
        rf"^MISMATCH image parent: {RBD_POOL}/gold-b/root is a clone of {re.escape(old)}; the current version is "
        rf"{re.escape(new.group(1))} \(`doit move-root --only gold-b`\)$", _of(behind.stdout, "verify", "gold-b"), re.MULTILINE), behind.stdout
    after = a_golden_site.boot(bridge_guest, "gold-a")
    assert _version(after, "gold-a") == "v2" and _writes(after, "gold-a") == [], "the new clone is the new version, fresh"
    _wait_unmapped(a_ceph_cluster, f"{RBD_POOL}/gold-a/root")
    back = site.doit("rollback-root", "--only", "gold-a").stdout
    assert re.search(rf"^root was a clone of {re.escape(new.group(1))}, is again {RBD_POOL}/gold-a/root\.kept-", _of(back, "rollback-root", "gold-a"), re.MULTILINE), back
    rolled = a_golden_site.boot(bridge_guest, "gold-a")
    assert _version(rolled, "gold-a") == "v1"
    assert _writes(rolled, "gold-a")[:len(old_writes) + 1] == old_writes + _writes(rolled, "gold-a")[len(old_writes):len(old_writes) + 1]
    assert len(_writes(rolled, "gold-a")) == len(old_writes) + 1, "the old root is back with its writes"


def test_a_stateless_host_gets_no_image_and_its_client_only_reads_the_golden_image(
    a_golden_site: GoldenSite, a_ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    name = STATELESS[0]
    provision = a_golden_site.runs["provision"]
    snap = re.search(rf"^image:base: built ({RBD_POOL}/golden-base/base-([0-9a-f]{{16}})@\2) ", a_golden_site.runs["image"], re.MULTILINE)
    assert snap, a_golden_site.runs["image"]
    assert re.search(rf"^.*root {re.escape(snap.group(1))} mapped read-only \(stateless: no image of its own\)", _of(provision, "provision", name), re.MULTILINE), provision
    assert name not in a_ceph_cluster.rbd("namespace", "ls", RBD_POOL).stdout.split(), "a stateless host got a namespace of its own"
    caps = a_ceph_cluster.ceph_json("auth", "get", f"client.{name}")[0]["caps"]["osd"]
    assert caps.startswith(f"profile rbd-read-only pool={RBD_POOL} namespace=golden-base, allow rw pool="), caps
    verify = a_golden_site.site.doit("verify", "--only", name).stdout
    assert re.search(rf"^ok +root: {re.escape(snap.group(1))} exists and is frozen", _of(verify, "verify", name), re.MULTILINE), verify
    s = a_golden_site.site.client(name)
    parent = snap.group(1).split("@")[0]
    assert a_ceph_cluster.rbd("export", "--no-progress", snap.group(1), str(tmp_path / "s.img"), client=s, check=False).returncode == 0, \
        "a stateless host reads its golden snapshot"
    write = a_ceph_cluster.rbd("bench", "--io-type", "write", "--io-total", "4096", "--io-size", "4096", parent, client=s, check=False)
    assert write.returncode != 0, f"the stateless host wrote its golden image: {write.stdout}"
    assert a_ceph_cluster.rbd("create", "--size", "4M", f"{RBD_POOL}/golden-base/by-{name}", client=s, check=False).returncode != 0, \
        "the stateless host created an image in the golden namespace"
    assert a_ceph_cluster.rbd("info", f"{RBD_POOL}/gold-a/root", client=s, check=False).returncode != 0, "the stateless host read a clone"
    for task in ("move-root", "rollback-root"):  # named alone: refused at once, saying how it moves
        run = a_golden_site.site.doit(task, "--only", name, check=False)
        assert run.returncode == 1 and (
            f"cephboot: {task} --only {name}: host {name!r} has no root of its own (stateless: it boots golden-base/base-{snap.group(2)} read-only; "
            f"root.snapshot (hosts/nodes/{name}.yaml) moves it and rolls it back, at its next boot after `doit`), and {task} works only on "
            "the hosts that do; those are: gold-a, gold-b") in run.stdout.splitlines(), run.stdout + run.stderr
        assert f"  - {task} --only {name}" not in run.stdout, run.stdout


def test_a_stateless_host_boots_the_golden_snapshot_with_its_own_name_and_its_writes_vanish_on_reboot(
    a_golden_site: GoldenSite, a_ceph_cluster: CephCluster, bridge_guest: Callable[..., QemuMachine]
) -> None:
    name = STATELESS[0]
    snap = re.search(rf"^image:base: built ({RBD_POOL}/golden-base/base-[0-9a-f]{{16}})@([0-9a-f]{{16}}) ", a_golden_site.runs["image"], re.MULTILINE)
    assert snap, a_golden_site.runs["image"]
    first = a_golden_site.boot(bridge_guest, name)
    assert "CEPHBOOT-E2E-ROOT host=gold-s root=overlay" in first, "its own /etc/hostname, from its layer, over the golden image's"
    assert "cephboot: stateless root: " in first and "read-only on /run/cephboot/lower" in first, first[-3000:]
    assert _version(first, name) == "v1", "it boots the version it names"
    assert _writes(first, name) == []
    second = a_golden_site.boot(bridge_guest, name)
    assert _writes(second, name) == [], "a stateless host's writes are gone after a reboot"
    assert "CEPHBOOT-E2E-BOOT host=gold-s" in second, "its fstab and keyring (from its layer) mount its /boot"
    changed = a_ceph_cluster.rbd("diff", "--format", "json", "--from-snap", snap.group(2), snap.group(1)).stdout
    assert json.loads(changed) == [], f"the golden image was written since it was frozen: {changed}"
