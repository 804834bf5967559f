"""`python -m tasks.examplekeys SITE` makes the secrets each host names with its values resolved as the
inventory resolves them (defaults < profiles < host file, .yaml and .yml), owner-only, never touching what
is there and never through a link; an inventory that does not resolve is said in the inventory's own words."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import inventory

from conftest import PROJECT, Site


def _examplekeys(site: Path, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """The command as README says it, run from the project with the site as its argument."""
    return subprocess.run([sys.executable, "-m", "tasks.examplekeys", str(site)], capture_output=True, text=True,
                          cwd=PROJECT, timeout=600, preexec_fn=lambda: os.umask(umask))


@pytest.fixture
def a_keyless_example_site(tmp_path: Path) -> Site:
    """The example site's hosts/ without any secret."""
    shutil.copytree(PROJECT / "hosts", tmp_path / "site/hosts", ignore=shutil.ignore_patterns("keys"))
    return Site(tmp_path / "site")


def _created(run: subprocess.CompletedProcess[str], site: Site) -> set[str]:
    prefix = f"created {site.hosts}/"
    lines = run.stdout.splitlines()
    assert all(line.startswith(prefix) for line in lines), run.stdout
    return {line[len(prefix):] for line in lines}


def test_secrets_follow_defaults_profiles_and_yml_host_files(a_keyless_example_site: Site) -> None:
    """`secrets.mode` from site.yaml's defaults; `client`, `keyring`, `luks` and `secrets` from
    profiles; a host file named .yml: each host gets what its merged values name, and the
    inventory then loads (every secret its checks read is there and valid)."""
    site = a_keyless_example_site
    site.edit("site.yaml", "    mode: machine\n", "    mode: clear\n")
    (site.hosts / "profiles/enc.yaml").write_text("client: zeph\nkeyring: keys/z/zephyr.keyring\nluks: {name: cryptroot, keyfile: keys/rack.luks}\n")
    site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", "profiles: [rack-a, enc]")
    site.edit("profiles/secure.yaml", "map:", "secrets: {mode: machine, machine_secret: keys/boreas-m.secret}\nmap:")
    eurus = (site.hosts / "nodes/notus.yaml").read_text().replace("0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b44", "0d6f3e90-6a36-4f0e-b1d7-3c2a9e5f7b45")
    (site.hosts / "nodes/eurus.yml").write_text(eurus.replace("52:54:00:a3:00:01", "52:54:00:a3:00:09"))
    run = _examplekeys(site.root, umask=0)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert _created(run, site) == {
        "keys/boreas.keyring", "keys/boreas.luks", "keys/boreas-m.secret",
        "keys/eurus.keyring", "keys/notus.keyring",
        "keys/z/zephyr.keyring", "keys/rack.luks",
    }
    for name, client in (("boreas", "boreas"), ("eurus", "eurus"), ("notus", "notus"), ("z/zephyr", "zeph")):
        assert (site.hosts / f"keys/{name}.keyring").read_text().startswith(f"[client.{client}]\n\tkey = ")
    for p in (site.hosts / "keys").rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), f"{p} under umask 000"
    loaded = inventory.load(site.root, use_cache=False)
    assert loaded.hosts["zephyr"].cfg.luks.keyfile == "keys/rack.luks" and "eurus" in loaded.hosts
    again = _examplekeys(site.root)
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""


