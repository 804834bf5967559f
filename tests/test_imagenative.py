"""Image-native mode never writes outside the image's root, whatever links the image holds, and the image's code runs confined."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import Site
from image_escape import bait
from tasks import confine
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


# ---- the image's own update-initramfs, in its sandbox (tasks/confine.py) ----------

KVER = "6.1.0-99-amd64"
# Stands in for the image's update-initramfs: records how it was run and what it saw
# (in /boot, the one folder it may write), then runs the image's hooks as mkinitramfs would.
FAKE_UPDATE_INITRAMFS = """#!/bin/sh
echo "$* PATH=$PATH root="$(ls /) >>/boot/calls
echo x 2>/dev/null >/usr/written || echo "/usr read-only" >>/boot/calls
for hook in /etc/initramfs-tools/hooks/*; do [ ! -x "$hook" ] || "$hook"; done
[ ! -e /fail ] || { echo "E: it went wrong"; exit 1; }
[ ! -e /boot-ro ] || { echo "W: /boot is ro mounted."; exit 0; }
echo "$*" >"/boot/initrd.img-$3"
"""


@pytest.fixture
def a_busybox_image(tmp_path: Path) -> Path:
    """A root with busybox (so `ip`), a kernel and a stand-in update-initramfs."""
    if os.geteuid() != 0:
        pytest.fail("the sandbox runs as root (CI and scripts/setup run as root)")
    root = tmp_path / "image"
    for d in ("bin", "usr/sbin", f"usr/lib/modules/{KVER}", "boot"):
        (root / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    for applet in ("echo", "ls", "cat"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / f"boot/vmlinuz-{KVER}").write_bytes(b"kernel")
    (root / "usr/sbin/update-initramfs").write_text(FAKE_UPDATE_INITRAMFS)
    (root / "usr/sbin/update-initramfs").chmod(0o755)
    return root


def test_update_initramfs_runs_inside_the_image_for_each_kernel(a_busybox_image: Path) -> None:
    root = a_busybox_image
    assert builds_initrds(root)
    assert update_initramfs(root) == [KVER]
    update_initramfs(root)
    calls = [c for c in (root / "boot/calls").read_text().splitlines() if " PATH=" in c]
    assert [c.split(" PATH=")[0] for c in calls] == [f"-c -k {KVER}", f"-u -k {KVER}"], "create, then update"
    assert all(" PATH=/usr/sbin:/usr/bin:/sbin:/bin root=" in c for c in calls), "a clean environment"
    assert calls[0].split("root=")[1].split() == ["bin", "boot", "dev", "proc", "tmp", "usr"], "the image as /, with its own /dev, /proc, /tmp"
    assert sorted(os.listdir(root)) == ["bin", "boot", "usr"], "which were not made inside the image"
    assert "/usr read-only" in (root / "boot/calls").read_text()
    assert not (root / "usr/written").exists()


def test_a_relative_image_path_works_like_an_absolute_one(a_busybox_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(a_busybox_image.parent)
    assert update_initramfs(Path(a_busybox_image.name)) == [KVER]
    assert (a_busybox_image / f"boot/initrd.img-{KVER}").read_text() == f"-c -k {KVER}\n"


def test_an_images_hook_reaches_nothing_of_the_build_machine(a_busybox_image: Path, tmp_path: Path) -> None:
    """Issue 16, finding 11: what the image runs cannot write, read, connect to or kill anything outside it."""
    with bait(tmp_path / "build-machine") as outside:
        outside.plant(a_busybox_image, "/bin/busybox")
        assert update_initramfs(a_busybox_image) == [KVER]
        outside.assert_nothing_got_out(a_busybox_image)


def test_without_bubblewrap_nothing_of_the_image_runs(a_busybox_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(a_busybox_image / "usr/sbin"))  # a PATH without bwrap
    with pytest.raises(ImageError, match=r"bubblewrap is not installed: .*\(apt-get install bubblewrap; scripts/setup installs it\)"):
        update_initramfs(a_busybox_image)
    assert not (a_busybox_image / "boot/calls").exists()


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
    assert not (root / "boot/calls").exists()


def test_a_failing_update_initramfs_fails_with_its_output(a_busybox_image: Path) -> None:
    (a_busybox_image / "fail").write_text("")
    with pytest.raises(ImageError, match=f"update-initramfs -c -k {KVER} in .* failed:\nE: it went wrong"):
        update_initramfs(a_busybox_image)


def test_an_update_initramfs_that_writes_no_initrd_fails_with_its_output(a_busybox_image: Path) -> None:
    """As Debian's does when it finds /boot read-only: exit 0, having written nothing."""
    (a_busybox_image / "boot-ro").write_text("")
    with pytest.raises(ImageError, match=f"update-initramfs -c -k {KVER} in .* wrote no initrd.img-{KVER}:\nW: /boot is ro mounted"):
        update_initramfs(a_busybox_image)


def test_an_images_boot_linked_elsewhere_is_written_inside_the_image(a_busybox_image: Path, tmp_path: Path) -> None:
    """/boot -> /<somewhere> means <image>/<somewhere>, for the kernels found and for the sandbox's one writable folder."""
    root = a_busybox_image
    elsewhere = tmp_path / "build-machine-boot"  # as a path of the build machine: must stay untouched
    inside = root / str(elsewhere).lstrip("/")
    inside.parent.mkdir(parents=True)
    (root / "boot").rename(inside)
    (root / "boot").symlink_to(str(elsewhere))
    elsewhere.mkdir()
    (elsewhere / "vmlinuz-9.9.9-decoy").write_bytes(b"the build machine's kernel")
    assert update_initramfs(root) == [KVER]
    assert (inside / f"initrd.img-{KVER}").read_text() == f"-c -k {KVER}\n"
    assert os.listdir(elsewhere) == ["vmlinuz-9.9.9-decoy"]


def test_the_sandbox_makes_only_folders_inside_the_image_writable(a_busybox_image: Path, tmp_path: Path) -> None:
    root = a_busybox_image
    for wrong in (tmp_path, root, root / "bin/sh"):
        with pytest.raises(confine.ConfineError):
            confine.argv(root, ["true"], writable=[wrong])
    args = confine.argv(root, ["true"], writable=[root / "boot"])
    assert ["--bind", str(root / "boot"), "/boot"] == args[args.index("--bind"):args.index("--bind") + 3]
    assert ["--ro-bind", str(root / "usr"), "/usr"] == args[args.index(str(root / "usr")) - 1:args.index(str(root / "usr")) + 2]
    assert str(root / "boot") not in args[:args.index("--bind")], "no read-only mount of /boot beneath the writable one"


def test_doit_imagenative_without_bubblewrap_fails_with_a_cephboot_message(the_example_site: Site, a_busybox_image: Path) -> None:
    the_example_site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", f"profiles: [rack-a]\nimage_root: {a_busybox_image}")
    run = the_example_site.doit("imagenative", check=False, env={"PATH": str(a_busybox_image / "usr/sbin")})
    assert run.returncode != 0
    assert "cephboot: imagenative: zephyr: bubblewrap is not installed" in run.stdout + run.stderr, run.stdout + run.stderr
    assert not (a_busybox_image / "boot/calls").exists(), "nothing of the image ran"
    assert (a_busybox_image / "etc/initramfs-tools/conf.d/cephboot").exists(), "the boot files went in"


def test_a_file_in_place_of_a_build_folder_is_one_line_naming_the_path(the_example_site: Site, a_busybox_image: Path) -> None:
    """ENOTDIR while imagenative reads the host's build files (a file where build/hosts/<host>/ is):
    one `cephboot:` line naming the path, never a traceback, and nothing of the image runs."""
    site = the_example_site
    site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", f"profiles: [rack-a]\nimage_root: {a_busybox_image}")
    site.doit("render")
    folder = site.build / "hosts/zephyr"
    shutil.rmtree(folder)
    folder.write_text("not a folder\n")
    run = site.doit("-s", "imagenative", check=False, env={"PATH": str(a_busybox_image / "usr/sbin")})
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out, out
    assert any(line.endswith(": Not a directory") and line.startswith("cephboot: imagenative: zephyr: build/hosts/zephyr/")
               for line in out.splitlines()), out
    assert not (a_busybox_image / "boot/calls").exists(), "the image's update-initramfs did not run"
