"""Key rotation (issue 13) on the session's cluster: a running host keeps running, reboots with its new keys.

One LUKS host, `rot`, is provisioned from a busybox root whose init writes to its root once a
second and says so on the console (`ROTATION-WRITE n`). The site publishes into a boot tree of
its own, served by an nginx of its own; the guest PXE-boots through the iPXE chain (slirp).

The monitors' ticket lifetimes are cut short for the module (`auth_mon_ticket_ttl`,
`auth_service_ticket_ttl`), so that a running kernel client renews its tickets within a minute;
the tests wait for the renewal to have happened (conditions with deadlines, no fixed sleeps).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .boot_tree import WEB_GROUP, NginxServer, WebServerView
from .ceph_cluster import CephCluster
from .conftest import RBD_POOL
from .netns import NetworkNamespace
from .provision_site import GUEST_GATEWAY, ProvisionSite
from .qemu_vm import QemuMachine
from .root_image import build_root_tree

pytestmark = pytest.mark.e2e

HOST = "rot"
MAC = "52:54:00:e1:30:01"
ADDRESS = "198.51.100.61/24"
LUKS_NAME = "rot-root"
BOOT_TREE = "/rotation-tree"
HTTP_PORT = 8087
BOOT_TIMEOUT = 300
SPEC = f"{RBD_POOL}/{HOST}/root"
# Ticket lifetimes for the module (Ceph 16's defaults: 43200 s and 3600 s).
MON_TICKET_TTL = 60
SERVICE_TICKET_TTL = 30

# The root's init: say which root it runs on, then write to it once a second, for ever.
INIT = """#!/bin/sh
PATH=/bin
export PATH
read -r host </etc/hostname
root=$(awk '$2 == "/" { d = $1 } END { print d }' /proc/mounts)
echo "ROTATION-ROOT host=${host} root=${root}"
mount -o remount,rw / || echo "ROTATION-FAIL cannot remount / read-write"
mkdir -p /var
i=0
while :; do
	i=$((i + 1))
	if echo "${i}" >/var/rotation-write && sync; then
		echo "ROTATION-WRITE ${i}"
	else
		echo "ROTATION-WRITE-FAILED ${i}"
	fi
	sleep 1
done
"""


@dataclass
class RotationSite:
    site: ProvisionSite
    served: Path
    http: NginxServer


@pytest.fixture(scope="module")
def a_rotation_site(
    a_ceph_cluster: CephCluster, a_network_namespace: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RotationSite]:
    """Host `rot` (LUKS) provisioned by `doit provision:rot` and published by `doit`; short ticket lifetimes."""
    work = tmp_path_factory.mktemp("rotation")
    a_ceph_cluster.make_fs_dir(BOOT_TREE)
    served = a_ceph_cluster.admin_fs().mountpoint / BOOT_TREE.lstrip("/")
    empty = work / "no-rendered-files"
    empty.mkdir()
    tree = work / "tree"
    build_root_tree(tree, "template", empty)
    (tree / "sbin" / "init").write_text(INIT)
    (tree / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
    (tree / "usr" / "sbin" / "update-initramfs").write_text("#!/bin/sh\n")  # initramfs-tools' entry point
    site = ProvisionSite(
        a_ceph_cluster, a_network_namespace, work / "site", BOOT_TREE, f"http://{a_network_namespace.address}:{HTTP_PORT}",
        {"rbd": {"pool": RBD_POOL, "size": "64M", "features": ["layering"]}, "rootfs": {"source": str(tree)},
         "kernel_args": ["console=ttyS0,115200n8", "panic=10"], "map": {"deadline": 90}},
        publish={"target": str(served), "group": WEB_GROUP}, kernels={"nic_modules": ["virtio_net", "virtio_pci"]},
    )
    site.add_host(HOST, MAC, nics={"ceph": {"macs": [MAC], "address": ADDRESS, "gateway": GUEST_GATEWAY}},
                  luks={"name": LUKS_NAME, "keyfile": f"keys/{HOST}.luks"})
    site.doit(f"provision:{HOST}")
    site.doit()
    for name, value in (("auth_mon_ticket_ttl", MON_TICKET_TTL), ("auth_service_ticket_ttl", SERVICE_TICKET_TTL)):
        a_ceph_cluster.ceph("config", "set", "mon", name, str(value))
    try:
        with WebServerView(a_ceph_cluster, BOOT_TREE, work, "cephboot-web-rotation") as view, \
                NginxServer(a_network_namespace, view.mountpoint, work / "http", port=HTTP_PORT) as http:
            yield RotationSite(site, served, http)
    finally:
        for name in ("auth_mon_ticket_ttl", "auth_service_ticket_ttl"):
            a_ceph_cluster.ceph("config", "rm", "mon", name)
        for image in a_ceph_cluster.rbd("ls", f"{RBD_POOL}/{HOST}").stdout.split():
            a_ceph_cluster.rbd("rm", "--no-progress", f"{RBD_POOL}/{HOST}/{image}", check=False)


def _writes(guest: QemuMachine) -> list[int]:
    return [int(n) for n in re.findall(r"^ROTATION-WRITE (\d+)\r?$", guest.console(), re.MULTILINE)]


def _wait_writes_after(guest: QemuMachine, when: float, count: int, timeout: float) -> int:
    """Wait until ``count`` writes have completed after the monotonic time ``when``; the last one's number."""
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        for n in _writes(guest):
            seen.setdefault(n, now)
        after = sorted(n for n, t in seen.items() if t > when)
        if len(after) >= count:
            return after[-1]
        if now > deadline:
            tail = "\n".join(guest.console().splitlines()[-30:])
            raise AssertionError(f"only {len(after)} write(s) of {count} completed within {timeout:.0f} s after the mark:\n{tail}")
        time.sleep(0.5)


