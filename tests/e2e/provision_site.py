"""A site that `doit provision` puts on the test cluster, and the Debian root it can be built from.

The Debian root is the one provisioning itself builds and caches (`tasks.rootfs.debootstrap_tree`,
with the inventory's default packages), kept in the repository's `build/rootfs/` unless
`CEPHBOOT_ROOTFS_CACHE` says where: one debootstrap per CI run (a fresh clone) and none at all
on a developer's machine that ran the suite before. Every site of the suite uses that cache.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tasks import examplekeys, rootfs
from tasks.schema import ROOTFS_PACKAGES

from .boot_tree import WEB_GROUP, NginxServer, WebServerView
from .ceph_cluster import FS_NAME, CephClient, CephCluster
from .dnsmasq import BootNetwork
from .e2e_site import BOOT_NETWORK, UNRESERVED
from .netns import NetworkNamespace
from .root_image import build_root_tree

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"


def rootfs_cache() -> Path:
    """Where debootstrap results are kept for the whole suite (and across runs)."""
    return Path(os.environ.get(rootfs.CACHE_ENV) or REPO / "build" / "rootfs")


def debian_root() -> Path:
    """Debian SUITE minbase with the inventory's default packages (initramfs-tools, a kernel,
    ceph-common, ...), built by provisioning's own cache function on first use."""
    packages = rootfs.debootstrap_packages(ROOTFS_PACKAGES, luks=False)
    return rootfs.debootstrap_tree(rootfs_cache(), SUITE, packages, say=lambda _: None)


def kernel_of(root: Path) -> str:
    """The one kernel version installed in a Debian root."""
    kernels = [p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*")]
    assert len(kernels) == 1, f"expected one kernel in {root}/boot, found {kernels}"
    return kernels[0]


def busybox_tree(path: Path) -> Path:
    """A busybox root to provision from; the image-native install wants initramfs-tools' entry point in it."""
    empty = path.parent / "no-rendered-files"
    empty.mkdir()
    build_root_tree(path, "template", empty)
    (path / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
    (path / "usr" / "sbin" / "update-initramfs").write_text("#!/bin/sh\n")
    return path


def small_busybox_site(cluster: CephCluster, netns: NetworkNamespace, work: Path, boot_tree: str, http_port: int,
                       rbd_pool: str) -> "ProvisionSite":
    """A site whose hosts get 64 MiB roots provisioned from a busybox tree: seconds, not debootstrap's minutes."""
    defaults = {"rbd": {"pool": rbd_pool, "size": "64M", "features": ["layering"]},
                "rootfs": {"source": str(busybox_tree(work / "tree"))}}
    return ProvisionSite(cluster, netns, work / "site", boot_tree, f"http://{cluster.address}:{http_port}", defaults)


class ProvisionSite:
    """A site folder whose inventory points at the test cluster; doit runs inside the namespace.

    ``settings`` are merged over the site.yaml written here (the cluster, its admin keyring,
    ``boot_tree``, the test pool, `doit dnsmasq` as the DHCP server of the boot network with a
    reservation per host); the rootfs cache is the suite's.
    """

    def __init__(self, cluster: CephCluster, netns: NetworkNamespace, root: Path, boot_tree: str,
                 http_base: str, defaults: dict[str, Any], **settings: Any) -> None:
        self.cluster = cluster
        self.netns = netns
        self.root = root
        self.boot_tree = boot_tree
        self.hosts = root / "hosts"
        (self.hosts / "nodes").mkdir(parents=True)
        site = {
            "ceph": {"fsid": cluster.fsid, "mon_host": [cluster.address], "fs_name": FS_NAME,
                     "boot_tree": boot_tree, "admin_keyring": str(cluster.admin_keyring)},
            "pxe": {"http_base": http_base},
            "dhcp": {"network": BOOT_NETWORK, "mode": "server", "range": UNRESERVED},
            "defaults": {"secrets": {"mode": "clear"}, **defaults},  # keys as they are, said explicitly
            **settings,
        }
        (self.hosts / "site.yaml").write_text(yaml.safe_dump(site))

    def add_host(self, name: str, mac: str, **data: Any) -> None:
        """hosts/nodes/NAME.yaml (DHCP unless ``data`` says otherwise) and its keyring.

        Its writable /boot is ``/hosts/NAME``, outside the published tree, which only the
        publisher writes.
        """
        host = {"nics": {"ceph": {"macs": [mac], "address": "dhcp"}}, "boot_path": f"/hosts/{name}", **data}
        (self.hosts / "nodes" / f"{name}.yaml").write_text(yaml.safe_dump(host))
        examplekeys.ensure(self.root)

    def remove_host(self, name: str) -> None:
        """Take hosts/nodes/NAME.yaml out of the inventory (its keys stay)."""
        (self.hosts / "nodes" / f"{name}.yaml").unlink()

    def doit(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``doit -f <repo>/dodo.py -d <site> ARGS`` inside the namespace, as the README says."""
        argv = ["env", f"{rootfs.CACHE_ENV}={rootfs_cache()}",
                sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py"), "-d", str(self.root), *args]
        done = self.netns.run(argv, check=False, timeout=1800)
        if check and done.returncode != 0:
            raise AssertionError(f"doit {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def client(self, name: str) -> CephClient:
        keyring = self.hosts / "keys" / f"{name}.keyring"
        return CephClient(name, "", keyring)


def said(out: str, task: str, host: str) -> list[str]:
    """What `doit TASK` printed of ``host``: the lines indented under its `  - TASK --only HOST`
    line (that line itself being the command that does the host again)."""
    lines = out.splitlines()
    head = f"  - {task} --only {host}"
    if head not in lines:
        return []
    found = []
    for line in lines[lines.index(head) + 1:]:
        if not line.startswith("    "):
            break
        found.append(line[4:])
    return found


def publish_into(cluster: CephCluster, view: WebServerView, fs_path: str) -> dict[str, str]:
    """``publish`` settings for a site whose tree is the CephFS folder ``fs_path``: the publisher
    writes through the admin's mount, the web server and dnsmasq read ``view`` (read-only)."""
    target = cluster.admin_fs().mountpoint / fs_path.lstrip("/")
    return {"target": str(target), "web_root": str(view.mountpoint), "group": WEB_GROUP}


@contextmanager
def site_front_end(site: ProvisionSite, view: WebServerView, bridge: BootNetwork, name: str,
                   port: int) -> Iterator[NginxServer]:
    """The site's tree served as a site runs it, until the end: nginx with the generated server
    block on ``port`` from the read-only ``view``, and the site's `doit dnsmasq` config as the
    bridge's DHCP server (logging to ``bridge.log_of(name)``) in place of the standing one."""
    site.doit("dnsmasq")
    conf = site.root / "build" / "site" / "dnsmasq.conf"
    with NginxServer(site.netns, view.mountpoint, site.root.parent / f"{name}-http", port=port) as http, \
            bridge.replaced({name: conf}):
        yield http
