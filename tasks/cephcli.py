"""Run the ceph, rbd and ceph-fuse command-line tools as the site's admin, with a generated ceph.conf.

Why the command-line tools and not the librados/librbd/libcephfs Python bindings:
Debian ships the bindings (python3-rados, python3-rbd, python3-cephfs) for the
system's /usr/bin/python3 only; cephboot runs in its own virtualenv, which cannot
import them, and PyPI has no wheels of them.  The tools come with ceph-common,
which the build machine has anyway (the initrd carries its `rbd`), they print
JSON with `--format json`, and their messages are the ones an operator knows.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .fileio import open_regular, open_to_write, read_regular, write_if_changed
from .checks import MAX_KEYRING, first_client, secret_owners, swappable
from .inventory import Site
from .failures import ClusterWide
from .layout import PROVISION
from .model import kind
from .quoting import UnsafeValue, quote
from .schema import Invalid

CONNECT_TIMEOUT = 30  # seconds a ceph command waits for the monitors
COMMAND_TIMEOUT = 600  # a whole command, e.g. an `rbd import` of a large root image


class CephError(RuntimeError):
    """A ceph/rbd command failed; the message holds the command and what it printed."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"`{' '.join(argv)}` exited {returncode}: {self.stderr or '(no message)'}")

    @property
    def not_found(self) -> bool:
        return self.returncode == 2 or "No such file or directory" in self.stderr or "ENOENT" in self.stderr


ADMIN_KEYRING = "hosts/site.yaml: ceph.admin_keyring"
ADMIN_EXPECTED = ("expected the admin's keyring, mode 0600, no link: a [client.NAME] section with its key, "
                  "e.g. a copy of /etc/ceph/ceph.client.admin.keyring from a monitor")


def admin_keyring(site: Site) -> tuple[Path, str]:
    """(path, entity) of the site's admin keyring: the one reader of ``ceph.admin_keyring``.

    Checked as a host's keyring is (tasks/checks.py): its folders (from hosts/ down, or the one
    that holds an absolute path) no other user owns or may write; a regular file (a link in its
    place is not followed, a FIFO does not block), this user's or root's, owner-only, holding a
    ``[client.NAME]`` section (the first one is the identity; a ``[mon.]`` before it is not) with
    a cephx key.  Otherwise ClusterWide with one line naming hosts/site.yaml and the key, never
    quoting the file: no host would get further."""
    rel = site.settings["ceph"]["admin_keyring"]
    if not rel:
        raise ClusterWide(f"{ADMIN_KEYRING}: missing; provisioning needs ceph.admin_keyring in hosts/site.yaml ({ADMIN_EXPECTED})")
    path = site.path_str(rel)

    def refuse(why: str) -> ClusterWide:
        return ClusterWide(f"{ADMIN_KEYRING}: {site.display(rel)}: {why}; {ADMIN_EXPECTED}")

    parts = rel.split("/")
    folders = [os.path.dirname(path)] if rel.startswith("/") else [f"{site.root}/hosts/{'/'.join(parts[:i])}".rstrip("/") for i in range(len(parts))]
    for folder in folders:
        try:
            st = os.stat(folder)
        except OSError:
            continue  # the open below says what is missing
        risk = swappable(st.st_mode, st.st_uid)
        if risk:
            raise refuse(f"its folder {folder} is {risk}: another user could swap the admin's key (chmod go-w, chown)")
    try:
        with open_regular(path) as f:  # never through a link, never blocking on a FIFO
            st = os.fstat(f.fileno())
            if st.st_mode & 0o077:
                raise refuse(f"mode {stat.S_IMODE(st.st_mode):04o} lets group/others read the admin's key (chmod 600 {path})")
            if st.st_uid not in secret_owners():
                raise refuse(f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}) or root: its owner could read "
                             f"and choose the admin's key (chown {os.geteuid()} {path})")
            raw = f.read(MAX_KEYRING + 1)
    except FileNotFoundError:
        raise refuse("file not found") from None
    except OSError as e:
        raise refuse(e.strerror or str(e)) from None
    if len(raw) > MAX_KEYRING:
        raise refuse(f"more than {MAX_KEYRING} bytes, too big for a keyring")
    try:
        entity, _ = first_client(raw.decode(errors="replace"))
    except Invalid as e:
        raise refuse(str(e)) from None
    return Path(path).resolve(), entity  # the file itself is no link: resolved, the folders on the way


