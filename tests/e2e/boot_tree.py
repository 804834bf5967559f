"""The CephFS boot tree: ceph-fuse mounts (the publisher's, read-write; the web server's, read-only), and nginx serving it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .procs import Service, StartedProcess, wait_until

if TYPE_CHECKING:
    from .ceph_cluster import CephClient, CephCluster
    from .netns import NetworkNamespace

HTTP_PORT = 8080
# The web server's group: sites served by NginxServer publish with `publish.group` set to it.
WEB_GROUP = "nogroup"


class CephFuseMount(Service):
    """``fs_path`` of the cluster's CephFS mounted at ``mountpoint`` as ``client``.

    ceph-fuse runs in the foreground inside the network namespace only, so the mount
    lands in the test process's own mount namespace. It has a pid file and an admin
    socket of its own: two clients of one name would otherwise fight over them.
    """

    def __init__(
        self, cluster: CephCluster, client: CephClient, fs_path: str, mountpoint: Path,
        read_only: bool = False,
    ) -> None:
        self.cluster = cluster
        self.client = client
        self.fs_path = fs_path
        self.mountpoint = mountpoint
        self.read_only = read_only
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
                *(["-o", "ro"] if self.read_only else []),
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


class WebServerView(CephFuseMount):
    """``fs_path`` mounted read-only as a web-server client whose caps only read it, in a
    folder nginx's unprivileged workers can reach (the suite's own folders are 0700)."""

    def __init__(
        self, cluster: CephCluster, fs_path: str, keyrings: Path, client_id: str = "cephboot-web"
    ) -> None:
        self.parent = Path(tempfile.mkdtemp(prefix="cephboot-web-"))
        self.parent.chmod(0o755)
        client = cluster.create_web_server_client(fs_path, keyrings / f"{client_id}.keyring", client_id)
        super().__init__(cluster, client, fs_path, self.parent / "tree", read_only=True)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.parent, ignore_errors=True)


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    status: int
    client: str  # the address the request came from


class NginxServer(Service):
    """Real nginx, with the server block cephboot generates (``tasks.nginx.nginx_conf``), serving
    ``root`` on ``port`` of the namespace's test address; it logs each request it answers.

    It runs as its own process (``daemon off``, stopped by PID); its workers run as
    ``nobody`` in the web server's group ``WEB_GROUP``, the ``publish.group`` of the sites
    that it serves, so it reads exactly what the publisher lets the web server read. The
    access log has one ``METHOD PATH STATUS CLIENT-ADDRESS`` line per request. With
    ``server_block`` it serves that file instead (a site's own `doit nginx` output).
    """

    def __init__(
        self, netns: NetworkNamespace, root: Path, workdir: Path, port: int = HTTP_PORT,
        server_block: Path | None = None,
    ) -> None:
        self.netns = netns
        self.root = root
        self.port = port
        self.server_block = server_block
        self.workdir = workdir
        self.access_log = workdir / "logs" / "access.log"
        self.site_conf = workdir / "cephboot.conf"
        self.process: StartedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.netns.address}:{self.port}/"

    @property
    def settings(self) -> dict[str, Any]:
        """The site settings the server block is generated from (as in a site's hosts/site.yaml)."""
        return {
            "pxe": {"http_base": self.url.rstrip("/")},
            "publish": {"target": str(self.root), "web_root": str(self.root)},
        }

    def start(self) -> None:
        from tasks.nginx import nginx_conf

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.server_block is None:
            self.site_conf.write_text(nginx_conf(self.settings, self.workdir))
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_main_conf(self.workdir, self.server_block or self.site_conf, WEB_GROUP))
        self.netns.run(["nginx", "-t", "-q", "-p", str(self.workdir), "-c", str(conf)])
        self.process = self.netns.start(
            "nginx",
            ["nginx", "-p", str(self.workdir), "-c", str(conf), "-g", "daemon off;"],
            self.workdir / "nginx.stdout",
        )
        wait_until(lambda: self.netns.listening(self.port), 30, "nginx", watch=[self.process])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=10)  # SIGTERM: nginx's fast shutdown, workers included
            self.process = None

    def requests(self) -> list[HttpRequest]:
        """Every request answered so far, oldest first."""
        # A request line's path holds no spaces: one line is exactly four fields.
        rows = [line.split(" ") for line in self.access_log.read_text().splitlines()]
        return [HttpRequest(method, path, int(status), client) for method, path, status, client in rows]

    def mark(self) -> int:
        """A position in the log; pass it to ``requests_since`` to see one boot's fetches."""
        return len(self.requests())

    def requests_since(self, mark: int) -> list[HttpRequest]:
        return self.requests()[mark:]


def nginx_main_conf(prefix: Path, site_conf: Path, group: str, http_extra: str = "") -> str:
    """An nginx.conf around cephboot's server block: everything under ``prefix``, workers as
    nobody:``group``; ``http_extra``: what a site's own http{} block may also say."""
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "logs" / "access.log").touch()
    temp = "".join(f"  {k}_temp_path {prefix}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (
        f"user nobody {group};\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "  log_format cephboot '$request_method $request_uri $status $remote_addr';\n"
        f"  access_log {prefix}/logs/access.log cephboot;\n"
        f"{temp}"
        f"{http_extra}"
        f"  include {site_conf};\n"
        "}\n"
    )
