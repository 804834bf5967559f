"""Root images for test hosts: a busybox ext4 root, plain or inside LUKS2, loaded into RBD."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .ceph_cluster import CephCluster

BUSYBOX = Path("/bin/busybox")  # busybox-static: the root needs no libraries
INIT = Path(__file__).with_name("rootfs") / "sbin" / "init"
FS_MIB = 48
# Room for the LUKS2 header that `cryptsetup reencrypt --encrypt` puts before the data.
LUKS_EXTRA_MIB = 32


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def build_root_tree(tree: Path, host: str, rendered_rootfs: Path) -> None:
    """A root that runs tests/e2e/rootfs/sbin/init, with the host's rendered /etc.

    ``rendered_rootfs`` is the pipeline's ``build/hosts/<host>/rootfs``: fstab,
    crypttab, ceph.conf, keyring, as provisioning would install them.
    """
    for sub in ("bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "boot"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, tree / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        link = tree / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    shutil.copy2(INIT, tree / "sbin" / "init")
    shutil.copytree(rendered_rootfs, tree, dirs_exist_ok=True)
    (tree / "etc" / "hostname").write_text(f"{host}\n")


def make_ext4(tree: Path, image: Path, size_mib: int = FS_MIB) -> None:
    """An ext4 file system holding ``tree``, owned by root, in the file ``image``."""
    _run("mkfs.ext4", "-q", "-F", "-L", "root", "-E", "root_owner=0:0", "-d", str(tree),
         str(image), f"{size_mib}M")


def encrypt_luks2(image: Path, key_file: Path) -> None:
    """Turn the file ``image`` (a file system) into a LUKS2 container holding it.

    The build machine has no device-mapper, so the data is encrypted in place by
    cryptsetup's offline reencryption, which needs none. PBKDF2 at its minimum cost:
    the guest opens the container under TCG, where argon2 would take minutes.
    """
    with image.open("r+b") as f:
        f.truncate(image.stat().st_size + LUKS_EXTRA_MIB * 1024 * 1024)
    _run("cryptsetup", "reencrypt", "--batch-mode", "--encrypt", "--type", "luks2",
         "--reduce-device-size", f"{LUKS_EXTRA_MIB}M", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", "--key-file", str(key_file), str(image))


def load_root_image(cluster: CephCluster, image: Path, spec: str) -> None:
    """``rbd import`` the file into POOL/NAMESPACE/IMAGE, replacing an earlier one.

    Only the layering feature: the exclusive lock a hard power-off leaves behind
    would make the next map wait for it.
    """
    if cluster.rbd("info", spec, check=False).returncode == 0:
        cluster.rbd("rm", "--no-progress", spec)
    cluster.rbd("import", "--no-progress", "--image-feature", "layering", str(image), spec)


def build_root_image(
    cluster: CephCluster,
    workdir: Path,
    host: str,
    rendered_rootfs: Path,
    spec: str,
    luks_key_file: Path | None = None,
) -> Path:
    """Build the host's root (in LUKS2 when a key file is given) and load it into ``spec``."""
    tree = workdir / f"{host}-root"
    image = workdir / f"{host}-root.img"
    build_root_tree(tree, host, rendered_rootfs)
    make_ext4(tree, image)
    if luks_key_file is not None:
        encrypt_luks2(image, luks_key_file)
    load_root_image(cluster, image, spec)
    return image
