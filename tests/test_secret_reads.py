"""A host's secrets are read where they are used (render, sealing, provision) only as the
inventory's checks found them: a regular file of this user's (or root's), 0600.  Whatever is put
in its place between the check and the use — another user's file, a looser mode, a FIFO — is
refused with an OSError naming the path (one `cephboot:` line for the host), never read and never
waited on (tasks/yamlfiles.read_secret)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import Site
from tasks import inventory, provision
from tasks.failures import environmental
from tasks.render import render_host
from tasks.yamlfiles import Unreadable, read_secret, secret_bytes

from test_fifo_in_build import refused

NOBODY = 65534


def _secret(tmp_path: Path, mode: int = 0o600) -> Path:
    p = tmp_path / "a.secret"
    p.write_bytes(b"s3cr3t\n")
    p.chmod(mode)
    return p


def test_a_secret_of_this_user_that_only_it_reads_is_read(tmp_path: Path) -> None:
    p = _secret(tmp_path)
    assert read_secret(str(p), 64) == b"s3cr3t\n"
    (tmp_path / "link").symlink_to(p)  # a link inside the inventory is the inventory's choice (tasks/checks.py)
    assert read_secret(str(tmp_path / "link"), 64) == b"s3cr3t\n"


@pytest.mark.parametrize("change, said", [
    (lambda p: os.chown(p, NOBODY, -1), "is owned by uid 65534"),
    (lambda p: p.chmod(0o640), "has mode 0640; expected 0600"),
    (lambda p: p.chmod(0o604), "has mode 0604"),
])
def test_a_secret_another_user_owns_or_others_may_read_is_refused(tmp_path: Path, change, said: str) -> None:  # type: ignore[no-untyped-def]
    p = _secret(tmp_path)
    change(p)
    with pytest.raises(Unreadable, match=said):
        read_secret(str(p), 64)
    with pytest.raises(PermissionError) as e:
        secret_bytes(str(p), 64)
    assert e.value.filename == str(p) and said in e.value.strerror and environmental(e.value)
    assert "s3cr3t" not in str(e.value)


def test_a_fifo_in_place_of_a_secret_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "a.secret"
    os.mkfifo(fifo, 0o600)
    e = refused(lambda: secret_bytes(str(fifo), 64), fifo)
    assert "not a regular file" in e.strerror


def test_render_and_provision_refuse_a_keyring_swapped_after_the_checks(the_example_site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inventory checked zephyr's keyring; another user's file is then put in its place."""
    monkeypatch.chdir(the_example_site.root)
    s = inventory.load(the_example_site.root, use_cache=False)
    host = s.hosts["zephyr"]
    keyring = Path(s.path_str(host.cfg.keyring))
    os.chown(keyring, NOBODY, -1)
    with pytest.raises(PermissionError) as e:
        render_host(s, host)
    assert e.value.filename == str(keyring) and "owned by uid 65534" in e.value.strerror
    assert not (the_example_site.root / "build" / "hosts" / "zephyr" / "rootfs").exists()  # nothing of it rendered
    assert provision.entity_of(s, host.cfg) == f"client.{host.cfg.client}"  # read as no keyring, never as another's
    assert provision._key_on_file(s, host.cfg) == ""
