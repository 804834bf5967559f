"""Cost follows change: real doit runs on a copy of the example site, asserting which tasks ran."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import PROJECT, Site, copy_project, copy_site

CORE = ("render", "lint")  # the tasks of the core pipeline; later stages have their own tests
HOSTS = {"zephyr", "boreas", "notus"}


@pytest.fixture
def a_built_site(tmp_path: Path) -> Site:
    site = copy_site(PROJECT, tmp_path / "site")
    first = site.doit(*CORE)
    assert {f"render:{h}" for h in HOSTS} | {"render:site", "lint:rendered"} <= first.ran
    return site


def renders(run_ran: set[str]) -> set[str]:
    return {t.split(":", 1)[1] for t in run_ran if t.startswith("render:")}


def mtime(site: Site, rel: str) -> int:
    return (site.build / rel).stat().st_mtime_ns


def test_a_second_run_runs_nothing(a_built_site: Site) -> None:
    again = a_built_site.doit(*CORE)
    assert again.ran == set()
    listed = a_built_site.doit("--reporter", "console", *CORE)
    assert listed.ran == set() and {"render:hosts", "render:site", "lint:rendered"} <= listed.skipped


def test_editing_one_host_rerenders_that_host_only(a_built_site: Site) -> None:
    a_built_site.edit("nodes/notus.yaml", "net.ifnames=0", "net.ifnames=0, nomodeset")
    run = a_built_site.doit(*CORE)
    assert renders(run.ran) == {"notus"}
    assert "lint:rendered" not in run.ran  # notus's conf.d did not change: nothing to lint
    assert "nomodeset" in (a_built_site.build / "hosts/notus/boot.ipxe").read_text()


def test_a_host_change_that_reaches_shell_relints_only_that_file(a_built_site: Site) -> None:
    a_built_site.edit("nodes/boreas.yaml", "192.0.2.22/24", "192.0.2.42/24")
    run = a_built_site.doit("-v", "2", *CORE)
    assert renders(run.ran) == {"boreas"}
    assert "lint:rendered" in run.ran


def test_editing_a_profile_rerenders_exactly_its_hosts(a_built_site: Site) -> None:
    a_built_site.edit("profiles/secure.yaml", "ms_mode=secure", "ms_mode=crc")
    assert renders(a_built_site.doit(*CORE).ran) == {"boreas"}
    a_built_site.edit("profiles/rack-a.yaml", "deadline: 180", "deadline: 240")
    assert renders(a_built_site.doit(*CORE).ran) == {"boreas", "zephyr"}


def test_a_monitor_change_rewrites_ceph_conf_but_not_fstab(a_built_site: Site) -> None:
    fstabs = {h: mtime(a_built_site, f"hosts/{h}/rootfs/etc/fstab") for h in HOSTS}
    ipxes = {h: mtime(a_built_site, f"hosts/{h}/boot.ipxe") for h in HOSTS}
    time.sleep(0.01)
    a_built_site.edit("site.yaml", "192.0.2.13]", "192.0.2.14]")
    run = a_built_site.doit(*CORE)
    assert renders(run.ran) == HOSTS  # every host uses the monitors...
    assert "render:site" not in run.ran  # ...the routes do not
    for h in HOSTS:
        assert "mon_host = 192.0.2.11,192.0.2.12,192.0.2.14" in (a_built_site.build / f"hosts/{h}/rootfs/etc/ceph/ceph.conf").read_text()
        assert mtime(a_built_site, f"hosts/{h}/rootfs/etc/fstab") == fstabs[h], f"{h}'s fstab was rewritten"
        assert mtime(a_built_site, f"hosts/{h}/boot.ipxe") == ipxes[h], f"{h}'s boot.ipxe was rewritten"


def test_a_deleted_output_is_recreated(a_built_site: Site) -> None:
    victim = a_built_site.build / "hosts/zephyr/rootfs/etc/fstab"
    content = victim.read_bytes()
    victim.unlink()
    route = a_built_site.build / "site/ipxe/by-mac/52-54-00-a3-00-01.ipxe"  # notus's
    route_content = route.read_bytes()
    route.unlink()
    run = a_built_site.doit(*CORE)
    assert renders(run.ran) == {"zephyr", "notus"}  # a host's routes are its render's outputs
    assert victim.read_bytes() == content and route.read_bytes() == route_content


def test_adding_and_removing_a_host(a_built_site: Site) -> None:
    (a_built_site.hosts / "nodes/eurus.yaml").write_text('nics: {ceph: {macs: ["52:54:00:a4:00:01"], address: 192.0.2.24/24}}\n')
    from tasks import examplekeys

    examplekeys.ensure(a_built_site.root)
    run = a_built_site.doit(*CORE)
    assert renders(run.ran) == {"eurus", "site"}
    assert (a_built_site.build / "site/ipxe/by-mac/52-54-00-a4-00-01.ipxe").exists()
    (a_built_site.hosts / "nodes/eurus.yaml").unlink()
    run = a_built_site.doit(*CORE)
    assert renders(run.ran) == {"site"}
    assert not (a_built_site.build / "site/ipxe/by-mac/52-54-00-a4-00-01.ipxe").exists()
    assert not (a_built_site.build / "hosts/eurus").exists()


def test_a_keyring_change_rerenders_its_host(a_built_site: Site) -> None:
    from tasks import examplekeys

    ring = a_built_site.hosts / "keys/notus.keyring"
    new_key = examplekeys.cephx_secret()
    ring.write_text(f"[client.notus]\n\tkey = {new_key}\n")
    run = a_built_site.doit(*CORE)
    assert renders(run.ran) == {"notus"}
    assert new_key in (a_built_site.build / "hosts/notus/rootfs/etc/ceph/ceph.client.notus.keyring").read_text()


@pytest.fixture
def a_site_with_its_own_code(tmp_path: Path) -> Site:
    project = copy_project(tmp_path / "project")
    site = Site(copy_site(PROJECT, tmp_path / "site").root, project)
    site.doit(*CORE)
    return site


def test_editing_a_template_rerenders_what_uses_it(a_site_with_its_own_code: Site) -> None:
    site = a_site_with_its_own_code
    template = site.dodo.parent / "templates/rootfs/etc/fstab.j2"
    template.write_text(template.read_text() + "# a new last line\n")
    run = site.doit(*CORE)
    assert renders(run.ran) == HOSTS
    assert "lint:rendered" not in run.ran
    for h in HOSTS:
        assert (site.build / f"hosts/{h}/rootfs/etc/fstab").read_text().endswith("# a new last line\n")
    route = site.dodo.parent / "templates/tree/ipxe/route.ipxe.j2"
    route.write_text(route.read_text() + "# routes changed\n")
    assert renders(site.doit(*CORE).ran) == {"site"}


def test_editing_the_task_code_rerenders(a_site_with_its_own_code: Site) -> None:
    site = a_site_with_its_own_code
    code = site.dodo.parent / "tasks/render.py"
    code.write_text(code.read_text() + "\n# a change to the renderer\n")
    assert renders(site.doit(*CORE).ran) == HOSTS | {"site"}


def test_editing_a_static_script_relints_it(a_site_with_its_own_code: Site) -> None:
    site = a_site_with_its_own_code
    script = site.dodo.parent / "templates/initramfs-tools/scripts/local-top/cephboot"
    script.write_text(script.read_text() + "\n# a harmless comment\n")
    run = site.doit(*CORE)
    assert run.ran == {"lint:static"}
    script.write_text(script.read_text() + "echo $UNQUOTED_VARIABLE\n")
    failed = site.doit(*CORE, check=False)
    assert failed.returncode != 0
    assert "SC2086" in failed.stderr + failed.stdout


def test_lint_fails_the_build_on_a_finding_in_a_rendered_file(a_site_with_its_own_code: Site) -> None:
    site = a_site_with_its_own_code
    template = site.dodo.parent / "templates/initramfs-tools/conf.d/cephboot.j2"
    template.write_text(template.read_text() + "[ $1 = x ] && echo odd\n")
    run = site.doit(*CORE, check=False)
    assert run.returncode != 0
    assert "SC2086" in run.stderr + run.stdout
    # the failure is remembered: the next run lints the same files again rather than passing
    assert site.doit(*CORE, check=False).returncode != 0


def test_lint_groups_files_by_shape_yet_a_finding_in_any_one_file_fails(a_built_site: Site) -> None:
    from tasks.lint import shape

    confs = {h: a_built_site.build / f"hosts/{h}/initramfs-tools/conf.d/cephboot" for h in HOSTS}
    # zephyr and notus differ only inside quotes and in their headers: one shape
    assert shape(confs["notus"].read_text()).replace("''", "'v'") == shape(confs["zephyr"].read_text()).replace("''", "'v'")
    # two rendered files changed by hand: one inside a literal, one with a real finding
    confs["zephyr"].write_text(confs["zephyr"].read_text().replace("CEPHBOOT_HOST='zephyr'", "CEPHBOOT_HOST='zephyr2'"))
    with confs["notus"].open("a") as f:
        f.write("echo $1\n")
    run = a_built_site.doit("lint:rendered", check=False)
    assert run.returncode != 0
    assert "notus/initramfs-tools/conf.d/cephboot" in run.stderr and "SC2086" in run.stderr
