"""A single-node Ceph cluster (mon, mgr, one OSD, MDS + CephFS) inside the test namespace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.inventory import validate
from tasks.model import host_view
from tasks.provision import boot_namespace, tree_caps, wanted_caps
from tasks.schema import HOST

from .netns import NetworkNamespace
from .procs import StartedProcess, wait_until

MON_ID = "a"
MGR_ID = "x"
MDS_ID = "a"
OSD_BLOCK_BYTES = 4 * 1024**3  # sparse: only what is written takes space

# The CephFS that holds the boot tree and every host's /boot. The pool names are the
# ones `ceph fs volume create` would choose; the pools are made directly with `fs new`
# so that the cluster does not wait for the mgr's volumes module to load.
FS_NAME = "boot"
FS_METADATA_POOL = f"cephfs.{FS_NAME}.meta"
FS_DATA_POOL = f"cephfs.{FS_NAME}.data"


def _ceph_conf(fsid: str, address: str, prefix: int, base: Path, run: Path) -> str:
    return f"""\
# written by tests/e2e/ceph_cluster.py for one test session
[global]
fsid = {fsid}
mon initial members = {MON_ID}
mon host = [v2:{address}:3300,v1:{address}:6789]
public network = {address}/{prefix}
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {base}/keyring/$cluster.$name.keyring
run dir = {run}
admin socket = {run}/$cluster-$name.$pid.asok
log file = {base}/log/$cluster-$name.log
pid file = {run}/$cluster-$name.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mds tick interval = 1

[mon]
mon data = {base}/mon/$cluster-$id
keyring = $mon_data/keyring

[mgr]
mgr data = {base}/mgr/$cluster-$id

[osd]
osd data = {base}/osd/$cluster-$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {OSD_BLOCK_BYTES}
osd memory target = 1073741824

