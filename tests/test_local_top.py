"""The local-top boot script, run under dash and busybox sh with its commands stubbed.

Every test boots the script against a fake machine: a /sys tree with the NICs
it should find, a /proc/uptime clock that the stubbed `sleep` advances, a /run
(with udev's records where a test says udev runs), a rendered conf.d file, and stubs for ip, ipconfig, rbd, cryptsetup, modprobe,
sleep and udevadm that log their argv (tests/boot_script/stub.py).  The
assertions are on what was called, in which order, and what was said.
Both static scripts are also linted here with shellcheck as POSIX sh.
"""

from __future__ import annotations

import json
import os
import base64
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "templates" / "initramfs-tools" / "scripts" / "local-top" / "cephboot"
HOOK = REPO / "templates" / "initramfs-tools" / "hooks" / "cephboot"
FIXTURES = Path(__file__).resolve().parent / "boot_script"
STUBBED = ("ip", "ipconfig", "rbd", "cryptsetup", "modprobe", "sleep", "udevadm", "mount")
# the real programs, for what a stub cannot stand in for: unsealing keys in machine mode,
# putting a stateless host's files into its overlay
REAL = ("openssl", "chmod", "rm", "mkdir", "cp")
KEYRING = FIXTURES / "ceph.client.zephyr.keyring"
ZEPHYR_KEY = "AQAAAAAAAAAAABAAY2VwaGJvb3QtZml4dHVyZQ=="
CEPH_MAC = "52:54:00:12:34:56"
SHELLS = ("dash", "busybox")


def shell_command(shell: str) -> list[str]:
    path = shutil.which(shell) or f"/bin/{shell}"
    assert Path(path).exists(), f"{shell} is needed to run the boot script tests"
    return [path] if shell == "dash" else [path, "sh"]


@dataclass
class Boot:
    """What one run of the script did."""

    rc: int
    output: str
    calls: list[tuple[str, list[str]]]

    def lines(self, *commands: str) -> list[str]:
        """The calls of the given commands, in order, as command lines."""
        return [" ".join([cmd, *argv]) for cmd, argv in self.calls if cmd in commands]

    @property
    def sleeps(self) -> list[str]:
        return [argv[0] for cmd, argv in self.calls if cmd == "sleep"]

    @property
    def panicked(self) -> bool:
        return self.rc != 0


