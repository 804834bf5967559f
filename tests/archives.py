"""What is inside a published file: every member of every archive of an initrd or a host layer, decompressed."""
from __future__ import annotations

import subprocess
from pathlib import Path

NEWC = b"070701"
COMPRESSED = (b"\x28\xb5\x2f\xfd", b"\x1f\x8b\x08\x00")  # zstd, gzip


def contents(path: Path, scratch: Path) -> list[bytes]:
    """The file and, for an initrd or a layer, the bytes of every member (unpacked under ``scratch``).

    unmkinitramfs reads initrds (a layer then the compressed base, or the base alone) but
    wants something after an uncompressed archive: a host layer alone is read by cpio.
    """
    data = path.read_bytes()
    out = [data]
    if data[:6] == NEWC or data[:4] in COMPRESSED:
        scratch.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["unmkinitramfs", str(path), str(scratch)], capture_output=True).returncode != 0:
            subprocess.run(["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames"], input=data, cwd=scratch,
                           check=True, capture_output=True)
        out += [p.read_bytes() for p in scratch.rglob("*") if p.is_file() and not p.is_symlink()]
    return out