def connect(site: Site) -> Admin:
    """The site's cluster as its admin, once it answered as the cluster the inventory names.

    Raises ClusterWide when it cannot (monitors unreachable, the admin's key refused, another
    cluster answering, no usable admin keyring): a per-host command stops there, since no other
    host would get further (tasks/selection.py run_hosts)."""
    try:
        admin = Admin(site)  # ClusterWide itself when the admin keyring is not usable
        admin.check_fsid()
    except CephError as e:
        raise ClusterWide(f"the cluster did not answer its admin ({', '.join(site.settings['ceph']['mon_host'])}): {e}") from None
    except SystemExit as e:
        raise ClusterWide(str(e.code).removeprefix("cephboot: ")) from None
    return admin


def private_run_dir(path: Path) -> None:
    """Make ``path`` (under the shared /tmp: the admin sockets' and ceph-fuse's pid files of every
    admin tool) owner-only, or take it only as a folder of this user's that nobody else may
    enter: another local user who made it first could read the admin's sockets, or block
    provisioning with a file there.  Else SystemExit with one line naming it."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise SystemExit(f"cephboot: {path}: {e.strerror}; expected to make a folder there for the admin tools' sockets") from None
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        what = (kind(st.st_mode) if not stat.S_ISDIR(st.st_mode) else f"owned by uid {st.st_uid}" if st.st_uid != os.geteuid()
                else f"mode {stat.S_IMODE(st.st_mode):04o}")
        raise SystemExit(f"cephboot: {path} is {what}; expected a folder of this user's (uid {os.geteuid()}) that only it may enter, "
                         "for the admin tools' sockets: another user may have made it first; remove it")


class Admin:
    """The cluster as the admin sees it: ``ceph``/``rbd`` calls with a conf generated from the site.
    Made only from a usable admin keyring (admin_keyring(): ClusterWide otherwise), before any Ceph I/O."""

    def __init__(self, site: Site):
        ceph = site.settings["ceph"]
        self.keyring, self.entity = admin_keyring(site)
        self.fsid = ceph["fsid"]
        self.fs_name = ceph["fs_name"]
        self.dir = (site.root / PROVISION).resolve()
        self.conf = self.dir / "ceph.conf"
        self.run_dir = Path(tempfile.gettempdir()) / f"cephboot-{os.getuid()}"  # admin sockets: 107-byte path limit
        try:  # an INI file that Ceph expands ($name, $pid: ours); the paths may not add to it
            text = (
                "# generated by cephboot from hosts/site.yaml (tasks/cephcli.py) for provisioning; do not edit\n"
                "[global]\n"
                f"fsid = {quote(self.fsid, 'ini')}\n"
                f"mon_host = {quote(','.join(ceph['mon_host']), 'ini')}\n"
                f"keyring = {quote(self.keyring, 'ini')}\n"
                f"log file = {quote(self.dir, 'ini')}/log/$name.$pid.log\n"
                f"admin socket = {quote(self.run_dir, 'ini')}/$name.$pid.asok\n"
            )
        except UnsafeValue as e:
            raise SystemExit(f"cephboot: provisioning's ceph.conf: the path of ceph.admin_keyring in hosts/site.yaml, of the site "
                             f"folder or of the temporary folder {e}; expected a path Ceph reads as it is") from None
        write_if_changed(self.conf, text.encode())
        (self.dir / "log").mkdir(exist_ok=True)
        private_run_dir(self.run_dir)

    # ---- running the tools

    def argv(self, program: str, args: Sequence[str]) -> list[str]:
        return [program, "--conf", str(self.conf), "--name", self.entity, *args]

    def run(self, program: str, *args: str, input: bytes | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
        argv = self.argv(program, args)
        if program == "ceph":
            argv[1:1] = ["--connect-timeout", str(CONNECT_TIMEOUT)]
        try:
            done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise CephError(argv, -1, f"no answer within {timeout:.0f} s (are the monitors in ceph.mon_host reachable?)") from None
        if done.returncode != 0:
            raise CephError(argv, done.returncode, done.stderr.decode(errors="replace"))
        return done.stdout.decode(errors="replace")

    def ceph(self, *args: str, input: bytes | None = None) -> str:
        return self.run("ceph", *args, input=input)

    def ceph_json(self, *args: str) -> Any:
        return json.loads(self.ceph(*args, "--format", "json") or "null")

    def rbd(self, *args: str) -> str:
        return self.run("rbd", *args)

    def rbd_json(self, *args: str) -> Any:
        return json.loads(self.rbd(*args, "--format", "json") or "null")

    # ---- facts

    def check_fsid(self) -> None:
        """Refuse to touch a cluster other than the one the inventory names."""
        found = self.ceph("fsid").strip()
        if found != self.fsid:
            raise SystemExit(f"cephboot: the monitors in ceph.mon_host answer for cluster {found}, but hosts/site.yaml says ceph.fsid {self.fsid}; refusing to provision the wrong cluster")

    def pools(self) -> list[str]:
        return [str(p) for p in self.ceph_json("osd", "pool", "ls")]

    def fs_data_pool(self) -> str:
        """The default data pool of the site's CephFS (where new files' objects go)."""
        for fs in self.ceph_json("fs", "ls"):
            if fs["name"] == self.fs_name:
                return str(fs["data_pools"][0])
        raise SystemExit(f"cephboot: the cluster has no CephFS named {self.fs_name!r} (ceph.fs_name in hosts/site.yaml)")

    # ---- CephFS without a kernel client

    @contextmanager
    def cephfs(self) -> Iterator[Path]:
        """The site's CephFS mounted as the admin with ceph-fuse, for as long as the block runs.

        The build machine's kernel need not have the ceph module; ceph-fuse needs
        /dev/fuse only.  It gets a pid file and an admin socket of its own, so it
        never fights another ceph-fuse of the same client name.
        """
        if shutil.which("ceph-fuse") is None:
            raise SystemExit("cephboot: provisioning needs ceph-fuse to create /boot directories on CephFS (apt-get install ceph-fuse)")
        mnt = Path(tempfile.mkdtemp(prefix="cephfs-", dir=self.dir))
        tag = f"fuse-{os.getpid()}-{mnt.name}"
        argv = self.argv("ceph-fuse", [
            "-f", f"--client_fs={self.fs_name}", "-r", "/",
            "--pid-file", str(self.run_dir / f"{tag}.pid"),
            "--admin-socket", str(self.run_dir / f"{tag}.asok"),
            "--client_mount_timeout", str(CONNECT_TIMEOUT),
            str(mnt),
        ])
        log = open_to_write(self.dir / "log" / f"{tag}.out")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_mounted(proc, mnt, CONNECT_TIMEOUT + 10, self.dir / "log" / f"{tag}.out")
            yield mnt
        finally:
            if os.path.ismount(mnt):
                subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
            stop(proc, 20)
            if os.path.ismount(mnt):
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
            log.close()
            try:
                mnt.rmdir()
            except OSError:
                pass


def wait_mounted(proc: subprocess.Popen[bytes], path: Path, timeout: float, log: Path) -> None:
    """Wait until the FUSE daemon ``proc`` has mounted ``path``; CephError with the end of its ``log`` if it exits or times out first."""
    deadline = time.monotonic() + timeout
    while not os.path.ismount(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise CephError([str(a) for a in proc.args], proc.returncode if proc.returncode is not None else -1,
                            read_regular(log).decode(errors="replace")[-2000:] or f"{path} was not mounted")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Let a daemon we started end within ``grace`` seconds, then SIGTERM it, then SIGKILL it; always reaped."""
    for signal_it in (None, proc.terminate, proc.kill):
        if signal_it is not None:
            signal_it()
        try:
            proc.wait(grace if signal_it is None else 10)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
