"""The per-host artifacts: one row per file a host gets, saying where it comes from and where it lands.

Every stage reads this table instead of keeping its own list: render writes the rows
it makes, lint reads the rendered shell files, overlay packs the layer rows, image-native
mode and provisioning install the image rows, publish copies the tree rows, and the
bench finds the host's files here.  Adding a rendered per-host file is one template
under templates/, one row below and its golden case (tests/cases/); the test in
tests/test_artifacts.py fails when a consumer does not see a row.

The rows are listed in the order render writes them; publish replaces a host's files
in the reverse order of their rows, so the script that names the others (boot.ipxe)
goes last and a new script never finds its layer missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping

from . import model
from .model import HostView

SECRET = 0o600
PUBLIC = 0o644

# conditions a row may depend on, by name (a row names them, so the table stays data)
CONDITIONS: Mapping[str, Callable[[HostView], bool]] = {
    "luks": lambda cfg: bool(cfg.luks),
    "machine": lambda cfg: cfg.secrets.mode == "machine",  # keys travel sealed to the machine secret
    "clear": lambda cfg: cfg.secrets.mode != "machine",  # keys travel as they are
    "monolithic": lambda cfg: bool(cfg.monolithic),
    "stateless": lambda cfg: cfg.root.mode == "stateless",  # the root is the shared golden image, read-only
    "grub": lambda cfg: cfg.boot.loader == "grub-secureboot",  # shim -> Debian's signed GRUB -> signed kernel
}


@dataclass(frozen=True)
class Artifact:
    """One per-host file. Paths may hold ``{client}``, the host's cephx client name."""

    name: str  # what it is, for messages and the docs
    stage: str  # the stage that writes it under build/hosts/<host>/: render or overlay ('' when none does)
    source: str  # where its bytes come from: 'template', 'keyfile' (luks.keyfile, byte for byte),
    #              'seal' (the keys sealed to the machine secret), 'layer' (the packed layer),
    #              'monolithic' (base initrd + layer), 'name' (the host's name)
    build: str | None = None  # path under build/hosts/<host>/
    template: str | None = None  # under templates/, when source == 'template'
    secret: bool = False  # owner-only everywhere it lands (publish: publish.secret_mode)
    when: tuple[str, ...] = ()  # CONDITIONS that must all hold for a host to have it
    layer: str | None = None  # path inside the host's initrd layer (overlay.cpio)
    layer_when: tuple[str, ...] = ()  # further CONDITIONS for the layer to carry it
    image: str | None = None  # path inside the host's root image (image-native mode and provisioning)
    fresh_root: str | None = None  # path written only into a root that provisioning creates
    tree: str | None = None  # name in the host's folder of the published tree
    shell: bool = False  # a rendered shell file that lint runs shellcheck on

    @property
    def mode(self) -> int:
        return SECRET if self.secret else PUBLIC


KEYRING = "etc/ceph/ceph.client.{client}.keyring"  # on the host, in its layer and in its image
STATELESS_FILES = model.STATELESS_FILES.lstrip("/")  # in a stateless host's layer: files for its root's overlay

ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("conf.d", "render", "template", "initramfs-tools/conf.d/cephboot", "initramfs-tools/conf.d/cephboot.j2",
             layer="conf/conf.d/cephboot", image="etc/initramfs-tools/conf.d/cephboot", shell=True),
    Artifact("ceph.conf", "render", "template", "rootfs/etc/ceph/ceph.conf", "rootfs/etc/ceph/ceph.conf.j2",
             layer="etc/ceph/ceph.conf", image="etc/ceph/ceph.conf"),
    Artifact("fstab", "render", "template", "rootfs/etc/fstab", "rootfs/etc/fstab.j2", image="etc/fstab"),
    Artifact("boot.ipxe", "render", "template", "boot.ipxe", "tree/hosts/HOST/boot.ipxe.j2", tree="boot.ipxe"),
    # boot.loader: grub-secureboot: the GRUB config the site's grub/grub.cfg routes the host's MACs to
    Artifact("grub.cfg", "render", "template", "grub.cfg", "tree/hosts/HOST/grub.cfg.j2", when=("grub",), tree="grub.cfg"),
    Artifact("keyring", "render", "template", "rootfs/" + KEYRING, "rootfs/etc/ceph/keyring.j2", secret=True,
             layer=KEYRING, layer_when=("clear",), image=KEYRING),
    Artifact("crypttab", "render", "template", "rootfs/etc/crypttab", "rootfs/etc/crypttab.j2", when=("luks",),
             image="etc/crypttab"),
    # a stateless host's own files, which its layer carries into the overlay over the golden image
    Artifact("stateless hostname", "render", "template", "rootfs/etc/hostname", "rootfs/etc/hostname.j2", when=("stateless",),
             layer=STATELESS_FILES + "/etc/hostname"),
    Artifact("stateless fstab", "", "copy", "rootfs/etc/fstab", when=("stateless",), layer=STATELESS_FILES + "/etc/fstab"),
    Artifact("LUKS key", "render", "keyfile", "rootfs/etc/cephboot/luks.key", secret=True, when=("luks",),
             layer="etc/cephboot/luks.key", layer_when=("clear",), image="etc/cephboot/luks.key"),
    Artifact("sealed keys", "render", "seal", "initrd/etc/cephboot/sealed", secret=True, when=("machine",),
             layer="etc/cephboot/sealed", image="etc/cephboot/sealed"),
    Artifact("layer", "overlay", "layer", "overlay.cpio", secret=True, tree="overlay.cpio"),
    Artifact("monolithic initrd", "overlay", "monolithic", "initrd.img", secret=True, when=("monolithic",),
             tree="initrd.img"),
    Artifact("hostname", "", "name", fresh_root="etc/hostname"),
)

