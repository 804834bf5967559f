"""Machine mode: what the build writes and publishes carries no key byte; the envelope opens with the machine's secret only."""
from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest

from archives import contents
from builtsite import HOSTS, a_built_site, the_built_example  # noqa: F401  (fixtures)
from conftest import Site
from tasks.inventory import InventoryError, cephx_key, load
from tasks.sealed import ITERATIONS, Unsealed, derive, seal, unseal

SEALED = "initrd/etc/cephboot/sealed"


def key_bytes(site: Site, host: str) -> dict[str, bytes]:
    """Every secret of ``host`` as it could appear in a file: the cephx key (base64 and its raw AES
    key), the LUKS key, the machine secret."""
    keys = site.hosts / "keys"
    cephx = cephx_key((keys / f"{host}.keyring").read_text(), host)
    out = {"cephx key": cephx.encode(), "raw cephx key": base64.b64decode(cephx)[12:],
           "machine secret": (keys / f"{host}.secret").read_bytes().strip()}
    if (keys / f"{host}.luks").exists():
        out["LUKS key"] = (keys / f"{host}.luks").read_bytes().strip()
    return out


def test_no_key_byte_is_in_any_layer_initrd_or_published_file(the_built_example: Site, tmp_path: Path) -> None:
    build = the_built_example.build
    served = [*(build / "publish").rglob("*"), *build.glob("hosts/*/overlay.cpio"), *build.glob("hosts/*/initrd.img"),
              *build.glob("kernels/*/initrd.img")]
    served = [p for p in served if p.is_file()]
    assert {f"hosts/{h}/overlay.cpio" for h in HOSTS} <= {str(p.relative_to(build / "publish")) for p in served if "publish" in p.parts}
    needles = {f"{what} of {host}": needle for host in HOSTS for what, needle in key_bytes(the_built_example, host).items()}
    found, envelopes = [], 0
    for i, path in enumerate(served):
        for blob in contents(path, tmp_path / str(i)):
            envelopes += blob.startswith(b"cephboot-sealed 1\n")
            found += [f"{what} in {path.relative_to(build)}" for what, needle in needles.items() if needle in blob]
    assert found == []
    assert envelopes >= 2 * (len(HOSTS) + 1)  # looked inside: each built and published layer, notus's initrd twice more


def test_the_machine_secret_is_in_no_built_file(the_built_example: Site) -> None:
    secrets = {h: (the_built_example.hosts / f"keys/{h}.secret").read_bytes().strip() for h in HOSTS}
    for path in the_built_example.build.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [h for h, s in secrets.items() if s in data], path


def test_the_envelope_opens_with_the_machine_secret_and_with_nothing_else(the_built_example: Site) -> None:
    envelope = (the_built_example.build / "hosts/boreas" / SEALED).read_bytes()
    secret = (the_built_example.hosts / "keys/boreas.secret").read_bytes().strip()
    opened = unseal(envelope, secret)
    assert opened == {"keyring": (the_built_example.build / "hosts/boreas/rootfs/etc/ceph/ceph.client.boreas.keyring").read_bytes(),
                      "luks": (the_built_example.hosts / "keys/boreas.luks").read_bytes()}
    for wrong in (secret[:-1] + (b"A" if secret[-1:] != b"A" else b"B"), (the_built_example.hosts / "keys/zephyr.secret").read_bytes().strip()):
        with pytest.raises(Unsealed, match="MAC does not match"):
            unseal(envelope, wrong)
    assert f"kdf pbkdf2-sha256 {ITERATIONS} ".encode() in envelope


