"""UEFI x86_64 (issue 12): the scenario site's hosts boot under OVMF through what a site runs.

The guests sit on a bridge in the test namespace (QEMU taps), where real dnsmasq, with
the config `doit dnsmasq` generated, is the DHCP server and serves the tree's tftp/.
Two first stages: iPXE as the NIC's option ROM (efi-virtio.rom), and OVMF's own PXE
fetching snponly.efi from dnsmasq's TFTP, which then runs iPXE on the firmware's NIC
driver. Either way iPXE gets the site's boot.ipxe over HTTP from dnsmasq, and routes.
Each test prints its boot path's timings (power-on -> iPXE -> kernel -> root).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .boot_tree import NginxServer
from .dnsmasq import BootNetwork
from .e2e_site import BOOT_NETWORK, GUEST_GATEWAY, UNRESERVED, E2ESite
from .scenario_site import (BY_UUID_UUID, FALLBACK_NEW, LUKS_NAME, MULTI_MACS, UNLISTED_MAC,
                            NetworkBoot)
from .test_boot_scenarios import BOOT_TIMEOUT, assert_booted, assert_fetched_host_chain, fetched, hexhyp
from .test_boot_scenarios import boot_path as scenario_boot_path

pytestmark = pytest.mark.e2e

IPXE_BANNER = r"iPXE 1\.\d"
LAYER_LOST = "Initramfs unpacking failed"


@pytest.fixture
def uefi_boot(network_boot: Callable[..., NetworkBoot]) -> Callable[..., NetworkBoot]:
    """``uefi_boot(macs, uuid=None, nic_rom=True)``: an OVMF guest on the boot network."""
    return functools.partial(network_boot, firmware="uefi")


def boot_path(booted: NetworkBoot, host: str, root: str = "/dev/rbd0") -> list[tuple[str, float]]:
    """The whole chain under UEFI, timed (test_boot_scenarios.boot_path)."""
    return scenario_boot_path(booted.guest, "UEFI", host, root)


def assert_layer_arrived(console: str) -> None:
    """The host layer was unpacked: the issue's failure was the kernel dropping it."""
    assert LAYER_LOST not in console, console[max(0, console.index(LAYER_LOST) - 2000):][:3000]
    assert "/conf/conf.d/cephboot is missing" not in console
    assert "no /conf/conf.d/cephboot" not in console


def test_uefi_with_ipxe_as_the_nic_rom_boots_by_mac(
    the_e2e_site: E2ESite, uefi_boot: Callable[..., NetworkBoot], an_http_server: NginxServer,
    a_boot_network: BootNetwork,
) -> None:
    host = the_e2e_site.hosts["by-mac"]
    booted = uefi_boot(host.macs)
    boot_path(booted, "by-mac")
    console = booted.guest.console()
    assert_layer_arrived(console)
    requests = fetched(an_http_server, booted.http_mark)
    # dnsmasq told the ROM's iPXE to fetch boot.ipxe over HTTP; nothing came by TFTP
    assert requests[0] == ("/boot.ipxe", 200), requests
    assert (f"/ipxe/by-mac/{hexhyp(host.macs[0])}.ipxe", 200) in requests
    assert_fetched_host_chain(requests, "by-mac")
    assert a_boot_network.tftp_sent(booted.dnsmasq_mark) == []
    assert_booted(the_e2e_site, "by-mac")


def test_uefi_firmware_pxe_chains_snponly_from_dnsmasq_and_routes_by_uuid(
    the_e2e_site: E2ESite, uefi_boot: Callable[..., NetworkBoot], an_http_server: NginxServer,
    a_boot_network: BootNetwork,
) -> None:
    """OVMF's own PXE on a NIC no host lists: dnsmasq gives it snponly.efi by TFTP (once:
    the iPXE it becomes gets boot.ipxe, so nothing loops), and the SMBIOS UUID routes it."""
    host = the_e2e_site.hosts["by-uuid"]
    booted = uefi_boot([UNLISTED_MAC, *host.macs], BY_UUID_UUID, nic_rom=False)
    booted.guest.wait_for(r"Start PXE over IPv4", BOOT_TIMEOUT)  # the firmware's PXE, not iPXE's
    boot_path(booted, "by-uuid")
    console = booted.guest.console()
    assert_layer_arrived(console)
    # TFTP served snponly.efi only; the iPXE it became started once and took boot.ipxe
    # over HTTP instead of snponly.efi again (OVMF reads the file twice: its size, then it)
    tftp = [line for line in a_boot_network.lines_since(booted.dnsmasq_mark) if "tftp" in line]
    assert set(a_boot_network.tftp_sent(booted.dnsmasq_mark)) == {"snponly.efi"}, tftp
    assert len(re.findall(IPXE_BANNER, console)) == 1, console[:5000]
    requests = fetched(an_http_server, booted.http_mark)
    assert requests[:2] == [("/boot.ipxe", 200), (f"/ipxe/by-uuid/{BY_UUID_UUID}.ipxe", 200)], requests
    assert not [path for path, _ in requests if path.startswith("/ipxe/by-mac/")], requests
    assert_fetched_host_chain(requests, "by-uuid")
    assert re.search(rf"cephboot: Ceph NIC is \S+ \({host.macs[0]}\)$", console, re.MULTILINE)
    assert_booted(the_e2e_site, "by-uuid")


