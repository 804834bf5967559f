"""Host layers: reproducible newc archives of one host's files; cost follows change."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builtsite import HOSTS, a_built_site, archive_names, kver, the_built_example  # noqa: F401  (fixtures)
from conftest import Site
from tasks.fileio import CHUNK, write_parts_if_changed
from tasks.overlay import DIRS, monolithic_parts, pack

EPOCH = 1704067200


def newc_members(data: bytes) -> list[tuple[str, int, int, int, int]]:
    """(name, mode, uid, gid, mtime) of each member of a newc archive, read from its headers."""
    out, pos = [], 0
    while True:
        assert data[pos : pos + 6] == b"070701", f"not a newc header at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, mtime, size, namesize = fields[1], fields[2], fields[3], fields[5], fields[6], fields[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, uid, gid, mtime))


def test_a_layer_holds_the_hosts_files_sorted_owned_by_root_with_fixed_times(the_built_example: Site) -> None:
    layer = (the_built_example.build / "hosts/boreas/overlay.cpio").read_bytes()
    members = newc_members(layer)
    names = [m[0] for m in members]
    assert names == sorted(names)
    # machine mode (the example's): the keyring and the LUKS key travel only sealed
    assert names == ["conf", "conf/conf.d", "conf/conf.d/cephboot", "etc", "etc/ceph", "etc/ceph/ceph.conf",
                     "etc/cephboot", "etc/cephboot/sealed"]
    assert {(uid, gid, mtime) for _, _, uid, gid, mtime in members} == {(0, 0, EPOCH)}
    modes = {name: mode & 0o7777 for name, mode, *_ in members}
    assert modes["etc/cephboot/sealed"] == 0o600
    assert modes["etc/cephboot"] == 0o700
    assert modes["conf/conf.d/cephboot"] == 0o644
    # GNU cpio reads it back, with the rendered bytes inside
    listed = subprocess.run(["cpio", "-it", "--quiet"], input=layer, capture_output=True, check=True).stdout.decode().split()
    assert listed == names
    rendered = the_built_example.build / "hosts/boreas/initrd/etc/cephboot/sealed"
    out = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "etc/cephboot/sealed"], input=layer, capture_output=True, check=True).stdout
    assert out == rendered.read_bytes()
    assert (the_built_example.build / "hosts/boreas/overlay.cpio").stat().st_mode & 0o777 == 0o600


def test_a_clear_mode_layer_holds_the_keys_themselves_0600(a_built_site: Site) -> None:
    a_built_site.edit("site.yaml", "    mode: machine", "    mode: clear")
    a_built_site.doit("render", "overlay")
    layer = (a_built_site.build / "hosts/boreas/overlay.cpio").read_bytes()
    modes = {name: mode & 0o7777 for name, mode, *_ in newc_members(layer)}
    assert sorted(modes) == ["conf", "conf/conf.d", "conf/conf.d/cephboot", "etc", "etc/ceph", "etc/ceph/ceph.client.boreas.keyring",
                             "etc/ceph/ceph.conf", "etc/cephboot", "etc/cephboot/luks.key"]
    assert modes["etc/ceph/ceph.client.boreas.keyring"] == modes["etc/cephboot/luks.key"] == 0o600
    rendered = a_built_site.build / "hosts/boreas/rootfs/etc/ceph/ceph.client.boreas.keyring"
    out = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "etc/ceph/ceph.client.boreas.keyring"], input=layer, capture_output=True, check=True).stdout
    assert out == rendered.read_bytes()
    assert not (a_built_site.build / "hosts/boreas/initrd/etc/cephboot/sealed").exists()


def test_a_layer_without_luks_has_no_key_file(the_built_example: Site) -> None:
    names = [m[0] for m in newc_members((the_built_example.build / "hosts/zephyr/overlay.cpio").read_bytes())]
    assert "etc/cephboot/luks.key" not in names
    assert "etc/ceph/ceph.client.zephyr.keyring" not in names and "etc/cephboot/sealed" in names
    from tasks.sealed import unseal

    secret = (the_built_example.hosts / "keys/zephyr.secret").read_bytes().strip()
    opened = unseal((the_built_example.build / "hosts/zephyr/initrd/etc/cephboot/sealed").read_bytes(), secret)
    assert set(opened) == {"keyring"}


def gnu_cpio(members: dict[str, tuple[Path, int]], epoch: int, stage: Path) -> bytes:
    """What GNU cpio --reproducible makes of the same files, staged as a tree with those modes and times."""
    dirs = {d: m for d, m in DIRS.items() if any(name.startswith(d + "/") for name in members)}
    for d, mode in sorted(dirs.items()):
        (stage / d).mkdir()
        (stage / d).chmod(mode)
    for name, (src, mode) in members.items():
        (stage / name).write_bytes(src.read_bytes())
        (stage / name).chmod(mode)
    names = sorted([*dirs, *members])
    for name in reversed(names):
        os.utime(stage / name, (epoch, epoch))
    return subprocess.run(
        ["cpio", "--quiet", "--create", "--format=newc", "--reproducible", "--owner=0:0"],
        input="".join(f"{n}\n" for n in names).encode(), cwd=stage, capture_output=True, check=True,
    ).stdout


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_the_layer_is_byte_for_byte_what_gnu_cpio_makes(the_built_example: Site, host: str, tmp_path: Path) -> None:
    from tasks import inventory
    from tasks.overlay import layer_members

    site = inventory.load(the_built_example.root, use_cache=False)
    base = the_built_example.build / "hosts" / host
    members = {name: (base / rel, mode) for name, (rel, mode) in layer_members(site.hosts[host]).items()}
    assert pack(members, EPOCH) == gnu_cpio(members, EPOCH, tmp_path)
    assert (base / "overlay.cpio").read_bytes() == pack(members, EPOCH)


def test_the_same_files_give_the_same_bytes(the_built_example: Site, tmp_path: Path) -> None:
    src = the_built_example.build / "hosts/boreas"
    members = {"conf/conf.d/cephboot": (src / "initramfs-tools/conf.d/cephboot", 0o644), "etc/ceph/ceph.conf": (src / "rootfs/etc/ceph/ceph.conf", 0o644)}
    first = pack(members, EPOCH)
    # copies with other times, owners and modes on disk make no difference
    for name, (path, _) in members.items():
        copy = tmp_path / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(path.read_bytes())
        copy.chmod(0o666)
        members[name] = (copy, members[name][1])
    assert pack(members, EPOCH) == first
    assert set(DIRS) >= {"conf", "etc/ceph"}


def test_a_rebuilt_layer_is_byte_identical(a_built_site: Site) -> None:
    before = {h: (a_built_site.build / f"hosts/{h}/overlay.cpio").read_bytes() for h in HOSTS}
    for h in HOSTS:
        (a_built_site.build / f"hosts/{h}/overlay.cpio").unlink()
    run = a_built_site.doit("overlay")
    assert run.ran == {f"overlay:{h}" for h in HOSTS}
    assert {h: (a_built_site.build / f"hosts/{h}/overlay.cpio").read_bytes() for h in HOSTS} == before


def test_the_monolithic_initrd_is_the_layer_then_the_base(the_built_example: Site) -> None:
    mono = (the_built_example.build / "hosts/notus/initrd.img").read_bytes()
    layer = (the_built_example.build / "hosts/notus/overlay.cpio").read_bytes()
    base = (the_built_example.build / "kernels" / kver() / "initrd.img").read_bytes()
    assert mono == layer + base
    names = archive_names(the_built_example.build / "hosts/notus/initrd.img")
    assert "conf/conf.d/cephboot" in names and "etc/cephboot/sealed" in names
    assert "usr/bin/rbd" in names and any(n.endswith("/rbd.ko") for n in names)
    assert not (the_built_example.build / "hosts/zephyr/initrd.img").exists()


def stages(run_ran: set[str], stage: str) -> set[str]:
    return {t.split(":", 1)[1] for t in run_ran if t.startswith(stage + ":")}


def test_a_host_edit_repacks_that_host_only(a_built_site: Site) -> None:
    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    run = a_built_site.doit("render", "initrd", "overlay")
    assert stages(run.ran, "overlay") == {"zephyr"}
    assert stages(run.ran, "initrd") == set()


def test_a_profile_edit_repacks_its_hosts(a_built_site: Site) -> None:
    a_built_site.edit("profiles/rack-a.yaml", "deadline: 180", "deadline: 240")
    run = a_built_site.doit("render", "initrd", "overlay")
    assert stages(run.ran, "overlay") == {"zephyr", "boreas"}
    assert stages(run.ran, "initrd") == set()


def test_a_monitor_change_repacks_every_layer_and_no_base(a_built_site: Site) -> None:
    a_built_site.edit("site.yaml", "192.0.2.13]", "192.0.2.14]")
    run = a_built_site.doit("render", "initrd", "overlay")
    assert stages(run.ran, "overlay") == HOSTS
    assert stages(run.ran, "initrd") == set()
    assert b"192.0.2.14" in (a_built_site.build / "hosts/notus/initrd.img").read_bytes()


def test_turning_monolithic_off_removes_the_single_initrd(a_built_site: Site) -> None:
    a_built_site.edit("nodes/notus.yaml", "monolithic: true", "monolithic: false")
    a_built_site.doit("render", "overlay")
    assert not (a_built_site.build / "hosts/notus/initrd.img").exists()


def a_base_of(tmp_path: Path, size: int) -> Path:
    base = tmp_path / "initrd.img"
    base.write_bytes(os.urandom(size))
    return base


def test_the_monolithic_initrd_is_streamed_in_bounded_parts_with_the_same_bytes(tmp_path: Path) -> None:
    base = a_base_of(tmp_path, 3 * CHUNK + 4097)
    layer = b"070701" + bytes(506)  # a layer's shape: whole 512-byte blocks
    parts = monolithic_parts(layer, base)
    assert max(len(p) for p in parts()) <= CHUNK
    out = tmp_path / "host/initrd.img"
    assert write_parts_if_changed(out, parts, len(layer) + base.stat().st_size, 0o600)
    assert out.read_bytes() == layer + base.read_bytes()
    assert out.stat().st_mode & 0o7777 == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["initrd.img"]  # no temporary left


def test_an_unchanged_monolithic_initrd_is_not_rewritten_and_a_new_base_is(tmp_path: Path) -> None:
    base = a_base_of(tmp_path, CHUNK + 1)
    layer = bytes(512)
    out = tmp_path / "mono.img"
    size = len(layer) + base.stat().st_size
    write_parts_if_changed(out, monolithic_parts(layer, base), size, 0o600)
    inode = out.stat().st_ino
    assert not write_parts_if_changed(out, monolithic_parts(layer, base), size, 0o600)
    assert out.stat().st_ino == inode
    with open(base, "r+b") as f:  # same size, one byte differs in the second block
        f.seek(CHUNK)
        flipped = bytes([f.read(1)[0] ^ 0xFF])
        f.seek(CHUNK)
        f.write(flipped)
    assert write_parts_if_changed(out, monolithic_parts(layer, base), size, 0o600)
    assert out.read_bytes() == layer + base.read_bytes() and out.stat().st_ino != inode


def test_a_base_that_changes_size_while_it_is_streamed_leaves_the_old_initrd(tmp_path: Path) -> None:
    base = a_base_of(tmp_path, 2 * CHUNK)
    out = tmp_path / "mono.img"
    out.write_bytes(b"old")
    with pytest.raises(OSError, match="changed while it was read"):
        write_parts_if_changed(out, monolithic_parts(bytes(512), base), 512 + CHUNK, 0o600)  # a stale size
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["initrd.img", "mono.img"]
