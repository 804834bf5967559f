"""Time cephboot with real doit processes on synthetic sites, against the per-host mkinitramfs it replaces.

    .venv/bin/python -m bench.run [--sizes 10,100,1000,10000] [--repeat 5]

writes BENCHMARKS.md, bench/scaling.png and bench/results.json.  See bench/README.md.
"""
from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from bench import generate  # noqa: E402
from bench.generate import EDITED_RACK, MONITORS, Shape  # noqa: E402
from tasks.inventory import installed_kernels  # noqa: E402
from tasks.stage import LINE as STAGE_LINE  # noqa: E402
from tasks.stage import ONLY as STAGE_ONLY  # noqa: E402

DODO = PROJECT / "dodo.py"  # main() points this at a frozen copy of the code
CODE = ("dodo.py", ".shellcheckrc", "tasks", "templates")
FLOOR_DODO = "floor_dodo.py"  # a dodo of trivial tasks, as many as the site's: doit's own cost of `doit list`
EDITED_HOST = 4  # static address, a UUID, two MACs, rack-04
# issue 5's targets (medians on a 2-core machine) and issue 15's absolute ones at 100,000 hosts
# (its relative ones, against a stat floor, are not measured here): scenario -> {hosts: limit};
# seconds, MB for memory (as the issues give them; bench.report compares peak RSS, in MiB, with them converted)
TARGETS: dict[str, dict[int, float]] = {
    "noop": {1000: 0.5, 10000: 2.0},
    "list": {1000: 0.3, 10000: 1.0},
    "host": {1000: 1.0, 10000: 3.0},
    "site": {1000: 10.0, 10000: 90.0, 100000: 600.0},
    "cold": {1000: 30.0, 10000: 300.0, 100000: 900.0},
    "rss": {1000: 150.0, 10000: 600.0, 100000: 2048.0},
}
SCENARIOS = {  # key -> label, in table order
    "cold": "cold build, base initrds present",
    "noop": "no-op `doit`",
    "list": "`doit list`",
    "host": "one host file edited",
    "profile": "one profile edited (1/10 of hosts)",
    "site": "monitor address edited, incl. publish",
}
# floors measured in the same run (issue 15's relative targets): not cephboot's work
FLOORS = {
    "statfloor": "stat every file under hosts/ and build/ (one fresh Python process)",
    "listfloor": "`doit list` of a dodo with as many trivial tasks",
}
# issue 15: one host edited costs at most this much more than a no-op (seconds)
HOST_OVER_NOOP = {1000: 0.05, 10000: 0.1, 100000: 0.3}
NOOP_OVER_STAT = 1.3  # no-op / stat floor, at 100,000 hosts
LIST_OVER_FLOOR = 1.5  # `doit list` / doit's floor, at every size


# --- one doit process -----------------------------------------------------------------

@dataclass
class Run:
    """One finished process: wall time, peak RSS, output."""

    seconds: float
    rss_kb: int
    returncode: int
    stdout: str
    stderr: str
    cpu: float = 0.0  # user + system seconds of the process and the children it waited for

    @property
    def ran(self) -> set[str]:
        return tasks_ran(self.stdout)


def tasks_ran(stdout: str) -> set[str]:
    """What a doit run did: the tasks it executed (its '.  task' lines; '-- task' means
    up to date) and, within a per-host stage such as render:hosts, each host the stage
    redid, as '<stage>:<host>' ('render:zephyr', 'lint:rendered:zephyr') from its
    '  - render:hosts --only zephyr' lines (see tasks/stage.py)."""
    out = set()
    for line in stdout.splitlines():
        if line.startswith(".  "):
            out.add(line[3:].strip())
        elif line.startswith(STAGE_LINE) and STAGE_ONLY in line:
            task, _, host = line[len(STAGE_LINE):].strip().partition(STAGE_ONLY.strip())
            task, host = task.strip(), host.strip()
            if task and host and " " not in task + host:
                out.add(f"{task[:-len(':hosts')] if task.endswith(':hosts') else task}:{host}")
    return out


def steps(ran: set[str]) -> set[str]:
    """The work a run did: each host a stage redid ('render:h00007') and each other task
    that ran ('lint:rendered', 'publish:site'), without the stage tasks themselves
    ('render:hosts'), whose work is the per-host steps they list."""
    return {t for t in ran if not t.endswith(":hosts")}


