"""Key rotation without a cluster: key generations in keyrings, and what `rotate` and `retire` refuse, with clear messages."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tasks import checks, inventory, luks, rotate
from tasks.provision import CephError, Refused, entity_of
from tasks.render import render_host

from conftest import Site


class _FakeCluster:
    """The few `ceph` answers rotate and retire look at: clients, cephboot's marks, monitor sessions."""

    entity = "client.admin"
    fs_name = "boot"

    def __init__(self, clients: list[str], marks: dict[str, str], sessions: list[str] | None = None) -> None:
        self.clients, self.marks, self.sessions = set(clients), marks, sessions or []
        self.changed: list[tuple[str, ...]] = []

    def ceph_json(self, *args: str) -> object:
        if args[:2] == ("mon", "dump"):
            return {"mons": [{"name": "a"}, {"name": "b"}]}
        assert args[:2] == ("auth", "get"), args
        if args[2] not in self.clients:
            raise CephError(["ceph", *args], 2, "Error ENOENT: failed to find client in keyring")
        return [{"entity": args[2], "caps": {}}]

    def ceph(self, *args: str, input: bytes | None = None) -> str:
        if args[:2] == ("config-key", "get"):
            if args[2] not in self.marks:
                raise CephError(["ceph", *args], 2, "Error ENOENT: error obtaining")
            return self.marks[args[2]]
        if args[:2] == ("config-key", "dump"):
            return json.dumps({k: v for k, v in self.marks.items() if k.startswith(args[2])})
        if args[0] == "tell" and args[2] == "sessions":  # each session is with one monitor: here, b
            return json.dumps([{"entity_name": e, "addrs": "192.0.2.9:0/1"} for e in self.sessions] if args[1] == "mon.b" else [])
        self.changed.append(args)
        return ""

    def rbd(self, *args: str) -> str:
        raise CephError(["rbd", *args], 2, "Error ENOENT")


def _mark(entity: str) -> str:
    return f"cephboot/clients/{entity}"


def test_a_keyring_holds_the_hosts_client_or_one_of_its_key_generations() -> None:
    key = "AQBXc2Vn3AAAABAAsWq0Hxb4vRTKZ3ZgS2Wpnw=="
    assert checks.keyring_entity(f"[client.zephyr]\n\tkey = {key}\n", "zephyr") == ("zephyr", key)
    assert checks.keyring_entity(f"[client.zephyr.r2]\n\tkey = {key}\n", "zephyr") == ("zephyr.r2", key)
    for text in (f"[client.zephyr.r1]\n\tkey = {key}\n", f"[client.zephyr.r02]\n\tkey = {key}\n",
                 f"[client.zephyrr2]\n\tkey = {key}\n", f"[client.notus.r2]\n\tkey = {key}\n"):
        with pytest.raises(checks.Invalid, match=r"expected one \[client.zephyr\] section, or \[client.zephyr.rN\] after `doit rotate`"):
            checks.keyring_entity(text, "zephyr")
    with pytest.raises(checks.Invalid, match="2 such sections found"):
        checks.keyring_entity(f"[client.zephyr]\n\tkey = {key}\n[client.zephyr.r2]\n\tkey = {key}\n", "zephyr")
    assert key not in str(pytest.raises(checks.Invalid, checks.keyring_entity, f"[client.x]\n\tkey = {key}\n", "zephyr").value)


def test_a_client_named_like_a_key_generation_is_refused_by_the_inventory(the_example_site: Site) -> None:
    node = the_example_site.hosts / "nodes" / "zephyr.yaml"
    node.write_text(node.read_text() + "client: zephyr.r2\n")
    (the_example_site.hosts / "keys" / "zephyr.keyring").write_text((the_example_site.hosts / "keys" / "zephyr.keyring")
                                                                     .read_text().replace("[client.zephyr]", "[client.zephyr.r2]"))
    run = the_example_site.doit("render", check=False)
    assert run.returncode != 0
    assert "'zephyr.r2' ends like a key generation (.rN)" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr


