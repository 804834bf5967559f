"""A new host, from a YAML file to a machine that boots (issue 6): `doit provision --only <host>`, then `doit`.

The host's root comes from debootstrap (the suite's cached Debian root), is provisioned into its
RBD image, and its boot files are published into a boot tree of this site's own on CephFS
(`publish:site` removes host folders that are not in its inventory, so it cannot share the other
suites' trees), served as a site serves it: nginx of its own from a read-only view, and the site's
`doit dnsmasq` config as the DHCP server of the boot network (the bridge). The guest PXE-boots
through the whole iPXE chain. The booted root is the unmodified Debian tree, so its init is a program it has:
`init=/usr/bin/head -- ... /etc/hostname /proc/mounts` shows the host name provisioning wrote and
what is mounted on `/`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from bench.run import steps, tasks_ran  # one parser of doit's output for tests and bench

from .boot_tree import NginxServer, WebServerView
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .dnsmasq import BootNetwork
from .e2e_site import GUEST_GATEWAY
from .netns import NetworkNamespace
from .provision_site import ProvisionSite, debian_root, publish_into, site_front_end
from .qemu_vm import QemuMachine

pytestmark = pytest.mark.e2e

HOST = "deb-boot"
MAC = "52:54:00:e8:00:01"
BOOT_TREE = "/provisioned-tree"
HTTP_PORT = 8083
BOOT_TIMEOUT = 300
ADDRESS = "198.51.100.41"


@pytest.fixture(scope="module")
def a_provisioned_and_published_host(
    a_ceph_cluster: CephCluster, a_network_namespace: NetworkNamespace, a_boot_bridge: BootNetwork,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProvisionSite, NginxServer, dict[str, str]]]:
    """`doit provision --only deb-boot` then `doit`, as the README says; the tree served by nginx
    from a read-only view, the site's dnsmasq on the bridge."""
    work = tmp_path_factory.mktemp("provisioned-boot")
    a_ceph_cluster.make_fs_dir(BOOT_TREE)
    # debootstrap needs the build machine's network, and doit runs inside the test's
    # namespace: fill the suite's cache out here first (nothing to do when it is full).
    debian_root()
    with WebServerView(a_ceph_cluster, BOOT_TREE, work, "cephboot-web-provisioned") as view:
        site = ProvisionSite(
            a_ceph_cluster, a_network_namespace, work / "site", BOOT_TREE,
            f"http://{a_network_namespace.address}:{HTTP_PORT}",
            {"rbd": {"pool": RBD_POOL, "size": "2G", "features": ["layering"]},
             "kernel_args": ["console=ttyS0,115200n8", "panic=10"], "map": {"deadline": 90}},
            publish=publish_into(a_ceph_cluster, view, BOOT_TREE), kernels={"nic_modules": ["virtio_net", "virtio_pci"]},
        )
        # Everything after -- goes to init: the root's own head(1) shows its host name and mounts.
        site.add_host(HOST, MAC, nics={"ceph": {"macs": [MAC], "address": f"{ADDRESS}/24", "gateway": GUEST_GATEWAY}},
                      **{"+kernel_args": ["init=/usr/bin/head", "--", "-n50", "/etc/hostname", "/proc/mounts"]})
        runs = {"provision": site.doit("provision", "--only", HOST).stdout, "doit": site.doit().stdout}
        with site_front_end(site, view, a_boot_bridge, "provisioned", HTTP_PORT) as http:
            yield site, http, runs
    a_ceph_cluster.rbd("rm", "--no-progress", f"{RBD_POOL}/{HOST}/root", check=False)


def test_provisioning_writes_a_debian_root_with_its_own_initrd(
    a_provisioned_and_published_host: tuple[ProvisionSite, NginxServer, dict[str, str]],
) -> None:
    out = a_provisioned_and_published_host[2]["provision"]
    assert re.search(rf"^  - provision --only {HOST}\n(    .*\n)*    rootfs: update-initramfs inside the root for 6\.1\.\S+-amd64$", out, re.MULTILINE), out
    assert re.search(rf"^  - provision --only {HOST}\n(    .*\n)*    wrote root image {RBD_POOL}/{HOST}/root \(2G\) from debootstrap bookworm \+ .*\biproute2\b", out,
                     re.MULTILINE), out
    published = a_provisioned_and_published_host[2]["doit"]
    assert {f"publish:{HOST}", "publish:site"} <= steps(tasks_ran(published)), published


def test_the_provisioned_root_boots_through_the_ipxe_chain(
    a_provisioned_and_published_host: tuple[ProvisionSite, NginxServer, dict[str, str]],
    a_boot_bridge: BootNetwork, bridge_guest: Callable[..., QemuMachine],
) -> None:
    site, http, _ = a_provisioned_and_published_host
    mark = http.mark()
    guest = bridge_guest([MAC])
    guest.wait_for(r"^/dev/rbd0 / ext4 ", BOOT_TIMEOUT)
    console = guest.console()
    assert re.search(rf"^==> /etc/hostname <==\n{HOST}$", console, re.MULTILINE), console[-3000:]
    assert re.search(rf"^cephboot: mapped {RBD_POOL}/{HOST}/root at /dev/rbd0$", console, re.MULTILINE), console[-3000:]
    requests = http.requests_since(mark)
    fetched = {r.path for r in requests if r.status == 200}
    assert {"/boot.ipxe", f"/ipxe/by-mac/{MAC.replace(':', '-')}.ipxe", f"/hosts/{HOST}/boot.ipxe",
            f"/hosts/{HOST}/overlay.cpio"} <= fetched, fetched
    # the site's dnsmasq gave iPXE its reservation and boot.ipxe: every request came from that address
    assert ADDRESS in a_boot_bridge.acks("provisioned", MAC)
    assert {r.client for r in requests} == {ADDRESS}, requests
