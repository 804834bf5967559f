"""The e2e site: one host per boot scenario, provisioned, built and published once per
session, and the boot network its machines start on (a bridge with the site's dnsmasq).

test_boot_scenarios.py boots them under SeaBIOS, test_uefi.py under OVMF; conftest.py
makes these fixtures the suite's own, so both get the same site, one `doit` run and one
dnsmasq.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from .boot_tree import CephFuseMount, NginxServer
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .dnsmasq import BootNetwork
from .e2e_site import E2ESite
from .netns import NetworkNamespace
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
def a_boot_network(
    the_e2e_site: E2ESite, a_network_namespace: NetworkNamespace,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BootNetwork]:
    """The site's dnsmasq (server mode, a reservation per host) on a bridge of its own."""
    the_e2e_site.doit("dnsmasq")  # build/site/dnsmasq.conf, and tftp/ in the boot tree
    conf = the_e2e_site.root / "build" / "site" / "dnsmasq.conf"
    with BootNetwork(a_network_namespace, conf, tmp_path_factory.mktemp("dnsmasq")) as network:
        yield network


@dataclass
class NetworkBoot:
    """A guest on the boot network, with the marks of the logs it will write."""

    guest: QemuMachine
    http_mark: int
    dnsmasq_mark: int


@pytest.fixture
def network_boot(
    a_boot_network: BootNetwork, an_http_server: NginxServer,
    qemu_boot: Callable[..., QemuMachine],
) -> Iterator[Callable[..., NetworkBoot]]:
    """``network_boot(macs, uuid=None, firmware="bios", nic_rom=True)``: a guest whose NICs
    are taps on the boot network (a random SMBIOS UUID unless given)."""
    started: list[tuple[QemuMachine, list[str]]] = []

    def start(macs: list[str], machine_uuid: str | None = None, firmware: str = "bios",
              nic_rom: bool = True) -> NetworkBoot:
        taps = [a_boot_network.tap() for _ in macs]
        http_mark, dnsmasq_mark = an_http_server.mark(), a_boot_network.mark()
        guest = qemu_boot(None, macs, machine_uuid or str(uuid.uuid4()),
                          firmware=firmware, nic_rom=nic_rom, taps=taps)
        started.append((guest, taps))
        return NetworkBoot(guest, http_mark, dnsmasq_mark)

    yield start
    for guest, taps in started:  # the guest first: its taps go with it
        guest.stop()
        for tap in taps:
            a_boot_network.release(tap)
