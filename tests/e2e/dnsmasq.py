"""The boot network a site runs: a bridge in the test namespace, QEMU taps on it, and real
dnsmasq with the config `doit dnsmasq` generated (DHCP, and TFTP of the tree's tftp/)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from .e2e_site import GUEST_GATEWAY
from .netns import NetworkNamespace
from .procs import Service, StartedProcess, wait_until

BRIDGE = "cbbr0"
# The bridge's address is the guests' gateway, the address slirp's host has, so the e2e
# site's static Ceph addresses and gateway (198.51.100.x via 198.51.100.2) hold on both.
# The namespace delivers the guests' packets to the test address (192.0.2.1) itself.
BRIDGE_ADDRESS = GUEST_GATEWAY


class BootNetwork(Service):
    """``cbbr0`` with dnsmasq on it; ``tap()`` makes a tap on the bridge for one QEMU NIC.

    dnsmasq runs in the foreground inside the namespace only (``--interface`` and
    ``--bind-interfaces``), logs to ``log``, and is stopped by PID.
    """

    def __init__(self, netns: NetworkNamespace, conf: Path, workdir: Path) -> None:
        self.netns = netns
        self.conf = conf
        self.workdir = workdir
        self.log = workdir / "dnsmasq.log"
        self.process: StartedProcess | None = None
        self.taps: list[str] = []

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for args in (
            ["link", "add", BRIDGE, "type", "bridge"],
            ["addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE],
            ["link", "set", BRIDGE, "up"],
        ):
            self.netns.run(["ip", *args])
        self.process = self.netns.start("dnsmasq", [
            "dnsmasq", "--keep-in-foreground", f"--conf-file={self.conf}",
            f"--interface={BRIDGE}", "--bind-interfaces",
            # the test's own files, not the system's; root reads the FUSE-mounted tree
            # under pytest's 0700 folders
            f"--pid-file={self.workdir / 'dnsmasq.pid'}",
            f"--dhcp-leasefile={self.workdir / 'leases'}",
            "--user=root", "--log-facility=-",
        ], self.log)
        wait_until(self._listening, 30, "dnsmasq on the bridge", watch=[self.process])

    def _listening(self) -> bool:
        out = self.netns.run(["ss", "-Hlun", "sport = :67"], check=False).stdout
        return bool(out.strip())

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)
            self.process = None
        for tap in self.taps:
            self.netns.run(["ip", "link", "del", tap], check=False)
        self.taps = []
        self.netns.run(["ip", "link", "del", BRIDGE], check=False)

    def tap(self) -> str:
        """A new tap on the bridge, up, for one QEMU NIC (deleted when the network stops)."""
        name = f"cbt{secrets.token_hex(3)}"
        self.netns.run(["ip", "tuntap", "add", "dev", name, "mode", "tap"])
        self.taps.append(name)
        self.netns.run(["ip", "link", "set", name, "master", BRIDGE, "up"])
        return name

    def release(self, tap: str) -> None:
        if tap in self.taps:
            self.taps.remove(tap)
            self.netns.run(["ip", "link", "del", tap], check=False)

    def mark(self) -> int:
        """A position in dnsmasq's log, for ``lines_since``."""
        return len(self.lines_since(0))

    def lines_since(self, mark: int) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.splitlines()[mark:]

    def tftp_sent(self, mark: int) -> list[str]:
        """Base names of the files dnsmasq's TFTP server sent since ``mark``."""
        sent = (re.search(r"dnsmasq-tftp\[\d+\]: sent (\S+) to ", line) for line in self.lines_since(mark))
        return [Path(m.group(1)).name for m in sent if m]
