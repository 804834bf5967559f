"""doit run with a small tmpfs mounted over one folder, in a private mount namespace (nothing
outside the process sees the mount, and it goes with the process): a full or read-only disk
for one path of a test site."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import DoitRun, Site

MOUNT = 'mount -t tmpfs -o "$1" cephboot-test "$2" && shift 2 && exec "$@"'


def doit_over_tmpfs(site: Site, folder: Path, options: str, *args: str) -> DoitRun:
    """`doit ARGS` while ``folder`` is an empty tmpfs mounted with ``options`` ("ro,size=64k":
    EROFS for whatever is written there; "size=64k": ENOSPC for anything bigger)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "doit", "-f", str(site.dodo), "-d", str(site.root), *args]
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNT, "sh", options, str(folder), *cmd],
                       capture_output=True, text=True, timeout=1800)
    return DoitRun(p.returncode, p.stdout, p.stderr)
