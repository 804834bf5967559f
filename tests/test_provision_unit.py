"""Provisioning without a cluster: caps, apt mirror, the host's files in its root, root images plain and LUKS2."""
from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tasks import inventory, provision, rootfs
from tasks.provision import boot_namespace, private_files, tree_caps, wanted_caps
from tasks.render import render_host

from conftest import Site, a_host_view


def test_a_hosts_caps_reach_its_namespace_and_its_boot_directory_only() -> None:
    h = a_host_view(rbd={"pool": "rbd", "namespace": "zephyr"}, boot_path="/hosts/zephyr")
    assert wanted_caps(h, "boot", "cephfs.boot.data") == {
        "mon": "profile rbd, allow r fsname=boot",
        "osd": "profile rbd pool=rbd namespace=zephyr, allow rw pool=cephfs.boot.data namespace=fs-hosts-zephyr",
        "mds": "allow rw fsname=boot path=/hosts/zephyr",
    }


def test_no_two_boot_folders_share_a_rados_namespace() -> None:
    """The escape is injective: every CephFS path over the characters that matter, up to 7
    characters, gets a namespace of its own (the old `/`-to-`-` mapping gave `/hosts/x-y` and
    `/hosts-x/y` the same one, so one host read the other's objects)."""
    assert boot_namespace("/hosts/x-y") == "fs-hosts-x_dy"
    assert boot_namespace("/hosts-x/y") == "fs-hosts_dx-y"
    assert boot_namespace("/a_b") == "fs-a__b"
    seen: dict[str, str] = {}
    for n in range(1, 7):
        for chars in itertools.product("a-_/", repeat=n):
            path = "/" + "".join(chars)
            if "//" in path or path.endswith("/"):
                continue
            ns = boot_namespace(path)
            assert ns not in seen, f"{path} and {seen[ns]} share {ns}"
            seen[ns] = path
    assert len(seen) > 1000


def test_the_publisher_and_web_server_reach_the_tree_namespace_exactly_and_no_host_folder() -> None:
    """No wildcard: a host folder's namespace (any path outside the tree) is never the tree's."""
    publisher = tree_caps("boot", "cephfs.boot.data", "/tree", write=True)
    web = tree_caps("boot", "cephfs.boot.data", "/tree", write=False)
    assert publisher == {"mds": "allow rw fsname=boot path=/tree", "mon": "allow r fsname=boot",
                         "osd": "allow rw pool=cephfs.boot.data namespace=fs-tree"}
    assert web == {"mds": "allow r fsname=boot path=/tree", "mon": "allow r fsname=boot",
                   "osd": "allow r pool=cephfs.boot.data namespace=fs-tree"}
    for host_boot in ("/hosts/tree", "/tree-x", "/tree_", "/treex", "/hosts/a"):
        assert boot_namespace(host_boot) != "fs-tree"
        assert "*" not in publisher["osd"] + web["osd"]


def test_root_images_are_owner_only_from_their_first_byte_whatever_the_umask(tmp_path: Path) -> None:
    """Another local user must not read a plaintext root (it holds the host's keyring and LUKS key)."""
    old = os.umask(0)
    try:
        work = tmp_path / "provision" / "zephyr"
        with private_files(work):
            fd = os.open(work / "root.img", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # as open(..., "xb") asks
            first = os.fstat(fd).st_mode
            os.close(fd)
        assert stat.S_IMODE(first) == 0o600
        assert stat.S_IMODE(work.stat().st_mode) == 0o700
        assert os.umask(0) == 0, "the caller's umask is given back"
    finally:
        os.umask(old)


def test_the_mirror_comes_from_the_apt_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rootfs.MIRROR_ENV, raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# nothing here\ndeb [arch=amd64] http://mirror.example/ubuntu jammy main\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\n# a comment\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\n"
    )
    assert rootfs.apt_mirror("bookworm", tmp_path) == ("http://deb.example/debian", ["main", "contrib"])
    assert rootfs.apt_mirror("jammy", tmp_path) == ("http://mirror.example/ubuntu", ["main"])
    with pytest.raises(rootfs.RootfsError, match="no 'deb' source for suite 'trixie'"):
        rootfs.apt_mirror("trixie", tmp_path)


def _rendered(site: Site, name: str) -> tuple[inventory.Site, inventory.Host]:
    s = inventory.load(site.root, use_cache=False)
    render_host(s, s.hosts[name])
    return s, s.hosts[name]


