"""Issue 13's address-bound mode on the real boot path: a host's keys reach only its reserved address.

Two hosts in `secrets.mode: address`: `bound` (booted) and `bound-mono` (a LUKS2 host with one
monolithic initrd, swept only), each published twice so that `previous/` holds a generation too.
The site is built by `doit` on the session's cluster into a folder of the session's boot tree
(`/address-bound/`); real nginx runs with the server block that the site's own `doit nginx`
generated, and real dnsmasq with the site's `doit dnsmasq` config is the DHCP server on the
session's boot network (the bridge of tests/e2e/dnsmasq.py), reserving each host's address.

The host's machine gets its reserved address and boots. A machine at another address (another
MAC, since dnsmasq would give the host's MAC the host's address: spoofing on the segment is what
this mode does not stop, docs/security.md) that claims the host's UUID is refused its layer and
stops with its `cephboot:` message; an HTTP client at the namespace's address that fetches every
published file and sweeps the routes gets 403 for every key-bearing file and no key byte.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .boot_tree import CephFuseMount, NginxServer, WebServerView
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .dnsmasq import BootNetwork
from .e2e_site import GUEST_ADDRESS_PREFIX, GUEST_GATEWAY, E2ESite, SubUrl, Subtree
from .netns import NetworkNamespace
from .scenario_site import NetworkBoot
from .sweep import cephx_secrets, fetch_all, keys_found, published_names

pytestmark = pytest.mark.e2e

HOST, MONO = "bound", "bound-mono"
MAC, MONO_MAC = "52:54:00:e2:0e:01", "52:54:00:e2:0e:02"
ATTACKER_MAC = "52:54:00:e2:0e:99"  # on no host: dnsmasq gives it an address of dhcp.range
UUID = "e2e0000e-0000-4000-8000-00000000000e"
# outside the scenario site's addresses (.30 on), so no neighbour entry of an earlier boot is in the way
ADDRESS, MONO_ADDRESS = f"{GUEST_ADDRESS_PREFIX}60", f"{GUEST_ADDRESS_PREFIX}61"
SUBTREE = "address-bound"
PORT = 8086  # this site's own nginx, beside the session's
LUKS_KEY = b"e2e LUKS passphrase of host bound-mono\n"
BOOT_TIMEOUT = 300
# iPXE wraps its lines at 80 columns: wait for the start, read the rest from the joined console
REFUSED = r"cephboot: address refused: the keys of host bound"


@dataclass
class BoundSite:
    site: E2ESite
    tree: Subtree
    url: str
    http: NginxServer
    dnsmasq_log: Path


def _nics(macs: list[str], address: str) -> dict[str, object]:
    return {"ceph": {"macs": macs, "address": f"{address}/24", "gateway": GUEST_GATEWAY}}


@pytest.fixture(scope="module")
def a_bound_site(
    a_ceph_cluster: CephCluster, a_boot_tree_mount: CephFuseMount, a_web_server_view: WebServerView,
    a_network_namespace: NetworkNamespace, a_boot_network: BootNetwork, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BoundSite]:
    workdir = tmp_path_factory.mktemp("address-bound")
    tree = Subtree(f"{a_boot_tree_mount.fs_path}/{SUBTREE}", a_boot_tree_mount.mountpoint / SUBTREE)
    tree.mountpoint.mkdir(exist_ok=True)
    url = f"http://{a_network_namespace.address}:{PORT}/{SUBTREE}/"
    site = E2ESite(a_ceph_cluster, tree, SubUrl(url, a_web_server_view.mountpoint / SUBTREE), workdir, RBD_POOL)
    site.site_settings["defaults"]["secrets"] = {"mode": "address"}
    site.write_secret(f"keys/{MONO}.luks", LUKS_KEY)
    site.add_host(HOST, [MAC], uuid=UUID, nics=_nics([MAC], ADDRESS))
    site.add_host(MONO, [MONO_MAC], nics=_nics([MONO_MAC], MONO_ADDRESS), monolithic=True,
                  luks={"name": "bound-mono-root", "keyfile": f"keys/{MONO}.luks"})
    first = site.doit()
    assert ("cephboot: warning: secrets.mode: address: the cephx keys (and LUKS keys) of 2 host(s) are served in the clear "
            "to their reserved addresses only") in first.stderr and f": {HOST}, {MONO}\n" in first.stderr, first.stderr
    # a second generation: the first stays published as previous/, which the sweep fetches too
    for name in (HOST, MONO):
        site.hosts[name].data["+kernel_args"] = ["cephboot.e2e=second-generation"]
        site.write_host(site.hosts[name])
    site.doit()
    assert (tree.mountpoint / "hosts" / MONO / "previous" / "initrd.img").is_file()
    assert (tree.mountpoint / "hosts" / HOST / "previous" / "overlay.cpio").is_file()
    site.doit("dnsmasq")  # the DHCP server with a reservation per host; tftp/ in this tree
    site.install_root_image(HOST, tmp_path_factory.mktemp("bound-image"))
    server_block = workdir / "build" / "site" / "nginx.conf"
    assert f"\n    {ADDRESS} {HOST};\n" in server_block.read_text()  # the geo entry that binds its folder
    dnsmasq_conf = workdir / "build" / "site" / "dnsmasq.conf"
    assert f"dhcp-host={MAC},{ADDRESS},{HOST}" in dnsmasq_conf.read_text()
    with NginxServer(a_network_namespace, a_web_server_view.mountpoint, tmp_path_factory.mktemp("bound-http"),
                     PORT, server_block=server_block) as http, \
            a_boot_network.replaced({SUBTREE: dnsmasq_conf}):
        yield BoundSite(site, tree, url, http, a_boot_network.workdir / f"{SUBTREE}-dnsmasq.log")


def _acks(log: Path, mac: str) -> list[str]:
    """The addresses cephboot's dnsmasq acknowledged to ``mac``."""
    return re.findall(rf"DHCPACK\(\S+\) (\S+) {re.escape(mac)}", log.read_text(errors="replace"))


