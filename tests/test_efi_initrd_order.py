"""Under UEFI the kernel's EFI stub reads a script's initrd= files back to back, unpadded:
the host layer goes first, so it starts at offset 0 and the base after it at a 4-byte
boundary, whatever the base's length (the boots themselves: tests/e2e/test_uefi.py)."""
from __future__ import annotations

import re

from builtsite import the_built_example  # noqa: F401  (fixture)
from conftest import Site


def initrd_order(script: str) -> tuple[list[str], list[str]]:
    """The initrd= arguments of the kernel line, and the --name of each initrd command."""
    kernel = re.search(r"^kernel \S+ (.*)$", script, re.MULTILINE)
    assert kernel, script
    args = re.findall(r"\binitrd=(\S+)", kernel.group(1))
    names = re.findall(r"^initrd --name (\S+) ", script, re.MULTILINE)
    return args, names


def test_every_layered_host_loads_its_layer_before_the_base(the_built_example: Site) -> None:  # noqa: F811
    tree = the_built_example.root / "build" / "publish" / "hosts"
    checked = 0
    for script in sorted(tree.glob("*/boot.ipxe")):
        args, names = initrd_order(script.read_text())
        if "overlay.cpio" not in args:
            assert args == names == ["initrd.img"], script  # monolithic: layer + base in one file
            continue
        # the EFI stub concatenates in initrd= order; BIOS iPXE loads in command order
        assert args == names == ["overlay.cpio", "initrd.img"], script
        checked += 1
    assert checked == 2  # zephyr and boreas; notus is monolithic


def test_a_host_layer_always_ends_on_a_4_byte_boundary(the_built_example: Site) -> None:  # noqa: F811
    """newc pads every member to 4 bytes, so the base after a layer starts aligned."""
    layers = sorted((the_built_example.root / "build" / "hosts").glob("*/overlay.cpio"))
    assert len(layers) == 3
    for layer in layers:
        data = layer.read_bytes()
        assert data[:6] == b"070701" and len(data) % 4 == 0, (layer, len(data))
