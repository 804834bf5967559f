"""Issue 4's scenarios: machines PXE-boot from the test cluster with what `doit` built.

One site (`the_e2e_site`, tests/e2e/scenario_site.py, shared with test_uefi.py) holds
every scenario's host; one `doit` run builds the base initrd once and publishes them all; then each test boots its machine and asserts on the serial console
and on the HTTP server's log. The last test edits the site and runs `doit` again, so it
stays last in this file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.run import steps, tasks_ran  # one parser of doit's output for tests and bench

from .boot_tree import CephFuseMount, NginxServer
from .ceph_cluster import CephClient, CephCluster
from .conftest import RBD_POOL
from .e2e_site import E2ESite
from .qemu_vm import QemuMachine
from .scenario_site import (BY_UUID_UUID, FALLBACK_NEW, LUKS_NAME, MULTI_MACS, UNKNOWN_MAC,
                            UNLISTED_MAC, WRONG_KEY_DEADLINE, NetworkBoot)

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 300
# The wrong-key host panics after its map deadline; initramfs-tools then waits panic=10 s.
PANIC_DELAY = 10

# The line the boot script prints once the Ceph NIC has its address, right before it
# maps the image. (Its first line shares a console line with initramfs-tools' "Begin:".)
NIC_READY = r"^cephboot: Ceph NIC \S+: 198\.51\.100\.\d+/24 via 198\.51\.100\.2$"


def hexhyp(mac: str) -> str:
    return mac.replace(":", "-")


def ok_line(host: str, root: str = "/dev/rbd0") -> str:
    return rf"^CEPHBOOT-E2E-OK host={re.escape(host)} root={re.escape(root)}$"


@pytest.fixture
def boot(network_boot: Callable[..., NetworkBoot]) -> Callable[..., tuple[QemuMachine, int]]:
    """``boot(macs, uuid)``: a SeaBIOS guest with iPXE as its NIC's ROM on the boot network
    (dnsmasq gives iPXE an address and ``boot.ipxe`` over HTTP); and the HTTP log mark."""

    def start(macs: list[str], machine_uuid: str | None = None) -> tuple[QemuMachine, int]:
        booted = network_boot(macs, machine_uuid)
        return booted.guest, booted.http_mark

    return start


@dataclass
class Booted:
    """A guest that booted to its marker and powered off: its console, its HTTP fetches."""

    console: str
    requests: list[tuple[str, int]]
    root_seconds: float  # from QEMU's start (power-on) until the booted system's init printed its OK line


@pytest.fixture
def a_full_boot(
    the_e2e_site: E2ESite,
    boot: Callable[..., tuple[QemuMachine, int]],
    an_http_server: NginxServer,
) -> Callable[..., Booted]:
    """``a_full_boot(host, macs=None, uuid=None, root=...)``: boot ``host``'s machine
    (with its MACs unless given) until its init's OK marker and power-off; check that
    the host's chain came over HTTP and that the guest wrote into its own /boot."""

    def run(name: str, macs: list[str] | None = None, machine_uuid: str | None = None,
            root: str = "/dev/rbd0") -> Booted:
        guest, mark = boot(macs or the_e2e_site.hosts[name].macs, machine_uuid)
        root_seconds = dict(boot_path(guest, "SeaBIOS", name, root))["root"]  # power-on until init's OK line
        requests = fetched(an_http_server, mark)
        assert_fetched_host_chain(requests, name)
        assert_booted(the_e2e_site, name, root)
        return Booted(guest.console(), requests, root_seconds)

    return run


IPXE_RUNNING = ("iPXE", r"iPXE 1\.\d")


