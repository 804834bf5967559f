"""Issue 16's attacks, replayed against the real cluster and the real nginx: each must fail.

One site, provisioned once by `doit provision` on the session cluster, holds two hosts whose
`/boot` paths collided under the old RADOS namespace naming (`/atk-hosts/x-y` and
`/atk-hosts-x/y`); the web server is the session's nginx on its read-only view of the boot
tree. Hosts the provisioning must refuse are added to the inventory only for the run that
refuses them.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.provision import boot_namespace

from .boot_tree import CephFuseMount, NginxServer, WebServerView
from .ceph_cluster import FS_DATA_POOL, CephCluster
from .conftest import BOOT_TREE, RBD_POOL
from .netns import NetworkNamespace
from .provision_site import said, ProvisionSite, small_busybox_site

pytestmark = pytest.mark.e2e

# Under the old naming (`/` as `-`) both were fs-atk-hosts-x-y: one host read the other's objects.
BOOT_PATHS = {"atk-a": "/atk-hosts/x-y", "atk-b": "/atk-hosts-x/y"}
QUOTA = "4M"


def _mac(index: int) -> str:
    return f"52:54:00:e9:00:{index:02x}"


@pytest.fixture(scope="module")
def an_attack_site(
    a_ceph_cluster: CephCluster, a_network_namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProvisionSite]:
    site = small_busybox_site(a_ceph_cluster, a_network_namespace, tmp_path_factory.mktemp("attacks"), BOOT_TREE, 8084, RBD_POOL)
    for index, (name, path) in enumerate(BOOT_PATHS.items()):
        site.add_host(name, _mac(index), boot_path=path, boot_quota=QUOTA)
    site.doit("provision")
    yield site


def _refused(site: ProvisionSite, name: str, **data: object) -> str:
    """`doit provision --only NAME` for a host that exists only for this run; it must fail. Its output."""
    site.add_host(name, _mac(0x40 + len(name)), **data)
    try:
        run = site.doit("provision", "--only", name, check=False)
    finally:
        site.remove_host(name)
    assert run.returncode != 0, run.stdout
    return run.stdout + run.stderr


def test_a_hosts_client_can_neither_write_nor_read_the_published_tree(
    an_attack_site: ProvisionSite, a_boot_tree_mount: CephFuseMount, tmp_path: Path
) -> None:
    cluster = an_attack_site.cluster
    (a_boot_tree_mount.mountpoint / "attack-probe").write_text("published\n")
    host = an_attack_site.client("atk-a")
    tree = CephFuseMount(cluster, host, BOOT_TREE, tmp_path / "tree")
    with pytest.raises(RuntimeError, match="Operation not permitted"), tree:
        pass
    tree_ns = boot_namespace(BOOT_TREE)
    assert cluster.rados("-p", FS_DATA_POOL, "-N", tree_ns, "ls").stdout.strip(), "the tree's objects are in its namespace"
    for args in (["ls"], ["put", "planted", "/etc/hostname"]):
        done = cluster.rados("-p", FS_DATA_POOL, "-N", tree_ns, *args, client=host, check=False)
        assert done.returncode != 0, (args, done.stdout)
    assert "planted" not in cluster.rados("-p", FS_DATA_POOL, "-N", tree_ns, "ls").stdout.split()


def test_the_web_server_reads_the_tree_and_writes_nothing(
    a_ceph_cluster: CephCluster, a_web_server_view: WebServerView, a_boot_tree_mount: CephFuseMount
) -> None:
    (a_boot_tree_mount.mountpoint / "attack-web-probe").write_text("readable\n")
    assert (a_web_server_view.mountpoint / "attack-web-probe").read_text() == "readable\n"
    with pytest.raises(OSError) as mounted_read_only:
        (a_web_server_view.mountpoint / "written-by-web").write_text("no\n")
    assert mounted_read_only.value.errno == errno.EROFS
    # Its caps refuse a write also past the read-only mount, straight to RADOS.
    done = a_ceph_cluster.rados("-p", FS_DATA_POOL, "-N", boot_namespace(BOOT_TREE), "put", "by-web", "/etc/hostname",
                                client=a_web_server_view.client, check=False)
    assert done.returncode != 0, done.stdout


def _http_status(netns: NetworkNamespace, url: str) -> tuple[int, str]:
    done = netns.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", url])
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def test_nginx_does_not_follow_a_link_planted_in_a_published_host_folder(
    a_ceph_cluster: CephCluster, a_network_namespace: NetworkNamespace, an_http_server: NginxServer
) -> None:
    folder = a_ceph_cluster.admin_fs().mountpoint / BOOT_TREE.lstrip("/") / "hosts" / "atk-planted"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "boot.ipxe").write_text("#!ipxe\necho served\n")
    (folder / "leak").symlink_to("/etc/passwd")
    (folder / "neighbour").symlink_to("../..")
    mark = an_http_server.mark()
    assert _http_status(a_network_namespace, f"{an_http_server.url}hosts/atk-planted/boot.ipxe") == (200, "#!ipxe\necho served\n")
    for path in ("hosts/atk-planted/leak", "hosts/atk-planted/neighbour/boot.ipxe"):
        status, body = _http_status(a_network_namespace, an_http_server.url + path)
        assert status in (403, 404) and "root:" not in body and "#!ipxe" not in body, (path, status, body)
    logged = [(r.path, r.status) for r in an_http_server.requests_since(mark)]
    assert logged[0] == ("/hosts/atk-planted/boot.ipxe", 200) and all(status in (403, 404) for _, status in logged[1:]), logged


def test_provisioning_refuses_to_take_over_the_admin_the_publisher_or_a_client_made_by_hand(
    an_attack_site: ProvisionSite, a_boot_tree_mount: CephFuseMount
) -> None:
    cluster = an_attack_site.cluster
    cluster.ceph("auth", "get-or-create", "client.atk-pre", "mon", "allow r", "osd", f"allow r pool={RBD_POOL}")
    publisher = a_boot_tree_mount.client.id
    before = {e: cluster.ceph_json("auth", "get", e) for e in ("client.admin", "client.atk-pre", f"client.{publisher}")}
    # The inventory refuses the reserved names (admin, cephboot-*) before provisioning asks
    # the cluster; provisioning refuses them too (tests/test_provision_unit.py): either way, no change.
    admin = _refused(an_attack_site, "atk-admin", client="admin")
    assert "'admin' is reserved" in admin or "is the cluster admin's identity" in admin, admin
    assert "cephboot did not create it" in _refused(an_attack_site, "atk-pre")
    taken = _refused(an_attack_site, "atk-publisher", client=publisher)
    assert f"'{publisher}' is reserved" in taken or f"client.{publisher} exists on the cluster and cephboot did not create it" in taken, taken
    after = {e: cluster.ceph_json("auth", "get", e) for e in before}
    assert after == before, "keys and caps of every refused client are unchanged"
    # The admin still administers: the lock-out of finding 5 did not happen.
    cluster.ceph("osd", "pool", "ls")


def test_an_rbd_pool_of_the_cephfs_is_refused_before_anything_changes(an_attack_site: ProvisionSite) -> None:
    out = _refused(an_attack_site, "atk-fspool", rbd={"pool": FS_DATA_POOL})
    assert f"rbd.pool '{FS_DATA_POOL}'" in out and "is a pool of CephFS" in out, out
    assert an_attack_site.cluster.ceph("auth", "get", "client.atk-fspool", check=False) == "", "no client was created"


def test_two_hosts_whose_namespaces_once_collided_cannot_read_each_others_boot_objects(
    an_attack_site: ProvisionSite, tmp_path: Path
) -> None:
    cluster = an_attack_site.cluster
    namespaces = {name: boot_namespace(path) for name, path in BOOT_PATHS.items()}
    assert namespaces == {"atk-a": "fs-atk_dhosts-x_dy", "atk-b": "fs-atk_dhosts_dx-y"}
    for name, path in BOOT_PATHS.items():
        with CephFuseMount(cluster, an_attack_site.client(name), path, tmp_path / name) as boot:
            (boot.mountpoint / "vmlinuz").write_text(f"{name}'s kernel\n")
    for own, other in (("atk-a", "atk-b"), ("atk-b", "atk-a")):
        client = an_attack_site.client(own)
        assert cluster.rados("-p", FS_DATA_POOL, "-N", namespaces[own], "ls", client=client).stdout.strip()
        objects = cluster.rados("-p", FS_DATA_POOL, "-N", namespaces[other], "ls").stdout.split()
        assert objects, f"{other}'s file has objects in its namespace"
        for args in (["ls"], ["get", objects[0], str(tmp_path / "stolen")]):
            done = cluster.rados("-p", FS_DATA_POOL, "-N", namespaces[other], *args, client=client, check=False)
            assert done.returncode != 0, (own, args, done.stdout)
        stolen = tmp_path / "stolen"  # rados opens its output before the OSD answers
        assert not stolen.exists() or stolen.stat().st_size == 0
        stolen.unlink(missing_ok=True)


def test_a_write_beyond_the_boot_quota_fails_with_edquot(an_attack_site: ProvisionSite, tmp_path: Path) -> None:
    """Last in this file: it fills atk-a's /boot (quota accounting lags the removal)."""
    verified = an_attack_site.doit("verify", "--only", "atk-a").stdout
    assert f"ok       /boot quota: {BOOT_PATHS['atk-a']} ceph.quota.max_bytes {4 << 20}" in "\n".join(said(verified, "verify", "atk-a")), verified
    chunk = os.urandom(1 << 20)
    written = 0
    with CephFuseMount(an_attack_site.cluster, an_attack_site.client("atk-a"), BOOT_PATHS["atk-a"], tmp_path / "boot") as boot:
        fd = os.open(boot.mountpoint / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError) as refused:
                while written < 64 << 20:
                    written += os.write(fd, chunk)
                    os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(boot.mountpoint / "filler")
    assert refused.value.errno == errno.EDQUOT
    assert written <= 8 << 20, f"{written} bytes went in past a 4 MiB quota"
