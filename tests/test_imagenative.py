"""Image-native mode never writes outside the image's root, whatever links the image holds."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tasks.imagenative import ImageError, OutsideRoot, builds_initrds, check_root, resolve_in_root, update_initramfs


@pytest.fixture
def an_image_with_hostile_links(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/update-initramfs").write_text("#!/bin/sh\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc").symlink_to("/" + str(outside).lstrip("/"))  # absolute: means <root><outside> under chroot
    (root / "lib").symlink_to("usr/lib")
    (root / "escape").symlink_to("../../..")
    return root


def test_absolute_links_point_into_the_image(an_image_with_hostile_links: Path, tmp_path: Path) -> None:
    root = an_image_with_hostile_links
    got = resolve_in_root(root, "etc/ceph/ceph.conf")
    assert str(got).startswith(str(root) + "/")
    assert got == root / str(tmp_path / "outside").lstrip("/") / "ceph/ceph.conf"


def test_relative_links_and_dotdot_stop_at_the_root(an_image_with_hostile_links: Path) -> None:
    root = an_image_with_hostile_links
    assert resolve_in_root(root, "escape/etc/fstab") == resolve_in_root(root, "etc/fstab")
    assert resolve_in_root(root, "../../etc/x").parent == resolve_in_root(root, "etc/x").parent
    assert resolve_in_root(root, "lib/modules/x") == root / "usr/lib/modules/x"


def test_the_build_machines_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutsideRoot, match="own root"):
        check_root("/")
    (tmp_path / "slash").symlink_to("/")
    with pytest.raises(OutsideRoot, match="own root"):
        check_root(str(tmp_path / "slash"))


def test_a_folder_without_initramfs_tools_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OutsideRoot, match="no initramfs-tools"):
        check_root(str(tmp_path))
    assert os.listdir(tmp_path) == []


# ---- the image's own update-initramfs, under a real chroot -----------------------

KVER = "6.1.0-99-amd64"
# Stands in for the image's update-initramfs: records how chroot ran it.
FAKE_UPDATE_INITRAMFS = """#!/bin/sh
echo "$* PATH=$PATH root="$(ls /) >>/calls
[ ! -e /fail ] || { echo "E: it went wrong"; exit 1; }
"""


@pytest.fixture
def a_busybox_image(tmp_path: Path) -> Path:
    """A root with busybox (so `ip`), a kernel and a stand-in update-initramfs."""
    if os.geteuid() != 0:
        pytest.fail("chroot needs root (CI and scripts/setup run as root)")
    root = tmp_path / "image"
    for d in ("bin", "usr/sbin", f"usr/lib/modules/{KVER}", "boot"):
        (root / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    for applet in ("echo", "ls"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / f"boot/vmlinuz-{KVER}").write_bytes(b"kernel")
    (root / "usr/sbin/update-initramfs").write_text(FAKE_UPDATE_INITRAMFS)
    (root / "usr/sbin/update-initramfs").chmod(0o755)
    return root


def test_update_initramfs_runs_inside_the_image_for_each_kernel(a_busybox_image: Path) -> None:
    root = a_busybox_image
    assert builds_initrds(root)
    assert update_initramfs(root) == [KVER]
    (root / f"boot/initrd.img-{KVER}").write_bytes(b"initrd")
    update_initramfs(root)
    calls = (root / "calls").read_text().splitlines()
    assert [c.split(" PATH=")[0] for c in calls] == [f"-c -k {KVER}", f"-u -k {KVER}"], "create, then update"
    assert all(" PATH=/usr/sbin:/usr/bin:/sbin:/bin root=" in c for c in calls), "a clean environment"
    assert calls[0].split("root=")[1].split() == ["bin", "boot", "usr"], "it saw the image as /"


def test_an_image_without_ip_or_a_kernel_is_refused_before_anything_runs(a_busybox_image: Path) -> None:
    root = a_busybox_image
    (root / "bin/busybox").rename(root / "bin/not-busybox")
    with pytest.raises(ImageError, match="neither iproute2 nor busybox.*apt-get install iproute2"):
        update_initramfs(root)
    (root / "usr/sbin").mkdir(exist_ok=True)
    (root / "usr/sbin/ip").symlink_to("../../bin/not-busybox")
    (root / f"boot/vmlinuz-{KVER}").unlink()
    assert not builds_initrds(root)
    with pytest.raises(ImageError, match="no kernel in .*install linux-image-amd64"):
        update_initramfs(root)
    assert not (root / "calls").exists()


def test_a_failing_update_initramfs_fails_with_its_output(a_busybox_image: Path) -> None:
    (a_busybox_image / "fail").write_text("")
    with pytest.raises(ImageError, match=f"update-initramfs -c -k {KVER} in .* failed:\nE: it went wrong"):
        update_initramfs(a_busybox_image)
