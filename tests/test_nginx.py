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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from builtsite import a_built_site, the_built_example  # noqa: F401  (fixtures)
from conftest import Site
from e2e.boot_tree import nginx_main_conf

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def nginx_running(site: Site, prefix: Path, http_extra: str = "") -> Iterator[None]:
    """nginx with the site's generated server block; workers as nobody:nogroup (the site's publish.group)."""
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_main_conf(prefix, site.build / "site/nginx.conf", "nogroup", http_extra))
    subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(conf)], check=True, capture_output=True)
    subprocess.run(["nginx", "-p", str(prefix), "-c", str(conf)], check=True)
    pid_file = prefix / "nginx.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    try:
        yield
    finally:
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break


@contextmanager
def a_published_tree(site: Site, base: str) -> Iterator[Path]:
    """The site published to a folder outside the 0700 test folder (nginx's workers reach it), served at ``base``."""
    tree = Path(tempfile.mkdtemp(prefix="cephboot-tree-"))
    os.chmod(tree, 0o755)
    site.edit("site.yaml", "http://192.0.2.5/boot", base)
    site.edit("site.yaml", "  target: build/publish", f"  target: {tree}\n  group: nogroup")
    try:
        site.doit("render", "overlay", "publish", "nginx")
        yield tree
    finally:
        shutil.rmtree(tree)


@pytest.fixture
def a_served_tree(a_built_site: Site, tmp_path: Path) -> Iterator[tuple[Site, str]]:
    """The example site published and served by nginx as nobody:nogroup."""
    base = f"http://127.0.0.1:{free_port()}/boot"
    with a_published_tree(a_built_site, base), nginx_running(a_built_site, tmp_path / "nginx"):
        yield a_built_site, base


