"""Load hosts/: merge site < profiles < host, validate against the schema, cross-check hosts."""
from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

from . import schema, yamlfiles
from .checks import TREE_MARKER, cephx_key, check_host_paths, check_kernels, check_nics, check_site, cmdline_words, cross_check, site_path
from .fileio import digest, file_key, tmp_name
from .model import Host, InventoryError, Problem, Site, kind
from .schema import Invalid, ItemInvalid, Section, shown

__all__ = ["Host", "InventoryError", "Problem", "Site", "TREE_MARKER", "cephx_key", "cmdline_words", "installed_kernels", "load", "load_for_tasks", "merge", "resolve_kernel", "validate"]


SITE_FILE = "site.yaml"
PROFILES_DIR = "profiles"
NODES_DIR = "nodes"
# The validated inventory, as plain JSON (never a format that runs code when loaded),
# and what a later load may reuse when some input changed (read only then).
CACHE_FILE = "build/.inventory.json"
MEMO_FILE = "build/.inventory-memo.json"
CACHE_FORMAT = 1
MAX_INCLUDE_DEPTH = 32  # profiles including profiles
# keys whose origin the checks after validation name in messages (kept per host when not its own file)
_BLAMED = ("uuid", "nics.ceph.macs", "nics.ceph.address", "nics.ceph.gateway", "nics.user.macs", "nics.user.address",
           "nics.user.gateway", "rbd.pool", "rbd.namespace", "client", "keyring", "boot_path", "kernel", "kernel_args", "luks.keyfile", "image_root",
           "rootfs.source", "secrets.mode", "secrets.machine_secret")
_CODE = [Path(__file__).parent / n for n in ("schema.py", "inventory.py", "checks.py", "yamlfiles.py", "model.py")]


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
                problems.append(Problem(where(full), full, "missing; " + spec.doc[0].lower() + spec.doc[1:]))
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
    return out


# --- reading files ----------------------------------------------------------------

def _read_yaml(path: Path | str, rel: str, problems: list[Problem]) -> dict[str, Any]:
    try:
        return yamlfiles.read_yaml(str(path))
    except yamlfiles.Unreadable as e:
        problems.append(Problem(rel, "", str(e)))
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

def _code_key() -> list[Any]:
    return [_stat_key(p) for p in _CODE]


def _stat_key(path: Path | str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode]


def _read_private_json(path: Path) -> Any:
    """JSON from ``path`` if it is a regular file of ours that nobody else may write; else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _write_private_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` as JSON, owner-only (0600; build/ is made 0700), atomically; a failure only costs the cache."""
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        try:
            os.mkdir(path.parent, 0o700)
        except FileExistsError:
            pass
        tmp = path.parent / tmp_name(path.name)
        try:
            os.unlink(tmp)  # a leftover of a killed run with our pid
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        try:
            os.unlink(path.parent / tmp_name(path.name))
        except OSError:
            pass


def _host_record(h: Host) -> list[Any]:
    return [h.source, h.sources, h.data, h.digest, h.origins]


def _site_from_json(raw: Any, root: Path) -> Site | None:
    """The Site a cache file holds, or None when it is not one of this format for ``root``."""
    if not isinstance(raw, dict) or raw.get("format") != CACHE_FORMAT or raw.get("root") != str(root):
        return None
    try:
        hosts = {name: Host(name, r[0], r[1], r[2], r[3], r[4]) for name, r in raw["hosts"].items()}
        return Site(root, raw["settings"], hosts, raw["kernels"], raw["signature"], raw["site_digest"])
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


def _memo_from_json(raw: Any, site: Site) -> dict[str, Any]:
    """What the memo file lets this load reuse (nothing when it is damaged or of other code)."""
    try:
        if not isinstance(raw, dict) or raw.get("code") != _code_key():  # new rules: nothing from before counts
            return {}
        hosts = {name: (key, site.hosts[name]) for name, key in raw["hosts"].items() if name in site.hosts}
        return {"files": dict(raw["files"]), "hosts": hosts, "secrets": set(raw["secrets"])}
    except (KeyError, TypeError, ValueError):
        return {}


