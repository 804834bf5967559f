"""Image-native mode never writes outside the image's root, whatever links the image holds."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.imagenative import OutsideRoot, check_root, resolve_in_root


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
