"""The base initrd's generated initramfs.conf is shell that mkinitramfs sources: it is shellchecked like every rendered shell file."""
from __future__ import annotations

from pathlib import Path

from builtsite import kver, the_built_example  # noqa: F401  (fixtures)
from conftest import PROJECT, Site, copy_project, copy_site


def test_what_is_linted_is_the_config_mkinitramfs_read(the_built_example: Site) -> None:
    from tasks import initrd, inventory

    site = inventory.load(the_built_example.root, use_cache=False)
    (kernel, fstypes), = initrd.kernels_in_use(site).items()
    nics = initrd.nic_modules(site.settings, initrd.module_list(site.settings, fstypes))
    real = the_built_example.build / "kernels" / kernel / "initramfs-tools/initramfs.conf"
    assert initrd.conf_text(kernel, nics, site.settings["kernels"]["compress"]) == real.read_text()
    assert "shellcheck shell=sh disable=SC2034" in real.read_text()  # mkinitramfs reads the variables


def test_a_finding_in_the_base_config_fails_the_lint_before_any_base_is_built(tmp_path: Path) -> None:
    code = copy_project(tmp_path / "code")
    template = code / "templates/initramfs-tools/initramfs.conf.j2"
    template.write_text(template.read_text() + "RUNSIZE=`echo 20%`\n")  # SC2006: legacy backquotes
    site = copy_site(PROJECT, tmp_path / "site")
    site = Site(site.root, code)
    run = site.doit("lint:base", check=False)
    assert run.returncode != 0
    assert "SC2006" in run.stderr and f"build/kernels/{kver()}/initramfs-tools/initramfs.conf:" in run.stderr
    assert not (site.build / "kernels").exists()  # linting never runs mkinitramfs
