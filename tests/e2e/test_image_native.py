"""Image-native mode for real (issue 3): a Debian root's own update-initramfs makes an initrd that boots it.

A copy of the suite's debootstrap root (initramfs-tools, the Debian kernel, ceph-common) is a
host's `image_root`. `doit imagenative --only <host>` installs the hook, the local-top script and the
host's files into it and runs the root's own `update-initramfs` confined (tasks/confine.py). The initrd that
lands in the root's /boot is read with lsinitramfs; then that kernel and initrd, put in the site's
boot tree on CephFS with a boot.ipxe that names them, boot a guest whose root is the RBD image
provisioned from the same tree: the site's `doit dnsmasq` config on the boot network hands iPXE
that boot.ipxe, nginx serves the tree from a read-only view. A hook
planted in such a root, run by its real mkinitramfs, reaches nothing of the build machine.
"""
from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from image_escape import bait
from tasks.imagenative import update_initramfs

from .boot_tree import WEB_GROUP, NginxServer, WebServerView
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .dnsmasq import BootNetwork
from .e2e_site import GUEST_GATEWAY
from .netns import NetworkNamespace
from .provision_site import ProvisionSite, debian_root, kernel_of, publish_into, site_front_end
from .qemu_vm import QemuMachine

pytestmark = pytest.mark.e2e

HOST = "native"
MAC = "52:54:00:e7:00:01"
BOOT_TREE = "/image-native-tree"
HTTP_PORT = 8082
BOOT_TIMEOUT = 300
ADDRESS = "198.51.100.40"
INIT = "sbin/cephboot-e2e-init"

# PID 1 of the booted image: which host, on which root; then power off (minbase has no
# poweroff without a running init system; sysrq needs none).
INIT_SCRIPT = """#!/bin/sh
# Put here by tests/e2e/test_image_native.py: report, then power off.
read -r host </etc/hostname
root=$(awk '$2 == "/" { device = $1 } END { print device }' /proc/mounts)
echo "CEPHBOOT-E2E-OK host=${host} root=${root}"
sync
echo o >/proc/sysrq-trigger
sleep 60
"""


@dataclass
class NativeHost:
    site: ProvisionSite
    root: Path
    kver: str
    build: subprocess.CompletedProcess[str]
    tree: Path  # the boot tree, as the publisher writes it
    http: NginxServer
    bridge: BootNetwork

    @property
    def initrd(self) -> Path:
        return self.root / "boot" / f"initrd.img-{self.kver}"

    def rendered(self, rel: str) -> bytes:
        return (self.site.root / "build" / "hosts" / HOST / rel).read_bytes()


@pytest.fixture(scope="module")
def a_native_host(
    a_ceph_cluster: CephCluster, a_network_namespace: NetworkNamespace, a_boot_bridge: BootNetwork,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NativeHost]:
    """A Debian root as `image_root`, after `doit imagenative --only native`; its image provisioned from it;
    the site's boot tree served by nginx and its dnsmasq on the bridge."""
    work = tmp_path_factory.mktemp("image-native")
    root = work / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", f"{debian_root()}/.", f"{root}/"], check=True)
    (root / INIT).write_text(INIT_SCRIPT)
    (root / INIT).chmod(0o755)
    a_ceph_cluster.make_fs_dir(BOOT_TREE)
    with WebServerView(a_ceph_cluster, BOOT_TREE, work, "cephboot-web-native") as view:
        publish = publish_into(a_ceph_cluster, view, BOOT_TREE)
        site = ProvisionSite(
            a_ceph_cluster, a_network_namespace, work / "site", BOOT_TREE,
            f"http://{a_ceph_cluster.address}:{HTTP_PORT}",
            {"rbd": {"pool": RBD_POOL, "size": "2G", "features": ["layering"]}}, publish=publish,
        )
        site.add_host(HOST, MAC, image_root=str(root), rootfs={"source": str(root)},
                      nics={"ceph": {"macs": [MAC], "address": f"{ADDRESS}/24", "gateway": GUEST_GATEWAY}},
                      map={"deadline": 90})
        build = site.doit("imagenative", "--only", HOST)
        site.doit("provision", "--only", HOST)  # namespace, client, /boot; the image from the tree as it is now
        with site_front_end(site, view, a_boot_bridge, "native", HTTP_PORT) as http:
            yield NativeHost(site, root, kernel_of(root), build, Path(publish["target"]), http, a_boot_bridge)
    a_ceph_cluster.rbd("rm", "--no-progress", f"{RBD_POOL}/{HOST}/root", check=False)


def _listing(initrd: Path) -> dict[str, str]:
    """Member path -> mode string (``-rw-------``), as lsinitramfs -l shows them."""
    out = subprocess.run(["lsinitramfs", "-l", str(initrd)], capture_output=True, text=True, check=True).stdout
    members = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 9 and re.fullmatch(r"[-dlcbps][-rwxsStT]{9}", fields[0]):
            members[fields[8]] = fields[0]
    return members


