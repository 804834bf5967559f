"""iPXE in QEMU gets its script from the site's dnsmasq and chains over HTTP from the CephFS boot tree."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .boot_tree import CephFuseMount, NginxServer, WebServerView
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .dnsmasq import BootNetwork
from .e2e_site import E2ESite, SubUrl, Subtree
from .qemu_vm import QemuMachine

pytestmark = pytest.mark.e2e

KNOWN_MAC = "52:54:00:e2:e0:01"
UNKNOWN_MAC = "52:54:00:e2:e0:99"
SUBTREE = "ipxe-chain-test"
DNSMASQ = "ipxe-chain"

# The shape of the site-wide boot.ipxe (docs/front-end.md), written by hand: by UUID, by MAC,
# else "unknown machine". iPXE wraps console lines at 80 columns: keep markers short.
SITE_SCRIPT = """\
#!ipxe
echo E2E-IPXE-START
echo uuid=${{uuid}}
echo mac=${{mac:hexhyp}}
chain {base}ipxe/by-uuid/${{uuid}}.ipxe || chain {base}ipxe/by-mac/${{mac:hexhyp}}.ipxe || echo E2E-UNKNOWN-MACHINE ${{mac:hexhyp}}
"""

HOST_SCRIPT = """\
#!ipxe
echo E2E-HOST-SCRIPT {name}
"""


@pytest.fixture(scope="module")
def a_small_boot_tree(
    a_ceph_cluster: CephCluster, a_boot_tree_mount: CephFuseMount, a_web_server_view: WebServerView,
    an_http_server: NginxServer, a_boot_bridge: BootNetwork, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """A boot tree of its own in the CephFS boot tree: the site script and one host; a site
    whose `doit dnsmasq` config hands iPXE that script, on the bridge for the module (its one
    host, an address from dhcp.range, is there because an inventory has at least one)."""
    root = a_boot_tree_mount.mountpoint / SUBTREE
    base = f"{an_http_server.url}{SUBTREE}/"
    root.mkdir(exist_ok=True)
    site = E2ESite(a_ceph_cluster, Subtree(f"{a_boot_tree_mount.fs_path}/{SUBTREE}", root),
                   SubUrl(base, a_web_server_view.mountpoint / SUBTREE), tmp_path_factory.mktemp("ipxe-chain"), RBD_POOL)
    site.add_host("ipxe-chain", [KNOWN_MAC], nics={"ceph": {"macs": [KNOWN_MAC], "address": "dhcp"}})
    site.doit("dnsmasq")  # its boot.ipxe URL, and tftp/ in the subtree
    (root / "ipxe" / "by-mac").mkdir(parents=True, exist_ok=True)
    (root / "boot.ipxe").write_text(SITE_SCRIPT.format(base=base))
    host = root / "ipxe" / "by-mac" / f"{KNOWN_MAC.replace(':', '-')}.ipxe"
    host.write_text(HOST_SCRIPT.format(name="by-mac"))
    with a_boot_bridge.replaced({DNSMASQ: site.root / "build" / "site" / "dnsmasq.conf"}):
        yield root


def test_ipxe_runs_the_boot_script_the_sites_dnsmasq_hands_it(
    bridge_guest: Callable[..., QemuMachine], a_small_boot_tree: Path, an_http_server: NginxServer,
    a_boot_bridge: BootNetwork,
) -> None:
    mark = an_http_server.mark()
    machine_uuid = str(uuid.uuid4())
    guest = bridge_guest([KNOWN_MAC], machine_uuid)
    guest.wait_for("^E2E-IPXE-START", timeout=90)
    guest.wait_for(f"^uuid={machine_uuid}", timeout=10)
    guest.wait_for(f"^mac={KNOWN_MAC.replace(':', '-')}", timeout=10)
    # an address from the site's dnsmasq, and the script over HTTP from that address
    addresses = a_boot_bridge.acks(DNSMASQ, KNOWN_MAC)
    assert addresses, a_boot_bridge.log_of(DNSMASQ).read_text()[-3000:]
    first = an_http_server.requests_since(mark)[0]
    assert (first.path, first.status, first.client) == (f"/{SUBTREE}/boot.ipxe", 200, addresses[-1])


def test_ipxe_chains_to_the_host_script_over_http(
    bridge_guest: Callable[..., QemuMachine],
    a_small_boot_tree: Path,
    an_http_server: NginxServer,
) -> None:
    mark = an_http_server.mark()
    machine_uuid = str(uuid.uuid4())
    guest = bridge_guest([KNOWN_MAC], machine_uuid)
    guest.wait_for("^E2E-HOST-SCRIPT by-mac", timeout=120)
    fetched = [(r.path, r.status) for r in an_http_server.requests_since(mark)]
    assert fetched == [
        (f"/{SUBTREE}/boot.ipxe", 200),
        (f"/{SUBTREE}/ipxe/by-uuid/{machine_uuid}.ipxe", 404),
        (f"/{SUBTREE}/ipxe/by-mac/{KNOWN_MAC.replace(':', '-')}.ipxe", 200),
    ]
    assert "E2E-UNKNOWN-MACHINE" not in guest.console()


def test_an_unknown_machine_gets_the_unknown_machine_message(
    bridge_guest: Callable[..., QemuMachine],
    a_small_boot_tree: Path,
    an_http_server: NginxServer,
) -> None:
    mark = an_http_server.mark()
    guest = bridge_guest([UNKNOWN_MAC])
    guest.wait_for(f"^E2E-UNKNOWN-MACHINE {UNKNOWN_MAC.replace(':', '-')}", timeout=120)
    assert [r.status for r in an_http_server.requests_since(mark)] == [200, 404, 404]
    assert "E2E-HOST-SCRIPT" not in guest.console()
