"""A client on the network that is not the host: it fetches every published file of a boot tree by
name over HTTP, sweeps the routes, and searches everything it got, decompressed, for key bytes."""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from pathlib import Path

from archives import contents

from .netns import NetworkNamespace

# Runs inside the namespace: one GET per name; the body (empty on an error) and the status per file.
FETCH = """
import sys, urllib.error, urllib.request
base, out = sys.argv[1], sys.argv[2]
for i, rel in enumerate(sys.argv[3:]):
    try:
        response = urllib.request.urlopen(base + rel, timeout=30)
        data, status = response.read(), response.status
    except urllib.error.HTTPError as e:
        data, status = e.read(), e.code
    open(f"{out}/{i}", "wb").write(data)
    open(f"{out}/{i}.status", "w").write(str(status))
"""


@dataclass(frozen=True)
class Download:
    status: int
    data: bytes
    blobs: list[bytes]  # the file and, for an archive, every member of it, decompressed


def cephx_secrets(what: str, key: str) -> dict[str, bytes]:
    """What of a cephx key must not travel: its text and the AES key inside it."""
    return {f"{what}": key.encode(), f"{what}, raw": base64.b64decode(key)[12:]}


def published_names(tree: Path) -> list[str]:
    """Every file of the tree (routes and previous/ included) by its path, as a client that knows
    or guesses every name asks for it (the server lists no folders); not the dot files."""
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(tree).parts))


def fetch_all(netns: NetworkNamespace, url: str, names: list[str], scratch: Path) -> dict[str, Download]:
    """GET ``url`` + each name from inside the namespace, at its address; each answer unpacked."""
    downloads = scratch / "downloads"
    downloads.mkdir(parents=True)
    netns.run([sys.executable, "-c", FETCH, url, str(downloads), *names], timeout=600)
    out = {}
    for i, name in enumerate(names):
        body = downloads / f"{i}.img"
        (downloads / str(i)).rename(body)
        status = int((downloads / f"{i}.status").read_text())
        out[name] = Download(status, body.read_bytes(), contents(body, scratch / f"x{i}"))
    return out


def keys_found(fetched: dict[str, Download], secrets: dict[str, bytes]) -> list[str]:
    """'<what> in <name>' for each secret found in any fetched file or archive member."""
    return [f"{what} in {name}" for name, got in fetched.items() for blob in got.blobs
            for what, needle in secrets.items() if needle in blob]
