"""Golden images without a cluster: the inventory of images, what a version is made of, the clone's caps and files, krbd features."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks import golden, inventory
from tasks.provision import wanted_caps
from tasks.render import render_host

from conftest import Site, a_host_view


def _tree(path: Path) -> Path:
    """A small root: an init, initramfs-tools' entry point, an /etc with a file every clone keeps."""
    for sub in ("usr/bin", "usr/sbin", "etc", "boot"):
        (path / sub).mkdir(parents=True)
    (path / "usr/sbin/update-initramfs").write_text("#!/bin/sh\n")
    (path / "etc/motd").write_text("from the golden image\n")
    return path


def _with_image(site: Site, tmp_path: Path, host: str = "zephyr", extra: str = "", size: str = "64M") -> Path:
    src = _tree(tmp_path / "src")
    (site.hosts / "images").mkdir()
    (site.hosts / "images" / "base.yaml").write_text(f"rootfs: {{source: {src}}}\nsize: {size}\n{extra}")
    site.edit(f"nodes/{host}.yaml", "profiles: [", "root: {image: base}\nprofiles: [")
    return src


def test_a_golden_image_file_is_validated_with_its_defaults(the_example_site: Site, tmp_path: Path) -> None:
    _with_image(the_example_site, tmp_path)
    s = inventory.load(the_example_site.root, use_cache=False)
    image = golden.load_images(s)["base"]
    assert image.data["size"] == "64M" and image.data["pool"] == "rbd" and image.data["features"] == ["layering"]
    assert image.namespace == "golden-base"
    assert image.data["rootfs"]["suite"] == "bookworm", "the rootfs section takes a host's defaults"


def test_bad_golden_images_and_references_are_refused_all_at_once(the_example_site: Site, tmp_path: Path) -> None:
    _with_image(the_example_site, tmp_path, extra="features: [layering, journaling]\n", size="12X")
    the_example_site.edit("nodes/boreas.yaml", "profiles: [", "root: {image: nope}\nprofiles: [")
    s = inventory.load(the_example_site.root, use_cache=False)
    with pytest.raises(inventory.InventoryError) as e:
        golden.load_images(s)
    text = str(e.value)
    assert "hosts/images/base.yaml: features: item 1 ('journaling'): expected one of: layering," in text
    assert "hosts/images/base.yaml: size: '12X'" in text
    assert "hosts/nodes/boreas.yaml: root.image: 'nope': no golden image hosts/images/nope.yaml (known: none valid)" in text


def test_a_luks_host_is_refused_a_golden_image_because_clones_share_the_master_key(the_example_site: Site, tmp_path: Path) -> None:
    _with_image(the_example_site, tmp_path, host="boreas")
    s = inventory.load(the_example_site.root, use_cache=False)
    with pytest.raises(inventory.InventoryError, match=r"hosts/nodes/boreas.yaml: root.image: 'base': a LUKS host cannot be a clone of a golden image: "
                       r"every clone of one LUKS image shares its master key"):
        golden.load_images(s)


def test_krbd_features_are_checked_against_the_kernel_the_hosts_boot() -> None:
    assert golden.krbd_problems(["layering"], "6.1.0-57-amd64", "h") == []
    assert golden.krbd_problems(["layering", "exclusive-lock", "object-map", "fast-diff", "deep-flatten"], "6.1.0-57-amd64", "h") == []
    old = golden.krbd_problems(["layering", "object-map"], "5.0.0-1-amd64", "h")
    assert old == ["object-map: host h boots kernel 5.0.0-1-amd64, whose krbd maps no image with object-map (Linux 5.3); remove it"]
    assert any("no RBD namespaces" in p for p in golden.krbd_problems(["layering"], "4.14.0", "h"))
    assert any("needs the layering feature" in p for p in golden.krbd_problems(["exclusive-lock"], "6.1.0", "h"))


def test_a_clones_client_reads_its_golden_namespace_and_writes_only_its_own() -> None:
    h = a_host_view(rbd={"pool": "rbd", "namespace": "zephyr"}, boot_path="/hosts/zephyr", root={"image": "base"})
    assert wanted_caps(h, "boot", "cephfs.boot.data")["osd"] == (
        "profile rbd pool=rbd namespace=zephyr, profile rbd-read-only pool=rbd namespace=golden-base, "
        "allow rw pool=cephfs.boot.data namespace=fs-hosts-zephyr")


