"""The base initrd: built once per kernel by real mkinitramfs, complete, reproducible, and host-data free."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from builtsite import a_built_site, archive_names, kver, the_built_example  # noqa: F401  (fixtures)
from conftest import Site
from tasks import initrd, inventory
from tasks.initrd import CORE_MODULES, verify_base

MODULE_FILES = ["rbd", "libceph", "ceph", "dm-crypt", "gcm", "ghash-generic", "ctr", "aesni-intel", "virtio_net", "overlay"]


def base(site: Site) -> Path:
    return site.build / "kernels" / kver() / "initrd.img"


def lean(site: Site) -> Path:
    return site.build / "kernels" / kver() / "initrd-sysfs.img"


def test_the_base_carries_the_boot_code_its_libraries_and_modules(the_built_example: Site) -> None:
    names = set(archive_names(base(the_built_example)))
    for program in ("usr/bin/rbd", "usr/sbin/mount.ceph", "usr/sbin/cryptsetup", "scripts/local-top/cephboot", "scripts/local-top/ORDER"):
        assert program in names, program
    libs = {Path(n).name.split(".so")[0] for n in names if ".so" in n}
    assert {"librbd", "librados", "libceph-common", "libcryptsetup"} <= libs
    modules = {Path(n).name.split(".ko")[0] for n in names if ".ko" in n}
    assert set(MODULE_FILES) <= modules
    assert (the_built_example.build / "kernels" / kver() / "vmlinuz").read_bytes() == Path(f"/boot/vmlinuz-{kver()}").read_bytes()


def test_sysfs_hosts_get_a_lean_base_without_the_rbd_cli_and_with_luks_and_openssl(the_built_example: Site) -> None:
    names = set(archive_names(lean(the_built_example)))
    libs = {Path(n).name.split(".so")[0] for n in names if ".so" in n}
    assert "usr/bin/rbd" not in names and "usr/sbin/mount.ceph" not in names
    assert not {"librbd", "librados", "libceph-common"} & libs
    for program in ("usr/sbin/cryptsetup", "usr/bin/openssl", "scripts/local-top/cephboot", "scripts/local-top/ORDER"):
        assert program in names, program
    assert {"libcryptsetup", "libcrypto"} <= libs
    modules = {Path(n).name.split(".ko")[0] for n in names if ".ko" in n}
    assert set(MODULE_FILES) <= modules
    assert verify_base(lean(the_built_example), kver(), CORE_MODULES, Path("/lib/modules"), "sysfs") == []
    # the full base, verified as a sysfs base, is refused: the point of the lean one is what it leaves out
    assert "rbd is in the sysfs base (/usr/bin/rbd)" in "\n".join(verify_base(base(the_built_example), kver(), CORE_MODULES, Path("/lib/modules"), "sysfs"))
    size, full = lean(the_built_example).stat().st_size, base(the_built_example).stat().st_size
    print(f"base initrds: full {full / 2**20:.1f} MiB, sysfs {size / 2**20:.1f} MiB")
    assert size < full


def unpacked_sizes(image: Path, into: Path) -> dict[str, int]:
    """Bytes of each kind of member of an initrd, unpacked (a file with several names counted once)."""
    subprocess.run(["unmkinitramfs", str(image), str(into)], check=True)
    kinds = {"modules": "usr/lib/modules/", "libraries": "usr/lib/x86_64-linux-gnu/", "programs": "usr/"}
    sizes, seen = dict.fromkeys([*kinds, "other"], 0), set()
    for path in sorted(into.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.stat().st_ino in seen:
            continue
        seen.add(path.stat().st_ino)
        rel = path.relative_to(into).as_posix()
        sizes[next((k for k, prefix in kinds.items() if rel.startswith(prefix)), "other")] += path.stat().st_size
    return sizes


def test_the_lean_base_keeps_to_its_budget_with_every_module_a_sysfs_boot_needs(the_built_example: Site, tmp_path: Path) -> None:
    size, full = lean(the_built_example).stat().st_size, base(the_built_example).stat().st_size
    parts = unpacked_sizes(lean(the_built_example), tmp_path / "lean")
    print(f"lean base {size / 1e6:.2f} MB against the full base's {full / 1e6:.2f} MB; unpacked: "
          + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in parts.items()))
    assert size <= full * initrd.LEAN_BUDGET, f"the lean base is {size} bytes, over its budget of a third of the full base ({full} bytes)"
    # every module the site's sysfs hosts load or may need: rbd, libceph, dm-crypt, the crypto
    # of secure mode, overlay, the root file systems and the lean NIC list, with what they need
    site = inventory.load(the_built_example.root, use_cache=False)
    (fstypes,) = initrd.kernels_in_use(site).values()
    needed = {m.replace("-", "_") for m in initrd.module_list(site.settings, fstypes, "sysfs")}
    have = {p.name.split(".ko")[0].replace("-", "_") for p in (tmp_path / "lean").rglob("*.ko*")}
    builtin = {line.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_") for line in Path(f"/lib/modules/{kver()}/modules.builtin").read_text().splitlines()}
    assert {"rbd", "libceph", "ceph", "dm_crypt", "overlay", "ext4", "gcm", "virtio_net"} <= needed
    assert needed - builtin <= have, needed - builtin - have
    assert initrd.missing_dependencies(tmp_path / "lean" / "usr/lib/modules" / kver(), Path(f"/lib/modules/{kver()}")) == []
    assert initrd.missing_libraries(tmp_path / "lean") == []
    (tmp_path / "lean/usr/lib/x86_64-linux-gnu/libssl.so.3").unlink()  # the check can fail: openssl loads it
    assert "/usr/bin/openssl loads libssl.so.3, which is not in the base" in initrd.missing_libraries(tmp_path / "lean")
    # what it leaves out: LVM and software RAID, FUSE
    assert not {"lvm", "mount.fuse3"} & {p.name for p in (tmp_path / "lean/usr/sbin").iterdir()}
    assert not {"raid456", "dm_raid", "fuse"} & have


def test_a_kernel_without_sysfs_hosts_has_no_lean_base_and_a_host_turned_to_the_cli_names_the_full_one(a_built_site: Site) -> None:
    a_built_site.edit("nodes/boreas.yaml", "  method: sysfs", "  method: cli")
    a_built_site.doit("render", "initrd", "overlay", "publish")
    assert not lean(a_built_site).exists()
    script = (a_built_site.build / "hosts/boreas/boot.ipxe").read_text()
    assert f"/kernels/{kver()}/initrd.img " in script and "initrd-sysfs.img" not in script


def test_the_base_holds_no_host_data(the_built_example: Site) -> None:
    names = archive_names(base(the_built_example))
    assert "conf/conf.d/cephboot" not in names
    assert not [n for n in names if n.endswith(".keyring") or "cephboot/luks" in n]
    assert not [n for n in names if n.startswith("etc/ceph/")]


def test_the_local_top_script_runs_from_order(the_built_example: Site, tmp_path: Path) -> None:
    subprocess.run(["unmkinitramfs", str(base(the_built_example)), str(tmp_path / "x")], check=True)
    order = (tmp_path / "x/scripts/local-top/ORDER").read_text()
    assert "/scripts/local-top/cephboot" in order
    shipped = Path(__file__).parent.parent / "templates/initramfs-tools/scripts/local-top/cephboot"
    assert (tmp_path / "x/scripts/local-top/cephboot").read_bytes() == shipped.read_bytes()
    loaded = (tmp_path / "x/conf/modules").read_text().split()
    assert {"rbd", "libceph", "gcm", "dm-crypt"} <= set(loaded)


def test_verification_names_everything_an_archive_lacks(the_built_example: Site, tmp_path: Path) -> None:
    # a compressed host layer is a valid initrd that lacks everything the base must have
    layer = tmp_path / "layer.img"
    layer.write_bytes(subprocess.run(["zstd", "-q", "-c", the_built_example.build / "hosts/boreas/overlay.cpio"], check=True, capture_output=True).stdout)
    problems = "\n".join(verify_base(layer, kver(), [*CORE_MODULES, "no_such_nic"], Path("/lib/modules")))
    for expected in ("rbd is missing", "mount.ceph is missing", "cryptsetup is missing", "scripts/local-top/cephboot is missing",
                     "ORDER does not run cephboot", "module rbd is missing", "module gcm is missing",
                     f"module no_such_nic is unknown to kernel {kver()}", "openssl is missing", "host data in the shared base: /etc/cephboot/sealed",
                     "host data in the shared base: /conf/conf.d/cephboot"):
        assert expected in problems


def test_a_base_that_a_hook_of_the_build_machine_put_private_keys_in_is_refused(the_built_example: Site, tmp_path: Path) -> None:
    """mkinitramfs runs the build machine's own hooks too: dropbear-initramfs copies its SSH host keys
    in, cryptsetup-initramfs the key files KEYFILE_PATTERN names. The lean base, unpacked, with what
    those hooks would add, packed again: verification names each, and the base is never published."""
    root = tmp_path / "root"
    subprocess.run(["unmkinitramfs", str(lean(the_built_example)), str(root)], check=True)
    planted = {
        "etc/dropbear/dropbear_ed25519_host_key": b"\x00\x00\x00\x0bssh-ed25519" + os.urandom(64),
        "cryptroot/keyfiles/cryptdata.key": os.urandom(64),
        "usr/share/stray/id_ed25519": b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n",
        "etc/stray.keyring": b"[client.admin]\n\tkey = AQBQhgdr+jsFMhAAvvAmFd5c1M0g92SZSfVdGA==\n",
    }
    for rel, data in planted.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    names = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    packed = tmp_path / "planted.img"
    archive = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=names, check=True, capture_output=True).stdout
    packed.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=archive, check=True, capture_output=True).stdout)  # as the site compresses
    problems = verify_base(packed, kver(), CORE_MODULES, Path("/lib/modules"), "sysfs")
    private = sorted(p.split("fetch: /")[1].split(" ")[0] for p in problems if "a private key of the build machine" in p)
    assert private == sorted(planted), problems
    assert initrd.private_files(tmp_path / "nothing-there") == []


def test_a_complete_base_passes_verification(the_built_example: Site) -> None:
    assert verify_base(base(the_built_example), kver(), CORE_MODULES, Path("/lib/modules")) == []


def test_a_rebuild_gives_the_same_bytes(a_built_site: Site) -> None:
    before = base(a_built_site).read_bytes()
    a_built_site.doit("forget", f"initrd:{kver()}")
    started = time.monotonic()
    run = a_built_site.doit("initrd")
    print(f"base initrd build: {time.monotonic() - started:.1f} s")
    assert run.ran == {f"initrd:{kver()}"}
    assert base(a_built_site).read_bytes() == before


def test_an_unknown_nic_module_fails_the_build_and_keeps_the_old_base(a_built_site: Site) -> None:
    before = base(a_built_site).stat().st_mtime_ns
    a_built_site.edit("site.yaml", "  compress: zstd\n", "  compress: zstd\n  nic_modules: [virtio_net, no_such_nic]\n")
    run = a_built_site.doit("initrd", check=False)
    assert run.returncode != 0
    assert f"module no_such_nic is unknown to kernel {kver()}" in run.stdout + run.stderr
    assert base(a_built_site).stat().st_mtime_ns == before


def test_a_missing_kernel_says_what_to_install(a_built_site: Site) -> None:
    a_built_site.edit("nodes/notus.yaml", "monolithic: true", "monolithic: true\nkernel: 9.9.9-1-amd64")
    run = a_built_site.doit("initrd", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "9.9.9-1-amd64" in out and "apt-get install linux-image-amd64" in out
    # found by the inventory, before any task wrote anything, and blamed on the key that asks for it
    assert "hosts/nodes/notus.yaml: kernel: '9.9.9-1-amd64' is not installed" in out and not run.ran


def test_doit_list_does_not_build_or_read_kernels(the_built_example: Site, tmp_path: Path) -> None:
    started = time.monotonic()
    run = the_built_example.doit("list", "--all")
    assert time.monotonic() - started < 5
    assert f"initrd:{kver()}" in run.stdout and f"publish:{kver()}" in run.stdout


def test_a_truncated_base_is_built_again_before_it_is_published(a_built_site: Site) -> None:
    """doit only asks whether a target exists; the initrd task also compares it with what it built."""
    good = base(a_built_site).read_bytes()
    with open(base(a_built_site), "r+b") as f:
        f.truncate(len(good) // 3)
    run = a_built_site.doit("initrd", "publish")
    assert f"initrd:{kver()}" in run.ran
    assert base(a_built_site).read_bytes() == good  # reproducible: the same bytes again (so none to publish)
    assert (a_built_site.build / "publish/kernels" / kver() / "initrd.img").read_bytes() == good


def test_mkinitramfs_keeps_its_temporary_files_under_build(a_built_site: Site, tmp_path: Path) -> None:
    """TMPDIR is under build/tmp/<node>.<pid>, removed when the run ends (and by the next run if killed)."""
    stub = tmp_path / "bin"
    stub.mkdir()
    log = tmp_path / "mkinitramfs.log"
    (stub / "mkinitramfs").write_text(f'#!/bin/sh\nd=$(mktemp -d "${{TMPDIR:-/var/tmp}}/mkinitramfs_XXXXXX")\nprintf "%s\\n%s\\n" "$TMPDIR" "$d" > {log}\nexit 3\n')
    (stub / "mkinitramfs").chmod(0o755)
    a_built_site.doit("forget", f"initrd:{kver()}")
    run = a_built_site.doit(f"initrd:{kver()}", check=False, env={"PATH": f"{stub}:{os.environ['PATH']}"})
    assert run.returncode != 0 and f"mkinitramfs for {kver()} failed (3)" in run.stdout + run.stderr
    tmpdir, made = log.read_text().splitlines()
    assert Path(tmpdir).parent.parent == a_built_site.build / "tmp" and made.startswith(tmpdir + "/mkinitramfs_")
    assert not Path(tmpdir).parent.exists()  # the run's whole folder, when it ended
