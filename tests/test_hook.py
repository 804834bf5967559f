"""The initramfs-tools hook, run with the real hook-functions into a fake DESTDIR.

mkinitramfs is not run here (building whole initrds is the initrd task's
test); each test gives the hook what mkinitramfs would export: DESTDIR laid
out as mkinitramfs lays it out, CONFDIR, and a kernel version.  The version is
a made-up one and `modprobe` on PATH is a stub that says which modules that
kernel has, so module choices are decided by the test, not by whatever
kernel the build machine has installed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HOOK = REPO / "templates" / "initramfs-tools" / "hooks" / "cephboot"
FIXTURES = Path(__file__).resolve().parent / "boot_script"
HOOK_FUNCTIONS = Path("/usr/share/initramfs-tools/hook-functions")
VERSION = "0.0.0-cephboot-test"
KEY = "AQAAAAAAAAAAABAAY2VwaGJvb3QtZml4dHVyZQ=="

CEPH_AND_CRYPTO = [
    "libceph", "rbd", "ceph", "dm_mod", "dm_crypt", "overlay", "gcm", "ghash_generic", "ctr", "aes",
    "aes_generic", "cbc", "hmac", "sha256", "sha256_generic", "xts", "af_alg", "algif_skcipher",
]  # fmt: skip
# The stub kernel: everything cephboot wants, two of the default NIC drivers
# and one accelerated AES, so the rest of the defaults must be left out quietly.
KERNEL_MODULES = [*CEPH_AND_CRYPTO, "aesni_intel", "virtio_net", "e1000e", "ixgbe_custom"]

MODPROBE_STUB = """#!/bin/sh
# modprobe --set-version=V --show-depends MODULE: succeed if MODULE is in the stub kernel
for module; do :; done
for known in ${CEPHBOOT_TEST_MODULES}; do
	[ "${module}" = "${known}" ] && echo "insmod /lib/modules/fake/${module}.ko" && exit 0
done
echo "modprobe: FATAL: Module ${module} not found" >&2
exit 1
"""


@dataclass
class Build:
    rc: int
    output: str
    destdir: Path

    @property
    def modules(self) -> list[str]:
        return (self.destdir / "conf" / "modules").read_text().split()

    def files(self) -> list[Path]:
        return [p for p in self.destdir.rglob("*") if p.is_file() and not p.is_symlink()]


class FakeBuild:
    """What mkinitramfs hands a hook: DESTDIR, CONFDIR, version, PATH."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.destdir = root / "initrd"
        self.confdir = root / "confdir"
        self.stubs = root / "stubs"
        self.modules = list(KERNEL_MODULES)
        # As mkinitramfs does before it runs hooks: usr-merged layout, conf/conf.d.
        for directory in ("bin", "lib", "lib64", "sbin"):
            (self.destdir / "usr" / directory).mkdir(parents=True)
            (self.destdir / directory).symlink_to(f"usr/{directory}")
        for directory in ("conf/conf.d", "etc", "run", "scripts"):
            (self.destdir / directory).mkdir(parents=True)
        (self.confdir / "conf.d").mkdir(parents=True)
        (self.confdir / "initramfs.conf").write_text("MODULES=list\nBUSYBOX=auto\n")
        self.stubs.mkdir()
        (self.stubs / "modprobe").write_text(MODPROBE_STUB)
        (self.stubs / "modprobe").chmod(0o755)
        # The host's files, where image-native mode finds them.
        self.keyring = root / "host" / "etc" / "ceph" / "ceph.client.zephyr.keyring"
        self.ceph_conf = root / "host" / "etc" / "ceph" / "ceph.conf"
        self.luks_key = root / "host" / "etc" / "cephboot" / "luks.key"
        for path, text in (
            (self.keyring, (FIXTURES / "ceph.client.zephyr.keyring").read_text()),
            (self.ceph_conf, "[global]\nfsid = 00000000-0000-4000-8000-000000000000\n"),
            (self.luks_key, "fixture-luks-key\n"),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o644)  # the hook, not the source, must make secrets private

    def host_conf(self, **overrides: str) -> None:
        """Image-native mode: the host's rendered conf.d/cephboot in CONFDIR."""
        values = {"KEYRING": str(self.keyring), **overrides}
        lines = []
        for line in (FIXTURES / "zephyr.conf").read_text().splitlines():
            key = line.split("=", 1)[0].removeprefix("CEPHBOOT_")
            lines.append(f"CEPHBOOT_{key}='{values.pop(key)}'" if key in values else line)
        (self.confdir / "conf.d" / "cephboot").write_text("\n".join(lines) + "\n")

    def run(self, *args: str, umask: str = "0077", **env: str) -> Build:
        assert HOOK_FUNCTIONS.exists(), "initramfs-tools must be installed for the hook tests"
        dash = shutil.which("dash") or "/bin/dash"
        environment = {
            "PATH": f"{self.stubs}:/usr/sbin:/usr/bin:/sbin:/bin",
            "DESTDIR": str(self.destdir),
            "CONFDIR": str(self.confdir),
            "version": VERSION,
            "verbose": "n",
            "MODULESDIR": f"/lib/modules/{VERSION}",
            "CEPHBOOT_TEST_MODULES": " ".join(self.modules),
            "CEPHBOOT_CEPH_CONF": str(self.ceph_conf),
            **env,
        }
        done = subprocess.run(
            [dash, "-c", 'umask "$1" && shift && exec "$0" "$@"', dash, umask, str(HOOK), *args],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
            check=False,
        )
        return Build(done.returncode, done.stdout, self.destdir)


