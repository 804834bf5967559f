"""Load hosts/: merge site < profiles < host, validate against the schema, cross-check hosts."""
from __future__ import annotations

import json
import os
import re
import stat
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

from . import layout, quiet, schema, yamlfiles
from .checks import TREE_MARKER, cephx_key, check_host_paths, keyring_entity, check_kernels, check_machine_secret, check_nics, check_root, check_secrets, check_site, cmdline_words, cross_check, site_path
from .failures import stop
from .fileio import digest, file_key, key_of, shard_count
from .fileio import read_private_json as _read_private_json, write_private_json as _write_private_json
from .templating import code_files
from .model import Host, InventoryError, Problem, Site, kind
from .schema import Invalid, ItemInvalid, Section, shown

__all__ = ["Host", "InventoryError", "Problem", "Site", "TREE_MARKER", "cephx_key", "keyring_entity", "cmdline_words", "installed_kernels", "load", "load_for_tasks", "merge", "resolve_kernel", "validate"]


SITE_FILE = "site.yaml"
PROFILES_DIR = "profiles"
NODES_DIR = "nodes"
# The validated inventory, as plain JSON (never a format that runs code when loaded),
# and what a later load may reuse when some input changed (read only then).
CACHE_FILE = str(layout.INVENTORY_CACHE)
SHARD_DIR = str(layout.INVENTORY_SHARDS)
CACHE_FORMAT = 2
SHARD_HOSTS = 32  # hosts per shard of the cache (a power of two number of shards): a host edit reads and writes ~1/32 of 1,000 hosts
MAX_INCLUDE_DEPTH = 32  # profiles including profiles
# keys whose origin the checks after validation name in messages (kept per host when not its own file)
_BLAMED = ("uuid", "nics.ceph.macs", "nics.ceph.address", "nics.ceph.gateway", "nics.user.macs", "nics.user.address",
           "nics.user.gateway", "rbd.pool", "rbd.namespace", "client", "keyring", "boot_path", "kernel", "kernel_args", "luks.keyfile", "image_root",
           "rootfs.source", "secrets.mode", "secrets.machine_secret", "luks.name", "root.mode", "root.snapshot", "boot.loader")
_CODE = code_files(__name__)  # this module and what it imports: a change to any of them parses again


# --- merging --------------------------------------------------------------------

