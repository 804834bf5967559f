"""The engine (tasks/engine.py, tasks/stage.py) as a user meets it: what `doit info` shows of a
stage at any scale, and per-host lines that are commands doit takes back."""
from __future__ import annotations

from pathlib import Path

from builtsite import a_built_site, the_built_example  # noqa: F401  (fixtures)
from conftest import PROJECT, Site, copy_site

from bench import generate, run


def test_doit_info_shows_a_stage_in_a_few_lines_at_any_number_of_hosts(tmp_path: Path) -> None:
    """The check's findings (task.meta) print as one line with a count and a few names, never a record per host."""
    kernels, _ = run.kernels_to_use()
    generate.generate(tmp_path, 300, kernels)
    site = Site(tmp_path)
    out = site.doit("info", "render:hosts", check=False).stdout
    meta = [line for line in out.splitlines() if line.startswith("meta")]
    assert meta == ["meta       : {'due': <300 of 300 hosts due: h00000, h00001, h00002, h00003, h00004, ...>}"], out
    assert len(out.splitlines()) < 20 and "h00299" not in out, out


def test_a_per_host_line_pasted_back_into_doit_redoes_that_host_alone(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path / "site")
    first = site.doit("render")
    lines = sorted(line.strip() for line in first.stdout.splitlines() if line.startswith("  - "))
    assert lines == ["- render:hosts --only boreas", "- render:hosts --only notus", "- render:hosts --only zephyr"], first.stdout
    site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset")
    site.edit("nodes/zephyr.yaml", "address: 198.51.100.21/24", "address: 198.51.100.22/24")
    pasted = site.doit(*lines[1][2:].split())  # `doit render:hosts --only notus`, as printed
    assert pasted.ran == {"render:notus"}, pasted.stdout
    assert site.doit("render").ran == {"render:zephyr"}  # the other edited host stayed due


def test_every_per_host_command_names_hosts_one_way_and_its_lines_paste_back(tmp_path: Path) -> None:
    """`--only NAME,@PROFILE` for a stage and for a cluster command alike; a cluster command's
    per-host line pasted back does that host alone; an unknown name fails at once (before the
    stages the command depends on), listing the hosts or the profiles, without a traceback."""
    site = copy_site(PROJECT, tmp_path / "site")
    rendered = site.doit("render:hosts", "--only", "@rack-a")  # zephyr, and boreas through its profile's list
    assert rendered.ran == {"render:boreas", "render:zephyr"}, rendered.stdout
    # the example site has no admin keyring: each host stops there, before any Ceph I/O
    verify = site.doit("verify", "--only", "notus,@secure", check=False)
    lines = [line for line in verify.stdout.splitlines() if line.startswith("  - verify")]
    assert lines == ["  - verify --only boreas"], verify.stdout  # inventory order; the first failure stops it
    again = site.doit(*lines[0][4:].split(), check=False)  # `doit verify --only boreas`, as printed
    assert [line for line in again.stdout.splitlines() if line.startswith("  - verify")] == lines, again.stdout
    for args, said in ((("publish:hosts", "--only", "nosuch"), "cephboot: publish:hosts --only nosuch: no host 'nosuch' in hosts/nodes/ (no nosuch.yaml); the hosts are: boreas, notus, zephyr"),
                       (("provision", "--only", "zephyr,@nosuch"), "cephboot: provision --only zephyr,@nosuch: no host takes values from a profile 'nosuch' (hosts/profiles/nosuch.yaml); the profiles in use are: rack-a, secure"),
                       (("rollback", "--only", "nosuch"), "cephboot: rollback --only nosuch: no host 'nosuch'")):
        failed = site.doit(*args, check=False)
        out = failed.stdout + failed.stderr
        assert failed.returncode != 0 and said in out and "Traceback" not in out, out
        assert failed.tasks == {args[0]}, f"only the command ran, not what it depends on:\n{out}"


def test_rollback_names_its_hosts_as_the_stages_do(a_built_site: Site) -> None:
    """`doit rollback --only HOST` (the stages' way to name hosts) swaps the generations; the message says how to undo."""
    root = a_built_site.build / "publish" / "hosts" / "zephyr"
    first = (root / "overlay.cpio").read_bytes()
    a_built_site.edit("nodes/zephyr.yaml", "192.0.2.21/24", "192.0.2.41/24")
    a_built_site.doit("render", "overlay", "publish")
    run = a_built_site.doit("rollback", "--only", "zephyr")
    assert (root / "overlay.cpio").read_bytes() == first
    assert "run `doit rollback --only zephyr` again to undo" in run.stdout
