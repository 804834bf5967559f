"""Build the shared base initrd of each kernel version with mkinitramfs, and verify what it holds."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed
from .uptodate import OutputsKept, config_changed

from . import inventory, layout
from .fileio import (digest, read_private_json, file_key, file_sha256, remove_stale_temps, replace_tmp, tmp_dir, tmp_name,
                     write_if_changed)
from .inventory import Site
from .layout import TEMPLATES, base_name
from .templating import code_digest, header
from .templating import env as _env
from .failures import guarded, site_values, unsafe
from .quoting import UnsafeValue

KERNELS = layout.KERNELS
STATIC = TEMPLATES / "initramfs-tools"
# the static boot code, copied as it is into the generated confdir
STATIC_FILES = {
    "hooks/cephboot": STATIC / "hooks/cephboot",
    "scripts/local-top/cephboot": STATIC / "scripts/local-top/cephboot",
}
CONF_TEMPLATE = "initramfs-tools/initramfs.conf.j2"
# One base per kernel carries every feature a host may use, so that a host's
# feature change never costs a mkinitramfs: the Ceph client (rbd, libceph, and
# ceph for /boot), dm-crypt for LUKS roots, and gcm/ghash/ctr/aes, without which
# `ms_mode=secure` loops on "failed to allocate gcm tfm context"; overlay for the root of
# stateless hosts (a tmpfs over their golden image, mounted read-only).
CORE_MODULES = ["rbd", "libceph", "ceph", "dm-mod", "dm-crypt", "gcm", "ghash-generic", "ctr", "aes-generic", "aesni-intel", "ext4", "overlay"]
# programs the base must run at boot, each checked by running it inside the archive
PROGRAMS = {"rbd": ["usr/bin/rbd", "--version"], "mount.ceph": ["usr/sbin/mount.ceph", "-h"], "cryptsetup": ["usr/sbin/cryptsetup", "--version"],
            "openssl": ["usr/bin/openssl", "version"]}  # opens the keys of machine-mode hosts
# One base per kernel and map method in use: "cli" is the full base (it serves sysfs hosts
# too); "sysfs" is the lean one, without the Ceph userspace of the rbd CLI and mount.ceph
# (librbd, librados, libceph-common: most of a base), which a sysfs map never runs.
METHODS = ("cli", "sysfs")
CLI_ONLY = ("rbd", "mount.ceph")
# mkinitramfs also runs the build machine's own hooks (/usr/share/initramfs-tools/hooks, whatever
# -d says), and some copy the machine's private keys in: dropbear-initramfs its SSH host keys and
# authorized_keys, cryptsetup-initramfs the key files KEYFILE_PATTERN names.  The base is published
# for any machine to fetch, so none of that may be in it: these folders, and any file holding a
# private key or a cephx key (a file of at most PRIVATE_SCAN bytes is read; keys are small).
PRIVATE_FOLDERS = ("etc/dropbear", "etc/ssh", "root/.ssh", "cryptroot/keyfiles", "etc/cryptsetup-initramfs")
PRIVATE_MARKERS = (b"PRIVATE KEY-----", b"PuTTY-User-Key-File", b"\tkey = AQ", b"\nkey = AQ")
PRIVATE_SCAN = 64 << 10
# The lean base's budget against the full base of the same kernel (issue 15: a third), and
# the compression level that helps reach it (mkinitramfs' COMPRESSLEVEL; the full base
# keeps mkinitramfs' default, faster to build).  zstd -19 costs build time, not boot time:
# decompression is as fast as at -9.
LEAN_BUDGET = 1 / 3
LEAN_COMPRESS_LEVEL = {"zstd": "19", "xz": "9", "gzip": "9"}
BASE_NAMES = frozenset(base_name(m) for m in METHODS)
# Fixed timestamps: the same kernel and inputs give the same bytes.
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z
INSTALL_HINT = "apt-get install linux-image-amd64 (or the linux-image-<version> package)"


def source_date_epoch() -> str:
    """SOURCE_DATE_EPOCH from the environment when set (the reproducible-builds convention), else a constant."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "")
    return value if value.isdigit() else str(DEFAULT_EPOCH)


def kernel_dir(kver: str) -> Path:
    return KERNELS / kver


def base_path(kver: str, method: str = "cli") -> Path:
    return kernel_dir(kver) / base_name(method)


