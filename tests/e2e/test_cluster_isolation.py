"""The cluster fixture works, and a host's client reaches its own data only (scenario 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .boot_tree import CephFuseMount
from .ceph_cluster import FS_DATA_POOL, CephClient, CephCluster
from .conftest import RBD_POOL

pytestmark = pytest.mark.e2e

HOSTS = ("iso-alpha", "iso-beta")


@pytest.fixture(scope="module")
def two_hosts(
    a_ceph_cluster: CephCluster, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CephClient]:
    """Two hosts, each with an RBD namespace holding ``root``, a client, a /boot file."""
    keyrings = tmp_path_factory.mktemp("isolation")
    clients = {}
    for host in HOSTS:
        a_ceph_cluster.create_rbd_namespace(RBD_POOL, host)
        clients[host] = a_ceph_cluster.create_host_client(
            host, RBD_POOL, host, f"/hosts/{host}", keyrings / f"{host}.keyring"
        )
        image = keyrings / f"{host}.img"
        image.write_bytes(host.encode() * 1000 + os.urandom(4096))
        a_ceph_cluster.rbd("import", "--image-feature", "layering", str(image),
                           f"{RBD_POOL}/{host}/root")
        boot = a_ceph_cluster.admin_fs().mountpoint / "hosts" / host
        (boot / "config").write_text(f"boot files of {host}\n")
    return clients


def test_a_host_client_reads_back_its_own_image(
    a_ceph_cluster: CephCluster, two_hosts: dict[str, CephClient], tmp_path: Path
) -> None:
    alpha = two_hosts["iso-alpha"]
    exported = tmp_path / "export.img"
    a_ceph_cluster.rbd("export", f"{RBD_POOL}/iso-alpha/root", str(exported), client=alpha)
    assert exported.read_bytes().startswith(b"iso-alpha" * 1000)


def test_a_host_client_cannot_reach_another_hosts_image(
    a_ceph_cluster: CephCluster, two_hosts: dict[str, CephClient], tmp_path: Path
) -> None:
    alpha = two_hosts["iso-alpha"]
    info = a_ceph_cluster.rbd("info", f"{RBD_POOL}/iso-beta/root", client=alpha, check=False)
    listing = a_ceph_cluster.rbd("ls", f"{RBD_POOL}/iso-beta", client=alpha, check=False)
    export = a_ceph_cluster.rbd("export", f"{RBD_POOL}/iso-beta/root", str(tmp_path / "x"),
                                client=alpha, check=False)
    for refused in (info, listing, export):
        assert refused.returncode != 0
        assert "Operation not permitted" in refused.stderr or "denied" in refused.stderr
    assert not (tmp_path / "x").exists()


def test_a_host_client_mounts_only_its_own_boot_directory(
    a_ceph_cluster: CephCluster, two_hosts: dict[str, CephClient], tmp_path: Path
) -> None:
    alpha = two_hosts["iso-alpha"]
    with CephFuseMount(a_ceph_cluster, alpha, "/hosts/iso-alpha", tmp_path / "own") as own:
        assert (own.mountpoint / "config").read_text() == "boot files of iso-alpha\n"
    other = CephFuseMount(a_ceph_cluster, alpha, "/hosts/iso-beta", tmp_path / "other")
    with pytest.raises(RuntimeError, match="Operation not permitted"), other:
        pass


def test_a_host_client_cannot_read_another_hosts_boot_objects_through_rados(
    a_ceph_cluster: CephCluster, two_hosts: dict[str, CephClient]
) -> None:
    alpha = two_hosts["iso-alpha"]
    own_ns = a_ceph_cluster.boot_dir_namespace("/hosts/iso-alpha")
    other_ns = a_ceph_cluster.boot_dir_namespace("/hosts/iso-beta")
    # The admin sees the file objects in each directory's own RADOS namespace.
    assert a_ceph_cluster.rados("-p", FS_DATA_POOL, "-N", other_ns, "ls").stdout.strip()
    own = a_ceph_cluster.rados("-p", FS_DATA_POOL, "-N", own_ns, "ls", client=alpha)
    assert own.stdout.strip()
    other = a_ceph_cluster.rados("-p", FS_DATA_POOL, "-N", other_ns, "ls", client=alpha,
                                 check=False)
    assert other.returncode != 0, other.stdout


def test_the_publisher_writes_the_boot_tree_and_nothing_else(
    a_ceph_cluster: CephCluster, a_boot_tree_mount: CephFuseMount, tmp_path: Path
) -> None:
    (a_boot_tree_mount.mountpoint / "probe.txt").write_text("published\n")
    seen = a_ceph_cluster.admin_fs().mountpoint / "boot-tree" / "probe.txt"
    assert seen.read_text() == "published\n"
    seen.unlink()
    elsewhere = CephFuseMount(a_ceph_cluster, a_boot_tree_mount.client, "/hosts/iso-alpha",
                              tmp_path / "elsewhere")
    with pytest.raises(RuntimeError, match="Operation not permitted"), elsewhere:
        pass