def test_a_rotated_keyring_is_what_the_host_boots_with(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """After rotate, the keyring file names client.zephyr.r2: the host maps as it, from the same keyring path."""
    keyring = the_example_site.hosts / "keys" / "zephyr.keyring"
    keyring.write_text(keyring.read_text().replace("[client.zephyr]", "[client.zephyr.r2]"))
    monkeypatch.chdir(the_example_site.root)
    s = inventory.load(the_example_site.root, use_cache=False)
    assert entity_of(s, s.hosts["zephyr"].cfg) == "client.zephyr.r2"
    render_host(s, s.hosts["zephyr"])
    host = the_example_site.build / "hosts" / "zephyr"
    assert "CEPHBOOT_CLIENT='zephyr.r2'" in (host / "initramfs-tools/conf.d/cephboot").read_text()
    assert (host / "rootfs/etc/ceph/ceph.client.zephyr.keyring").read_text().count("[client.zephyr.r2]") == 1
    assert "name=zephyr.r2," in (host / "rootfs/etc/fstab").read_text()


def test_rotating_a_host_that_cephboot_did_not_provision_is_refused(the_example_site: Site) -> None:
    s = inventory.load(the_example_site.root, use_cache=False)
    zephyr = s.hosts["zephyr"]
    with pytest.raises(Refused, match=r"client.zephyr \(the key in hosts/keys/zephyr.keyring\) does not exist on the cluster: "
                       r"the host is not provisioned; `doit provision --only zephyr` makes it"):
        rotate._current(_FakeCluster([], {}), s, zephyr, "rotate")  # type: ignore[arg-type]
    with pytest.raises(Refused, match=r"client.zephyr is not made by cephboot \(cephboot/clients/client.zephyr\); cephboot rotates only"):
        rotate._current(_FakeCluster(["client.zephyr"], {}), s, zephyr, "rotate")  # type: ignore[arg-type]
    with pytest.raises(Refused, match="client.zephyr is marked as made for host 'notus'"):
        rotate._current(_FakeCluster(["client.zephyr"], {_mark("client.zephyr"): "notus"}), s, zephyr, "rotate")  # type: ignore[arg-type]
    assert rotate._current(_FakeCluster(["client.zephyr"], {_mark("client.zephyr"): "zephyr"}), s, zephyr, "rotate") == "client.zephyr"  # type: ignore[arg-type]


def test_generations_are_the_hosts_own_marked_clients_oldest_first(the_example_site: Site) -> None:
    s = inventory.load(the_example_site.root, use_cache=False)
    cluster = _FakeCluster(["client.zephyr", "client.zephyr.r2", "client.zephyr.r10", "client.zephyr.x", "client.zephyrr3"],
                           {_mark("client.zephyr"): "zephyr", _mark("client.zephyr.r10"): "zephyr", _mark("client.zephyr.r2"): "zephyr",
                            _mark("client.zephyr.x"): "zephyr", _mark("client.zephyrr3"): "zephyr", _mark("client.zephyr.r4"): "zephyr"})
    assert rotate.generations(cluster, s.hosts["zephyr"]) == ["client.zephyr", "client.zephyr.r2", "client.zephyr.r10"]  # type: ignore[arg-type]
    assert rotate._next("client.zephyr", "client.zephyr") == "client.zephyr.r2"
    assert rotate._next("client.zephyr.r9", "client.zephyr") == "client.zephyr.r10"


def test_retire_refuses_while_the_host_still_runs_on_its_old_key(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = the_example_site.hosts / "keys" / "notus.keyring"
    keyring.write_text(keyring.read_text().replace("[client.notus]", "[client.notus.r2]"))
    s = inventory.load(the_example_site.root, use_cache=False)
    cluster = _FakeCluster(["client.notus", "client.notus.r2"], {_mark("client.notus"): "notus", _mark("client.notus.r2"): "notus"},
                           sessions=["client.notus", "client.admin"])
    monkeypatch.setattr(rotate, "connect", lambda site: cluster)  # the cluster as its admin, once it answered
    monkeypatch.setattr(rotate, "_served_with_other_keys", lambda site, host: [])
    failed = rotate.retire(s, s.hosts["notus"])
    assert failed is not None
    assert ("retire --only notus: host notus still runs on an old key: client.notus (from 192.0.2.9:0/1) holds a monitor session; "
            "reboot it with its new key") in str(failed.message)
    assert cluster.changed == [], "nothing is removed"
    cluster.sessions = ["client.notus.r2"]
    assert rotate.retire(s, s.hosts["notus"]) is None
    assert cluster.changed == [("auth", "rm", "client.notus"), ("config-key", "rm", _mark("client.notus"))]


def test_rotate_refuses_a_second_rotation_before_the_first_is_retired(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = the_example_site.hosts / "keys" / "notus.keyring"
    before = keyring.read_text().replace("[client.notus]", "[client.notus.r2]")
    keyring.write_text(before)
    s = inventory.load(the_example_site.root, use_cache=False)
    cluster = _FakeCluster(["client.notus", "client.notus.r2"], {_mark("client.notus"): "notus", _mark("client.notus.r2"): "notus"})
    monkeypatch.setattr(rotate, "connect", lambda site: cluster)  # the cluster as its admin, once it answered
    failed = rotate.rotate(s, s.hosts["notus"])
    assert failed is not None
    assert ("rotate --only notus: host notus: an earlier rotation is not retired yet (client.notus still on the cluster besides client.notus.r2); "
            "once the host runs on its current key, `doit retire --only notus` removes it") in str(failed.message)
    assert cluster.changed == [] and keyring.read_text() == before


def test_rotating_or_retiring_an_unknown_host_says_so(the_example_site: Site) -> None:
    for verb in ("rotate", "retire"):
        run = the_example_site.doit(verb, "--only", "nosuch", check=False)
        assert run.returncode != 0
        assert f"cephboot: {verb} --only nosuch: no host 'nosuch' in hosts/nodes/ (no nosuch.yaml); the hosts are: boreas, notus, zephyr" in run.stdout + run.stderr
        assert "Traceback" not in run.stdout + run.stderr


def test_a_luks_header_gets_a_new_slot_and_loses_the_old_one_without_device_mapper(tmp_path: Path) -> None:
    """The cryptsetup steps of rotate and retire on a header file, as they run on the header read from RBD."""
    image, old, new = tmp_path / "image", tmp_path / "old.key", tmp_path / "new.key"
    for f, data in ((old, b"old key\n"), (new, b"new key\n")):
        f.write_bytes(data)
        f.chmod(0o600)
    with image.open("wb") as f:
        f.truncate(luks.HEADER_BYTES + (16 << 20))
    subprocess.run(["cryptsetup", "luksFormat", "--batch-mode", *luks.FORMAT_OPTIONS, "--key-file", str(old), str(image)], check=True,
                   capture_output=True)
    header = tmp_path / "header"
    header.write_bytes(image.read_bytes()[:luks.HEADER_BYTES])
    before = rotate.key_slots(header)
    rotate._cryptsetup("luksAddKey", *luks.KDF_OPTIONS, "--key-file", str(old), str(header), str(new))
    assert rotate.opens(header, old) and rotate.opens(header, new)
    for slot in before:
        rotate._cryptsetup("luksKillSlot", "--key-file", str(new), str(header), slot)
    assert rotate.opens(header, new) and not rotate.opens(header, old)
    with pytest.raises(Refused, match="cryptsetup luksKillSlot failed"):
        rotate._cryptsetup("luksKillSlot", "--key-file", str(new), str(header), "7")
    assert os.stat(header).st_size == luks.HEADER_BYTES