def test_openssl_derives_the_same_master_key_from_the_secret_in_a_file(tmp_path: Path) -> None:
    """What the boot script runs: the secret reaches openssl as a file, the key comes back as `key=`."""
    field = tmp_path / "chassis_asset_tag"
    field.write_text("Q2RZ7WJ4MNKXV3PLTB6YHCFD5GAE2S7U\n")  # sysfs ends the value with a newline
    salt = bytes.fromhex("0011223344556677")
    out = subprocess.run(["openssl", "enc", "-P", "-aes-256-cbc", "-pbkdf2", "-md", "sha256", "-iter", "1000", "-S", salt.hex(),
                          "-pass", f"file:{field}"], capture_output=True, text=True, check=True).stdout
    master = bytes.fromhex(out.split("key=")[1].split()[0])
    import hashlib
    import hmac

    assert master == hashlib.pbkdf2_hmac("sha256", b"Q2RZ7WJ4MNKXV3PLTB6YHCFD5GAE2S7U", salt, 1000, 48)[:32]
    assert derive(b"Q2RZ7WJ4MNKXV3PLTB6YHCFD5GAE2S7U", salt, 1000)[0] == hmac.new(master, b"cephboot-sealed enc", "sha256").digest()


def test_sealing_is_deterministic_and_bound_to_host_and_site() -> None:
    keys = {"keyring": b"[client.x]\n\tkey = AQAAAAAAAAAAABAAY2VwaGJvb3QtZml4dHVyZQ==\n"}
    one = seal("x", keys, b"S" * 20, "fsid-a", iterations=1000)
    assert seal("x", keys, b"S" * 20, "fsid-a", iterations=1000) == one
    assert seal("x", keys, b"S" * 20, "fsid-b", iterations=1000) != one  # another salt
    assert seal("y", keys, b"S" * 20, "fsid-a", iterations=1000) != one
    assert b"AQAAAAAAAAAAABAAY2VwaGJvb3QtZml4dHVyZQ==" not in one
    assert unseal(one, b"S" * 20) == keys


def test_a_monitor_change_repacks_layers_but_seals_nothing_again(a_built_site: Site) -> None:
    envelope = a_built_site.build / "hosts/zephyr" / SEALED
    before = (envelope.stat().st_mtime_ns, envelope.read_bytes())
    a_built_site.edit("site.yaml", "192.0.2.13]", "192.0.2.14]")
    run = a_built_site.doit("render", "overlay")
    assert "overlay:zephyr" in run.ran
    assert (envelope.stat().st_mtime_ns, envelope.read_bytes()) == before


def test_a_new_machine_secret_reseals_and_the_old_one_no_longer_opens(a_built_site: Site) -> None:
    secret_file = a_built_site.hosts / "keys/zephyr.secret"
    old = secret_file.read_bytes().strip()
    secret_file.write_bytes(b"NEWSECRETFORZEPHYR0123456789ABCD\n")
    run = a_built_site.doit("render", "overlay", "publish")
    assert {"render:zephyr", "overlay:zephyr", "publish:zephyr"} <= run.ran
    assert not {t for t in run.ran if t.split(":")[0] in ("render", "overlay") and not t.endswith(("zephyr", "site"))}
    published = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "etc/cephboot/sealed"],
                               input=(a_built_site.build / "publish/hosts/zephyr/overlay.cpio").read_bytes(),
                               capture_output=True, check=True).stdout
    assert set(unseal(published, b"NEWSECRETFORZEPHYR0123456789ABCD")) == {"keyring"}
    with pytest.raises(Unsealed):
        unseal(published, old)


def test_clear_mode_is_said_in_the_inventory_and_warned_about_naming_its_hosts(a_built_site: Site) -> None:
    quiet = a_built_site.doit("list")
    assert "served in the clear" not in quiet.stderr
    a_built_site.hosts.joinpath("nodes/boreas.yaml").write_text(
        a_built_site.hosts.joinpath("nodes/boreas.yaml").read_text() + "secrets:\n  mode: clear\n")
    run = a_built_site.doit()
    assert ("cephboot: warning: secrets.mode: clear: the cephx keys (and LUKS keys) of 1 host(s) are served in the clear, "
            "to any client that can reach the web server: boreas") in run.stderr
    names = subprocess.run(["cpio", "-it", "--quiet"], input=(a_built_site.build / "publish/hosts/boreas/overlay.cpio").read_bytes(),
                           capture_output=True, check=True).stdout.decode().split()
    assert "etc/ceph/ceph.client.boreas.keyring" in names and "etc/cephboot/sealed" not in names