def boot_path(guest: QemuMachine, firmware: str, host: str, root: str = "/dev/rbd0",
              loader: tuple[str, str] = IPXE_RUNNING, timeout: float = BOOT_TIMEOUT) -> list[tuple[str, float]]:
    """Wait for the whole chain and the power-off; print and return its timings (seconds
    since power-on: the loader running (iPXE's banner, or ``loader``), kernel started, root
    mapped, root mounted and init running). With CEPHBOOT_BOOT_PATHS=FILE also recorded
    there under "<firmware>, <host>" (BENCHMARKS.md reads bench/boot-paths.json)."""
    timings = guest.timed([
        loader,
        ("kernel", r"Linux version \d"),
        ("mapped", r"^cephboot: mapped \S+ at /dev/rbd0$"),
        ("root", ok_line(host, root)),
    ], timeout)
    guest.wait_exit(30)
    print(f"\nboot path, {firmware}, {host}: " + ", ".join(f"{name} {t:.1f} s" for name, t in timings))
    out = os.environ.get("CEPHBOOT_BOOT_PATHS")
    if out:
        path = Path(out)
        recorded = json.loads(path.read_text()) if path.exists() else {}
        recorded[f"{firmware}, {host}"] = {"steps": [[name, t] for name, t in timings],
                                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        path.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    return timings


def fetched(http: NginxServer, mark: int) -> list[tuple[str, int]]:
    return [(r.path, r.status) for r in http.requests_since(mark)]


def assert_fetched_host_chain(requests: list[tuple[str, int]], host: str) -> None:
    """The host's script, the kernel, the base initrd and the host layer came over HTTP."""
    paths = {path for path, status in requests if status == 200}
    assert f"/hosts/{host}/boot.ipxe" in paths, requests
    assert f"/hosts/{host}/overlay.cpio" in paths, requests
    assert any(re.fullmatch(r"/kernels/[^/]+/vmlinuz", p) for p in paths), requests
    assert any(re.fullmatch(r"/kernels/[^/]+/initrd(-sysfs)?\.img", p) for p in paths), requests


def boot_costs(site: E2ESite, method: str, booted: Booted) -> dict[str, float | int]:
    """What one boot cost: bytes of each file it fetched (kernel, base, layer), seconds from
    power-on to the booted system's init, and the boot script's own time from its first line
    to its last (and the map's and the Ceph NIC's parts of it), as it printed them; and the
    build machine's 1-minute load average when the boot ended.  Printed; with
    CEPHBOOT_BOOT_RESULTS=FILE also recorded there by map method (BENCHMARKS.md reads it)."""
    tree = site.boot_tree.mountpoint
    fetched_ok = [p for p, status in booted.requests if status == 200]
    kinds = {"kernel": r"/kernels/[^/]+/vmlinuz", "base": r"/kernels/[^/]+/initrd[^/]*\.img", "layer": r"/hosts/[^/]+/overlay\.cpio"}
    costs: dict[str, float | int] = {}
    for kind, pattern in kinds.items():
        paths = [p for p in fetched_ok if re.fullmatch(pattern, p)]
        assert len(paths) == 1, (kind, booted.requests)
        costs[f"{kind}_bytes"] = (tree / paths[0].lstrip("/")).stat().st_size
    start = re.search(r"cephboot: local-top started at ([\d.]+) s of uptime", booted.console)
    done = re.search(r"cephboot: local-top done in ([\d.]+) s, ([\d.]+) s of it mapping \S+, ([\d.]+) s bringing up the Ceph NIC$",
                     booted.console, re.MULTILINE)
    assert start and done, booted.console[-3000:]
    costs.update(root_seconds=booted.root_seconds, script_started=float(start[1]), script_seconds=float(done[1]),
                 map_seconds=float(done[2]), nic_seconds=float(done[3]),
                 load=round(os.getloadavg()[0], 2))  # the build machine's, as the boot ended: TCG figures depend on it
    print(f"\nboot costs, map method {method}: {costs}")
    out = os.environ.get("CEPHBOOT_BOOT_RESULTS")
    if out:
        path = Path(out)
        recorded = json.loads(path.read_text()) if path.exists() else {}
        recorded[method] = {**costs, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        path.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    return costs


def assert_booted(site: E2ESite, host: str, root: str = "/dev/rbd0") -> None:
    """The guest's init wrote into its own /boot directory on CephFS (outside the boot tree)."""
    booted = site.boot_dir(host) / "e2e-booted"
    assert booted.read_text() == f"{host} booted with root {root}\n"


# ---- 1. by MAC -------------------------------------------------------------------


def test_a_machine_boots_by_mac_through_the_whole_chain(
    the_e2e_site: E2ESite, a_full_boot: Callable[..., Booted]
) -> None:
    host = the_e2e_site.hosts["by-mac"]
    booted = a_full_boot("by-mac")
    boot_costs(the_e2e_site, "cli", booted)
    assert (f"/ipxe/by-mac/{hexhyp(host.macs[0])}.ipxe", 200) in booted.requests
    assert re.search(r"^cephboot: mapped cephboot/by-mac/root at /dev/rbd0$", booted.console,
                     re.MULTILINE)


# ---- 2. by UUID ------------------------------------------------------------------


def test_a_machine_whose_boot_mac_is_unlisted_boots_by_its_uuid(
    the_e2e_site: E2ESite, a_full_boot: Callable[..., Booted]
) -> None:
    """iPXE runs on a NIC no host lists; the SMBIOS UUID routes it. Its Ceph NIC is the
    second one, found by the MAC its host file lists."""
    host = the_e2e_site.hosts["by-uuid"]
    booted = a_full_boot("by-uuid", [UNLISTED_MAC, *host.macs], BY_UUID_UUID)
    requests = booted.requests
    assert requests[:2] == [("/boot.ipxe", 200), (f"/ipxe/by-uuid/{BY_UUID_UUID}.ipxe", 200)], requests
    assert not [path for path, _ in requests if path.startswith("/ipxe/by-mac/")], requests
    assert re.search(rf"cephboot: Ceph NIC is \S+ \({host.macs[0]}\)$", booted.console,
                     re.MULTILINE)


# ---- 3. sysfs, msgr2 secure ------------------------------------------------------


def test_the_sysfs_method_maps_over_msgr2_in_secure_mode(
    the_e2e_site: E2ESite, a_full_boot: Callable[..., Booted]
) -> None:
    booted = a_full_boot("sysfs-secure")
    console = booted.console
    # the lean base: no rbd CLI, no Ceph userspace libraries
    bases = [p for p, status in booted.requests if status == 200 and re.fullmatch(r"/kernels/[^/]+/initrd[^/]*\.img", p)]
    assert len(bases) == 1 and bases[0].endswith("/initrd-sysfs.img"), booted.requests
    boot_costs(the_e2e_site, "sysfs", booted)  # recorded, not asserted: speed is the benchmarks' business
    # The kernel's own session: msgr2 ("(2)") on the msgr2 port, before the root is
    # mapped; the rbd CLI is not in the picture (no userspace session to print).
    mapped = console.index("cephboot: mapped cephboot/sysfs-secure/root at /dev/rbd0")
    session = re.search(r"libceph: mon0 \(2\)192\.0\.2\.1:3300 session established", console)
    assert session and session.start() < mapped, console[-3000:]
    assert "failed to allocate gcm" not in console
    assert "mapping cephboot/sysfs-secure/root failed" not in console


# ---- 4. a multi-MAC host booted with its second MAC ------------------------------


def test_a_multi_mac_host_boots_with_its_second_mac(a_full_boot: Callable[..., Booted]) -> None:
    second = MULTI_MACS[1]
    booted = a_full_boot("multi-mac", [second])
    assert (f"/ipxe/by-mac/{hexhyp(second)}.ipxe", 200) in booted.requests
    assert re.search(rf"cephboot: Ceph NIC is \S+ \({second}\)$", booted.console,
                     re.MULTILINE)


# ---- 5. LUKS ---------------------------------------------------------------------


def test_a_luks_root_is_opened_with_its_key_and_mounted(
    a_full_boot: Callable[..., Booted], a_ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    root = f"/dev/mapper/{LUKS_NAME}"
    # The image really is a LUKS2 container: its first bytes are the LUKS header.
    head = tmp_path / "head"
    a_ceph_cluster.rbd("export", "--no-progress", f"{RBD_POOL}/luks/root", str(head))
    assert head.read_bytes()[:6] == b"LUKS\xba\xbe"
    head.unlink()
    booted = a_full_boot("luks", root=root)
    assert f"cephboot: opened /dev/rbd0 as {root}" in booted.console


# ---- 6. faults -------------------------------------------------------------------


def test_a_map_outlives_a_monitor_restart(
    the_e2e_site: E2ESite, boot: Callable[..., tuple[QemuMachine, int]],
    an_http_server: NginxServer, a_ceph_cluster: CephCluster,
) -> None:
    """The monitor goes away before the guest maps and comes back as its map starts: the map waits for it."""
    host = the_e2e_site.hosts["mon-fault"]
    guest, mark = boot(host.macs)
    # the kernel starts: iPXE fetched it and every initrd over HTTP already, and the map is
    # seconds away (stopping the monitor once cephboot's script runs races a guest that maps
    # at once)
    guest.wait_for(r"Linux version ", BOOT_TIMEOUT)
    try:
        a_ceph_cluster.stop_monitor(grace=0)  # SIGKILL: a monitor that vanishes
        down_at = len(guest.console())
        # the guest's Ceph NIC is up with the monitor away: its map starts now, hunting for a
        # monitor (an attempt lasts up to the whole deadline, so it never fails over to a retry)
        guest.wait_for(NIC_READY, BOOT_TIMEOUT)
    finally:
        a_ceph_cluster.start_monitor()
    up_at = len(guest.console())
    guest.wait_for(ok_line("mon-fault"), BOOT_TIMEOUT)
    guest.wait_exit(30)
    console = guest.console()
    # Nothing was mapped while the monitor was away; the session and the map came after.
    assert "cephboot: mapped" not in console[:up_at], console[down_at:up_at]
    assert "session established" not in console[:up_at], console[down_at:up_at]
    assert console.index("cephboot: mapped cephboot/mon-fault/root at /dev/rbd0") > up_at
    assert_fetched_host_chain(fetched(an_http_server, mark), "mon-fault")
    assert_booted(the_e2e_site, "mon-fault")


def test_a_wrong_key_stops_the_boot_within_the_deadline_naming_the_failure(
    the_e2e_site: E2ESite, boot: Callable[..., tuple[QemuMachine, int]],
    an_http_server: NginxServer,
) -> None:
    host = the_e2e_site.hosts["wrong-key"]
    guest, mark = boot(host.macs)
    guest.wait_for(NIC_READY, BOOT_TIMEOUT)
    mapping_from = time.monotonic()
    guest.wait_for(r"^cephboot: could not map cephboot/wrong-key/root as client\.wrong-key "
                   rf"\(cli\) in \d+ attempts over \d+ s \(CEPHBOOT_MAP_DEADLINE="
                   rf"{WRONG_KEY_DEADLINE}\); last error: ", WRONG_KEY_DEADLINE + 60)
    gave_up_after = time.monotonic() - mapping_from
    guest.wait_exit(PANIC_DELAY + 30)
    stopped_after = time.monotonic() - mapping_from
    console = guest.console()
    failure = console[console.index("cephboot: could not map"):]
    # The reason is the cluster's refusal of the key, as rbd reported it.
    assert "handle_auth_bad_method" in failure or "Permission denied" in failure, failure
    assert "mapping cephboot/wrong-key/root failed (attempt 1)" in console
    # One slow last attempt (rbd starting under TCG) may end past the deadline.
    assert gave_up_after < WRONG_KEY_DEADLINE + 15, console[-3000:]
    assert stopped_after < WRONG_KEY_DEADLINE + PANIC_DELAY + 25
    assert "CEPHBOOT-E2E-ROOT" not in console
    requests = fetched(an_http_server, mark)
    assert ("/hosts/wrong-key/overlay.cpio", 200) in requests


def test_an_unknown_machine_gets_the_unknown_machine_message(
    the_e2e_site: E2ESite, boot: Callable[..., tuple[QemuMachine, int]],
    an_http_server: NginxServer,
) -> None:
    machine_uuid = str(uuid.uuid4())
    guest, mark = boot([UNKNOWN_MAC], machine_uuid)
    # iPXE wraps at 80 columns: match the start of the line only.
    guest.wait_for(r"^cephboot: unknown machine: no host has UUID", 120)
    guest.wait_for(r"^Press any key within 30 s", 10)
    guest.stop()  # this iPXE has no poweroff: it would sit at the prompt
    requests = fetched(an_http_server, mark)
    # dnsmasq gave it an address from the pool and the site's boot.ipxe; no route matched
    assert requests[:2] == [("/boot.ipxe", 200), (f"/ipxe/by-uuid/{machine_uuid}.ipxe", 404)], requests
    assert (f"/ipxe/by-mac/{hexhyp(UNKNOWN_MAC)}.ipxe", 404) in requests
    assert all(status == 404 for _, status in requests[1:]), requests
    assert "cephboot: booting" not in guest.console()


# ---- 7. isolation, with what the pipeline published ------------------------------


def test_a_published_host_layer_reaches_only_its_own_host(
    the_e2e_site: E2ESite, a_ceph_cluster: CephCluster, a_boot_tree_mount: CephFuseMount,
    tmp_path: Path,
) -> None:
    """The keyring inside by-mac's published overlay.cpio, as its guest gets it, maps
    its own image and neither reads by-uuid's image nor mounts by-uuid's /boot.

    The Ceph-level checks of the caps are in test_cluster_isolation.py; this ties them
    to the artifact the guest boots with, without a guest (a boot costs ~40 s)."""
    layer = a_boot_tree_mount.mountpoint / "hosts" / "by-mac" / "overlay.cpio"
    unpacked = tmp_path / "layer"
    unpacked.mkdir()
    with layer.open("rb") as archive:
        subprocess.run(["cpio", "-i", "-d", "--quiet"], stdin=archive, cwd=unpacked, check=True)
    keyring = unpacked / "etc" / "ceph" / "ceph.client.by-mac.keyring"
    sections = re.findall(r"^\s*\[([^]]+)\]", keyring.read_text(), re.MULTILINE)
    assert sections == ["client.by-mac"]
    keyring.chmod(0o600)
    own = CephClient("by-mac", "", keyring)
    a_ceph_cluster.rbd("info", f"{RBD_POOL}/by-mac/root", client=own)
    for refused in (
        a_ceph_cluster.rbd("info", f"{RBD_POOL}/by-uuid/root", client=own, check=False),
        a_ceph_cluster.rbd("export", "--no-progress", f"{RBD_POOL}/by-uuid/root",
                           str(tmp_path / "stolen"), client=own, check=False),
    ):
        assert refused.returncode != 0
        assert "Operation not permitted" in refused.stderr or "denied" in refused.stderr
    assert not (tmp_path / "stolen").exists()
    other_boot = CephFuseMount(a_ceph_cluster, own, the_e2e_site.boot_path("by-uuid"),
                               tmp_path / "other-boot")
    with pytest.raises(RuntimeError, match="Operation not permitted"), other_boot:
        pass


# ---- 9. a monolithic host: one initrd, base and layer in one file ------------------


def test_a_monolithic_host_boots_from_its_single_initrd(
    the_e2e_site: E2ESite, boot: Callable[..., tuple[QemuMachine, int]], an_http_server: NginxServer
) -> None:
    """For machines whose loader takes one initrd: hosts/<h>/initrd.img is the host layer
    followed by the base (docs/layers-and-publish.md); nothing else is fetched."""
    guest, mark = boot(the_e2e_site.hosts["monolithic"].macs)
    boot_path(guest, "SeaBIOS", "monolithic")
    requests = fetched(an_http_server, mark)
    paths = {path for path, status in requests if status == 200}
    assert "/hosts/monolithic/initrd.img" in paths, requests
    assert not [p for p in paths if p.endswith("overlay.cpio") or re.fullmatch(r"/kernels/[^/]+/initrd\.img", p)], requests
    assert any(re.fullmatch(r"/kernels/[^/]+/vmlinuz", p) for p in paths), requests
    assert_booted(the_e2e_site, "monolithic")


# ---- 10. the previous generation takes over when the current one cannot be fetched --


def test_a_host_whose_current_layer_is_missing_boots_its_previous_generation(
    the_e2e_site: E2ESite, boot: Callable[..., tuple[QemuMachine, int]], an_http_server: NginxServer
) -> None:
    """The host script tries three times, then chains previous/boot.ipxe, which loads the
    previous layer relative to itself: the machine boots the generation before the edit."""
    folder = the_e2e_site.boot_tree.mountpoint / "hosts" / "fallback"
    assert FALLBACK_NEW in (folder / "boot.ipxe").read_text()
    assert FALLBACK_NEW not in (folder / "previous" / "boot.ipxe").read_text()
    layer = folder / "overlay.cpio"
    aside = folder / ".overlay.cpio.aside"
    layer.rename(aside)  # a half-published or damaged current generation
    try:
        guest, mark = boot(the_e2e_site.hosts["fallback"].macs)
        guest.wait_for(ok_line("fallback"), BOOT_TIMEOUT)
        guest.wait_exit(30)
    finally:
        aside.rename(layer)  # back with its owner, group and mode
    console = guest.console()
    assert "cephboot: fallback: trying the previous generation of its boot files" in console, console[-3000:]
    requests = fetched(an_http_server, mark)
    assert [r for r in requests if r[0] == "/hosts/fallback/overlay.cpio"] == [("/hosts/fallback/overlay.cpio", 404)] * 3, requests
    assert ("/hosts/fallback/previous/boot.ipxe", 200) in requests and ("/hosts/fallback/previous/overlay.cpio", 200) in requests
    cmdline = re.search(r"^CEPHBOOT-E2E-CMDLINE host=fallback (.*)$", console, re.MULTILINE)
    assert cmdline and FALLBACK_NEW not in cmdline.group(1).split(), console[-2000:]  # the first generation booted
    assert_booted(the_e2e_site, "fallback")


# ---- 8. a change follows through (keep last: it edits the site) -------------------


def test_a_changed_kernel_argument_takes_effect_without_a_new_base_initrd(
    the_e2e_site: E2ESite, a_full_boot: Callable[..., Booted]
) -> None:
    host = the_e2e_site.hosts["by-mac"]
    marker = f"cephboot.e2e=changed-{uuid.uuid4().hex[:8]}"
    host.data["+kernel_args"] = [marker]
    the_e2e_site.write_host(host)
    ran = steps(tasks_ran(the_e2e_site.doit().stdout))  # 'render:by-mac': the host render:hosts redid
    assert "render:by-mac" in ran, ran
    assert any(task.startswith("publish") for task in ran), ran
    assert not [task for task in ran if task.startswith("initrd")], ran
    assert not [task for task in ran if task.startswith(("render:", "overlay:"))
                and not task.endswith(":by-mac") and task != "render:site"], ran
    console = a_full_boot("by-mac").console
    cmdline = re.search(r"^CEPHBOOT-E2E-CMDLINE host=by-mac (.*)$", console, re.MULTILINE)
    assert cmdline and marker in cmdline.group(1).split(), console[-2000:]

