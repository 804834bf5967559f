"""The boot network a site runs: a bridge in the test namespace, QEMU taps on it, and real
dnsmasq with the config `doit dnsmasq` generated (DHCP, and TFTP of the tree: the first stages in its tftp/)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .e2e_site import GUEST_GATEWAY
from .netns import NetworkNamespace
from .boot_tree import WEB_GROUP
from .procs import Service, StartedProcess, wait_until

BRIDGE = "cbbr0"
# The bridge's address is the guests' gateway, so every site's static Ceph addresses and
# gateway (198.51.100.x via 198.51.100.2) hold on it. The namespace delivers the guests'
# packets to the test address (192.0.2.1) itself.
BRIDGE_ADDRESS = GUEST_GATEWAY


class BootNetwork(Service):
    """``cbbr0``, the guests' only network; ``tap()`` makes a tap for one QEMU NIC.

    It starts with no DHCP server: ``use(conf)`` makes a ``doit dnsmasq`` config its standing
    dnsmasq (``cephboot``, the scenario site's), ``replaced`` puts others in its place for a while.
    Every dnsmasq runs in the foreground inside the namespace only (``--interface`` and
    ``--bind-interfaces``: several can share the bridge), logs to its own file, and is
    stopped by PID. ``log`` is cephboot's instance's log across restarts.
    """

    def __init__(self, netns: NetworkNamespace, workdir: Path) -> None:
        self.netns = netns
        self.conf: Path | None = None
        self.workdir = workdir
        self.log = workdir / "cephboot-dnsmasq.log"
        self.processes: dict[str, StartedProcess] = {}
        self.taps: list[str] = []

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for args in (
            ["link", "add", BRIDGE, "type", "bridge"],
            ["addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE],
            ["link", "set", BRIDGE, "up"],
        ):
            self.netns.run(["ip", *args])

    def use(self, conf: Path | None) -> None:
        """``conf`` becomes the standing dnsmasq, ``cephboot`` (None: no standing DHCP server)."""
        self.halt("cephboot")
        self.conf = conf
        if conf is not None:
            self.serve("cephboot", conf)

    def log_of(self, name: str) -> Path:
        """The log of the dnsmasq ``serve`` started as ``name``."""
        return self.workdir / f"{name}-dnsmasq.log"

    def serve(self, name: str, conf: Path) -> StartedProcess:
        """Start one dnsmasq named ``name`` with ``conf``; returns once it listens."""
        return self.serve_with(name, [
            "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}",
            f"--interface={BRIDGE}", "--bind-interfaces",
            # the test's own files, not the system's (opened before dnsmasq drops root)
            f"--pid-file={self.workdir / f'{name}.pid'}",
            f"--dhcp-leasefile={self.workdir / f'{name}.leases'}",
            # as the web server's user and group: TFTP then serves the host layers (0640,
            # group publish.group) to Secure Boot hosts' GRUB; as root dnsmasq would serve
            # only world-readable files
            "--user=nobody", f"--group={WEB_GROUP}", "--log-facility=-",
        ], self.log_of(name))

    def serve_with(self, name: str, argv: list[str], log: Path) -> StartedProcess:
        """Start the DHCP server ``argv`` (in the foreground, on the bridge) as ``name``;
        returns once it listens on port 67. ``halt(name)`` stops it."""
        process = self.netns.start(f"dhcp-{name}", argv, log)
        self.processes[name] = process
        wait_until(lambda: self._listening(process.pid), 30, f"DHCP server {name} on the bridge",
                   watch=[process])
        return process

    def _listening(self, pid: int) -> bool:
        out = self.netns.run(["ss", "-Hlunp", "sport = :67"], check=False).stdout
        return f"pid={pid}," in out

    def halt(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            process.stop(grace=5)

    @contextmanager
    def replaced(self, servers: dict[str, Path]) -> Iterator[None]:
        """The standing dnsmasq (if any) replaced by ``servers`` (name -> conf; ``cephboot``
        logs to ``log``) for a while, then back as it was."""
        self.halt("cephboot")
        try:
            for name, conf in servers.items():
                self.serve(name, conf)
            yield
        finally:
            for name in servers:
                self.halt(name)
            if self.conf is not None:
                self.serve("cephboot", self.conf)

    @contextmanager
    def carrier(self) -> Iterator[None]:
        """A port with carrier on the bridge for a while (a veth pair, both ends up, no address):
        a bridge is running only while a port of it has carrier, a guest's tap only once QEMU
        has opened it, and Kea listens only on a running interface (dnsmasq and dhcpd on any)."""
        port, peer = f"{BRIDGE}-up", f"{BRIDGE}-peer"
        self.netns.run(["ip", "link", "add", port, "type", "veth", "peer", "name", peer])
        try:
            self.netns.run(["ip", "link", "set", port, "master", BRIDGE, "up"])
            self.netns.run(["ip", "link", "set", peer, "up"])
            yield
        finally:
            self.netns.run(["ip", "link", "del", port], check=False)

    def stop(self) -> None:
        for name in list(self.processes):
            self.halt(name)
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
        """A position in cephboot's dnsmasq's log, for ``lines_since``."""
        return len(self.lines_since(0))

    def lines_since(self, mark: int) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.splitlines()[mark:]

    def acks(self, name: str, mac: str) -> list[str]:
        """The addresses the dnsmasq ``name`` acknowledged to ``mac``, in order."""
        log = self.log_of(name)
        text = log.read_text(errors="replace") if log.exists() else ""
        return re.findall(rf"DHCPACK\(\S+\) (\S+) {re.escape(mac)}", text)

    def tftp_sent(self, mark: int) -> list[str]:
        """Base names of the files cephboot's dnsmasq sent by TFTP since ``mark`` to the machines it
        gave an address since then (when it gave any): a transfer an earlier machine abandoned
        (GRUB and OVMF open a file, read its size and drop it) is logged when it times out, later."""
        lines = self.lines_since(mark)
        acked = {m.group(1) for line in lines if (m := re.search(r"DHCPACK\(\S+\) (\S+) ", line))}
        sent = (re.search(r"dnsmasq-tftp\[\d+\]: sent (\S+) to (\S+)", line) for line in lines)
        return [Path(m.group(1)).name for m in sent if m and (not acked or m.group(2) in acked)]
