"""UEFI Secure Boot (issue 12): a host with boot.loader: grub-secureboot boots under OVMF with
Secure Boot enforced and Microsoft's keys enrolled, through Debian's signed chain.

OVMF's own PXE (the NIC's iPXE ROM is unsigned: it is left out) gets shimx64.efi from the
site's dnsmasq, which tags the host's MAC; shim (signed by Microsoft) fetches grubx64.efi,
Debian's signed GRUB network image, from the same TFTP folder; GRUB reads grub/grub.cfg (the
site's MAC routes), then the host's grub.cfg, the kernel and both initrds, all by TFTP from the
boot tree (the signed image has no HTTP), and boots Debian's signed kernel, which finds Secure
Boot on and the host layer unpacked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

import pytest

from .boot_tree import NginxServer
from .dnsmasq import BootNetwork
from .e2e_site import E2ESite
from .scenario_site import SECUREBOOT_MAC, NetworkBoot
from .test_boot_scenarios import BOOT_TIMEOUT, assert_booted, boot_path, fetched
from .test_uefi import IPXE_BANNER, assert_layer_arrived

pytestmark = pytest.mark.e2e

HOST = "secureboot"
# the host's grub.cfg runs: GRUB is up and has routed this machine
GRUB_RUNNING = ("GRUB", rf"^cephboot: booting {HOST} with kernel \S+ from ")


def test_secure_boot_enforced_boots_shim_signed_grub_and_the_signed_kernel(
    the_e2e_site: E2ESite, network_boot: Callable[..., NetworkBoot], an_http_server: NginxServer,
    a_boot_network: BootNetwork,
) -> None:
    tree = the_e2e_site.boot_tree.mountpoint
    kernel = next(tree.glob("kernels/*/vmlinuz"))
    if shutil.which("sbverify"):  # the kernel cephboot publishes is Debian's, signed for shim's Debian CA
        signed = subprocess.run(["sbverify", "--list", str(kernel)], capture_output=True, text=True)
        assert "Debian Secure Boot CA" in signed.stdout, signed.stdout + signed.stderr
    booted = network_boot([SECUREBOOT_MAC], firmware="secureboot", nic_rom=False)
    booted.guest.wait_for(r"Start PXE over IPv4", 300)  # the firmware's PXE; no iPXE anywhere
    # GRUB's TFTP (one 1 KB block at a time) is slower than iPXE's HTTP: a longer deadline
    boot_path(booted.guest, "UEFI Secure Boot", HOST, loader=GRUB_RUNNING, timeout=2 * BOOT_TIMEOUT)
    console = booted.guest.console()
    # the firmware verified shim, shim GRUB, GRUB (through shim) the kernel: the kernel says so
    assert "secureboot: Secure boot enabled" in console, console[-5000:]
    assert "Kernel is locked down from EFI Secure Boot" in console, console[-5000:]
    assert not re.findall(IPXE_BANNER, console), console[:5000]
    assert_layer_arrived(console)
    # everything by TFTP from the tree, in this order: shim, GRUB, the site's routes, the host's
    # config, the kernel, the layer, the base. OVMF and GRUB open some files more than once (a
    # size probe first), and dnsmasq logs a transfer when it ends: under load, one that GRUB
    # gave up on and asked for again ends after later ones. Each file counts once, where it was
    # first sent.
    log = a_boot_network.lines_since(booted.dnsmasq_mark)
    sent = [re.sub(r"^.* sent \S*?/tree/(\S+) to .*$", r"\1", line) for line in log if re.search(r"dnsmasq-tftp\[\d+\]: sent ", line)]
    files = list(dict.fromkeys(sent))
    assert files == [
        "shimx64.efi", "grubx64.efi", "grub/grub.cfg", f"hosts/{HOST}/grub.cfg", str(kernel.relative_to(tree)),
        f"hosts/{HOST}/overlay.cpio", str(kernel.parent.relative_to(tree) / "initrd.img")], log
    # nothing over HTTP: no iPXE script, no route
    assert fetched(an_http_server, booted.http_mark) == []
    assert_booted(the_e2e_site, HOST)
