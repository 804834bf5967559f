"""Write a LUKS2 container around a file system image without device-mapper.

The usual way (`cryptsetup open`, then mkfs on /dev/mapper/NAME) needs the
kernel's dm-crypt, which build machines and containers often lack (this one
does: "Cannot initialize device-mapper").  So: cryptsetup writes the LUKS2
header into the output file (that needs no kernel support), hands back the
volume key it chose, and this module encrypts the plain image's sectors the way
dm-crypt would (aes-xts-plain64, 512-byte sectors, the IV being the sector
number counted from the start of the data segment).

Only the plain image's data extents are encrypted; its holes stay holes, so the
RBD image stays thin, and they decrypt to noise, exactly as the untouched part
of a freshly formatted LUKS device does.  mkfs is therefore told not to count
on zeroed space (see mkfs_options) -- the same situation as mkfs on a real
dm-crypt device.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

SECTOR = 512
HEADER_BYTES = 16 * 1024 * 1024  # LUKS2's default data offset
CIPHER = "aes-xts-plain64"
KEY_BITS = 512  # XTS: two AES-256 keys
# The key is a random key file, not a passphrase: a slow KDF adds nothing but
# boot time (and argon2's memory could exceed a small diskless guest's RAM).
KDF_OPTIONS = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]  # of every key slot, the first and rotated ones (tasks/rotate.py)
FORMAT_OPTIONS = ["--type", "luks2", "--cipher", CIPHER, "--key-size", str(KEY_BITS), "--sector-size", str(SECTOR),
                  *KDF_OPTIONS, "--offset", str(HEADER_BYTES // SECTOR)]
# mkfs.ext4 -E for the plain image: no discard (which would let mkfs assume
# zeroed inode tables) and lazy init (the kernel zeroes the inode tables
# through dm-crypt after the first mount); the journal is zeroed by us.
MKFS_EXTENDED = "nodiscard,lazy_itable_init=1,lazy_journal_init=1"
_CHUNK = 1 << 20


def payload_size(total: int) -> int:
    """Bytes of file system that fit in a LUKS2 container of ``total`` bytes."""
    if total <= HEADER_BYTES + (8 << 20):
        raise ValueError(f"a LUKS2 image needs more than {(HEADER_BYTES >> 20) + 8} MiB")
    return total - HEADER_BYTES


def zero_journal(plain: Path) -> None:
    """Write explicit zeros over an ext4 image's journal blocks, so they are encrypted too.

    mkfs on a dm-crypt device zeroes the journal; with lazy_journal_init it
    does not, and the holes would decrypt to noise.  jbd2 copes with noise in a
    clean journal, but there is no reason to rely on it.
    """
    out = subprocess.run(["debugfs", "-R", "blocks <8>", str(plain)], capture_output=True, text=True, check=True).stdout
    blocks = [int(b) for b in out.split()][1:]  # logical block 0 holds the journal's superblock: keep it
    runs: list[list[int]] = []
    for b in blocks:
        if runs and b == runs[-1][1]:
            runs[-1][1] = b + 1
        else:
            runs.append([b, b + 1])
    header = subprocess.run(["dumpe2fs", "-h", str(plain)], capture_output=True, text=True, check=True).stdout
    bsize = int(header.split("Block size:", 1)[1].split()[0])
    step = _CHUNK // bsize
    zero = bytes(step * bsize)
    fd = os.open(plain, os.O_WRONLY)
    try:
        for first, end in runs:
            for b in range(first, end, step):
                os.pwrite(fd, zero[: min(step, end - b) * bsize], b * bsize)
    finally:
        os.close(fd)


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) byte ranges of a file that hold data, aligned out to whole sectors."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after pos
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append((start - start % SECTOR, min(size, -(-end // SECTOR) * SECTOR)))
        pos = end
    return out


def encrypt_sectors(key: bytes, data: bytes, first_sector: int) -> bytes:
    """aes-xts-plain64 of whole 512-byte sectors, as dm-crypt computes it."""
    try:  # the `provision` extra: only LUKS image builds need it
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        raise RuntimeError("building a LUKS image needs the 'cryptography' package: pip install -e '.[provision]'") from None
    aes = algorithms.AES(key)
    out = bytearray(len(data))
    for i in range(0, len(data), SECTOR):
        tweak = (first_sector + i // SECTOR).to_bytes(16, "little")  # plain64: the sector number, little-endian
        enc = Cipher(aes, modes.XTS(tweak)).encryptor()
        out[i:i + SECTOR] = enc.update(data[i:i + SECTOR]) + enc.finalize()
    return bytes(out)


def wrap(plain: Path, out: Path, keyfile: Path) -> None:
    """Write ``out``: a LUKS2 header opened by ``keyfile``, then ``plain`` encrypted.

    ``out`` must not exist; it gets the size of ``plain`` plus the header, and mode 0600.
    """
    size = plain.stat().st_size
    if size % SECTOR:
        raise ValueError(f"{plain}: size is not a multiple of {SECTOR}")
    # Owner-only from its first byte, whatever the umask: until it is imported, the
    # container sits next to its plaintext and the key file's holder is the only reader.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size + HEADER_BYTES)
    finally:
        os.close(fd)
    subprocess.run(["cryptsetup", "luksFormat", "--batch-mode", *FORMAT_OPTIONS, "--key-file", str(keyfile), str(out)],
                   capture_output=True, text=True, check=True)
    meta = json.loads(subprocess.run(["cryptsetup", "luksDump", "--dump-json-metadata", str(out)],
                                     capture_output=True, text=True, check=True).stdout)
    segment = meta["segments"]["0"]
    if (segment["encryption"], int(segment["sector_size"]), int(segment["offset"]), int(segment["iv_tweak"])) != (CIPHER, SECTOR, HEADER_BYTES, 0):
        raise RuntimeError(f"{out}: cryptsetup wrote an unexpected data segment: {segment}")
    with tempfile.TemporaryDirectory(prefix="luks-", dir=out.parent) as tmp:
        vk = Path(tmp) / "volume.key"
        subprocess.run(["cryptsetup", "luksDump", "--batch-mode", "--dump-volume-key", "--volume-key-file", str(vk),
                        "--key-file", str(keyfile), str(out)], capture_output=True, text=True, check=True)
        key = vk.read_bytes()
        vk.unlink()
    src = os.open(plain, os.O_RDONLY)
    dst = os.open(out, os.O_WRONLY)
    try:
        for start, end in _data_extents(src, size):
            for pos in range(start, end, _CHUNK):
                data = os.pread(src, min(_CHUNK, end - pos), pos)
                os.pwrite(dst, encrypt_sectors(key, data, pos // SECTOR), HEADER_BYTES + pos)
        os.fsync(dst)
    finally:
        os.close(src)
        os.close(dst)
        key = b""
