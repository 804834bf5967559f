"""The artifact table (tasks/artifacts.py) is the one list of per-host files: every consumer sees every row.

For each kind of host (LUKS or not, keys sealed or in the clear, monolithic or not, stateful
or stateless, booted by iPXE or by shim and GRUB), each
row the host has must reach each stage that the row says it goes to, with its mode: a
stage that kept a list of its own would miss a new row, and this fails.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tasks import artifacts, imagenative, lint, overlay, publish, render, rootfs
from tasks.layout import TEMPLATES, host_dir, host_file
from tasks.model import Host

from conftest import a_host_record

# a stateless host has no LUKS (the inventory refuses it)
KINDS = [k for k in itertools.product((False, True), ("clear", "machine"), (False, True), ("stateful", "stateless"),
                                       ("ipxe", "grub-secureboot"))
         if not (k[0] and k[3] == "stateless")]


def a_host(luks: bool, mode: str, monolithic: bool, root: str = "stateful", loader: str = "ipxe") -> Host:
    data = a_host_record(client="c-1", secrets={"mode": mode}, monolithic=monolithic, root={"mode": root}, boot={"loader": loader},
                         luks={"name": "cryptroot", "keyfile": "keys/h.luks"} if luks else None)
    return Host(name="h1", source="hosts/nodes/h1.yaml", sources=["hosts/nodes/h1.yaml"], data=data)


@pytest.mark.parametrize("luks,mode,monolithic,root,loader", KINDS)
def test_every_row_reaches_every_consumer_it_names(luks: bool, mode: str, monolithic: bool, root: str, loader: str) -> None:
    host = a_host(luks, mode, monolithic, root, loader)
    h = host.cfg
    rows = artifacts.of_host(h)
    rendered = render.host_outputs(host)
    layer = overlay.layer_members(host)
    packed = overlay.layer_outputs(host)
    image = imagenative.image_files(host)
    fresh = rootfs.host_files(host)
    tree = publish.host_sources(host)
    shell = lint.rendered_shell(host.name, h)
    for a in rows:
        build = artifacts.path(a.build, h) if a.build else None
        if a.stage == "render":
            assert rendered.get(build) == a.mode, f"render does not write {a.name}"
        if a.stage == "overlay":
            assert build in packed, f"overlay does not write {a.name}"
        if a.template:
            assert (TEMPLATES / a.template).is_file(), f"{a.name}: no template {a.template}"
        if a.layer and (not a.layer_when or artifacts.has(h, a.layer_when)):
            inside = artifacts.path(a.layer, h)
            assert layer.get(inside) == (build, a.mode), f"the layer does not carry {a.name}"
            assert Path(inside).parent.as_posix() in overlay.DIRS, f"the layer makes no folder for {a.name}"
        if a.image:
            assert image.get(artifacts.path(a.image, h)) == (host_dir(host.name) / build, a.mode), f"image-native mode does not install {a.name}"
        if a.image or a.fresh_root:
            assert artifacts.path(a.image or a.fresh_root, h) in fresh, f"provisioning does not install {a.name}"
        if a.tree:
            assert tree.get(a.tree) == host_file(host.name, build), f"publish does not copy {a.name}"
            assert a.tree in publish.HOST_FILES and (a.tree in publish.SECRET_FILES) == a.secret
        assert (host_file(host.name, build) in shell) == a.shell if build else not a.shell
    # and no consumer has a file that is not a row
    assert set(rendered) == {artifacts.path(a.build, h) for a in rows if a.stage == "render"}
    assert set(packed) == {artifacts.path(a.build, h) for a in rows if a.stage == "overlay"}
    assert set(image) - set(imagenative.static_files()) == {artifacts.path(a.image, h) for a in rows if a.image}
    assert set(fresh) - set(image) == {artifacts.path(a.fresh_root, h) for a in rows if a.fresh_root}
    assert set(tree) == {a.tree for a in rows if a.tree}
    assert len(shell) == sum(a.shell for a in rows)


def test_the_keys_travel_sealed_or_clear_never_both() -> None:
    """Clear mode: the layer carries the keyring (and LUKS key); machine mode only their sealed envelope."""
    clear = overlay.layer_members(a_host(True, "clear", False))
    machine = overlay.layer_members(a_host(True, "machine", False))
    assert {"etc/ceph/ceph.client.c-1.keyring", "etc/cephboot/luks.key"} <= set(clear) and "etc/cephboot/sealed" not in clear
    assert "etc/cephboot/sealed" in machine and not {"etc/ceph/ceph.client.c-1.keyring", "etc/cephboot/luks.key"} & set(machine)


def test_the_layer_makes_its_folders_owner_only_where_they_hold_only_secrets() -> None:
    assert overlay.DIRS == {"cephboot": 0o755, "cephboot/root": 0o755, "cephboot/root/etc": 0o755,  # a stateless host's overlay files
                           "conf": 0o755, "conf/conf.d": 0o755, "etc": 0o755, "etc/ceph": 0o755, "etc/cephboot": 0o700}


def test_publish_replaces_the_script_that_names_the_others_last() -> None:
    assert publish.HOST_FILES[-1] == "boot.ipxe" and set(publish.HOST_FILES) == {"boot.ipxe", "grub.cfg", "overlay.cpio", "initrd.img"}
    # a grub-secureboot host's GRUB config names the layers too: it goes after them
    assert publish.HOST_FILES.index("grub.cfg") > max(publish.HOST_FILES.index(n) for n in ("overlay.cpio", "initrd.img"))


def test_only_grub_secureboot_hosts_get_a_grub_config() -> None:
    """boot.loader: grub-secureboot adds the grub.cfg row (rendered, published); iPXE hosts have none."""
    grub, ipxe = a_host(False, "clear", False, loader="grub-secureboot"), a_host(False, "clear", False)
    assert render.host_outputs(grub)["grub.cfg"] == 0o644 and "grub.cfg" not in render.host_outputs(ipxe)
    assert publish.host_sources(grub)["grub.cfg"] == host_file("h1", "grub.cfg") and "grub.cfg" not in publish.host_sources(ipxe)
    assert "grub.cfg" in artifacts.render_conditional()  # removed when a host goes back to iPXE


def test_every_per_host_template_is_a_row() -> None:
    """A template under the per-host folders without a row would never be rendered."""
    per_host = ("initramfs-tools/conf.d", "rootfs", "tree/hosts")
    found = sorted(str(p.relative_to(TEMPLATES)) for top in per_host for p in (TEMPLATES / top).rglob("*.j2"))
    assert found == artifacts.templates()


def test_the_docs_show_the_table_as_it_is() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "layers-and-publish.md").read_text()
    assert artifacts.update_doc(doc) == doc, "python -m tasks.artifacts --update-doc"
