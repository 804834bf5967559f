"""What a loaded inventory is: its site, its hosts, and the problems found in it."""
from __future__ import annotations

import ipaddress
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
         (stat.S_ISBLK, "a device"), (stat.S_ISLNK, "a link"), (stat.S_ISREG, "a regular file"))


def kind(mode: int) -> str:
    """What a file of this mode is, for messages ('a FIFO', 'a folder')."""
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inventory, located by file and key path."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


class InventoryError(Exception):
    """The inventory is invalid; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [str(p) for p in problems]
        super().__init__("invalid inventory:\n  " + "\n  ".join(lines))


@dataclass
class Host:
    """A host with every key resolved and validated."""

    name: str
    source: str  # the host's own file, relative to the site
    sources: list[str]  # every file that contributed, lowest layer first
    data: dict[str, Any]
    digest: str = ""
    origins: dict[str, str] = field(default_factory=dict)  # key -> file that set it, where not ``source``

    def origin(self, key: str) -> str:
        """The file that set ``key``; the host's own file for a default."""
        return self.origins.get(key, self.source)

    def reservations(self, network: str | None) -> list[tuple[str, list[str], str]]:
        """(name, MACs, address) of each NIC with a static address inside the boot network
        ``network`` (dhcp.network): what a DHCP server reserves for it, and the only
        addresses the web server serves an address-mode host's keys to. The Ceph NIC's name
        is the host's, the user NIC's ``<host>-user`` (one name, one address)."""
        if not network:
            return []
        net = ipaddress.IPv4Network(network)
        out = []
        nics = self.data["nics"]
        for nic, label in ((nics["ceph"], self.name), (nics["user"], f"{self.name}-user")):
            if nic and nic["address"] != "dhcp":
                ip = ipaddress.IPv4Interface(nic["address"]).ip
                if ip in net:
                    out.append((label, nic["macs"], str(ip)))
        return out


@dataclass
class Site:
    """The whole validated inventory."""

    root: Path
    settings: dict[str, Any]
    hosts: dict[str, Host]
    kernels: list[str]  # installed kernel versions, oldest first
    signature: list[Any] = field(default_factory=list)
    site_digest: str = ""
    # what the next load may reuse when some input changed: parsed files, resolved
    # hosts and checked secrets, each keyed by the stat of what it came from
    memo: dict[str, Any] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        """A path from the inventory, relative to hosts/ unless absolute."""
        p = Path(rel)
        return p if p.is_absolute() else self.root / "hosts" / p

    def path_str(self, rel: str) -> str:
        """path() as a string, without pathlib's cost (called per host on every run)."""
        return rel if rel.startswith("/") else f"{self.root}/hosts/{rel}"

    def display(self, rel: str) -> str:
        """How a path from the inventory is named in messages, headers and doit's file_dep:
        relative to the site folder (doit's working directory), so a copied site keeps its state."""
        return rel if rel.startswith("/") else f"hosts/{rel}"


# ---- where a host's root is on the cluster ----------------------------------------

# The folder of a stateless host's layer (and initrd) holding the files that go into its root's
# overlay at boot, at their paths below it (the keyring and ceph.conf are where the initrd has them).
STATELESS_FILES = "/cephboot/root"


def golden_namespace(image: str) -> str:
    """The RBD namespace of golden image ``image``: its own, named so that no host's can be it."""
    return f"golden-{image}"


def golden_version(image: str, snap: str) -> str:
    """The RBD image (without pool and namespace) that holds golden ``image``'s version frozen as snapshot ``snap``."""
    return f"{image}-{snap}"


def stateless(h: dict[str, Any]) -> bool:
    """Whether the host boots its golden image's snapshot read-only under a tmpfs overlay (root.mode: stateless)."""
    return (h.get("root") or {}).get("mode") == "stateless"


def mapped_root(h: dict[str, Any]) -> tuple[str, str, str]:
    """What the host's initrd maps, as (namespace, image, snapshot): its own root image, or for a stateless host
    the version of its golden image it boots (snapshot '' for the image itself)."""
    if stateless(h):
        image, snap = h["root"]["image"], h["root"]["snapshot"]
        return golden_namespace(image), golden_version(image, snap), snap
    return h["rbd"]["namespace"], h["rbd"]["image"], ""
