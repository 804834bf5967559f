"""The admin keyring (ceph.admin_keyring) is read as a host's keyring is: a bad one stops a cluster command
before any Ceph I/O with one `cephboot:` line naming hosts/site.yaml and the key, never quoting the file."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks import cephcli, inventory
from tasks.examplekeys import cephx_secret
from tasks.failures import ClusterWide

from conftest import Site, copy_site, PROJECT

EXPECTED = ("expected the admin's keyring, mode 0600, no link: a [client.NAME] section with its key, "
            "e.g. a copy of /etc/ceph/ceph.client.admin.keyring from a monitor")
KEY = cephx_secret()  # a valid key: no message may quote it
NOT_A_KEY = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="  # valid base64, not a cephx secret


@pytest.fixture(scope="module")
def a_site_with_an_admin_keyring(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The example site with ceph.admin_keyring: keys/admin.keyring (each test writes that file)."""
    site = copy_site(PROJECT, tmp_path_factory.mktemp("admin") / "site")
    site.edit("site.yaml", "  boot_tree: /tree ", "  admin_keyring: keys/admin.keyring\n  boot_tree: /tree ")
    return site


def _put(site: Site, make: Callable[[Path], None]) -> Path:
    """hosts/keys/admin.keyring made by ``make`` (whatever was there removed first)."""
    p = site.hosts / "keys/admin.keyring"
    if p.is_dir() and not p.is_symlink():
        p.rmdir()
    elif os.path.lexists(p):
        p.unlink()
    make(p)
    return p


def _text(content: bytes, mode: int = 0o600) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.write(fd, content)
        os.fchmod(fd, mode)
        os.close(fd)
    return make


def _link(p: Path) -> None:
    target = p.parent / "real-admin.keyring"
    if not target.exists():
        _text(f"[client.admin]\n\tkey = {KEY}\n".encode())(target)
    p.symlink_to(target.name)


