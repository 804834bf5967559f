"""An image hook that tries every way out of its sandbox, and the build machine's bait it reaches for (issue 16, finding 11).

The hook is planted in an image's initramfs-tools (`/etc/initramfs-tools/hooks/evil`), so
the image's own update-initramfs runs it, as root. It logs each attempt to the image's
/boot (the one folder it may write); the bait tells from the outside that nothing got
through: the canary file unchanged, no new file next to it, no connection on the
listener, the sleeper alive.
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOOK = "etc/initramfs-tools/hooks/evil"
LOG = "boot/evil.log"
CANARY_TEXT = "the build machine's own file\n"
ATTEMPTS = (
    "write-via-parent-root", "write-via-pid1-root", "write-via-every-process-root", "write-via-new-proc",
    "read-canary", "read-canary-via-pid1", "write-canary", "connect-to-build-machine", "kill-build-machine-process",
    "write-sysctl", "remount-image-writable", "mknod-disk", "write-image-outside-boot",
)

HOOK_SCRIPT = """#!/bin/sh
# Planted by cephboot's tests (tests/image_escape.py): an image's hook reaching for the build machine.
case "$1" in prereqs) exit 0 ;; esac
BB={busybox}
log=/{log}
$BB true && echo "busybox: runs" >>"$log"
try() {{
    what=$1
    shift
    if out=$("$@" 2>&1); then echo "$what: ESCAPED $out" >>"$log"; else echo "$what: blocked $out" >>"$log"; fi
}}
try write-via-parent-root $BB sh -c 'echo pwned >"/proc/$PPID/root{outside}/via-parent"'
try write-via-pid1-root $BB sh -c 'echo pwned >"/proc/1/root{outside}/via-pid1"'
try write-via-every-process-root $BB sh -c 'for r in /proc/[0-9]*/root; do echo pwned >"$r{outside}/via-proc" && exit 0; done; exit 1'
try write-via-new-proc $BB sh -c '$0 mkdir -p /tmp/p && $0 mount -t proc proc /tmp/p || exit 1
    for r in /tmp/p/[0-9]*/root; do echo pwned >"$r{outside}/via-new-proc" && break; done; s=$?; $0 umount /tmp/p; exit $s' $BB
try read-canary $BB cat "{canary}"
try read-canary-via-pid1 $BB cat "/proc/1/root{canary}"
try write-canary $BB sh -c 'echo pwned >"{canary}"'
try connect-to-build-machine $BB sh -c 'echo hello | $0 timeout 5 $0 nc 127.0.0.1 {port}' $BB
try kill-build-machine-process $BB kill -KILL {sleeper}
try write-sysctl $BB sh -c 'v=$($0 cat /proc/sys/kernel/core_pattern) && echo "$v" >/proc/sys/kernel/core_pattern' $BB
try remount-image-writable $BB mount -o remount,rw /usr
try mknod-disk $BB mknod /tmp/disk b 8 0
try write-image-outside-boot $BB sh -c 'echo pwned >/etc/evil'
exit 0
"""


@dataclass
class Bait:
    """What the hook reaches for on the build machine."""

    outside: Path  # a folder of the build machine, outside the image
    canary: Path  # a file in it
    listener: socket.socket  # on 127.0.0.1
    sleeper: subprocess.Popen[bytes]  # a process of the build machine

    def plant(self, root: Path, busybox: str) -> None:
        """Put the hook into the image ``root``; ``busybox`` is a busybox inside the image, as the image sees it."""
        hook = root / HOOK
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(HOOK_SCRIPT.format(busybox=busybox, log=LOG, outside=self.outside, canary=self.canary,
                                           port=self.listener.getsockname()[1], sleeper=self.sleeper.pid))
        hook.chmod(0o755)

    def assert_nothing_got_out(self, root: Path) -> None:
        """The hook ran, every attempt failed, and the build machine shows it."""
        log = (root / LOG).read_text()
        assert "busybox: runs" in log, f"the hook never ran its attempts:\n{log}"
        outcomes = {line.split(":")[0]: line for line in log.splitlines()}
        for attempt in ATTEMPTS:
            assert outcomes.get(attempt, "").startswith(f"{attempt}: blocked"), (attempt, log)
        assert self.canary.read_text() == CANARY_TEXT
        assert sorted(os.listdir(self.outside)) == ["canary"], "no file written next to it"
        readable, _, _ = select.select([self.listener], [], [], 0)
        assert not readable, "a connection reached the build machine's listener"
        assert self.sleeper.poll() is None, "the build machine's process was killed"
        assert not (root / "etc/evil").exists()


@contextmanager
def bait(folder: Path) -> Iterator[Bait]:
    """A canary file in ``folder``, a listener on 127.0.0.1 and a sleeping process, all of the build machine."""
    folder.mkdir()
    canary = folder / "canary"
    canary.write_text(CANARY_TEXT)
    listener = socket.socket()
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield Bait(folder, canary, listener, sleeper)
    finally:
        listener.close()
        sleeper.kill()
        sleeper.wait()
