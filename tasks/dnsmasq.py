"""The DHCP/TFTP front end: dnsmasq's config from the inventory, and iPXE's first stages in the tree's tftp/."""
from __future__ import annotations

import filecmp
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed

from . import inventory
from .bootnet import LOADERS, answers
from .fileio import describe, digest, write_if_changed
from .inventory import Site
from .nginx import web_root
from .publish import PUBLIC, PUBLIC_DIR, open_tree, put, tree_root
from .quoting import UnsafeValue
from .layout import BUILD
from .templating import code_digest, header
from .templating import env as _env
from .uptodate import config_changed

TEMPLATE = "dnsmasq/dnsmasq.conf.j2"
OUTPUT = BUILD / "site" / "dnsmasq.conf"
# Debian's ipxe package: where the first stages (bootnet.LOADERS) are installed.
LOADERS_DIR = Path("/usr/lib/ipxe")
TFTP_DIR = "tftp"


def config_text(site: Site) -> str:
    """build/site/dnsmasq.conf for ``site`` (dhcp.network must be set)."""
    s = site.settings
    dhcp = s["dhcp"]
    net = answers(site)
    network = net.network
    return _env().get_template(TEMPLATE).render(
        header=header(["hosts/site.yaml", "hosts/nodes/"], TEMPLATE),
        network=str(network),
        proxy=dhcp["mode"] == "proxy",
        address=str(network.network_address),
        netmask=str(network.netmask),
        range=dhcp["range"],
        router=dhcp["router"],
        reservations=net.reservations,
        tftp_root=f"{web_root(s, site.root).rstrip('/')}/{TFTP_DIR}",
        boot_url=net.ipxe_url,
        uefi_loader=s["pxe"]["uefi_loader"],
    )


def render_dnsmasq(site: Site) -> TaskFailed | None:
    """doit action: write build/site/dnsmasq.conf."""
    if not site.settings["dhcp"]["network"]:
        return TaskFailed("cephboot: dnsmasq: set dhcp.network in hosts/site.yaml (the subnet machines PXE-boot on, e.g. 192.0.2.0/24)")
    try:
        text = config_text(site)
    except UnsafeValue as e:
        return TaskFailed(f"cephboot: dnsmasq: a value of hosts/site.yaml {e} (tftp-root is publish.web_root or publish.target)")
    write_if_changed(OUTPUT, text.encode())
    return None


def publish_loaders(settings: dict[str, Any]) -> TaskFailed | None:
    """doit action: <tree>/tftp/{undionly.kpxe,snponly.efi,ipxe.efi}, world-readable, atomically."""
    missing = [str(LOADERS_DIR / n) for n in LOADERS if not (LOADERS_DIR / n).is_file()]
    if missing:
        return TaskFailed(f"cephboot: publish:tftp: {', '.join(missing)} missing: apt-get install ipxe")
    root = tree_root(settings)
    try:
        with open_tree(settings) as top, top.folder(TFTP_DIR, PUBLIC_DIR) as folder:
            wrote = [put(folder, LOADERS_DIR / name, name, PUBLIC, None) for name in LOADERS]
            if any(wrote):
                folder.fsync()
    except OSError as e:
        return TaskFailed(f"cephboot: publish:tftp: {describe(e, root / TFTP_DIR)}")
    return None


def loaders_published(settings: dict[str, Any]) -> bool:
    """uptodate check: every published loader has the package's bytes (1 MB read; a
    damaged or hand-replaced one is copied again, not only a missing one)."""
    folder = tree_root(settings) / TFTP_DIR
    return all((folder / n).is_file() and filecmp.cmp(LOADERS_DIR / n, folder / n, shallow=False) for n in LOADERS)


@lru_cache(maxsize=None)
def _code_digest() -> str:
    return code_digest(__name__, TEMPLATE)


def task_dnsmasq() -> Iterator[dict[str, Any]]:
    """dnsmasq config (proxy-DHCP or DHCP server, TFTP) from the inventory: build/site/dnsmasq.conf."""
    site = inventory.load_for_tasks()
    s = site.settings
    dhcp = s["dhcp"]
    # the config depends on the settings and, in server mode, on every host's static addresses
    hosts = repr(sorted((n, h.data["nics"]) for n, h in site.hosts.items())) if dhcp["mode"] == "server" else ""
    yield {
        "basename": "dnsmasq",
        "doc": f"{OUTPUT}: {dhcp['mode']} DHCP on {dhcp['network'] or '(dhcp.network unset)'}, TFTP of the tree's {TFTP_DIR}/, boot.ipxe for iPXE",
        "actions": [(render_dnsmasq, [site])],
        "targets": [str(OUTPUT)],
        "task_dep": ["publish:tftp"],
        "uptodate": [config_changed(digest(repr(dhcp), repr(s["pxe"]), repr(s["publish"]), hosts, _code_digest()))],
        "clean": True,
    }
    root = tree_root(s)
    yield {
        "basename": "publish:tftp",
        "doc": f"{root}/{TFTP_DIR}/: iPXE's first stages from Debian's ipxe package ({', '.join(LOADERS)})",
        "actions": [(publish_loaders, [s])],
        "file_dep": [str(LOADERS_DIR / n) for n in LOADERS],
        "targets": [str(root / TFTP_DIR / n) for n in LOADERS],
        "uptodate": [config_changed(digest(str(root), _code_digest())), (loaders_published, [s])],
    }

