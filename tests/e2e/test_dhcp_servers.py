"""A site's existing ISC dhcpd, given the snippet `doit dhcp-snippets` generated, boots a host.

cephboot's dnsmasq is stopped for the test; real dhcpd runs on the boot network's bridge in
the test namespace (by PID, its own files), with a minimal dhcpd.conf that includes the
snippet inside the boot network's subnet, as docs/front-end.md tells a site to. A SeaBIOS
guest's iPXE ROM gets its reserved address and the site's boot.ipxe from it, and boots.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from .boot_tree import NginxServer
from .dnsmasq import BRIDGE, BootNetwork
from .e2e_site import GUEST_GATEWAY, E2ESite
from .scenario_site import NetworkBoot
from .test_boot_scenarios import assert_booted, assert_fetched_host_chain, boot_path, fetched, hexhyp

pytestmark = pytest.mark.e2e


def dhcpd_conf(site: E2ESite, path: Path) -> Path:
    """The site's own dhcpd.conf: its boot network, a gateway, and cephboot's snippet."""
    site.doit("dhcp-snippets:dhcpd")
    snippet = site.root / "build" / "site" / "dhcpd.conf"
    path.write_text("authoritative;\n"
                    "default-lease-time 600;\n"
                    "subnet 198.51.100.0 netmask 255.255.255.0 {\n"
                    f"    option routers {GUEST_GATEWAY};\n"
                    f"    include \"{snippet}\";\n"
                    "}\n")
    return path


def test_isc_dhcpd_with_the_generated_snippet_boots_a_host(
    the_e2e_site: E2ESite, a_boot_network: BootNetwork, network_boot: Callable[..., NetworkBoot],
    an_http_server: NginxServer, tmp_path: Path,
) -> None:
    host = the_e2e_site.hosts["by-mac"]
    address = host.data["nics"]["ceph"]["address"].split("/")[0]
    conf = dhcpd_conf(the_e2e_site, tmp_path / "dhcpd.conf")
    leases = tmp_path / "dhcpd.leases"
    leases.touch()
    log = tmp_path / "dhcpd.log"
    with a_boot_network.replaced({}):  # no dnsmasq on the bridge while dhcpd answers
        a_boot_network.serve_with("isc-dhcpd", [
            "dhcpd", "-f", "-d", "-4", "-cf", str(conf), "-lf", str(leases),
            "-pf", str(tmp_path / "dhcpd.pid"), BRIDGE,
        ], log)
        try:
            booted = network_boot(host.macs)
            boot_path(booted.guest, "SeaBIOS, ISC dhcpd", "by-mac")
        finally:
            a_boot_network.halt("isc-dhcpd")
    dhcpd_log = log.read_text(errors="replace")
    # the snippet's reservation gave the host its inventory address
    assert re.search(rf"DHCPACK on {re.escape(address)} to {host.macs[0]} .*via {BRIDGE}", dhcpd_log), dhcpd_log[-3000:]
    requests = fetched(an_http_server, booted.http_mark)
    # the snippet's iPXE branch: boot.ipxe over HTTP, then the host's route by MAC
    assert requests[0] == ("/boot.ipxe", 200), requests
    assert (f"/ipxe/by-mac/{hexhyp(host.macs[0])}.ipxe", 200) in requests
    assert_fetched_host_chain(requests, "by-mac")
    assert_booted(the_e2e_site, "by-mac")
