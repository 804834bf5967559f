"""Load hosts/: merge site < profiles < host, validate against the schema, cross-check hosts."""
from __future__ import annotations

import base64
import binascii
import json
import os
import pickle
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import schema
from .fileio import digest, file_key
from .schema import Field, Invalid, Section


SITE_FILE = "site.yaml"
PROFILES_DIR = "profiles"
NODES_DIR = "nodes"
CACHE_FILE = "build/.inventory.pickle"
_CODE = [Path(schema.__file__), Path(__file__)]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inventory, located by file and key path."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


class InventoryError(Exception):
    """The inventory is invalid; ``problems`` says where and why."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = [str(p) for p in problems]
        super().__init__("invalid inventory:\n  " + "\n  ".join(lines))


@dataclass
class Host:
    """A host with every key resolved and validated."""

    name: str
    source: str  # the host's own file, relative to the site
    sources: list[str]  # every file that contributed, lowest layer first
    data: dict[str, Any]
    digest: str = ""


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
        elif value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_into(out[key], value, origin, origins, where + ".")
        else:
            out[key] = value
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
            problems.append(Problem(where(prefix + str(key)), prefix + str(key), "unknown key; expected one of: " + ", ".join(section.fields)))
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
        except Invalid as e:
            problems.append(Problem(where(full), full, f"{data[key]!r}: {e}"))
    return out


# --- loading ----------------------------------------------------------------------

def _code_key() -> list[Any]:
    return [_stat_key(p) for p in _CODE]


def _stat_key(path: Path | str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)


class _Memo:
    """Reuse of the previous load's work, keyed by the stat of each input."""

    def __init__(self, previous: dict[str, Any]):
        self.before = previous
        self.now: dict[str, Any] = {"files": {}, "hosts": {}, "secrets": set()}

    def read_yaml(self, path: Path, rel: str, problems: list[Problem]) -> dict[str, Any]:
        key = _stat_key(path)
        old = self.before.get("files", {}).get(str(path))
        if key is not None and old is not None and old[0] == key:
            data = old[1]
        else:
            before = len(problems)
            data = _read_yaml(path, rel, problems)
            if len(problems) > before:
                return data
        self.now["files"][str(path)] = (key, data)
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

    def secret_ok(self, item: tuple[Any, ...]) -> bool:
        return item in self.before.get("secrets", set())

    def secret_checked(self, item: tuple[Any, ...]) -> None:
        self.now["secrets"].add(item)


def _read_yaml(path: Path, rel: str, problems: list[Problem]) -> dict[str, Any]:
    import yaml  # only when the cache missed: an unchanged inventory is never parsed

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader is ~5x faster
    try:
        with open(path, "rb") as f:
            data = yaml.load(f, Loader=loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problems.append(Problem(rel, "", f"not valid YAML{at}: {getattr(e, 'problem', e)}"))
        return {}
    except OSError as e:
        problems.append(Problem(rel, "", f"cannot read: {e.strerror}"))
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(Problem(rel, "", f"expected a mapping of keys at the top level, got {type(data).__name__}"))
        return {}
    return data


def _yaml_names(folder: Path | str) -> list[str]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [n for n in sorted(names) if n.endswith((".yaml", ".yml")) and not n.startswith(".")]


def _yaml_files(folder: Path) -> list[Path]:
    return [folder / n for n in _yaml_names(folder)]


def _signature(root: Path, extra: list[str]) -> list[Any]:
    """What the cached inventory depends on: names, sizes and mtimes of every input."""
    hosts = os.path.join(root, "hosts")
    files = [os.path.join(hosts, SITE_FILE)]
    for sub in (PROFILES_DIR, NODES_DIR):
        folder = os.path.join(hosts, sub)
        files += [f"{folder}/{n}" for n in _yaml_names(folder)]
    files += extra
    files += map(str, _CODE)
    sig: list[Any] = []
    for p in files:
        sig.append((p, file_key(p)))  # the render stage looks at the keyrings again: one stat serves both
    return sig


def load(root: Path | str = ".", use_cache: bool = True) -> Site:
    """Load, merge and validate the inventory under ``root/hosts``; raise InventoryError if invalid.

    The validated result is cached in build/ keyed by the names, sizes and
    mtimes of every input file, so an unchanged inventory is not parsed again.
    """
    root = Path(root).resolve()
    cache = root / CACHE_FILE
    previous: dict[str, Any] = {}
    if use_cache:
        try:
            with open(cache, "rb") as f:
                cached: Site = pickle.load(f)
            if cached.root == root:
                if cached.signature == _signature(root, _extra_inputs(cached)):
                    return cached
                if cached.memo.get("code") == _code_key():  # new rules: nothing from before counts
                    previous = cached.memo
        except (OSError, pickle.PickleError, EOFError, AttributeError, TypeError, ValueError, ImportError, KeyError, IndexError):
            pass
    site = _load(root, previous)
    site.signature = _signature(root, _extra_inputs(site))
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}")
        with open(tmp, "wb") as f:
            pickle.dump(site, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache)
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


