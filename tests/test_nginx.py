"""The generated nginx config, served by a real nginx on loopback from a private prefix."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from builtsite import a_built_site, the_built_example  # noqa: F401  (fixtures)
from conftest import Site

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def a_served_tree(a_built_site: Site, tmp_path: Path) -> Iterator[tuple[Site, str]]:
    """The example site published to a folder outside the 0700 test folder, served by nginx as nobody:nogroup."""
    port = free_port()
    tree = Path(tempfile.mkdtemp(prefix="cephboot-tree-"))
    os.chmod(tree, 0o755)
    a_built_site.edit("site.yaml", "http://192.0.2.5/boot", f"http://127.0.0.1:{port}/boot")
    a_built_site.edit("site.yaml", "  target: build/publish", f"  target: {tree}\n  group: nogroup")
    a_built_site.doit("render", "overlay", "publish", "nginx")
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"user nobody nogroup;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n  access_log {prefix}/logs/access.log;\n"
        + "".join(f"  {k}_temp_path {prefix}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"  include {a_built_site.build / 'site/nginx.conf'};\n}}\n"
    )
    subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(conf)], check=True, capture_output=True)
    subprocess.run(["nginx", "-p", str(prefix), "-c", str(conf)], check=True)
    pid_file = prefix / "nginx.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    try:
        yield a_built_site, f"http://127.0.0.1:{port}/boot"
    finally:
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break
        shutil.rmtree(tree)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_the_routes_lead_each_machine_to_its_host_script(a_served_tree: tuple[Site, str]) -> None:
    site, base = a_served_tree
    status, body = get(f"{base}/boot.ipxe")
    assert status == 200 and body == (site.build / "site/boot.ipxe").read_bytes()
    status, route = get(f"{base}/ipxe/by-mac/52-54-00-b1-00-01.ipxe")
    assert status == 200 and f"chain {base}/hosts/zephyr/boot.ipxe".encode() in route
    status, route = get(f"{base}/ipxe/by-uuid/0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44.ipxe")
    assert status == 200 and f"chain {base}/hosts/notus/boot.ipxe".encode() in route
    status, script = get(f"{base}/hosts/notus/boot.ipxe")
    assert status == 200 and script == (site.build / "hosts/notus/boot.ipxe").read_bytes()


def test_the_web_servers_group_reads_a_layer_by_name_but_nobody_lists_it(a_served_tree: tuple[Site, str]) -> None:
    site, base = a_served_tree
    status, layer = get(f"{base}/hosts/zephyr/overlay.cpio")
    assert status == 200 and layer == (site.build / "hosts/zephyr/overlay.cpio").read_bytes()
    for folder in ("hosts/zephyr/", "hosts/", "kernels/", "ipxe/by-mac/", ""):
        assert get(f"{base}/{folder}")[0] == 403, folder


def test_temporary_files_of_a_publish_in_progress_are_never_served(a_served_tree: tuple[Site, str]) -> None:
    site, base = a_served_tree
    tree = Path(site.hosts.joinpath("site.yaml").read_text().split("target: ")[1].split()[0])
    (tree / "hosts/zephyr/.overlay.cpio.tmp.vm.1").write_bytes(b"partial")
    os.chmod(tree / "hosts/zephyr/.overlay.cpio.tmp.vm.1", 0o644)
    assert get(f"{base}/hosts/zephyr/.overlay.cpio.tmp.vm.1")[0] == 403