def _boot(qemu_boot: Callable[..., QemuMachine], served: Path) -> QemuMachine:
    guest = qemu_boot(served, [MAC])
    guest.wait_for(r"^ROTATION-(ROOT|FAIL)", BOOT_TIMEOUT)
    guest.wait_for(r"^ROTATION-WRITE 1\r?$", 60)
    return guest


def _sessions(cluster: CephCluster) -> list[str]:
    """Entity names of the clients that hold a session with the monitor."""
    out = json.loads(cluster.ceph("tell", "mon.*", "sessions", "--format", "json") or "[]")
    return sorted({str(s.get("entity_name") or s.get("name") or s) for s in out})


def test_measure_a_running_krbd_client_when_its_key_changes(
    a_rotation_site: RotationSite, a_ceph_cluster: CephCluster, qemu_boot: Callable[..., QemuMachine], tmp_path: Path,
) -> None:
    """The measurement behind the design (docs/security.md, Rotation): what the kernel client of a
    running host does when (1) another client entity appears for it, (2) its own key is replaced."""
    guest = _boot(qemu_boot, a_rotation_site.served)
    timeline: list[str] = []
    t0 = time.monotonic()

    def note(what: str) -> None:
        timeline.append(f"{time.monotonic() - t0:7.1f} s  {what}")
        print(timeline[-1], flush=True)

    note(f"booted; mon sessions: {_sessions(a_ceph_cluster)}")
    # (1) a new entity with a new key: the running client's own entity is untouched
    a_ceph_cluster.ceph("auth", "get-or-create", f"client.{HOST}.measure", "mon", "profile rbd")
    mark = time.monotonic()
    last = _wait_writes_after(guest, mark + MON_TICKET_TTL + SERVICE_TICKET_TTL, 3, 3 * MON_TICKET_TTL)
    note(f"new entity made; writes continue past one mon ticket lifetime + one service ticket lifetime (write {last})")
    # (2) the running client's own key replaced on the monitors (auth import keeps caps)
    entity = f"client.{HOST}"
    new_key = subprocess.run(["ceph-authtool", "--gen-print-key"], capture_output=True, text=True, check=True).stdout.strip()
    current = json.loads(a_ceph_cluster.ceph("auth", "get", entity, "--format", "json"))[0]
    keyring = tmp_path / "import.keyring"
    keyring.touch(mode=0o600)
    caps = "".join(f'\tcaps {k} = "{v}"\n' for k, v in sorted(current["caps"].items()))
    keyring.write_text(f"[{entity}]\n\tkey = {new_key}\n{caps}")
    a_ceph_cluster.ceph("auth", "import", "-i", str(keyring))
    changed = time.monotonic()
    note("key of the running entity replaced (ceph auth import)")
    deadline = changed + 4 * MON_TICKET_TTL + 2 * SERVICE_TICKET_TTL
    last_write, last_at = 0, changed
    auth_error_at = None
    while time.monotonic() < deadline:
        writes = _writes(guest)
        if writes and writes[-1] != last_write:
            last_write, last_at = writes[-1], time.monotonic()
        if auth_error_at is None and re.search(r"libceph: .*(auth|-13|permission)", guest.console(), re.IGNORECASE):
            auth_error_at = time.monotonic()
            note("the guest's kernel logs an authentication error")
        if auth_error_at is not None and time.monotonic() - last_at > 2 * SERVICE_TICKET_TTL:
            break
        time.sleep(0.5)
    note(f"last write {last_write} completed {last_at - changed:.1f} s after the key change")
    print("\n".join(guest.console().splitlines()[-40:]))
    print("TIMELINE\n" + "\n".join(timeline))
    assert auth_error_at is not None, "no authentication error in the guest's kernel log"
