"""A cephboot site for the test cluster: inventory, provisioning, `doit` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .boot_tree import WEB_GROUP, CephFuseMount, NginxServer
from .ceph_cluster import FS_NAME, CephClient, CephCluster
from .root_image import build_root_image

REPO = Path(__file__).resolve().parents[2]
DODO = REPO / "dodo.py"

# The guest's gateway is the boot network's bridge (tests/e2e/dnsmasq.py); through it the
# guest reaches the test address, where the monitor, the OSD and the HTTP server listen.
GUEST_GATEWAY = "198.51.100.2"
GUEST_ADDRESS_PREFIX = "198.51.100."
GUEST_FIRST_HOST = 30
# Where the hosts' own /boot folders are: outside the boot tree, which only the publisher writes.
HOSTS_BOOT = "/e2e-hosts"
# What `doit dnsmasq` serves on the boot network (tests/e2e/dnsmasq.py), for every site:
# a DHCP server with a reservation per host and a pool for unlisted NICs.
BOOT_NETWORK = "198.51.100.0/24"
UNRESERVED = ["198.51.100.100", "198.51.100.150"]


@dataclass(frozen=True)
class Subtree:
    """A folder of the session's boot tree, as E2ESite wants a boot tree: CephFS path and mount."""

    fs_path: str
    mountpoint: Path


@dataclass(frozen=True)
class SubUrl:
    """Where that folder is served: its URL, and the folder as the web server sees it."""

    url: str
    root: Path


@dataclass
class SiteHost:
    """One test host as its YAML file says it, and what provisioning made for it."""

    name: str
    macs: list[str]
    data: dict[str, Any] = field(default_factory=dict)
    client: CephClient | None = None

    @property
    def uuid(self) -> str | None:
        return self.data.get("uuid")


class E2ESite:
    """``<workdir>/hosts/`` pointing at the test cluster; publishes into the boot tree."""

    def __init__(
        self,
        cluster: CephCluster,
        boot_tree: CephFuseMount | Subtree,
        http: NginxServer | SubUrl,
        workdir: Path,
        rbd_pool: str,
    ) -> None:
        self.cluster = cluster
        self.boot_tree = boot_tree
        self.http = http
        self.root = workdir
        self.rbd_pool = rbd_pool
        self.hosts: dict[str, SiteHost] = {}
        self.site_settings: dict[str, Any] = {
            "ceph": {
                "fsid": cluster.fsid,
                "mon_host": [cluster.address],
                "fs_name": FS_NAME,
                "boot_tree": boot_tree.fs_path,
            },
            "pxe": {"http_base": http.url.rstrip("/")},
            # The publisher writes through its read-write mount; nginx reads the web
            # server's read-only view, in the group that may read host layers.
            "publish": {"target": str(boot_tree.mountpoint), "web_root": str(http.root),
                        "group": WEB_GROUP},
            "kernels": {"nic_modules": ["virtio_net", "virtio_pci"]},
            "dhcp": {"network": BOOT_NETWORK, "mode": "server", "range": UNRESERVED},
            "defaults": {
                # panic=10: a failed boot reboots, and -no-reboot ends QEMU.
                "kernel_args": ["console=ttyS0,115200n8", "panic=10"],
                "rbd": {"pool": rbd_pool},
                "map": {"method": "cli", "deadline": 90},
                # keys served as they are, said explicitly (tests/e2e/test_machine_secret.py
                # boots the recommended machine mode)
                "secrets": {"mode": "clear"},
            },
        }

    @property
    def hosts_dir(self) -> Path:
        return self.root / "hosts"

    def host_dir(self, name: str) -> Path:
        """The pipeline's build outputs of one host."""
        return self.root / "build" / "hosts" / name

    def boot_path(self, name: str) -> str:
        return f"{HOSTS_BOOT}/{name}"

    def boot_dir(self, name: str) -> Path:
        """The host's own /boot folder (outside the boot tree), as the admin's mount shows it."""
        return self.cluster.admin_fs().mountpoint / self.boot_path(name).lstrip("/")

    def add_host(self, name: str, macs: list[str], **data: Any) -> SiteHost:
        """Provision ``name`` on the cluster (RBD namespace, client, /boot directory)
        and write its host file. ``data`` is merged over the host file's keys; the
        Ceph NIC gets a static address of its own on the boot network (klibc's DHCP
        would cost a timed-out first round) unless ``nics`` says otherwise."""
        address = f"{GUEST_ADDRESS_PREFIX}{GUEST_FIRST_HOST + len(self.hosts)}/24"
        nics = {"ceph": {"macs": macs, "address": address, "gateway": GUEST_GATEWAY}}
        host = SiteHost(name, macs, {"nics": nics, "boot_path": self.boot_path(name), **data})
        keyring = self.hosts_dir / "keys" / f"{name}.keyring"
        self.cluster.create_rbd_namespace(self.rbd_pool, name)
        host.client = self.cluster.create_host_client(
            name, self.rbd_pool, name, self.boot_path(name), keyring
        )
        self.hosts[name] = host
        self.write_host(host)
        return host

    def write_secret(self, relative: str, data: bytes) -> Path:
        """A key file under hosts/ (mode 0600, as the inventory demands)."""
        path = self.hosts_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def give_wrong_key(self, name: str) -> None:
        """Replace ``name``'s keyring with a well-formed key the cluster does not know."""
        host = self.hosts[name]
        assert host.client is not None
        key = subprocess.run(["ceph-authtool", "--gen-print-key"], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert key != host.client.key
        self.write_secret(f"keys/{name}.keyring",
                          f"[client.{host.client.id}]\n\tkey = {key}\n".encode())

    def write_host(self, host: SiteHost) -> None:
        nodes = self.hosts_dir / "nodes"
        nodes.mkdir(parents=True, exist_ok=True)
        (nodes / f"{host.name}.yaml").write_text(yaml.safe_dump(host.data, sort_keys=False))

    def write_site(self) -> None:
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        (self.hosts_dir / "site.yaml").write_text(
            yaml.safe_dump(self.site_settings, sort_keys=False)
        )

    def doit(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``doit -f <repo>/dodo.py -d <site> ARGS``, as the README says; fails loudly."""
        self.write_site()
        done = subprocess.run(
            [sys.executable, "-m", "doit", "-f", str(DODO), "-d", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"doit {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def install_root_image(self, name: str, workdir: Path) -> None:
        """Build ``name``'s root image with its rendered /etc and load it into RBD."""
        host = self.hosts[name]
        luks = host.data.get("luks")
        key_file = self.hosts_dir / luks["keyfile"] if luks else None
        rbd = host.data.get("rbd", {})
        spec = f"{self.rbd_pool}/{rbd.get('namespace', name)}/{rbd.get('image', 'root')}"
        build_root_image(self.cluster, workdir, name, self.host_dir(name) / "rootfs", spec,
                         key_file)