BY_NAME = {a.name: a for a in ARTIFACTS}
# what sealing records it sealed from, next to the sealed keys (render's own bookkeeping, not an output)
SEALED_STAMP = "initrd/sealed.stamp"


def _layer_dirs() -> dict[str, int]:
    """Every folder above a layer row (the kernel skips a file whose folder the archive has not
    made yet): owner-only where it holds only secrets, else 0755."""
    secret_only: dict[str, bool] = {}
    for a in ARTIFACTS:
        parts = a.layer.split("/")[:-1] if a.layer else []
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            secret_only[d] = secret_only.get(d, True) and a.secret
    return {d: 0o700 if only else 0o755 for d, only in sorted(secret_only.items())}


# folders the layer creates, with their modes
LAYER_DIRS = _layer_dirs()
# every file of a host's published generation, in the order publish replaces them (see above)
TREE_FILES: tuple[str, ...] = tuple(a.tree for a in reversed(ARTIFACTS) if a.tree)
SECRET_TREE_FILES = frozenset(a.tree for a in ARTIFACTS if a.tree and a.secret)


def has(cfg: HostView, conditions: tuple[str, ...]) -> bool:
    return all(CONDITIONS[c](cfg) for c in conditions)


def path(template: str, cfg: HostView) -> str:
    """A row's path for the host ``cfg`` (its ``{client}`` filled in)."""
    return template.replace("{client}", cfg.client) if "{" in template else template


@lru_cache(maxsize=None)
def _rows(flags: tuple[bool, ...]) -> tuple[Artifact, ...]:
    """The rows of a kind of host (LUKS, machine mode, monolithic), in table order."""
    held = {c: f(dict(zip(_FLAG_KEYS, flags))) for c, f in _FLAG_CONDITIONS.items()}
    return tuple(a for a in ARTIFACTS if all(held[c] for c in a.when))


@lru_cache(maxsize=None)
def _layer_rows(flags: tuple[bool, ...]) -> tuple[Artifact, ...]:
    held = {c: f(dict(zip(_FLAG_KEYS, flags))) for c, f in _FLAG_CONDITIONS.items()}
    return tuple(a for a in _rows(flags) if a.layer and a.build and all(held[c] for c in a.layer_when))


def _fill(template: str, client: str) -> str:
    return template.replace("{client}", client) if "{" in template else template


# Each projection's rows are worked out once per kind of host: the stages ask for every host on
# every run (at 10,000 hosts this must stay close to a dictionary lookup), and only the few paths
# that name the host's client are filled in per host (a cache per client would miss for every host).
def _project(rows: tuple[tuple[str, Any], ...], client: str) -> dict[str, Any]:
    """{path: value} of ``rows`` (path template, value), ``{client}`` filled in."""
    return {(path.replace("{client}", client) if "{" in path else path): v for path, v in rows}


@lru_cache(maxsize=None)
def _built_rows(flags: tuple[bool, ...], stage: str) -> tuple[tuple[str, Artifact], ...]:
    return tuple((a.build, a) for a in _rows(flags) if a.stage == stage and a.build)


@lru_cache(maxsize=None)
def _layer_of(flags: tuple[bool, ...]) -> tuple[tuple[str, str, int], ...]:
    return tuple((a.layer, a.build, a.mode) for a in _layer_rows(flags))  # type: ignore[misc]


def _layer(flags: tuple[bool, ...], client: str) -> dict[str, tuple[str, int]]:
    return {_fill(layer, client): (_fill(build, client), mode) for layer, build, mode in _layer_of(flags)}


@lru_cache(maxsize=None)
def _image_of(flags: tuple[bool, ...]) -> tuple[tuple[str, str, int], ...]:
    return tuple((a.image, a.build, a.mode) for a in _rows(flags) if a.image and a.build)


