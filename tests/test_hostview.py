"""Hosts are read through typed views made from the schema (tasks/model.py): a misspelt key fails."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from tasks import inventory, model, schema
from tasks.model import HostView, ImageView, View

TASKS = Path(__file__).resolve().parent.parent / "tasks"


def _keys(section: schema.Section, prefix: str = "") -> set[str]:
    out = set()
    for key, spec in section.fields.items():
        out.add(prefix + key)
        if isinstance(spec, schema.Section):
            out |= _keys(spec, f"{prefix}{key}.")
    return out


def _fields(view: type, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(view):
        out.add(prefix + f.name)
        if f.name in view.SECTIONS:
            out |= _fields(view.SECTIONS[f.name], f"{prefix}{f.name}.")
    return out


@pytest.mark.parametrize("section,view,derived", [(schema.HOST, HostView, {"kernel_version"}), (schema.IMAGE, ImageView, set())])
def test_every_schema_key_is_a_field_of_the_view_and_nothing_else_is(section: schema.Section, view: type, derived: set[str]) -> None:
    assert _fields(view) == _keys(section) | derived


def test_a_misspelt_key_is_an_error_and_a_view_cannot_be_changed(the_example_site: Any) -> None:
    site = inventory.load(the_example_site.root, use_cache=False)
    cfg = site.hosts["zephyr"].cfg
    assert cfg.nics.ceph.macs == site.hosts["zephyr"].data["nics"]["ceph"]["macs"] and cfg.kernel_version == site.kernels[-1]
    with pytest.raises(AttributeError, match="'HostNicsCephView' object has no attribute 'mac'"):
        cfg.nics.ceph.mac  # noqa: B018
    with pytest.raises(AttributeError):
        cfg.secret  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.client = "admin"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.clients = "admin"  # type: ignore[attr-defined]
    with pytest.raises(KeyError, match="'rbd'"):  # a record without a key has no view
        model.host_view({k: v for k, v in site.hosts["zephyr"].data.items() if k != "rbd"})


def test_the_view_follows_the_resolved_kernel_version(the_example_site: Any) -> None:
    host = inventory.load(the_example_site.root, use_cache=False).hosts["zephyr"]
    assert host.cfg.kernel_version
    host.updated(kernel_version="6.1.0-99-amd64")
    assert host.cfg.kernel_version == "6.1.0-99-amd64"


# `cfg.a.b`, `host.cfg.a.b`, `site.hosts[n].cfg.a.b` (a host) and `image.cfg.a.b` (a golden image) anywhere in
# tasks/: each key checked against the schema's view without running the line (a misspelt key in a branch
# no test reaches fails here)
_CHAINS = ((re.compile(r"(?:(?<![\w.])(?:\w*host\w*\.)?|(?<=\]\.))cfg((?:\.[A-Za-z_]\w*)+)"), HostView),
           (re.compile(r"(?<![\w.])image\.cfg((?:\.[A-Za-z_]\w*)+)"), ImageView))


def _bad_chains(text: str) -> list[str]:
    bad = []
    for rx, root in _CHAINS:
        for m in rx.finditer(text):
            view: type | None = root
            for name in m.group(1).lstrip(".").split("."):
                if view is None:
                    break  # past a leaf value: its own attributes (str.split, list.append, ...)
                if name not in view.KEYS and not hasattr(View, name):
                    bad.append(m.group(0))
                    break
                view = view.SECTIONS.get(name) if name in view.KEYS else None
    return bad


def test_every_key_tasks_read_from_a_host_view_is_in_the_schema() -> None:
    found = {p.name: _bad_chains(p.read_text()) for p in sorted(TASKS.glob("*.py"))}
    assert {name: bad for name, bad in found.items() if bad} == {}
    for rx, least in zip((rx for rx, _ in _CHAINS), (200, 10)):
        assert sum(len(rx.findall(p.read_text())) for p in TASKS.glob("*.py")) > least, "the check reads the views' uses"


def test_the_chain_check_finds_a_misspelt_key() -> None:
    text = "x = host.cfg.nics.ceph.mac\ny = cfg.secrets.mode.upper()\nz = site.hosts[n].cfg.luks.keyfiles\nt = 'grub.cfg.j2'\nimage.cfg.pools"
    assert _bad_chains(text) == ["host.cfg.nics.ceph.mac", "cfg.luks.keyfiles", "image.cfg.pools"]


# Site settings stay the validated mapping (README, "Site settings are a mapping"): every key that
# tasks/ reads from them, `settings["a"]["b"]`, `s["a"]`, and through a name bound to a section
# (`ceph = site.settings["ceph"]`, then `ceph["fsid"]`), is checked against schema.SITE here.
_SETTINGS = re.compile(r"(?<![\w.])(?:site\.)?(?P<root>settings|s)((?:\[\"\w+\"\])+)")
_SECTION = re.compile(r"(?<![\w.])(?P<alias>\w+) = (?:site\.)?(?:settings|s)\[\"(?P<key>\w+)\"\]$", re.M)
_KEYS = re.compile(r"\[\"(\w+)\"\]")


def _bad_settings(text: str) -> list[str]:
    uses_s = re.search(r"(?<![\w.])s = site\.settings|cfg, s = host\.cfg, site\.settings", text) is not None
    chains = [(m.group(0), _KEYS.findall(m.group(2))) for m in _SETTINGS.finditer(text) if m.group("root") == "settings" or uses_s]
    for alias in _SECTION.finditer(text):
        rx = re.compile(rf"(?<![\w.]){alias['alias']}((?:\[\"\w+\"\])+)")
        chains += [(m.group(0), [alias["key"], *_KEYS.findall(m.group(1))]) for m in rx.finditer(text)]
    bad = []
    for shown, keys in chains:
        section: Any = schema.SITE
        for key in keys:
            if not isinstance(section, schema.Section):
                break  # past a leaf value
            if key not in section.fields:
                bad.append(shown)
                break
            section = section.fields[key]
    return bad


def test_every_key_tasks_read_from_the_site_settings_is_in_the_schema() -> None:
    found = {p.name: _bad_settings(p.read_text()) for p in sorted(TASKS.glob("*.py")) if p.name != "schema.py"}
    assert {name: bad for name, bad in found.items() if bad} == {}
    assert sum(len(_SETTINGS.findall(p.read_text())) for p in TASKS.glob("*.py")) > 30, "the check reads the settings' uses"


def test_the_settings_check_finds_a_misspelt_key() -> None:
    text = ('a = settings["ceph"]["mon_hosts"]\nb = site.settings["pxe"]["http_base"]\n'
            'p = settings["publish"]\nc = p["grup"]\nd = settings["kernel"]\n')
    assert _bad_settings(text) == ['settings["ceph"]["mon_hosts"]', 'settings["kernel"]', 'p["grup"]']
