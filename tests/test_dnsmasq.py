"""`doit dnsmasq`: the DHCP/TFTP front end rendered from the inventory, checked by dnsmasq itself."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Site
from tasks.dnsmasq import LOADERS, LOADERS_DIR

pytestmark = pytest.mark.skipif(
    shutil.which("dnsmasq") is None or not (LOADERS_DIR / "snponly.efi").exists(),
    reason="dnsmasq or iPXE's loaders are not installed (apt-get install dnsmasq-base ipxe)",
)

# zephyr: three Ceph MACs (one machine and its twin) on 192.0.2.21, a user NIC on
# 198.51.100.21 (outside the boot network); boreas: 192.0.2.22; notus: DHCP.
SERVER_MODE = """dhcp:
  network: 192.0.2.0/24
  mode: server
  range: [192.0.2.100, 192.0.2.199]
  router: 192.0.2.1
"""


def dnsmasq_test(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True)


def options(conf: Path) -> list[str]:
    return [line for line in conf.read_text().splitlines() if line and not line.startswith("#")]


def set_dhcp(site: Site, text: str) -> None:
    site_yaml = site.hosts / "site.yaml"
    site_yaml.write_text(re.sub(r"^dhcp:\n(  .*\n)*", "", site_yaml.read_text(), flags=re.MULTILINE) + text)


def test_the_default_is_proxy_dhcp_next_to_the_sites_dhcp_server(the_example_site: Site) -> None:
    the_example_site.doit("dnsmasq")
    conf = the_example_site.build / "site" / "dnsmasq.conf"
    checked = dnsmasq_test(conf)
    assert checked.returncode == 0 and "syntax check OK" in checked.stderr, checked.stderr
    opts = options(conf)
    assert "dhcp-range=192.0.2.0,proxy,255.255.255.0" in opts
    assert not [o for o in opts if o.startswith("dhcp-host=")]  # the site's server owns the addresses
    # a PXE ROM gets iPXE for its firmware; iPXE itself gets the site's script over HTTP
    assert "pxe-service=tag:!ipxe,x86PC,cephboot,undionly.kpxe" in opts
    assert "pxe-service=tag:!ipxe,BC_EFI,cephboot,snponly.efi" in opts
    assert "pxe-service=tag:!ipxe,x86-64_EFI,cephboot,snponly.efi" in opts
    assert "dhcp-boot=tag:ipxe,http://192.0.2.5/boot/boot.ipxe" in opts
    assert {"dhcp-userclass=set:ipxe,iPXE", "dhcp-match=set:ipxe,175"} <= set(opts)
    # the tree's tftp/ only: no host uses grub-secureboot, so no host file is served by TFTP
    assert f"tftp-root={the_example_site.root}/build/publish/tftp" in opts
    assert "port=0" in opts  # no DNS server


def test_server_mode_reserves_every_static_address_of_the_boot_network(the_example_site: Site) -> None:
    set_dhcp(the_example_site, SERVER_MODE)
    the_example_site.edit("site.yaml", "  http_base: http://192.0.2.5/boot\n", "  http_base: http://192.0.2.5/boot\n  uefi_loader: ipxe.efi\n")
    the_example_site.doit("dnsmasq")
    conf = the_example_site.build / "site" / "dnsmasq.conf"
    checked = dnsmasq_test(conf)
    assert checked.returncode == 0, checked.stderr
    opts = options(conf)
    assert [o for o in opts if o.startswith("dhcp-host=")] == [
        "dhcp-host=52:54:00:a2:00:01,192.0.2.22,boreas",
        "dhcp-host=52:54:00:a1:00:01,52:54:00:a1:00:02,52:54:00:b1:00:01,192.0.2.21,zephyr",
    ]  # not notus (DHCP), not zephyr's user NIC (another network)
    assert "dhcp-range=192.0.2.100,192.0.2.199,255.255.255.0,1h" in opts
    assert "dhcp-option=option:router,192.0.2.1" in opts
    assert "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi" in opts
    assert "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe" in opts
    assert "dhcp-boot=tag:ipxe,http://192.0.2.5/boot/boot.ipxe" in opts
    assert not [o for o in opts if "proxy" in o or o.startswith("pxe-service")]


def test_a_changed_static_address_changes_the_reservation(the_example_site: Site) -> None:
    set_dhcp(the_example_site, SERVER_MODE)
    the_example_site.doit("dnsmasq")
    assert the_example_site.doit("dnsmasq").ran == set()  # nothing changed: nothing runs
    the_example_site.edit("nodes/boreas.yaml", "192.0.2.22/24", "192.0.2.23/24")
    assert "dnsmasq" in the_example_site.doit("dnsmasq").ran
    opts = options(the_example_site.build / "site" / "dnsmasq.conf")
    assert "dhcp-host=52:54:00:a2:00:01,192.0.2.23,boreas" in opts


def test_without_a_range_only_reserved_machines_get_an_address(the_example_site: Site) -> None:
    set_dhcp(the_example_site, "dhcp:\n  network: 192.0.2.0/24\n  mode: server\n")
    the_example_site.doit("dnsmasq")
    conf = the_example_site.build / "site" / "dnsmasq.conf"
    assert dnsmasq_test(conf).returncode == 0
    assert "dhcp-range=192.0.2.0,static,255.255.255.0,1h" in options(conf)


def test_the_loaders_are_published_from_debians_ipxe_package(the_example_site: Site) -> None:
    first = the_example_site.doit("dnsmasq")
    assert {"publish:tftp", "dnsmasq"} <= first.ran
    tftp = the_example_site.root / "build" / "publish" / "tftp"
    assert sorted(p.name for p in tftp.iterdir()) == sorted(LOADERS)
    for name in LOADERS:
        assert (tftp / name).read_bytes() == (LOADERS_DIR / name).read_bytes()
        assert (tftp / name).stat().st_mode & 0o777 == 0o644
    (tftp / "snponly.efi").write_bytes(b"damaged")
    assert "publish:tftp" in the_example_site.doit("dnsmasq").ran  # a target changed: copied again
    assert (tftp / "snponly.efi").read_bytes() == (LOADERS_DIR / "snponly.efi").read_bytes()


def test_without_a_network_dnsmasq_says_which_key_to_set(the_example_site: Site) -> None:
    set_dhcp(the_example_site, "")
    run = the_example_site.doit("dnsmasq", check=False)
    assert run.returncode != 0
    assert "set dhcp.network in hosts/site.yaml" in run.stdout + run.stderr


def test_a_value_dnsmasq_would_split_is_refused(the_example_site: Site) -> None:
    the_example_site.edit("site.yaml", "  target: build/publish", "  target: build/publish\n  web_root: /srv/boot,tree")
    run = the_example_site.doit("dnsmasq", check=False)
    assert run.returncode != 0
    assert "contains ','" in run.stdout + run.stderr
    assert not (the_example_site.build / "site" / "dnsmasq.conf").exists()


@pytest.mark.parametrize(("value", "expected"), [
    ("range: [192.0.2.199, 192.0.2.100]", "first <= last"),
    ("network: 192.0.2.1/24", "no host bits set"),
    ("mode: relay", "expected one of: proxy, server"),
])
def test_bad_dhcp_settings_are_named(the_example_site: Site, value: str, expected: str) -> None:
    key = value.split(":")[0]
    body = {"network": "192.0.2.0/24", "mode": "server"}
    body[key] = value.split(": ", 1)[1]
    set_dhcp(the_example_site, "dhcp:\n" + "".join(f"  {k}: {v}\n" for k, v in body.items()))
    run = the_example_site.doit("dnsmasq", check=False)
    assert run.returncode != 0
    assert f"hosts/site.yaml: dhcp.{key}:" in run.stdout + run.stderr and expected in run.stdout + run.stderr


def test_a_user_nic_on_the_boot_network_gets_a_reservation_of_its_own(the_example_site: Site) -> None:
    set_dhcp(the_example_site, SERVER_MODE.replace("192.0.2.0/24", "198.51.100.0/24").replace(
        "[192.0.2.100, 192.0.2.199]", "[198.51.100.100, 198.51.100.199]").replace("192.0.2.1\n", "198.51.100.1\n"))
    the_example_site.doit("dnsmasq")
    opts = options(the_example_site.build / "site" / "dnsmasq.conf")
    # zephyr's user NIC is in 198.51.100.0/24, its Ceph NICs are not
    assert [o for o in opts if o.startswith("dhcp-host=")] == ["dhcp-host=52:54:00:a1:01:01,198.51.100.21,zephyr-user"]