@pytest.mark.parametrize(("change", "expected"), [
    ("missing", "secrets.machine_secret: 'keys/zephyr.secret': file not found at"),
    ("readable", "secrets.machine_secret: 'keys/zephyr.secret': mode 0640 lets group/others read a secret"),
    ("short", "secrets.machine_secret: 'keys/zephyr.secret': expected one line of 16 to 64 letters, digits"),
    ("spaces", "secrets.machine_secret: 'keys/zephyr.secret': expected one line of 16 to 64 letters, digits"),
])
def test_a_machine_secret_is_checked_like_a_key(the_example_site: Site, change: str, expected: str) -> None:
    secret = the_example_site.hosts / "keys/zephyr.secret"
    if change == "missing":
        secret.unlink()
    elif change == "readable":
        secret.chmod(0o640)
    else:
        secret.write_bytes(b"TOO-SHORT\n" if change == "short" else b"A SECRET WITH SPACES IN IT\n")
    with pytest.raises(InventoryError) as failed:
        load(the_example_site.root, use_cache=False)
    message = str(failed.value)
    assert f"hosts/nodes/zephyr.yaml: {expected}" in message
    if change == "missing":
        assert "make one with `python -m tasks.examplekeys`, or set secrets.mode: clear" in message


def test_an_image_native_root_gets_the_sealed_keys_for_its_initrd_and_its_own_keys(the_built_example: Site) -> None:
    """The root's own update-initramfs runs the hook, which puts only the envelope into the initrd
    (tests/test_hook.py); the running system keeps its keyring (and LUKS key) in its root."""
    from tasks import imagenative, inventory

    site = inventory.load(the_built_example.root, use_cache=False)
    files = imagenative.image_files(site.hosts["boreas"])
    assert {name: mode for name, (_, mode) in files.items() if name.startswith("etc/ceph/ceph.client") or name.startswith("etc/cephboot")} == {
        "etc/cephboot/sealed": 0o600, "etc/ceph/ceph.client.boreas.keyring": 0o600, "etc/cephboot/luks.key": 0o600}
    conf = dict(line.split("=", 1) for line in (the_built_example.build / "hosts/boreas/initramfs-tools/conf.d/cephboot").read_text().splitlines()
                if line.startswith("CEPHBOOT_"))
    assert conf["CEPHBOOT_SEALED"] == "'/etc/cephboot/sealed'" and conf["CEPHBOOT_SMBIOS_FIELD"] == "'chassis_asset_tag'"


def test_a_secret_spoiled_after_a_good_load_is_caught_by_the_next(the_example_site: Site) -> None:
    load(the_example_site.root)  # cached, with the secrets it checked
    (the_example_site.hosts / "keys/notus.secret").write_bytes(b"short\n")
    with pytest.raises(InventoryError, match="hosts/nodes/notus.yaml: secrets.machine_secret: 'keys/notus.secret': expected one line"):
        load(the_example_site.root)


@pytest.mark.parametrize("how", ["same-file", "same-value"])
def test_two_hosts_cannot_share_a_machine_secret(the_example_site: Site, how: str) -> None:
    """Machine A's root reads A's field: with B's secret the same, it would open B's keys."""
    if how == "same-file":
        (the_example_site.hosts / "nodes/notus.yaml").write_text(
            (the_example_site.hosts / "nodes/notus.yaml").read_text() + "secrets:\n  machine_secret: keys/zephyr.secret\n")
    else:
        (the_example_site.hosts / "keys/notus.secret").write_bytes((the_example_site.hosts / "keys/zephyr.secret").read_bytes())
    with pytest.raises(InventoryError) as failed:
        load(the_example_site.root, use_cache=False)
    found = re.search(r"hosts/nodes/(\w+)\.yaml: secrets\.machine_secret: '[^']+' holds the same secret as host '(\w+)' "
                      r"\(hosts/nodes/(\w+)\.yaml: '[^']+'\); every machine needs its own", str(failed.value))
    assert found and {found.group(1), found.group(2)} == {"zephyr", "notus"} and found.group(2) == found.group(3), str(failed.value)