def test_a_version_is_named_by_its_inputs(the_example_site: Site, tmp_path: Path) -> None:
    src = _with_image(the_example_site, tmp_path)
    s = inventory.load(the_example_site.root, use_cache=False)
    image = golden.load_images(s)["base"]
    first = golden.snapshot_name(golden.image_inputs(s, image))
    assert first == golden.snapshot_name(golden.image_inputs(s, image)), "unchanged inputs: the same version"
    (src / "etc/motd").write_text("a new motd\n")
    changed = golden.image_inputs(s, image)
    assert golden.snapshot_name(changed) != first
    assert image.snapshot_spec(first) == f"rbd/golden-base/base-{first}@{first}"


def test_a_clone_gets_the_host_files_but_not_those_every_image_has(the_example_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_image(the_example_site, tmp_path)
    monkeypatch.chdir(the_example_site.root)
    s = inventory.load(the_example_site.root, use_cache=False)
    render_host(s, s.hosts["zephyr"])
    files = golden.clone_files(s.hosts["zephyr"])
    assert {"etc/hostname", "etc/fstab", "etc/ceph/ceph.conf", "etc/initramfs-tools/conf.d/cephboot"} <= set(files)
    assert "etc/initramfs-tools/hooks/cephboot" not in files, "the golden image has the static boot files already"


def test_debugfs_writes_the_host_files_into_an_ext4_leaving_the_rest(the_example_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What provisioning does to a clone, on a local ext4 file: each file with its content, mode and root owner; the image's own files kept; fsck clean."""
    src = _with_image(the_example_site, tmp_path)
    monkeypatch.chdir(the_example_site.root)
    s = inventory.load(the_example_site.root, use_cache=False)
    host = s.hosts["zephyr"]
    render_host(s, host)
    (src / "etc/hostname").write_text("template\n")  # replaced, not appended to
    img = tmp_path / "root.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(img), "64M"], check=True)
    work = tmp_path / "work"
    work.mkdir()
    files = golden.clone_files(host)
    golden.write_files(img, files, work)
    assert list(work.iterdir()) == [], "the staged copies (with the keyring) are gone"

    def debugfs(cmd: str) -> str:
        return subprocess.run(["debugfs", "-R", cmd, str(img)], capture_output=True, text=True, check=True).stdout

    assert debugfs("cat /etc/hostname") == "zephyr\n"
    assert debugfs("cat /etc/motd") == "from the golden image\n"
    keyring = "/etc/ceph/ceph.client.zephyr.keyring"
    assert debugfs(f"cat {keyring}") == (Path("build/hosts/zephyr/rootfs") / keyring.lstrip("/")).read_text()
    stat = debugfs(f"stat {keyring}")
    assert "Mode:  0600" in stat and "User:     0   Group:     0" in stat, stat
    assert "Mode:  0644" in debugfs("stat /etc/fstab")
    fsck = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_image_tasks_load_without_a_cluster_and_run_only_when_named(the_example_site: Site, tmp_path: Path) -> None:
    """`doit list` shows one entry each; naming one creates it, and it stops at the missing admin keyring, before any Ceph I/O."""
    _with_image(the_example_site, tmp_path)
    listed = {line.split()[0] for line in the_example_site.doit("list", "--all").stdout.splitlines() if line.strip()}
    assert {"image", "move-root", "rollback-root"} <= listed
    assert not (the_example_site.build / "provision").exists()
    for task, done in ((["image:base"], ".  image:base"), (["move-root", "--only", "zephyr"], "  - move-root --only zephyr"),
                       (["rollback-root", "--only", "zephyr"], "  - rollback-root --only zephyr")):
        run = the_example_site.doit(*task, check=False)
        assert run.returncode != 0 and done in run.stdout.splitlines(), run.stdout
        assert "provisioning needs ceph.admin_keyring in hosts/site.yaml" in run.stdout + run.stderr


# ---- stateless hosts ---------------------------------------------------------------

SNAP = "0123456789abcdef"


def _stateless(site: Site, tmp_path: Path, root: str = f"{{image: base, mode: stateless, snapshot: '{SNAP}'}}", host: str = "zephyr") -> None:
    _with_image(site, tmp_path, host=host)
    site.edit(f"nodes/{host}.yaml", "root: {image: base}", f"root: {root}")


@pytest.mark.parametrize(("root", "message"), [
    ("{mode: stateless, snapshot: '" + SNAP + "'}", "root.mode: 'stateless' needs root.image: a stateless host maps a golden image"),
    ("{image: base, mode: stateless}", "root.snapshot: missing; a stateless host boots one version of its golden image: "
                                       "set root.snapshot to the 16 hex digits after '@' that `doit image:base` prints"),
    ("{image: base, snapshot: '" + SNAP + "'}", f"root.snapshot: '{SNAP}': only a stateless host (root.mode: stateless) names a version"),
    ("{image: base, mode: stateless, snapshot: v1}", "root.snapshot: 'v1': expected a golden image version: the 16 hex digits"),
    ("{image: base, mode: diskless}", "root.mode: 'diskless': expected one of: stateful, stateless"),
    ("{image: base, mode: stateless, snapshot: '" + SNAP + "', overlay_size: 2T}", "root.overlay_size: '2T': expected a tmpfs size"),
], ids=["no-image", "no-snapshot", "snapshot-on-stateful", "bad-snapshot", "bad-mode", "bad-overlay-size"])
def test_a_stateless_host_names_its_image_and_version_or_is_refused(the_example_site: Site, tmp_path: Path, root: str, message: str) -> None:
    _stateless(the_example_site, tmp_path, root)
    with pytest.raises(inventory.InventoryError) as e:
        inventory.load(the_example_site.root, use_cache=False)
    assert f"hosts/nodes/zephyr.yaml: {message}" in str(e.value)


def test_a_stateless_luks_host_is_refused_naming_why(the_example_site: Site, tmp_path: Path) -> None:
    _stateless(the_example_site, tmp_path, host="boreas")
    with pytest.raises(inventory.InventoryError) as e:
        inventory.load(the_example_site.root, use_cache=False)
    assert "luks.name: a stateless host cannot use LUKS: its root is the golden image every stateless host shares, read-only" in str(e.value)


def test_a_stateless_hosts_client_reads_the_golden_namespace_and_has_no_image_of_its_own() -> None:
    h = a_host_view(rbd={"pool": "rbd", "namespace": "zephyr"}, boot_path="/hosts/zephyr", root={"image": "base", "mode": "stateless"})
    assert wanted_caps(h, "boot", "cephfs.boot.data")["osd"] == (
        "profile rbd-read-only pool=rbd namespace=golden-base, allow rw pool=cephfs.boot.data namespace=fs-hosts-zephyr")


def test_a_stateless_hosts_initrd_maps_the_version_it_names_and_its_layer_carries_its_root_files(
    the_example_site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stateless(the_example_site, tmp_path)
    monkeypatch.chdir(the_example_site.root)
    s = inventory.load(the_example_site.root, use_cache=False)
    host = s.hosts["zephyr"]
    assert golden.load_images(s)["base"].snapshot_spec(SNAP) == f"rbd/golden-base/base-{SNAP}@{SNAP}"
    render_host(s, host)
    conf = (Path("build/hosts/zephyr") / "initramfs-tools/conf.d/cephboot").read_text()
    for line in ("CEPHBOOT_NAMESPACE='golden-base'", f"CEPHBOOT_IMAGE='base-{SNAP}'", f"CEPHBOOT_SNAP='{SNAP}'",
                 "CEPHBOOT_ROOT_MODE='stateless'", "CEPHBOOT_OVERLAY_SIZE='50%'", "CEPHBOOT_ROOT_FILES='/cephboot/root'"):
        assert f"\n{line}\n" in conf, conf
    assert Path("build/hosts/zephyr/rootfs/etc/hostname").read_text() == "zephyr\n"
    from tasks.overlay import layer_members
    members = layer_members(host)
    assert members["cephboot/root/etc/hostname"] == ("rootfs/etc/hostname", 0o644)
    assert members["cephboot/root/etc/fstab"] == ("rootfs/etc/fstab", 0o644)
    assert "etc/cephboot/sealed" in members, "machine mode: the keyring still travels sealed, local-top copies the unsealed one"


def test_a_profile_names_its_hosts_for_move_root_as_for_every_per_host_command(the_example_site: Site, tmp_path: Path) -> None:
    """`doit move-root --only @rack-a` is rack-a's hosts that have root.image (boreas, in it through its list
    too, has none; never notus, not in it); verify takes boreas through its list as well."""
    _with_image(the_example_site, tmp_path)
    run = the_example_site.doit("move-root", "--only", "@rack-a", check=False)
    lines = run.stdout.splitlines()
    # once, its line (a command doit takes back) above what it found: the cluster step, here without an admin keyring
    assert [line for line in lines if line.startswith("  - move-root")] == ["  - move-root --only zephyr"], run.stdout
    assert run.returncode == 1 and "cephboot: move-root: hosts/site.yaml: ceph.admin_keyring: missing; provisioning needs ceph.admin_keyring in hosts/site.yaml" in run.stdout, run.stdout
    verify = the_example_site.doit("verify", "--only", "@secure", check=False)
    assert [line for line in verify.stdout.splitlines() if line.startswith("  - verify")] == ["  - verify --only boreas"], verify.stdout
