"""The one merge function, the one quoting function, and the loader's rules."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PROJECT, copy_site
from tasks import inventory
from tasks.inventory import InventoryError, merge
from tasks.quoting import LANGS, UnsafeValue, quote
from tasks.schema import Invalid


def test_maps_merge_recursively_and_later_layers_win() -> None:
    merged, origins = merge([
        ("site", {"map": {"method": "cli", "deadline": 120}, "kernel": "latest"}),
        ("profile", {"map": {"deadline": 180}}),
        ("host", {"map": {"method": "sysfs"}}),
    ])
    assert merged == {"map": {"method": "sysfs", "deadline": 180}, "kernel": "latest"}
    assert origins["map.method"] == "host" and origins["map.deadline"] == "profile" and origins["kernel"] == "site"


def test_lists_replace_unless_appended_with_plus() -> None:
    merged, _ = merge([("site", {"kernel_args": ["a", "b"]}), ("profile", {"kernel_args": ["c"]}), ("host", {"+kernel_args": ["d"]})])
    assert merged["kernel_args"] == ["c", "d"]


def test_null_removes_an_inherited_value() -> None:
    merged, _ = merge([("site", {"uuid": "x", "luks": {"name": "a"}}), ("host", {"luks": None})])
    assert merged == {"uuid": "x"}


def test_appending_to_a_scalar_is_an_error() -> None:
    with pytest.raises(Invalid, match="appends a list"):
        merge([("site", {"kernel": "latest"}), ("host", {"+kernel": ["x"]})])


def test_merge_does_not_modify_its_inputs() -> None:
    site = {"map": {"method": "cli"}}
    merge([("site", site), ("host", {"map": {"method": "sysfs"}})])
    assert site == {"map": {"method": "cli"}}


@pytest.mark.parametrize("value", ["a;b", "$(reboot)", "`id`", "a\nb", "it's", 'say "hi"', "back\\slash", "${x}"])
@pytest.mark.parametrize("lang", LANGS)
def test_hostile_values_are_refused_in_every_language(value: str, lang: str) -> None:
    with pytest.raises(UnsafeValue):
        quote(value, lang)


def test_shell_values_come_out_single_quoted_and_inert(tmp_path: Path) -> None:
    import subprocess

    value = "a b|c&d>e*f"
    script = f"v={quote(value, 'sh')}; printf '%s' \"$v\""
    assert subprocess.run(["dash", "-c", script], capture_output=True, text=True, cwd=tmp_path).stdout == value
    assert not list(tmp_path.iterdir()), "the value was interpreted by the shell"


def test_language_specific_characters() -> None:
    assert quote("ms_mode=secure", "ini") == "ms_mode=secure"
    with pytest.raises(UnsafeValue, match="ipxe"):
        quote("a || shell", "ipxe")
    with pytest.raises(UnsafeValue, match="ini"):
        quote("x # comment", "ini")
    with pytest.raises(UnsafeValue, match="fstab"):
        quote("a b", "fstab")


def test_the_example_site_loads(tmp_path: Path) -> None:
    site = inventory.load(copy_site(PROJECT, tmp_path).root, use_cache=False)
    assert set(site.hosts) == {"zephyr", "boreas", "notus"}
    z = site.hosts["zephyr"].data
    assert z["kernel_args"] == ["console=ttyS0,115200n8", "panic=30", "quiet"]  # site, then +profile
    assert z["map"]["deadline"] == 180 and z["rbd"]["namespace"] == "zephyr" and z["boot_path"] == "/hosts/zephyr"
    assert site.settings["ceph"]["boot_tree"] == "/tree"  # a host's writable /boot is outside the published tree
    b = site.hosts["boreas"].data
    assert b["map"] == {"method": "sysfs", "options": ["ms_mode=secure"], "deadline": 180}
    assert site.hosts["boreas"].sources == ["hosts/site.yaml", "hosts/profiles/rack-a.yaml", "hosts/profiles/secure.yaml", "hosts/nodes/boreas.yaml"]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    site.edit("nodes/notus.yaml", "address: dhcp", "address: nope")
    site.edit("nodes/zephyr.yaml", "uuid: 4c4c", "uuid: zz4c")
    with pytest.raises(InventoryError) as e:
        inventory.load(site.root, use_cache=False)
    assert {p.file for p in e.value.problems} == {"hosts/nodes/notus.yaml", "hosts/nodes/zephyr.yaml"}


def test_the_cache_follows_edits(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    first = inventory.load(site.root)
    assert inventory.load(site.root).hosts["notus"].digest == first.hosts["notus"].digest
    site.edit("nodes/notus.yaml", "panic=30,", "panic=31,")
    assert inventory.load(site.root).hosts["notus"].data["kernel_args"][1] == "panic=31"


def test_the_cache_reuses_unchanged_hosts_and_follows_profiles_and_keys(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    first = inventory.load(site.root)
    site.edit("nodes/notus.yaml", "panic=30,", "panic=31,")
    second = inventory.load(site.root)
    assert second.hosts["zephyr"] is not first.hosts["zephyr"]  # read back from the cache...
    assert second.hosts["zephyr"].data == first.hosts["zephyr"].data  # ...of the same, reused host
    site.edit("profiles/rack-a.yaml", "deadline: 180", "deadline: 190")
    third = inventory.load(site.root)
    assert third.hosts["zephyr"].data["map"]["deadline"] == 190 and third.hosts["boreas"].data["map"]["deadline"] == 190
    assert third.hosts["notus"].data["map"]["deadline"] == 120
    (site.hosts / "keys/notus.keyring").write_text("[client.notus]\n\tkey = not-a-key\n")
    with pytest.raises(InventoryError, match="notus.keyring"):
        inventory.load(site.root)


def test_the_cache_is_plain_json_owner_only_and_never_pickle(tmp_path: Path) -> None:
    import json
    import os

    site = copy_site(PROJECT, tmp_path)
    old = os.umask(0o000)  # what another user's shell may have: nothing may follow it
    try:
        inventory.load(site.root)
    finally:
        os.umask(old)
    cache = site.root / inventory.CACHE_FILE
    shards = sorted((site.root / inventory.SHARD_DIR).iterdir())
    assert json.loads(cache.read_text())["settings"]["pxe"]["http_base"] == "http://192.0.2.5/boot"
    hosts = {n: e for s in shards if s.name.startswith("hosts-") for n, e in json.loads(s.read_text())["hosts"].items()}
    assert hosts["zephyr"][0][2]["client"] == "zephyr"
    assert {p.stat().st_mode & 0o777 for p in [cache, *shards]} == {0o600}
    assert (site.root / inventory.SHARD_DIR).stat().st_mode & 0o777 == 0o700
    assert (site.root / "build").stat().st_mode & 0o777 == 0o700
    assert not list((site.root / "build").glob("*pickle*")) and not list((site.root / "build").glob("*.tmp*"))


def _planted(site_root: Path, mode: int = 0o600) -> Path:
    """A cache that is valid JSON with a value no inventory has: loading it would show."""
    import json

    inventory.load(site_root)
    cache = site_root / inventory.CACHE_FILE
    data = json.loads(cache.read_text())
    data["settings"]["pxe"]["http_base"] = "http://planted"
    cache.write_text(json.dumps(data))
    cache.chmod(mode)
    return cache


def test_a_cache_others_may_write_is_not_believed(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    _planted(site.root, 0o600)
    assert inventory.load(site.root).settings["pxe"]["http_base"] == "http://planted"  # believed when it is ours
    _planted(site.root, 0o666)
    assert inventory.load(site.root).settings["pxe"]["http_base"] == "http://192.0.2.5/boot"


def test_a_cache_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    cache = _planted(site.root)
    elsewhere = tmp_path / "elsewhere.json"
    cache.rename(elsewhere)
    cache.symlink_to(elsewhere)
    assert inventory.load(site.root).settings["pxe"]["http_base"] == "http://192.0.2.5/boot"


@pytest.mark.parametrize("damage", [b"", b"\x80\x04\x95 a pickle", b"{", b'{"format": 1}', b'{"format": 1, "root": null, "hosts": 3}', b"[" * 100_000, b"cos\nsystem\n(S'id'\ntR."])
def test_a_damaged_cache_means_a_full_parse_and_no_traceback(damage: bytes, tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    inventory.load(site.root)
    for p in [site.root / inventory.CACHE_FILE, *(site.root / inventory.SHARD_DIR).iterdir()]:
        p.write_bytes(damage)
    site.edit("nodes/notus.yaml", "panic=30,", "panic=31,")  # the memo is read only when an input changed
    assert inventory.load(site.root).hosts["notus"].data["kernel_args"][1] == "panic=31"
    assert set(inventory.load(site.root).hosts) == {"zephyr", "boreas", "notus"}


def test_an_edit_checked_through_the_cache_finds_what_another_host_holds(tmp_path: Path) -> None:
    """A changed host is checked against the index of the others' values: the same messages as a full load."""
    site = copy_site(PROJECT, tmp_path)
    inventory.load(site.root)
    site.edit("nodes/notus.yaml", '"52:54:00:a3:00:01"', '"52:54:00:a1:00:02"')  # one of zephyr's MACs
    with pytest.raises(InventoryError) as cached:
        inventory.load(site.root)
    with pytest.raises(InventoryError) as full:
        inventory.load(site.root, use_cache=False)
    assert [str(p) for p in cached.value.problems] == [str(p) for p in full.value.problems]
    assert "MAC 52:54:00:a1:00:02 is already used by host" in str(cached.value)
    site.edit("nodes/notus.yaml", '"52:54:00:a1:00:02"', '"52:54:00:a3:00:01"')
    assert inventory.load(site.root).hosts["notus"].data["nics"]["ceph"]["macs"] == ["52:54:00:a3:00:01"]
    with open(site.hosts / "nodes/notus.yaml", "a") as f:
        f.write("boot_path: /hosts/zephyr/notus\n")  # inside zephyr's /boot
    with pytest.raises(InventoryError, match="is inside /hosts/zephyr, the /boot of host 'zephyr'"):
        inventory.load(site.root)
    site.edit("nodes/notus.yaml", "boot_path: /hosts/zephyr/notus", "boot_path: /hosts/notus2")
    assert inventory.load(site.root).hosts["notus"].data["boot_path"] == "/hosts/notus2"
    assert inventory.load(site.root, use_cache=False).hosts["notus"].data == inventory.load(site.root).hosts["notus"].data