def _image(site: Site, name: str, work: Path) -> tuple[Path, inventory.Site, inventory.Host]:
    s, host = _rendered(site, name)
    work.mkdir()
    return rootfs.make_image(s, host, work, say=lambda _: None), s, host


def test_the_hosts_files_land_in_its_root_with_their_modes(the_example_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(the_example_site.root)
    s, host = _rendered(the_example_site, "boreas")
    root = _tiny_tree(tmp_path / "root")
    (root / "etc" / "fstab").write_text("the old one\n")
    rootfs.install_host_files(root, host)
    assert (root / "etc/fstab").read_text().startswith("# generated by cephboot")
    assert (root / "etc/hostname").read_text() == "boreas\n"
    assert "CEPHBOOT_LUKS_NAME='cryptroot'" in (root / "etc/initramfs-tools/conf.d/cephboot").read_text()
    modes = {rel: (root / rel).stat().st_mode & 0o777 for rel in (
        "etc/ceph/ceph.client.boreas.keyring", "etc/cephboot/luks.key", "etc/crypttab",
        "etc/initramfs-tools/hooks/cephboot", "etc/initramfs-tools/scripts/local-top/cephboot")}
    assert modes == {"etc/ceph/ceph.client.boreas.keyring": 0o600, "etc/cephboot/luks.key": 0o600, "etc/crypttab": 0o644,
                     "etc/initramfs-tools/hooks/cephboot": 0o755, "etc/initramfs-tools/scripts/local-top/cephboot": 0o755}


def _debugfs(image: Path, command: str) -> str:
    return subprocess.run(["debugfs", "-R", command, str(image)], capture_output=True, text=True, check=True).stdout


def _tiny_tree(path: Path) -> Path:
    """A root with an init and initramfs-tools' entry point (which the image-native install asks for)."""
    for sub in ("usr/bin", "usr/sbin", "etc", "boot", "proc", "sys", "dev"):
        (path / sub).mkdir(parents=True)
    for link in ("bin", "sbin"):
        (path / link).symlink_to(f"usr/{link}")
    (path / "usr/sbin/update-initramfs").write_text("#!/bin/sh\n")
    (path / "sbin" / "init").write_text("#!/bin/sh\necho hello\n")
    (path / "sbin" / "init").chmod(0o755)
    return path


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs e2fsprogs")
def test_a_plain_root_image_is_a_sparse_ext4_with_the_hosts_files(the_example_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    the_example_site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", f"profiles: [rack-a]\nrootfs: {{source: {_tiny_tree(tmp_path / 'src')}}}\nrbd: {{size: 64M}}")
    monkeypatch.chdir(the_example_site.root)
    img, _, _ = _image(the_example_site, "zephyr", tmp_path / "work")
    assert img.stat().st_size == 64 << 20
    assert img.stat().st_blocks * 512 < 16 << 20, "the image must stay sparse"
    assert _debugfs(img, "cat /etc/hostname") == "zephyr\n"
    assert "ceph.client.zephyr.keyring" in _debugfs(img, "ls -l /etc/ceph")
    assert not (tmp_path / "work" / "tree").exists()


@pytest.mark.skipif(not all(shutil.which(t) for t in ("cryptsetup", "qemu-img", "mkfs.ext4")), reason="needs cryptsetup, qemu-img, e2fsprogs")
def test_a_luks2_root_opens_with_the_key_file_and_decrypts_to_a_clean_ext4(the_example_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container is checked by tools other than the code that wrote it: cryptsetup
    (header, key slot), then cryptsetup converts it to LUKS1, which qemu-img decrypts.
    The holes decrypt to noise, as a fresh LUKS device's unwritten space does: e2fsck
    must still find a clean file system."""
    the_example_site.edit("nodes/boreas.yaml", "map:", f"rootfs: {{source: {_tiny_tree(tmp_path / 'src')}}}\nrbd: {{size: 96M}}\nmap:")
    monkeypatch.chdir(the_example_site.root)
    old = os.umask(0)
    try:
        img, _, _ = _image(the_example_site, "boreas", tmp_path / "work")
    finally:
        os.umask(old)
    assert stat.S_IMODE(img.stat().st_mode) == 0o600, "the container is created owner-only, whatever the umask"
    key = the_example_site.hosts / "keys" / "boreas.luks"
    assert img.stat().st_size == 96 << 20
    assert img.stat().st_blocks * 512 < 40 << 20, "holes stay holes: the RBD image stays thin"
    subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file", str(key), str(img)], check=True)
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"not the key\n")
    assert subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file", str(wrong), str(img)], capture_output=True).returncode != 0
    dump = subprocess.run(["cryptsetup", "luksDump", str(img)], capture_output=True, text=True, check=True).stdout
    assert "Version:       \t2" in dump and "aes-xts-plain64" in dump
    as_luks1 = tmp_path / "luks1.img"
    shutil.copy(img, as_luks1)
    subprocess.run(["cryptsetup", "convert", "--batch-mode", "--type", "luks1", str(as_luks1)], check=True, capture_output=True)
    plain = tmp_path / "plain.img"
    subprocess.run(["qemu-img", "convert", "--object", f"secret,id=k,file={key}", "--image-opts",
                    f"driver=luks,key-secret=k,file.filename={as_luks1}", "-O", "raw", str(plain)], check=True, capture_output=True)
    fsck = subprocess.run(["e2fsck", "-fn", str(plain)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert _debugfs(plain, "cat /etc/hostname") == "boreas\n"
    assert "cryptroot\t/dev/rbd0" in _debugfs(plain, "cat /etc/crypttab")
    journal = tmp_path / "journal"
    _debugfs(plain, f"dump <8> {journal}")
    block = 4096 if "Block size:               4096" in subprocess.run(["dumpe2fs", "-h", str(plain)], capture_output=True, text=True).stdout else 1024
    assert journal.read_bytes()[block:].count(0) == journal.stat().st_size - block, "the journal is zeroed, as mkfs on dm-crypt leaves it"


def test_a_root_fs_other_than_ext4_is_refused(the_example_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    the_example_site.edit("nodes/notus.yaml", "monolithic: true", "monolithic: true\nroot_fs: xfs")
    monkeypatch.chdir(the_example_site.root)
    s, host = _rendered(the_example_site, "notus")
    with pytest.raises(rootfs.RootfsError, match="root_fs 'xfs': provisioning writes ext4 roots only"):
        rootfs.make_image(s, host, tmp_path, say=lambda _: None)


def test_loading_tasks_touches_no_cluster(the_example_site: Site) -> None:
    """`doit list` with monitors that do not exist answers at once: no Ceph I/O at load time."""
    run = the_example_site.doit("list", "--all")
    listed = {line.split()[0] for line in run.stdout.splitlines() if line.strip()}
    assert {"provision", "verify"} <= listed  # one entry each, not two idle tasks per host
    assert not (the_example_site.build / "provision").exists()


def test_naming_a_host_runs_it_alone(the_example_site: Site) -> None:
    """`doit verify --only HOST` works on that host alone; the example site has no admin
    keyring, so it stops there with instructions, before any Ceph I/O."""
    run = the_example_site.doit("verify", "--only", "zephyr", check=False)
    assert run.returncode != 0
    assert [line for line in run.stdout.splitlines() if line.startswith("  - verify")] == ["  - verify --only zephyr"], run.stdout
    assert "provisioning needs ceph.admin_keyring in hosts/site.yaml" in run.stdout + run.stderr


def test_debootstrap_adds_what_the_roots_own_initrd_needs(the_example_site: Site) -> None:
    s = inventory.load(the_example_site.root, use_cache=False)
    assert "iproute2" in rootfs.packages(s.hosts["zephyr"]), "the boot script runs ip; minbase has none"
    assert {"iproute2", "cryptsetup-bin"} <= set(rootfs.packages(s.hosts["boreas"]))


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs e2fsprogs")
def test_a_root_with_a_kernel_gets_its_own_initrd_rebuilt_with_the_hosts_files(the_example_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As `doit imagenative` would, inside the tree, before mkfs: the image boots with its own initrd."""
    src = _tiny_tree(tmp_path / "src")
    shutil.copy2("/bin/busybox", src / "usr/bin/busybox")
    (src / "usr/bin/sh").symlink_to("busybox")
    (src / "usr/lib/modules/6.1.0-99-amd64").mkdir(parents=True)
    (src / "boot/vmlinuz-6.1.0-99-amd64").write_bytes(b"kernel")
    (src / "usr/sbin/update-initramfs").write_text(
        "#!/bin/sh\n[ -e /etc/initramfs-tools/hooks/cephboot ] && echo \"$*\" >/boot/initrd.img-6.1.0-99-amd64\n")
    (src / "usr/sbin/update-initramfs").chmod(0o755)
    the_example_site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", f"profiles: [rack-a]\nrootfs: {{source: {src}}}\nrbd: {{size: 64M}}")
    monkeypatch.chdir(the_example_site.root)
    img, _, _ = _image(the_example_site, "zephyr", tmp_path / "work")
    assert _debugfs(img, "cat /boot/initrd.img-6.1.0-99-amd64") == "-c -k 6.1.0-99-amd64\n", "run after the host's files went in"
    assert not (src / "boot/initrd.img-6.1.0-99-amd64").exists(), "the source tree is not touched"


def test_an_images_inputs_name_what_changed_since_it_was_built(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(the_example_site.root)
    s, host = _rendered(the_example_site, "zephyr")
    before = rootfs.image_inputs(s, host)
    assert rootfs.image_stamp(before) == rootfs.image_stamp(rootfs.image_inputs(s, host)), "stable"
    recorded = json.dumps(before)
    the_example_site.edit("site.yaml", "192.0.2.13", "192.0.2.14")
    s, host = _rendered(the_example_site, "zephyr")
    after = rootfs.image_inputs(s, host)
    assert rootfs.image_stamp(after) != rootfs.image_stamp(before)
    assert rootfs.changed_inputs(recorded, after) == ["/etc/ceph/ceph.conf", "/etc/initramfs-tools/conf.d/cephboot"]
    assert rootfs.changed_inputs("not json", after) == []


class _FakeCluster:
    """Answers the few questions the refusals ask, as `ceph ... --format json` would."""

    entity = "client.admin"

    def __init__(self, clients: dict[str, dict[str, str]], marks: dict[str, str]) -> None:
        self.clients, self.marks = clients, marks

    def pools(self) -> list[str]:
        return ["rbd", "cephfs.boot.meta", "cephfs.boot.data"]

    def ceph_json(self, *args: str) -> object:
        if args[:2] == ("fs", "ls"):
            return [{"name": "boot", "metadata_pool": "cephfs.boot.meta", "data_pools": ["cephfs.boot.data"]}]
        assert args[:2] == ("auth", "get")
        if args[2] not in self.clients:
            raise provision.CephError(["ceph", *args], 2, "Error ENOENT: failed to find client in keyring")
        return [{"entity": args[2], "caps": self.clients[args[2]]}]

    def ceph(self, *args: str) -> str:
        assert args[:2] == ("config-key", "get")
        if args[2] not in self.marks:
            raise provision.CephError(["ceph", *args], 2, "Error ENOENT: error obtaining")
        return self.marks[args[2]]


def test_provisioning_changes_only_clients_it_made_and_refuses_cephfs_pools(the_example_site: Site) -> None:
    s = inventory.load(the_example_site.root, use_cache=False)
    zephyr = s.hosts["zephyr"]
    cluster = _FakeCluster({"client.zephyr": {"mon": "allow r"}}, {})
    with pytest.raises(provision.Refused, match=r"client.zephyr exists on the cluster and cephboot did not create it.*"
                       r"`ceph config-key set cephboot/clients/client.zephyr zephyr`"):
        provision._owned_client(cluster, s, zephyr)  # type: ignore[arg-type]
    cluster.marks["cephboot/clients/client.zephyr"] = "notus"
    with pytest.raises(provision.Refused, match="it was made by cephboot for host 'notus'"):
        provision._owned_client(cluster, s, zephyr)  # type: ignore[arg-type]
    cluster.marks["cephboot/clients/client.zephyr"] = "zephyr"
    assert provision._owned_client(cluster, s, zephyr) == {"entity": "client.zephyr", "caps": {"mon": "allow r"}}  # type: ignore[arg-type]
    assert provision._owned_client(cluster, s, s.hosts["notus"]) is None, "a client that does not exist yet is created"  # type: ignore[arg-type]
    zephyr.updated(client="admin")
    with pytest.raises(provision.Refused, match="is the cluster admin's identity; a host never gets it"):
        provision._owned_client(cluster, s, zephyr)  # type: ignore[arg-type]
    zephyr.updated(rbd={**zephyr.data["rbd"], "pool": "cephfs.boot.data"})
    with pytest.raises(provision.Refused, match="rbd.pool 'cephfs.boot.data' .* is a pool of CephFS 'boot'"):
        provision._check_pool(cluster, zephyr)  # type: ignore[arg-type]


def test_moving_a_boot_folders_files_into_its_namespace_never_follows_a_link_the_host_planted(tmp_path: Path) -> None:
    """The rewrite runs as the admin in a folder the host writes: its links, to files outside or as
    the temporary name, are left alone or removed, never written through."""
    boot, outside = tmp_path / "boot", tmp_path / "outside"
    (boot / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "passwd").write_text("the build machine's\n")
    (boot / "sub" / "vmlinuz").write_text("the host's kernel\n")
    (boot / "sub" / "vmlinuz").chmod(0o640)
    (boot / "tool").write_text("#!/bin/sh\n")
    (boot / "tool").chmod(0o4755)  # set-id: a chown clears it, the copy must keep it
    (boot / "leak").symlink_to(outside / "passwd")
    (boot / "sub" / ".vmlinuz.cephboot-ns").symlink_to(outside / "planted")
    (boot / "linked-dir").symlink_to(outside)
    moved = 0
    old = os.umask(0o077)  # as under doit: the copies keep their own modes all the same
    try:
        for _, _, names, dir_fd in os.fwalk(boot, follow_symlinks=False):
            moved += sum(provision._rewrite_into(dir_fd, name, "fs-boot") for name in names)
    finally:
        os.umask(old)
    assert moved == 2, "only the regular files are rewritten"
    assert (boot / "sub" / "vmlinuz").read_text() == "the host's kernel\n"
    assert stat.S_IMODE((boot / "sub" / "vmlinuz").stat().st_mode) == 0o640
    assert stat.S_IMODE((boot / "tool").stat().st_mode) == 0o4755
    assert sorted(p.name for p in outside.iterdir()) == ["passwd"] and (outside / "passwd").read_text() == "the build machine's\n"
    assert (boot / "leak").is_symlink() and not (boot / "sub" / ".vmlinuz.cephboot-ns").exists()


@pytest.mark.parametrize("planted, said", [
    ("file", "is a regular file; expected a folder of this user's"),
    ("nobody", "is owned by uid 65534; expected a folder of this user's"),
    ("open", "is mode 0777; expected a folder of this user's"),
    ("link", "is a link; expected a folder of this user's"),
])
def test_the_admin_tools_run_folder_in_tmp_is_never_another_users(the_example_site: Site, tmp_path: Path, planted: str, said: str) -> None:
    """The admin's `ceph`/`rbd`/`ceph-fuse` put their sockets in $TMPDIR/cephboot-<uid>: one another
    local user made first (a file, their folder, an open one, a link) stops the run before any Ceph I/O."""
    site = the_example_site
    keyring = site.hosts / "keys" / "admin.keyring"
    keyring.write_text("[client.admin]\n\tkey = AQBQhgdr+jsFMhAAvvAmFd5c1M0g92SZSfVdGA==\n")
    keyring.chmod(0o600)
    site.edit("site.yaml", "  fsid:", "  admin_keyring: keys/admin.keyring\n  fsid:")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run_dir = tmp / f"cephboot-{os.getuid()}"
    if planted == "file":
        run_dir.write_text("")
    elif planted == "link":
        (tmp / "elsewhere").mkdir(mode=0o700)
        run_dir.symlink_to(tmp / "elsewhere")
    else:
        run_dir.mkdir()
        run_dir.chmod(0o777)
        if planted == "nobody":
            os.chown(run_dir, 65534, 65534)
    run = site.doit("verify", "--only", "zephyr", check=False, env={"TMPDIR": str(tmp)})
    out = run.stdout + run.stderr
    assert run.returncode != 0 and f"cephboot: verify: {run_dir} {said}" in out and "Traceback" not in out, out
    assert not (site.build / "provision" / "log").exists() or not any((site.build / "provision" / "log").iterdir())
    mine = tmp_path / "mine"
    from tasks.cephcli import private_run_dir
    private_run_dir(mine)  # none there: made owner-only
    assert stat.S_IMODE(mine.lstat().st_mode) == 0o700 and mine.is_dir()
    private_run_dir(mine)  # ours: taken as it is