def load(root: Path | str = ".", use_cache: bool = True) -> Site:
    """Load, merge and validate the inventory under ``root/hosts``; raise InventoryError if invalid.

    The validated result is cached in build/ (plain JSON, owner-only) keyed by the
    names, sizes and mtimes of every input file, so an unchanged inventory is not parsed again.
    """
    root = Path(root).resolve()
    previous: dict[str, Any] = {}
    if use_cache:
        cached = _site_from_json(_read_private_json(root / CACHE_FILE), root)
        if cached is not None:
            try:
                if cached.signature == _signature(root, _extra_inputs(cached)):
                    return cached
            except (KeyError, TypeError, AttributeError):  # a cache of another shape: parse again
                cached = None
        if cached is not None:
            previous = _memo_from_json(_read_private_json(root / MEMO_FILE), cached)
    site = _load(root, previous)
    site.signature = _signature(root, _extra_inputs(site))
    if use_cache:
        try:
            os.unlink(root / "build/.inventory.pickle")  # the old cache format, never loaded again
        except OSError:
            pass
        memo = site.memo
        _write_private_json(root / MEMO_FILE, {
            "code": memo["code"], "files": memo["files"], "secrets": sorted(memo["secrets"]),
            "hosts": {name: key for name, (key, _) in memo["hosts"].items()},
        })
        _write_private_json(root / CACHE_FILE, {
            "format": CACHE_FORMAT, "root": str(root), "settings": site.settings, "kernels": site.kernels,
            "signature": site.signature, "site_digest": site.site_digest,
            "hosts": {name: _host_record(h) for name, h in site.hosts.items()},
        })
    return site


_LOADED: dict[str, Site] = {}


def load_for_tasks() -> Site:
    """load() for task generators, once per process: an invalid inventory ends the run with its problems, no traceback."""
    cwd = os.getcwd()
    if cwd in _LOADED:
        return _LOADED[cwd]
    try:
        _LOADED[cwd] = load()
        return _LOADED[cwd]
    except InventoryError as e:
        sys.stderr.write(f"cephboot: {e}\n")
        raise SystemExit(2) from None


def _signature(root: Path, extra: list[str]) -> list[Any]:
    """What the cached inventory depends on: names, sizes and mtimes of every input."""
    hosts = os.path.join(root, "hosts")
    files = [os.path.join(hosts, SITE_FILE)]
    for sub in (PROFILES_DIR, NODES_DIR):
        folder = os.path.join(hosts, sub)
        files += [f"{folder}/{n}" for n in _yaml_names(folder)]
    files += extra
    files += map(str, _CODE)
    # the render stage looks at the keyrings again: one stat serves both
    return [[p, file_key(p)] for p in files]


def _extra_inputs(site: Site) -> list[str]:
    """Files outside the YAML that validation read: keyrings, LUKS keys, kernel folders."""
    out = [site.path_str(h.data["keyring"]) for h in site.hosts.values()]
    out += [site.path_str(h.data["luks"]["keyfile"]) for h in site.hosts.values() if h.data["luks"]]
    out += [site.path_str(h.data["secrets"]["machine_secret"]) for h in site.hosts.values() if h.data["secrets"]["mode"] == "machine"]
    k = site.settings["kernels"]
    return out + [site_path(site.root, k["boot_dir"]), site_path(site.root, k["modules_dir"])]


class _Memo:
    """Reuse of the previous load's work, keyed by the stat of each input."""

    def __init__(self, previous: dict[str, Any]):
        self.before = previous
        self.now: dict[str, Any] = {"files": {}, "hosts": {}, "secrets": set()}

    def read_yaml(self, path: Path | str, rel: str, problems: list[Problem]) -> dict[str, Any]:
        key = _stat_key(path)
        old = self.before.get("files", {}).get(str(path))
        if key is not None and old is not None and old[0] == key:
            data = old[1]
        else:
            before = len(problems)
            data = _read_yaml(path, rel, problems)
            if len(problems) > before:
                return data
        self.now["files"][str(path)] = [key, data]
        return data

    def host(self, name: str, key: Any, path: str) -> "Host | None":
        old = self.before.get("hosts", {}).get(name)
        if old is None or old[0] != key:
            return None
        parsed = self.before.get("files", {}).get(str(path))
        if parsed is not None:  # keep the parsed file for a later load that needs it
            self.now["files"][str(path)] = parsed
        return old[1]

    def keep_host(self, host: "Host", key: Any) -> None:
        self.now["hosts"][host.name] = (key, host)

    def secret_ok(self, item: str) -> bool:
        return item in self.before.get("secrets", set())

    def secret_checked(self, item: str) -> None:
        self.now["secrets"].add(item)


