"""`doit provision --only <host>` and `doit verify --only <host>` against the real test cluster (issue 6).

Two hosts are provisioned from a YAML inventory by doit itself, run inside the
test's network namespace; then each host's client is tried against its own
data and the other host's.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.run import tasks_ran  # one parser of doit's output for tests and bench

from .boot_tree import CephFuseMount
from .ceph_cluster import FS_DATA_POOL, FS_NAME, CephCluster
from .conftest import RBD_POOL
from .netns import NetworkNamespace
from .provision_site import ProvisionSite, said, small_busybox_site

pytestmark = pytest.mark.e2e

BOOT_TREE = "/provision-tree"
HOSTS = ("prov-a", "prov-b")


def _mac(index: int) -> str:
    return f"52:54:00:e6:00:{index:02x}"


@pytest.fixture(scope="module")
def a_provisioned_site(
    a_ceph_cluster: CephCluster, a_network_namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProvisionSite]:
    """Two hosts, provisioned once by `doit provision` (the first run's output is kept)."""
    site = small_busybox_site(a_ceph_cluster, a_network_namespace, tmp_path_factory.mktemp("provision"), BOOT_TREE, 8081, RBD_POOL)
    for index, name in enumerate(HOSTS):
        site.add_host(name, _mac(index))
    site.first_run = site.doit("provision")  # type: ignore[attr-defined]
    yield site


def _said(out: str, task: str, host: str, text: str) -> bool:
    """Whether what `doit TASK` printed of ``host`` has a line that starts with ``text``."""
    return any(line.startswith(text) for line in said(out, task, host))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_provisioning_creates_namespace_client_boot_directory_and_image(a_provisioned_site: ProvisionSite) -> None:
    out = a_provisioned_site.first_run.stdout  # type: ignore[attr-defined]
    for name in HOSTS:
        assert _said(out, "provision", name, f"created RBD namespace {RBD_POOL}/{name}"), out
        assert _said(out, "provision", name, f"created CephFS directory /hosts/{name}"), out
        assert _said(out, "provision", name, f"created client.{name} with the key from hosts/keys/{name}.keyring"), out
        assert _said(out, "provision", name, f"wrote root image {RBD_POOL}/{name}/root (64M)"), out
    caps = a_provisioned_site.cluster.ceph_json("auth", "get", "client.prov-a")[0]["caps"]
    assert caps == {
        "mon": f"profile rbd, allow r fsname={FS_NAME}",
        "osd": f"profile rbd pool={RBD_POOL} namespace=prov-a, allow rw pool={FS_DATA_POOL} namespace=fs-hosts-prov_da",
        "mds": f"allow rw fsname={FS_NAME} path=/hosts/prov-a",
    }
    info = a_provisioned_site.cluster.rbd("info", "--format", "json", f"{RBD_POOL}/prov-a/root").stdout
    assert '"size":67108864' in info.replace(" ", "") and '"features":["layering"]' in info.replace(" ", "")


def test_each_client_reads_its_own_image_and_is_refused_the_other(a_provisioned_site: ProvisionSite, tmp_path: Path) -> None:
    cluster = a_provisioned_site.cluster
    for own, other in (HOSTS, HOSTS[::-1]):
        client = a_provisioned_site.client(own)
        exported = tmp_path / f"{own}.img"
        cluster.rbd("export", "--no-progress", f"{RBD_POOL}/{own}/root", str(exported), client=client)
        hostname = subprocess.run(["debugfs", "-R", "cat /etc/hostname", str(exported)], capture_output=True, text=True, check=True).stdout
        assert hostname == f"{own}\n", "the image holds the host's root with its own files"
        fstab = subprocess.run(["debugfs", "-R", "cat /etc/fstab", str(exported)], capture_output=True, text=True, check=True).stdout
        assert f"/hosts/{own}\t/boot\tceph\tname={own}," in fstab
        for args in (["info", f"{RBD_POOL}/{other}/root"], ["ls", f"{RBD_POOL}/{other}"],
                     ["export", f"{RBD_POOL}/{other}/root", str(tmp_path / "stolen")]):
            refused = cluster.rbd(*args, client=client, check=False)
            assert refused.returncode != 0, args
            assert "Operation not permitted" in refused.stderr or "denied" in refused.stderr, refused.stderr
        assert not (tmp_path / "stolen").exists()


def test_each_client_reaches_only_its_own_boot_directory(a_provisioned_site: ProvisionSite, tmp_path: Path) -> None:
    cluster = a_provisioned_site.cluster
    alpha = a_provisioned_site.client("prov-a")
    with CephFuseMount(cluster, alpha, "/hosts/prov-a", tmp_path / "own") as own:
        (own.mountpoint / "vmlinuz").write_text("prov-a's kernel\n")
        assert (own.mountpoint / "vmlinuz").read_text() == "prov-a's kernel\n"
    (cluster.admin_fs().mountpoint / "hosts" / "prov-b" / "secret").write_text("prov-b's file\n")
    other = CephFuseMount(cluster, alpha, "/hosts/prov-b", tmp_path / "other")
    with pytest.raises(RuntimeError, match="Operation not permitted"), other:
        pass
    # Through RADOS, past the MDS: prov-b's file objects live in prov-b's namespace only.
    other_ns = "fs-hosts-prov_db"
    assert cluster.rados("-p", FS_DATA_POOL, "-N", other_ns, "ls").stdout.strip()
    listing = cluster.rados("-p", FS_DATA_POOL, "-N", other_ns, "ls", client=alpha, check=False)
    assert listing.returncode != 0, listing.stdout
    assert cluster.rados("-p", FS_DATA_POOL, "-N", "fs-hosts-prov_da", "ls", client=alpha).stdout.strip()


def test_a_second_run_changes_nothing_and_says_so(a_provisioned_site: ProvisionSite) -> None:
    keyring = a_provisioned_site.hosts / "keys" / "prov-a.keyring"
    before = (keyring.stat().st_mtime_ns, a_provisioned_site.cluster.rbd("info", f"{RBD_POOL}/prov-a/root").stdout)
    again = a_provisioned_site.doit("provision")
    for name in HOSTS:
        assert _said(again.stdout, "provision", name,
                     f"nothing to change (namespace {RBD_POOL}/{name}, /boot /hosts/{name}, client.{name} caps, image {RBD_POOL}/{name}/root)"), again.stdout
    assert "created" not in again.stdout and "wrote" not in again.stdout
    assert (keyring.stat().st_mtime_ns, a_provisioned_site.cluster.rbd("info", f"{RBD_POOL}/prov-a/root").stdout) == before
    assert oct(keyring.stat().st_mode & 0o777) == "0o600"


def test_verify_reports_caps_changed_by_hand_and_provision_puts_them_back(a_provisioned_site: ProvisionSite) -> None:
    ok = a_provisioned_site.doit("verify")
    assert "MISMATCH" not in ok.stdout and _said(ok.stdout, "verify", "prov-b", "ok       client caps")
    a_provisioned_site.cluster.ceph("auth", "caps", "client.prov-a", "mon", "profile rbd", "osd", "profile rbd pool=" + RBD_POOL)
    bad = a_provisioned_site.doit("verify", "--only", "prov-a", check=False)
    assert bad.returncode != 0
    assert _said(bad.stdout, "verify", "prov-a", f"MISMATCH client caps: mds is None, wants 'allow rw fsname={FS_NAME} path=/hosts/prov-a'"), bad.stdout
    assert "does not match the inventory: client caps" in bad.stdout + bad.stderr
    fixed = a_provisioned_site.doit("provision", "--only", "prov-a")
    assert _said(fixed.stdout, "provision", "prov-a", "set client.prov-a's caps"), fixed.stdout
    assert "MISMATCH" not in a_provisioned_site.doit("verify", "--only", "prov-a").stdout


def test_an_image_with_data_is_never_overwritten_unless_the_host_says_reimage(a_provisioned_site: ProvisionSite, tmp_path: Path) -> None:
    site, cluster = a_provisioned_site, a_provisioned_site.cluster
    cluster.create_rbd_namespace(RBD_POOL, "prov-c")
    data = tmp_path / "precious.img"
    data.write_bytes(b"a hand-made root with data\n" * 4096 + os.urandom(1 << 16))
    cluster.rbd("import", "--no-progress", "--image-feature", "layering", str(data), f"{RBD_POOL}/prov-c/root")
    # A file in the host's /boot from before its RADOS namespace existed.
    early = cluster.admin_fs().mountpoint / "hosts" / "prov-c"
    early.mkdir(parents=True)
    (early / "early.txt").write_text("written before provisioning\n")
    site.add_host("prov-c", _mac(12))
    refused = site.doit("provision", "--only", "prov-c", check=False)
    assert refused.returncode != 0
    assert (f"host prov-c: image {RBD_POOL}/prov-c/root exists and holds data that cephboot did not write; refusing to overwrite it. "
            "Set `rbd: {reimage: true}` in hosts/nodes/prov-c.yaml") in refused.stdout + refused.stderr
    back = tmp_path / "back.img"
    cluster.rbd("export", "--no-progress", f"{RBD_POOL}/prov-c/root", str(back))
    assert _digest(back) == _digest(data), "the refused image is untouched"
    # Everything but the image was done, and the early file was moved into the namespace.
    assert _said(refused.stdout, "provision", "prov-c", "rewrote 1 file(s)"), refused.stdout
    assert os.getxattr(early / "early.txt", "ceph.file.layout.pool_namespace") == b"fs-hosts-prov_dc"
    assert (early / "early.txt").read_text() == "written before provisioning\n"

    site.add_host("prov-c", _mac(12), rbd={"reimage": True})
    rebuilt = site.doit("provision", "--only", "prov-c")
    assert _said(rebuilt.stdout, "provision", "prov-c", f"rebuilt root image {RBD_POOL}/prov-c/root (64M)"), rebuilt.stdout
    again = site.doit("provision", "--only", "prov-c")
    assert _said(again.stdout, "provision", "prov-c", "nothing to change"), f"reimage rebuilds only when the image's inputs changed:\n{again.stdout}"
    # A rebuild names the inputs that changed (from the image's metadata).
    site.add_host("prov-c", _mac(12), rbd={"reimage": True}, nics={"ceph": {"macs": [_mac(12)], "address": "192.0.2.77/24"}})
    changed = site.doit("provision", "--only", "prov-c")
    assert _said(changed.stdout, "provision", "prov-c", f"rebuilt root image {RBD_POOL}/prov-c/root (64M) from {site.root.parent / 'tree'} "
                 "(changed since it was built: /etc/initramfs-tools/conf.d/cephboot)"), changed.stdout
    images = cluster.rbd("ls", "--pool", RBD_POOL, "--namespace", "prov-c").stdout.split()
    assert images == ["root"], "no image is left set aside"


def test_a_client_made_by_hand_is_adopted_only_deliberately_then_keeps_its_key_and_the_image_carries_it(
        a_provisioned_site: ProvisionSite, tmp_path: Path) -> None:
    site, cluster = a_provisioned_site, a_provisioned_site.cluster
    cluster.ceph("auth", "get-or-create", "client.prov-d", "mon", "allow r")
    key = cluster.ceph("auth", "get-key", "client.prov-d").strip()
    site.add_host("prov-d", _mac(13))  # examplekeys gives it a key of its own, which the cluster does not know
    refused = site.doit("provision", "--only", "prov-d", check=False)
    assert refused.returncode != 0
    assert ("client.prov-d exists on the cluster and cephboot did not create it; provisioning never changes such a client" in refused.stdout + refused.stderr)
    assert cluster.ceph_json("auth", "get", "client.prov-d")[0]["caps"] == {"mon": "allow r"}, "the refused client is untouched"
    cluster.ceph("config-key", "set", "cephboot/clients/client.prov-d", "prov-d")  # what the message says adopts it
    run = site.doit("provision", "--only", "prov-d")
    assert _said(run.stdout, "provision", "prov-d", "wrote the cluster's key of client.prov-d to hosts/keys/prov-d.keyring"), run.stdout
    # provisioning rendered the host's files again with that key, through the render stage's
    # entry point: its record says so, and the stage finds nothing to redo
    assert "render:prov-d" not in tasks_ran(site.doit("render:hosts").stdout)
    assert key in (site.hosts / "keys" / "prov-d.keyring").read_text()
    exported = tmp_path / "prov-d.img"
    cluster.rbd("export", "--no-progress", f"{RBD_POOL}/prov-d/root", str(exported), client=site.client("prov-d"))
    in_image = subprocess.run(["debugfs", "-R", "cat /etc/ceph/ceph.client.prov-d.keyring", str(exported)],
                              capture_output=True, text=True, check=True).stdout
    assert key in in_image
    assert "nothing to change" in site.doit("provision", "--only", "prov-d").stdout


def test_of_two_hosts_a_refused_one_fails_alone_and_the_other_is_provisioned(a_provisioned_site: ProvisionSite) -> None:
    """`doit provision --only prov-e,prov-f`: prov-e's client exists with other caps, made by
    someone else, so provisioning refuses to take it over; prov-f after it is still provisioned,
    and the run ends non-zero naming prov-e and why."""
    site, cluster = a_provisioned_site, a_provisioned_site.cluster
    cluster.ceph("auth", "get-or-create", "client.prov-e", "mon", "allow r")
    site.add_host("prov-e", _mac(14))
    site.add_host("prov-f", _mac(15))
    run = site.doit("provision", "--only", "prov-e,prov-f", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out, out
    assert "cephboot: provision: 1 of 2 hosts failed, every other host is done:\n" in out, out
    assert ("provision --only prov-e: host prov-e: client.prov-e exists on the cluster and cephboot did not create it; "
            "provisioning never changes such a client") in out, out
    assert _said(run.stdout, "provision", "prov-f", "created client.prov-f with the key from hosts/keys/prov-f.keyring"), out
    assert _said(run.stdout, "provision", "prov-f", f"wrote root image {RBD_POOL}/prov-f/root (64M)"), out
    assert cluster.ceph_json("auth", "get", "client.prov-e")[0]["caps"] == {"mon": "allow r"}, "the refused client is untouched"
    namespaces = set(cluster.rbd("namespace", "ls", RBD_POOL).stdout.split())
    assert "prov-f" in namespaces and "prov-e" not in namespaces, "nothing was made for the refused host"
    assert "MISMATCH" not in site.doit("verify", "--only", "prov-f").stdout