def test_what_is_there_is_never_touched_nor_followed_nor_waited_for(a_keyless_example_site: Site, tmp_path: Path) -> None:
    """A file (even empty), a link (to a file, or to nothing) or a FIFO where a secret goes stays as it is."""
    site = a_keyless_example_site
    keys = site.hosts / "keys"
    keys.mkdir()
    (keys / "zephyr.keyring").write_text("mine\n")
    os.utime(keys / "zephyr.keyring", ns=(10**18, 10**18))
    victim = tmp_path / "victim"
    victim.write_text("not a secret\n")
    (keys / "notus.keyring").symlink_to(victim)
    (keys / "notus.secret").symlink_to(tmp_path / "nothing-here")
    os.mkfifo(keys / "boreas.keyring", 0o600)
    run = _examplekeys(site.root)
    assert run.returncode == 0, run.stderr
    assert _created(run, site) == {"keys/boreas.luks", "keys/boreas.secret", "keys/zephyr.secret"}
    assert (keys / "zephyr.keyring").read_text() == "mine\n" and (keys / "zephyr.keyring").stat().st_mtime_ns == 10**18
    assert victim.read_text() == "not a secret\n" and os.readlink(keys / "notus.keyring") == str(victim)
    assert not (tmp_path / "nothing-here").exists()
    assert stat.S_ISFIFO((keys / "boreas.keyring").lstat().st_mode)


def test_a_link_where_the_keys_folder_belongs_is_not_followed(a_keyless_example_site: Site, tmp_path: Path) -> None:
    site = a_keyless_example_site
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (site.hosts / "keys").symlink_to(elsewhere)
    run = _examplekeys(site.root)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        "cephboot: hosts/nodes/boreas.yaml: keyring: 'keys/boreas.keyring': hosts/keys: a symbolic link where a folder belongs "
        "(not followed); expected a folder below hosts/ where the secret can be created, owner-only (6 more secret(s) of this folder not made)"]
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("breakage, line", [
    (lambda s: s.edit("nodes/boreas.yaml", "profiles: [rack-a, secure]", "profiles: [rack-a, nosuch]"),
     "cephboot: hosts/nodes/boreas.yaml: profiles: 'nosuch': no such profile (expected one of: rack-a, secure)"),
    (lambda s: ((s.hosts / "profiles/loop.yaml").write_text("profiles: [secure]\n"), s.edit("profiles/secure.yaml", "map:", "profiles: [loop]\nmap:")),
     "cephboot: hosts/profiles/secure.yaml: profiles: include cycle: secure -> loop -> secure"),
    (lambda s: shutil.copy(s.hosts / "nodes/boreas.yaml", s.hosts / "nodes/boreas.yml"),
     "cephboot: hosts/nodes/boreas.yml: hosts/nodes/boreas.yaml and hosts/nodes/boreas.yml both define host 'boreas'; one would silently win: keep one"),
    (lambda s: s.edit("nodes/boreas.yaml", "luks:", "+kernel_args: oops\nluks:"),
     "cephboot: hosts/nodes/boreas.yaml: kernel_args: '+kernel_args' appends a list to an inherited list"),
], ids=["unknown-profile", "include-cycle", "yaml-and-yml", "append-a-scalar"])
def test_a_host_that_does_not_merge_is_said_in_one_line_and_the_others_get_their_secrets(a_keyless_example_site: Site, breakage, line: str) -> None:  # type: ignore[no-untyped-def]
    site = a_keyless_example_site
    breakage(site)
    run = _examplekeys(site.root)
    assert run.returncode == 2
    assert [x for x in run.stderr.splitlines() if x.strip()] == [line], run.stderr
    assert "keys/zephyr.keyring" in _created(run, site)
    # boreas.yaml still defines boreas when a boreas.yml is there too (the inventory reads the first, names the second)
    assert any(name.startswith("keys/boreas.") for name in _created(run, site)) == (line.startswith("cephboot: hosts/nodes/boreas.yml:"))


def test_an_unreadable_site_yaml_is_said_in_one_line_and_nothing_is_made(a_keyless_example_site: Site) -> None:
    site = a_keyless_example_site
    (site.hosts / "site.yaml").write_text("ceph: [\n")
    run = _examplekeys(site.root)
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == "cephboot: hosts/site.yaml: not valid YAML (line 2, column 1): did not find expected node content (while parsing a flow node at line 2)\n"
    assert not (site.hosts / "keys").exists()
