"""iPXE in QEMU fetches its script by TFTP and chains over HTTP from the CephFS boot tree."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from .boot_tree import CephFuseMount, NginxServer
from .qemu_vm import QemuMachine

pytestmark = pytest.mark.e2e

KNOWN_MAC = "52:54:00:e2:e0:01"
UNKNOWN_MAC = "52:54:00:e2:e0:99"

# The shape of the site-wide boot.ipxe (docs/front-end.md), written by hand: by UUID, by MAC,
# else "unknown machine". iPXE wraps console lines at 80 columns: keep markers short.
SITE_SCRIPT = """\
#!ipxe
echo E2E-IPXE-START
echo uuid=${{uuid}}
echo mac=${{mac:hexhyp}}
chain {base}ipxe/by-uuid/${{uuid}}.ipxe || chain {base}ipxe/by-mac/${{mac:hexhyp}}.ipxe || echo E2E-UNKNOWN-MACHINE ${{mac:hexhyp}}
"""

HOST_SCRIPT = """\
#!ipxe
echo E2E-HOST-SCRIPT {name}
"""


@pytest.fixture(scope="module")
def a_small_boot_tree(a_boot_tree_mount: CephFuseMount, an_http_server: NginxServer) -> Path:
    """A boot tree of its own in the CephFS boot tree: the site script and one host."""
    root = a_boot_tree_mount.mountpoint / "ipxe-chain-test"
    base = f"{an_http_server.url}ipxe-chain-test/"
    (root / "ipxe" / "by-mac").mkdir(parents=True, exist_ok=True)
    (root / "boot.ipxe").write_text(SITE_SCRIPT.format(base=base))
    host = root / "ipxe" / "by-mac" / f"{KNOWN_MAC.replace(':', '-')}.ipxe"
    host.write_text(HOST_SCRIPT.format(name="by-mac"))
    return root


def test_ipxe_runs_the_boot_script_it_gets_by_tftp(
    qemu_boot: Callable[..., QemuMachine], a_small_boot_tree: Path
) -> None:
    machine_uuid = str(uuid.uuid4())
    guest = qemu_boot(a_small_boot_tree, [KNOWN_MAC], machine_uuid)
    guest.wait_for("^E2E-IPXE-START", timeout=90)
    guest.wait_for(f"^uuid={machine_uuid}", timeout=10)
    guest.wait_for(f"^mac={KNOWN_MAC.replace(':', '-')}", timeout=10)


def test_ipxe_chains_to_the_host_script_over_http(
    qemu_boot: Callable[..., QemuMachine],
    a_small_boot_tree: Path,
    an_http_server: NginxServer,
) -> None:
    mark = an_http_server.mark()
    machine_uuid = str(uuid.uuid4())
    guest = qemu_boot(a_small_boot_tree, [KNOWN_MAC], machine_uuid)
    guest.wait_for("^E2E-HOST-SCRIPT by-mac", timeout=120)
    fetched = [(r.path, r.status) for r in an_http_server.requests_since(mark)]
    assert fetched == [
        (f"/ipxe-chain-test/ipxe/by-uuid/{machine_uuid}.ipxe", 404),
        (f"/ipxe-chain-test/ipxe/by-mac/{KNOWN_MAC.replace(':', '-')}.ipxe", 200),
    ]
    assert "E2E-UNKNOWN-MACHINE" not in guest.console()


def test_an_unknown_machine_gets_the_unknown_machine_message(
    qemu_boot: Callable[..., QemuMachine],
    a_small_boot_tree: Path,
    an_http_server: NginxServer,
) -> None:
    mark = an_http_server.mark()
    guest = qemu_boot(a_small_boot_tree, [UNKNOWN_MAC], str(uuid.uuid4()))
    guest.wait_for(f"^E2E-UNKNOWN-MACHINE {UNKNOWN_MAC.replace(':', '-')}", timeout=120)
    assert [r.status for r in an_http_server.requests_since(mark)] == [404, 404]
    assert "E2E-HOST-SCRIPT" not in guest.console()