@pytest.fixture
def build(tmp_path: Path) -> FakeBuild:
    return FakeBuild(tmp_path)


def test_prereqs(build: FakeBuild) -> None:
    done = build.run("prereqs")
    assert done.rc == 0
    assert done.output.strip() == ""
    assert not (build.destdir / "conf" / "modules").exists()


def test_base_initrd_gets_ceph_crypto_and_the_nic_drivers_the_kernel_has(build: FakeBuild) -> None:
    done = build.run()
    assert done.rc == 0, done.output
    # NIC drivers go into the initrd (manual_add_modules; that real mkinitramfs
    # builds carry them is checked in test_initrd.py) for udev to load on the
    # machine that has the NIC: they are not loaded on every boot.
    assert done.modules == [*CEPH_AND_CRYPTO, "aesni_intel"]
    # Default NIC drivers this kernel lacks are left out without noise.
    assert "W:" not in done.output


def test_base_initrd_carries_no_host_data_and_no_secrets(build: FakeBuild) -> None:
    # Even with the host's files present and their paths in the environment.
    done = build.run(CEPHBOOT_KEYRING=str(build.keyring), CEPHBOOT_LUKS_KEYFILE=str(build.luks_key))
    assert done.rc == 0, done.output
    assert not (build.destdir / "etc" / "ceph").exists()
    assert list((build.destdir / "conf" / "conf.d").iterdir()) == []
    for path in done.files():
        assert not path.name.endswith((".keyring", ".key")), path
        assert KEY.encode() not in path.read_bytes(), path


def test_extra_nic_modules_from_confdir_and_environment(build: FakeBuild) -> None:
    (build.confdir / "conf.d" / "cephboot-build").write_text("CEPHBOOT_NIC_MODULES='ixgbe_custom nosuch_nic'\n")
    done = build.run()
    assert done.rc == 0, done.output
    assert done.modules == [*CEPH_AND_CRYPTO, "aesni_intel"]
    assert f"W: cephboot: kernel {VERSION} has no nosuch_nic module; leaving it out" in done.output

    by_environment = FakeBuild(build.root / "again")
    done = by_environment.run(CEPHBOOT_NIC_MODULES="ixgbe_custom env_only_nic")
    assert done.rc == 0, done.output
    assert f"W: cephboot: kernel {VERSION} has no env_only_nic module; leaving it out" in done.output
    assert "ixgbe_custom" not in done.output


def test_wanted_modules_the_kernel_lacks_are_warned_about(build: FakeBuild) -> None:
    build.modules.remove("gcm")
    done = build.run()
    assert done.rc == 0, done.output
    assert "gcm" not in done.modules
    assert f"W: cephboot: kernel {VERSION} has no gcm module; leaving it out" in done.output


def test_a_kernel_without_rbd_fails_the_build(build: FakeBuild) -> None:
    build.modules.remove("rbd")
    done = build.run()
    assert done.rc != 0
    assert f"E: cephboot: kernel {VERSION} has no rbd module: no RBD root without it" in done.output


def test_programs_the_boot_script_runs_are_copied(build: FakeBuild) -> None:
    done = build.run()
    assert done.rc == 0, done.output
    for program, places in {
        "rbd": ["/usr/bin/rbd"],
        "mount.ceph": ["/sbin/mount.ceph", "/usr/sbin/mount.ceph"],
        "cryptsetup": ["/sbin/cryptsetup", "/usr/sbin/cryptsetup"],
        "ip": ["/sbin/ip", "/usr/sbin/ip", "/bin/ip", "/usr/bin/ip"],
        "openssl": ["/usr/bin/openssl", "/bin/openssl"],
    }.items():
        installed = [p for p in places if os.access(p, os.X_OK)]
        copied = [p for p in places if (build.destdir / p.lstrip("/")).exists()]
        # What the build machine has, the initrd gets; what it lacks is reported.
        assert bool(copied) == bool(installed), (program, copied, installed)
    if not os.access("/usr/bin/rbd", os.X_OK):
        assert "hosts must use CEPHBOOT_MAP_METHOD='sysfs'" in done.output


CEPH_USERSPACE = ("rbd", "mount.ceph", "librbd.so", "librados.so", "libceph-common.so")


def names_in(build: Build) -> set[str]:
    return {p.name for p in build.destdir.rglob("*")}


def has(names: set[str], program: str) -> bool:
    return any(n == program or n.startswith(program + ".") for n in names)