def get(url: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_the_routes_lead_each_machine_to_its_host_script(a_served_tree: tuple[Site, str]) -> None:
    site, base = a_served_tree
    status, body, _ = get(f"{base}/boot.ipxe")
    assert status == 200 and body == (site.build / "site/boot.ipxe").read_bytes()
    status, route, _ = get(f"{base}/ipxe/by-mac/52-54-00-b1-00-01.ipxe")
    assert status == 200 and f"chain {base}/hosts/zephyr/boot.ipxe".encode() in route
    status, route, _ = get(f"{base}/ipxe/by-uuid/0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44.ipxe")
    assert status == 200 and f"chain {base}/hosts/notus/boot.ipxe".encode() in route
    status, script, _ = get(f"{base}/hosts/notus/boot.ipxe")
    assert status == 200 and script == (site.build / "hosts/notus/boot.ipxe").read_bytes()


def test_the_web_servers_group_reads_a_layer_by_name_but_nobody_lists_it(a_served_tree: tuple[Site, str]) -> None:
    site, base = a_served_tree
    status, layer, _ = get(f"{base}/hosts/zephyr/overlay.cpio")
    assert status == 200 and layer == (site.build / "hosts/zephyr/overlay.cpio").read_bytes()
    for folder in ("hosts/zephyr/", "hosts/", "kernels/", "ipxe/by-mac/", ""):
        assert get(f"{base}/{folder}")[0] == 403, folder


def _tree(site: Site) -> Path:
    return Path(site.hosts.joinpath("site.yaml").read_text().split("target: ")[1].split()[0])


def test_temporary_files_of_a_publish_in_progress_are_never_served(a_served_tree: tuple[Site, str]) -> None:
    site, base = a_served_tree
    tree = _tree(site)
    (tree / "hosts/zephyr/.overlay.cpio.tmp.vm.1").write_bytes(b"partial")
    os.chmod(tree / "hosts/zephyr/.overlay.cpio.tmp.vm.1", 0o644)
    assert get(f"{base}/hosts/zephyr/.overlay.cpio.tmp.vm.1")[0] == 403


def test_a_link_planted_in_the_tree_is_never_followed(a_served_tree: tuple[Site, str]) -> None:
    """A host (or anyone who could write a folder of the tree) plants links to files
    outside it and to another host's folder: nginx serves neither, it serves the real file."""
    site, base = a_served_tree
    folder = _tree(site) / "hosts/zephyr"
    (folder / "leak").symlink_to("/etc/passwd")
    (folder / "neighbour").symlink_to("../notus")
    (folder / "layer-link").symlink_to("overlay.cpio")
    for path in ("hosts/zephyr/leak", "hosts/zephyr/neighbour/boot.ipxe", "hosts/zephyr/layer-link"):
        status, body, _ = get(f"{base}/{path}")
        assert status in (403, 404), (path, status)
        assert b"root:" not in body and b"#!ipxe" not in body
    assert get(f"{base}/hosts/zephyr/overlay.cpio")[0] == 200


def test_no_version_banner_and_nothing_but_get(a_served_tree: tuple[Site, str]) -> None:
    _, base = a_served_tree
    version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.split("/")[-1].split()[0]
    status, body, headers = get(f"{base}/no-such-file")
    assert status == 404 and headers["Server"] == "nginx"
    assert version.encode() not in body
    assert get(f"{base}/boot.ipxe", method="HEAD")[0] == 200
    for method in ("POST", "PUT", "DELETE"):
        assert get(f"{base}/boot.ipxe", method=method)[0] in (403, 405), method


def _bind_to_address(site: Site, host: str) -> None:
    """``host`` in secrets.mode: address (its Ceph NIC's static address is in dhcp.network)."""
    with open(site.hosts / "nodes" / f"{host}.yaml", "a") as f:
        f.write("secrets:\n  mode: address\n")


def test_an_address_bound_hosts_keys_are_refused_to_every_other_address(a_built_site: Site, tmp_path: Path) -> None:
    """zephyr in address mode (reserved 192.0.2.21): a client at 127.0.0.1 gets 403 for its layer and
    every file of previous/, and no key byte; its boot.ipxe (no key) and other hosts' files stay served.
    Its own address is served on the real boot path: tests/e2e/test_address_bound.py."""
    site = a_built_site
    _bind_to_address(site, "zephyr")
    base = f"http://127.0.0.1:{free_port()}/boot"
    with a_published_tree(site, base) as tree:
        # a second generation: the first stays published as previous/
        site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", "profiles: [rack-a]\nkernel_args: [quiet]")
        run = site.doit("render", "overlay", "publish", "nginx")
        assert ("cephboot: warning: secrets.mode: address: the cephx keys (and LUKS keys) of 1 host(s) are served in the clear "
                "to their reserved addresses only") in run.stderr and run.stderr.rstrip().endswith(": zephyr"), run.stderr
        conf = (site.build / "site/nginx.conf").read_text()
        assert "geo $cephboot_client_host {\n    default \"\";\n    192.0.2.21 zephyr;\n}" in conf
        assert "map $cephboot_host $cephboot_bound {\n    default 0;\n    zephyr 1;\n}" in conf
        folder = tree / "hosts/zephyr"
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        assert files == ["boot.ipxe", "overlay.cpio", "previous/boot.ipxe", "previous/overlay.cpio"], files
        key = (site.build / "hosts/zephyr/rootfs/etc/ceph/ceph.client.zephyr.keyring").read_bytes().split(b"key = ")[1].strip()
        with nginx_running(site, tmp_path / "nginx"):
            for rel in ("overlay.cpio", "previous/overlay.cpio", "previous/boot.ipxe", "initrd.img", "", "previous/",
                        "%6Fverlay.cpio", "x/../overlay.cpio", "/overlay.cpio"):
                status, body, _ = get(f"{base}/hosts/zephyr/{rel}")
                assert status == 403 and key not in body, (rel, status)
            for method in ("HEAD", "POST"):
                assert get(f"{base}/hosts/zephyr/overlay.cpio", method=method)[0] == 403, method
            status, body, _ = get(f"{base}/hosts/zephyr/boot.ipxe")
            assert status == 200 and body == (folder / "boot.ipxe").read_bytes() and key not in body
            assert b"echo cephboot: address refused: the keys of host zephyr are served only to its reserved address 192.0.2.21 " in body
            assert get(f"{base}/hosts/notus/overlay.cpio")[0] == 200  # a machine-mode host: sealed, served to anyone
            assert get(f"{base}/hosts/zephyr/.overlay.cpio.tmp.x")[0] == 403
        # a site whose own http{} keeps slashes as sent: doubled ones reach the same files, and the same refusal
        with nginx_running(site, tmp_path / "nginx-unmerged", "  merge_slashes off;\n"):
            for path in ("/hosts/zephyr/overlay.cpio", "//hosts/zephyr/overlay.cpio", "/hosts//zephyr/overlay.cpio",
                         "/hosts/zephyr//overlay.cpio", "//hosts//zephyr//previous//overlay.cpio", "/hosts/zephyr/previous//boot.ipxe"):
                status, body, _ = get(base + path)
                assert status == 403 and key not in body, (path, status)
            assert get(f"{base}//hosts//zephyr/boot.ipxe")[0] == 200  # no key in it: served whichever way it is asked
            assert get(f"{base}//hosts//notus//overlay.cpio")[0] == 200  # the slashes reach the file: the refusal above is the rule's


def test_links_are_never_followed_beside_an_address_bound_host(a_built_site: Site, tmp_path: Path) -> None:
    """With zephyr bound, every hosts/<h>/ request passes the bound hosts' location: `disable_symlinks on`
    still holds there (inherited), for a host that is not bound (notus) and for zephyr's public boot.ipxe."""
    site = a_built_site
    _bind_to_address(site, "zephyr")
    base = f"http://127.0.0.1:{free_port()}/boot"
    with a_published_tree(site, base) as tree:
        (tree / "hosts/notus/leak").symlink_to("/etc/passwd")
        (tree / "hosts/notus/neighbour").symlink_to("../zephyr")
        (tree / "hosts/zephyr/boot.ipxe").rename(tree / "hosts/zephyr/boot.ipxe.real")
        (tree / "hosts/zephyr/boot.ipxe").symlink_to("/etc/passwd")
        with nginx_running(site, tmp_path / "nginx"):
            for rel in ("notus/leak", "notus/neighbour/overlay.cpio", "zephyr/boot.ipxe"):
                status, body, _ = get(f"{base}/hosts/{rel}")
                assert status in (403, 404) and b"root:" not in body and b"070701" not in body, (rel, status)
            assert get(f"{base}/hosts/notus/initrd.img", method="HEAD")[0] == 200