def run_process(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``cmd`` to the end, all output captured to files (no pipe to break), timed and with its max RSS.

    os.wait4 returns the rusage of this child alone; Linux reports as ru_maxrss the
    largest RSS of the child or of any process it waited for (mkinitramfs,
    shellcheck, cpio), never a sum.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(seconds, usage.ru_maxrss, p.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                   usage.ru_utime + usage.ru_stime)


def doit(site: Path, *args: str, profile: Path | None = None) -> Run:
    """A real `doit` process on ``site`` (the way a user runs one outside the repository)."""
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    r = run_process([sys.executable, *prof, "-m", "doit", "-f", str(DODO), "-d", str(site), *args])
    if r.returncode != 0:
        raise RuntimeError(f"doit {' '.join(args)} on {site} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


# --- what a run wrote to the publish tree ------------------------------------------------

def tree_state(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """path -> (device, inode, size, mtime_ns) of every file under ``root``."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            out[p] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def bytes_written(before: dict[str, tuple[int, int, int, int]], after: dict[str, tuple[int, int, int, int]]) -> tuple[int, int]:
    """(bytes, files) written between two states: files whose inode is new, or whose inode changed size/mtime.

    Publish replaces a file by writing a new inode and renaming it; it keeps the
    previous generation by hard-linking the old inode, which writes no data, so a
    file counts by its inode, not its path.
    """
    old = {(d, i): (s, m) for d, i, s, m in before.values()}
    seen: set[tuple[int, int]] = set()
    total = files = 0
    for d, i, s, m in after.values():
        if (d, i) in seen:
            continue
        seen.add((d, i))
        if old.get((d, i)) != (s, m):
            total += s
            files += 1
    return total, files


# --- a site under test ---------------------------------------------------------------

@dataclass
class Site:
    """A generated site of ``n`` hosts under ``root`` (hosts/ + build/)."""

    root: Path
    shapes: list[Shape]
    kernels: tuple[str, str]

    @property
    def n(self) -> int:
        return len(self.shapes)

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def publish(self) -> Path:
        return self.build / "publish"

    def reset_to(self, template: Path) -> None:
        """Nothing built but the base initrds: build/ holds only the template's kernels and their doit records."""
        if self.build.exists():
            shutil.rmtree(self.build)
        shutil.copytree(template / "kernels", self.build / "kernels", copy_function=os.link)
        shutil.copy2(template / "doit.sqlite3", self.build / "doit.sqlite3")

    def replace(self, rel: str, pattern: str, new: str) -> None:
        """Rewrite the one match of ``pattern`` in hosts/<rel>."""
        p = self.hosts / rel
        text, count = re.subn(pattern, new, p.read_text(), count=1, flags=re.M)
        assert count == 1, f"{pattern!r} not found in {p}"
        p.write_text(text)


def make_site(root: Path, n: int, kernels: tuple[str, str]) -> Site:
    shapes = generate.generate(root, n, kernels)
    return Site(root, shapes, kernels)


def host_of(task: str) -> str | None:
    name = task.split(":", 1)[1] if ":" in task else ""
    return name if re.fullmatch(r"h\d{5,}", name) else None


# --- scenarios -------------------------------------------------------------------------

@dataclass
class Scenario:
    """How to prepare one repetition, which doit command to time, and what must (not) have run."""

    key: str
    prepare: Callable[[int], None]
    args: tuple[str, ...]
    check: Callable[[Run], list[str]]
    count_bytes: bool = False


@dataclass
class Measured:
    runs: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds: on a shared machine, less moved by others' load than wall time
    rss_kb: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    files: list[int] = field(default_factory=list)
    tasks_ran: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def scenarios(site: Site, template: Path) -> list[Scenario]:
    edited = Shape(EDITED_HOST).name
    rack = f"rack-{EDITED_RACK:02d}"
    rack_hosts = generate.hosts_with_profile(site.shapes, rack)
    every = {s.name for s in site.shapes}

    def nothing(_: int) -> None:
        pass

    def settle(rep: int) -> None:
        # the no-op after a no-op: the cold build did site-wide work, whose writes leave no
        # manifest (tasks/quiet.py), so the first plain `doit` after it loads every host and writes it
        if rep == 0:
            doit(site.root)

    def no_task_ran(r: Run) -> list[str]:
        return [f"tasks ran: {sorted(r.ran)[:5]}"] if r.ran else []  # not even a stage task

    def cold(_: int) -> None:
        site.reset_to(template)

    def cold_check(r: Run) -> list[str]:
        built = {host_of(t) for t in r.ran if t.startswith("publish:")} - {None}
        problems = [f"publish ran for {len(built)} of {site.n} hosts"] if built != every else []
        return problems + [f"rebuilt a base initrd: {t}" for t in r.ran if t.startswith("initrd:")]

    def edit_host(rep: int) -> None:  # a new static address for the Ceph NIC: reaches conf.d, so the whole chain
        site.replace(f"nodes/{edited}.yaml", r"^    address: .*$", f"    address: 198.19.250.{rep % 250 + 1}/15")

    def host_check(r: Run) -> list[str]:
        others = sorted(t for t in steps(r.ran) if host_of(t) != edited and t != "lint:rendered")
        missing = [t for t in (f"render:{edited}", f"overlay:{edited}", f"publish:{edited}") if t not in r.ran]
        return ([f"tasks of other hosts or site-wide tasks ran: {others[:8]}"] if others else []) + ([f"did not run: {missing}"] if missing else [])

    def edit_profile(rep: int) -> None:
        site.replace(f"profiles/{rack}.yaml", r"^  deadline: \d+$", f"  deadline: {300 + rep}")

    def profile_check(r: Run) -> list[str]:
        hosts = {host_of(t) for t in r.ran} - {None}
        extra = [t for t in steps(r.ran) if host_of(t) is None and t != "lint:rendered"]
        problems = [] if hosts == rack_hosts else [f"ran for hosts {sorted(hosts ^ rack_hosts)[:8]} (symmetric difference with {rack}'s)"]
        return problems + ([f"site-wide tasks ran: {extra}"] if extra else [])

    def edit_site(rep: int) -> None:
        site.replace("site.yaml", r"^  mon_host: .*$", f"  mon_host: [{MONITORS[0]}, {MONITORS[1]}, 198.19.254.{rep % 250 + 1}]")

    def site_check(r: Run) -> list[str]:
        published = {host_of(t) for t in r.ran if t.startswith("publish:")} - {None}
        problems = [f"rebuilt a base initrd: {t}" for t in r.ran if t.startswith("initrd:")]
        return problems + ([f"published {len(published)} of {site.n} hosts"] if published != every else [])

    return [
        Scenario("cold", cold, (), cold_check),
        Scenario("noop", settle, (), no_task_ran),
        Scenario("list", nothing, ("list",), lambda r: [] if r.stdout.count("\n") >= 6 else ["doit list printed too little"]),
        Scenario("host", edit_host, (), host_check, count_bytes=True),
        Scenario("profile", edit_profile, (), profile_check, count_bytes=True),
        Scenario("site", edit_site, (), site_check, count_bytes=True),
    ]


STAT_FLOOR = """import os, sys
for p in open(sys.argv[1]).read().split("\\0"):
    if p:
        os.stat(p)
"""


def floor_scenarios(site: Site, workdir: Path) -> list[Scenario]:
    """The floors of issue 15, at this size: a fresh Python process that stats every file under
    hosts/ and build/ (what a no-op must at least look at), and `doit list` of a dodo with as
    many trivial tasks as the site has (`doit list --all`)."""
    files = workdir / f"files-{site.n}"
    floor = workdir / f"floor-{site.n}"

    def prepare_stat(_: int) -> None:
        if not files.exists():
            paths = [os.path.join(d, n) for top in (site.hosts, site.build) for d, _, names in os.walk(top) for n in names]
            files.write_text("\0".join(paths))

    def prepare_list(_: int) -> None:
        if floor.exists():
            return
        count = len(doit(site.root, "list", "--all", "-q").stdout.splitlines())
        floor.mkdir()
        tasks = "".join(f"def task_t{i:05d}():\n    \"\"\"A trivial task.\"\"\"\n    return {{'actions': None}}\n\n\n" for i in range(count))
        (floor / FLOOR_DODO).write_text(f'DOIT_CONFIG = {{"backend": "sqlite3", "dep_file": "doit.sqlite3", "verbosity": 1}}\n\n\n{tasks}')

    def stat_run(_: Run) -> list[str]:
        return []

    stat_sc = Scenario("statfloor", prepare_stat, (), stat_run)
    stat_sc.command = [sys.executable, "-c", STAT_FLOOR, str(files)]  # type: ignore[attr-defined]
    list_sc = Scenario("listfloor", prepare_list, ("list",), stat_run)
    list_sc.command = [sys.executable, "-m", "doit", "-f", str(floor / FLOOR_DODO), "-d", str(floor), "list"]  # type: ignore[attr-defined]
    return [stat_sc, list_sc]


def measure(site: Site, sc: Scenario, repeat: int, log: Callable[[str], None]) -> Measured:
    m = Measured()
    for rep in range(repeat):
        sc.prepare(rep)
        before = tree_state(site.publish) if sc.count_bytes else {}
        command = getattr(sc, "command", None)
        r = run_process(command) if command else doit(site.root, *sc.args)
        if r.returncode != 0:
            raise RuntimeError(f"{sc.key} at {site.n} hosts failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        m.runs.append(r.seconds)
        m.cpu.append(r.cpu)
        m.rss_kb.append(r.rss_kb)
        m.tasks_ran.append(len(steps(r.ran)))
        if sc.count_bytes:
            b, f = bytes_written(before, tree_state(site.publish))
            m.bytes.append(b)
            m.files.append(f)
        for p in sc.check(r):
            if p not in m.problems:
                m.problems.append(p)
        log(f"  {site.n:>6} {sc.key:<8} run {rep + 1}/{repeat}: {r.seconds:8.3f} s ({r.cpu:.3f} s CPU), {r.rss_kb / 1024:6.1f} MiB, {len(steps(r.ran))} steps ran")
    return m


def profile_scenario(site: Site, sc: Scenario, rep: int, workdir: Path, top: int = 18) -> str:
    """One more repetition under cProfile; the top entries by own time and by cumulative time."""
    import pstats
    from io import StringIO

    sc.prepare(rep)
    out = workdir / f"profile-{sc.key}-{site.n}.pstats"
    r = doit(site.root, *sc.args, profile=out)
    text = StringIO()
    for order, lines in (("tottime", top), ("cumulative", 2 * top)):  # the first dozen cumulative lines are doit's own frames
        stats = pstats.Stats(str(out), stream=text)
        stats.strip_dirs().sort_stats(order).print_stats(lines)
    body = "\n".join(line for line in text.getvalue().splitlines() if line.strip() and not line.startswith(("   Random listing", str(out))))
    return f"wall time under the profiler: {r.seconds:.2f} s (subprocesses such as shellcheck and cpio are not profiled)\n{body}"


def monolithic_memory(workdir: Path, template: Path, kernels: tuple[str, str], counts: list[int], repeat: int,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """Peak RSS of the `doit` that packs and publishes the layers, with 0 (the floor, in the same
    run), 1, ... of ``max(counts)`` hosts monolithic: each is a full copy of its base initrd, so
    the memory must not grow with their number."""
    n = max(max(counts), 10)  # from 10 hosts on, the site uses every base the template has
    site = make_site(workdir / "monolithic-site", n, kernels)
    out: dict[str, Any] = {"hosts": n, "base_bytes": max((template / "kernels" / k / "initrd.img").stat().st_size for k in set(kernels)),
                           "rss_kb": {}}
    for count in sorted(set(counts)):
        generate.set_monolithic(site.root, site.shapes, count)
        rss = []
        for rep in range(repeat):
            site.reset_to(template)
            doit(site.root, "lint")  # render and shellcheck first: the measured run only packs and publishes
            r = doit(site.root)
            made = sum(1 for s in site.shapes if (site.publish / "hosts" / s.name / "initrd.img").is_file())
            if made != count:
                raise RuntimeError(f"{count} monolithic hosts asked for, {made} published")
            rss.append(r.rss_kb)
            log(f"  monolithic {count:>3} of {n}: run {rep + 1}/{repeat}: {r.rss_kb / 1024:6.1f} MiB, {r.seconds:.2f} s")
        out["rss_kb"][str(count)] = rss
    shutil.rmtree(site.root)
    return out


# --- the base initrds, and the hand-made method's per-host mkinitramfs -------------------

def base_template(workdir: Path, kernels: tuple[str, str], fake: bool, log: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """Build the base initrds once (timed) in a small site; keep build/kernels + doit's records as a template.

    With ``fake``, stand-in files take the initrds' place and are recorded as
    built (bench/stand_in.py; for the quick CI check, no mkinitramfs runs).
    """
    site = make_site(workdir / "initrd-site", 10, kernels)
    info: dict[str, Any] = {"kernels": sorted(set(kernels)), "fake": fake}
    if fake:
        r = run_process([sys.executable, "-m", "bench.stand_in", str(site.root), str(DODO)], cwd=PROJECT)
        if r.returncode != 0:
            raise RuntimeError(f"bench.stand_in failed:\n{r.stdout}{r.stderr}")
    else:
        r = doit(site.root, "initrd")
        info.update(seconds=r.seconds, rss_kb=r.rss_kb, sizes={f"{k}/{p.name}": p.stat().st_size for k in set(kernels)
                                                          for p in sorted((site.build / "kernels" / k).glob("initrd*.img"))})
        log(f"  base initrds ({', '.join(info['kernels'])}): {r.seconds:.1f} s")
    template = workdir / "template"
    template.mkdir()
    shutil.copytree(site.build / "kernels", template / "kernels")
    shutil.copy2(site.build / "doit.sqlite3", template / "doit.sqlite3")
    return template, info


HOOK = """#!/bin/sh
# bench: the hand-made method's host data, baked into a full initrd
[ "${1:-}" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
"""


def host_views(site: Site) -> dict[str, Any]:
    """Each generated host's typed view (tasks/model.py), as the site's inventory has it: what the artifact table asks of it."""
    from tasks import inventory

    return {name: host.cfg for name, host in inventory.load(site.root).hosts.items()}


def baseline(site: Site, log: Callable[[str], None]) -> dict[str, Any]:
    """One full mkinitramfs per host, host data inside, from the same confdir the base initrd uses."""
    from tasks import artifacts
    from tasks.initrd import source_date_epoch

    times: list[float] = []
    rss: list[int] = []
    views = host_views(site)
    with tempfile.TemporaryDirectory(prefix="baseline-", dir=site.root) as tmp:
        for s in site.shapes:
            kver = site.kernels[1] if s.old_kernel else site.kernels[0]
            confdir = Path(tmp) / s.name
            shutil.copytree(site.build / "kernels" / kver / "initramfs-tools", confdir)
            built = (site.build / "hosts" / s.name).resolve()
            hook = HOOK
            # the files a host layer carries (the bench's sites keep keys in the clear), baked in instead
            for inside, (rel, _) in artifacts.layer_members(views[s.name]).items():
                if inside.startswith("conf/"):  # not named cephboot: keep the hook in base mode
                    shutil.copy2(built / rel, confdir / "conf.d" / "cephboot-host")
                else:
                    hook += f"copy_file file {built / rel} /{inside}\n"
            (confdir / "hooks" / "zz-bench-host").write_text(hook + "exit 0\n")
            os.chmod(confdir / "hooks" / "zz-bench-host", 0o755)
            env = {**os.environ, "SOURCE_DATE_EPOCH": source_date_epoch(), "LC_ALL": "C.UTF-8"}
            r = run_process(["mkinitramfs", "-d", str(confdir), "-o", str(confdir / "initrd.img"), kver], env=env)
            if r.returncode != 0:
                raise RuntimeError(f"baseline mkinitramfs for {s.name} failed:\n{r.stdout}\n{r.stderr}")
            times.append(r.seconds)
            rss.append(r.rss_kb)
            log(f"  baseline mkinitramfs {s.name} ({kver}): {r.seconds:.1f} s")
    return {"hosts": site.n, "runs": times, "rss_kb": rss}


# --- shellcheck: batched against one process per file --------------------------------

def shellcheck_compare(files: list[str], repeat: int, log: Callable[[str], None]) -> dict[str, Any]:
    from tasks import lint

    exe = lint.shellcheck_binary()
    rc = [f"--rcfile={lint.RCFILE}"] if lint.RCFILE.exists() else []

    def one(f: str) -> int:
        return subprocess.run([exe, *rc, "--shell=sh", "--severity=style", "--format=gcc", f], capture_output=True).returncode

    out: dict[str, Any] = {"files": len(files), "batch": lint.BATCH, "workers": os.cpu_count(), "batched": [], "per_file": [], "per_file_parallel": []}
    for _ in range(repeat):
        t = time.perf_counter()
        assert lint.shellcheck(files), "shellcheck found problems in rendered files"
        out["batched"].append(time.perf_counter() - t)
    t = time.perf_counter()
    assert not any(one(f) for f in files)
    out["per_file"].append(time.perf_counter() - t)
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        assert not any(pool.map(one, files))
    out["per_file_parallel"].append(time.perf_counter() - t)
    log(f"  shellcheck {len(files)} files: batched {statistics.median(out['batched']):.2f} s, one process per file {out['per_file'][0]:.2f} s sequential, {out['per_file_parallel'][0]:.2f} s parallel")
    return out


# --- the whole run ---------------------------------------------------------------------

def freeze_code(workdir: Path, source: Path = PROJECT, name: str = "code") -> Path:
    """Copy the code doit runs (dodo.py, tasks/, templates/) of the checkout ``source`` to ``workdir``/``name``, so
    that edits made during a long run do not mix versions; the copy's dodo.py."""
    dst = workdir / name
    for name in CODE:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    # Python keeps compiled bytecode next to the code after the first run; where the
    # environment says not to write it (PYTHONDONTWRITEBYTECODE, set on the reference
    # machine), every doit process would compile the modules again (~0.1 s): write it once.
    compileall.compile_dir(str(dst), quiet=1)
    return dst / "dodo.py"


def kernels_to_use() -> tuple[tuple[str, str], str]:
    """(newest, previous) installed kernel, and a note when only one is installed."""
    found = installed_kernels(Path("/boot"), Path("/lib/modules"))
    if not found:
        raise SystemExit("bench: no kernel installed: apt-get install linux-image-amd64")
    if len(found) == 1:
        return (found[0], found[0]), f"only {found[0]} is installed: every host uses it (see bench/README.md to add a second)"
    return (found[-1], found[-2]), ""


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    commit = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(PROJECT), "status", "--porcelain", "tasks", "templates", "dodo.py"], capture_output=True, text=True).stdout.strip()
    import doit

    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(mem / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "doit": ".".join(map(str, doit.__version__)),
        "commit": commit + (" (with uncommitted changes to tasks/templates)" if dirty else ""),
        "load": [round(os.getloadavg()[0], 2)],  # other work on a shared machine; the end's value is added after the run
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def repeat_per_key(spec: str) -> dict[str, int]:
    """``host=3,noop=2`` -> {"host": 3, "noop": 2}."""
    out: dict[str, int] = {}
    for part in filter(None, (x.strip() for x in spec.split(","))):
        key, sep, count = part.partition("=")
        if not sep or key not in SCENARIOS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"expected KEY=N with KEY one of {', '.join(SCENARIOS)} and N at least 1, got {part!r}")
        out[key] = int(count)
    return out


def repeat_per_key_arg(spec: str) -> str:
    try:
        repeat_per_key(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec


def measure_sizes(results: dict[str, Any], sizes: list[int], a: argparse.Namespace, workdir: Path, template: Path,
                  kernels: tuple[str, str], log: Callable[[str], None]) -> dict[int, Site]:
    """Every scenario at every size, and a profile of each target missed; returns the sites kept for later steps."""
    sites: dict[int, Site] = {}
    for n in sizes:
        t = time.perf_counter()
        site = sites[n] = make_site(workdir / f"site-{n}", n, kernels)
        results["generate_seconds"][str(n)] = time.perf_counter() - t
        log(f"generated {n} hosts in {results['generate_seconds'][str(n)]:.1f} s")
        per: dict[str, Any] = {}
        repeat = a.repeat_large if a.repeat_large and n >= 10000 else a.repeat
        skip = set(a.skip_large.split(",")) if n >= 100000 and a.skip_large else set()
        per_key = repeat_per_key(a.repeat_scenario)
        for sc in scenarios(site, template):
            if sc.key in skip:
                log(f"  {n:>6} {sc.key:<8} not run (--skip-large)")
                continue
            per[sc.key] = measure(site, sc, per_key.get(sc.key, repeat) if n >= 10000 else repeat, log).as_dict()
            if sc.key == "noop":  # right after a build, as the no-op: the floors of the same files
                for floor in floor_scenarios(site, workdir):
                    per[floor.key] = measure(site, floor, repeat, log).as_dict()
        results["results"][str(n)] = per
        if not a.no_profile and n in TARGETS["noop"]:
            for sc in scenarios(site, template):
                limit = TARGETS.get(sc.key, {}).get(n)
                if sc.key not in per:
                    continue
                took = statistics.median(per[sc.key]["runs"])
                if limit is not None and took > limit and (a.profile_limit is None or took < a.profile_limit):
                    log(f"  profiling {sc.key} at {n} hosts (missed {limit} s)")
                    results["profiles"][f"{sc.key}@{n}"] = profile_scenario(site, sc, repeat, workdir)
        if n != 10 and n != max(sizes) and not (a.shellcheck_files and n >= a.shellcheck_files):
            shutil.rmtree(site.root)  # keep the disk use of a full run bounded
            del sites[n]
    return sites


_LOG_RUN = re.compile(r"^\[ *[\d.]+ s\] +(\d+) (\w+) +run \d+/\d+: +([\d.]+) s \(([\d.]+) s CPU\), +([\d.]+) Mi?B, (\d+) steps ran$", re.M)


def results_from_log(log: str, machine_of: dict[str, Any], date: str, commit: str, note: str) -> dict[str, Any]:
    """The results of a run that stopped before writing its JSON, from the lines its log printed
    for each finished repetition (wall, CPU, peak RSS, steps ran; not the bytes written, nor the
    checks, which it logs only at the end): nothing is estimated, a scenario not logged is absent.
    ``machine_of``: a results file of the same machine, for its description; ``date`` and ``commit``: the run's (not in its log)."""
    per: dict[str, dict[str, Any]] = {}
    for n, key, wall, cpu, mb, ran in _LOG_RUN.findall(log):
        m = per.setdefault(n, {}).setdefault(key, Measured().as_dict())
        m["runs"].append(float(wall))
        m["cpu"].append(float(cpu))
        m["rss_kb"].append(int(float(mb) * 1024))
        m["tasks_ran"].append(int(ran))
    gen = {n: float(s) for n, s in re.findall(r"generated (\d+) hosts in ([\d.]+) s", log)}
    return {**{k: machine_of[k] for k in ("targets", "scenarios", "floors", "host_over_noop", "noop_over_stat", "list_over_floor")},
            "machine": {**machine_of["machine"], "date": date, "commit": commit, "load": []},
            "sizes": sorted(int(n) for n in per), "repeat": 1, "results": per, "profiles": {},
            "generate_seconds": {n: gen.get(n, 0.0) for n in per}, "initrd": {"fake": True},
            "total_seconds": max(float(s) for s in re.findall(r"^\[ *([\d.]+) s\]", log, re.M)), "partial": note}


def _merged_entries(results: dict[str, Any]) -> list[dict[str, Any]]:
    before = results.get("merged") or []
    return [before] if isinstance(before, dict) else list(before)


EXTRAS = ("baseline", "shellcheck", "monolithic")  # what a run measures besides its sizes


def merge_earlier(results: dict[str, Any], earlier: dict[str, Any], replace: bool = False) -> None:
    """Fill in what this run did not measure from another run's results (an earlier one, or a separate run of a larger
    size), and say from which run each part is: a part ``earlier`` had itself taken from a third run keeps that run's
    date, commit and note. ``replace``: ``earlier``'s sizes (and extras) also replace those ``results`` has, e.g. a
    newer 100,000-host run added to results.json by ``bench.report --merge``; the older run is then no longer named for them."""
    sizes = [n for n in earlier["results"] if replace or n not in results["results"]]
    extras = [k for k in EXTRAS if earlier.get(k) and (replace or not results.get(k))]
    for n in sizes:
        results["results"][n] = earlier["results"][n]
        results["generate_seconds"][n] = earlier["generate_seconds"][n]
        results["profiles"] = {k: v for k, v in results["profiles"].items() if not k.endswith(f"@{n}")}
        results["profiles"].update({k: v for k, v in earlier["profiles"].items() if k.endswith(f"@{n}")})
    for k in EXTRAS:
        results[k] = earlier[k] if k in extras else results.get(k)
    if results["initrd"].get("fake") or "seconds" not in results["initrd"]:
        results["initrd"] = earlier["initrd"]
    results["results"] = dict(sorted(results["results"].items(), key=lambda kv: int(kv[0])))
    results["sizes"] = [int(n) for n in results["results"]]

    parts = [f"{int(n):,} hosts" for n in sizes] + extras
    inherited = {x for g in _merged_entries(earlier) for x in g["parts"]}
    entries = [{**g, "parts": [x for x in g["parts"] if x not in parts]} for g in _merged_entries(results)]  # parts replaced now
    own = {"date": earlier["machine"]["date"], "commit": earlier["machine"]["commit"], "parts": [],
           "total_seconds": earlier["total_seconds"], "load": earlier["machine"].get("load", []),
           "note": "; ".join(x for x in ("stand-in base initrds" if earlier.get("initrd", {}).get("fake") and set(parts[:len(sizes)]) - inherited else "",
                                         earlier.get("partial", "")) if x)}
    for part in parts:
        source = next((g for g in _merged_entries(earlier) if part in g["parts"]), own)
        entry = next((e for e in entries if (e["date"], e["commit"]) == (source["date"], source["commit"])), None)
        if entry is None:
            entry = {**source, "parts": []}
            entries.append(entry)
        entry["parts"].append(part)
    results["merged"] = [e for e in entries if e["parts"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,1000,10000", help="host counts, comma-separated (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per scenario and size; the median is reported (default: %(default)s)")
    ap.add_argument("--repeat-large", type=int, help="runs per scenario at 10,000 hosts and more (default: --repeat)")
    ap.add_argument("--repeat-scenario", default="", type=repeat_per_key_arg,
                    help="runs of some scenarios at 10,000 hosts and more, overriding --repeat-large: KEY=N,... (e.g. host=3)")
    ap.add_argument("--skip-large", default="", help="scenarios not run at 100,000 hosts and more, comma-separated (e.g. site,profile)")
    ap.add_argument("--merge", type=Path, help="an earlier results.json: take from it the sizes (and baseline, shellcheck) not measured now")
    ap.add_argument("--workdir", type=Path, help="where the sites go (default: a new temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--fake-initrd", action="store_true", help="no mkinitramfs: stand-in base initrds, no baseline (quick check)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the per-host mkinitramfs baseline at 10 hosts")
    ap.add_argument("--shellcheck-files", type=int, default=1000, help="files for shellcheck batched vs per file (0: skip; default: %(default)s)")
    ap.add_argument("--no-profile", action="store_true", help="do not profile the scenarios that miss a target")
    ap.add_argument("--profile-limit", type=float, help="profile only missed scenarios whose median is below this many seconds")
    ap.add_argument("--monolithic", default="0,1,10,40",
                    help="monolithic host counts for the memory scenario, 0 being its floor ('' skips; default: %(default)s)")
    ap.add_argument("--out", type=Path, default=PROJECT / "BENCHMARKS.md", help="report (default: BENCHMARKS.md)")
    ap.add_argument("--chart", type=Path, default=PROJECT / "bench" / "scaling.png", help="log-log chart (default: bench/scaling.png)")
    ap.add_argument("--json", type=Path, default=PROJECT / "bench" / "results.json", help="raw results (default: bench/results.json)")
    a = ap.parse_args(argv)
    sizes = sorted({int(x) for x in a.sizes.split(",") if x.strip()})
    if a.repeat < 1 or not sizes or min(sizes) < 10:
        ap.error("--repeat must be at least 1 and every size at least 10")

    started = time.perf_counter()
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="cephboot-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True)

    global DODO
    DODO = freeze_code(workdir)
    kernels, kernel_note = kernels_to_use()
    results: dict[str, Any] = {"machine": machine(), "sizes": sizes, "repeat": a.repeat, "kernels": list(kernels), "kernel_note": kernel_note,
                               "targets": {k: {str(n): v for n, v in t.items()} for k, t in TARGETS.items()}, "scenarios": SCENARIOS,
                               "results": {}, "generate_seconds": {}, "profiles": {},
                               "floors": FLOORS, "host_over_noop": {str(n): v for n, v in HOST_OVER_NOOP.items()},
                               "noop_over_stat": NOOP_OVER_STAT, "list_over_floor": LIST_OVER_FLOOR}
    log(f"work folder {workdir} (code frozen in {DODO.parent}); kernels {kernels[0]} and {kernels[1]}")
    try:
        template, results["initrd"] = base_template(workdir, kernels, a.fake_initrd, log)
        sites = measure_sizes(results, sizes, a, workdir, template, kernels, log)
        if not a.fake_initrd and not a.no_baseline:
            small = sites.get(10) or make_site(workdir / "baseline-site", 10, kernels)
            if not small.publish.exists():
                small.reset_to(template)
                doit(small.root)
            log("baseline: one mkinitramfs per host at 10 hosts")
            results["baseline"] = baseline(small, log)
        counts = [int(x) for x in a.monolithic.split(",") if x.strip()]
        if counts:
            log(f"memory: {', '.join(map(str, counts))} monolithic hosts")
            results["monolithic"] = monolithic_memory(workdir, template, kernels, counts, a.repeat, log)
        if a.shellcheck_files:
            big = next((s for n, s in sorted(sites.items()) if n >= a.shellcheck_files), None)
            if big is None:
                big = make_site(workdir / "shellcheck-site", a.shellcheck_files, kernels)
                doit(big.root, "render")
            from tasks.lint import rendered_shell

            views = host_views(big)
            files = [str(big.root / f) for s in big.shapes[: a.shellcheck_files] for f in rendered_shell(s.name, views[s.name])]
            results["shellcheck"] = shellcheck_compare(files, a.repeat, log)
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - started
    results["machine"]["load"] = [results["machine"]["load"][0], round(os.getloadavg()[0], 2)]
    if a.merge:
        merge_earlier(results, json.loads(a.merge.read_text()))

    from bench import report

    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(results, indent=1) + "\n")
    chart = report.chart(results, a.chart)
    a.out.write_text(report.with_kept_sections(report.markdown(results, chart_path=chart, relative_to=a.out.parent)))
    failed = report.failures(results)
    log(f"wrote {a.out}, {a.json}" + (f", {chart}" if chart else " (no chart: install the bench extra for matplotlib)"))
    for f in failed:
        log(f"MISSED: {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