# --- loading ----------------------------------------------------------------------

def _load(root: Path, previous: dict[str, Any] | None = None) -> Site:
    memo = _Memo(previous or {})
    problems: list[Problem] = []
    hosts_dir = root / "hosts"
    site_rel = f"hosts/{SITE_FILE}"
    try:
        st = os.stat(hosts_dir)
        if not stat.S_ISDIR(st.st_mode):
            raise InventoryError([Problem("hosts", "", f"is {kind(st.st_mode)}; expected the inventory folder (hosts/site.yaml, hosts/nodes/)")])
    except FileNotFoundError:
        raise InventoryError([Problem("hosts", "", f"no inventory folder in {root} (expected hosts/site.yaml and hosts/nodes/)")]) from None
    if os.path.lexists(hosts_dir / "site.yml"):
        problems.append(Problem("hosts/site.yml", "", f"is never read: the site's settings are in {site_rel}; merge the two and keep one"))
    raw_site = dict(memo.read_yaml(hosts_dir / SITE_FILE, site_rel, problems))
    defaults = raw_site.pop("defaults", None) or {}
    if not isinstance(defaults, dict):
        problems.append(Problem(site_rel, "defaults", "expected a mapping of host keys"))
        defaults = {}
    settings = validate(schema.SITE, raw_site, {}, site_rel, problems)
    if not problems:
        check_site(root, settings, site_rel, problems)
    if problems:
        raise InventoryError(problems)

    profiles = {name: (rel, Path(p)) for name, (p, rel) in _yaml_entries(hosts_dir, PROFILES_DIR, schema.profile_name, "profile", problems).items()}
    profile_data: dict[str, dict[str, Any]] = {}
    for name, (rel, p) in profiles.items():
        profile_data[name] = memo.read_yaml(p, rel, problems)
    # a host resolves from its own file, the site file and the profiles: while
    # those two are as before, an unchanged host file gives the same host
    shared = [_stat_key(hosts_dir / SITE_FILE), [[str(p), _stat_key(p)] for _, p in profiles.values()]]

    kernels = installed_kernels(Path(site_path(root, settings["kernels"]["boot_dir"])), Path(site_path(root, settings["kernels"]["modules_dir"])))
    hosts: dict[str, Host] = {}
    for stem, (p, rel) in _yaml_entries(hosts_dir, NODES_DIR, schema.host_name, "host", problems).items():
        key = [shared, _stat_key(p)]
        host = memo.host(stem, key, p) if not problems else None
        if host is None:
            before = len(problems)
            data = memo.read_yaml(p, rel, problems)
            if len(problems) > before:
                continue  # what could not be read says nothing about missing keys
            host = _resolve_host(root, stem, rel, data, defaults, site_rel, profiles, profile_data, settings, problems)
        if host:
            hosts[host.name] = host
            memo.keep_host(host, key)
    if not hosts and not problems:
        problems.append(Problem(f"hosts/{NODES_DIR}", "", "no host files (expected hosts/nodes/<name>.yaml)"))
    site = Site(root, settings, hosts, kernels, memo={**memo.now, "code": _code_key()})
    cross_check(site, problems, memo)
    check_kernels(site, site_rel, problems)
    if problems:
        raise InventoryError(problems)
    for h in hosts.values():
        kver = resolve_kernel(h.data["kernel"], kernels)
        if h.digest and h.data.get("kernel_version") == kver:
            continue  # a host reused from the last load, as it was
        h.data["kernel_version"] = kver
        h.digest = digest(json.dumps(h.data, sort_keys=True))
    site.site_digest = digest(json.dumps(settings, sort_keys=True))
    return site


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
    host = Host(stem, rel, list(dict.fromkeys(o for o, _ in layers)), resolved)
    host.origins = {k: origins[k] for k in _BLAMED if origins.get(k, rel) != rel}
    check_nics(host, settings, problems)
    check_host_paths(root, host, settings, problems)
    return None if len(problems) > before else host


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
