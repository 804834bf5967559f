"""The DHCP/TFTP front end: dnsmasq's config from the inventory, and the first stages in the tree's
tftp/: iPXE's, and for grub-secureboot hosts Debian's signed shim and GRUB."""
from __future__ import annotations

import filecmp
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed

from . import inventory
from .bootnet import LOADERS, SHIM, TFTP_DIR, answers, grub_routes, tftp_exposes_keys, tftp_prefix
from .fileio import digest, write_if_changed
from .inventory import Site
from .nginx import web_root
from .publish import PUBLIC, PUBLIC_DIR, open_tree, put, tree_root
from .quoting import UnsafeValue
from .layout import BUILD
from .templating import code_digest, header
from .templating import env as _env
from .uptodate import config_changed
from .failures import failure, guarded, host_values, site_values, unsafe

TEMPLATE = "dnsmasq/dnsmasq.conf.j2"
OUTPUT = BUILD / "site" / "dnsmasq.conf"
# Debian's ipxe package: where the first stages (bootnet.LOADERS) are installed.
LOADERS_DIR = Path("/usr/lib/ipxe")
# boot.loader: grub-secureboot. Published name -> Debian's signed file, at the tree's root (the
# TFTP root): shim (signed by Microsoft's UEFI CA, which OVMF_VARS_4M.ms.fd and most PCs trust)
# is the boot file, and fetches grubx64.efi, Debian's signed GRUB network image, from the TFTP
# root (shim 16.1 asks for it there, not beside itself).
SECURE_LOADERS = {
    SHIM: Path("/usr/lib/shim/shimx64.efi.signed"),  # shim-signed
    "grubx64.efi": Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),  # grub-efi-amd64-signed
}


def loader_sources(site: Site) -> dict[str, Path]:
    """Path in the tree -> the package's file: iPXE's (under tftp/) always, shim and GRUB
    (at the root) while a host boots with grub-secureboot."""
    out = {f"{TFTP_DIR}/{n}": LOADERS_DIR / n for n in LOADERS}
    if grub_routes(site):
        out.update(SECURE_LOADERS)
    return out


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
        # the tree's tftp/ (the first stages, nothing of any host); the whole tree when the signed
        # GRUB of grub-secureboot hosts reads grub/grub.cfg, kernels/ and hosts/<h>/ by TFTP
        tftp_root=(web_root(s, site.root).rstrip("/") or "") + ("" if tftp_prefix(site) else f"/{TFTP_DIR}") or "/",
        tftp_prefix=tftp_prefix(site),
        boot_url=net.ipxe_url,
        uefi_loader=s["pxe"]["uefi_loader"],
        secure_macs=net.secure_macs,
        shim=SHIM,
    )


def render_dnsmasq(site: Site) -> TaskFailed | None:
    """doit action: write build/site/dnsmasq.conf."""
    if not site.settings["dhcp"]["network"]:
        return TaskFailed("cephboot: dnsmasq: set dhcp.network in hosts/site.yaml (the subnet machines PXE-boot on, e.g. 192.0.2.0/24)")
    if why := tftp_exposes_keys(site):
        return TaskFailed(f"cephboot: dnsmasq: {why}")
    try:
        text = config_text(site)
    except UnsafeValue as e:
        return unsafe("dnsmasq", e, chain(site_values(site.settings), (v for h in site.hosts.values() for v in host_values(h))), f"templates/{TEMPLATE}")
    write_if_changed(OUTPUT, text.encode())
    return None


def publish_loaders(settings: dict[str, Any], sources: dict[str, Path]) -> TaskFailed | None:
    """doit action: <tree>/tftp/{undionly.kpxe,snponly.efi,ipxe.efi} (and shimx64.efi,
    grubx64.efi for grub-secureboot hosts), world-readable, atomically."""
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        return TaskFailed(f"cephboot: publish:tftp: {', '.join(missing)} missing: apt-get install ipxe"
                          + (" shim-signed grub-efi-amd64-signed" if set(SECURE_LOADERS) & set(sources) else ""))
    root = tree_root(settings)
    try:
        with open_tree(settings) as top, top.folder(TFTP_DIR, PUBLIC_DIR) as folder:
            wrote = [put(folder if "/" in rel else top, src, rel.rsplit("/", 1)[-1], PUBLIC, None) for rel, src in sources.items()]
            if any(wrote):
                folder.fsync()
                top.fsync()
    except OSError as e:
        return failure("publish:tftp", e, str(root / TFTP_DIR))
    return None


def loaders_published(settings: dict[str, Any], sources: dict[str, Path]) -> bool:
    """uptodate check: every published loader has the package's bytes (3 MB read; a
    damaged or hand-replaced one is copied again, not only a missing one)."""
    root = tree_root(settings)
    return all((root / rel).is_file() and filecmp.cmp(src, root / rel, shallow=False) for rel, src in sources.items())


@lru_cache(maxsize=None)
def _code_digest() -> str:
    return code_digest(__name__, TEMPLATE)


@guarded
def task_dnsmasq() -> Iterator[dict[str, Any]]:
    """dnsmasq config (proxy-DHCP or DHCP server, TFTP) from the inventory: build/site/dnsmasq.conf."""
    site = inventory.load_for_tasks()
    s = site.settings
    dhcp = s["dhcp"]
    # the config depends on the settings and, in server mode, on every host's static addresses
    hosts = repr(sorted((n, h.cfg.nics) for n, h in site.hosts.items())) if dhcp["mode"] == "server" else ""
    hosts += repr(grub_routes(site))  # the MACs that get shim
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
    sources = loader_sources(site)
    yield {
        "basename": "publish:tftp",
        "doc": f"{root}/{TFTP_DIR}/: the first stages from Debian's packages ({', '.join(sources)})",
        "actions": [(publish_loaders, [s, sources])],
        "file_dep": [str(p) for p in sources.values() if p.is_file()],  # a missing one: the action names its package
        "targets": [str(root / rel) for rel in sources],
        "uptodate": [config_changed(digest(str(root), " ".join(sources), _code_digest())), (loaders_published, [s, sources])],
    }