class FakeInitrd:
    """A machine for the script: /sys, /proc, the conf.d file, stubbed commands."""

    def __init__(self, root: Path, shell: str, stubbed: tuple[str, ...] = STUBBED) -> None:
        self.root = root
        self.shell = shell
        self.stubbed = stubbed
        self.sys = root / "sys"
        self.proc = root / "proc"
        self.stubs = root / "stubs"
        self.log = root / "calls.jsonl"
        self.plan_file = root / "plan.json"
        self.conf_file = root / "conf.d" / "cephboot"
        self.run = root / "run"
        self.steps: dict[str, list[dict]] = {}
        for directory in (self.sys / "class" / "net", self.proc, self.stubs, self.conf_file.parent, self.run):
            directory.mkdir(parents=True)
        (self.proc / "uptime").write_text("100.00 200.00\n")
        self.log.write_text("")
        self._write_stubs()
        self.rbd_device("0", pool="rbd", name="root", namespace="zephyr")
        (self.sys / "bus" / "rbd" / "add_single_major").write_text("")
        self.conf()

    def _write_stubs(self) -> None:
        preload = []
        for name in self.stubbed:
            stub = self.stubs / name
            stub.write_text(
                f'#!/bin/sh\nexec "{sys.executable}" -S "{FIXTURES / "stub.py"}" {name} "$@"\n'
            )
            stub.chmod(0o755)
            preload.append(f'{name}() {{ "{stub}" "$@"; }}\n')
        # busybox-static's sh runs its own applets (ip, sleep, modprobe) ahead of
        # PATH, so under busybox the stubs are put in front as shell functions.
        (self.stubs / "preload.sh").write_text("".join(preload))
        for name in REAL:
            real = shutil.which(name, path="/usr/bin:/bin")
            assert real, f"{name} is needed to run the boot script tests"
            (self.stubs / name).symlink_to(real)

    def nic(self, name: str, mac: str, carrier: str | None = "1") -> Path:
        directory = self.sys / "class" / "net" / name
        directory.mkdir()
        (directory / "address").write_text(mac + "\n")
        (directory / "ifindex").write_text(f"{len(list(directory.parent.iterdir()))}\n")
        if carrier is not None:
            (directory / "carrier").write_text(carrier + "\n")
        return directory

    def udev(self, queued: bool = True) -> Path:
        """udevd runs (its control socket), with events still queued unless ``queued`` is
        false; returns the folder where it records the devices it is done with."""
        (self.run / "udev").mkdir()
        (self.run / "udev" / "control").write_text("")
        if queued:
            (self.run / "udev" / "queue").write_text("")
        return self.run / "udev" / "data"

    def rbd_device(self, dev_id: str, pool: str, name: str, namespace: str, snap: str = "-") -> None:
        directory = self.sys / "bus" / "rbd" / "devices" / dev_id
        directory.mkdir(parents=True)
        for attribute, value in (("pool", pool), ("name", name), ("pool_ns", namespace), ("current_snap", snap)):
            (directory / attribute).write_text(value + "\n")

    def conf(self, **overrides: str) -> None:
        """Write conf.d/cephboot: the zephyr sample with CEPHBOOT_<KEY> overrides."""
        values = {"KEYRING": str(KEYRING)}
        values.update(overrides)
        lines = []
        for line in (FIXTURES / "zephyr.conf").read_text().splitlines():
            key = line.split("=", 1)[0].removeprefix("CEPHBOOT_")
            lines.append(f"CEPHBOOT_{key}='{values.pop(key)}'" if key in values else line)
        assert not values, f"unknown conf keys {values}"
        self.conf_file.write_text("\n".join(lines) + "\n")

    def plan(self, command: str, *steps: dict) -> None:
        self.steps[command] = list(steps)

    def boot(self, *args: str, wrapper: tuple[str, ...] = (), **env: str) -> Boot:
        """Run the script (inside `wrapper ...` if given) with `env` on top of the defaults."""
        self.plan_file.write_text(json.dumps(self.steps))
        environment = {
            "PATH": str(self.stubs),
            "CEPHBOOT_CONF": str(self.conf_file),
            "CEPHBOOT_FUNCTIONS": str(self.root / "no-such-functions"),
            "CEPHBOOT_SYSFS": str(self.sys),
            "CEPHBOOT_PROC": str(self.proc),
            "CEPHBOOT_RUN": str(self.run),
            "CEPHBOOT_TEST_LOG": str(self.log),
            "CEPHBOOT_TEST_PLAN": str(self.plan_file),
            "CEPHBOOT_TEST_UPTIME": str(self.proc / "uptime"),
            "CEPHBOOT_TEST_PRELOAD": str(self.stubs / "preload.sh"),
            "CEPHBOOT_TEST_SCRIPT": str(SCRIPT),
            "ROOT": "/dev/rbd0",
        }
        environment.update(env)
        if self.shell == "dash":
            argv = [*shell_command("dash"), str(SCRIPT), *args]
        else:
            runner = '. "$CEPHBOOT_TEST_PRELOAD"; . "$CEPHBOOT_TEST_SCRIPT"'
            argv = [*shell_command("busybox"), "-c", runner, "cephboot", *args]
        done = subprocess.run(
            [*wrapper, *argv],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return Boot(done.returncode, done.stdout, [(c["cmd"], c["argv"]) for c in calls])


@pytest.fixture(params=SHELLS)
def initrd(request: pytest.FixtureRequest, tmp_path: Path) -> FakeInitrd:
    """A fake machine with one Ceph NIC (eth0, carrier up) and a mapped-image entry."""
    machine = FakeInitrd(tmp_path, request.param)
    machine.nic("lo", "00:00:00:00:00:00")
    machine.nic("eth0", CEPH_MAC)
    return machine


def rbd_map_line(spec: str = "rbd/zephyr/root", *extra: str, timeout: int = 120) -> str:
    """The rbd call; ``timeout`` is what is left of the deadline (zephyr.conf: 120 s)."""
    return " ".join(["rbd device map", spec, "--id zephyr --keyring", str(KEYRING),
                     f"--client_mount_timeout {timeout}", *extra])


# ---- the static scripts as files ----------------------------------------


@pytest.mark.parametrize("script", [SCRIPT, HOOK], ids=["local-top", "hook"])
def test_static_scripts_are_shellcheck_clean_posix_sh(script: Path) -> None:
    from tasks.lint import shellcheck_binary

    done = subprocess.run(
        [shellcheck_binary(), "--shell=sh", "--severity=style", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", [SCRIPT, HOOK], ids=["local-top", "hook"])
def test_static_scripts_are_executable_sh(script: Path) -> None:
    # mkinitramfs executes hooks and boot scripts directly and copies their mode.
    assert script.read_text().startswith("#!/bin/sh\n")
    assert os.access(script, os.X_OK)


# ---- the initramfs-tools conventions -------------------------------------


def test_prereqs_answers_and_does_nothing_else(initrd: FakeInitrd) -> None:
    boot = initrd.boot("prereqs")
    assert boot.rc == 0
    assert boot.output.strip() == ""
    assert boot.calls == []


def test_a_plain_boot_brings_up_the_ceph_nic_then_maps(initrd: FakeInitrd) -> None:
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.lines("ip", "ipconfig", "rbd", "cryptsetup") == [
        "ip link set dev eth0 up",
        "ip addr add 192.0.2.10/24 dev eth0",
        rbd_map_line(),
    ]
    # init loaded rbd (/sys/bus/rbd is there) and no udev runs: nothing else to call
    assert boot.lines("modprobe", "udevadm") == []
    assert "cephboot: mapped rbd/zephyr/root at /dev/rbd0" in boot.output
    assert boot.sleeps == []


def test_the_first_and_last_lines_time_the_script_and_its_map(initrd: FakeInitrd) -> None:
    initrd.plan("ip", {"advance": 0.5}, {})
    initrd.plan("rbd", {"rc": 1, "stderr": "rbd: no monitors", "advance": 2}, {})
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    lines = [line for line in boot.output.splitlines() if line.startswith("cephboot: ")]
    assert lines[0] == "cephboot: local-top started at 100 s of uptime"
    # 0.5 s bringing the NIC up, then 2 s in a failed rbd, 1 s asleep and a map that works
    assert lines[-1] == "cephboot: local-top done in 3.5 s, 3 s of it mapping rbd/zephyr/root, 0.5 s bringing up the Ceph NIC"


def test_the_initrd_panic_function_is_the_one_called(initrd: FakeInitrd) -> None:
    initrd.conf(CEPH_MACS="52:54:00:99:99:99", LINK_TIMEOUT="0")
    boot = initrd.boot(CEPHBOOT_FUNCTIONS=str(FIXTURES / "functions"))
    assert boot.rc == 3
    assert "initramfs panic: cephboot: no network interface" in boot.output


def test_quiet_silences_progress_but_not_warnings(initrd: FakeInitrd) -> None:
    initrd.plan("rbd", {"rc": 1, "stderr": "rbd: map failed: (110) Connection timed out"}, {})
    boot = initrd.boot(quiet="y")
    assert boot.rc == 0
    assert "mapped rbd/zephyr/root" not in boot.output
    assert "(110) Connection timed out" in boot.output


# ---- configuration ----------------------------------------------------------


def test_without_a_host_layer_a_non_rbd_root_boots_on(initrd: FakeInitrd) -> None:
    initrd.conf_file.unlink()
    boot = initrd.boot(ROOT="/dev/sda1")
    assert boot.rc == 0
    assert f"cephboot: no {initrd.conf_file} (no host layer)" in boot.output
    assert boot.calls == []


def test_without_a_host_layer_an_rbd_root_panics_with_the_reason(initrd: FakeInitrd) -> None:
    initrd.conf_file.unlink()
    boot = initrd.boot(ROOT="/dev/rbd0")
    assert boot.panicked
    assert f"cephboot: root=/dev/rbd0 but {initrd.conf_file} is missing" in boot.output
    assert "host layer (overlay.cpio)" in boot.output
    assert boot.calls == []


def test_missing_values_are_all_named_before_anything_runs(initrd: FakeInitrd) -> None:
    initrd.conf(IMAGE="", CLIENT="", MAP_METHOD="sysfs", MON_HOST="")
    boot = initrd.boot()
    assert boot.panicked
    assert (
        f"cephboot: {initrd.conf_file} lacks a value for: "
        "CEPHBOOT_IMAGE CEPHBOOT_CLIENT CEPHBOOT_MON_HOST"
    ) in boot.output
    assert boot.calls == []


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("MAP_METHOD", "nbd", "CEPHBOOT_MAP_METHOD='nbd' in {conf}: expected 'cli' or 'sysfs'"),
        ("MAP_DEADLINE", "2m", "CEPHBOOT_MAP_DEADLINE='2m' in {conf}: expected whole seconds"),
        ("LINK_TIMEOUT", "030", "CEPHBOOT_LINK_TIMEOUT='030' in {conf}: expected whole seconds"),
        ("CEPH_ADDR", "192.0.2.10", "CEPHBOOT_CEPH_ADDR='192.0.2.10' in {conf}: expected 'dhcp'"),
    ],
)
def test_malformed_values_panic_naming_key_and_value(
    initrd: FakeInitrd, key: str, value: str, message: str
) -> None:
    initrd.conf(**{key: value})
    boot = initrd.boot()
    assert boot.panicked
    assert "cephboot: " + message.format(conf=initrd.conf_file) in boot.output
    assert boot.calls == []


# ---- finding and configuring NICs -------------------------------------------


def test_any_listed_mac_finds_the_nic_even_when_the_first_is_absent(initrd: FakeInitrd) -> None:
    initrd.nic("eth1", "52:54:00:ab:cd:ef")
    initrd.conf(CEPH_MACS="52:54:00:00:00:01 52:54:00:ab:cd:ef 52:54:00:00:00:02")
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.lines("ip") == [
        "ip link set dev eth1 up",
        "ip addr add 192.0.2.10/24 dev eth1",
    ]
    assert "cephboot: Ceph NIC is eth1 (52:54:00:ab:cd:ef)" in boot.output


def test_a_missing_nic_panics_after_a_bounded_wait(initrd: FakeInitrd) -> None:
    initrd.conf(CEPH_MACS="52:54:00:00:00:01 52:54:00:00:00:02", LINK_TIMEOUT="2")
    boot = initrd.boot()
    assert boot.panicked
    assert (
        "cephboot: no network interface has any of the Ceph NIC's MACs "
        "(52:54:00:00:00:01 52:54:00:00:00:02) after 2 s; "
        f"present: eth0={CEPH_MAC}, lo=00:00:00:00:00:00"
    ) in boot.output
    assert boot.sleeps == ["0.1"] * 20
    assert boot.lines("udevadm") == []
    assert boot.lines("ip", "rbd") == []


def test_the_nic_may_appear_while_waiting(initrd: FakeInitrd) -> None:
    late = initrd.nic("eth7", "52:54:00:77:77:77")
    (late / "address").unlink()
    # The third nap is when the driver has probed: the address shows up in /sys.
    initrd.plan("sleep", {}, {}, {"write": {str(late / "address"): "52:54:00:77:77:77\n"}})
    initrd.conf(CEPH_MACS="52:54:00:77:77:77")
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.sleeps == ["0.1"] * 3
    assert boot.lines("ip")[0] == "ip link set dev eth7 up"


def test_udev_is_waited_for_on_the_nic_only_not_its_whole_queue(initrd: FakeInitrd) -> None:
    """udev still has events queued (init has just loaded modules), but it is done with
    the Ceph NIC (its record n<ifindex> is there): no wait, and no `udevadm settle`."""
    data = initrd.udev(queued=True)
    ifindex = (initrd.sys / "class" / "net" / "eth0" / "ifindex").read_text().strip()
    data.mkdir()
    (data / f"n{ifindex}").write_text("")
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.sleeps == []
    assert boot.lines("udevadm") == []
    assert boot.lines("ip")[0] == "ip link set dev eth0 up"


def test_a_nic_udev_renames_is_used_under_its_new_name(initrd: FakeInitrd) -> None:
    data = initrd.udev(queued=True)
    ifindex = (initrd.sys / "class" / "net" / "eth0" / "ifindex").read_text().strip()
    net = initrd.sys / "class" / "net"
    # at the second nap udev has renamed eth0 to ens3 and recorded it
    initrd.plan("sleep", {}, {"rename": {str(net / "eth0"): str(net / "ens3")}, "write": {str(data / f"n{ifindex}"): ""}})
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.sleeps == ["0.1"] * 2
    assert boot.lines("ip")[:2] == ["ip link set dev ens3 up", "ip addr add 192.0.2.10/24 dev ens3"]
    assert f"cephboot: Ceph NIC is ens3 ({CEPH_MAC})" in boot.output


def test_an_empty_udev_queue_is_enough(initrd: FakeInitrd) -> None:
    """A udev that records devices elsewhere: once its queue is empty, it is done with the NIC too."""
    initrd.udev(queued=False)
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.sleeps == []
    assert boot.lines("ip")[0] == "ip link set dev eth0 up"


def test_a_nic_udev_never_finishes_panics_after_the_link_timeout(initrd: FakeInitrd) -> None:
    initrd.udev(queued=True)
    initrd.conf(LINK_TIMEOUT="1")
    boot = initrd.boot()
    assert boot.panicked
    assert (
        f"cephboot: udev has not finished with the Ceph NIC eth0 ({CEPH_MAC}) after 1 s "
        f"(no {initrd.run}/udev/data/n<ifindex>, events still queued)"
    ) in boot.output
    assert boot.sleeps == ["0.1"] * 10
    assert boot.lines("ip", "rbd") == []


def test_rbd_is_loaded_only_when_init_has_not_loaded_it(initrd: FakeInitrd) -> None:
    bus = initrd.sys / "bus" / "rbd"
    shutil.rmtree(bus)
    device = bus / "devices" / "0"
    initrd.plan("modprobe", {"write": {str(device / name): value + "\n" for name, value in
                                       (("pool", "rbd"), ("name", "root"), ("pool_ns", "zephyr"), ("current_snap", "-"))}})
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.lines("modprobe", "rbd") == ["modprobe rbd", rbd_map_line()]


def test_static_address_and_gateway_in_order(initrd: FakeInitrd) -> None:
    initrd.conf(CEPH_GW="192.0.2.254")
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.lines("ip", "rbd") == [
        "ip link set dev eth0 up",
        "ip addr add 192.0.2.10/24 dev eth0",
        "ip route add default via 192.0.2.254 dev eth0",
        rbd_map_line(),
    ]


def test_dhcp_uses_klibc_ipconfig_on_the_found_nic(initrd: FakeInitrd) -> None:
    initrd.conf(CEPH_ADDR="dhcp", CEPH_GW="192.0.2.254", LINK_TIMEOUT="15")
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.lines("ip", "ipconfig", "rbd") == [
        "ip link set dev eth0 up",
        "ipconfig -t 15 -c dhcp -d eth0",
        rbd_map_line(),
    ]


def test_dhcp_without_a_lease_panics(initrd: FakeInitrd) -> None:
    initrd.conf(CEPH_ADDR="dhcp")
    initrd.plan("ipconfig", {"rc": 1, "stderr": "eth0: no response after 30 secs"})
    boot = initrd.boot()
    assert boot.panicked
    assert (
        f"cephboot: DHCP on eth0 ({CEPH_MAC}) got no lease in 30 s: eth0: no response after 30 secs"
    ) in boot.output
    assert boot.lines("rbd") == []


def test_carrier_is_polled_until_it_comes_up(initrd: FakeInitrd) -> None:
    carrier = initrd.sys / "class" / "net" / "eth0" / "carrier"
    carrier.unlink()  # unreadable while the link is down
    initrd.plan("sleep", {"write": {str(carrier): "0\n"}}, {}, {"write": {str(carrier): "1\n"}})
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.sleeps == ["0.1"] * 3
    assert boot.lines("ip")[:2] == ["ip link set dev eth0 up", "ip addr add 192.0.2.10/24 dev eth0"]


def test_no_carrier_panics_after_the_link_timeout(initrd: FakeInitrd) -> None:
    (initrd.sys / "class" / "net" / "eth0" / "carrier").write_text("0\n")
    initrd.conf(LINK_TIMEOUT="1")
    boot = initrd.boot()
    assert boot.panicked
    assert f"cephboot: no carrier on eth0 ({CEPH_MAC}) after 1 s" in boot.output
    assert boot.sleeps == ["0.1"] * 10
    assert boot.lines("ip") == ["ip link set dev eth0 up"]


def test_a_failing_ip_command_panics_with_its_error(initrd: FakeInitrd) -> None:
    initrd.plan("ip", {}, {"rc": 2, "stderr": "RTNETLINK answers: File exists"})
    boot = initrd.boot()
    assert boot.panicked
    assert (
        "cephboot: ip addr add 192.0.2.10/24 dev eth0 failed: RTNETLINK answers: File exists"
    ) in boot.output
    assert boot.lines("rbd") == []


def test_the_user_nic_is_configured_after_the_root_is_mapped(initrd: FakeInitrd) -> None:
    initrd.nic("eth1", "52:54:00:aa:00:02")
    initrd.conf(
        CEPH_GW="192.0.2.254",
        USER_MACS="52:54:00:aa:00:01 52:54:00:aa:00:02",
        USER_ADDR="198.51.100.10/24",
        USER_GW="198.51.100.1",
    )
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert boot.lines("ip", "rbd") == [
        "ip link set dev eth0 up",
        "ip addr add 192.0.2.10/24 dev eth0",
        "ip route add default via 192.0.2.254 dev eth0",
        rbd_map_line(),
        "ip link set dev eth1 up",
        "ip addr add 198.51.100.10/24 dev eth1",
        "ip route add default via 198.51.100.1 dev eth1 metric 100",
    ]


def test_a_missing_user_nic_only_warns(initrd: FakeInitrd) -> None:
    initrd.conf(USER_MACS="52:54:00:aa:00:01", USER_ADDR="dhcp", LINK_TIMEOUT="1")
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert "cephboot: warning: user NIC not configured, booting without it: " in boot.output
    assert "user NIC's MACs (52:54:00:aa:00:01) after 1 s" in boot.output
    assert boot.lines("rbd") == [rbd_map_line()]
    assert boot.lines("ipconfig") == []


# ---- mapping the image ---------------------------------------------------------


def test_map_options_and_an_empty_namespace(initrd: FakeInitrd) -> None:
    initrd.conf(NAMESPACE="", MAP_OPTIONS="ms_mode=secure,queue_depth=256")
    initrd.rbd_device("1", pool="rbd", name="root", namespace="")
    boot = initrd.boot(ROOT="/dev/rbd1")
    assert boot.rc == 0, boot.output
    assert boot.lines("rbd") == [rbd_map_line("rbd/root", "-o ms_mode=secure,queue_depth=256")]
    assert "cephboot: mapped rbd/root at /dev/rbd1" in boot.output
    assert "warning" not in boot.output


def test_map_fails_twice_then_succeeds_with_backoff(initrd: FakeInitrd) -> None:
    timeout = "rbd: sysfs write failed\nrbd: map failed: (110) Connection timed out"
    initrd.plan("rbd", {"rc": 110, "stderr": timeout}, {"rc": 1, "stderr": "rbd: no monitors"}, {})
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    # Each attempt may wait for a monitor only as long as the deadline leaves.
    assert boot.lines("rbd") == [rbd_map_line(timeout=t) for t in (120, 119, 117)]
    assert boot.sleeps == ["1", "2"]
    assert (
        "cephboot: mapping rbd/zephyr/root failed (attempt 1): "
        "rbd: sysfs write failed\nrbd: map failed: (110) Connection timed out; retrying in 1 s"
    ) in boot.output
    assert (
        "cephboot: mapping rbd/zephyr/root failed (attempt 2): rbd: no monitors; retrying in 2 s"
    ) in boot.output
    assert "cephboot: mapped rbd/zephyr/root at /dev/rbd0" in boot.output


def test_map_gives_up_at_the_deadline(initrd: FakeInitrd) -> None:
    initrd.conf(MAP_DEADLINE="10")
    initrd.plan("rbd", {"rc": 1, "stderr": "rbd: map failed: (13) Permission denied"})
    boot = initrd.boot()
    assert boot.panicked
    # 1 + 2 + 4 s, then the wait is cut to end at the deadline, then one last try.
    assert boot.sleeps == ["1", "2", "4", "3"]
    assert len(boot.lines("rbd")) == 5
    assert (
        "cephboot: could not map rbd/zephyr/root as client.zephyr (cli) in 5 attempts over 10 s "
        "(CEPHBOOT_MAP_DEADLINE=10); last error: rbd: map failed: (13) Permission denied"
    ) in boot.output


def test_an_attempt_waits_for_a_monitor_no_longer_than_the_deadline_leaves(
    initrd: FakeInitrd,
) -> None:
    initrd.conf(MAP_DEADLINE="30")
    initrd.plan("rbd", {"rc": 110, "stderr": "monclient(hunting): authenticate timed out", "advance": 12})
    boot = initrd.boot()
    assert boot.panicked
    # 12 s in rbd each time; the sleeps are 1 s, 2 s, then cut at the deadline.
    timeouts = [line.split("--client_mount_timeout ")[1] for line in boot.lines("rbd")]
    assert timeouts == ["30", "17", "5"]
    assert "in 3 attempts over 39 s (CEPHBOOT_MAP_DEADLINE=30)" in boot.output


def test_backoff_is_capped_at_16_seconds(initrd: FakeInitrd) -> None:
    initrd.conf(MAP_DEADLINE="60")
    initrd.plan("rbd", {"rc": 1})
    boot = initrd.boot()
    assert boot.panicked
    assert boot.sleeps == ["1", "2", "4", "8", "16", "16", "13"]


def test_time_spent_inside_rbd_counts_toward_the_deadline(initrd: FakeInitrd) -> None:
    initrd.conf(MAP_DEADLINE="60")
    initrd.plan("rbd", {"rc": 1, "stderr": "rbd: map failed: (110) Connection timed out", "advance": 30})
    boot = initrd.boot()
    assert boot.panicked
    # 30 s in rbd, 1 s asleep, 30 s in rbd: past the deadline after two attempts.
    assert len(boot.lines("rbd")) == 2
    assert boot.sleeps == ["1"]
    assert "in 2 attempts over 61 s (CEPHBOOT_MAP_DEADLINE=60)" in boot.output


def test_a_missing_keyring_panics_before_mapping(initrd: FakeInitrd) -> None:
    initrd.conf(KEYRING="/etc/ceph/ceph.client.nobody.keyring")
    boot = initrd.boot()
    assert boot.panicked
    assert (
        "cephboot: keyring /etc/ceph/ceph.client.nobody.keyring for client.zephyr "
        "is missing from the initrd"
    ) in boot.output
    assert boot.lines("rbd") == []


def test_a_map_without_a_kernel_device_panics(initrd: FakeInitrd) -> None:
    initrd.conf(IMAGE="other")
    boot = initrd.boot()
    assert boot.panicked
    assert (
        f"cephboot: mapped rbd/zephyr/other but no matching device in {initrd.sys}/bus/rbd/devices"
    ) in boot.output


def test_sysfs_method_writes_the_kernel_add_string(initrd: FakeInitrd) -> None:
    initrd.conf(MAP_METHOD="sysfs", MAP_OPTIONS="ms_mode=secure")
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    # ms_mode=secure speaks msgr2: the monitor without a port is reached on 3300, not
    # on the kernel's default 6789; a port given stays as it is.
    assert (initrd.sys / "bus" / "rbd" / "add_single_major").read_text() == (
        f"192.0.2.1:3300,192.0.2.2:6789 name=zephyr,secret={ZEPHYR_KEY},"
        "_pool_ns=zephyr,mount_timeout=120,ms_mode=secure rbd root"
    )
    assert boot.lines("rbd") == []
    assert "cephboot: mapped rbd/zephyr/root at /dev/rbd0" in boot.output


@pytest.mark.parametrize(
    ("options", "mons"),
    [
        ("", "192.0.2.1,192.0.2.3"),
        ("ms_mode=legacy", "192.0.2.1,192.0.2.3"),
        ("queue_depth=128,ms_mode=crc", "192.0.2.1:3300,192.0.2.3:3300"),
        ("ms_mode=prefer-secure", "192.0.2.1:3300,192.0.2.3:3300"),
    ],
)
def test_sysfs_method_gives_msgr2_modes_the_msgr2_port(
    initrd: FakeInitrd, options: str, mons: str
) -> None:
    initrd.conf(MAP_METHOD="sysfs", MON_HOST="192.0.2.1,192.0.2.3", MAP_OPTIONS=options)
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    written = (initrd.sys / "bus" / "rbd" / "add_single_major").read_text()
    assert written.split(" ")[0] == mons


def test_sysfs_method_without_namespace_or_single_major(initrd: FakeInitrd) -> None:
    (initrd.sys / "bus" / "rbd" / "add_single_major").unlink()
    (initrd.sys / "bus" / "rbd" / "add").write_text("")
    (initrd.sys / "bus" / "rbd" / "devices" / "0" / "pool_ns").unlink()  # a pre-4.19 kernel
    initrd.conf(MAP_METHOD="sysfs", NAMESPACE="")
    boot = initrd.boot()
    assert boot.rc == 0, boot.output
    assert (initrd.sys / "bus" / "rbd" / "add").read_text() == (
        f"192.0.2.1,192.0.2.2:6789 name=zephyr,secret={ZEPHYR_KEY},mount_timeout=120 rbd root"
    )


def test_sysfs_failures_retry_and_never_show_the_secret(initrd: FakeInitrd) -> None:
    target = initrd.sys / "bus" / "rbd" / "add_single_major"
    target.unlink()
    target.mkdir()  # every write fails
    initrd.conf(MAP_METHOD="sysfs", MAP_DEADLINE="3")
    boot = initrd.boot()
    assert boot.panicked
    assert boot.sleeps == ["1", "2"]
    assert (
        # the kernel waits for a monitor no longer than the deadline leaves (5 s at least)
        f"writing '192.0.2.1,192.0.2.2:6789 name=zephyr,secret=<from {KEYRING}>,_pool_ns=zephyr,"
        f"mount_timeout=5 rbd root' to {target} failed"
    ) in boot.output
    assert "(the kernel's reason is in dmesg)" in boot.output
    assert "in 3 attempts over 3 s" in boot.output
    assert ZEPHYR_KEY not in boot.output


def test_sysfs_method_needs_the_clients_own_key(initrd: FakeInitrd) -> None:
    initrd.conf(MAP_METHOD="sysfs", CLIENT="nobody", MAP_DEADLINE="0")
    boot = initrd.boot()
    assert boot.panicked
    assert f"last error: no 'key = ...' for [client.nobody] in {KEYRING}" in boot.output
    assert (initrd.sys / "bus" / "rbd" / "add_single_major").read_text() == ""


# ---- LUKS and the root device -------------------------------------------------


def test_luks_opens_the_mapped_device_with_the_key_file(initrd: FakeInitrd) -> None:
    key_file = initrd.root / "luks.key"
    key_file.write_bytes(b"\x00fixture-luks-key")
    initrd.conf(LUKS_NAME="zephyr-root", LUKS_KEYFILE=str(key_file))
    boot = initrd.boot(ROOT="/dev/mapper/zephyr-root")
    assert boot.rc == 0, boot.output
    assert boot.lines("rbd", "cryptsetup") == [
        rbd_map_line(),
        f"cryptsetup open --type luks2 --key-file {key_file} /dev/rbd0 zephyr-root",
    ]
    assert "cephboot: opened /dev/rbd0 as /dev/mapper/zephyr-root" in boot.output
    assert "warning" not in boot.output


def test_luks_failures_panic_with_device_name_and_key_file(initrd: FakeInitrd) -> None:
    key_file = initrd.root / "luks.key"
    key_file.write_text("wrong")
    initrd.conf(LUKS_NAME="zephyr-root", LUKS_KEYFILE=str(key_file))
    initrd.plan("cryptsetup", {"rc": 2, "stderr": "No key available with this passphrase."})
    boot = initrd.boot(ROOT="/dev/mapper/zephyr-root")
    assert boot.panicked
    assert (
        f"cephboot: cryptsetup open of /dev/rbd0 as zephyr-root with key file {key_file} failed: "
        "No key available with this passphrase."
    ) in boot.output


def test_a_missing_luks_key_file_panics_before_cryptsetup(initrd: FakeInitrd) -> None:
    initrd.conf(LUKS_NAME="zephyr-root", LUKS_KEYFILE="/etc/cephboot/luks.key")
    boot = initrd.boot(ROOT="/dev/mapper/zephyr-root")
    assert boot.panicked
    assert (
        "cephboot: LUKS key file /etc/cephboot/luks.key for zephyr-root is missing from the initrd"
    ) in boot.output
    assert boot.lines("cryptsetup") == []


def test_a_root_argument_that_does_not_match_is_warned_about(initrd: FakeInitrd) -> None:
    boot = initrd.boot(ROOT="/dev/rbd1")
    assert boot.rc == 0
    assert (
        "cephboot: warning: the kernel command line says root=/dev/rbd1, "
        "but this host's root is /dev/rbd0"
    ) in boot.output


# ---- machine mode: keys sealed to the machine secret ---------------------------

SECRET = "Q2RZ7WJ4MNKXV3PLTB6YHCFD5GAE2S7U"  # what the operator set in the SMBIOS field
LUKS_KEY = b"\x00fixture-luks-key\xff\n"


def sealed_machine(initrd: FakeInitrd, field: str | None, luks: bool = False, secret: str = SECRET) -> Path:
    """Machine mode: the layer holds only the envelope (sealed with ``secret`` by the build's
    own code); the firmware field holds ``field`` (None: no such file in /sys)."""
    from tasks.sealed import seal

    files = {"keyring": KEYRING.read_bytes(), **({"luks": LUKS_KEY} if luks else {})}
    envelope = initrd.root / "etc" / "cephboot" / "sealed"
    envelope.parent.mkdir(parents=True)
    envelope.write_bytes(seal("zephyr", files, secret.encode(), "fixture-fsid", iterations=1000))
    dmi = initrd.sys / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    if field is not None:
        (dmi / "chassis_asset_tag").write_text(field + "\n")
        (dmi / "chassis_asset_tag").chmod(0o444)
    keyring = initrd.root / "etc" / "ceph" / "ceph.client.zephyr.keyring"
    keyring.parent.mkdir(parents=True)
    luks_values = {"LUKS_NAME": "zephyr-root", "LUKS_KEYFILE": str(envelope.parent / "luks.key")} if luks else {}
    initrd.conf(KEYRING=str(keyring), SEALED=str(envelope), SMBIOS_FIELD="chassis_asset_tag", **luks_values)
    return keyring


def test_sealed_keys_are_opened_with_the_machine_secret_then_the_image_is_mapped(initrd: FakeInitrd) -> None:
    keyring = sealed_machine(initrd, SECRET, luks=True)
    boot = initrd.boot(ROOT="/dev/mapper/zephyr-root")
    assert boot.rc == 0, boot.output
    assert keyring.read_bytes() == KEYRING.read_bytes()
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    luks_key = keyring.parent.parent / "cephboot" / "luks.key"
    assert luks_key.read_bytes() == LUKS_KEY and stat.S_IMODE(luks_key.stat().st_mode) == 0o600
    assert boot.lines("rbd", "cryptsetup") == [
        rbd_map_line().replace(str(KEYRING), str(keyring)),
        f"cryptsetup open --type luks2 --key-file {luks_key} /dev/rbd0 zephyr-root",
    ]
    assert "cephboot: unsealed host zephyr's keys with the machine secret (SMBIOS chassis_asset_tag)" in boot.output
    assert SECRET not in boot.output and ZEPHYR_KEY not in boot.output
    # world-readable in sysfs (asset tags are): root only from now on, for the booted system too
    assert stat.S_IMODE((initrd.sys / "class/dmi/id/chassis_asset_tag").stat().st_mode) == 0o400


@pytest.mark.parametrize("field", [None, ""], ids=["no-field", "empty-field"])
def test_a_missing_machine_secret_stops_before_the_network_with_its_message(initrd: FakeInitrd, field: str | None) -> None:
    keyring = sealed_machine(initrd, field)
    boot = initrd.boot(CEPHBOOT_FUNCTIONS=str(FIXTURES / "functions"))
    assert boot.rc == 3, boot.output
    assert ("initramfs panic: cephboot: no machine secret: host zephyr's keys are sealed to its machine "
            "secret (SMBIOS chassis_asset_tag), and ") in boot.output
    assert "chassis_asset_tag is empty or unreadable; set the field to the host's secret in the firmware or BMC" in boot.output
    assert boot.calls == []  # no NIC, no map: nothing can work without the keys
    assert not keyring.exists()


@pytest.mark.parametrize("field", ["Q2RZ7WJ4MNKXV3PLTB6YHCFD5GAE2S7V", "Default string"], ids=["near-miss", "placeholder"])
def test_a_wrong_machine_secret_stops_at_once_with_its_message_and_writes_no_key(initrd: FakeInitrd, field: str) -> None:
    keyring = sealed_machine(initrd, field, luks=True)
    boot = initrd.boot(CEPHBOOT_FUNCTIONS=str(FIXTURES / "functions"))
    assert boot.rc == 3, boot.output
    assert ("initramfs panic: cephboot: wrong machine secret: host zephyr's keys are sealed to its machine secret "
            "(SMBIOS chassis_asset_tag), and the value in ") in boot.output
    assert "does not open them (HMAC check of" in boot.output
    assert boot.calls == []  # no retries: the secret will not become right
    assert not keyring.exists() and not (keyring.parent.parent / "cephboot" / "luks.key").exists()
    assert field not in boot.output and SECRET not in boot.output


def test_a_tampered_envelope_is_refused_like_a_wrong_secret(initrd: FakeInitrd) -> None:
    keyring = sealed_machine(initrd, SECRET)
    envelope = Path(initrd.conf_file.read_text().split("CEPHBOOT_SEALED='")[1].split("'")[0])
    lines = envelope.read_text().splitlines()
    record = next(i for i, line in enumerate(lines) if line.startswith("file keyring "))
    ciphertext = base64.b64decode(lines[record].split()[3])
    flipped = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    lines[record] = " ".join([*lines[record].split()[:3], base64.b64encode(flipped).decode()])
    envelope.write_text("\n".join(lines) + "\n")
    boot = initrd.boot()
    assert boot.panicked
    assert "cephboot: wrong machine secret" in boot.output
    assert not keyring.exists() and boot.calls == []


@pytest.mark.parametrize("damage", ["count", "mac", "format"])
def test_a_damaged_envelope_is_named_as_such_before_any_key_is_derived(initrd: FakeInitrd, damage: str) -> None:
    sealed_machine(initrd, SECRET)
    envelope = initrd.root / "etc/cephboot/sealed"
    text = envelope.read_text()
    if damage == "count":  # a count that would hold the boot in the KDF for hours
        text = text.replace("pbkdf2-sha256 1000 ", "pbkdf2-sha256 999999999 ")
    elif damage == "mac":
        text = text.rsplit("mac ", 1)[0]
    else:
        text = text.replace("cephboot-sealed 1", "cephboot-sealed 2")
    envelope.write_text(text)
    boot = initrd.boot()
    assert boot.panicked
    assert f"cephboot: {envelope} is not a cephboot-sealed 1 envelope: damaged, or made by another cephboot" in boot.output
    assert boot.calls == []


def test_an_envelope_sealed_for_another_host_is_refused(initrd: FakeInitrd) -> None:
    sealed_machine(initrd, SECRET)
    initrd.conf(HOST="boreas", KEYRING=str(initrd.root / "etc/ceph/ceph.client.zephyr.keyring"),
                SEALED=str(initrd.root / "etc/cephboot/sealed"), SMBIOS_FIELD="chassis_asset_tag")
    boot = initrd.boot()
    assert boot.panicked
    assert "was sealed for host 'zephyr', not for boreas" in boot.output


# ---- on a real kernel --------------------------------------------------------

REAL_KERNEL_RUN = """set -e
mount -t sysfs sysfs /sys
ip link add v0 address 52:54:00:12:34:99 type veth peer name v1
ip link set v1 up
ln -s /sys/class "$FAKE_SYS/class"
"$@"
echo "rc=$?"
ip -br addr show dev v0
ip route show
"""


@pytest.mark.parametrize("shell", SHELLS)
def test_real_ip_and_sysfs_in_a_private_network_namespace(shell: str, tmp_path: Path) -> None:
    """The real `ip` (iproute2 under dash, busybox's applet under busybox) and the
    kernel's own /sys/class/net, in a network namespace this test creates: only
    rbd, modprobe and udevadm are stubbed."""
    machine = FakeInitrd(tmp_path, shell, stubbed=("rbd", "modprobe", "udevadm"))
    machine.conf(CEPH_MACS="52:54:00:00:00:01 52:54:00:12:34:99", CEPH_GW="192.0.2.254")
    shutil.rmtree(machine.sys / "class")
    (machine.root / "run.sh").write_text(REAL_KERNEL_RUN)
    boot = machine.boot(
        wrapper=("unshare", "--net", "--mount", "sh", str(machine.root / "run.sh")),
        PATH=f"{machine.stubs}:/usr/sbin:/usr/bin:/sbin:/bin",
        FAKE_SYS=str(machine.sys),
        CEPHBOOT_PROC="/proc",
    )
    assert "rc=0" in boot.output, boot.output
    assert "cephboot: Ceph NIC is v0 (52:54:00:12:34:99)" in boot.output
    assert "192.0.2.10/24" in boot.output
    assert "default via 192.0.2.254 dev v0" in boot.output
    assert boot.lines("rbd") == [rbd_map_line()]


# ---- stateless hosts ----------------------------------------------------------

SNAP = "0123456789abcdef"


@dataclass
class Stateless:
    """A stateless host's machine: its golden snapshot mapped as rbd0, its layer's files, /run and /conf/param.conf."""

    initrd: FakeInitrd
    files: Path
    keyring: Path
    ceph_conf: Path
    run: Path
    param_conf: Path

    @property
    def upper(self) -> Path:
        return self.run / "cephboot" / "rw" / "upper"

    def boot(self, **env: str) -> Boot:
        return self.initrd.boot(CEPHBOOT_RUN=str(self.run), CEPHBOOT_PARAM_CONF=str(self.param_conf),
                                CEPHBOOT_CEPH_CONF=str(self.ceph_conf), **env)

    def params(self) -> dict[str, str]:
        """What init's shell holds once it has sourced /conf/param.conf."""
        names = ("ROOT", "ROOTFSTYPE", "ROOTFLAGS", "readonly", "fastboot")
        shown = subprocess.run(["dash", "-c", '. "$1"; for n in ' + " ".join(names) + '; do eval "printf \'%s=%s\\n\' $n \\"\\${$n}\\""; done',
                                "sh", str(self.param_conf)], capture_output=True, text=True, check=True).stdout
        return dict(line.split("=", 1) for line in shown.splitlines())


@pytest.fixture
def a_stateless_host(initrd: FakeInitrd, tmp_path: Path) -> Stateless:
    shutil.rmtree(initrd.sys / "bus" / "rbd" / "devices")
    initrd.rbd_device("0", pool="rbd", name=f"base-{SNAP}", namespace="golden-base", snap=SNAP)
    files = tmp_path / "layer" / "cephboot" / "root"
    (files / "etc").mkdir(parents=True)
    (files / "etc" / "hostname").write_text("zephyr\n")
    (files / "etc" / "fstab").write_text("192.0.2.1:/hosts/zephyr /boot ceph name=zephyr 0 0\n")
    keyring = tmp_path / "layer" / "ceph.client.zephyr.keyring"
    keyring.write_bytes(KEYRING.read_bytes())
    keyring.chmod(0o600)
    ceph_conf = tmp_path / "layer" / "ceph.conf"
    ceph_conf.write_text("[global]\nmon_host = 192.0.2.1\n")
    initrd.conf(NAMESPACE="golden-base", IMAGE=f"base-{SNAP}", SNAP=SNAP, ROOT_MODE="stateless", OVERLAY_SIZE="50%",
                ROOT_FILES=str(files), KEYRING=str(keyring))
    return Stateless(initrd, files, keyring, ceph_conf, initrd.run, tmp_path / "param.conf")


def test_a_stateless_host_maps_its_golden_snapshot_read_only_and_asks_init_for_an_overlay_root(a_stateless_host: Stateless) -> None:
    host = a_stateless_host
    boot = host.boot()
    assert boot.rc == 0, boot.output
    lower, rw = host.run / "cephboot" / "lower", host.run / "cephboot" / "rw"
    assert boot.lines("rbd", "mount") == [
        " ".join(["rbd device map", f"rbd/golden-base/base-{SNAP}@{SNAP}", "--id zephyr --keyring", str(host.keyring),
                  "--client_mount_timeout 120 --read-only"]),
        f"mount -r -t ext4 /dev/rbd0 {lower}",
        f"mount -t tmpfs -o size=50%,mode=0755 cephboot-rw {rw}",
    ]
    assert host.params() == {"ROOT": "overlay", "ROOTFSTYPE": "overlay", "readonly": "n", "fastboot": "y",
                             "ROOTFLAGS": f"-o lowerdir={lower},upperdir={rw}/upper,workdir={rw}/work"}
    assert (rw / "work").is_dir()
    assert f"cephboot: stateless root: rbd/golden-base/base-{SNAP}@{SNAP} read-only on {lower} under a tmpfs of 50%" in boot.output


def test_a_stateless_hosts_own_files_go_into_its_overlay_the_keyring_owner_only(a_stateless_host: Stateless) -> None:
    host = a_stateless_host
    boot = host.boot()
    assert boot.rc == 0, boot.output
    assert (host.upper / "etc" / "hostname").read_text() == "zephyr\n"
    assert (host.upper / "etc" / "fstab").read_text() == (host.files / "etc" / "fstab").read_text()
    assert (host.upper / "etc" / "ceph" / "ceph.conf").read_text() == host.ceph_conf.read_text()
    keyring = host.upper / str(host.keyring).lstrip("/")
    assert keyring.read_bytes() == KEYRING.read_bytes()
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600


def test_a_stateless_host_maps_by_sysfs_naming_the_snapshot_read_only(a_stateless_host: Stateless) -> None:
    host = a_stateless_host
    host.initrd.conf(NAMESPACE="golden-base", IMAGE=f"base-{SNAP}", SNAP=SNAP, ROOT_MODE="stateless", OVERLAY_SIZE="2G",
                     ROOT_FILES=str(host.files), KEYRING=str(host.keyring), MAP_METHOD="sysfs")
    boot = host.boot()
    assert boot.rc == 0, boot.output
    written = (host.initrd.sys / "bus" / "rbd" / "add_single_major").read_text()
    assert written.startswith("192.0.2.1,192.0.2.2:6789 name=zephyr,secret=")
    assert written.endswith(f",_pool_ns=golden-base,mount_timeout=120,read_only rbd base-{SNAP} {SNAP}"), written
    assert "mount -t tmpfs -o size=2G,mode=0755 cephboot-rw " + str(host.run / "cephboot" / "rw") in boot.lines("mount")


def test_a_stateless_host_refuses_a_mapped_device_of_another_snapshot(a_stateless_host: Stateless) -> None:
    (a_stateless_host.initrd.sys / "bus" / "rbd" / "devices" / "0" / "current_snap").write_text("fedcba9876543210\n")
    boot = a_stateless_host.boot()
    assert boot.panicked
    assert f"cephboot: mapped rbd/golden-base/base-{SNAP}@{SNAP} but no matching device" in boot.output
    assert not a_stateless_host.param_conf.exists()


def test_a_stateless_root_that_does_not_mount_panics_and_leaves_root_alone(a_stateless_host: Stateless) -> None:
    a_stateless_host.initrd.plan("mount", {"rc": 32, "stderr": "mount: wrong fs type"})
    boot = a_stateless_host.boot()
    assert boot.panicked
    assert (f"cephboot: mounting rbd/golden-base/base-{SNAP}@{SNAP} (/dev/rbd0) read-only on "
            f"{a_stateless_host.run}/cephboot/lower failed: mount: wrong fs type") in boot.output
    assert not a_stateless_host.param_conf.exists(), "init must not be told to mount an overlay that has no lower layer"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"SNAP": ""}, "lacks a value for: CEPHBOOT_SNAP"),
    ({"ROOT_FILES": "", "OVERLAY_SIZE": ""}, "lacks a value for: CEPHBOOT_OVERLAY_SIZE CEPHBOOT_ROOT_FILES"),
    ({"ROOT_MODE": "diskless"}, "CEPHBOOT_ROOT_MODE='diskless' in "),
    ({"OVERLAY_SIZE": "lots"}, "CEPHBOOT_OVERLAY_SIZE='lots' in "),
    ({"LUKS_NAME": "root", "LUKS_KEYFILE": "/etc/cephboot/luks.key"}, "sets both CEPHBOOT_ROOT_MODE='stateless' and CEPHBOOT_LUKS_NAME"),
], ids=["no-snapshot", "no-overlay", "unknown-mode", "bad-size", "luks"])
def test_a_stateless_conf_that_is_incomplete_or_wrong_panics_before_the_network(
    a_stateless_host: Stateless, overrides: dict[str, str], message: str
) -> None:
    values = {"NAMESPACE": "golden-base", "IMAGE": f"base-{SNAP}", "SNAP": SNAP, "ROOT_MODE": "stateless", "OVERLAY_SIZE": "50%",
              "ROOT_FILES": str(a_stateless_host.files), "KEYRING": str(a_stateless_host.keyring)}
    a_stateless_host.initrd.conf(**{**values, **overrides})
    boot = a_stateless_host.boot()
    assert boot.panicked
    assert message in boot.output
    assert boot.lines("ip", "rbd", "mount") == []
