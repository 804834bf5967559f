"""The e2e site: one host per boot scenario, provisioned, built and published once per
session, and the boot network its machines start on (a bridge with the site's dnsmasq).

test_boot_scenarios.py boots them under SeaBIOS, test_uefi.py under OVMF; conftest.py
makes these fixtures the suite's own, so both get the same site, one `doit` run and one
dnsmasq.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from .boot_tree import CephFuseMount, NginxServer
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .dnsmasq import BootNetwork
from .e2e_site import E2ESite
from .qemu_vm import QemuMachine

# The wrong-key host's map deadline (its boot then panics: test_boot_scenarios.py).
WRONG_KEY_DEADLINE = 20

BY_UUID_UUID = "e2e00002-0000-4000-8000-000000000002"
UNLISTED_MAC = "52:54:00:e2:02:99"
UNKNOWN_MAC = "52:54:00:e2:09:99"
MULTI_MACS = ["52:54:00:e2:04:01", "52:54:00:e2:04:02", "52:54:00:e2:04:03"]
LUKS_NAME = "e2e-root"
FALLBACK_NEW = "cephboot.e2e=second-generation"
SECUREBOOT_MAC = "52:54:00:e2:0b:01"


@pytest.fixture(scope="session")
def the_e2e_site(
    a_ceph_cluster: CephCluster,
    a_boot_tree_mount: CephFuseMount,
    an_http_server: NginxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2ESite]:
    """Every scenario's host, provisioned, built and published by one `doit` run."""
    workdir = tmp_path_factory.mktemp("site")
    site = E2ESite(a_ceph_cluster, a_boot_tree_mount, an_http_server, workdir, RBD_POOL)
    site.add_host("by-mac", ["52:54:00:e2:01:01"])
    site.add_host("by-uuid", ["52:54:00:e2:02:01"], uuid=BY_UUID_UUID)
    site.add_host("sysfs-secure", ["52:54:00:e2:03:01"],
                  map={"method": "sysfs", "options": ["ms_mode=secure"]})
    site.add_host("multi-mac", MULTI_MACS)
    site.write_secret("keys/luks.luks", b"e2e LUKS passphrase of host luks\n")
    site.add_host("luks", ["52:54:00:e2:05:01"],
                  luks={"name": LUKS_NAME, "keyfile": "keys/luks.luks"})
    site.add_host("mon-fault", ["52:54:00:e2:06:01"])
    site.add_host("wrong-key", ["52:54:00:e2:07:01"], map={"deadline": WRONG_KEY_DEADLINE})
    site.give_wrong_key("wrong-key")
    site.add_host("monolithic", ["52:54:00:e2:08:01"], monolithic=True)
    site.add_host("fallback", ["52:54:00:e2:0a:01"])
    site.add_host("secureboot", [SECUREBOOT_MAC], boot={"loader": "grub-secureboot"})
    site.doit()
    # a second generation of "fallback": the first stays published as its previous/
    site.hosts["fallback"].data["+kernel_args"] = [FALLBACK_NEW]
    site.write_host(site.hosts["fallback"])
    site.doit()
    images = tmp_path_factory.mktemp("images")
    for name in site.hosts:
        site.install_root_image(name, images)
    yield site


@pytest.fixture(scope="session")
def a_boot_network(the_e2e_site: E2ESite, a_boot_bridge: BootNetwork) -> Iterator[BootNetwork]:
    """The bridge with the site's dnsmasq (server mode, a reservation per host) as its standing DHCP server."""
    the_e2e_site.doit("dnsmasq")  # build/site/dnsmasq.conf, and tftp/ in the boot tree
    a_boot_bridge.use(the_e2e_site.root / "build" / "site" / "dnsmasq.conf")
    try:
        yield a_boot_bridge
    finally:
        a_boot_bridge.use(None)


@dataclass
class NetworkBoot:
    """A guest on the boot network, with the marks of the logs it will write."""

    guest: QemuMachine
    http_mark: int
    dnsmasq_mark: int


@pytest.fixture
def network_boot(
    a_boot_network: BootNetwork, an_http_server: NginxServer,
    bridge_guest: Callable[..., QemuMachine],
) -> Callable[..., NetworkBoot]:
    """``network_boot(macs, uuid=None, firmware="bios", nic_rom=True)``: a guest on the boot
    network (``bridge_guest``), with the session's HTTP and dnsmasq log marks."""

    def start(macs: list[str], machine_uuid: str | None = None, firmware: str = "bios",
              nic_rom: bool = True) -> NetworkBoot:
        http_mark, dnsmasq_mark = an_http_server.mark(), a_boot_network.mark()
        guest = bridge_guest(macs, machine_uuid, firmware=firmware, nic_rom=nic_rom)
        return NetworkBoot(guest, http_mark, dnsmasq_mark)

    return start