def base_methods(method: str) -> str:
    """CEPHBOOT_MAP_METHODS of the base for ``method``: what the hook puts in."""
    return "cli sysfs" if method == "cli" else method


def vmlinuz_path(kver: str) -> Path:
    return kernel_dir(kver) / "vmlinuz"


def stamp_path(kver: str) -> Path:
    """sha256 of vmlinuz and of each base as initrd:<kver> built them (publish:kernel checks them)."""
    return kernel_dir(kver) / "built.json"


def built_stamp(kver: str) -> dict[str, str]:
    """{file name: sha256} recorded when the kernel's files were built ({} if none or damaged)."""
    data = read_private_json(stamp_path(kver))  # a FIFO or a link there is damage: never opened blocking, never followed
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def bases_in_use(site: Site) -> dict[str, list[str]]:
    """Each kernel version some host boots, with the map methods of its hosts (a base each;
    worked out once per site, with kernels_in_use: read it, never change it)."""
    return site.derived("kernels", lambda: _in_use(site))[0]


def kernels_in_use(site: Site) -> dict[str, list[str]]:
    """Each kernel version some host boots, with the root file systems used on it (once per site: read it, never change it)."""
    return site.derived("kernels", lambda: _in_use(site))[1]


def _in_use(site: Site) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(bases_in_use, kernels_in_use) of ``site``, in one pass over its hosts."""
    methods: dict[str, set[str]] = {}
    fstypes: dict[str, set[str]] = {}
    for host in site.hosts.values():
        cfg = host.cfg
        kver = cfg.kernel_version
        (methods.get(kver) or methods.setdefault(kver, set())).add(cfg.map.method)
        (fstypes.get(kver) or fstypes.setdefault(kver, set())).add(cfg.root_fs)
    return ({k: [m for m in METHODS if m in v] for k, v in sorted(methods.items())},
            {k: sorted(v) for k, v in sorted(fstypes.items())})


def nic_key(method: str) -> str:
    """The kernels.* key that lists the NIC drivers of the base for ``method``."""
    return "nic_modules" if method == "cli" else "lean_nic_modules"


def module_list(settings: dict[str, Any], fstypes: list[str], method: str = "cli") -> list[str]:
    """Every module the base for ``method`` carries, in a stable order, each once:
    those it loads at boot (CORE_MODULES, the root file systems), then the NIC
    drivers that udev loads where the NIC is there (see nic_modules())."""
    names = [*CORE_MODULES, *fstypes, *settings["kernels"][nic_key(method)]]
    return list(dict.fromkeys(names))


def nic_modules(settings: dict[str, Any], modules: list[str], method: str = "cli") -> list[str]:
    """The NIC drivers among ``modules``: put in the base, not force-loaded
    (loading every driver on every machine costs seconds per boot)."""
    loaded = set(CORE_MODULES)
    return [m for m in modules if m in settings["kernels"][nic_key(method)] and m not in loaded]


def compress_level(compress: str, method: str = "cli") -> str:
    """COMPRESSLEVEL of the base for ``method`` ('' = mkinitramfs' default)."""
    return LEAN_COMPRESS_LEVEL.get(compress, "") if method != "cli" else ""


def _mod(name: str) -> str:
    """A module's canonical name: the kernel treats '-' and '_' alike."""
    return name.replace("-", "_")


def _modules_in(index_dir: Path) -> tuple[set[str], set[str]]:
    """(loadable, built-in) module names according to a modules folder's modules.dep and modules.builtin."""

    def names(path: Path, field_end: str) -> set[str]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return set()
        out = set()
        for line in text.splitlines():
            rel = line.split(field_end, 1)[0]
            base = rel.rsplit("/", 1)[-1]
            out.add(_mod(base.split(".ko", 1)[0]))
        return out

    return names(index_dir / "modules.dep", ":"), names(index_dir / "modules.builtin", "\n")


def missing_dependencies(have_dir: Path, kernel_dir: Path) -> list[str]:
    """Each module in ``have_dir`` whose dependencies (by the kernel's own modules.dep, not
    the archive's: depmod leaves out what it cannot find) are not all there with it."""
    def stem(rel: str) -> str:
        return _mod(rel.rsplit("/", 1)[-1].split(".ko", 1)[0])

    try:
        text = (kernel_dir / "modules.dep").read_text()
    except FileNotFoundError:
        return []
    deps = {stem(k): [stem(d) for d in v.split()] for k, _, v in (line.partition(":") for line in text.splitlines())}
    have = {stem(p.name) for p in have_dir.rglob("*.ko*")}
    return [f"module {m} is in the base without {d}, which it needs" for m in sorted(have) for d in deps.get(m, []) if d not in have]


def missing_libraries(root: Path) -> list[str]:
    """Each program in the unpacked archive at ``root`` (bin, sbin, udev's helpers) that
    loads a library the archive lacks: what the lean base's hook takes out must be what
    nothing in it loads.  ldd names them as the build machine resolves them."""
    problems, seen = [], set()
    for folder in ("usr/bin", "usr/sbin", "usr/lib/udev", "usr/lib/systemd"):
        for prog in sorted((root / folder).glob("*")) if (root / folder).is_dir() else []:
            if prog.is_symlink() or not prog.is_file() or not os.access(prog, os.X_OK):
                continue
            inode = prog.stat().st_ino
            if inode in seen:
                continue
            seen.add(inode)
            out = subprocess.run(["ldd", str(prog)], capture_output=True, text=True).stdout
            for line in out.splitlines():
                name, arrow, where = line.strip().partition(" => ")
                lib = where.split(" (", 1)[0].strip()
                if arrow and lib.startswith("/") and not (root / lib.lstrip("/")).exists():
                    problems.append(f"/{prog.relative_to(root)} loads {name}, which is not in the base")
    return problems


def check_kernel(settings: dict[str, Any], kver: str) -> str | None:
    """Why kernel ``kver`` cannot be used, or None when its image and modules are installed."""
    boot = Path(settings["kernels"]["boot_dir"])
    mods = Path(settings["kernels"]["modules_dir"])
    if kver == "latest":
        return f"no kernel is installed in {boot} (hosts ask for 'latest'); install one: {INSTALL_HINT}"
    missing = [str(p) for p in (boot / f"vmlinuz-{kver}", mods / kver) if not p.exists()]
    if missing:
        return f"kernel {kver} is not installed (missing {', '.join(missing)}); install it: {INSTALL_HINT}, or set `kernel:` to an installed version"
    return None


def conf_text(kver: str, nics: list[str], compress: str, method: str = "cli") -> str:
    """The base's initramfs.conf, which mkinitramfs sources (lint:base shellchecks the same text)."""
    return _env().get_template(CONF_TEMPLATE).render(header=header(["hosts/site.yaml"], CONF_TEMPLATE), kver=kver, compress=compress, nics=nics,
                                                     methods=base_methods(method), level=compress_level(compress, method))


def write_confdir(confdir: Path, kver: str, modules: list[str], nics: list[str], compress: str, method: str = "cli") -> None:
    """The generated initramfs-tools configuration folder that mkinitramfs -d reads."""
    if confdir.exists():
        shutil.rmtree(confdir)  # nothing stale (an old hook) may slip into the base
    write_if_changed(confdir / "initramfs.conf", conf_text(kver, nics, compress, method).encode())
    listing = "".join(f"{m}\n" for m in modules if m not in nics)
    note = f"# generated by cephboot from hosts/site.yaml (kernels.{nic_key(method)}) and tasks/initrd.py; do not edit\n"
    write_if_changed(confdir / "modules", (note + listing).encode())
    for rel, src in STATIC_FILES.items():
        write_if_changed(confdir / rel, src.read_bytes(), 0o755)
    (confdir / "conf.d").mkdir(exist_ok=True)  # deliberately empty: no host's conf.d in the base


def verify_base(image: Path, kver: str, modules: list[str], modules_dir: Path, method: str = "cli") -> list[str]:
    """Unpack ``image`` and list what a booting host would miss in it (empty when complete)."""
    problems: list[str] = []
    tmp = Path(tmp_dir()) / "verify"  # removed when the run ends, or by the next run if this one is killed
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        root = tmp / "root"
        r = subprocess.run(["unmkinitramfs", str(image), str(root)], capture_output=True, text=True, env=_tool_env())
        if r.returncode != 0:
            return [f"unmkinitramfs cannot read the archive: {r.stderr.strip()}"]
        if (root / "main").is_dir():  # an early (microcode) archive came first
            root = root / "main"
        for name, argv in PROGRAMS.items():
            if method != "cli" and name in CLI_ONLY:
                if (root / argv[0]).exists():
                    problems.append(f"{name} is in the {method} base (/{argv[0]}), which is built without the rbd CLI's userspace")
                continue
            if not (root / argv[0]).is_file():
                problems.append(f"{name} is missing (/{argv[0]})")
            elif os.geteuid() == 0:  # run it inside the archive: proves its libraries are there
                run = subprocess.run(["chroot", str(root), "/" + argv[0], *argv[1:]], capture_output=True, text=True)
                if run.returncode != 0:
                    problems.append(f"{name} does not run inside the initrd (libraries missing?): {(run.stderr or run.stdout).strip()[:300]}")
        script = root / "scripts/local-top/cephboot"
        if not script.is_file() or not os.access(script, os.X_OK):
            problems.append("the local-top script scripts/local-top/cephboot is missing or not executable")
        order = root / "scripts/local-top/ORDER"
        if "/scripts/local-top/cephboot" not in (order.read_text() if order.is_file() else ""):
            problems.append("scripts/local-top/ORDER does not run cephboot")
        for secret in [root / "conf/conf.d/cephboot", *root.glob("etc/ceph/*.keyring"), root / "etc/cephboot/luks.key", root / "etc/cephboot/sealed"]:
            if secret.exists():
                problems.append(f"host data in the shared base: /{secret.relative_to(root)}")
        problems += [f"a private key of the build machine in the shared base, which any machine may fetch: /{rel} "
                     "(a hook of this machine's initramfs-tools put it there: dropbear-initramfs, cryptsetup-initramfs's "
                     "KEYFILE_PATTERN ...; remove that package or setting from the build machine)" for rel in private_files(root)]
        kernel_loadable, kernel_builtin = _modules_in(modules_dir / kver)
        have, builtin = _modules_in(root / "usr/lib/modules" / kver)
        problems += missing_dependencies(root / "usr/lib/modules" / kver, modules_dir / kver)
        problems += missing_libraries(root)
        for m in modules:
            if _mod(m) not in kernel_loadable | kernel_builtin:
                problems.append(f"module {m} is unknown to kernel {kver} (check kernels.nic_modules in hosts/site.yaml)")
            elif _mod(m) not in have | builtin | kernel_builtin:
                problems.append(f"module {m} is missing")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return problems


def private_files(root: Path) -> list[str]:
    """The files under ``root`` (an unpacked base) that hold a private key: in PRIVATE_FOLDERS, or
    with a PRIVATE_MARKERS line; paths relative to ``root``, sorted.  Links are not followed."""
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if any(rel == f or rel.startswith(f + "/") for f in PRIVATE_FOLDERS):
                found.append(rel)
                continue
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size > PRIVATE_SCAN:
                    continue
                with open(path, "rb") as f:
                    data = f.read(PRIVATE_SCAN)
            except OSError:
                continue
            if any(m in data for m in PRIVATE_MARKERS):
                found.append(rel)
    return sorted(found)


def _mkinitramfs_tmp() -> str:
    path = os.path.join(tmp_dir(), "tools")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _tool_env() -> dict[str, str]:
    """The environment of mkinitramfs and unmkinitramfs: their temporary files go under build/
    (removed by the next run if this one is killed), not /var/tmp."""
    return {**os.environ, "TMPDIR": _mkinitramfs_tmp(), "SOURCE_DATE_EPOCH": source_date_epoch(), "LC_ALL": "C.UTF-8"}


def copy_kernel(src: Path, dst: Path) -> None:
    """Copy the kernel image (atomically, only when it changed)."""
    data = src.read_bytes()
    write_if_changed(dst, data, 0o644)


def build_bases(settings: dict[str, Any], kver: str, modules: dict[str, list[str]], methods: list[str],
                kept: OutputsKept) -> TaskFailed | dict[str, Any]:
    """doit action: the kernel's base for each map method in ``methods`` (build_base), then its
    vmlinuz; a base no host needs any more is removed from build/.  Records the digest of what
    it built (built.json) and, for doit, the stat keys of its targets: a base damaged afterwards
    is built again, never published."""
    for method in METHODS:
        if method not in methods:
            base_path(kver, method).unlink(missing_ok=True)
    for method in methods:
        failed = build_base(settings, kver, modules[method], method)
        if failed:
            return failed
    copy_kernel(Path(settings["kernels"]["boot_dir"]) / f"vmlinuz-{kver}", vmlinuz_path(kver))
    stamp = {p.name: file_sha256(p) for p in (vmlinuz_path(kver), *(base_path(kver, m) for m in methods))}
    write_if_changed(stamp_path(kver), json.dumps(stamp, sort_keys=True).encode(), 0o600)
    return {"outputs": kept.keys()}


def build_base(settings: dict[str, Any], kver: str, modules: list[str], method: str) -> TaskFailed | None:
    """mkinitramfs with the generated confdir, then verify; the base appears only if complete."""
    problem = check_kernel(settings, kver)
    if problem:
        return TaskFailed(f"cephboot: initrd: {problem}")
    missing = [str(p) for p in STATIC_FILES.values() if not p.is_file()]
    if missing:
        return TaskFailed(f"cephboot: initrd: static boot script(s) missing: {', '.join(missing)}")
    out = kernel_dir(kver)
    remove_stale_temps(out, locked=False)  # what a killed build left
    confdir = out / ("initramfs-tools" if method == "cli" else f"initramfs-tools-{method}")
    try:
        write_confdir(confdir, kver, modules, nic_modules(settings, modules, method), settings["kernels"]["compress"], method)
    except UnsafeValue as e:
        return unsafe("initrd", e, site_values(settings), f"templates/{CONF_TEMPLATE}")
    tmp = out / tmp_name(base_name(method))
    try:
        r = subprocess.run(["mkinitramfs", "-d", str(confdir), "-o", str(tmp), kver], capture_output=True, text=True, env=_tool_env())
        if r.returncode != 0:
            return TaskFailed(f"cephboot: initrd: mkinitramfs for {kver} failed ({r.returncode}) building its {method} base:\n{r.stdout}{r.stderr}")
        problems = verify_base(tmp, kver, modules, Path(settings["kernels"]["modules_dir"]), method)
        if problems:
            return TaskFailed(f"cephboot: initrd: the {method} base initrd for {kver} is incomplete:\n  " + "\n  ".join(problems))
        os.chmod(tmp, 0o644)  # no secrets in the base: it is published world-readable
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        replace_tmp(tmp, base_path(kver, method))
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(_mkinitramfs_tmp(), ignore_errors=True)
    return None


@lru_cache(maxsize=None)
def _code_digest() -> str:
    return code_digest(__name__, CONF_TEMPLATE)


@guarded
def task_initrd() -> Iterator[dict[str, Any]]:
    """Build the verified base initrds of each kernel version in use, one per map method its hosts use (mkinitramfs, no host data)."""
    site = inventory.load_for_tasks()
    k = site.settings["kernels"]
    yield {"basename": "initrd", "name": None,
           "doc": "Base initrds: one mkinitramfs per kernel version and map method in use, shared by every host on them."}
    bases = bases_in_use(site)
    for kver, fstypes in kernels_in_use(site).items():
        methods = bases[kver]
        modules = {m: module_list(site.settings, fstypes, m) for m in methods}
        deps = [str(p) for p in STATIC_FILES.values()]
        if kver in site.kernels:  # else the action explains what to install
            deps += [os.path.join(k["boot_dir"], f"vmlinuz-{kver}"), os.path.join(k["modules_dir"], kver, "modules.dep")]
        targets = [*(str(base_path(kver, m)) for m in methods), str(vmlinuz_path(kver))]
        kept = OutputsKept(targets, file_key)
        yield {
            "basename": "initrd",
            "name": kver,
            "doc": f"base initrd(s) ({', '.join(f'{m}: {len(modules[m])} modules' for m in methods)}) and vmlinuz of kernel {kver} ({k['compress']})",
            "actions": [(build_bases, [site.settings, kver, modules, methods, kept])],
            "file_dep": deps,
            "targets": targets,
            "uptodate": [config_changed(digest(repr(sorted(modules.items())), " ".join(methods), k["compress"], k["boot_dir"], k["modules_dir"], source_date_epoch(),
                                               _code_digest())), kept],
            "clean": True,
        }