def test_one_damaged_shard_of_the_cache_means_a_full_parse(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    inventory.load(site.root)
    for shard in (site.root / inventory.SHARD_DIR).iterdir():
        shard.write_bytes(b'{"gen": 1, "hosts": {"zephyr": ')
        site.edit("nodes/notus.yaml", "panic=30,", "panic=31,")
        assert inventory.load(site.root).hosts["notus"].data["kernel_args"][1] == "panic=31"
        assert set(inventory.load(site.root).hosts) == {"zephyr", "boreas", "notus"}
        site.edit("nodes/notus.yaml", "panic=31,", "panic=30,")


def test_allowed_values_that_look_odd_are_kept(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    site.edit("site.yaml", "http_base: http://192.0.2.5/boot", "http_base: http://[2001:db8::5]:8080/boot/")
    (site.hosts / "secrets").mkdir()
    (site.hosts / "keys/notus.keyring").rename(site.hosts / "secrets/notus.keyring")
    (site.hosts / "keys/notus.keyring").symlink_to("../secrets/notus.keyring")  # a link that stays inside hosts/
    loaded = inventory.load(site.root, use_cache=False)
    assert loaded.settings["pxe"]["http_base"] == "http://[2001:db8::5]:8080/boot"
    assert loaded.hosts["notus"].data["keyring"] == "keys/notus.keyring"


def test_a_tree_published_before_the_marker_existed_is_still_recognised(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    tree = site.root / "build/publish"
    (tree / "kernels").mkdir(parents=True)
    (tree / "boot.ipxe").write_text("#!ipxe\n# generated by cephboot from hosts/site.yaml (template templates/tree/boot.ipxe.j2); do not edit\n")
    inventory.load(site.root, use_cache=False)
    (tree / "notes.txt").write_text("mine\n")
    with pytest.raises(InventoryError, match="no .cephboot-tree marker"):
        inventory.load(site.root, use_cache=False)
    (tree / inventory.TREE_MARKER).touch()
    inventory.load(site.root, use_cache=False)


def test_latest_kernel_is_the_newest_installed(tmp_path: Path) -> None:
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    for v in ("6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64", "6.12.0-1-amd64"):
        (boot / f"vmlinuz-{v}").parent.mkdir(exist_ok=True)
        (boot / f"vmlinuz-{v}").write_text("")
        if v != "6.12.0-1-amd64":  # no modules: not a usable kernel
            (mods / v).mkdir(parents=True)
    installed = inventory.installed_kernels(boot, mods)
    assert installed == ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64"]
    assert inventory.resolve_kernel("latest", installed) == "6.1.0-10-amd64"
    assert inventory.resolve_kernel("6.1.0-9-amd64", installed) == "6.1.0-9-amd64"


def test_the_readme_documents_every_key_with_its_default() -> None:
    from tasks.schema import update_readme

    readme = (PROJECT / "README.md").read_text()
    assert update_readme(readme) == readme, "run: python -m tasks.schema --update-readme"


def test_an_incremental_update_rewrites_only_the_changed_hosts_shard_and_keeps_the_index_true(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One host file edited: only its host shard is written again (the others are updated in
    place, not rebuilt), and the index of unique values follows: a MAC the edited host took is
    refused to another host, the one it gave up is free, and the result is a full load's."""
    monkeypatch.setattr(inventory, "SHARD_HOSTS", 1)  # a shard per host: 4 shards for 3 hosts
    site = copy_site(PROJECT, tmp_path)
    inventory.load(site.root)
    shards = {p: p.stat().st_mtime_ns for p in (site.root / inventory.SHARD_DIR).glob("hosts-*.json")}
    assert len(shards) == 4
    site.edit("nodes/notus.yaml", '"52:54:00:a3:00:01"', '"52:54:00:a3:00:09"')
    loaded = inventory.load(site.root)
    assert loaded.hosts["notus"].data["nics"]["ceph"]["macs"] == ["52:54:00:a3:00:09"]
    rewritten = [p.name for p, mtime in shards.items() if p.stat().st_mtime_ns != mtime]
    assert rewritten == [f"hosts-{inventory._shard('notus', 4)}.json"]
    site.edit("nodes/boreas.yaml", '"52:54:00:a2:00:01"', '"52:54:00:a3:00:09"')  # the MAC notus took just now
    with pytest.raises(InventoryError, match="MAC 52:54:00:a3:00:09 is already used by host") as refused:
        inventory.load(site.root)
    assert "notus" in str(refused.value) and "boreas" in str(refused.value)
    site.edit("nodes/boreas.yaml", '"52:54:00:a3:00:09"', '"52:54:00:a3:00:01"')  # the one notus gave up
    assert inventory.load(site.root).hosts["boreas"].data["nics"]["ceph"]["macs"] == ["52:54:00:a3:00:01"]
    full = inventory.load(site.root, use_cache=False)
    assert {n: h.data for n, h in inventory.load(site.root).hosts.items()} == {n: h.data for n, h in full.hosts.items()}


def test_an_incremental_update_rewrites_the_index_shards_of_the_values_that_changed_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host edit that changes one value reads and writes the index shards of that value, the
    one given up and the one taken, not of every value the host holds; values two changed hosts
    trade in one load, or a value one keeps and the other wants, are judged as a full load judges them."""
    monkeypatch.setattr(inventory, "SHARD_HOSTS", 1)
    site = copy_site(PROJECT, tmp_path)
    inventory.load(site.root)
    index = {p: p.stat().st_mtime_ns for p in (site.root / inventory.SHARD_DIR).glob("index-*.json")}
    count = len(index)
    kept = [f"{kind}\0{value}" for kind, value, _ in inventory._claims(inventory.load(site.root).hosts["zephyr"])]
    gone, taken = "MAC\x0052:54:00:a1:01:01", "MAC\x0052:54:00:a1:01:09"
    changes = {f"index-{inventory._shard(k, count)}.json" for k in (gone, taken)}
    assert gone in kept and {f"index-{inventory._shard(k, count)}.json" for k in kept} - changes  # the host's values lie in more shards than the change
    site.edit("nodes/zephyr.yaml", '"52:54:00:a1:01:01"', '"52:54:00:a1:01:09"')
    inventory.load(site.root)
    assert {p.name for p, mtime in index.items() if p.stat().st_mtime_ns != mtime} == changes
    # two hosts trade their addresses in one load: each takes the one the other gives up
    site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.22/24")
    site.edit("nodes/boreas.yaml", "192.0.2.22/24", "192.0.2.21/24")
    loaded = inventory.load(site.root)
    assert [loaded.hosts[h].data["nics"]["ceph"]["address"] for h in ("zephyr", "boreas")] == ["192.0.2.22/24", "192.0.2.21/24"]
    # notus changes and keeps its MAC; zephyr wants it too (in the same load): refused, as a full load refuses it
    site.edit("nodes/notus.yaml", "panic=30", "panic=31")
    site.edit("nodes/zephyr.yaml", '"52:54:00:a1:00:01"', '"52:54:00:a3:00:01"')
    with pytest.raises(InventoryError, match="MAC 52:54:00:a3:00:01 is already used by host") as cached:
        inventory.load(site.root)
    with pytest.raises(InventoryError) as full:
        inventory.load(site.root, use_cache=False)
    assert [str(p) for p in cached.value.problems] == [str(p) for p in full.value.problems]
    site.edit("nodes/zephyr.yaml", '"52:54:00:a3:00:01"', '"52:54:00:a1:00:01"')
    full_hosts = inventory.load(site.root, use_cache=False).hosts
    assert {n: h.data for n, h in inventory.load(site.root).hosts.items()} == {n: h.data for n, h in full_hosts.items()}


def test_a_removed_host_frees_its_values_for_the_next_incremental_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory, "SHARD_HOSTS", 1)
    site = copy_site(PROJECT, tmp_path)
    inventory.load(site.root)
    (site.hosts / "nodes/zephyr.yaml").unlink()
    assert set(inventory.load(site.root).hosts) == {"boreas", "notus"}
    site.edit("nodes/boreas.yaml", "192.0.2.22/24", "192.0.2.21/24")  # zephyr's address, checked through the cache
    site.edit("nodes/notus.yaml", '"52:54:00:a3:00:01"', '"52:54:00:a1:00:01"')  # and one of its MACs
    loaded = inventory.load(site.root)
    assert loaded.hosts["boreas"].data["nics"]["ceph"]["address"] == "192.0.2.21/24"
    assert loaded.hosts["notus"].data["nics"]["ceph"]["macs"] == ["52:54:00:a1:00:01"]


def test_a_missing_key_keeps_the_capitals_of_an_acronym_that_starts_its_doc(tmp_path: Path) -> None:
    """"missing; " + the field's doc: its first letter lowercased ("cluster fsid"), but never the
    first letter of an acronym ("URL under which ...", not "uRL under which ...")."""
    site = copy_site(PROJECT, tmp_path / "site")
    text = (site.hosts / "site.yaml").read_text()
    pxe = "pxe:\n  http_base: http://192.0.2.5/boot\n"
    fsid = "  fsid: 8f0c0a52-3c1e-4e8b-9a57-5d0b7f1e2a10\n"
    assert pxe in text and fsid in text
    (site.hosts / "site.yaml").write_text(text.replace(pxe, "pxe: {}\n").replace(fsid, ""))
    with pytest.raises(InventoryError) as e:
        inventory.load(site.root)
    said = [str(p) for p in e.value.problems]
    assert "hosts/site.yaml: pxe.http_base: missing; URL under which the web server serves the boot tree." in said, said
    assert "hosts/site.yaml: ceph.fsid: missing; cluster fsid." in said, said
    assert [inventory.as_clause(d) for d in ("RBD pool of the root image.", "SMBIOS field", "A host", "X")] == [
        "RBD pool of the root image.", "SMBIOS field", "a host", "x"]