@pytest.mark.parametrize("methods", ["", "cli", "cli sysfs"])
def test_an_initrd_that_serves_the_cli_carries_rbd_and_its_libraries(build: FakeBuild, methods: str) -> None:
    if methods:
        (build.confdir / "initramfs.conf").write_text(f"MODULES=list\nCEPHBOOT_MAP_METHODS='{methods}'\n")
    done = build.run()
    assert done.rc == 0, done.output
    names = names_in(done)
    assert all(has(names, n) for n in CEPH_USERSPACE), sorted(n for n in CEPH_USERSPACE if not has(names, n))
    assert has(names, "cryptsetup") and has(names, "openssl")


def test_a_sysfs_only_initrd_leaves_the_ceph_userspace_out_and_keeps_luks_and_openssl(build: FakeBuild) -> None:
    (build.confdir / "initramfs.conf").write_text("MODULES=list\nCEPHBOOT_MAP_METHODS='sysfs'\n")
    done = build.run()
    assert done.rc == 0, done.output
    names = names_in(done)
    assert [n for n in CEPH_USERSPACE if has(names, n)] == []
    assert has(names, "cryptsetup") and has(names, "libcryptsetup.so") and has(names, "openssl") and has(names, "libcrypto.so")
    assert has(names, "ip") or has(names, "busybox")
    assert done.modules[:2] == ["libceph", "rbd"]  # the kernel's rbd: sysfs maps with it
    assert "W:" not in done.output  # no advice to use sysfs, no missing mount.ceph


def test_an_unknown_map_method_fails_the_build(build: FakeBuild) -> None:
    done = build.run(CEPHBOOT_MAP_METHODS="sysfs nbd")
    assert done.rc != 0
    assert "E: cephboot: CEPHBOOT_MAP_METHODS='sysfs nbd': unknown map method 'nbd' (cli, sysfs)" in done.output


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_image_native_mode_copies_the_hosts_files_secrets_0600(build: FakeBuild) -> None:
    build.host_conf(LUKS_NAME="zephyr-root", LUKS_KEYFILE=str(build.luks_key))
    done = build.run()
    assert done.rc == 0, done.output
    keyring = build.destdir / str(build.keyring).lstrip("/")
    luks_key = build.destdir / str(build.luks_key).lstrip("/")
    ceph_conf = build.destdir / "etc" / "ceph" / "ceph.conf"
    assert keyring.read_text() == build.keyring.read_text()
    assert _mode(keyring) == 0o600
    assert luks_key.read_text() == "fixture-luks-key\n"
    assert _mode(luks_key) == 0o600
    assert ceph_conf.read_text() == build.ceph_conf.read_text()
    assert _mode(ceph_conf) == 0o644
    assert "W:" not in done.output


def test_image_native_mode_without_luks_copies_no_luks_key(build: FakeBuild) -> None:
    build.host_conf(LUKS_KEYFILE=str(build.luks_key))
    done = build.run()
    assert done.rc == 0, done.output
    assert not (build.destdir / str(build.luks_key).lstrip("/")).exists()
    assert _mode(build.destdir / str(build.keyring).lstrip("/")) == 0o600


def test_image_native_mode_fails_without_the_keyring(build: FakeBuild) -> None:
    build.keyring.unlink()
    build.host_conf()
    done = build.run()
    assert done.rc != 0
    assert (
        f"E: cephboot: keyring {build.keyring} (from {build.confdir}/conf.d/cephboot) "
        "does not exist or is unreadable"
    ) in done.output


def test_image_native_mode_warns_when_the_initrd_would_be_world_readable(build: FakeBuild) -> None:
    build.host_conf()
    done = build.run(umask="0022")
    assert done.rc == 0, done.output
    assert (
        f"W: cephboot: this initrd holds the keyring {build.keyring}: "
        f"set UMASK=0077 in {build.confdir}/initramfs.conf"
    ) in done.output


def test_image_native_machine_mode_copies_only_the_sealed_keys(build: FakeBuild) -> None:
    sealed = build.root / "host" / "etc" / "cephboot" / "sealed"
    sealed.write_text("cephboot-sealed 1\n")
    build.host_conf(LUKS_NAME="zephyr-root", LUKS_KEYFILE=str(build.luks_key), SEALED=str(sealed),
                    SMBIOS_FIELD="chassis_asset_tag")
    done = build.run()
    assert done.rc == 0, done.output
    copied = build.destdir / str(sealed).lstrip("/")
    assert copied.read_text() == "cephboot-sealed 1\n" and _mode(copied) == 0o600
    assert not (build.destdir / str(build.keyring).lstrip("/")).exists()
    assert not (build.destdir / str(build.luks_key).lstrip("/")).exists()
    for path in done.files():
        assert KEY.encode() not in path.read_bytes() and b"fixture-luks-key" not in path.read_bytes(), path
    assert (build.destdir / "usr/bin/openssl").exists() or (build.destdir / "bin/openssl").exists()
