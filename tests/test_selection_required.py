"""Commands that change hosts one by one run only on the hosts named (`--only`; `'*'` for every
host), a host a command does not work on fails at once, and `image:NAME` of no image fails at
once: each refusal is one line before anything is written or the cluster is reached (tasks/selection.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import DoitRun, Site
from tasks import listing

# The example site has no admin keyring: a command that reaches its per-host step says this
CLUSTER_STEP = "provisioning needs ceph.admin_keyring in hosts/site.yaml"
NO_ADMIN = f"hosts/site.yaml: ceph.admin_keyring: missing; {CLUSTER_STEP}"  # the example site has no admin keyring (tasks/cephcli.py)
SNAP = "0123456789abcdef"


def _required(task: str, pattern: str = "") -> str:
    how = f" (the pattern {pattern!r} selects it with no --only)" if pattern else ""
    return (f"cephboot: {task}{how} changes each host it runs on, so it runs only on the hosts named: "
            f"`doit {task} --only HOST[,HOST...]`, `--only @PROFILE` (a profile's hosts) or `--only '*'` (every host it works on)")


def _untouched(site: Site, run: DoitRun) -> None:
    """Nothing written under build/ but doit's and the loader's housekeeping, no cluster step reached, no traceback."""
    # but the loader's cache of hosts/ and `doit list`'s summary of the tasks (tasks/listing.py)
    written = [p for p in site.snapshot() if not p.startswith("build/.inventory/") and p != listing.SUMMARY]
    assert written == [] and not (site.build / "hosts").exists(), written
    assert CLUSTER_STEP not in run.stdout + run.stderr and "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr


def _golden(site: Site, tmp_path: Path) -> None:
    """hosts/images/desktop.yaml; zephyr's root a clone of it, notus in profile rack-a and stateless on it (boreas: LUKS, no root.image)."""
    (tmp_path / "src" / "etc").mkdir(parents=True)
    (site.hosts / "images").mkdir()
    (site.hosts / "images" / "desktop.yaml").write_text(f"rootfs: {{source: {tmp_path / 'src'}}}\nsize: 64M\n")
    site.edit("nodes/zephyr.yaml", "profiles: [rack-a]", "profiles: [rack-a]\nroot: {image: desktop}")
    site.edit("nodes/notus.yaml", "monolithic: true", f"monolithic: true\nprofiles: [rack-a]\nroot: {{image: desktop, mode: stateless, snapshot: '{SNAP}'}}")


@pytest.mark.parametrize(("args", "task", "pattern"), [
    (["rotate"], "rotate", ""), (["retire"], "retire", ""), (["move-root"], "move-root", ""),
    (["rollback-root"], "rollback-root", ""), (["rollback"], "rollback", ""),
    (["rotate", "--only="], "rotate", ""), (["move-root", "--only", " , "], "move-root", ""),
    (["render:hosts", "rollback-root"], "rollback-root", ""),  # nothing before it runs either
    (["rot*"], "rotate", "rot*"),  # doit gives a pattern's tasks no options
    (["rot*", "rotate", "--only", "zephyr"], "rotate", "rot*"),  # and sets a task's options once, at its first mention
    (["publish:hosts", "--only", "zephyr", "retire"], "retire", ""),
])
def test_a_command_that_changes_hosts_without_only_is_one_line_and_touches_nothing(
        the_example_site: Site, args: list[str], task: str, pattern: str) -> None:
    run = the_example_site.doit(*args, check=False)
    assert run.returncode == 2 and run.stderr == _required(task, pattern) + "\n" and run.stdout == "", run.stdout + run.stderr
    _untouched(the_example_site, run)


def test_only_in_doit_cfg_names_the_hosts_as_on_the_command_line(the_example_site: Site) -> None:
    """doit.cfg's [task:rotate] only = ... is an --only doit gives the task: not refused."""
    here = the_example_site.root.parent / "here"
    here.mkdir()
    (here / "doit.cfg").write_text("[task:rotate]\nonly = zephyr\n")
    run = the_example_site.doit("rotate", check=False, cwd=here)
    assert run.returncode == 1 and CLUSTER_STEP in run.stdout, run.stdout + run.stderr
    assert [line for line in run.stdout.splitlines() if line.startswith("  - rotate")] == ["  - rotate --only zephyr"]


def test_every_host_spelled_out_reaches_each_hosts_step(the_example_site: Site) -> None:
    """`--only '*'`: every host, in the inventory's order; here the cluster step (no admin keyring) stops it."""
    run = the_example_site.doit("rotate", "--only", "*", check=False)
    assert run.returncode == 1 and "  - rotate --only boreas" in run.stdout.splitlines(), run.stdout + run.stderr
    assert f"cephboot: rotate: {NO_ADMIN} (" in run.stdout and run.stdout.rstrip().endswith("; stopped before notus, zephyr"), run.stdout


