"""The build layout: every folder under build/ and the project's own folders, named once.

Paths are relative to the site (doit runs in the site folder); a stage asks here for a
folder instead of spelling it.  What each host gets inside its folder is the artifact
table's business (tasks/artifacts.py).  Strings where a loop runs per host on every run
(a Path costs more than an f-string at 10,000 hosts), Paths elsewhere.
"""
from __future__ import annotations

from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
TEMPLATES = PROJECT / "templates"

BUILD = Path("build")  # the build outputs and doit's state, owner-only (fileio.prepare_build)
HOSTS = BUILD / "hosts"  # build/hosts/<host>/: each host's rendered files and its layer
SITE = BUILD / "site"  # site-wide files: boot.ipxe, the by-uuid/by-mac routes, nginx.conf, dnsmasq.conf
KERNELS = BUILD / "kernels"  # build/kernels/<kver>/: vmlinuz and the base initrds, shared by hosts
STATE = BUILD / "state"  # the per-host stages' records (tasks/stage.py)
TEMPLATE_CODE = STATE / "templates"  # each template's compiled code (tasks/templating.py)
CLEAN_SHAPES = STATE / "clean-shapes"  # the shapes shellcheck and grub-script-check found clean (tasks/lint.py)
TMP = BUILD / "tmp"  # TMPDIR of the programs cephboot runs; leftovers are ours to remove
PROVISION = BUILD / "provision"  # provisioning's work folders and the admin's files (tasks/cephcli.py)
GOLDEN = BUILD / "golden"  # golden images' work folders (tasks/golden.py)
ROOTFS = BUILD / "rootfs"  # debootstrap results kept between runs (unless CEPHBOOT_ROOTFS_CACHE)
DOIT_DB = BUILD / "doit.sqlite3"  # doit's records of every task (DOIT_CONFIG's dep_file, tasks/everything.py)
INVENTORY_CACHE = BUILD / ".inventory.json"  # the validated inventory (tasks/inventory.py)
INVENTORY_SHARDS = BUILD / ".inventory"  # its shards of hosts and the index of unique values
# build/ and every folder cephboot makes in it: folders wherever they exist (fileio.prepare_build checks)
FOLDERS = (BUILD, STATE, TMP, HOSTS, SITE, KERNELS, PROVISION, GOLDEN, ROOTFS, INVENTORY_SHARDS)

_HOSTS = str(HOSTS)
_SITE = str(SITE)


def base_name(method: str = "cli") -> str:
    """The file name of a kernel's base initrd for hosts that map with ``method`` (under
    build/kernels/<kver>/ and the tree's kernels/<kver>/): the full base serves the rbd CLI,
    the lean initrd-sysfs.img only sysfs mapping (tasks/initrd.py builds both)."""
    return "initrd.img" if method == "cli" else f"initrd-{method}.img"


def host_dir(name: str) -> Path:
    """build/hosts/<name>/, the host's build folder."""
    return HOSTS / name


def host_file(name: str, rel: str) -> str:
    """build/hosts/<name>/<rel>, as a string (per host on every run)."""
    return f"{_HOSTS}/{name}/{rel}"


def site_file(rel: str) -> str:
    """build/site/<rel>, as a string."""
    return f"{_SITE}/{rel}"