def test_the_host_boots_from_its_reserved_address_and_fetches_its_layer(
    a_bound_site: BoundSite, network_boot: Callable[..., NetworkBoot],
) -> None:
    http = a_bound_site.http
    mark = http.mark()
    guest = network_boot([MAC], UUID).guest
    guest.wait_for(rf"^CEPHBOOT-E2E-OK host={HOST} root=/dev/rbd0$", BOOT_TIMEOUT)
    guest.wait_exit(30)
    console = guest.console()
    assert f"cephboot: mapped {RBD_POOL}/{HOST}/root at /dev/rbd0" in console
    assert "address refused" not in console
    assert ADDRESS in _acks(a_bound_site.dnsmasq_log, MAC)  # its reservation, from the real dnsmasq
    served = [(r.path, r.status, r.client) for r in http.requests_since(mark)]
    layer = f"/{SUBTREE}/hosts/{HOST}/overlay.cpio"
    assert (layer, 200, ADDRESS) in served, served
    assert all(client == ADDRESS for _, _, client in served), served  # every fetch came from its address
    booted = a_bound_site.site.boot_dir(HOST) / "e2e-booted"  # its own /boot, outside the tree
    assert booted.read_text() == f"{HOST} booted with root /dev/rbd0\n"


def test_a_machine_at_another_address_claiming_the_hosts_uuid_gets_no_key_and_stops_with_the_reason(
    a_bound_site: BoundSite, network_boot: Callable[..., NetworkBoot],
) -> None:
    http = a_bound_site.http
    mark = http.mark()
    guest = network_boot([ATTACKER_MAC], UUID).guest  # the UUID route leads it to the host's script
    guest.wait_for(REFUSED, BOOT_TIMEOUT)
    guest.wait_for(REFUSED + r"(.|\n)*^Press any key within 30 s", 60)  # the whole message is out, then its stop
    console = guest.console()
    served = [(r.path, r.status, r.client) for r in http.requests_since(mark)]
    addresses = _acks(a_bound_site.dnsmasq_log, ATTACKER_MAC)
    assert addresses and ADDRESS not in addresses, addresses
    assert (f"cephboot: address refused: the keys of host {HOST} are served only to its reserved address {ADDRESS} "
            f"(secrets.mode: address), and this machine has address {addresses[-1]}:") in console.replace("\n", "")
    script, layer = f"/{SUBTREE}/hosts/{HOST}/boot.ipxe", f"/{SUBTREE}/hosts/{HOST}/overlay.cpio"
    assert (script, 200, addresses[-1]) in served, served  # the route and the host's script: no key in them
    assert (layer, 403, addresses[-1]) in served, served
    assert not [p for p, status, _ in served if status == 200 and f"/hosts/{HOST}/" in p and p != script], served
    # it stopped at once: no retries, no fallback to previous/ (refused too), no kernel started
    assert [p for p, _, _ in served].count(layer) == 1 and "previous" not in " ".join(p for p, _, _ in served)
    assert "Linux version" not in console and "CEPHBOOT-E2E-OK" not in console


def test_a_client_at_another_address_that_fetches_every_published_file_finds_no_key_byte(
    a_bound_site: BoundSite, a_network_namespace: NetworkNamespace, tmp_path: Path,
) -> None:
    site = a_bound_site.site
    secrets = {"LUKS key": LUKS_KEY.strip()}
    for name in (HOST, MONO):
        client = site.hosts[name].client
        assert client is not None
        secrets.update(cephx_secrets(f"cephx key of {name}", client.key))
    names = published_names(a_bound_site.tree.mountpoint)
    key_bearing = [n for n in names if n.startswith("hosts/") and not re.fullmatch(r"hosts/[^/]+/boot\.ipxe", n)]
    assert {f"hosts/{HOST}/overlay.cpio", f"hosts/{HOST}/previous/overlay.cpio", f"hosts/{MONO}/initrd.img",
            f"hosts/{MONO}/overlay.cpio", f"hosts/{MONO}/previous/initrd.img"} <= set(key_bearing), key_bearing
    # the routes swept as the issue's attacker did: every MAC of the hosts' prefix, the UUID
    routes = [f"ipxe/by-mac/52-54-00-e2-0e-{i:02x}.ipxe" for i in range(256)] + [f"ipxe/by-uuid/{UUID}.ipxe"]
    fetched = fetch_all(a_network_namespace, a_bound_site.url, names + routes, tmp_path)
    refused = {n for n, got in fetched.items() if got.status == 403}
    assert refused == set(key_bearing), sorted(refused ^ set(key_bearing))
    public = [n for n in names if n not in refused]
    assert all(fetched[n].status == 200 and fetched[n].data for n in public), [n for n in public if fetched[n].status != 200]
    found_routes = [n for n in routes if fetched[n].status == 200]
    assert sorted(found_routes) == sorted([f"ipxe/by-mac/{MAC.replace(':', '-')}.ipxe", f"ipxe/by-mac/{MONO_MAC.replace(':', '-')}.ipxe",
                                           f"ipxe/by-uuid/{UUID}.ipxe"]), found_routes
    assert keys_found(fetched, secrets) == []
    # the search can find a key: the host's own build files hold every one of them
    built = {"layer": (site.host_dir(HOST) / "overlay.cpio").read_bytes(), "initrd": (site.host_dir(MONO) / "initrd.img").read_bytes()}
    assert all(any(needle in data for data in built.values()) for what, needle in secrets.items() if "raw" not in what)
