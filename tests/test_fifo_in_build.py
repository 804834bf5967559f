"""A FIFO planted where a file cephboot wrote (or keeps) under build/ is expected, in each place that
reads or opens one outside the stages (root images' and golden clones' inputs, the debootstrap
cache, the logs of the daemons it starts): never a wait for a writer or reader, always an OSError
naming the path, which an action reports as one `cephboot:` line (tasks/failures.py)."""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import Site
from tasks import golden, inventory, rootfs
from tasks.failures import environmental, why
from tasks.fileio import open_to_write
from tasks.render import render_host

LIMIT = 30  # seconds: far more than any of these takes; one that blocks on the FIFO fails instead of hanging


def refused(call: Callable[[], Any], fifo: Path) -> OSError:
    """The OSError ``call`` raises; a failure if it returns or blocks (the FIFO then gets a peer, so the thread ends)."""
    out: dict[str, BaseException | None] = {"e": None}

    def run() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            out["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(LIMIT)
    if t.is_alive():
        for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_WRONLY | os.O_NONBLOCK):  # release whichever end it waits on
            try:
                os.close(os.open(fifo, flags))
            except OSError:
                pass
        t.join(LIMIT)
        pytest.fail(f"blocked on the FIFO at {fifo}")
    e = out["e"]
    assert isinstance(e, OSError), f"expected an OSError naming {fifo}, got {e!r}"
    assert environmental(e), e  # an action turns it into one line
    return e


def _fifo_in_place(path: Path) -> Path:
    assert "build" in path.parts and "templates" not in path.parts, f"{path}: not a file cephboot wrote"
    path.unlink()
    os.mkfifo(path)
    return path


def _a_rendered_host_file(site: Site) -> tuple[inventory.Site, inventory.Host, Path]:
    s = inventory.load(site.root, use_cache=False)
    host = s.hosts["zephyr"]
    render_host(s, host)
    build = (site.root / "build").resolve()
    built = sorted(c for c, _ in rootfs.host_files(host).values() if isinstance(c, Path) and build in c.resolve().parents)
    assert built, "a host's root files include rendered build files"
    return s, host, _fifo_in_place(site.root / built[0])


def test_a_root_images_inputs_never_block_on_a_fifo(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """rootfs.image_inputs: what provision compares with the image's recorded inputs (is it up to date?)."""
    monkeypatch.chdir(the_example_site.root)
    s, host, fifo = _a_rendered_host_file(the_example_site)
    e = refused(lambda: rootfs.image_inputs(s, host), fifo)
    assert why(e) == f"{fifo.relative_to(the_example_site.root)}: a special file where a file belongs (not opened)"


def test_a_golden_clones_inputs_never_block_on_a_fifo(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """golden.clone_inputs: what a stateless host's clone is compared with (is it up to date?)."""
    monkeypatch.chdir(the_example_site.root)
    _, host, fifo = _a_rendered_host_file(the_example_site)
    e = refused(lambda: golden.clone_inputs(host, "rbd/golden-base/base-0@0"), fifo)
    assert why(e) == f"{fifo.relative_to(the_example_site.root)}: a special file where a file belongs (not opened)"


@pytest.mark.parametrize("where", ["lock", "tree", "log"])
def test_the_debootstrap_cache_never_blocks_on_a_fifo(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its lock, its cached tree (is it there already?) and its log: a FIFO in the way is an error
    naming it before debootstrap runs (the mirror is one no test reaches: it never gets that far)."""
    monkeypatch.setenv(rootfs.MIRROR_ENV, "http://192.0.2.1/debian")
    key = rootfs.debootstrap_key("bookworm", [])
    path = tmp_path / {"lock": f"{key}.lock", "tree": key, "log": f"{key}.log"}[where]
    os.mkfifo(path)
    e = refused(lambda: rootfs.debootstrap_tree(tmp_path, "bookworm", [], say=lambda _: None), path)
    assert e.filename == str(path)
    assert e.strerror == ("a special file where a folder belongs" if where == "tree" else "a special file where a file belongs (not opened)")
    assert not (tmp_path / f"{key}.partial").exists(), "debootstrap never ran"


def test_a_log_or_lock_is_opened_without_blocking_or_following(tmp_path: Path) -> None:
    """fileio.open_to_write (the logs of ceph-fuse and qemu-storage-daemon, the debootstrap cache's)."""
    fifo = tmp_path / "daemon.log"
    os.mkfifo(fifo)
    e = refused(lambda: open_to_write(fifo), fifo)
    assert (e.errno, e.strerror, e.filename) == (errno.ENXIO, "a special file where a file belongs (not opened)", str(fifo))
    target = tmp_path / "elsewhere"
    target.write_text("kept\n")
    link = tmp_path / "link.log"
    link.symlink_to(target)
    with pytest.raises(OSError, match="a symbolic link where a file belongs"):
        open_to_write(link)
    (tmp_path / "folder.log").mkdir()
    with pytest.raises(OSError, match="a folder where a file belongs"):
        open_to_write(tmp_path / "folder.log")
    assert target.read_text() == "kept\n"
    log = tmp_path / "ok.log"
    log.write_text("an older run's log\n")
    with open_to_write(log) as f:
        f.write(b"this run\n")
    assert log.read_text() == "this run\n"
    with open_to_write(tmp_path / "new.lock", truncate=False):
        pass
    assert (tmp_path / "new.lock").stat().st_mode & 0o777 == 0o600
