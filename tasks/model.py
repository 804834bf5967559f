"""What a loaded inventory is: its site, its hosts, and the problems found in it."""
from __future__ import annotations

import ipaddress
import stat
from dataclasses import FrozenInstanceError, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

from . import schema

KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
         (stat.S_ISBLK, "a device"), (stat.S_ISLNK, "a link"), (stat.S_ISREG, "a regular file"))


def kind(mode: int) -> str:
    """What a file of this mode is, for messages ('a FIFO', 'a folder')."""
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inventory, located by file and key path."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


MAX_SAID = 50  # problems an InventoryError's message lists; the rest are counted


class InventoryError(Exception):
    """The inventory is invalid; ``problems`` says where and why, each once (one bad value under
    site.yaml's ``defaults:`` is found in every host), in the order found; the message lists the
    first MAX_SAID (a file of 60,000 mistyped keys must not print 60,000 lines)."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(dict.fromkeys(problems))
        lines = [str(p) for p in self.problems[:MAX_SAID]]
        if len(self.problems) > MAX_SAID:
            lines.append(f"... and {len(self.problems) - MAX_SAID} more problems")
        super().__init__("invalid inventory:\n  " + "\n  ".join(lines))


# ---- typed views of validated records ------------------------------------------------
#
# A record is validated into plain dicts (what the cache stores as JSON and templates read);
# Python code reads it through a view: a read-only dataclass with slots per schema Section, its
# fields the Section's keys, made from the schema itself (the field list is written once, in
# tasks/schema.py).  A misspelt key is an AttributeError, an assignment a FrozenInstanceError;
# tests/test_hostview.py also checks every key of tasks/ against the schema without running it.
# Lists (MACs, kernel_args, ...) are the record's own: a view is read-only, not a deep copy.


class View:
    """Base of the typed views: one read-only attribute per key of the schema Section.

    Frozen here rather than by dataclass(frozen=True), which writes and compiles four methods
    per class: a doit process makes these classes on every run (a no-op too), and that would
    cost it ~20 ms.  Assigning or deleting a field raises dataclasses' FrozenInstanceError all
    the same; the views are made by setting their slots directly (_views)."""

    __slots__ = ()
    KEYS: tuple[str, ...] = ()  # the schema Section's keys, in its order
    SECTIONS: dict[str, type] = {}  # key -> view class of each sub-section

    def items(self) -> Iterator[tuple[str, Any]]:
        """(key, value) of every key, in schema order (a sub-section as its view)."""
        return ((k, getattr(self, k)) for k in self.KEYS)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.items())})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, k) == getattr(other, k) for k in self.KEYS)

    __hash__ = None  # type: ignore[assignment]  (lists inside)


def _class_name(path: str) -> str:
    return "".join(part.title() for part in path.replace("_", ".").split(".")) + "View"


_TYPES = {"str": str, "int": int, "bool": bool, "list[str]": list, "list[Any]": list}  # what the schema's checks return


def _views(roots: dict[str, tuple[schema.Section, dict[str, str]]]) -> dict[str, tuple[type, Callable[[dict[str, Any]], Any]]]:
    """For each root (name -> its Section and its derived keys, name -> type, None until set): a
    dataclass with slots for it and each of its sub-sections, and the function that makes one
    from a validated mapping.  Those functions are straight-line code, generated here and
    compiled in one go (as dataclasses generates __init__): a no-op run makes a view of every
    host, and a loop over the keys would cost twice as much."""
    scope: dict[str, Any] = {"new": object.__new__}
    lines: list[str] = []

    def one(section: schema.Section, path: str, extra: dict[str, str]) -> tuple[type, str]:
        keys = (*section.fields, *extra)
        me = path.replace(".", "_")
        notes: dict[str, Any] = {}  # types, not strings: dataclasses reads a string annotation slowly
        sections: dict[str, type] = {}
        body = [f"def make_{me}(d):", f"    o = new(cls_{me})"]
        for i, key in enumerate(keys):
            spec = section.fields.get(key)
            if isinstance(spec, schema.Section):
                sections[key], sub = one(spec, f"{path}.{key}", {})
                notes[key] = sections[key]
                body += [f"    v = d[{key!r}]", f"    set_{me}_{i}(o, None if v is None else {sub}(v))"]
            else:
                notes[key] = _TYPES.get(extra[key] if spec is None else str(getattr(spec.check, "__annotations__", {}).get("return")), Any)
                body.append(f"    set_{me}_{i}(o, d.get({key!r}))" if spec is None else f"    set_{me}_{i}(o, d[{key!r}])")
        lines.extend([*body, "    return o", ""])
        attrs = {"__slots__": keys, "__annotations__": notes, "__doc__": section.doc, "__module__": __name__, "KEYS": keys, "SECTIONS": sections}
        view = dataclass(init=False, repr=False, eq=False)(type(_class_name(path), (View,), attrs))
        scope[f"cls_{me}"] = view
        for i, key in enumerate(keys):
            scope[f"set_{me}_{i}"] = view.__dict__[key].__set__  # the slot's own setter (View refuses setattr)
        return view, f"make_{me}"

    made = {name: one(section, name, extra) for name, (section, extra) in roots.items()}
    exec(compile("\n".join(lines), f"<{__name__} views>", "exec"), scope)  # our own code, generated from the schema's key names
    return {name: (view, scope[make]) for name, (view, make) in made.items()}


# a host: the HOST schema's keys, and the kernel version 'latest' resolved to (set once every host is loaded);
# a golden image (hosts/images/<name>.yaml)
_VIEWS = _views({"host": (schema.HOST, {"kernel_version": "str"}), "image": (schema.IMAGE, {})})
HostView, host_view = _VIEWS["host"]
ImageView, image_view = _VIEWS["image"]


@dataclass
class Host:
    """A host with every key resolved and validated: ``data`` as validated (the cache and the
    templates take it), ``cfg`` its typed view for Python code."""

    name: str
    source: str  # the host's own file, relative to the site
    sources: list[str]  # every file that contributed, lowest layer first
    data: dict[str, Any]
    digest: str = ""
    origins: dict[str, str] = field(default_factory=dict)  # key -> file that set it, where not ``source``

    @cached_property
    def cfg(self) -> Any:  # a HostView (made at run time: no static type)
        """The typed, read-only view of ``data``, made on first use."""
        return host_view(self.data)

    def updated(self, **changes: Any) -> None:
        """Set top-level keys of ``data`` (the resolved kernel version) and drop the view made of the old."""
        self.data.update(changes)
        self.__dict__.pop("cfg", None)

    def origin(self, key: str) -> str:
        """The file that set ``key``; the host's own file for a default."""
        return self.origins.get(key, self.source)

    def reservations(self, network: str | None) -> list[tuple[str, list[str], str]]:
        """(name, MACs, address) of each NIC with a static address inside the boot network
        ``network`` (dhcp.network): what a DHCP server reserves for it, and the only
        addresses the web server serves an address-mode host's keys to. The Ceph NIC's name
        is the host's, the user NIC's ``<host>-user`` (one name, one address)."""
        if not network:
            return []
        net = ipaddress.IPv4Network(network)
        out = []
        nics = self.cfg.nics
        for nic, label in ((nics.ceph, self.name), (nics.user, f"{self.name}-user")):
            if nic and nic.address != "dhcp":
                ip = ipaddress.IPv4Interface(nic.address).ip
                if ip in net:
                    out.append((label, nic.macs, str(ip)))
        return out