[mds]
mds data = {base}/mds/$cluster-$id
"""


@dataclass(frozen=True)
class CephClient:
    """A cephx identity: ``client.<id>``, its key, and a keyring file holding it."""

    id: str
    key: str
    keyring: Path

    @property
    def name(self) -> str:
        return f"client.{self.id}"


class CephCluster:
    """Starts, drives and stops the daemons; every command runs inside ``netns``."""

    def __init__(self, netns: NetworkNamespace, base: Path, run: Path) -> None:
        self.netns = netns
        self.base = base
        self.run_dir = run
        self.fsid = str(uuid.uuid4())
        self.conf = base / "ceph.conf"
        self.daemons: dict[str, StartedProcess] = {}
        self._admin_fs: Any = None  # a CephFuseMount of the whole fs, made on first use

    # ----- addresses, as a site inventory would name them

    @property
    def address(self) -> str:
        return self.netns.address

    @property
    def mon_host(self) -> str:
        """The ``mon_host`` value of ceph.conf (msgr2 and legacy addresses)."""
        return f"[v2:{self.address}:3300,v1:{self.address}:6789]"

    @property
    def mon_addresses_v1(self) -> list[str]:
        """``ADDR:6789`` for the kernel client's old device-string form."""
        return [f"{self.address}:6789"]

    @property
    def admin_keyring(self) -> Path:
        return self.base / "keyring" / "ceph.client.admin.keyring"

    # ----- commands

    def ceph(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """``ceph ARGS`` as client.admin; stdout."""
        return self.netns.run(
            ["ceph", "--conf", str(self.conf), *args], check=check, timeout=timeout
        ).stdout

    def ceph_json(self, *args: str) -> Any:
        return json.loads(self.ceph(*args, "--format", "json"))

    def rbd(
        self, *args: str, client: CephClient | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``rbd ARGS`` as client.admin, or as ``client`` with only its own keyring."""
        return self._as_client("rbd", args, client, check)

    def rados(
        self, *args: str, client: CephClient | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``rados ARGS``, the same way as ``rbd``."""
        return self._as_client("rados", args, client, check)

    def _as_client(
        self, program: str, args: tuple[str, ...], client: CephClient | None, check: bool
    ) -> subprocess.CompletedProcess[str]:
        who = [] if client is None else ["--id", client.id, "--keyring", str(client.keyring)]
        return self.netns.run([program, "--conf", str(self.conf), *who, *args], check=check)

    def _tool(self, *argv: str) -> None:
        """A ceph bootstrap tool, run inside the namespace (some of them dial the mon)."""
        self.netns.run(argv)

    # ----- start

    def start(self) -> None:
        for sub in ("keyring", "log", "mon", "mgr", "osd", "mds"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            _ceph_conf(self.fsid, self.address, self.netns.prefix, self.base, self.run_dir)
        )
        self._make_monitor()
        self.start_monitor()
        self._start_mgr()
        self._start_osd()
        self._start_mds()

    def _make_monitor(self) -> None:
        mon_keyring = self.base / "mon.keyring"
        self._tool("ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key",
                   "-n", "mon.", "--cap", "mon", "allow *")
        self._tool("ceph-authtool", "--create-keyring", str(self.admin_keyring), "--gen-key",
                   "-n", "client.admin", "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                   "--cap", "mds", "allow *", "--cap", "mgr", "allow *")
        self.admin_keyring.chmod(0o600)
        self._tool("ceph-authtool", str(mon_keyring), "--import-keyring", str(self.admin_keyring))
        monmap = self.base / "monmap"
        self._tool("monmaptool", "--create", "--fsid", self.fsid,
                   "--addv", MON_ID, self.mon_host, str(monmap))
        self._tool("ceph-mon", "--conf", str(self.conf), "--mkfs", "-i", MON_ID,
                   "--monmap", str(monmap), "--keyring", str(mon_keyring))

    def _daemon(self, kind: str, ident: str) -> StartedProcess:
        name = f"{kind}.{ident}"
        process = self.netns.start(
            name,
            [f"ceph-{kind}", "-f", "--conf", str(self.conf), "-i", ident],
            self.base / "log" / f"{name}.stdout",
        )
        self.daemons[name] = process
        return process

    def start_monitor(self) -> None:
        """Start (or restart, with the same arguments) the monitor; wait for quorum."""
        mon = self._daemon("mon", MON_ID)
        wait_until(self._quorum, 60, "the monitor's quorum", watch=[mon])

    def stop_monitor(self, grace: float = 20) -> None:
        """SIGTERM the monitor by PID and wait for it to exit (for the fault scenario);
        SIGKILL after ``grace`` seconds (0: at once, a monitor that vanishes)."""
        self.daemons.pop(f"mon.{MON_ID}").stop(grace=grace)

    def _quorum(self) -> bool:
        done = self.netns.run(
            ["ceph", "--conf", str(self.conf), "--connect-timeout", "5", "quorum_status"],
            check=False,
            timeout=30,
        )
        return done.returncode == 0

    def _get_or_create_key(self, entity: str, caps: list[str], keyring: Path) -> None:
        self.ceph("auth", "get-or-create", entity, *caps, "-o", str(keyring))
        keyring.chmod(0o600)

    def _start_mgr(self) -> None:
        (self.base / "mgr" / f"ceph-{MGR_ID}").mkdir(exist_ok=True)
        self._get_or_create_key(
            f"mgr.{MGR_ID}",
            ["mon", "allow profile mgr", "osd", "allow *", "mds", "allow *"],
            self.base / "keyring" / f"ceph.mgr.{MGR_ID}.keyring",
        )
        self._daemon("mgr", MGR_ID)

    def _start_osd(self) -> None:
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid).strip()
        (self.base / "osd" / f"ceph-{osd_id}").mkdir(exist_ok=True)
        keyring = self.base / "keyring" / f"ceph.osd.{osd_id}.keyring"
        self._tool("ceph-authtool", "--create-keyring", str(keyring), "--gen-key",
                   "-n", f"osd.{osd_id}")
        self.ceph("auth", "add", f"osd.{osd_id}", "osd", "allow *", "mon", "allow profile osd",
                  "mgr", "allow profile osd", "-i", str(keyring))
        self._tool("ceph-osd", "--conf", str(self.conf), "-i", osd_id, "--mkfs",
                   "--osd-uuid", osd_uuid)
        osd = self._daemon("osd", osd_id)
        wait_until(lambda: self.ceph_json("osd", "stat")["num_up_osds"] == 1, 90,
                   "the OSD to be up", interval=0.5, watch=[osd])

    def _start_mds(self) -> None:
        self.ceph("osd", "pool", "create", FS_METADATA_POOL)
        self.ceph("osd", "pool", "create", FS_DATA_POOL)
        self.ceph("fs", "new", FS_NAME, FS_METADATA_POOL, FS_DATA_POOL)
        (self.base / "mds" / f"ceph-{MDS_ID}").mkdir(exist_ok=True)
        self._get_or_create_key(
            f"mds.{MDS_ID}",
            ["mon", "allow profile mds", "osd", "allow rwx", "mds", "allow",
             "mgr", "allow profile mds"],
            self.base / "keyring" / f"ceph.mds.{MDS_ID}.keyring",
        )
        mds = self._daemon("mds", MDS_ID)
        wait_until(self._fs_active, 90, "the MDS to be active", interval=0.5, watch=[mds])

    def _fs_active(self) -> bool:
        fs = self.ceph_json("fs", "get", FS_NAME)
        return any(info["state"] == "up:active" for info in fs["mdsmap"]["info"].values())

    # ----- stop

    def stop(self) -> None:
        """Stop every daemon by PID: the others together first, the monitor last."""
        others = [name for name in self.daemons if not name.startswith("mon.")]
        for name in others:
            self.daemons[name].signal(signal.SIGTERM)
        for name in others:
            # The MDS may take 6-12 s to stop after SIGTERM; stop() then SIGKILLs.
            self.daemons.pop(name).stop(grace=20)
        for name in list(self.daemons):
            self.daemons.pop(name).stop(grace=20)

    # ----- what the scenarios need

    def create_rbd_pool(self, pool: str) -> None:
        self.ceph("osd", "pool", "create", pool)
        self.rbd("pool", "init", pool)

    def create_rbd_namespace(self, pool: str, namespace: str) -> None:
        self.rbd("namespace", "create", f"{pool}/{namespace}")

    def create_client(self, client_id: str, caps: dict[str, str], keyring: Path) -> CephClient:
        """A cephx client with exactly ``caps`` (``{"mon": "...", "osd": ..., ...}``).

        Its keyring is written to ``keyring``, mode 0600.
        """
        entity = f"client.{client_id}"
        flat = [word for kind_caps in caps.items() for word in kind_caps]
        self.ceph("auth", "get-or-create", entity, *flat)
        # `auth caps` replaces the caps of a client that existed already.
        self.ceph("auth", "caps", entity, *flat)
        keyring.parent.mkdir(parents=True, exist_ok=True)
        self.ceph("auth", "get", entity, "-o", str(keyring))
        keyring.chmod(0o600)
        key = self.ceph("auth", "get-key", entity).strip()
        return CephClient(client_id, key, keyring)

    def boot_dir_namespace(self, fs_path: str) -> str:
        """The RADOS namespace that holds the file objects of CephFS dir ``fs_path`` (provisioning's encoding)."""
        return boot_namespace(fs_path)

    def make_fs_dir(self, fs_path: str) -> str:
        """Create ``fs_path`` on the CephFS with a RADOS namespace of its own.

        The namespace is set before any file goes in, so that a client whose OSD cap
        names only that namespace reads its own files and no one else's.
        """
        root = self.admin_fs().mountpoint
        directory = root / fs_path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        namespace = self.boot_dir_namespace(fs_path)
        os.setxattr(directory, "ceph.dir.layout.pool_namespace", namespace.encode())
        return namespace

    def create_host_client(
        self, host: str, pool: str, namespace: str, boot_dir: str, keyring: Path
    ) -> CephClient:
        """Host ``host``'s client with the caps provisioning gives: its RBD namespace and its own /boot directory, no more."""
        self.make_fs_dir(boot_dir)
        raw = {"nics": {"ceph": {"macs": ["52:54:00:00:00:01"], "address": "dhcp"}},
               "rbd": {"pool": pool, "namespace": namespace}, "boot_path": boot_dir}
        problems: list[str] = []
        record = validate(HOST, raw, {}, f"(the e2e host {host})", problems)
        assert not problems, problems
        return self.create_client(host, wanted_caps(host_view(record), FS_NAME, FS_DATA_POOL), keyring)

    def create_publisher_client(self, boot_tree: str, keyring: Path) -> CephClient:
        """The publisher (docs/security.md): read-write on the boot tree and its one RADOS namespace only."""
        self.make_fs_dir(boot_tree)
        caps = tree_caps(FS_NAME, FS_DATA_POOL, boot_tree, write=True)
        return self.create_client("cephboot-publisher", caps, keyring)

    def create_web_server_client(
        self, boot_tree: str, keyring: Path, client_id: str = "cephboot-web"
    ) -> CephClient:
        """The web server (docs/security.md): reads the boot tree and its RADOS namespace, writes nothing."""
        caps = tree_caps(FS_NAME, FS_DATA_POOL, boot_tree, write=False)
        return self.create_client(client_id, caps, keyring)

    def admin_fs(self) -> Any:
        """A ceph-fuse mount of the whole CephFS as client.admin (made on first use)."""
        if self._admin_fs is None:
            from .boot_tree import CephFuseMount

            admin = CephClient("admin", "", self.admin_keyring)
            mount = CephFuseMount(self, admin, "/", self.base / "admin-fs")
            mount.start()
            self._admin_fs = mount
        return self._admin_fs

    def unmount_admin_fs(self) -> None:
        if self._admin_fs is not None:
            self._admin_fs.stop()
            self._admin_fs = None