def _extra_inputs(site: Site) -> list[str]:
    """Files outside the YAML that validation read: keyrings, LUKS keys, kernel folders."""
    out = [site.path_str(h.data["keyring"]) for h in site.hosts.values()]
    out += [site.path_str(h.data["luks"]["keyfile"]) for h in site.hosts.values() if h.data["luks"]]
    out += [site.path_str(h.data["secrets"]["machine_secret"]) for h in site.hosts.values() if h.data["secrets"]["mode"] == "machine"]
    k = site.settings["kernels"]
    return out + [k["boot_dir"], k["modules_dir"]]


def _load(root: Path, previous: dict[str, Any] | None = None) -> Site:
    memo = _Memo(previous or {})
    problems: list[Problem] = []
    hosts_dir = root / "hosts"
    site_rel = f"hosts/{SITE_FILE}"
    raw_site = dict(memo.read_yaml(hosts_dir / SITE_FILE, site_rel, problems))
    defaults = raw_site.pop("defaults", None) or {}
    if not isinstance(defaults, dict):
        problems.append(Problem(site_rel, "defaults", "expected a mapping of host keys"))
        defaults = {}
    settings = validate(schema.SITE, raw_site, {}, site_rel, problems)
    if problems:
        raise InventoryError(problems)

    profiles = {p.stem: (f"hosts/{PROFILES_DIR}/{p.name}", p) for p in _yaml_files(hosts_dir / PROFILES_DIR)}
    profile_data: dict[str, dict[str, Any]] = {}
    for name, (rel, p) in profiles.items():
        profile_data[name] = memo.read_yaml(p, rel, problems)
    # a host resolves from its own file, the site file and the profiles: while
    # those two are as before, an unchanged host file gives the same host
    shared = (_stat_key(hosts_dir / SITE_FILE), tuple((str(p), _stat_key(p)) for _, p in profiles.values()))

    kernels = installed_kernels(Path(settings["kernels"]["boot_dir"]), Path(settings["kernels"]["modules_dir"]))
    hosts: dict[str, Host] = {}
    nodes = os.path.join(hosts_dir, NODES_DIR)
    for name in _yaml_names(nodes):  # strings, not Paths: this loop runs per host
        p = os.path.join(nodes, name)
        rel = f"hosts/{NODES_DIR}/{name}"
        stem = name.rsplit(".", 1)[0]
        key = (shared, _stat_key(p))
        host = memo.host(stem, key, p) if not problems else None
        if host is None:
            data = memo.read_yaml(Path(p), rel, problems)
            host = _resolve_host(stem, rel, data, defaults, site_rel, profiles, profile_data, settings, problems)
        if host:
            hosts[host.name] = host
            memo.keep_host(host, key)
    if not hosts and not problems:
        problems.append(Problem(f"hosts/{NODES_DIR}", "", "no host files (expected hosts/nodes/<name>.yaml)"))
    site = Site(root, settings, hosts, kernels, memo={**memo.now, "code": _code_key()})
    _cross_check(site, problems, memo)
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
            problems.append(Problem(origin, "profiles", f"{name!r}: no such profile (expected one of: {', '.join(sorted(profiles)) or 'none defined'})"))
            return
        if name in stack:
            problems.append(Problem(profiles[name][0], "profiles", "include cycle: " + " -> ".join([*stack, name])))
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