def test_uefi_luks_root_is_opened_and_mounted(
    the_e2e_site: E2ESite, uefi_boot: Callable[..., NetworkBoot], an_http_server: NginxServer,
) -> None:
    root = f"/dev/mapper/{LUKS_NAME}"
    booted = uefi_boot(the_e2e_site.hosts["luks"].macs)
    boot_path(booted, "luks", root)
    console = booted.guest.console()
    assert_layer_arrived(console)
    assert f"cephboot: opened /dev/rbd0 as {root}" in console
    assert_fetched_host_chain(fetched(an_http_server, booted.http_mark), "luks")
    assert_booted(the_e2e_site, "luks", root)


def test_uefi_monolithic_host_boots_from_its_single_initrd(
    the_e2e_site: E2ESite, uefi_boot: Callable[..., NetworkBoot], an_http_server: NginxServer,
) -> None:
    booted = uefi_boot(the_e2e_site.hosts["monolithic"].macs)
    boot_path(booted, "monolithic")
    assert_layer_arrived(booted.guest.console())
    paths = {path for path, status in fetched(an_http_server, booted.http_mark) if status == 200}
    assert "/hosts/monolithic/initrd.img" in paths, paths
    assert not [p for p in paths if p.endswith("overlay.cpio") or re.fullmatch(r"/kernels/[^/]+/initrd\.img", p)], paths
    assert_booted(the_e2e_site, "monolithic")


def test_uefi_host_whose_current_layer_is_missing_boots_its_previous_generation(
    the_e2e_site: E2ESite, uefi_boot: Callable[..., NetworkBoot], an_http_server: NginxServer,
) -> None:
    folder: Path = the_e2e_site.boot_tree.mountpoint / "hosts" / "fallback"
    layer = folder / "overlay.cpio"
    saved = layer.read_bytes()
    layer.unlink()
    try:
        booted = uefi_boot(the_e2e_site.hosts["fallback"].macs)
        boot_path(booted, "fallback")
    finally:
        layer.write_bytes(saved)
        layer.chmod(0o640)
    console = booted.guest.console()
    assert_layer_arrived(console)
    assert "cephboot: fallback: trying the previous generation of its boot files" in console
    requests = fetched(an_http_server, booted.http_mark)
    assert ("/hosts/fallback/previous/overlay.cpio", 200) in requests, requests
    cmdline = re.search(r"^CEPHBOOT-E2E-CMDLINE host=fallback (.*)$", console, re.MULTILINE)
    assert cmdline and FALLBACK_NEW not in cmdline.group(1).split(), console[-2000:]
    assert_booted(the_e2e_site, "fallback")


# ---- proxy-DHCP (the default mode) next to the site's own DHCP server -------------

# The site's DHCP server: addresses and a gateway, no boot information at all.
SITE_DHCP = f"""port=0
dhcp-range={UNRESERVED[0]},{UNRESERVED[1]},255.255.255.0,1h
dhcp-option=option:router,{GUEST_GATEWAY}
"""


def generated_conf(site: E2ESite, path: Path, pxe: dict[str, str] | None = None,
                   dhcp: dict[str, object] | None = None) -> Path:
    """The dnsmasq.conf `doit dnsmasq` makes with other ``pxe``/``dhcp`` settings, saved at
    ``path``; the site's settings and its own dnsmasq.conf are put back after."""
    saved = {key: dict(site.site_settings[key]) for key in ("pxe", "dhcp")}
    site.site_settings["pxe"].update(pxe or {})
    if dhcp is not None:
        site.site_settings["dhcp"] = dhcp
    try:
        site.doit("dnsmasq")
        path.write_bytes((site.root / "build" / "site" / "dnsmasq.conf").read_bytes())
    finally:
        site.site_settings.update(saved)
        site.doit("dnsmasq")
    return path


