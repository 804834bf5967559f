"""Issue 4's scenarios: machines PXE-boot from the test cluster with what `doit` built."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from .boot_tree import CephFuseMount, StaticHttpServer
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .e2e_site import E2ESite
from .qemu_vm import QemuMachine

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 300


def hexhyp(mac: str) -> str:
    return mac.replace(":", "-")


@pytest.fixture(scope="module")
def the_e2e_site(
    a_ceph_cluster: CephCluster,
    a_boot_tree_mount: CephFuseMount,
    an_http_server: StaticHttpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2ESite]:
    """Every scenario's host, provisioned, built and published by one `doit` run."""
    workdir = tmp_path_factory.mktemp("site")
    site = E2ESite(a_ceph_cluster, a_boot_tree_mount, an_http_server, workdir, RBD_POOL)
    site.add_host("by-mac", ["52:54:00:e2:01:01"])
    site.doit()
    images = tmp_path_factory.mktemp("images")
    for name in site.hosts:
        site.install_root_image(name, images)
    yield site


def test_a_machine_boots_by_mac_through_the_whole_chain(
    the_e2e_site: E2ESite,
    qemu_boot: Callable[..., QemuMachine],
    an_http_server: StaticHttpServer,
    a_boot_tree_mount: CephFuseMount,
) -> None:
    host = the_e2e_site.hosts["by-mac"]
    mark = an_http_server.mark()
    guest = qemu_boot(a_boot_tree_mount.mountpoint, host.macs, str(uuid.uuid4()))
    guest.wait_for(r"^CEPHBOOT-E2E-OK host=by-mac root=/dev/rbd0$", BOOT_TIMEOUT)
    guest.wait_exit(30)
    fetched = [(r.path, r.status) for r in an_http_server.requests_since(mark)]
    assert (f"/ipxe/by-mac/{hexhyp(host.macs[0])}.ipxe", 200) in fetched
    assert ("/hosts/by-mac/overlay.cpio", 200) in fetched
    booted = a_boot_tree_mount.mountpoint / "hosts" / "by-mac" / "e2e-booted"
    assert booted.read_text() == "by-mac booted with root /dev/rbd0\n"
