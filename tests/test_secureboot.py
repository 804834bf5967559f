"""boot.loader: grub-secureboot: the GRUB configs, their routes, the tree's tftp/ and the dnsmasq
entries that start shim, from a real `doit` on the example site (tests/e2e/test_secureboot.py boots it)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from builtsite import a_built_site, the_built_example  # noqa: F401  (fixtures)
from conftest import Site
from tasks.dnsmasq import SECURE_LOADERS
from tasks.lint import grub_script_check

pytestmark = pytest.mark.skipif(
    shutil.which("grub-script-check") is None or not all(p.exists() for p in SECURE_LOADERS.values())
    or shutil.which("dnsmasq") is None,
    reason="shim-signed, grub-efi-amd64-signed (grub-common) or dnsmasq-base are not installed (scripts/setup)",
)

BOREAS_MAC = "52:54:00:a2:00:01"  # via profiles/secure.yaml
NOTUS_MAC = "52:54:00:a3:00:01"  # its own file; monolithic
ZEPHYR_MACS = ["52:54:00:a1:00:01", "52:54:00:a1:00:02", "52:54:00:b1:00:01", "52:54:00:a1:01:01"]
SERVER_MODE = "dhcp:\n  network: 192.0.2.0/24\n  mode: server\n"


def secure(site: Site) -> None:
    """boreas through its profile, notus through its own file; zephyr stays on iPXE."""
    with open(site.hosts / "profiles/secure.yaml", "a") as f:
        f.write("boot:\n  loader: grub-secureboot\n")
    with open(site.hosts / "nodes/notus.yaml", "a") as f:
        f.write("boot:\n  loader: grub-secureboot\n")


def tree(site: Site) -> Path:
    return site.root / "build" / "publish"


def test_grub_secureboot_hosts_get_grub_configs_routed_exactly_by_mac(a_built_site: Site) -> None:  # noqa: F811
    secure(a_built_site)
    run = a_built_site.doit()
    assert "lint:grub" in run.stdout, run.stdout  # grub-script-check read the new configs
    build = a_built_site.build
    kver = next(p.name for p in (build / "kernels").iterdir())
    boreas = (build / "hosts/boreas/grub.cfg").read_text()
    # kernel, then the layer before the base (the EFI stub's unpadded concatenation), the command
    # line quoted; paths on the TFTP server, which serves the tree
    assert re.search(rf"^if linux /kernels/'{re.escape(kver)}'/vmlinuz 'root=/dev/mapper/cryptroot' 'rootfstype=ext4' ", boreas, re.M), boreas
    assert re.search(rf"^  if initrd \"\$cephboot_dir/overlay\.cpio\" /kernels/'{re.escape(kver)}'/'initrd-sysfs\.img'; then$", boreas, re.M), boreas
    notus = (build / "hosts/notus/grub.cfg").read_text()
    assert '  if initrd "$cephboot_dir/initrd.img"; then' in notus.splitlines()  # monolithic: its one initrd
    assert "'net.ifnames=0'" in notus
    assert not (build / "hosts/zephyr/grub.cfg").exists()
    # the routes: each MAC of the two hosts to its own name, nothing for zephyr
    router = (build / "site/grub.cfg").read_text()
    routes = re.findall(r"^if \[ \"\$net_default_mac\" = '([0-9a-f:]+)' \]; then set cephboot_host='([a-z-]+)'; fi$", router, re.M)
    assert routes == [(BOREAS_MAC, "boreas"), (NOTUS_MAC, "notus")], router
    assert not [mac for mac in ZEPHYR_MACS if mac in router]
    assert "cephboot: unknown machine: no grub-secureboot host has MAC $net_default_mac" in router
    assert '  set cephboot_dir="/hosts/$cephboot_host"' in router.splitlines()
    # published: the router where GRUB looks ($prefix = /grub on its TFTP server), each host's config in its folder
    published = tree(a_built_site)
    assert (published / "grub/grub.cfg").read_text() == router
    assert (published / "grub/grub.cfg").stat().st_mode & 0o777 == 0o644
    assert (published / "hosts/boreas/grub.cfg").read_text() == boreas
    assert not (published / "hosts/zephyr/grub.cfg").exists()
    # back to iPXE: the configs and the router go
    for rel in ("profiles/secure.yaml", "nodes/notus.yaml"):
        p = a_built_site.hosts / rel
        p.write_text(p.read_text().replace("boot:\n  loader: grub-secureboot\n", ""))
    a_built_site.doit()
    assert not (published / "grub").exists()
    assert not (build / "site/grub.cfg").exists()
    assert not (published / "hosts/boreas/grub.cfg").exists() and not (build / "hosts/notus/grub.cfg").exists()


def test_dnsmasq_gives_shim_to_the_grub_secureboot_macs_only(a_built_site: Site) -> None:  # noqa: F811
    secure(a_built_site)
    site_yaml = a_built_site.hosts / "site.yaml"
    site_yaml.write_text(re.sub(r"^dhcp:\n(  .*\n)*", "", site_yaml.read_text(), flags=re.M) + SERVER_MODE)
    a_built_site.doit()
    a_built_site.doit("dnsmasq")
    conf = a_built_site.build / "site" / "dnsmasq.conf"
    checked = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True)
    assert checked.returncode == 0 and "syntax check OK" in checked.stderr, checked.stderr
    opts = [line for line in conf.read_text().splitlines() if line and not line.startswith("#")]
    assert [o for o in opts if o.startswith("dhcp-mac=")] == [f"dhcp-mac=set:secureboot,{BOREAS_MAC}", f"dhcp-mac=set:secureboot,{NOTUS_MAC}"]
    assert "dhcp-boot=tag:!ipxe,tag:efi64,tag:secureboot,shimx64.efi" in opts
    assert "dhcp-boot=tag:!ipxe,tag:efi64,tag:!secureboot,tftp/snponly.efi" in opts
    assert "dhcp-boot=tag:!ipxe,tag:bios,tftp/undionly.kpxe" in opts  # a BIOS machine still gets iPXE
    assert f"tftp-root={tree(a_built_site)}" in opts  # GRUB reads grub/, kernels/ and hosts/<h>/ by TFTP
    for name, src in SECURE_LOADERS.items():  # at the root, where shim looks for GRUB
        assert (tree(a_built_site) / name).read_bytes() == src.read_bytes()
    # proxy mode: a boot service per tag, shim for the tagged MACs only
    site_yaml.write_text(re.sub(r"^dhcp:\n(  .*\n)*", "", site_yaml.read_text(), flags=re.M) + "dhcp:\n  network: 192.0.2.0/24\n")
    a_built_site.doit("dnsmasq")
    checked = subprocess.run(["dnsmasq", "--test", f"--conf-file={conf}"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    opts = conf.read_text().splitlines()
    assert "pxe-service=tag:!ipxe,tag:secureboot,x86-64_EFI,cephboot,shimx64.efi" in opts
    assert "pxe-service=tag:!ipxe,tag:!secureboot,x86-64_EFI,cephboot,tftp/snponly.efi" in opts


def test_grub_script_check_refuses_a_broken_config(tmp_path: Path) -> None:
    good, broken = tmp_path / "good.cfg", tmp_path / "broken.cfg"
    good.write_text("if [ -z \"$x\" ]; then\n  echo 'ok'\nfi\n")
    broken.write_text("if [ -z \"$x\" ]; then\n  echo 'never closed'\n")
    assert grub_script_check([str(good)]) is None
    failed = grub_script_check([str(good), str(broken)])
    assert failed is not None and str(broken) in str(failed)


def test_grub_secureboot_hosts_and_address_mode_hosts_cannot_share_one_boot_network(a_built_site: Site) -> None:  # noqa: F811
    """Without grub-secureboot hosts TFTP serves the tree's tftp/ only; with them it must serve the
    whole tree, to any address, which would hand an address-mode host's layer (its keys) to
    anyone: `doit dnsmasq` and `doit dhcp-snippets` refuse, naming the hosts, and keep what they
    wrote before."""
    site = a_built_site
    site.doit("dnsmasq")
    conf = site.build / "site/dnsmasq.conf"
    before = conf.read_bytes()
    assert f"\ntftp-root={tree(site)}/tftp\n".encode() in before  # no host file over TFTP
    secure(site)  # boreas and notus on grub-secureboot
    with open(site.hosts / "nodes/zephyr.yaml", "a") as f:
        f.write("secrets:\n  mode: address\n")
    for task in ("dnsmasq", "dhcp-snippets"):
        run = site.doit(task, check=False)
        assert run.returncode != 0, run.stdout
        out = run.stdout + run.stderr
        assert "the signed GRUB of the grub-secureboot host(s) boreas, notus reads the boot tree by TFTP" in out, out
        assert "the keys of the host(s) zephyr (secrets.mode: address) would reach anyone" in out, out
        assert "Traceback" not in out
    assert conf.read_bytes() == before