@pytest.fixture
def a_proxy_dhcp_network(
    the_e2e_site: E2ESite, a_boot_network: BootNetwork, tmp_path: Path,
) -> Iterator[BootNetwork]:
    """cephboot's dnsmasq in proxy mode (`doit dnsmasq` with dhcp.mode: proxy) next to a
    plain DHCP server, on the same bridge, for one test; then back to server mode."""
    proxy = generated_conf(the_e2e_site, tmp_path / "cephboot-proxy.conf",
                           dhcp={"network": BOOT_NETWORK, "mode": "proxy"})
    assert "dhcp-range=198.51.100.0,proxy,255.255.255.0" in proxy.read_text().splitlines()
    site_dhcp = tmp_path / "site-dhcp.conf"
    site_dhcp.write_text(SITE_DHCP)
    with a_boot_network.replaced({"site": site_dhcp, "cephboot": proxy}):
        yield a_boot_network


def test_uefi_firmware_pxe_boots_with_proxy_dhcp_next_to_the_sites_dhcp_server(
    the_e2e_site: E2ESite, a_proxy_dhcp_network: BootNetwork,
    uefi_boot: Callable[..., NetworkBoot], an_http_server: NginxServer,
) -> None:
    """The address comes from the site's server, the boot information from cephboot's
    proxy: snponly.efi for the firmware, boot.ipxe for the iPXE it becomes. A multi-MAC
    host booted with its second MAC routes by that MAC."""
    second = MULTI_MACS[1]
    booted = uefi_boot([second], nic_rom=False)
    booted.guest.wait_for(r"Start PXE over IPv4", BOOT_TIMEOUT)
    boot_path(booted, "multi-mac")
    console = booted.guest.console()
    assert_layer_arrived(console)
    network = a_proxy_dhcp_network
    log = network.lines_since(booted.dnsmasq_mark)
    assert set(network.tftp_sent(booted.dnsmasq_mark)) == {"snponly.efi"}, log
    assert len(re.findall(IPXE_BANNER, console)) == 1, console[:5000]
    assert any("proxy" in line for line in log), log  # dnsmasq answered as proxy-DHCP
    leases = (network.workdir / "site.leases").read_text()
    assert second in leases, leases  # the site's server gave the address
    requests = fetched(an_http_server, booted.http_mark)
    assert requests[0] == ("/boot.ipxe", 200), requests
    assert (f"/ipxe/by-mac/{hexhyp(second)}.ipxe", 200) in requests
    assert_fetched_host_chain(requests, "multi-mac")
    assert_booted(the_e2e_site, "multi-mac")


# ---- pxe.uefi_loader: ipxe.efi (iPXE's own NIC drivers instead of the firmware's) ----


def test_uefi_firmware_pxe_chains_ipxe_efi_when_the_site_asks_for_it(
    the_e2e_site: E2ESite, a_boot_network: BootNetwork, uefi_boot: Callable[..., NetworkBoot],
    an_http_server: NginxServer, tmp_path: Path,
) -> None:
    """With pxe.uefi_loader: ipxe.efi the firmware gets ipxe.efi; the sysfs/msgr2-secure
    host maps its root under UEFI too."""
    conf = generated_conf(the_e2e_site, tmp_path / "cephboot-ipxe-efi.conf", pxe={"uefi_loader": "ipxe.efi"})
    # Machines that are not grub-secureboot hosts get ipxe.efi (from tftp/ when the session's site
    # has grub-secureboot hosts, which make the TFTP root the whole tree).
    efi64 = [line for line in conf.read_text().splitlines()
             if line.startswith("dhcp-boot=tag:!ipxe,tag:efi64,") and ",tag:secureboot," not in line]
    assert len(efi64) == 1 and re.fullmatch(r"dhcp-boot=tag:!ipxe,tag:efi64,(tag:!secureboot,)?(tftp/)?ipxe\.efi", efi64[0]), efi64
    with a_boot_network.replaced({"cephboot": conf}):
        booted = uefi_boot(the_e2e_site.hosts["sysfs-secure"].macs, nic_rom=False)
        booted.guest.wait_for(r"Start PXE over IPv4", BOOT_TIMEOUT)
        boot_path(booted, "sysfs-secure")
    console = booted.guest.console()
    assert_layer_arrived(console)
    log = a_boot_network.lines_since(booted.dnsmasq_mark)
    assert set(a_boot_network.tftp_sent(booted.dnsmasq_mark)) == {"ipxe.efi"}, log
    assert len(re.findall(IPXE_BANNER, console)) == 1, console[:5000]
    assert re.search(r"libceph: mon0 \(2\)192\.0\.2\.1:3300 session established", console)
    assert_fetched_host_chain(fetched(an_http_server, booted.http_mark), "sysfs-secure")
    assert_booted(the_e2e_site, "sysfs-secure")
