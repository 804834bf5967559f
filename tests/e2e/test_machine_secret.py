"""Issue 13's machine-secret mode on the real boot path: keys that travel are useless without the machine.

One host, `sealed` (a LUKS2 root, one monolithic initrd, published twice so that `previous/`
holds a generation too), in machine mode: its keyring and LUKS key reach it only sealed to the
secret in its chassis asset tag. The site is built by `doit` on the session's cluster and
published into a folder of the session's boot tree (`/machine-secret/`), served by the session's
HTTP server. A guest with the secret in `-smbios type=3,asset=...` boots; guests with the same
MAC and UUID but a wrong or no asset tag stop with their `cephboot:` message before any network
or Ceph step; and an HTTP client that fetches every published file finds no byte of any key.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .boot_tree import CephFuseMount, NginxServer
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .dnsmasq import BootNetwork
from .e2e_site import E2ESite, SubUrl, Subtree
from .netns import NetworkNamespace
from .qemu_vm import QemuMachine
from .sweep import cephx_secrets, fetch_all, keys_found, published_names

pytestmark = pytest.mark.e2e

HOST = "sealed"
MAC = "52:54:00:e2:0d:01"
UUID = "e2e0000d-0000-4000-8000-00000000000d"
SECRET = "E2ESEALEDHOSTSECRETQ7RZ4WJ2MNKXV"  # what the operator set in the chassis asset tag
WRONG = "E2ESEALEDHOSTSECRETQ7RZ4WJ2MNKXW"  # one character off
SUBTREE = "machine-secret"
LUKS_NAME = "sealed-root"
LUKS_KEY = b"e2e LUKS passphrase of host sealed\n"
BOOT_TIMEOUT = 300
PANIC_DELAY = 10  # the e2e site's panic=10


class AssetMachine(QemuMachine):
    """A guest whose SMBIOS chassis asset tag (type 3) is ``asset`` (None: QEMU's default, empty)."""

    def __init__(self, *args: Any, asset: str | None = None, **options: Any) -> None:
        super().__init__(*args, **options)
        self.asset = asset

    def argv(self) -> list[str]:
        extra = ["-smbios", f"type=3,asset={self.asset}"] if self.asset is not None else []
        return [*super().argv(), *extra]


@dataclass
class SealedSite:
    site: E2ESite
    tree: Subtree
    url: str


@pytest.fixture(scope="module")
def a_sealed_site(
    a_ceph_cluster: CephCluster, a_boot_tree_mount: CephFuseMount, an_http_server: NginxServer,
    a_boot_network: BootNetwork, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SealedSite]:
    """The sealed host's own site in a folder of the session's tree, served by the session's
    nginx; its `doit dnsmasq` config is the bridge's DHCP server while the module runs."""
    workdir = tmp_path_factory.mktemp("machine-secret")
    tree = Subtree(f"{a_boot_tree_mount.fs_path}/{SUBTREE}", a_boot_tree_mount.mountpoint / SUBTREE)
    tree.mountpoint.mkdir(exist_ok=True)
    url = f"{an_http_server.url}{SUBTREE}/"
    site = E2ESite(a_ceph_cluster, tree, SubUrl(url, an_http_server.root / SUBTREE), workdir, RBD_POOL)  # type: ignore[arg-type]
    site.site_settings["defaults"]["secrets"] = {"mode": "machine", "smbios_field": "chassis_asset_tag"}
    site.write_secret(f"keys/{HOST}.secret", f"{SECRET}\n".encode())
    site.write_secret(f"keys/{HOST}.luks", LUKS_KEY)
    site.add_host(HOST, [MAC], uuid=UUID, monolithic=True,
                  luks={"name": LUKS_NAME, "keyfile": f"keys/{HOST}.luks"})
    first = site.doit()
    assert "secrets.mode: clear" not in first.stderr, first.stderr  # nothing to warn about
    # a second generation: the first stays published as previous/, which the sweep fetches too
    site.hosts[HOST].data["+kernel_args"] = ["cephboot.e2e=second-generation"]
    site.write_host(site.hosts[HOST])
    site.doit()
    assert (tree.mountpoint / "hosts" / HOST / "previous" / "initrd.img").is_file()
    site.install_root_image(HOST, tmp_path_factory.mktemp("sealed-image"))
    site.doit("dnsmasq")
    with a_boot_network.replaced({SUBTREE: workdir / "build" / "site" / "dnsmasq.conf"}):
        yield SealedSite(site, tree, url)


@pytest.fixture
def start_guest(a_network_namespace: NetworkNamespace, a_sealed_site: SealedSite, a_boot_network: BootNetwork,
                tmp_path: Path) -> Iterator[Any]:
    """``start_guest(asset)``: a guest on a tap of the bridge with the host's MAC and UUID and that
    asset tag; killed by PID after the test, then its tap goes."""
    guests: list[tuple[AssetMachine, str]] = []

    def start(asset: str | None) -> AssetMachine:
        tap = a_boot_network.tap()
        guest = AssetMachine(a_network_namespace, tmp_path / f"guest{len(guests)}", [MAC], UUID,
                             taps=[tap], asset=asset)
        guests.append((guest, tap))
        guest.start()
        return guest

    try:
        yield start
    finally:
        for guest, tap in guests:
            guest.stop()
            a_boot_network.release(tap)


def test_the_host_boots_with_its_secret_in_the_chassis_asset_tag(
    a_sealed_site: SealedSite, start_guest: Any, an_http_server: NginxServer,
) -> None:
    mark = an_http_server.mark()
    guest = start_guest(SECRET)
    root = f"/dev/mapper/{LUKS_NAME}"
    guest.wait_for(rf"^CEPHBOOT-E2E-OK host={HOST} root={re.escape(root)}$", BOOT_TIMEOUT)
    guest.wait_exit(30)
    console = guest.console()
    unsealed = console.index(f"cephboot: unsealed host {HOST}'s keys with the machine secret (SMBIOS chassis_asset_tag)")
    assert unsealed < console.index(f"cephboot: mapped {RBD_POOL}/{HOST}/root at /dev/rbd0")
    assert f"cephboot: opened /dev/rbd0 as {root}" in console
    assert SECRET not in console
    # the initramfs made the field root-only, and it stays so on the booted system (sysfs keeps the mode)
    assert f"CEPHBOOT-E2E-DMI host={HOST} chassis_asset_tag=400" in console, console[-2000:]
    paths = {r.path for r in an_http_server.requests_since(mark) if r.status == 200}
    assert f"/{SUBTREE}/hosts/{HOST}/initrd.img" in paths, paths  # the monolithic initrd, keys sealed inside
    booted = a_sealed_site.site.boot_dir(HOST) / "e2e-booted"  # its own /boot, outside the tree
    assert booted.read_text() == f"{HOST} booted with root {root}\n"


@pytest.mark.parametrize(("asset", "message"), [
    (WRONG, r"cephboot: wrong machine secret: host sealed's keys are sealed to its machine secret \(SMBIOS chassis_asset_tag\)"),
    (None, r"cephboot: no machine secret: host sealed's keys are sealed to its machine secret \(SMBIOS chassis_asset_tag\)"),
], ids=["wrong-secret", "no-secret"])
def test_a_machine_with_the_hosts_mac_and_uuid_but_not_its_secret_stops_with_the_reason(
    a_sealed_site: SealedSite, start_guest: Any, an_http_server: NginxServer, asset: str | None, message: str,
) -> None:
    mark = an_http_server.mark()
    guest = start_guest(asset)
    guest.wait_for(message, BOOT_TIMEOUT)
    guest.wait_exit(PANIC_DELAY + 30)
    console = guest.console()
    # It got the published files (anyone can), and nothing it could use: no NIC set up, no map tried.
    paths = {r.path for r in an_http_server.requests_since(mark) if r.status == 200}
    assert f"/{SUBTREE}/hosts/{HOST}/initrd.img" in paths, paths
    assert "cephboot: Ceph NIC" not in console and "cephboot: mapped" not in console
    assert "CEPHBOOT-E2E-OK" not in console
    assert SECRET not in console


# ---- everything published, fetched over HTTP ------------------------------------

def test_a_client_that_fetches_every_published_file_finds_no_key_byte(
    a_sealed_site: SealedSite, a_network_namespace: NetworkNamespace, tmp_path: Path,
) -> None:
    site = a_sealed_site.site
    client = site.hosts[HOST].client
    assert client is not None
    secrets = {**cephx_secrets("cephx key", client.key), "LUKS key": LUKS_KEY.strip(), "machine secret": SECRET.encode()}
    # every file of the tree, routes and previous/ included, by name (the server lists no folders)
    names = published_names(a_sealed_site.tree.mountpoint)
    names += [f"ipxe/by-mac/{MAC.replace(':', '-')}.ipxe", f"ipxe/by-uuid/{UUID}.ipxe"]
    fetched = fetch_all(a_network_namespace, a_sealed_site.url, names, tmp_path)
    assert f"hosts/{HOST}/overlay.cpio" in fetched and f"hosts/{HOST}/previous/initrd.img" in fetched
    assert all(got.status == 200 and got.data for got in fetched.values()), [n for n, got in fetched.items() if got.status != 200]
    assert keys_found(fetched, secrets) == []
    # the sweep looked inside the archives: it met the sealed keys in every layer and initrd of the host
    envelopes = sum(blob.startswith(b"cephboot-sealed 1\nhost sealed\n") for got in fetched.values() for blob in got.blobs)
    assert envelopes >= 4, envelopes  # overlay.cpio, initrd.img, and both again in previous/
