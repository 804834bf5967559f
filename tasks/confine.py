"""Run code from an image (a host's root tree) confined with bubblewrap: it sees the image and nothing else of the build machine.

An image is a host's data, and so is every program in it: its update-initramfs, its
initramfs-tools hooks, its post-update scripts. They run here as root, so they run
inside `bwrap` (Debian's bubblewrap), which builds the sandbox from namespaces and
pivot_root, not chroot (a chroot keeps the build machine's files one `chroot ..`
away, and its /proc leads out through /proc/<pid>/root):

- new mount, PID, IPC, UTS, cgroup and network namespaces: the program sees the image's
  top-level entries (read-only), fresh /proc (its own PIDs only; /proc/sys read-only),
  a minimal /dev, an empty /tmp, and nothing else; the network is a loopback of its own;
- the only writable folders are the image's own outputs (``writable``, e.g. /boot);
- root without the capabilities that reach past those files (no CAP_SYS_ADMIN: no
  mount, unshare or setns; no CAP_SYS_MODULE, CAP_MKNOD, CAP_SYS_TIME, ...), and
  no_new_privs, so no setuid or file-capability program in the image gives them back;
- a clean environment; killed with its caller (``--die-with-parent``).

bwrap and not `unshare` (util-linux): unshare --root is a chroot. Not systemd-nspawn: it
boots or registers a machine, wants a tree that looks like one, and is heavier. No user
namespace: bwrap maps only root into one, so files of other owners in the image could
not be copied with their owner (`cp -p` in mkinitramfs fails); root stays root, and
the capability list below bounds it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

BWRAP = "bwrap"
# What mkinitramfs needs as root on the image's own files (cp -p keeps owners and modes,
# ldconfig -r chroots into its work tree); every other capability is dropped.
KEPT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_SYS_CHROOT")
FRESH = ("proc", "dev", "tmp")  # top-level entries the sandbox makes its own, whatever the image has there
HOSTNAME = "cephboot-image"


class ConfineError(Exception):
    """The sandbox cannot be set up; the message says why."""


def bwrap() -> str:
    path = shutil.which(BWRAP)
    if path is None:
        raise ConfineError("bubblewrap is not installed: cephboot runs an image's own code only inside `bwrap` "
                           "(apt-get install bubblewrap; scripts/setup installs it)")
    return path


def _checked(root: Path, folder: Path) -> Path:
    """``folder``, if it is a real folder strictly inside ``root`` (its links already resolved inside the image)."""
    if folder == root or root not in folder.parents:
        raise ConfineError(f"{folder} is not a folder inside {root}")
    if folder.is_symlink() or not folder.is_dir():
        raise ConfineError(f"{folder} is not a folder")
    return folder


def argv(root: Path, command: Sequence[str], writable: Sequence[Path] = (), env: Mapping[str, str] | None = None) -> list[str]:
    """The bwrap command line that runs ``command`` inside the image ``root``, with the folders ``writable`` (under ``root``) writable."""
    args = [bwrap(), "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", HOSTNAME, "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    for cap in KEPT_CAPS:
        args += ["--cap-add", cap]
    # The sandbox's / is a fresh tmpfs; the image's top-level entries are put into it one by
    # one, so that /proc, /dev and /tmp never create or cover anything inside the image.
    for entry in sorted(os.listdir(root)):
        path = root / entry
        if entry in FRESH or path in writable:  # a read-only mount under the writable one would show in /proc/mounts
            continue
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{entry}"]
        elif path.is_dir() or path.is_file():
            args += ["--ro-bind", str(path), f"/{entry}"]
    args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",  # bwrap leaves sysctls writable by root
             "--dev", "/dev", "--tmpfs", "/tmp"]
    for folder in writable:  # last: nothing mounted after them covers them
        args += ["--bind", str(_checked(root, folder)), "/" + str(folder.relative_to(root))]
    args += ["--chdir", "/", "--clearenv"]
    for key, value in {"TMPDIR": "/tmp", **(env or {})}.items():
        args += ["--setenv", key, value]
    return [*args, "--", *command]


def run(root: Path, command: Sequence[str], writable: Sequence[Path] = (), env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (a program inside the image) confined to the image ``root``; its output is captured."""
    return subprocess.run(argv(root, command, writable, env), capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
