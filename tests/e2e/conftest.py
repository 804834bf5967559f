"""Fixtures of the end-to-end suite: namespace, Ceph cluster, boot tree, HTTP server, bridge, guests.

Every expensive fixture is session-scoped: one cluster serves all scenarios. Everything a
fixture starts, it stops by PID at teardown, and the namespace is deleted, also when a
test fails. With ``CEPHBOOT_E2E_REQUIRED=1`` (CI sets it) any skip here is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tasks.inventory import TREE_MARKER

from .boot_tree import CephFuseMount, NginxServer, WebServerView
from .ceph_cluster import CephCluster
from .dnsmasq import BootNetwork
from .netns import NetworkNamespace
from .qemu_vm import QemuMachine

REQUIRED_ENV = "CEPHBOOT_E2E_REQUIRED"

# The CephFS path the boot tree is published to and served from.
BOOT_TREE = "/boot-tree"
# The RBD pool holding the test hosts' root images, one RBD namespace per host.
RBD_POOL = "cephboot"

NEEDED_PROGRAMS = (
    "ip", "nsenter", "ss", "ceph", "ceph-mon", "ceph-mgr", "ceph-osd", "ceph-mds",
    "ceph-authtool", "monmaptool", "rbd", "rados", "ceph-fuse", "qemu-system-x86_64", "nginx",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end against a real Ceph cluster and QEMU in a network namespace "
        "(root, /dev/fuse; several minutes)",
    )


# CEPHBOOT_E2E_REQUIRED=1 (CI) turns any skip into a failure: tests/conftest.py.


def missing_machine_features() -> list[str]:
    """What this machine lacks to run the suite at all (empty when it can)."""
    missing = [f"program {name}" for name in NEEDED_PROGRAMS if shutil.which(name) is None]
    if os.geteuid() != 0:
        missing.append("root (network namespaces, FUSE mounts)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        missing.append("/dev/fuse")
    return missing


@pytest.fixture(scope="session")
def a_network_namespace() -> Iterator[NetworkNamespace]:
    missing = missing_machine_features()
    if missing:
        pytest.skip("this machine cannot run the end-to-end suite: lacks " + ", ".join(missing))
    netns = NetworkNamespace()
    try:
        netns.create()
        yield netns
    finally:
        netns.delete()


@pytest.fixture(scope="session")
def a_ceph_cluster(
    a_network_namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CephCluster]:
    """mon, mgr, one OSD and an MDS with the CephFS ``boot``; cephx on; an RBD pool."""
    base = tmp_path_factory.mktemp("ceph")
    # Unix socket paths are limited to 107 bytes: keep the admin sockets' folder short.
    run = Path(tempfile.mkdtemp(prefix="cephboot-e2e-"))
    cluster = CephCluster(a_network_namespace, base, run)
    try:
        cluster.start()
        cluster.create_rbd_pool(RBD_POOL)
        yield cluster
    finally:
        try:
            cluster.unmount_admin_fs()
        finally:
            cluster.stop()
            shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="session")
def a_boot_tree_mount(
    a_ceph_cluster: CephCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CephFuseMount]:
    """The CephFS boot tree mounted with ceph-fuse as the publisher's client."""
    workdir = tmp_path_factory.mktemp("publisher")
    publisher = a_ceph_cluster.create_publisher_client(BOOT_TREE, workdir / "publisher.keyring")
    with CephFuseMount(a_ceph_cluster, publisher, BOOT_TREE, workdir / "boot-tree") as mount:
        # The tree is cephboot's from the start, as the publisher marks it on its first
        # publish: tests that plant files in it (test_attacks.py) may run before any site
        # publishes, and the inventory refuses an unmarked target that holds files.
        (mount.mountpoint / TREE_MARKER).touch()
        yield mount


@pytest.fixture(scope="session")
def a_web_server_view(
    a_ceph_cluster: CephCluster, a_boot_tree_mount: CephFuseMount,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebServerView]:
    """The boot tree mounted read-only as ``client.cephboot-web``, whose caps only read the tree."""
    with WebServerView(a_ceph_cluster, BOOT_TREE, tmp_path_factory.mktemp("web")) as view:
        yield view


@pytest.fixture(scope="session")
def an_http_server(
    a_network_namespace: NetworkNamespace,
    a_web_server_view: WebServerView,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NginxServer]:
    """nginx with cephboot's generated server block, serving the read-only view of the boot
    tree on the test address; its access log is readable."""
    with NginxServer(
        a_network_namespace, a_web_server_view.mountpoint, tmp_path_factory.mktemp("http")
    ) as server:
        yield server


@pytest.fixture(scope="session")
def a_boot_bridge(
    a_network_namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BootNetwork]:
    """The guests' network: the bridge ``cbbr0`` in the namespace, with no DHCP server yet
    (``a_boot_network`` adds the scenario site's dnsmasq; other sites put theirs in its place)."""
    with BootNetwork(a_network_namespace, tmp_path_factory.mktemp("dnsmasq")) as network:
        yield network


@pytest.fixture
def bridge_guest(
    a_network_namespace: NetworkNamespace, a_boot_bridge: BootNetwork, tmp_path: Path
) -> Iterator[Callable[..., QemuMachine]]:
    """``bridge_guest(macs, uuid=None, firmware="bios", nic_rom=True)``: start a guest whose
    NICs are taps on the bridge (a random SMBIOS UUID unless given); whatever DHCP server is
    on the bridge boots it.

    Every guest a test starts is killed by PID when the test ends, then its taps go.
    """
    started: list[tuple[QemuMachine, list[str]]] = []

    def boot(macs: Sequence[str], machine_uuid: str | None = None, **options: object) -> QemuMachine:
        taps = [a_boot_bridge.tap() for _ in macs]
        workdir = tmp_path / f"guest{len(started)}"
        machine = QemuMachine(a_network_namespace, workdir, macs, machine_uuid or str(uuid.uuid4()),
                              taps=taps, **options)
        started.append((machine, taps))
        machine.start()
        return machine

    try:
        yield boot
    finally:
        for machine, taps in started:  # the guest first: its taps go with it
            machine.stop()
            for tap in taps:
                a_boot_bridge.release(tap)


# The scenario site and its dnsmasq on the bridge, shared by test_boot_scenarios.py,
# test_uefi.py and others (imported after RBD_POOL, which the site uses).
from .scenario_site import a_boot_network, network_boot, the_e2e_site  # noqa: E402,F401
