"""The CephFS boot tree: a ceph-fuse mount the pipeline publishes into, and its HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .procs import Service, StartedProcess, wait_until

if TYPE_CHECKING:
    from .ceph_cluster import CephClient, CephCluster
    from .netns import NetworkNamespace

HTTP_PORT = 8080


class CephFuseMount(Service):
    """``fs_path`` of the cluster's CephFS mounted at ``mountpoint`` as ``client``.

    ceph-fuse runs in the foreground inside the network namespace only, so the mount
    lands in the test process's own mount namespace. It has a pid file and an admin
    socket of its own: two clients of one name would otherwise fight over them.
    """

    def __init__(
        self, cluster: CephCluster, client: CephClient, fs_path: str, mountpoint: Path
    ) -> None:
        self.cluster = cluster
        self.client = client
        self.fs_path = fs_path
        self.mountpoint = mountpoint
        self.process: StartedProcess | None = None

    def start(self) -> None:
        """Mount; returns once the mountpoint is a mount."""
        from .ceph_cluster import FS_NAME

        self.mountpoint.mkdir(parents=True, exist_ok=True)
        tag = f"fuse-{self.client.id}-{self.mountpoint.name}"
        run = self.cluster.run_dir
        self.process = self.cluster.netns.start(
            tag,
            [
                "ceph-fuse", "-f",
                "--conf", str(self.cluster.conf),
                "--id", self.client.id,
                "--keyring", str(self.client.keyring),
                f"--client_fs={FS_NAME}",
                "-r", self.fs_path,
                "--pid-file", str(run / f"{tag}.pid"),
                "--admin-socket", str(run / f"{tag}.asok"),
                str(self.mountpoint),
            ],
            self.cluster.base / "log" / f"{tag}.stdout",
        )
        wait_until(lambda: os.path.ismount(self.mountpoint), 60,
                   f"ceph-fuse to mount {self.fs_path} at {self.mountpoint}",
                   watch=[self.process])

    def stop(self) -> None:
        """Unmount and see ceph-fuse exit."""
        if self.process is None:
            return
        if os.path.ismount(self.mountpoint):
            subprocess.run(["umount", str(self.mountpoint)], check=False, capture_output=True)
        if self.process.wait(15) is None:
            self.process.stop(grace=10)
        if os.path.ismount(self.mountpoint):
            # ceph-fuse is gone; a lazy unmount clears the dead FUSE connection.
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        self.process = None


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    status: int


class StaticHttpServer(Service):
    """Serves ``root`` on the namespace's test address; logs each request it answers.

    The seam for the publish stage's generated nginx config: anything with ``url``,
    ``start()``, ``stop()`` and ``requests()`` in this log format can take its place.
    """

    def __init__(
        self, netns: NetworkNamespace, root: Path, workdir: Path, port: int = HTTP_PORT
    ) -> None:
        self.netns = netns
        self.root = root
        self.port = port
        self.access_log = workdir / "http-access.log"
        self.workdir = workdir
        self.process: StartedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.netns.address}:{self.port}/"

    def start(self) -> None:
        script = Path(__file__).with_name("static_http.py")
        self.access_log.touch()
        self.process = self.netns.start(
            "http",
            [sys.executable, str(script), self.netns.address, str(self.port),
             str(self.root), str(self.access_log)],
            self.workdir / "http.stdout",
        )
        wait_until(lambda: self.netns.listening(self.port), 30, "the HTTP server",
                   watch=[self.process])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=5)
            self.process = None

    def requests(self) -> list[HttpRequest]:
        """Every request answered so far, oldest first."""
        # A request line's path holds no spaces: one line is exactly three fields.
        rows = [line.split(" ") for line in self.access_log.read_text().splitlines()]
        return [HttpRequest(method, path, int(status)) for method, path, status in rows]

    def mark(self) -> int:
        """A position in the log; pass it to ``requests_since`` to see one boot's fetches."""
        return len(self.requests())

    def requests_since(self, mark: int) -> list[HttpRequest]:
        return self.requests()[mark:]
