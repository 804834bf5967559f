"""Generate the example site's secrets (cephx keyrings, LUKS key files, machine secrets) where they are missing.

The example site ships no secrets: run ``python -m tasks.examplekeys [SITE]`` once
(scripts/setup does) and each host file under hosts/nodes/ gets a fresh, valid but
unused cephx key at its keyring path (default keys/<name>.keyring), for LUKS
hosts a random key file, and for hosts in ``secrets.mode: machine`` (the default;
not ``address`` or ``clear``) a random machine secret (default keys/<name>.secret: 32
characters, 160 bits, to set in the machine's SMBIOS field), all mode 0600.
Existing files are never touched.
"""
from __future__ import annotations

import base64
import os
import struct
import sys
import time
from pathlib import Path

import yaml


def cephx_secret() -> str:
    """A new cephx secret in the format `ceph-authtool --gen-print-key` prints."""
    now = time.time()
    raw = struct.pack("<HIIH", 1, int(now), int(now % 1 * 1e9), 16) + os.urandom(16)
    return base64.b64encode(raw).decode()


def machine_secret() -> str:
    """A new machine secret: 32 base32 characters (160 random bits) that any SMBIOS string field holds."""
    return base64.b32encode(os.urandom(20)).decode()


def _secrets(data: dict) -> dict:
    section = data.get("secrets")
    return section if isinstance(section, dict) else {}


def _write_new(path: Path, data: bytes) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def ensure(root: Path) -> list[Path]:
    """Create every missing secret that the hosts of ``root/hosts`` name; return the new files."""
    hosts = root / "hosts"
    created = []
    site = (yaml.safe_load((hosts / "site.yaml").read_text()) or {}) if (hosts / "site.yaml").is_file() else {}
    site_mode = _secrets(site.get("defaults") or {}).get("mode", "machine")
    for f in sorted((hosts / "nodes").glob("*.yaml")):
        data = yaml.safe_load(f.read_text()) or {}
        name = f.stem
        client = str(data.get("client", name))
        keyring = hosts / str(data.get("keyring", f"keys/{name}.keyring"))
        if _write_new(keyring, f"[client.{client}]\n\tkey = {cephx_secret()}\n".encode()):
            created.append(keyring)
        luks = data.get("luks")
        if isinstance(luks, dict) and luks.get("keyfile"):
            keyfile = hosts / str(luks["keyfile"])
            if _write_new(keyfile, base64.b64encode(os.urandom(48)) + b"\n"):
                created.append(keyfile)
        secrets = _secrets(data)
        if secrets.get("mode", site_mode) == "machine":
            secret = hosts / str(secrets.get("machine_secret", f"keys/{name}.secret"))
            if _write_new(secret, f"{machine_secret()}\n".encode()):
                created.append(secret)
    return created


if __name__ == "__main__":
    for p in ensure(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(f"created {p}")
