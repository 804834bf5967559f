"""A QEMU (TCG) machine that network-boots with iPXE inside the test namespace."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from .netns import NetworkNamespace
from .procs import Service, StartedProcess

# The iPXE ROM for virtio-net from ipxe-qemu. Its PCI header names the virtio 1.0 device
# (1af4:1041); QEMU patches the IDs of its default ROMs only, so a ROM given by path runs
# only on a modern-only NIC (disable-legacy=on), which has that ID.
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")

# UEFI: Debian's OVMF (4M flash), with a private copy of the variable store per machine.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot enforced: OVMF built with SMM (its variable store writable only from SMM, so
# the guest cannot unenroll keys), and a variable store with Microsoft's keys enrolled (the
# KEK and db that sign shim) and Secure Boot on.
OVMF_SECBOOT_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
FIRMWARES = ("bios", "uefi", "secureboot")

_TERMINAL_NOISE = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[c()][0-9A-Za-z]?|\x08 \x08|\r")


class QemuMachine(Service):
    """One guest: its NICs' MACs (the first boots with iPXE), SMBIOS UUID, serial log.

    ``firmware`` is SeaBIOS (``bios``, -machine pc), OVMF (``uefi``, -machine q35) or OVMF
    with Secure Boot enforced (``secureboot``: -machine q35,smm=on, Microsoft's keys).
    With ``nic_rom`` the first NIC's option ROM is iPXE; without it the firmware's own
    PXE boots it (OVMF's virtio-net driver). Each NIC is on its tap (one per MAC), and
    DHCP/TFTP come from whatever serves that network (tests/e2e/dnsmasq.py).

    The serial console is the guest's only output; ``wait_for`` reads it as it grows.
    ``stop`` kills QEMU by PID.
    """

    def __init__(
        self,
        netns: NetworkNamespace,
        workdir: Path,
        macs: Sequence[str],
        uuid: str | None,
        taps: Sequence[str],
        memory_mib: int = 1024,
        cpu: str | None = "qemu64,+rdrand",
        firmware: str = "bios",
        nic_rom: bool = True,
    ) -> None:
        if not macs:
            raise ValueError("a machine needs at least one NIC")
        if firmware not in FIRMWARES:
            raise ValueError(f"firmware is one of {FIRMWARES}, not {firmware!r}")
        if len(taps) != len(macs):
            raise ValueError("one tap per NIC")
        self.firmware = firmware
        self.nic_rom = nic_rom
        self.taps = list(taps)
        self.netns = netns
        self.workdir = workdir
        self.macs = list(macs)
        self.uuid = uuid
        self.memory_mib = memory_mib
        self.cpu = cpu
        self.serial_log = workdir / "serial.log"
        self.process: StartedProcess | None = None
        self.started_at = 0.0

    def argv(self) -> list[str]:
        machine = {"bios": "pc", "uefi": "q35", "secureboot": "q35,smm=on"}[self.firmware]
        argv = [
            "qemu-system-x86_64",
            "-machine", machine, "-accel", "tcg", "-m", str(self.memory_mib),
            # -nographic also makes SeaBIOS copy the text console, so iPXE's output,
            # to the serial port (OVMF's console is the serial port already); that port
            # goes to the log file.
            "-nographic", "-serial", f"file:{self.serial_log}", "-monitor", "none",
            "-no-reboot", "-boot", "n",
        ]
        if self.firmware != "bios":
            code = OVMF_SECBOOT_CODE if self.firmware == "secureboot" else OVMF_CODE
            argv += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={self.workdir / 'OVMF_VARS.fd'}",
            ]
        if self.firmware == "secureboot":
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        if self.cpu:
            # RDRAND, as real machines have it: the guest kernel's random pool is
            # ready at once. Without it, it takes 5-20 s under TCG, and userspace
            # that asks getrandom() for keys (the rbd CLI) waits for it: the "gap"
            # between the NIC coming up and the monitor session. (-cpu max has
            # RDRAND too, but its AVX2 paths make the whole boot slower here.)
            argv += ["-cpu", self.cpu]
        if self.uuid:
            argv += ["-smbios", f"type=1,uuid={self.uuid}"]
        for index, mac in enumerate(self.macs):
            netdev = f"tap,id=n{index},ifname={self.taps[index]},script=no,downscript=no"
            nic = f"virtio-net-pci,disable-legacy=on,netdev=n{index},mac={mac}"
            if index == 0:
                # without a ROM, OVMF's own virtio-net driver and PXE boot the NIC
                nic += f",romfile={IPXE_ROM if self.nic_rom else ''},bootindex=0"
            else:
                nic += ",romfile="
            argv += ["-netdev", netdev, "-device", nic]
        return argv

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serial_log.write_bytes(b"")
        if self.firmware != "bios":
            shutil.copyfile(OVMF_MS_VARS if self.firmware == "secureboot" else OVMF_VARS, self.workdir / "OVMF_VARS.fd")
        self.started_at = time.monotonic()
        self.process = self.netns.start("qemu", self.argv(), self.workdir / "qemu.stdout")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)

    def elapsed(self) -> float:
        """Seconds since QEMU started."""
        return time.monotonic() - self.started_at

    def console(self) -> str:
        """The serial output so far, without terminal escapes and carriage returns."""
        raw = self.serial_log.read_bytes() if self.serial_log.exists() else b""
        return _TERMINAL_NOISE.sub(b"", raw).decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the console matches the regex ``pattern``; fail with its tail.

        Fails at once if QEMU exits first. iPXE wraps its lines at 80 columns: match
        on short markers.
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.console())
            if found:
                return found
            exited = self.process is None or not self.process.running()
            if exited or time.monotonic() > deadline:
                why = "QEMU exited" if exited else f"timed out after {timeout:.0f} s"
                tail = "\n".join(self.console().splitlines()[-40:])
                raise AssertionError(f"{why} before the console showed {pattern!r}:\n{tail}")
            time.sleep(0.25)

    def timed(self, milestones: Sequence[tuple[str, str]], timeout: float) -> list[tuple[str, float]]:
        """Wait for each (name, regex) in turn; seconds since power-on when each showed.

        The boot path's timings (power-on -> iPXE -> kernel -> root); ``wait_for`` polls
        the console, so each is exact to its 0.25 s poll.
        """
        out = []
        for name, pattern in milestones:
            self.wait_for(pattern, max(timeout - self.elapsed(), 1))
            out.append((name, round(self.elapsed(), 1)))
        return out

    def wait_exit(self, timeout: float) -> int:
        """Wait for the guest to power off (QEMU exits); its exit status."""
        assert self.process is not None
        status = self.process.wait(timeout)
        if status is None:
            tail = "\n".join(self.console().splitlines()[-40:])
            raise AssertionError(f"the guest did not power off within {timeout:.0f} s:\n{tail}")
        return status