@dataclass
class Site:
    """The whole validated inventory."""

    root: Path
    settings: dict[str, Any]
    hosts: dict[str, Host]
    kernels: list[str]  # installed kernel versions, oldest first
    signature: list[Any] = field(default_factory=list)
    site_digest: str = ""
    # what the next load may reuse when some input changed: parsed files, resolved
    # hosts and checked secrets, each keyed by the stat of what it came from
    memo: dict[str, Any] = field(default_factory=dict)
    _derived: dict[str, tuple[tuple[int, int], Any]] = field(default_factory=dict, repr=False, compare=False)

    def derived(self, what: str, make: Callable[[], Any]) -> Any:
        """make(), once while the hosts are the same: a table over every host that several task
        generators ask for (routes, kernels in use).  Shared between callers: read it, never change it."""
        stamp = (id(self.hosts), len(self.hosts))
        known = self._derived.get(what)
        if known is None or known[0] != stamp:
            known = self._derived[what] = (stamp, make())
        return known[1]

    def path(self, rel: str) -> Path:
        """A path from the inventory, relative to hosts/ unless absolute."""
        p = Path(rel)
        return p if p.is_absolute() else self.root / "hosts" / p

    def path_str(self, rel: str) -> str:
        """path() as a string, without pathlib's cost (called per host on every run)."""
        return rel if rel.startswith("/") else f"{self.root}/hosts/{rel}"

    def display(self, rel: str) -> str:
        """How a path from the inventory is named in messages, headers and doit's file_dep:
        relative to the site folder (doit's working directory), so a copied site keeps its state."""
        return rel if rel.startswith("/") else f"hosts/{rel}"


# ---- where a host's root is on the cluster ----------------------------------------

# The folder of a stateless host's layer (and initrd) holding the files that go into its root's
# overlay at boot, at their paths below it (the keyring and ceph.conf are where the initrd has them).
STATELESS_FILES = "/cephboot/root"


def golden_namespace(image: str) -> str:
    """The RBD namespace of golden image ``image``: its own, named so that no host's can be it."""
    return f"golden-{image}"


def golden_version(image: str, snap: str) -> str:
    """The RBD image (without pool and namespace) that holds golden ``image``'s version frozen as snapshot ``snap``."""
    return f"{image}-{snap}"


def stateless(cfg: Any) -> bool:
    """Whether the host (its HostView) boots its golden image's snapshot read-only under a tmpfs overlay (root.mode: stateless)."""
    return cfg.root.mode == "stateless"


def mapped_root(cfg: Any) -> tuple[str, str, str]:
    """What the host (its HostView) maps in its initrd, as (namespace, image, snapshot): its own root image, or
    for a stateless host the version of its golden image it boots (snapshot '' for the image itself)."""
    if stateless(cfg):
        image, snap = cfg.root.image, cfg.root.snapshot
        return golden_namespace(image), golden_version(image, snap), snap
    return cfg.rbd.namespace, cfg.rbd.image, ""
