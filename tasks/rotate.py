"""Give a host new keys (`doit rotate --only <host>`) and remove its old ones once it runs on the new (`doit retire --only <host>`).

A running host's kernel client keeps the cephx entity it mapped its root with, and must
re-authenticate with that entity's key when its monitor ticket is renewed (or its monitor
session is re-opened); a key replaced on the monitors stops its I/O then (measured:
docs/security.md, Rotation).  So a new key is a new *key generation*: a new client entity,
`client.<client>.rN`, with the same caps and a new key, which the inventory's keyring file
then holds; the old entity stays, untouched, until `retire` removes it.  A LUKS host gets a
new key slot opened by a new key file in the same way; the old slot is removed by `retire`.

Keys never reach a command line: cephx keys go to `ceph` on stdin, LUKS keys to cryptsetup
as 0600 files in this run's private build/tmp folder, removed at once.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from doit.exceptions import TaskFailed

from . import examplekeys, luks, publish
from .cephcli import Admin, CephError, connect
from .checks import generation_of
from .fileio import read_regular, tmp_dir, write_if_changed
from .layout import host_dir
from .golden import Refused
from .inventory import Host, InventoryError, Site
from .model import HostView
from .overlay import LAYER, MONOLITHIC
from .provision import CLIENT_MARK, _auth, _mark, entity_of, image_spec, wanted_caps
from .selection import command, per_host_task, say
from .failures import guarded

# image metadata of a LUKS host's root: the key slots that `retire` removes (those of the old key file)
RETIRE_SLOTS = "cephboot.luks.retire"
TOOLS = ("ceph", "rbd", "cryptsetup")


# ---- what the cluster holds of a host ------------------------------------------------

def _base(cfg: HostView) -> str:
    return f"client.{cfg.client}"


def generations(admin: Admin, host: Host) -> list[str]:
    """The host's key generations on the cluster (entities marked as made for it), oldest first."""
    prefix = CLIENT_MARK.format(entity="client.")
    marks = json.loads(admin.ceph("config-key", "dump", prefix) or "{}")
    found = []
    for key, owner in marks.items():
        n = generation_of(host.cfg.client, key[len(prefix):]) if key.startswith(prefix) else 0
        if n and owner == host.name and _auth(admin, key[len(prefix) - len("client."):]) is not None:
            found.append((n, key[len(prefix) - len("client."):]))
    return [e for _, e in sorted(found)]


def _current(admin: Admin, site: Site, host: Host, verb: str) -> str:
    """The entity the host's keyring file holds, once sure that cephboot made it for this host on the cluster."""
    entity = entity_of(site, host.cfg)
    if _auth(admin, entity) is None:
        raise Refused(f"host {host.name}: {entity} (the key in {site.display(host.cfg.keyring)}) does not exist on the cluster: "
                      f"the host is not provisioned; `doit provision --only {host.name}` makes it, then {verb} has something to work on")
    mark = _mark(admin, entity)
    if mark != host.name:
        whose = f"marked as made for host {mark!r}" if mark else "not made by cephboot"
        raise Refused(f"host {host.name}: {entity} is {whose} ({CLIENT_MARK.format(entity=entity)}); cephboot rotates only the keys "
                      f"of clients it made for this host (`doit provision --only {host.name}` says how to adopt a client deliberately)")
    return entity


def _next(entity: str, base: str) -> str:
    n = generation_of(base[len("client."):], entity[len("client."):])
    return f"{base}.r{n + 1}"


def sessions(admin: Admin) -> dict[str, list[str]]:
    """Entity names of the clients holding a session with any monitor, with their addresses.

    Each monitor is asked on its own (a client holds a session with one of them); one that does
    not answer fails the question rather than letting an entity in use look unused.
    """
    out: dict[str, list[str]] = {}
    for mon in admin.ceph_json("mon", "dump")["mons"]:
        for s in json.loads(admin.ceph("tell", f"mon.{mon['name']}", "sessions", "--format", "json") or "[]"):
            name = str(s.get("entity_name") or s.get("name") or "")
            out.setdefault(name, []).append(str(s.get("addrs") or s.get("addr") or "?"))
    return out


# ---- LUKS headers of RBD images, without a kernel client --------------------------------