def test_the_roots_own_update_initramfs_builds_an_initrd_with_the_host_inside(a_native_host: NativeHost, tmp_path: Path) -> None:
    host = a_native_host
    assert f"  - imagenative --only {HOST}" in host.build.stdout.splitlines(), host.build.stdout
    assert oct(host.initrd.stat().st_mode & 0o777) == "0o600", "the initrd holds the keyring: UMASK=0077"
    members = _listing(host.initrd)
    keyring = f"etc/ceph/ceph.client.{HOST}.keyring"
    assert members.get(keyring) == "-rw-------", (keyring, members.get(keyring))
    for path in ("conf/conf.d/cephboot", "scripts/local-top/cephboot", "scripts/local-top/ORDER", "etc/ceph/ceph.conf"):
        assert path in members, path
    for program in ("rbd", "mount.ceph"):
        assert any(re.fullmatch(rf"(usr/)?s?bin/{re.escape(program)}", m) for m in members), program
    for module in ("rbd", "libceph"):
        assert any(re.fullmatch(rf"(usr/)?lib/modules/{re.escape(host.kver)}/.*/{module}\.ko(\.\w+)?", m) for m in members), module

    out = tmp_path / "initrd"
    subprocess.run(["unmkinitramfs", str(host.initrd), str(out)], check=True)
    main = out / "main" if (out / "main").is_dir() else out
    assert "/scripts/local-top/cephboot " in (main / "scripts/local-top/ORDER").read_text()
    assert (main / "conf/conf.d/cephboot").read_bytes() == host.rendered("initramfs-tools/conf.d/cephboot")
    assert (main / "etc/ceph/ceph.conf").read_bytes() == host.rendered("rootfs/etc/ceph/ceph.conf")
    assert (main / keyring).read_bytes() == host.rendered(f"rootfs/{keyring}")
    assert {"rbd", "libceph"} <= set((main / "conf/modules").read_text().split())


def test_a_second_run_has_nothing_to_do(a_native_host: NativeHost) -> None:
    again = a_native_host.site.doit("imagenative", "--only", HOST)
    assert f"  - imagenative --only {HOST}" not in again.stdout.splitlines(), again.stdout


def test_the_roots_kernel_and_initrd_boot_it_from_rbd(
    a_native_host: NativeHost, a_network_namespace: NetworkNamespace, bridge_guest: Callable[..., QemuMachine],
) -> None:
    host = a_native_host
    # The root's own kernel and initrd in the boot tree, with the boot.ipxe the site's dnsmasq
    # hands iPXE (pxe.http_base/boot.ipxe) naming them; the initrd holds the keyring: readable
    # by the web server's group only, as the publisher leaves host layers.
    url = f"http://{a_network_namespace.address}:{HTTP_PORT}"
    args = f"root=/dev/rbd0 rootfstype=ext4 console=ttyS0,115200n8 panic=10 init=/{INIT}"
    files = {"vmlinuz": (host.root / "boot" / f"vmlinuz-{host.kver}").read_bytes(), "initrd.img": host.initrd.read_bytes(),
             "boot.ipxe": f"#!ipxe\nkernel {url}/vmlinuz {args}\ninitrd {url}/initrd.img\nboot\n".encode()}
    for name, data in files.items():
        path = host.tree / name
        path.write_bytes(data)
        os.chown(path, 0, grp.getgrnam(WEB_GROUP).gr_gid)
        path.chmod(0o640 if name == "initrd.img" else 0o644)
    mark = host.http.mark()
    guest = bridge_guest([MAC])
    guest.wait_for(rf"^CEPHBOOT-E2E-OK host={HOST} root=/dev/rbd0$", BOOT_TIMEOUT)
    guest.wait_exit(60)
    console = guest.console()
    assert f"Linux version {host.kver} " in console, "the root's own kernel booted"
    assert re.search(rf"^cephboot: mapped {RBD_POOL}/{HOST}/root at /dev/rbd0$", console, re.MULTILINE), console[-3000:]
    assert host.bridge.acks("native", MAC)[-1:] == [ADDRESS]
    fetched = [(r.path, r.status, r.client) for r in host.http.requests_since(mark)]
    assert fetched == [(f"/{name}", 200, ADDRESS) for name in ("boot.ipxe", "vmlinuz", "initrd.img")], fetched


def test_a_hook_in_the_image_reaches_nothing_of_the_build_machine(tmp_path: Path) -> None:
    """Issue 16, finding 11, with the root's real update-initramfs and mkinitramfs running the hook as root."""
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", f"{debian_root()}/.", f"{root}/"], check=True)
    shutil.copy2("/bin/busybox", root / "usr/local/bin/busybox")  # static: the hook's tools, whatever the image has
    kver = kernel_of(root)
    initrd = root / "boot" / f"initrd.img-{kver}"
    old = initrd.stat()
    with bait(tmp_path / "build-machine") as outside:
        outside.plant(root, "/usr/local/bin/busybox")
        assert update_initramfs(root) == [kver]
        outside.assert_nothing_got_out(root)
    new = initrd.stat()
    assert (new.st_ino, new.st_mtime_ns) != (old.st_ino, old.st_mtime_ns), "the legitimate build still made its initrd"
    members = _listing(initrd)
    assert any(re.fullmatch(rf"(usr/)?lib/modules/{re.escape(kver)}/modules\.dep", m) for m in members), sorted(members)[:20]