def test_every_host_of_move_root_is_each_host_with_a_root_image(the_example_site: Site, tmp_path: Path) -> None:
    """`--only '*'` chooses the hosts with root.image (a stateless one says how it moves, without the cluster);
    on a site where none has one, it says so at once."""
    bare = the_example_site.doit("move-root", "--only", "*", check=False)
    assert bare.returncode == 1 and bare.tasks == {"move-root"}, bare.stdout + bare.stderr
    assert ("cephboot: move-root --only *: no host is one move-root works on: "
            "host 'boreas' has no root.image (hosts/nodes/boreas.yaml)") in bare.stdout.splitlines(), bare.stdout
    _untouched(the_example_site, bare)
    _golden(the_example_site, tmp_path)
    for task, verb in (("move-root", "nothing to move here: change root.snapshot"),
                       ("rollback-root", "nothing to roll back here: set root.snapshot")):
        run = the_example_site.doit(task, "--only", "*", check=False)
        out = run.stdout.splitlines()
        assert [line for line in out if line.startswith(f"  - {task}")] == [f"  - {task} --only notus", f"  - {task} --only zephyr"], run.stdout
        said = out[out.index(f"  - {task} --only notus") + 1]
        assert said == (f"    stateless, root is golden-desktop/desktop-{SNAP} read-only, {verb} "
                        "(hosts/nodes/notus.yaml)" + (" and run `doit`" if task == "move-root" else " back to the version it booted and run `doit`")), said
        assert run.returncode == 1 and f"cephboot: {task}: {NO_ADMIN}" in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize("task", ["move-root", "rollback-root"])
def test_a_host_move_root_does_not_work_on_fails_at_once(the_example_site: Site, tmp_path: Path, task: str) -> None:
    """Named alone, a host without root.image and a stateless host (no root of its own) are refused
    before render:hosts runs or the cluster is reached, naming the hosts it works on; a profile
    chooses only the hosts with root.image, and its stateless ones say how they move."""
    _golden(the_example_site, tmp_path)
    stateless = (f"has no root of its own (stateless: it boots golden-desktop/desktop-{SNAP} read-only; "
                 "root.snapshot (hosts/nodes/notus.yaml) moves it and rolls it back, at its next boot after `doit`)")
    for only, host, why in (("boreas", "boreas", "has no root.image (hosts/nodes/boreas.yaml)"),
                            ("notus", "notus", stateless), ("zephyr,notus", "notus", stateless)):
        run = the_example_site.doit(task, "--only", only, check=False)
        assert run.returncode == 1 and run.tasks == {task}, run.stdout + run.stderr
        assert (f"cephboot: {task} --only {only}: host {host!r} {why}, and {task} works only on the hosts that do; "
                "those are: zephyr") in run.stdout.splitlines(), run.stdout
        _untouched(the_example_site, run)
    run = the_example_site.doit(task, "--only", "@rack-a", check=False)
    assert [line for line in run.stdout.splitlines() if line.startswith(f"  - {task}")] == [f"  - {task} --only notus", f"  - {task} --only zephyr"]
    assert CLUSTER_STEP in run.stdout, run.stdout + run.stderr


def test_rollback_root_of_a_host_without_root_image_is_refused_before_the_cluster(the_example_site: Site) -> None:
    """The example site: no host has root.image, so none is one rollback-root works on, by name or by profile."""
    for only, line in (("zephyr", "cephboot: rollback-root --only zephyr: host 'zephyr' has no root.image (hosts/nodes/zephyr.yaml), "
                                  "and rollback-root works only on the hosts that do; those are: none"),
                       ("@rack-a", "cephboot: rollback-root --only @rack-a: none of the hosts of profile 'rack-a' (hosts/profiles/rack-a.yaml) "
                                   "is one rollback-root works on: host 'boreas' has no root.image (hosts/nodes/boreas.yaml); those it works on: none")):
        run = the_example_site.doit("rollback-root", "--only", only, check=False)
        assert run.returncode == 1 and run.tasks == {"rollback-root"} and line in run.stdout.splitlines(), run.stdout + run.stderr
        _untouched(the_example_site, run)


def test_an_image_name_that_is_no_image_is_one_line_listing_the_images(the_example_site: Site, tmp_path: Path) -> None:
    none = the_example_site.doit("image:desktop", check=False)
    assert none.returncode == 2 and none.stdout == "", none.stdout + none.stderr
    assert none.stderr == "cephboot: image:desktop: no golden image 'desktop' in hosts/images/ (no desktop.yaml); the images are: none\n"
    _untouched(the_example_site, none)
    _golden(the_example_site, tmp_path)
    (the_example_site.hosts / "images" / "base.yaml").write_text(f"rootfs: {{source: {tmp_path / 'src'}}}\nsize: 64M\n")
    for args in (["image:dekstop"], ["render:hosts", "image:dekstop"], ["image:desktop", "image:dekstop"]):
        run = the_example_site.doit(*args, check=False)
        assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
        assert run.stderr == "cephboot: image:dekstop: no golden image 'dekstop' in hosts/images/ (no dekstop.yaml); the images are: base, desktop\n"
        _untouched(the_example_site, run)
    built = the_example_site.doit("image:desktop", check=False)  # an image that is there reaches the cluster step
    assert built.returncode == 1 and ".  image:desktop" in built.stdout.splitlines() and CLUSTER_STEP in built.stdout + built.stderr, built.stdout + built.stderr