CASES = {
    "garbage": (_text(b"garbage\n"), "holds no [client.NAME] section (no section found)"),
    "empty": (_text(b""), "holds no [client.NAME] section (no section found)"),
    "not-utf8": (_text(b"\xff\xfe\x80garbage\n"), "holds no [client.NAME] section (no section found)"),
    "mon-only": (_text(f"[mon.]\n\tkey = {KEY}\n".encode()), "holds no [client.NAME] section (1 other section(s) found)"),
    "no-key-line": (_text(b"[client.admin]\n\tcaps mon = \"allow *\"\n"), "expected a 'key = ...' line in [client.admin]"),
    "not-a-cephx-key": (_text(f"[client.admin]\n\tkey = {NOT_A_KEY}\n".encode()),
                        "the key of [client.admin] is not a cephx secret (expected what `ceph-authtool --gen-print-key` prints)"),
    "too-big": (_text(b"#" * 70000), "more than 65536 bytes, too big for a keyring"),
    "group-readable": (_text(f"[client.admin]\n\tkey = {KEY}\n".encode(), 0o640),
                       "mode 0640 lets group/others read the admin's key (chmod 600 {path})"),
    "another-users": (lambda p: (_text(f"[client.admin]\n\tkey = {KEY}\n".encode())(p), os.chown(p, 4321, 4321)),
                      "owned by uid 4321, not by this user (uid {uid}) or root: its owner could read and choose the admin's key (chown {uid} {path})"),
    "link": (_link, "a symbolic link where a file belongs (not followed)"),
    "fifo": (lambda p: os.mkfifo(p, 0o600), "a special file where a file belongs (not opened)"),
    "folder": (lambda p: p.mkdir(mode=0o700), "a folder where a file belongs"),
    "missing": (lambda p: None, "file not found"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_admin_keyring_stops_verify_in_one_line_before_any_host_is_asked(a_site_with_an_admin_keyring: Site, case: str) -> None:
    """`doit verify --only zephyr` (real doit, no cluster: the refusal comes before any Ceph I/O)."""
    site = a_site_with_an_admin_keyring
    make, why = CASES[case]
    path = _put(site, make)
    run = site.doit("verify", "--only", "zephyr", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    said = [line for line in out.splitlines() if line.startswith("cephboot:")]
    why = why.format(path=path, uid=os.geteuid())
    assert said == [f"cephboot: verify: hosts/site.yaml: ceph.admin_keyring: hosts/keys/admin.keyring: {why}; {EXPECTED}"], out
    assert "Traceback" not in out and "PythonAction Error" not in out, out
    for secret in (KEY, NOT_A_KEY, "garbage\n", "caps mon"):
        assert secret not in out
    assert not (site.build / "provision/ceph.conf").exists(), "stopped before the admin's ceph.conf was written"


def test_provision_with_a_bad_admin_keyring_stops_before_its_first_host_and_names_the_others(a_site_with_an_admin_keyring: Site) -> None:
    site = a_site_with_an_admin_keyring
    _put(site, _text(b"garbage\n"))
    run = site.doit("provision", "--only", "*", check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert [line for line in out.splitlines() if line.startswith("cephboot:")] == [
        "cephboot: provision: hosts/site.yaml: ceph.admin_keyring: hosts/keys/admin.keyring: holds no [client.NAME] section "
        f"(no section found); {EXPECTED}; stopped before notus, zephyr"], out
    assert [line for line in out.splitlines() if line.startswith("  - ")] == ["  - provision --only boreas"], out
    assert "Traceback" not in out


def test_the_first_client_section_is_the_admins_identity_and_an_absolute_path_is_taken(tmp_path: Path) -> None:
    """A monitor's keyring may begin with [mon.]: the identity is the first [client.NAME] after it."""
    site = copy_site(PROJECT, tmp_path / "site")
    keyring = tmp_path / "elsewhere/ceph.client.admin.keyring"
    keyring.parent.mkdir()
    _text(f"[mon.]\n\tkey = {cephx_secret()}\n[client.boss]\n\tkey = {KEY}\n\tcaps mon = \"allow *\"\n[client.admin]\n\tkey = {cephx_secret()}\n".encode())(keyring)
    site.edit("site.yaml", "  boot_tree: /tree ", f"  admin_keyring: {keyring}\n  boot_tree: /tree ")
    assert cephcli.admin_keyring(inventory.load(site.root, use_cache=False)) == (keyring, "client.boss")


def test_an_admin_keyring_in_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    """As a host's keyring: whoever may write its folder could put another key in its place."""
    site = copy_site(PROJECT, tmp_path / "site")
    folder = site.hosts / "admin"
    folder.mkdir()
    _text(f"[client.admin]\n\tkey = {KEY}\n".encode())(folder / "admin.keyring")
    folder.chmod(0o775)
    site.edit("site.yaml", "  boot_tree: /tree ", "  admin_keyring: admin/admin.keyring\n  boot_tree: /tree ")
    with pytest.raises(ClusterWide) as e:
        cephcli.admin_keyring(inventory.load(site.root, use_cache=False))
    assert str(e.value) == (f"hosts/site.yaml: ceph.admin_keyring: hosts/admin/admin.keyring: its folder {folder} is writable by group (mode 0775): "
                            f"another user could swap the admin's key (chmod go-w, chown); {EXPECTED}")
    folder.chmod(0o755)
    assert cephcli.admin_keyring(inventory.load(site.root, use_cache=False)) == (folder / "admin.keyring", "client.admin")


def test_a_missing_admin_keyring_setting_says_what_to_set(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path / "site")
    with pytest.raises(ClusterWide) as e:
        cephcli.admin_keyring(inventory.load(site.root, use_cache=False))
    assert str(e.value) == f"hosts/site.yaml: ceph.admin_keyring: missing; provisioning needs ceph.admin_keyring in hosts/site.yaml ({EXPECTED})"
