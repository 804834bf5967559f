"""A network namespace of the suite's own, and running commands inside it."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .procs import StartedProcess

NETNS_DIR = Path("/run/netns")


class NetworkNamespace:
    """``cephboot-e2e-<random>``: lo, and a veth pair whose both ends stay inside.

    Commands enter only the network namespace (``nsenter --net``), never a mount
    namespace of their own as ``ip netns exec`` would give them, so that a ceph-fuse
    mount made inside is visible to the test process and the other way round.
    """

    def __init__(self, address: str = "192.0.2.1", prefix: int = 24) -> None:
        self.name = f"cephboot-e2e-{secrets.token_hex(4)}"
        self.address = address
        self.prefix = prefix
        self.created = False

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.created = True
        for args in (
            ["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"],
            ["link", "set", "lo", "up"],
            ["addr", "add", f"{self.address}/{self.prefix}", "dev", "veth0"],
            ["link", "set", "veth0", "up"],
            ["link", "set", "veth1", "up"],
        ):
            subprocess.run(["ip", "-n", self.name, *args], check=True)

    def delete(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "delete", self.name], check=True)
            self.created = False

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace (nsenter execs: same PID)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside; output captured as text; a failure names the command."""
        done = subprocess.run(
            self.argv(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}\n"
                f"stdout: {done.stdout.strip()}\nstderr: {done.stderr.strip()}"
            )
        return done

    def start(self, name: str, argv: Sequence[str], log: Path) -> StartedProcess:
        """Start a long-running process inside; the caller stops it by PID."""
        return StartedProcess(name, self.argv(argv), log)

    def listening(self, port: int) -> bool:
        """Whether something listens on TCP ``port`` on the test address."""
        out = self.run(["ss", "-Hltn", f"src {self.address}:{port}"], check=False)
        return bool(out.stdout.strip())
