"""The example site built and published once per test session (one real mkinitramfs), copied for each test."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import PROJECT, Site, copy_site

HOSTS = {"zephyr", "boreas", "notus"}
# every stage after render; lint has its own tests and does not gate these
STAGES = ("render", "initrd", "overlay", "publish", "nginx")
_BUILT: dict[str, Site] = {}


def kver() -> str:
    """The newest installed kernel, which 'latest' in the example site resolves to."""
    from tasks.inventory import installed_kernels

    found = installed_kernels(Path("/boot"), Path("/lib/modules"))
    assert found, "no kernel installed: apt-get install linux-image-amd64"
    return found[-1]


def built_example(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """Build once per process, however many test modules ask (pytest would build once per module)."""
    if "site" not in _BUILT:
        site = copy_site(PROJECT, tmp_path_factory.mktemp("built") / "site")
        site.doit(*STAGES)
        _BUILT["site"] = site
    return _BUILT["site"]


def fresh_copy(src: Site, dst: Path) -> Site:
    """A copy of a built site with its doit state: up to date as it is, private to one test."""
    shutil.copytree(src.root, dst, symlinks=True)
    site = Site(dst, src.dodo.parent)
    # render declares the keyrings by absolute path, so it runs once in the new folder;
    # it writes identical bytes, so nothing after it runs but nginx (nginx.conf names the
    # absolute folder) and the publisher's look at the copied tree (new inodes: it compares
    # the bytes and writes nothing; a copied host folder prints no line)
    settle = site.doit(*STAGES)
    assert {t for t in settle.ran if not t.startswith("render:")} <= {"nginx", "publish:site", f"publish:{kver()}"}, settle.ran
    return site


def archive_names(path: Path) -> list[str]:
    """Member names of an initrd as lsinitramfs reads them."""
    out = subprocess.run(["lsinitramfs", str(path)], check=True, capture_output=True, text=True).stdout
    return out.splitlines()


@pytest.fixture(scope="session")
def the_built_example(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The example site after one full `doit`: rendered, base initrd built, layers packed, tree published."""
    return built_example(tmp_path_factory)


@pytest.fixture
def a_built_site(the_built_example: Site, tmp_path: Path) -> Site:
    """A private copy of the built example site that a test may edit and rebuild."""
    return fresh_copy(the_built_example, tmp_path / "site")
