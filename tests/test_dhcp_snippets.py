"""`doit dhcp-snippets`: what an existing ISC dhcpd or Kea server needs, checked by those servers' own parsers."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Site
from test_dnsmasq import SERVER_MODE, options, set_dhcp

pytestmark = pytest.mark.skipif(
    shutil.which("dhcpd") is None or shutil.which("kea-dhcp4") is None,
    reason="ISC dhcpd or Kea is not installed (apt-get install isc-dhcp-server kea-dhcp4-server)",
)


def dhcpd_check(site: Site, tmp: Path) -> subprocess.CompletedProcess[str]:
    """`dhcpd -t` on a minimal dhcpd.conf that includes the snippet where the docs say."""
    conf = tmp / "dhcpd.conf"
    conf.write_text("authoritative;\n"
                    "subnet 192.0.2.0 netmask 255.255.255.0 {\n"
                    "    range 192.0.2.100 192.0.2.199;\n"
                    f"    include \"{site.build / 'site' / 'dhcpd.conf'}\";\n"
                    "}\n")
    return subprocess.run(["dhcpd", "-t", "-cf", str(conf)], capture_output=True, text=True)


def kea_check(site: Site, tmp: Path, subnet: bool = True) -> subprocess.CompletedProcess[str]:
    """`kea-dhcp4 -t` on a minimal kea-dhcp4.conf that includes both snippets where the docs say."""
    kea = site.build / "site" / "kea-dhcp4"
    inside = f'<?include "{kea / "subnet4.json"}"?>' if subnet else '"reservations": []'
    conf = tmp / "kea-dhcp4.conf"
    conf.write_text('{"Dhcp4": {\n'
                    '    "interfaces-config": {"interfaces": []},\n'
                    '    "lease-database": {"type": "memfile", "persist": false},\n'
                    f'    <?include "{kea / "dhcp4.json"}"?>,\n'
                    '    "subnet4": [{"id": 1, "subnet": "192.0.2.0/24", "pools": [{"pool": "192.0.2.100 - 192.0.2.199"}],\n'
                    f'        {inside}}}]\n'
                    "}}\n")
    return subprocess.run(["kea-dhcp4", "-t", str(conf)], capture_output=True, text=True)


def kea_json(path: Path, wrap: str) -> object:
    """A Kea fragment's members as plain JSON (comments dropped, wrapped in braces)."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    return json.loads(wrap.replace("X", text))


def dhcpd_statements(site: Site) -> list[str]:
    text = (site.build / "site" / "dhcpd.conf").read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_proxy_mode_gives_the_boot_answers_and_no_addresses(the_example_site: Site, tmp_path: Path) -> None:
    run = the_example_site.doit("dhcp-snippets")
    assert {"dhcp-snippets:dhcpd", "dhcp-snippets:kea", "publish:tftp"} <= run.ran
    checked = dhcpd_check(the_example_site, tmp_path)
    assert checked.returncode == 0, checked.stderr
    checked = kea_check(the_example_site, tmp_path, subnet=False)  # proxy mode: the subnet keeps its own
    assert checked.returncode == 0, checked.stdout + checked.stderr
    st = dhcpd_statements(the_example_site)
    assert st[:2] == ['if exists user-class and option user-class = "iPXE" {', 'filename "http://192.0.2.5/boot/boot.ipxe";']
    assert "} elsif option pxe-system-type = 00:07 or option pxe-system-type = 00:09 {" in st
    assert "} elsif option pxe-system-type = 00:00 {" in st
    assert st.count("next-server 192.0.2.5;") == 2  # from pxe.http_base's host
    # the TFTP root is the tree's tftp/ (as dnsmasq's tftp-root, with no grub-secureboot host)
    assert 'filename "snponly.efi";' in st and 'filename "undionly.kpxe";' in st
    assert not [s for s in st if s.startswith("host ")]
    kea = the_example_site.build / "site" / "kea-dhcp4"
    classes = kea_json(kea / "dhcp4.json", "{X}")["client-classes"]
    assert [c["name"] for c in classes] == ["cephboot-ipxe", "cephboot-efi64", "cephboot-bios"]
    assert classes[0] == {"name": "cephboot-ipxe", "test": "option[77].hex == 'iPXE' or option[175].exists",
                          "boot-file-name": "http://192.0.2.5/boot/boot.ipxe"}
    assert classes[1]["test"] == "not member('cephboot-ipxe') and (option[93].hex == 0x0007 or option[93].hex == 0x0009)"
    assert (classes[1]["next-server"], classes[1]["boot-file-name"]) == ("192.0.2.5", "snponly.efi")
    assert (classes[2]["next-server"], classes[2]["boot-file-name"]) == ("192.0.2.5", "undionly.kpxe")
    assert kea_json(kea / "subnet4.json", "{X}") == {"reservations": []}


