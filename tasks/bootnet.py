"""What the boot network's DHCP server answers, from the inventory: one model that dnsmasq's
config and the ISC dhcpd / Kea snippets render each in their own syntax."""
from __future__ import annotations

import ipaddress
from typing import NamedTuple
from urllib.parse import urlsplit

from .artifacts import CONDITIONS
from .inventory import Site

# iPXE's first stages are in the tree's tftp/ folder.  That folder is the TFTP root, unless some
# host boots grub-secureboot: its signed GRUB reads grub/, kernels/ and hosts/ by TFTP, so then the
# root is the whole tree (and no host may be in secrets.mode: address: TFTP serves any address).
TFTP_DIR = "tftp"
# boot.loader: grub-secureboot: what those hosts' MACs get under x86_64 UEFI, at the tree's root:
# Debian's signed shim, which fetches grubx64.efi (Debian's signed GRUB) from there too.
SHIM = "shimx64.efi"
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
    file: str  # its path from the TFTP root: <loader>, or tftp/<loader> when the root is the tree (tftp_prefix)


class Answers(NamedTuple):
    """Everything a DHCP server of the boot network hands out for cephboot."""

    network: ipaddress.IPv4Network
    ipxe_url: str  # what a client that already runs iPXE gets: the site's boot.ipxe over HTTP
    loaders: list[Loader]  # what a PXE ROM gets, most specific first
    reservations: list[Reservation]  # server mode only: [] when the site's own server keeps the addresses
    tftp_server: str | None  # next-server for servers that do not serve TFTP themselves (None: unknown)
    secure_macs: list[str]  # the MACs of grub-secureboot hosts: under x86_64 UEFI they get SHIM, not iPXE
    shim: str  # the boot file of secure_macs (a path from the TFTP root)


def reservations(site: Site) -> list[Reservation]:
    """Every host NIC with a static address inside dhcp.network (Host.reservations: the same
    addresses the web server serves an address-mode host's keys to)."""
    network = site.settings["dhcp"]["network"]
    return [Reservation(*r) for name in sorted(site.hosts) for r in site.hosts[name].reservations(network)]


def grub_routes(site: Site) -> list[tuple[str, str]]:
    """(MAC, host) for every MAC of every grub-secureboot host: the site grub.cfg's routes and
    the MACs the DHCP server gives shim (worked out once per site: read it, never change it)."""
    return site.derived("grub_routes", lambda: _grub_routes(site))


def _grub_routes(site: Site) -> list[tuple[str, str]]:
    grub = CONDITIONS["grub"]
    out = []
    for name in sorted(site.hosts):
        cfg = site.hosts[name].cfg
        if grub(cfg):
            for nic in (cfg.nics.ceph, cfg.nics.user):
                out += [(mac, name) for mac in (nic.macs if nic else [])]
    return out


def tftp_prefix(site: Site) -> str:
    """The first stages' folder seen from the TFTP root: '' when the root is the tree's tftp/ itself
    (no host file is then served by TFTP), 'tftp/' when grub-secureboot hosts need the whole tree."""
    return f"{TFTP_DIR}/" if grub_routes(site) else ""


def tftp_exposes_keys(site: Site) -> str | None:
    """Why the boot network cannot be served as the inventory asks, or None: grub-secureboot hosts
    make the TFTP root the whole tree, and TFTP serves any address, so an address-mode host's
    keys (its layer, served over HTTP to its reserved address only) would reach anyone."""
    grub = sorted({name for _, name in grub_routes(site)})
    bound = sorted(n for n, h in site.hosts.items() if h.cfg.secrets.mode == "address")
    if not grub or not bound:
        return None

    def few(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    return (f"the signed GRUB of the grub-secureboot host(s) {few(grub)} reads the boot tree by TFTP, so TFTP must serve "
            f"the whole tree, to any address; the keys of the host(s) {few(bound)} (secrets.mode: address) would reach "
            "anyone who asks for their layer. Give those hosts secrets.mode: machine, or the others boot.loader: ipxe")


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
    prefix = tftp_prefix(site)
    return Answers(
        network=ipaddress.IPv4Network(s["dhcp"]["network"]),
        ipxe_url=f"{s['pxe']['http_base']}/boot.ipxe",
        loaders=[Loader("efi64", (7, 9), f"{prefix}{s['pxe']['uefi_loader']}"), Loader("bios", (0,), f"{prefix}{BIOS_LOADER}")],
        reservations=reservations(site) if s["dhcp"]["mode"] == "server" else [],
        tftp_server=tftp_server(s),
        secure_macs=[mac for mac, _ in grub_routes(site)],
        shim=SHIM,
    )
