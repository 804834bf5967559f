"""What the boot network's DHCP server answers, from the inventory: one model that dnsmasq's
config and the ISC dhcpd / Kea snippets render each in their own syntax."""
from __future__ import annotations

import ipaddress
from typing import NamedTuple
from urllib.parse import urlsplit

from .inventory import Site

# Debian's ipxe package: the first stage a PXE ROM fetches by TFTP, per firmware.
BIOS_LOADER = "undionly.kpxe"  # iPXE on the NIC's own PXE stack (UNDI)
UEFI_LOADERS = ("snponly.efi", "ipxe.efi")  # iPXE on the firmware's NIC driver / on its own drivers
LOADERS = (BIOS_LOADER, *UEFI_LOADERS)


class Reservation(NamedTuple):
    """A fixed address for one host NIC, given to any of its MACs."""

    name: str  # the host's name for its Ceph NIC, <host>-user for its user NIC
    macs: list[str]
    address: str


class Loader(NamedTuple):
    """The first stage for PXE ROMs of one kind, told apart by DHCP option 93 (RFC 4578)."""

    kind: str  # the tag/class name the configs use: bios, efi64
    arches: tuple[int, ...]  # client system architecture values
    file: str  # a file of the tree's tftp/


class Answers(NamedTuple):
    """Everything a DHCP server of the boot network hands out for cephboot."""

    network: ipaddress.IPv4Network
    ipxe_url: str  # what a client that already runs iPXE gets: the site's boot.ipxe over HTTP
    loaders: list[Loader]  # what a PXE ROM gets, most specific first
    reservations: list[Reservation]  # server mode only: [] when the site's own server keeps the addresses
    tftp_server: str | None  # next-server for servers that do not serve TFTP themselves (None: unknown)


def reservations(site: Site) -> list[Reservation]:
    """Every host NIC with a static address inside dhcp.network (Host.reservations: the same
    addresses the web server serves an address-mode host's keys to)."""
    network = site.settings["dhcp"]["network"]
    return [Reservation(*r) for name in sorted(site.hosts) for r in site.hosts[name].reservations(network)]


def tftp_server(settings: dict) -> str | None:
    """dhcp.tftp_server, else pxe.http_base's host when that is an IPv4 address."""
    if settings["dhcp"]["tftp_server"]:
        return settings["dhcp"]["tftp_server"]
    host = urlsplit(settings["pxe"]["http_base"]).hostname or ""
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return None


def answers(site: Site) -> Answers:
    """The boot network's answers for ``site`` (dhcp.network must be set)."""
    s = site.settings
    return Answers(
        network=ipaddress.IPv4Network(s["dhcp"]["network"]),
        ipxe_url=f"{s['pxe']['http_base']}/boot.ipxe",
        loaders=[Loader("efi64", (7, 9), s["pxe"]["uefi_loader"]), Loader("bios", (0,), BIOS_LOADER)],
        reservations=reservations(site) if s["dhcp"]["mode"] == "server" else [],
        tftp_server=tftp_server(s),
    )