def _image(flags: tuple[bool, ...], client: str) -> dict[str, tuple[str, int]]:
    return {_fill(image, client): (_fill(build, client), mode) for image, build, mode in _image_of(flags)}


@lru_cache(maxsize=None)
def _tree_rows(flags: tuple[bool, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((a.build, a.tree) for a in _rows(flags) if a.tree and a.build)


# what the CONDITIONS read of a host, as plain flags: the plan's cache key
_FLAG_KEYS = ("luks", "machine", "monolithic", "stateless", "grub")
_FLAG_CONDITIONS = {
    "luks": lambda f: f["luks"], "machine": lambda f: f["machine"], "clear": lambda f: not f["machine"],
    "monolithic": lambda f: f["monolithic"], "stateless": lambda f: f["stateless"], "grub": lambda f: f["grub"],
}
assert set(_FLAG_CONDITIONS) == set(CONDITIONS)


def _flags(cfg: HostView) -> tuple[bool, bool, bool, bool, bool]:
    return (bool(cfg.luks), cfg.secrets.mode == "machine", bool(cfg.monolithic), cfg.root.mode == "stateless",
            cfg.boot.loader == "grub-secureboot")


def of_host(cfg: HostView) -> tuple[Artifact, ...]:
    """The rows the host ``cfg`` has, in table order."""
    return _rows(_flags(cfg))


def built_by(stage: str, cfg: HostView) -> Mapping[str, Artifact]:
    """Path under the host's build folder -> row, for the files ``stage`` writes for the host ``cfg``."""
    return _project(_built_rows(_flags(cfg), stage), cfg.client)


def layer_members(cfg: HostView) -> Mapping[str, tuple[str, int]]:
    """Path inside the host's layer -> (file under its build folder, mode)."""
    return _layer(_flags(cfg), cfg.client)


def image_members(cfg: HostView) -> Mapping[str, tuple[str, int]]:
    """Path inside the host's root image -> (file under its build folder, mode)."""
    return _image(_flags(cfg), cfg.client)


def fresh_root_members(name: str, cfg: HostView) -> dict[str, tuple[bytes, int]]:
    """Path inside a root that provisioning creates -> (content, mode), for the rows that are not build files."""
    content = {"name": f"{name}\n".encode()}
    return {path(a.fresh_root, cfg): (content[a.source], a.mode) for a in of_host(cfg) if a.fresh_root}


def tree_members(cfg: HostView) -> Mapping[str, str]:
    """Name in the host's tree folder -> file under its build folder, in table order."""
    client = cfg.client
    return {tree: _fill(build, client) for build, tree in _tree_rows(_flags(cfg))}


def templates() -> list[str]:
    """Every per-host template, under templates/."""
    return sorted(a.template for a in ARTIFACTS if a.template)


def render_conditional() -> list[str]:
    """Build paths render writes only for some hosts (removed when a host no longer has them; no ``{client}`` in them)."""
    return [a.build for a in ARTIFACTS if a.stage == "render" and a.when and a.build and "{" not in a.build]


def reference_markdown() -> str:
    """The table as docs/layers-and-publish.md shows it (a test keeps the two in step)."""
    def cell(v: str | None, when: tuple[str, ...] = ()) -> str:
        return f"`{v}`" + (f" ({', '.join(when)})" if when else "") if v else ""

    lines = ["| file | written by | from | under build/hosts/<h>/ | mode | in the layer | in the image | in the tree |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a in ARTIFACTS:
        source = f"`templates/{a.template}`" if a.template else SOURCES[a.source]
        image = cell(a.image) or (f"`{a.fresh_root}` (a root provisioning creates)" if a.fresh_root else "")
        lines.append(f"| {a.name}{' (' + ', '.join(a.when) + ')' if a.when else ''} | {a.stage or 'provisioning'} | {source} | "
                     f"{cell(a.build)} | {a.mode:04o} | {cell(a.layer, a.layer_when)} | {image} | {cell(a.tree)} |")
    return "\n".join(lines) + "\n"


SOURCES = {"keyfile": "the host's `luks.keyfile`, byte for byte", "seal": "its keyring and LUKS key, sealed to the machine secret",
           "layer": "the rows marked for the layer, packed", "monolithic": "the base initrd + the layer", "name": "the host's name",
           "copy": "the rendered fstab again (row fstab)"}
BEGIN, END = "<!-- BEGIN ARTIFACTS", "<!-- END ARTIFACTS"


def update_doc(text: str) -> str:
    begin = text.index("\n", text.index(BEGIN)) + 1
    return text[:begin] + reference_markdown() + text[text.index(END):]


if __name__ == "__main__":
    import sys
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "layers-and-publish.md"
    if sys.argv[1:] == ["--update-doc"]:
        doc.write_text(update_doc(doc.read_text()))
    else:
        print(reference_markdown(), end="")
