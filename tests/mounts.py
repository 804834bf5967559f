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


# The folder's files copied into a tmpfs a little bigger than they are, the rest of it filled
# with one file (dd stops at ENOSPC), doit run, then what the tmpfs holds copied out to $AFTER
# before the mount goes with the namespace.
FULL = ('stash=$1 after=$2 dir=$3 && size=$4 && shift 4 && cp -a "$dir/." "$stash/" && mount -t tmpfs -o "size=$size" cephboot-test "$dir" '
        '&& cp -a "$stash/." "$dir/" && { dd if=/dev/zero of="$dir/.filler" bs=4k 2>/dev/null; true; } '
        '&& { "$@"; rc=$?; cp -a "$dir/." "$after/"; exit $rc; }')


def doit_in_full_folder(site: Site, folder: Path, after: Path, *args: str) -> DoitRun:
    """`doit ARGS` while ``folder`` is a full tmpfs holding what it held before (ENOSPC for any
    write that needs a new block); ``after`` receives what the folder held when doit ended."""
    stash = after.parent / f"{after.name}.before"
    stash.mkdir(parents=True)
    after.mkdir(parents=True)
    size = sum(-(-p.stat().st_size // 4096) * 4096 for p in folder.rglob("*") if p.is_file()) + (256 << 10)  # room for its copy
    cmd = [sys.executable, "-m", "doit", "-f", str(site.dodo), "-d", str(site.root), *args]
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", FULL, "sh",
                        str(stash), str(after), str(folder), str(size), *cmd],
                       capture_output=True, text=True, timeout=1800)
    return DoitRun(p.returncode, p.stdout, p.stderr)
