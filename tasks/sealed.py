"""Seal a host's keys to its machine secret: the envelope that the local-top script opens with openssl.

The envelope is text, one record a line, so that the boot script can read it with
`read` and the openssl command line alone:

    cephboot-sealed 1
    host <name>
    kdf pbkdf2-sha256 <iterations> <salt, 8 bytes in hex>
    file keyring <iv in hex> <AES-256-CBC ciphertext in base64>
    file luks <iv in hex> <base64>                (LUKS hosts)
    mac <HMAC-SHA256 of every line above, in hex>

Keys: PBKDF2-HMAC-SHA256(secret, salt, iterations) gives the 32-byte ``master``
that ``openssl enc -P -aes-256-cbc -pbkdf2 -md sha256 -S SALT -iter N -pass
file:FIELD`` prints as ``key=`` (the secret goes to openssl as a file, never as
an argument); the encryption and MAC keys are HMAC-SHA256(master, "cephboot-sealed
enc" / "cephboot-sealed mac").  Encrypt-then-MAC: the script checks the MAC over the
whole envelope before it decrypts anything, so a wrong secret is told apart from
a damaged file and no partial key is ever written.

Sealing is deterministic, so that the same keys and secret give the same bytes
(a rebuilt layer is byte-identical, and publish has nothing to replace): the salt
is a digest of the site's fsid and the host's name (public, but unique per host
and site: nothing can be computed ahead for many hosts at once; it is not derived
from the secret, which would let a guess be checked without the KDF), and each IV
is an HMAC of its record under the encryption key (a synthetic IV: it repeats only
for the same key and plaintext).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

from .fileio import read_regular, write_if_changed
from .yamlfiles import secret_bytes

FORMAT = "cephboot-sealed 1"
ITERATIONS = 100_000  # ~60 ms per seal on the build machine (openssl does the same at boot); each guess at a secret costs as much
SALT_BYTES = 8  # what `openssl enc -S` takes
NAMES = ("keyring", "luks")  # the records the boot script knows, and where it writes each


class Unsealed(ValueError):
    """An envelope that this secret does not open (or that is damaged)."""


def derive(secret: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(encryption key, MAC key) for ``secret``."""
    master = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations, 48)[:32]
    return (hmac.new(master, b"cephboot-sealed enc", "sha256").digest(),
            hmac.new(master, b"cephboot-sealed mac", "sha256").digest())


def seal(host: str, files: dict[str, bytes], secret: bytes, context: str, iterations: int = ITERATIONS) -> bytes:
    """The envelope of ``files`` (name in NAMES -> bytes) for ``host``, sealed to ``secret``;
    ``context`` (the site's fsid) makes the salt unique to this host of this site."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    salt = hashlib.sha256(f"cephboot-sealed salt|{context}|{host}".encode()).digest()[:SALT_BYTES]
    enc_key, mac_key = derive(secret, salt, iterations)
    lines = [FORMAT, f"host {host}", f"kdf pbkdf2-sha256 {iterations} {salt.hex()}"]
    for name, data in files.items():
        assert name in NAMES, name
        iv = hmac.new(enc_key, f"iv|{name}|".encode() + data, "sha256").digest()[:16]
        padder = padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()
        lines.append(f"file {name} {iv.hex()} {base64.b64encode(ciphertext).decode()}")
    body = "".join(line + "\n" for line in lines).encode()
    return body + f"mac {hmac.new(mac_key, body, 'sha256').hexdigest()}\n".encode()


def unseal(envelope: bytes, secret: bytes) -> dict[str, bytes]:
    """What the boot script does, in Python: check the MAC, then decrypt each record."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    lines = envelope.decode().splitlines()
    if not lines or lines[0] != FORMAT or not lines[-1].startswith("mac "):
        raise Unsealed("not a cephboot-sealed 1 envelope")
    fields = {line.split(" ", 1)[0]: line.split(" ") for line in lines[1:-1]}
    _, _, iterations, salt = fields["kdf"]
    enc_key, mac_key = derive(secret, bytes.fromhex(salt), int(iterations))
    body = "".join(line + "\n" for line in lines[:-1]).encode()
    if not hmac.compare_digest(hmac.new(mac_key, body, "sha256").hexdigest(), lines[-1][4:]):
        raise Unsealed("the MAC does not match: another secret, or a damaged envelope")
    out = {}
    for line in lines[1:-1]:
        if line.startswith("file "):
            _, name, iv, data = line.split(" ")
            decryptor = Cipher(algorithms.AES(enc_key), modes.CBC(bytes.fromhex(iv))).decryptor()
            unpadder = padding.PKCS7(128).unpadder()
            plain = decryptor.update(base64.b64decode(data)) + decryptor.finalize()
            out[name] = unpadder.update(plain) + unpadder.finalize()
    return out


def stamp(host: str, files: dict[str, bytes], secret: bytes, context: str) -> bytes:
    """What an envelope was sealed from, as a digest kept next to it on the build machine (owner-only)."""
    h = hashlib.sha256(f"{FORMAT}|{ITERATIONS}|{context}|{host}".encode())
    h.update(hashlib.sha256(secret).digest())
    for name, data in sorted(files.items()):
        h.update(f"|{name}|{len(data)}|".encode() + hashlib.sha256(data).digest())
    return h.hexdigest().encode() + b"\n"


def seal_to_file(out: Path, stamp_file: Path, host: str, files: dict[str, bytes], secret_file: str, context: str) -> None:
    """Write the envelope to ``out`` (0600) unless it already holds these keys for this secret:
    a seal costs a KDF run (ITERATIONS), and most renders of a host change neither."""
    from .checks import MAX_MACHINE_SECRET
    from .schema import machine_secret

    secret = machine_secret(secret_bytes(secret_file, MAX_MACHINE_SECRET))  # as tasks/checks.py reads it
    now = stamp(host, files, secret, context)
    try:
        if read_regular(stamp_file) == now and out.is_file():
            return
    except FileNotFoundError:
        pass
    write_if_changed(out, seal(host, files, secret, context), 0o600)
    write_if_changed(stamp_file, now, 0o600)