def test_server_mode_reserves_every_static_address_as_dnsmasq_does(the_example_site: Site, tmp_path: Path) -> None:
    set_dhcp(the_example_site, SERVER_MODE)
    the_example_site.edit("site.yaml", "  http_base: http://192.0.2.5/boot\n", "  http_base: http://192.0.2.5/boot\n  uefi_loader: ipxe.efi\n")
    the_example_site.doit("dhcp-snippets", "dnsmasq")
    checked = dhcpd_check(the_example_site, tmp_path)
    assert checked.returncode == 0, checked.stderr
    checked = kea_check(the_example_site, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # one host per MAC; zephyr's three MACs (a machine and its twin) share its address
    assert [s for s in dhcpd_statements(the_example_site) if s.startswith("host ")] == [
        'host boreas-52-54-00-a2-00-01 { hardware ethernet 52:54:00:a2:00:01; fixed-address 192.0.2.22; option host-name "boreas"; }',
        'host zephyr-52-54-00-a1-00-01 { hardware ethernet 52:54:00:a1:00:01; fixed-address 192.0.2.21; option host-name "zephyr"; }',
        'host zephyr-52-54-00-a1-00-02 { hardware ethernet 52:54:00:a1:00:02; fixed-address 192.0.2.21; option host-name "zephyr"; }',
        'host zephyr-52-54-00-b1-00-01 { hardware ethernet 52:54:00:b1:00:01; fixed-address 192.0.2.21; option host-name "zephyr"; }',
    ]
    kea = the_example_site.build / "site" / "kea-dhcp4"
    reservations = kea_json(kea / "subnet4.json", "{X}")["reservations"]
    kea_pairs = [(r["hw-address"], r["ip-address"], r["hostname"]) for r in reservations]
    # the same reservations as dnsmasq's dhcp-host lines (one data model, three syntaxes)
    dnsmasq_pairs = [(mac, line.split(",")[-2], line.split(",")[-1])
                     for line in options(the_example_site.build / "site" / "dnsmasq.conf") if line.startswith("dhcp-host=")
                     for mac in line[len("dhcp-host="):].split(",")[:-2]]
    assert kea_pairs == dnsmasq_pairs and len(kea_pairs) == 4
    assert kea_json(kea / "dhcp4.json", "{X}")["ip-reservations-unique"] is False
    # pxe.uefi_loader reaches both servers' UEFI answer
    assert 'filename "ipxe.efi";' in dhcpd_statements(the_example_site)
    assert kea_json(kea / "dhcp4.json", "{X}")["client-classes"][1]["boot-file-name"] == "ipxe.efi"


def test_kea_needs_no_shared_addresses_flag_when_every_nic_has_one_mac(the_example_site: Site, tmp_path: Path) -> None:
    set_dhcp(the_example_site, SERVER_MODE)
    the_example_site.edit("nodes/zephyr.yaml", '    macs: ["52:54:00:a1:00:01", "52:54:00:a1:00:02", "52:54:00:b1:00:01"]',
                          '    macs: ["52:54:00:a1:00:01"]')
    the_example_site.doit("dhcp-snippets:kea")
    kea = the_example_site.build / "site" / "kea-dhcp4"
    assert "ip-reservations-unique" not in kea_json(kea / "dhcp4.json", "{X}")
    checked = kea_check(the_example_site, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_servers_checkers_refuse_a_broken_snippet(the_example_site: Site, tmp_path: Path) -> None:
    """The checks above can fail: an unbalanced brace or a duplicated address without the flag."""
    set_dhcp(the_example_site, SERVER_MODE)
    the_example_site.doit("dhcp-snippets")
    isc = the_example_site.build / "site" / "dhcpd.conf"
    isc.write_text(isc.read_text().replace("} elsif", "elsif", 1))
    assert dhcpd_check(the_example_site, tmp_path).returncode != 0
    dhcp4 = the_example_site.build / "site" / "kea-dhcp4" / "dhcp4.json"
    dhcp4.write_text(dhcp4.read_text().replace('"ip-reservations-unique": false,\n', ""))
    checked = kea_check(the_example_site, tmp_path)
    assert checked.returncode != 0 and "already a reservation for this address" in checked.stdout + checked.stderr


def test_tftp_server_sets_next_server(the_example_site: Site, tmp_path: Path) -> None:
    the_example_site.edit("site.yaml", "  network: 192.0.2.0/24", "  network: 192.0.2.0/24\n  tftp_server: 192.0.2.7")
    the_example_site.doit("dhcp-snippets")
    assert dhcpd_statements(the_example_site).count("next-server 192.0.2.7;") == 2
    classes = kea_json(the_example_site.build / "site" / "kea-dhcp4" / "dhcp4.json", "{X}")["client-classes"]
    assert [c.get("next-server") for c in classes] == [None, "192.0.2.7", "192.0.2.7"]
    assert dhcpd_check(the_example_site, tmp_path).returncode == 0


def test_a_named_web_server_needs_tftp_server(the_example_site: Site) -> None:
    the_example_site.edit("site.yaml", "http_base: http://192.0.2.5/boot", "http_base: http://boot.example.org/boot")
    run = the_example_site.doit("dhcp-snippets:dhcpd", check=False)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "set dhcp.tftp_server in hosts/site.yaml" in out and "'http://boot.example.org/boot' is not an IPv4 address" in out
    assert "Traceback" not in out
    assert not (the_example_site.build / "site" / "dhcpd.conf").exists()


def test_without_a_network_the_snippets_say_which_key_to_set(the_example_site: Site) -> None:
    set_dhcp(the_example_site, "")
    run = the_example_site.doit("dhcp-snippets:kea", check=False)
    assert run.returncode != 0
    assert "set dhcp.network in hosts/site.yaml" in run.stdout + run.stderr


def test_a_changed_static_address_changes_both_servers_reservations(the_example_site: Site) -> None:
    set_dhcp(the_example_site, SERVER_MODE)
    the_example_site.doit("dhcp-snippets")
    assert the_example_site.doit("dhcp-snippets").ran == set()  # nothing changed: nothing runs
    the_example_site.edit("nodes/boreas.yaml", "192.0.2.22/24", "192.0.2.23/24")
    assert {"dhcp-snippets:dhcpd", "dhcp-snippets:kea"} <= the_example_site.doit("dhcp-snippets").ran
    assert re.search(r"hardware ethernet 52:54:00:a2:00:01; fixed-address 192\.0\.2\.23;",
                     (the_example_site.build / "site" / "dhcpd.conf").read_text())
    reservations = kea_json(the_example_site.build / "site" / "kea-dhcp4" / "subnet4.json", "{X}")["reservations"]
    assert {"hw-address": "52:54:00:a2:00:01", "ip-address": "192.0.2.23", "hostname": "boreas"} in reservations


def test_grub_secureboot_macs_get_shim_from_both_servers(the_example_site: Site, tmp_path: Path) -> None:
    """boot.loader: grub-secureboot: x86_64 UEFI with one of the host's MACs gets Debian's signed
    shim at the tree's root, before the class that gives every other UEFI machine iPXE."""
    set_dhcp(the_example_site, SERVER_MODE)
    the_example_site.doit("dhcp-snippets")
    with open(the_example_site.hosts / "nodes/boreas.yaml", "a") as f:
        f.write("boot:\n  loader: grub-secureboot\n")
    assert {"dhcp-snippets:dhcpd", "dhcp-snippets:kea"} <= the_example_site.doit("dhcp-snippets").ran
    checked = dhcpd_check(the_example_site, tmp_path)
    assert checked.returncode == 0, checked.stderr
    checked = kea_check(the_example_site, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    st = dhcpd_statements(the_example_site)
    branch = st.index("} elsif ((option pxe-system-type = 00:07 or option pxe-system-type = 00:09) and (hardware = 01:52:54:00:a2:00:01)) {")
    assert st[branch + 3:branch + 5] == ["next-server 192.0.2.5;", 'filename "shimx64.efi";']
    assert branch < st.index("} elsif option pxe-system-type = 00:07 or option pxe-system-type = 00:09 {")
    classes = kea_json(the_example_site.build / "site" / "kea-dhcp4" / "dhcp4.json", "{X}")["client-classes"]
    assert [c["name"] for c in classes] == ["cephboot-ipxe", "cephboot-secureboot", "cephboot-efi64", "cephboot-bios"]
    assert classes[1]["test"] == ("not member('cephboot-ipxe') and (option[93].hex == 0x0007 or option[93].hex == 0x0009)"
                                  " and (pkt4.mac == 0x525400a20001)")
    assert (classes[1]["next-server"], classes[1]["boot-file-name"]) == ("192.0.2.5", "shimx64.efi")
    # the same MACs as dnsmasq's secureboot tag (one data model)
    the_example_site.doit("dnsmasq")
    assert [o for o in options(the_example_site.build / "site" / "dnsmasq.conf") if o.startswith("dhcp-mac=")] == [
        "dhcp-mac=set:secureboot,52:54:00:a2:00:01"]