def _resolve_host(stem: str, rel: str, data: dict[str, Any], defaults: dict[str, Any], site_rel: str, profiles: dict[str, tuple[str, Path]], profile_data: dict[str, dict[str, Any]], settings: dict[str, Any], problems: list[Problem]) -> Host | None:
    before = len(problems)
    try:
        schema.host_name(stem)
    except Invalid as e:
        problems.append(Problem(rel, "", f"file name {stem!r} is not a usable host name: {e}"))
        return None
    order = _expand_profiles(data.get("profiles"), rel, profiles, profile_data, problems)
    layers = [(site_rel, defaults)]
    layers += [(profiles[n][0], {k: v for k, v in profile_data[n].items() if k != "profiles"}) for n in order]
    layers.append((rel, {"name": stem, **{k: v for k, v in data.items() if k != "profiles"}}))
    try:
        merged, origins = merge(layers)
    except Invalid as e:
        problems.append(Problem(rel, "", str(e)))
        return None
    if data.get("name", stem) != stem:
        problems.append(Problem(rel, "name", f"{data.get('name')!r} does not match the file name {stem!r}"))
    resolved = validate(schema.HOST, merged, origins, rel, problems)
    if len(problems) > before:
        return None
    values = {"name": stem, "boot_tree": settings["ceph"]["boot_tree"]}
    for section, key in (("rbd", "namespace"), (None, "client"), (None, "boot_path"), (None, "keyring"), ("secrets", "machine_secret")):
        target = resolved[section] if section else resolved
        if isinstance(target[key], str) and "{" in target[key]:
            target[key] = target[key].format(**values)
    nics = resolved["nics"]
    for role, nic in nics.items():
        if nic and nic["gateway"] and nic["address"] == "dhcp":
            problems.append(Problem(origins.get(f"nics.{role}.gateway", rel), f"nics.{role}.gateway", "a gateway is only allowed with a static address (DHCP supplies its own)"))
    if nics["user"] and set(nics["user"]["macs"]) & set(nics["ceph"]["macs"]):
        problems.append(Problem(rel, "nics.user.macs", "shares a MAC with nics.ceph.macs; each NIC role needs its own MACs"))
    sources = list(dict.fromkeys(o for o, _ in layers))
    return Host(stem, rel, sources, resolved)


_KEY_LINE = re.compile(r"^\s*key\s*=\s*(\S+)\s*$", re.M)
_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$", re.M)


def cephx_key(text: str, client: str) -> str:
    """The base64 key of ``client.<client>`` in a keyring text; raise Invalid otherwise."""
    sections = _SECTION.findall(text)
    if f"client.{client}" not in sections:
        raise Invalid(f"expected a [client.{client}] section (found: {', '.join(sections) or 'none'})")
    body = text.split(f"[client.{client}]", 1)[1]
    body = _SECTION.split(body, 1)[0]
    m = _KEY_LINE.search(body)
    if not m:
        raise Invalid(f"expected a 'key = ...' line in [client.{client}]")
    key = m.group(1)
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error:
        raise Invalid("the key is not valid base64") from None
    # a cephx secret: u16 type, u32+u32 creation time, u16 length, then the AES key
    if len(raw) < 12 or int.from_bytes(raw[10:12], "little") != len(raw) - 12 or len(raw) - 12 not in (16, 32):
        raise Invalid("the key is not a cephx secret (expected what `ceph-authtool --gen-print-key` prints)")
    return key


def _check_secret_file(site: Site, host: Host, key: str, problems: list[Problem]) -> tuple[str, os.stat_result] | None:
    """(path, stat) of a host's keyring or LUKS key file if it is a private regular file; else a problem."""
    rel, where = {"keyring": (host.data["keyring"], "keyring"), "luks": (host.data["luks"] and host.data["luks"]["keyfile"], "luks.keyfile"),
                  "secret": (host.data["secrets"]["machine_secret"], "secrets.machine_secret")}[key]
    p = site.path_str(rel)  # a string: this runs for every host whenever an input changed
    try:
        st = os.stat(p)
    except OSError:
        problems.append(Problem(host.source, where, f"{rel!r}: file not found at {p}"))
        return None
    if not stat.S_ISREG(st.st_mode):
        problems.append(Problem(host.source, where, f"{rel!r}: not a regular file"))
        return None
    if st.st_mode & 0o077:
        problems.append(Problem(host.source, where, f"{rel!r}: mode {stat.S_IMODE(st.st_mode):04o} lets group/others read a secret; expected 0600 (chmod 600 {p})"))
        return None
    return p, st