@contextmanager
def _private_dir() -> Iterator[Path]:
    """An owner-only folder in this run's build/tmp, removed with everything in it."""
    d = Path(tmp_dir()) / f"rotate-{os.getpid()}-{os.urandom(4).hex()}"
    d.mkdir(mode=0o700)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _private_file(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def read_header(admin: Admin, spec: str, out: Path) -> None:
    """The first luks.HEADER_BYTES of image ``spec`` (the LUKS2 header and key slots) into ``out`` (0600)."""
    argv = admin.argv("rbd", ["export", "--no-progress", spec, "-"])
    with open(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as f:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        left = luks.HEADER_BYTES
        while left:
            chunk = proc.stdout.read(min(left, 1 << 20))
            if not chunk:
                break
            f.write(chunk)
            left -= len(chunk)
        proc.kill()  # the rest of the image is not wanted
        err = proc.communicate()[1]
    if left:
        raise CephError(argv, proc.returncode or -1, err.decode(errors="replace") or f"{spec} is shorter than a LUKS2 header")


def write_header(admin: Admin, spec: str, header: Path) -> None:
    """Write ``header`` over the start of image ``spec`` through librbd (`rbd import-diff` of one extent)."""
    data = header.read_bytes()
    # rbd diff v1 (Ceph's doc/dev/rbd-diff.rst): a 'w' record (offset, length, data), then 'e'
    stream = b"rbd diff v1\n" + b"w" + struct.pack("<QQ", 0, len(data)) + data + b"e"
    admin.run("rbd", "import-diff", "--no-progress", "-", spec, input=stream)


def _cryptsetup(*args: str) -> str:
    done = subprocess.run(["cryptsetup", "--batch-mode", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Refused(f"cryptsetup {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def key_slots(header: Path) -> list[str]:
    return sorted(json.loads(_cryptsetup("luksDump", "--dump-json-metadata", str(header)))["keyslots"])


def opens(header: Path, keyfile: Path) -> bool:
    """Whether the key file opens a key slot of the LUKS2 header."""
    done = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file", str(keyfile), str(header)],
                          capture_output=True, check=False)
    return done.returncode == 0


# ---- rotate ----------------------------------------------------------------------------

def rotate(site: Site, host: Host) -> TaskFailed | None:
    """A new key generation for ``host``: a new client with the same caps, a new LUKS key slot; the old ones stay until `retire`."""
    cfg = host.cfg
    missing = [t for t in TOOLS if shutil.which(t) is None and (t != "cryptsetup" or cfg.luks)]
    if missing:
        return TaskFailed(f"{command('rotate', host.name)}: missing {', '.join(missing)} (scripts/setup installs them)")
    try:
        admin = connect(site)
        old = _current(admin, site, host, "rotate")
        others = [g for g in generations(admin, host) if g != old]
        if others:
            raise Refused(f"host {host.name}: an earlier rotation is not retired yet ({', '.join(others)} still on the cluster besides {old}); "
                          f"once the host runs on its current key, `doit retire --only {host.name}` removes it; then rotate again")
        new = _next(old, _base(cfg))
        if _auth(admin, new) is not None:
            raise Refused(f"host {host.name}: {new} already exists on the cluster and is not one of the host's key generations; "
                          "cephboot never takes over a client it did not make")
        spec = image_spec(cfg)
        if cfg.luks and cfg.rbd.image not in {str(n) for n in admin.rbd_json("ls", "--pool", cfg.rbd.pool, "--namespace", cfg.rbd.namespace)}:
            raise Refused(f"host {host.name}: its root image {spec} does not exist, so it has no LUKS key slot to rotate: `doit provision --only {host.name}` makes it")
        key = examplekeys.cephx_secret()
        caps = wanted_caps(cfg, admin.fs_name, admin.fs_data_pool())
        flat = [w for kind in sorted(caps) for w in (kind, caps[kind])]
        admin.ceph("config-key", "set", CLIENT_MARK.format(entity=new), host.name)
        admin.ceph("auth", "add", new, *flat, "-i", "-", input=f"[{new}]\n\tkey = {key}\n".encode())
        say(f"made {new} with a new key and {old}'s caps")
        if cfg.luks:
            _rotate_luks(admin, site, host, spec)
        # the keyring file last: until here the host's files still name the old generation,
        # and a rerun finds the old entity current and refuses with the half-made new one named
        write_if_changed(Path(site.path_str(cfg.keyring)), f"[{new}]\n\tkey = {key}\n".encode(), 0o600, durable=True)
        key = ""
        say(f"wrote {new}'s key to {site.display(cfg.keyring)}; {old}"
              f"{' and the old LUKS key slot stay' if cfg.luks else ' stays'} until `doit retire --only {host.name}`. "
              f"Next: `doit` publishes the new keys (and removes the previous generation, which holds the old ones), "
              f"reboot {host.name}, then `doit retire --only {host.name}`")
    except (Refused, CephError, InventoryError) as e:
        return TaskFailed(f"{command('rotate', host.name)}: {e}")
    return None


def _rotate_luks(admin: Admin, site: Site, host: Host, spec: str) -> None:
    """A key slot for a new key file in the root's LUKS2 header (authorized by the current key file); the inventory's key file becomes the new one."""
    cfg = host.cfg
    keyfile = Path(site.path_str(cfg.luks.keyfile))
    with _private_dir() as tmp:
        header = tmp / "header"
        read_header(admin, spec, header)
        if not opens(header, keyfile):
            raise Refused(f"host {host.name}: {site.display(cfg.luks.keyfile)} (luks.keyfile) does not open the LUKS2 header of {spec}; "
                          "rotation needs the key the image was made with")
        before = key_slots(header)
        new_key = _private_file(tmp / "new.key", base64.b64encode(os.urandom(48)) + b"\n")
        _cryptsetup("luksAddKey", *luks.KDF_OPTIONS, "--key-file", str(keyfile), str(header), str(new_key))
        added = sorted(set(key_slots(header)) - set(before))
        write_header(admin, spec, header)
        admin.rbd("image-meta", "set", spec, RETIRE_SLOTS, ",".join(before))
        write_if_changed(keyfile, new_key.read_bytes(), 0o600, durable=True)
    say(f"added LUKS key slot {','.join(added)} to {spec} for a new key, written to {site.display(cfg.luks.keyfile)} "
          f"(slot {','.join(before)} of the old key stays until `doit retire --only {host.name}`)")


# ---- retire ----------------------------------------------------------------------------

def retire(site: Site, host: Host) -> TaskFailed | None:
    """Remove the host's old key generations (clients, LUKS key slots) once no monitor session uses them."""
    cfg = host.cfg
    try:
        admin = connect(site)
        current = _current(admin, site, host, "retire")
        old = [g for g in generations(admin, host) if g != current]
        spec = image_spec(cfg)
        slots = ""
        if cfg.luks:
            try:
                slots = admin.rbd("image-meta", "get", spec, RETIRE_SLOTS).strip()
            except CephError as e:
                if not e.not_found:
                    raise
        if not old and not slots:
            say(f"nothing to retire: {current} is its only key generation")
            return None
        served = _served_with_other_keys(site, host)
        if served:
            raise Refused(f"host {host.name}: the published {', '.join(served)} of the host hold(s) other keys than its current ones; "
                          f"`doit` publishes the current ones (and removes the previous generation), then retire again")
        live = sessions(admin)
        running = [f"{g} (from {', '.join(live[g])})" for g in old if g in live]
        if running:
            raise Refused(f"host {host.name} still runs on an old key: {', '.join(running)} holds a monitor session; "
                          f"reboot it with its new key (`doit` published it) and run `doit retire --only {host.name}` again")
        if slots:
            _retire_luks(admin, site, host, spec, slots)
        for g in old:
            admin.ceph("auth", "rm", g)
            admin.ceph("config-key", "rm", CLIENT_MARK.format(entity=g))
            say(f"removed {g} (its key no longer authenticates); {current} stays")
    except (Refused, CephError, InventoryError) as e:
        return TaskFailed(f"{command('retire', host.name)}: {e}")
    return None


def _served_with_other_keys(site: Site, host: Host) -> list[str]:
    """The host's published layers (current and previous/) whose keys are not those of its layer built now."""
    built = publish.layer_secrets(read_regular(host_dir(host.name) / LAYER))
    folder = publish.tree_root(site.settings) / "hosts" / host.name
    found = []
    for rel in (LAYER, MONOLITHIC, f"{publish.PREVIOUS}/{LAYER}", f"{publish.PREVIOUS}/{MONOLITHIC}"):
        try:  # the tree is the publisher's, but never follow a link in it
            fd = os.open(folder / rel, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        except OSError:
            found.append(rel)
            continue
        with os.fdopen(fd, "rb") as f:
            data = f.read(publish.LAYER_LIMIT)
        if publish.layer_secrets(data) != built:
            found.append(rel)
    return found


def _retire_luks(admin: Admin, site: Site, host: Host, spec: str, slots: str) -> None:
    keyfile = Path(site.path_str(host.cfg.luks.keyfile))
    with _private_dir() as tmp:
        header = tmp / "header"
        read_header(admin, spec, header)
        if not opens(header, keyfile):
            raise Refused(f"host {host.name}: {site.display(host.cfg.luks.keyfile)} does not open {spec}'s LUKS2 header; "
                          "refusing to remove key slots without a working key")
        wanted = [s for s in slots.split(",") if re.fullmatch(r"[0-9]+", s)]
        gone = [s for s in wanted if s in key_slots(header)]
        for s in gone:
            _cryptsetup("luksKillSlot", "--key-file", str(keyfile), str(header), s)
        if not opens(header, keyfile):  # never write a header the current key cannot open
            raise Refused(f"host {host.name}: after removing slot(s) {','.join(gone)} the current key would not open {spec}; nothing written")
        write_header(admin, spec, header)
        admin.rbd("image-meta", "remove", spec, RETIRE_SLOTS)
    say(f"removed LUKS key slot {','.join(gone) or '(none left)'} of {spec}; the current key file opens it")


# ---- tasks -----------------------------------------------------------------------------------

@guarded
def task_rotate() -> dict[str, Any]:
    """`doit rotate --only HOST,@PROFILE,*`: a new cephx key generation (and LUKS key slot) for each host; the old keys keep working until `doit retire --only HOST`."""
    return per_host_task("rotate", "Give hosts new keys; the old ones work until retired (--only required; not a default task).",
                         rotate, "the hosts to give new keys", task_dep=("render:hosts",), required=True)


@guarded
def task_retire() -> dict[str, Any]:
    """`doit retire --only HOST,@PROFILE,*`: remove each host's old key generations once it runs on its new key."""
    return per_host_task("retire", "Remove hosts' old keys once they run on their new ones (--only required; not a default task).",
                         retire, "the hosts whose old keys to retire",
                         task_dep=("publish",), required=True)  # the current keys published, the previous generation gone
