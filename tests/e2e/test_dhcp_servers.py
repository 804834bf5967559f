"""A site's existing ISC dhcpd or Kea server, given the snippets `doit dhcp-snippets` generated, boots a host.

cephboot's dnsmasq is stopped for the test; the real server runs on the boot network's bridge in
the test namespace (by PID, its own files), with a minimal config that includes the snippets
where docs/front-end.md tells a site to (dhcpd: inside the boot network's subnet; Kea: the
classes among the Dhcp4 members, the reservations in the subnet4 entry). A SeaBIOS guest's iPXE
ROM gets its reserved address and the site's boot.ipxe from it, and boots.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from .boot_tree import NginxServer
from .dnsmasq import BRIDGE, BootNetwork
from .e2e_site import BOOT_NETWORK, GUEST_GATEWAY, UNRESERVED, E2ESite, SiteHost
from .scenario_site import NetworkBoot
from .test_boot_scenarios import assert_booted, assert_fetched_host_chain, boot_path, fetched, hexhyp

pytestmark = pytest.mark.e2e

HOST = "by-mac"


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


def kea_conf(site: E2ESite, path: Path) -> Path:
    """The site's own kea-dhcp4.conf: the bridge, its boot network with a pool and a gateway, and
    cephboot's two fragments; leases in memory, the log on stdout."""
    site.doit("dhcp-snippets:kea")
    kea = site.root / "build" / "site" / "kea-dhcp4"
    path.write_text('{"Dhcp4": {\n'
                    f'    "interfaces-config": {{"interfaces": ["{BRIDGE}"]}},\n'
                    '    "lease-database": {"type": "memfile", "persist": false},\n'
                    '    "valid-lifetime": 600,\n'
                    '    "loggers": [{"name": "kea-dhcp4", "severity": "INFO",\n'
                    '                 "output_options": [{"output": "stdout", "flush": true}]}],\n'
                    f'    <?include "{kea / "dhcp4.json"}"?>,\n'
                    f'    "subnet4": [{{"id": 1, "subnet": "{BOOT_NETWORK}",\n'
                    f'                 "pools": [{{"pool": "{UNRESERVED[0]} - {UNRESERVED[1]}"}}],\n'
                    f'                 "option-data": [{{"name": "routers", "data": "{GUEST_GATEWAY}"}}],\n'
                    f'                 <?include "{kea / "subnet4.json"}"?>}}]\n'
                    "}}\n")
    return path


def boot_with(bridge: BootNetwork, network_boot: Callable[..., NetworkBoot], site: E2ESite, name: str,
              argv: list[str], log: Path) -> NetworkBoot:
    """cephboot's dnsmasq stopped, the DHCP server ``argv`` on the bridge: the by-mac host boots
    under SeaBIOS (its boot path timed as "SeaBIOS, <name>")."""
    with bridge.replaced({}):  # no dnsmasq on the bridge while this server answers
        bridge.serve_with(name, argv, log)
        try:
            booted = network_boot(site.hosts[HOST].macs)
            boot_path(booted.guest, f"SeaBIOS, {name}", HOST)
        finally:
            bridge.halt(name)
    return booted


def assert_booted_through_the_snippet(site: E2ESite, http: NginxServer, booted: NetworkBoot, address: str) -> None:
    """The snippet's iPXE branch: boot.ipxe over HTTP first, then the host's route by MAC and
    its chain, every request from the reserved address; the root mounted."""
    requests = fetched(http, booted.http_mark)
    assert requests[0] == ("/boot.ipxe", 200), requests
    assert (f"/ipxe/by-mac/{hexhyp(site.hosts[HOST].macs[0])}.ipxe", 200) in requests
    assert_fetched_host_chain(requests, HOST)
    assert {r.client for r in http.requests_since(booted.http_mark)} == {address}
    assert_booted(site, HOST)


def reserved(site: E2ESite) -> tuple[SiteHost, str]:
    """The test's host and the address its DHCP reservation gives its Ceph NIC."""
    host = site.hosts[HOST]
    return host, host.data["nics"]["ceph"]["address"].split("/")[0]


def test_isc_dhcpd_with_the_generated_snippet_boots_a_host(
    the_e2e_site: E2ESite, a_boot_network: BootNetwork, network_boot: Callable[..., NetworkBoot],
    an_http_server: NginxServer, tmp_path: Path,
) -> None:
    host, address = reserved(the_e2e_site)
    conf = dhcpd_conf(the_e2e_site, tmp_path / "dhcpd.conf")
    leases = tmp_path / "dhcpd.leases"
    leases.touch()
    log = tmp_path / "dhcpd.log"
    booted = boot_with(a_boot_network, network_boot, the_e2e_site, "ISC dhcpd", [
        "dhcpd", "-f", "-d", "-4", "-cf", str(conf), "-lf", str(leases), "-pf", str(tmp_path / "dhcpd.pid"), BRIDGE,
    ], log)
    dhcpd_log = log.read_text(errors="replace")
    # the snippet's reservation gave the host its inventory address
    assert re.search(rf"DHCPACK on {re.escape(address)} to {host.macs[0]} .*via {BRIDGE}", dhcpd_log), dhcpd_log[-3000:]
    assert_booted_through_the_snippet(the_e2e_site, an_http_server, booted, address)


def test_kea_with_the_generated_snippets_boots_a_host(
    the_e2e_site: E2ESite, a_boot_network: BootNetwork, network_boot: Callable[..., NetworkBoot],
    an_http_server: NginxServer, tmp_path: Path,
) -> None:
    host, address = reserved(the_e2e_site)
    conf = kea_conf(the_e2e_site, tmp_path / "kea-dhcp4.conf")
    log = tmp_path / "kea-dhcp4.log"
    # its PID and lock files in the test's folder, not the system's; the bridge running before
    # Kea starts, as a site's interface is (Kea opens no socket on an interface without carrier)
    with a_boot_network.carrier():
        booted = boot_with(a_boot_network, network_boot, the_e2e_site, "Kea", [
            "env", f"KEA_PIDFILE_DIR={tmp_path}", f"KEA_LOCKFILE_DIR={tmp_path}", "kea-dhcp4", "-c", str(conf),
        ], log)
    kea_log = log.read_text(errors="replace")
    # the fragment's reservation gave the host its inventory address (Kea logs the lease it gave)
    assert re.search(rf"DHCP4_LEASE_ALLOC \[hwtype=1 {host.macs[0]}\].*: lease {re.escape(address)} has been allocated", kea_log), \
        kea_log[-3000:]
    assert_booted_through_the_snippet(the_e2e_site, an_http_server, booted, address)