def merge(layers: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge mappings, lowest priority first; return the result and each key's origin file.

    Rules: mappings merge key by key, recursively; a scalar or list in a higher
    layer replaces the lower one; ``+key: [...]`` appends to the inherited list
    instead; ``key: null`` removes the inherited value (back to the default).
    """
    out: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for origin, layer in layers:
        out = _merge_into(out, layer, origin, origins, "")
    return out, origins


def _merge_into(base: dict[str, Any], over: dict[str, Any], origin: str, origins: dict[str, str], prefix: str) -> dict[str, Any]:
    out = dict(base)
    for raw_key, value in over.items():
        key = str(raw_key)
        append = key.startswith("+")
        key = key[1:] if append else key
        where = f"{prefix}{key}"
        if append:
            inherited = out.get(key) or []
            if not isinstance(value, list) or not isinstance(inherited, list):
                raise Invalid(f"{where}: '+{key}' appends a list to an inherited list")
            out[key] = inherited + value
            # each item keeps the file it came from: a bad item is blamed on that file
            before = origins.get(where + "[]") or [origins.get(where, origin)] * len(inherited)
            origins[where + "[]"] = [*before, *[origin] * len(value)]  # type: ignore[assignment]
        elif value is None:
            out.pop(key, None)
            origins.pop(where + "[]", None)
        elif isinstance(value, dict):  # merged into nothing when new: each nested key records its origin
            out[key] = _merge_into(out[key] if isinstance(out.get(key), dict) else {}, value, origin, origins, where + ".")
        else:
            out[key] = value
            origins.pop(where + "[]", None)
        origins[where] = origin
    return out


# --- validation -----------------------------------------------------------------

def validate(section: Section, data: Any, origins: dict[str, str], default_file: str, problems: list[Problem], prefix: str = "") -> dict[str, Any]:
    """Check ``data`` against ``section``; fill defaults; record problems with their origin file."""

    def where(key: str) -> str:
        # the most specific origin known for this key or one of its parents
        k = key
        while k:
            if k in origins:
                return origins[k]
            k = k.rpartition(".")[0]
        return default_file

    if not isinstance(data, dict):
        problems.append(Problem(where(prefix.rstrip(".")), prefix.rstrip("."), f"expected a mapping, got {type(data).__name__}"))
        return {}
    out: dict[str, Any] = {}
    before = len(problems)
    for key in data:
        if key not in section.fields:
            name = prefix + str(key)
            shown_name = name if len(name) <= schema.SHOWN else shown(name)
            problems.append(Problem(where(name), shown_name, "unknown key; expected one of: " + ", ".join(section.fields)))
    for key, spec in section.fields.items():
        full = prefix + key
        if isinstance(spec, Section):
            value = data.get(key)
            if value is None and spec.optional:
                out[key] = None
            else:
                out[key] = validate(spec, {} if value is None else value, origins, default_file, problems, full + ".")
            continue
        if key not in data or data[key] is None:
            if spec.required:
                problems.append(Problem(where(full), full, "missing; " + as_clause(spec.doc)))
            out[key] = spec.default
            continue
        try:
            out[key] = spec.check(data[key])
        except ItemInvalid as e:
            items = origins.get(full + "[]")
            blamed = items[e.index] if isinstance(items, list) and e.index < len(items) else where(full)
            problems.append(Problem(blamed, full, str(e)))
        except Invalid as e:
            problems.append(Problem(where(full), full, f"{shown(data[key])}: {e}"))
    if section.together is not None and len(problems) == before:  # each key valid: do they fit together?
        for key, why in section.together(out):
            problems.append(Problem(where(prefix + key), prefix + key, why))
    return out


# --- reading files ----------------------------------------------------------------

def as_clause(doc: str) -> str:
    """A field's doc after "missing; ": its first letter lowercased, unless its first word starts
    with two capitals (an acronym or a name: "URL under which ...", "RBD pool ...", "SMBIOS ...")."""
    if doc[:1].isupper() and doc[1:2].isupper():
        return doc
    return doc[:1].lower() + doc[1:]


def _read_yaml(path: Path | str, rel: str, problems: list[Problem]) -> dict[str, Any]:
    try:
        return yamlfiles.read_yaml(str(path))
    except yamlfiles.Unreadable as e:
        problems.append(Problem(rel, e.key, str(e)))
        return {}


def _yaml_names(folder: Path | str) -> list[str]:
    """The YAML file names in ``folder`` (none when it cannot be listed: _yaml_entries says why)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [n for n in sorted(names) if n.endswith((".yaml", ".yml")) and not n.startswith(".")]


def _yaml_entries(hosts_dir: Path, sub: str, check: Any, what: str, problems: list[Problem]) -> dict[str, tuple[str, str]]:
    """name -> (path, path relative to the site) of the YAML files in hosts/<sub>; each problem recorded."""
    folder = os.path.join(hosts_dir, sub)
    rel_folder = f"hosts/{sub}"
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return {}
    except OSError as e:
        problems.append(Problem(rel_folder, "", f"cannot read: {e.strerror}"))
        return {}
    if not stat.S_ISDIR(st.st_mode):
        problems.append(Problem(rel_folder, "", f"is {kind(st.st_mode)}; expected a folder of {what} files"))
        return {}
    try:
        names = _yaml_names_strict(folder)
    except OSError as e:
        problems.append(Problem(rel_folder, "", f"cannot list: {e.strerror}"))
        return {}
    out: dict[str, tuple[str, str]] = {}
    for n in names:
        stem = n.rsplit(".", 1)[0]
        rel = f"{rel_folder}/{n}" if n.isprintable() and len(n) <= 255 else f"{rel_folder}/{shown(n)}"
        try:
            check(stem)
        except Invalid as e:
            problems.append(Problem(rel, "", f"file name {shown(stem)} is not a usable {what} name: {e}"))
            continue
        if stem in out:
            problems.append(Problem(rel, "", f"{out[stem][1]} and {rel} both define {what} {stem!r}; one would silently win: keep one"))
            continue
        out[stem] = (os.path.join(folder, n), rel)
    return out


def _yaml_names_strict(folder: str) -> list[str]:
    return [n for n in sorted(os.listdir(folder)) if n.endswith((".yaml", ".yml")) and not n.startswith(".")]


# --- the cache ----------------------------------------------------------------------
#
# build/.inventory.json is the head: the site's settings, the stat keys of site.yaml, the
# profiles, the kernel folders and this code, and which shard files hold the rest.  Each host
# lives in one host shard (build/.inventory/hosts-<k>.json: its record and the stat keys of
# its own inputs), and each value no two hosts may share (a MAC, an address, a client, ...)
# in one index shard (build/.inventory/index-<k>.json: value -> the host that has it).  A
# host edit rewrites the head, the host's shard and the index shards of the values it
# changed, so its cost follows the change, not the site.  Every file is plain JSON,
# owner-only, never followed through a link, believed only when it is ours and nobody else
# may write it; a missing or damaged one means a full load, which writes them all again.

def _code_key() -> list[Any]:
    return [_stat_key(p) for p in _CODE]


def _stat_key(path: Path | str) -> str | None:
    """fileio.file_key, the one stat key (size, mtime, mode); None when there is no file."""
    return file_key(str(path)) or None


def _shard(value: str, count: int) -> int:
    return zlib.crc32(value.encode()) % count


def _shard_path(root: Path, kind: str, k: int) -> Path:
    return root / SHARD_DIR / f"{kind}-{k}.json"


def _host_record(h: Host) -> list[Any]:
    return [h.source, h.sources, h.data, h.digest, h.origins]


def _host_inputs(root: Path, h: Host) -> list[str]:
    """The files besides the YAML a host's validation read: its keyring, LUKS key, machine secret."""
    cfg = h.cfg
    out = [f"{root}/{h.source}", _path_str(root, cfg.keyring)]
    if cfg.luks:
        out.append(_path_str(root, cfg.luks.keyfile))
    if cfg.secrets.mode == "machine":
        out.append(_path_str(root, cfg.secrets.machine_secret))
    return out


def _path_str(root: Path, rel: str) -> str:
    return rel if rel.startswith("/") else f"{root}/hosts/{rel}"


def _input_keys(paths: list[str]) -> str:
    return "|".join(map(key_of, paths))  # file_key of each, without a Python frame when remembered


def _claims(h: Host) -> list[tuple[str, str, str]]:
    """(kind, value, key) of everything host ``h`` holds that no other host may (as cross_check claims them)."""
    cfg = h.cfg
    out = []
    if cfg.uuid:
        out.append(("UUID", cfg.uuid, "uuid"))
    for role, nic in cfg.nics.items():
        if not nic:
            continue
        out += [("MAC", m, f"nics.{role}.macs") for m in nic.macs]
        if nic.address != "dhcp":
            out.append(("IP address", nic.address.split("/")[0], f"nics.{role}.address"))
    out.append(("RBD namespace", f"{cfg.rbd.pool}/{cfg.rbd.namespace}", "rbd.namespace"))
    out.append(("client", cfg.client, "client"))
    out.append(("CephFS /boot path", cfg.boot_path, "boot_path"))
    return out


def _ancestors(path: str) -> list[str]:
    out = []
    up = path.rpartition("/")[0]
    while up:
        out.append(up)
        up = up.rpartition("/")[0]
    return out


class _Cache:
    """What build/ holds of the last valid load, read lazily shard by shard."""

    def __init__(self, root: Path):
        self.root = root
        self.head: dict[str, Any] | None = None
        self.hosts: dict[str, list[Any]] = {}  # name -> [record, input paths, their keys, keyring check]
        self.host_shards: dict[int, dict[str, list[Any]]] = {}  # each host shard read: its part of ``hosts``
        self.index: dict[int, dict[str, str]] = {}  # index shards read so far
        self.index_changed: set[int] = set()  # of those, the ones to write again

    def read(self, only: frozenset[str] | None = None) -> bool:
        """The head and every host shard (``only``: the shards of those hosts, each of which must be
        in them); False (nothing believed) when any is missing, damaged or not ours."""
        head = _read_private_json(self.root / CACHE_FILE)
        try:
            if not isinstance(head, dict) or head.get("format") != CACHE_FORMAT or head.get("root") != str(self.root):
                return False
            count, gens = head["shards"], head["gens"]
            for k in range(count) if only is None else sorted({_shard(n, count) for n in only}):
                shard = _read_private_json(_shard_path(self.root, "hosts", k))
                if not isinstance(shard, dict) or shard.get("gen") != gens["hosts"][k] or not isinstance(shard.get("hosts"), dict):
                    return False
                self.hosts.update(shard["hosts"])
                self.host_shards[k] = shard["hosts"]
            if not isinstance(head["settings"], dict) or (len(self.hosts) != head["count"] if only is None else not only <= set(self.hosts)):
                return False
        except (KeyError, IndexError, TypeError, AttributeError):
            return False
        self.head = head
        return True

    def site(self, only: frozenset[str] | None = None) -> Site | None:
        """The cached site: every host, or those ``only``."""
        head = self.head
        assert head is not None
        try:
            records = self.hosts if only is None else {name: self.hosts[name] for name in sorted(only)}
            hosts = {name: Host(name, r[0][0], r[0][1], r[0][2], r[0][3], r[0][4]) for name, r in records.items()}
            return Site(self.root, head["settings"], hosts, head["kernels"], [], head["site_digest"])
        except (KeyError, IndexError, TypeError, AttributeError):
            return None

    def index_shard(self, k: int, changing: bool = False) -> dict[str, str] | None:
        """Index shard ``k`` (read once); ``changing``: the caller will change it, so it is written again."""
        if changing:
            self.index_changed.add(k)
        if k not in self.index:
            assert self.head is not None
            shard = _read_private_json(_shard_path(self.root, "index", k))
            try:
                ok = isinstance(shard, dict) and shard["gen"] == self.head["gens"]["index"][k] and isinstance(shard["claims"], dict)
            except (KeyError, IndexError, TypeError):
                ok = False
            if not ok:
                return None
            self.index[k] = shard["claims"]
        return self.index[k]


def _site_keys(root: Path, settings: dict[str, Any] | None) -> dict[str, Any]:
    """The stat keys of what every host depends on: site.yaml, each profile, the kernel folders, this code."""
    hosts = os.path.join(root, "hosts")
    folder = os.path.join(hosts, PROFILES_DIR)
    keys: dict[str, Any] = {"site": file_key(os.path.join(hosts, SITE_FILE)), "code": _code_key(),
                            "profiles": {f"hosts/{PROFILES_DIR}/{n}": file_key(f"{folder}/{n}") for n in _yaml_names(folder)}}
    if settings is not None:
        k = settings["kernels"]
        keys["kernels"] = [file_key(site_path(root, k["boot_dir"])), file_key(site_path(root, k["modules_dir"]))]
    return keys


def _write_cache(root: Path, site: Site, cache: _Cache | None, changed: set[str], removed: set[str], keys: dict[str, Any],
                 checked: dict[str, str], below: dict[str, int] | None = None, total: int | None = None) -> None:
    """Write what changed since ``cache`` (everything when it is None, or the shard count changed).

    Each write has a generation of its own (random), which the head names for every shard:
    a run killed between a shard and the head leaves shards the head does not name, and
    the next load starts again from the files."""
    total = len(site.hosts) if total is None else total  # a scoped site has only some of the hosts
    count = shard_count(total, SHARD_HOSTS)
    old = cache.head if cache is not None else None
    whole = old is None or old["shards"] != count
    gen = int.from_bytes(os.urandom(6), "little")
    gens = {"hosts": [gen] * count, "index": [gen] * count} if whole else {k: list(v) for k, v in old["gens"].items()}  # type: ignore[union-attr]
    # host shards: every one when whole, else those of the changed hosts, updated in place
    shards: dict[int, dict[str, Any]] = {}
    if whole:
        shards = {k: {} for k in range(count)}
        for name, h in site.hosts.items():
            paths = _host_inputs(root, h)
            shards[_shard(name, count)][name] = [_host_record(h), paths, _input_keys(paths), checked.get(name, "")]
    else:
        assert cache is not None
        for name in changed | removed:
            k = _shard(name, count)
            shard = shards[k] = cache.host_shards[k]
            h = site.hosts.get(name)
            if h is None:
                shard.pop(name, None)
                cache.hosts.pop(name, None)
                continue
            paths = _host_inputs(root, h)
            shard[name] = cache.hosts[name] = [_host_record(h), paths, _input_keys(paths), checked.get(name, "")]
    # index shards: value -> host, and how many /boot paths lie below each folder
    index: dict[int, dict[str, str]] = {}
    if whole:
        below = {}
        index = {k: {} for k in range(count)}
        for h in site.hosts.values():
            for kind_, value, _ in _claims(h):
                index[_shard(f"{kind_}\0{value}", count)][f"{kind_}\0{value}"] = h.name
            for up in _ancestors(h.cfg.boot_path):
                below[up] = below.get(up, 0) + 1
    else:
        assert cache is not None and below is not None
        index = {k: cache.index[k] for k in sorted(cache.index_changed) if k in cache.index}  # the shards the incremental check changed
    ok = True
    for k, hosts in shards.items():
        gens["hosts"][k] = gen
        ok = ok and _write_private_json(_shard_path(root, "hosts", k), {"gen": gen, "hosts": hosts})
    for k, claims in index.items():
        gens["index"][k] = gen
        ok = ok and _write_private_json(_shard_path(root, "index", k), {"gen": gen, "claims": claims})
    if not ok:
        return  # the head still names the shards as they were: the next load reads them or starts again
    _write_private_json(root / CACHE_FILE, {
        "format": CACHE_FORMAT, "root": str(root), "settings": site.settings, "kernels": site.kernels, "site_digest": site.site_digest,
        "keys": keys, "shards": count, "gen": gen, "gens": gens, "count": total,
        "below": below, "raw": site.memo.get("raw"),
    })
    if whole:
        for stale in (root / "build/.inventory-memo.json", root / "build/.inventory.pickle"):  # earlier formats, never loaded again
            try:
                os.unlink(stale)
            except OSError:
                pass
        try:
            names = os.listdir(root / SHARD_DIR)
        except OSError:
            names = []
        for n in names:
            m = re.fullmatch(r"(hosts|index)-(\d+)\.json", n)
            if m and int(m.group(2)) >= count:
                try:
                    os.unlink(root / SHARD_DIR / n)
                except OSError:
                    pass


def load(root: Path | str = ".", use_cache: bool = True) -> Site:
    """Load, merge and validate the inventory under ``root/hosts``; raise InventoryError if invalid.

    The validated result is cached in build/ (plain JSON, owner-only, sharded), each host with
    the stat keys of its inputs: an unchanged inventory is not parsed again, and a changed
    host is read, validated and checked against the others' values (an index) alone.
    """
    root = Path(root).resolve()
    cache = _Cache(root)
    if not use_cache or not cache.read():
        return _full_load(root, None, use_cache)
    head = cache.head
    assert head is not None
    keys = _site_keys(root, head["settings"])
    old = head["keys"]
    site_same = keys["site"] == old.get("site") and keys["code"] == old.get("code") and keys.get("kernels") == old.get("kernels")
    if not site_same or set(keys["profiles"]) != set(old.get("profiles", {})):
        return _full_load(root, cache, use_cache, keys if site_same else None)
    profiles_changed = {p for p, k in keys["profiles"].items() if old["profiles"][p] != k}
    folder = os.path.join(root, "hosts", NODES_DIR)
    names = {n.rsplit(".", 1)[0]: n for n in _yaml_names(folder)}
    if len(names) != len(cache.hosts) or not all(n in cache.hosts for n in names):
        return _full_load(root, cache, use_cache, keys)
    changed = set()
    for name, (record, paths, inputs, _) in cache.hosts.items():
        if f"hosts/{NODES_DIR}/{names[name]}" != record[0] or _input_keys(paths) != inputs:
            changed.add(name)
        elif profiles_changed and not profiles_changed.isdisjoint(record[1]):
            changed.add(name)
    if not changed:
        site = cache.site()
        if site is None:
            return _full_load(root, None, use_cache)
        return site
    site = _incremental(root, cache, changed, keys)
    return site if site is not None else _full_load(root, cache, use_cache, keys)


def _full_load(root: Path, cache: _Cache | None, write: bool, keys: dict[str, Any] | None = None) -> Site:
    """Every host read and checked; hosts whose inputs are as the cache has them are taken from it
    when site.yaml and the code are too (``keys``: their stat keys now, None when they changed)."""
    reuse: dict[str, tuple[Host, str]] = {}
    if cache is not None and keys is not None:
        old = cache.head["keys"]["profiles"]  # type: ignore[index]
        stale = {p for p, k in keys["profiles"].items() if old.get(p) != k} | (set(old) - set(keys["profiles"]))
        for name, (r, paths, inputs, checked) in cache.hosts.items():
            if stale.isdisjoint(r[1]) and _input_keys(paths) == inputs:
                reuse[name] = (Host(name, r[0], r[1], r[2], r[3], r[4]), checked)
    site, checked = _load(root, reuse)
    if write:
        _write_cache(root, site, None, set(site.hosts), set(), _site_keys(root, site.settings), checked)
    return site


class _Secrets:
    """Keyrings found good by an earlier load (keyed by path, stat and client), and those found now."""

    def __init__(self, ok: set[str]):
        self.ok = ok
        self.now: dict[str, str] = {}

    def secret_ok(self, item: str) -> bool:
        return item in self.ok

    def secret_checked(self, host: str, item: str) -> None:
        self.now[host] = item


def _incremental(root: Path, cache: _Cache, changed: set[str], keys: dict[str, Any], only: frozenset[str] | None = None,
                 accept: Callable[[Site], bool] | None = None) -> Site | None:
    """The cached site with only the ``changed`` hosts read, validated and checked against the
    index of the others' values (``only``: the site of those hosts alone, a scoped run's, which
    ``accept`` must take before the cache is written).  None when anything is wrong (or a shard
    cannot be read): the full load then finds and names every problem, as it always has."""
    head = cache.head
    assert head is not None
    problems: list[Problem] = []
    site_rel = f"hosts/{SITE_FILE}"
    raw = head.get("raw") if keys["profiles"] == head["keys"].get("profiles") else None
    try:  # site.yaml and the profiles as the last load parsed them (their stat keys are the same)
        if os.path.lexists(root / "hosts/site.yml"):
            raise KeyError("site.yml")  # _read_site says it is never read
        settings, defaults = head["settings"], raw["defaults"]  # type: ignore[index]
        profiles = {name: (rel, Path(p)) for name, (rel, p, _) in raw["profiles"].items()}  # type: ignore[index]
        profile_data = {name: data for name, (_, _, data) in raw["profiles"].items()}  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        settings, defaults = _read_site(root, problems)
        if problems or settings != head["settings"]:
            return None
        profiles, profile_data = _read_profiles(root / "hosts", problems)
        if problems:
            return None
        raw = _raw(defaults, profiles, profile_data)
    site = cache.site(only)
    if site is None:
        return None
    new: dict[str, Host] = {}
    for name in sorted(changed):
        rel = cache.hosts[name][0][0]
        data = _read_yaml(root / rel, rel, problems)
        host = None if problems else _resolve_host(root, name, rel, data, defaults, site_rel, profiles, profile_data, settings, problems)
        if host is None or problems:
            return None
        new[name] = host
    # the values a changed host no longer holds leave the index; the ones it holds now and did
    # not before must be nobody's (a value it kept is its own already, and was checked when it
    # came): only the index shards of the values that changed are read and written again
    count, below = head["shards"], dict(head["below"])
    held = {name: {f"{kind_}\0{value}" for kind_, value, _ in _claims(site.hosts[name])} for name in changed}
    moved = {name for name in changed if new[name].cfg.boot_path != site.hosts[name].cfg.boot_path}
    for name in changed:
        for key in held[name] - {f"{kind_}\0{value}" for kind_, value, _ in _claims(new[name])}:
            shard = cache.index_shard(_shard(key, count), changing=True)
            if shard is None:
                return None
            if shard.get(key) == name:
                del shard[key]
        for up in _ancestors(site.hosts[name].cfg.boot_path) if name in moved else ():
            below[up] = below.get(up, 1) - 1
            if not below[up]:
                del below[up]
    for name, host in new.items():
        boot = host.cfg.boot_path
        above = [("CephFS /boot path", up, "") for up in _ancestors(boot)] if name in moved else []
        for kind_, value, field in _claims(host) + above:
            key = f"{kind_}\0{value}"
            if field and key in held[name]:
                continue  # still its own
            shard = cache.index_shard(_shard(key, count), changing=bool(field))
            if shard is None or key in shard or (name in moved and below.get(boot)):
                return None  # taken, or /boot folders nested: the full load says by whom
            if field:  # not a folder above the host's /boot
                shard[key] = name
        for up in _ancestors(boot) if name in moved else ():
            below[up] = below.get(up, 0) + 1
    for name, host in new.items():
        site.hosts[name] = host
    secrets = _Secrets({cache.hosts[n][3] for n in changed})
    folders: dict[str, Any] = {}
    machine: dict[bytes, Host] = {}
    for host in new.values():
        check_secrets(site, host, problems, secrets, folders)
    if any(h.cfg.secrets.mode == "machine" for h in site.hosts.values()):
        for host in site.hosts.values():  # no two machines with one secret: each is read again (never cached)
            if host.cfg.secrets.mode == "machine":
                check_machine_secret(site, host, problems, machine, folders)
    check_kernels(site, site_rel, problems, list(new.values()))
    if problems:
        return None
    for host in new.values():
        _finish(host, site.kernels)
    if accept is not None and not accept(site):
        return None
    site.memo["raw"] = raw
    _write_cache(root, site, cache, changed, set(), keys, secrets.now, below, head["count"] if only is not None else None)
    return site


def load_scoped(root: Path | str, names: frozenset[str], vet: Callable[[Site, dict[str, Host]], str | None]) -> Site | str:
    """The site of hosts ``names`` alone, for a run scoped to them (tasks/quiet.py: only their files
    changed, and the listing of hosts/nodes/ did not); or why not (the tasks then load as usual).
    Only their cache shards are read; a changed one is read, validated and checked against the
    index of the others' values, as load() does, and the cache written only once ``vet`` (given
    the site and the hosts as the cache had them) found no reason against the scope."""
    root = Path(root).resolve()
    cache = _Cache(root)
    if not cache.read(names):
        return "the inventory cache has no usable record of them"
    head = cache.head
    assert head is not None
    keys = _site_keys(root, head["settings"])
    old = head["keys"]
    if keys["site"] != old.get("site") or keys["code"] != old.get("code") or keys.get("kernels") != old.get("kernels") or set(keys["profiles"]) != set(old.get("profiles") or ()):
        return "site.yaml, the profiles there are, the kernels or the code changed"
    before = cache.site(names)
    if before is None:
        return "the inventory cache has no usable record of them"
    records = cache.hosts
    # an edited profile: the manifest scoped the run to every host it reaches (tasks/quiet.py)
    edited = {p for p, k in keys["profiles"].items() if old["profiles"][p] != k}
    changed = {n for n in names if _input_keys(records[n][1]) != records[n][2] or not edited.isdisjoint(records[n][0][1])}
    why: list[str] = []

    def accept(site: Site) -> bool:
        for name, host in site.hosts.items():
            if not _same_machine_secret(root, before.hosts[name], host, records[name]):
                why.append(f"{host.source}: its machine secret changed (each is compared with every other host's: the full load does that)")
                return False
        why.extend(filter(None, [vet(site, before.hosts)]))
        return not why

    site = _incremental(root, cache, changed, keys, names, accept) if changed else before if accept(before) else None
    if site is None:
        return why[0] if why else "a changed host does not load alone (the full load says why, if anything is wrong)"
    site.memo["sources before"] = {name: h.sources for name, h in before.hosts.items()}
    return site


def scoped_sources_changed() -> bool:
    """Whether a host of this run's scoped site (load_scoped) reaches other profiles than before (always, for any other site)."""
    site = _LOADED.get(os.getcwd())
    earlier = site.memo.get("sources before") if site is not None else None
    return earlier is None or any(h.sources != earlier.get(name) for name, h in site.hosts.items())


def _same_machine_secret(root: Path, before: Host, now: Host, record: list[Any]) -> bool:
    """Whether ``now`` has no machine secret, or the one ``before`` had, as it was: the last full
    load found it unlike every other host's, and a changed one is some scoped host's again."""
    a, b = before.cfg.secrets, now.cfg.secrets
    if a.mode != "machine" and b.mode != "machine":
        return True
    if a.mode != b.mode or a.machine_secret != b.machine_secret:
        return False
    path = _path_str(root, b.machine_secret)
    paths, keys = record[1], record[2].split("|")
    return path in paths and len(keys) == len(paths) and keys[paths.index(path)] == key_of(path)


def profile_users(names: frozenset[str] | None) -> dict[str, list[str]]:
    """Each profile file (its path as the cache's check stats it) -> the loaded hosts it reaches (``names``: of those)."""
    site = _LOADED.get(os.getcwd())
    out: dict[str, list[str]] = {}
    prefix = f"hosts/{PROFILES_DIR}/"
    for name, h in site.hosts.items() if site is not None else ():
        if names is None or name in names:
            for source in h.sources:
                if source.startswith(prefix):
                    out.setdefault(f"{site.root}/{source}", []).append(name)
    return out


def host_paths(names: frozenset[str] | None) -> Iterator[tuple[str, list[str], bool]]:
    """(host, the files of it that loading looked at, False: never written) of each loaded host (``names``: of those)."""
    site = _LOADED.get(os.getcwd())
    for name, h in site.hosts.items() if site is not None else ():
        if names is None or name in names:
            yield name, _host_inputs(site.root, h), False


_LOADED: dict[str, Site] = {}


def load_for_tasks() -> Site:
    """load() for task generators, once per process: an invalid inventory ends the run with its problems, no traceback.

    In a run scoped to a few hosts (tasks/quiet.py), their site alone, when they load alone and
    what the site-wide tasks read of each is as before (tasks/scope.py); otherwise the scope is
    dropped and every host loads."""
    cwd = os.getcwd()
    if cwd in _LOADED:
        return _LOADED[cwd]
    names = quiet.scoped()
    if names is not None:
        from .scope import differs_for_site_tasks  # above this module

        got = load_scoped(".", names, differs_for_site_tasks)
        if not isinstance(got, str):
            _LOADED[cwd] = got
            quiet.scope_taken()
            return got
        quiet.scope_dropped(got)
    try:
        _LOADED[cwd] = load()
        return _LOADED[cwd]
    except InventoryError as e:
        stop(str(e))


# --- loading ----------------------------------------------------------------------

def _read_site(root: Path, problems: list[Problem]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the site's validated settings, its host defaults) from hosts/site.yaml; problems recorded."""
    hosts_dir = root / "hosts"
    site_rel = f"hosts/{SITE_FILE}"
    expected = "expected the inventory folder (hosts/site.yaml, hosts/nodes/)"
    try:
        st = os.stat(hosts_dir)
        if not stat.S_ISDIR(st.st_mode):
            raise InventoryError([Problem("hosts", "", f"is {kind(st.st_mode)}; {expected}")])
    except FileNotFoundError:
        raise InventoryError([Problem("hosts", "", f"no inventory folder in {root} (expected hosts/site.yaml and hosts/nodes/)")]) from None
    except OSError as e:  # a link that loops, ...
        raise InventoryError([Problem("hosts", "", f"cannot read: {e.strerror}; {expected}")]) from None
    if os.path.lexists(hosts_dir / "site.yml"):
        problems.append(Problem("hosts/site.yml", "", f"is never read: the site's settings are in {site_rel}; merge the two and keep one"))
    before = len(problems)
    raw_site = dict(_read_yaml(hosts_dir / SITE_FILE, site_rel, problems))
    if len(problems) > before:
        return {}, {}  # said once: what could not be read says nothing about missing keys
    defaults = raw_site.pop("defaults", None) or {}
    if not isinstance(defaults, dict):
        problems.append(Problem(site_rel, "defaults", "expected a mapping of host keys"))
        defaults = {}
    _no_name(defaults, site_rel, "defaults.name", problems)
    settings = validate(schema.SITE, raw_site, {}, site_rel, problems)
    if not problems:
        check_site(root, settings, site_rel, problems)
    return settings, defaults


def _raw(defaults: dict[str, Any], profiles: dict[str, tuple[str, Path]], profile_data: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """site.yaml's host defaults and each profile as parsed, for the cache's head (an incremental
    load merges a changed host with them, unparsed); None when JSON would not give them back
    exactly (a YAML date, a number as a key): that load then parses the files."""
    raw = {"defaults": defaults, "profiles": {name: [rel, str(p), profile_data[name]] for name, (rel, p) in profiles.items()}}
    try:
        return raw if json.loads(json.dumps(raw)) == raw else None
    except (TypeError, ValueError, RecursionError):
        return None


def _read_profiles(hosts_dir: Path, problems: list[Problem]) -> tuple[dict[str, tuple[str, Path]], dict[str, dict[str, Any]]]:
    profiles = {name: (rel, Path(p)) for name, (p, rel) in _yaml_entries(hosts_dir, PROFILES_DIR, schema.profile_name, "profile", problems).items()}
    data = {name: _read_yaml(p, rel, problems) for name, (rel, p) in profiles.items()}
    for name, (rel, _) in profiles.items():
        _no_name(data[name], rel, "name", problems)
    return profiles, data


def _no_name(layer: dict[str, Any], rel: str, key: str, problems: list[Problem]) -> None:
    """A problem when a layer below the host file (site defaults, a profile) sets ``name``: the host file's always wins."""
    if "name" in layer:
        problems.append(Problem(rel, key, f"{shown(layer['name'])}: a host's name is its file name (hosts/nodes/NAME.yaml), "
                                          "so a name here would be ignored; set `name` in a host's own file only, or not at all"))


def _finish(host: Host, kernels: list[str]) -> None:
    """The kernel version a host boots and the digest of everything about it."""
    kver = resolve_kernel(host.cfg.kernel, kernels)
    if host.digest and host.cfg.kernel_version == kver:
        return  # a host reused from the last load, as it was
    host.updated(kernel_version=kver)  # and its view (host.cfg) made again
    host.digest = digest(json.dumps(host.data, sort_keys=True))


def _load(root: Path, reuse: dict[str, tuple[Host, str]] | None = None) -> tuple[Site, dict[str, str]]:
    """Every host read, validated and cross-checked (``reuse``: hosts whose inputs are as when
    they were last loaded, with their keyring's check); the site and each keyring's check."""
    reuse = reuse or {}
    problems: list[Problem] = []
    hosts_dir = root / "hosts"
    site_rel = f"hosts/{SITE_FILE}"
    settings, defaults = _read_site(root, problems)
    if problems:
        raise InventoryError(problems)
    profiles, profile_data = _read_profiles(hosts_dir, problems)
    kernels = installed_kernels(Path(site_path(root, settings["kernels"]["boot_dir"])), Path(site_path(root, settings["kernels"]["modules_dir"])))
    hosts: dict[str, Host] = {}
    for stem, (p, rel) in _yaml_entries(hosts_dir, NODES_DIR, schema.host_name, "host", problems).items():
        host = reuse[stem][0] if stem in reuse and not problems and reuse[stem][0].source == rel else None
        if host is None:
            before = len(problems)
            data = _read_yaml(p, rel, problems)
            if len(problems) > before:
                continue  # what could not be read says nothing about missing keys
            host = _resolve_host(root, stem, rel, data, defaults, site_rel, profiles, profile_data, settings, problems)
        if host:
            hosts[host.name] = host
    if not hosts and not problems:
        problems.append(Problem(f"hosts/{NODES_DIR}", "", "no host files (expected hosts/nodes/<name>.yaml)"))
    site = Site(root, settings, hosts, kernels)
    secrets = _Secrets({checked for h, checked in reuse.values() if checked})
    cross_check(site, problems, secrets)
    check_kernels(site, site_rel, problems)
    if problems:
        raise InventoryError(problems)
    for h in hosts.values():
        _finish(h, kernels)
    site.site_digest = digest(json.dumps(settings, sort_keys=True))
    site.memo["raw"] = _raw(defaults, profiles, profile_data)
    return site, secrets.now


def _expand_profiles(names: Any, origin: str, profiles: dict[str, tuple[str, Path]], profile_data: dict[str, dict[str, Any]], problems: list[Problem]) -> list[str]:
    """Profile names in application order (includes first), each once; cycles are problems."""
    order: list[str] = []

    def visit(name: Any, stack: list[str], origin: str) -> None:
        if not isinstance(name, str) or name not in profiles:
            problems.append(Problem(origin, "profiles", f"{shown(name)}: no such profile (expected one of: {', '.join(sorted(profiles)[:20]) or 'none defined'})"))
            return
        if name in stack:
            problems.append(Problem(profiles[name][0], "profiles", "include cycle: " + " -> ".join([*stack, name])))
            return
        if len(stack) >= MAX_INCLUDE_DEPTH:
            problems.append(Problem(profiles[name][0], "profiles", f"includes nest more than {MAX_INCLUDE_DEPTH} deep ({' -> '.join(stack[:3])} -> ...); expected a shallow tree of profiles"))
            return
        if name in order:
            return
        includes = profile_data[name].get("profiles") or []
        for inc in includes if isinstance(includes, list) else [includes]:
            visit(inc, [*stack, name], profiles[name][0])
        order.append(name)

    if names is None:
        names = []
    if not isinstance(names, list):
        problems.append(Problem(origin, "profiles", "expected a list of profile names"))
        return []
    for n in names:
        visit(n, [], origin)
    return order


def _resolve_host(root: Path, stem: str, rel: str, data: dict[str, Any], defaults: dict[str, Any], site_rel: str, profiles: dict[str, tuple[str, Path]], profile_data: dict[str, dict[str, Any]], settings: dict[str, Any], problems: list[Problem]) -> Host | None:
    before = len(problems)
    host = _merged_host(stem, rel, data, defaults, site_rel, profiles, profile_data, settings, problems)
    if host is None:
        return None
    check_nics(host, settings, problems)
    check_root(host, problems)
    check_host_paths(root, host, settings, problems)
    return None if len(problems) > before else host


def _merged_host(stem: str, rel: str, data: dict[str, Any], defaults: dict[str, Any], site_rel: str, profiles: dict[str, tuple[str, Path]], profile_data: dict[str, dict[str, Any]], settings: dict[str, Any], problems: list[Problem]) -> Host | None:
    """Host ``stem``: site defaults < its profiles < its file, merged, validated and its placeholders
    filled in; None (its problems recorded) when that fails."""
    before = len(problems)
    order = _expand_profiles(data.get("profiles"), rel, profiles, profile_data, problems)
    if len(problems) > before:
        return None
    layers = [(site_rel, defaults)]
    layers += [(profiles[n][0], {k: v for k, v in profile_data[n].items() if k != "profiles"}) for n in order]
    layers.append((rel, {"name": stem, **{k: v for k, v in data.items() if k != "profiles"}}))
    try:
        merged, origins = merge(layers)
    except Invalid as e:
        problems.append(Problem(rel, "", str(e)))
        return None
    if data.get("name", stem) != stem:
        problems.append(Problem(rel, "name", f"{shown(data.get('name'))} does not match the file name {stem!r}"))
    resolved = validate(schema.HOST, merged, origins, rel, problems)
    if len(problems) > before:
        return None
    values = {"name": stem, "boot_tree": settings["ceph"]["boot_tree"]}
    for section, key in (("rbd", "namespace"), (None, "client"), (None, "boot_path"), (None, "keyring"), ("secrets", "machine_secret")):
        target = resolved[section] if section else resolved
        if isinstance(target[key], str) and "{" in target[key]:
            try:
                target[key] = target[key].format(**values)
            except (KeyError, IndexError, ValueError, AttributeError):
                problems.append(Problem(origins.get(f"{section}.{key}" if section else key, rel), f"{section}.{key}" if section else key,
                                        f"{shown(target[key])}: expected only the placeholders {{name}} and {{boot_tree}}"))
    if len(problems) > before:
        return None
    host = Host(stem, rel, list(dict.fromkeys(o for o, _ in layers)), resolved)
    host.origins = {k: origins[k] for k in _BLAMED if origins.get(k, rel) != rel}
    return host


def merged_hosts(root: Path | str = ".") -> tuple[dict[str, Host], list[Problem]]:
    """Every host of ``root/hosts`` (nodes/*.yaml and *.yml) with its values merged and validated as
    load() has them, without the checks that read its secrets or weigh it against other hosts or
    the build machine (tasks/examplekeys makes the secrets those checks want); and the problems
    that kept a host (for site.yaml's: every host) from resolving."""
    root = Path(root).resolve()
    problems: list[Problem] = []
    site_rel = f"hosts/{SITE_FILE}"
    try:
        settings, defaults = _read_site(root, problems)
    except InventoryError as e:
        return {}, e.problems
    if problems:
        return {}, problems
    profiles, profile_data = _read_profiles(root / "hosts", problems)
    hosts: dict[str, Host] = {}
    for stem, (p, rel) in _yaml_entries(root / "hosts", NODES_DIR, schema.host_name, "host", problems).items():
        before = len(problems)
        data = _read_yaml(p, rel, problems)
        if len(problems) > before:
            continue
        host = _merged_host(stem, rel, data, defaults, site_rel, profiles, profile_data, settings, problems)
        if host is not None:
            hosts[stem] = host
    return hosts, problems


# --- kernels --------------------------------------------------------------------

def _version_key(v: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+~]", v)]


def installed_kernels(boot_dir: Path, modules_dir: Path) -> list[str]:
    """Kernel versions with both /boot/vmlinuz-<v> and /lib/modules/<v>, oldest first."""
    try:
        names = os.listdir(boot_dir)
    except OSError:
        return []
    found = [n[len("vmlinuz-"):] for n in names if n.startswith("vmlinuz-")]
    return sorted((v for v in found if schema._KVER.fullmatch(v) and (modules_dir / v).is_dir()), key=_version_key)


def resolve_kernel(wanted: str, installed: list[str]) -> str:
    """'latest' becomes the newest installed version; an explicit version stays as given."""
    if wanted != "latest":
        return wanted
    return installed[-1] if installed else "latest"