def _check_machine_secret(site: Site, host: Host, problems: list[Problem], seen: dict[bytes, Host]) -> None:
    """A machine-mode host's secret file: private, one line the firmware field can hold, no other host's.

    Read on every load that reads the inventory (nothing about it is kept in the cache: a digest
    there would let a guess be checked without the KDF)."""
    before = len(problems)
    checked = _check_secret_file(site, host, "secret", problems)
    if checked is None:
        hint = "; make one with `python -m tasks.examplekeys`, or set secrets.mode: clear to serve this host's keys in the clear"
        problems[before:] = [Problem(p.file, p.key, p.message + (hint if "not found" in p.message else "")) for p in problems[before:]]
        return
    rel = host.data["secrets"]["machine_secret"]
    try:
        with open(checked[0], "rb") as f:
            secret = schema.machine_secret(f.read(100))
    except Invalid as e:
        problems.append(Problem(host.source, "secrets.machine_secret", f"{rel!r}: {e}"))
        return
    other = seen.setdefault(secret, host)
    if other is not host:
        problems.append(Problem(host.source, "secrets.machine_secret", f"{rel!r} holds the same secret as host {other.name!r} "
                                f"({other.source}: {other.data['secrets']['machine_secret']!r}); every machine needs its own: one could open the other's keys"))


def _cross_check(site: Site, problems: list[Problem], memo: _Memo) -> None:
    seen: dict[str, dict[Any, tuple[Host, str]]] = {k: {} for k in ("MAC", "UUID", "IP address", "RBD image", "client", "CephFS /boot path")}

    def claim(kind: str, value: Any, host: Host, key: str) -> None:
        other, other_key = seen[kind].setdefault(value, (host, key))
        if other is not host:
            shown = "/".join(value) if isinstance(value, tuple) else value
            problems.append(Problem(host.source, key, f"{kind} {shown} is already used by host {other.name!r} ({other.source}: {other_key}); every host needs its own"))

    machine_secrets: dict[bytes, Host] = {}
    for host in site.hosts.values():
        d = host.data
        if d["uuid"]:
            claim("UUID", d["uuid"], host, "uuid")
        for role, nic in d["nics"].items():
            if not nic:
                continue
            for m in nic["macs"]:
                claim("MAC", m, host, f"nics.{role}.macs")
            if nic["address"] != "dhcp":
                claim("IP address", nic["address"].split("/")[0], host, f"nics.{role}.address")
        rbd = d["rbd"]
        claim("RBD image", (rbd["pool"], rbd["namespace"], rbd["image"]), host, "rbd")
        claim("client", d["client"], host, "client")
        claim("CephFS /boot path", d["boot_path"], host, "boot_path")
        keyring = _check_secret_file(site, host, "keyring", problems)
        checked = None
        if keyring:
            path, st = keyring
            checked = (path, (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode), d["client"])
        if keyring and not memo.secret_ok(checked):
            try:
                with open(keyring[0], errors="replace") as f:
                    cephx_key(f.read(), d["client"])
            except Invalid as e:
                problems.append(Problem(host.source, "keyring", f"{d['keyring']!r}: {e}"))
                checked = None
        if checked:
            memo.secret_checked(checked)
        if d["luks"]:
            keyfile = _check_secret_file(site, host, "luks", problems)
            if keyfile and keyfile[1].st_size == 0:
                problems.append(Problem(host.source, "luks.keyfile", f"{d['luks']['keyfile']!r}: the key file is empty"))
        if d["secrets"]["mode"] == "machine":
            _check_machine_secret(site, host, problems, machine_secrets)
        if d["image_root"] and os.path.realpath(d["image_root"]) == "/":
            problems.append(Problem(host.source, "image_root", "'/' is the build machine's own root; expected the mount point of the host's image"))


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
    return sorted((v for v in found if (modules_dir / v).is_dir()), key=_version_key)


def resolve_kernel(wanted: str, installed: list[str]) -> str:
    """'latest' becomes the newest installed version; an explicit version stays as given."""
    if wanted != "latest":
        return wanted
    return installed[-1] if installed else "latest"
