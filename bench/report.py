"""Turn bench/results.json into BENCHMARKS.md and the log-log chart.

    .venv/bin/python -m bench.report [bench/results.json]   # redo both without rerunning
"""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
# what the end-to-end suite measured of real boots, by map method (tests/e2e/test_boot_scenarios.py,
# boot_costs(); run with CEPHBOOT_BOOT_RESULTS=bench/boots.json)
BOOTS = PROJECT / "bench" / "boots.json"
# boot_path() of the e2e tests, per "<firmware>, <host>" (run with CEPHBOOT_BOOT_PATHS=bench/boot-paths.json)
BOOT_PATHS = PROJECT / "bench" / "boot-paths.json"
BOOT_PATHS_TITLE = "## Boot-path timings per firmware (issue 12)"
ROWS = ["noop", "list", "host", "site", "cold", "rss"]  # the target table, in its order
TARGET_LABELS = {
    "noop": "no-op `doit`",
    "list": "`doit list`",
    "host": "one host edited (only its steps run)",
    "site": "site-wide edit incl. publish (no base initrd rebuilt)",
    "cold": "cold build, without base initrds",
    "rss": "peak memory (max RSS)",
}


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def cpu_runs(m: dict[str, Any]) -> list[float]:
    """CPU seconds of each run (user + system of doit and of the children it waited for); wall
    seconds for results of runs that did not record them."""
    return m.get("cpu") or m["runs"]


def cpu(m: dict[str, Any]) -> float:
    return med(cpu_runs(m))


def both(m: dict[str, Any]) -> str:
    """CPU seconds, wall seconds in brackets (medians)."""
    return f"{secs(cpu(m))} s [{secs(med(m['runs']))} s]"


def secs(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def spread(xs: list[float], unit: str = "s", repeat: int = 0) -> str:
    """median (min–max) with a unit; the number of runs when it is not the usual ``repeat``."""
    runs = f", {len(xs)} run{'s' if len(xs) > 1 else ''}" if repeat and len(xs) != repeat else ""
    if len(xs) == 1:
        return f"{secs(xs[0])} {unit}" + (f" ({runs[2:]})" if runs else "")
    return f"{secs(med(xs))} {unit} ({secs(min(xs))}–{secs(max(xs))}{runs})"


def size_bytes(b: float) -> str:
    """``b`` bytes in binary units (KiB, MiB, GiB: every size here is divided by 1024)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if b < 1024 or unit == "GB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return ""


MIB_PER_MB = 1e6 / (1 << 20)  # the issues' memory targets are in MB; peak RSS is measured in MiB (ru_maxrss is in KiB)


def peak_mb(per: dict[str, Any]) -> float:
    """The largest max-RSS of any run at one size, in MiB."""
    return max(max(m["rss_kb"]) for m in per.values()) / 1024


def value(results: dict[str, Any], key: str, n: int) -> float | None:
    """The figure a target is judged on: peak RSS in MiB, or the median CPU seconds of the scenario."""
    per = results["results"].get(str(n))
    if per is None or key != "rss" and key not in per:
        return None
    return peak_mb(per) if key == "rss" else cpu(per[key])


def verdict(results: dict[str, Any], key: str, n: int) -> tuple[str, bool | None]:
    """(cell text, passed) for one target; passed is None when that size was not run.  A time is
    judged in CPU seconds (what the code took of the machine); the wall time, in brackets, says
    whether a user waiting on this loaded machine saw it met too."""
    limit = results["targets"][key].get(str(n))
    v = value(results, key, n)
    if v is None or limit is None:
        return "not run", None
    problems = results["results"][str(n)].get(key, {}).get("problems", []) if key != "rss" else []
    ok = v <= (limit * MIB_PER_MB if key == "rss" else limit) and not problems
    if key == "rss":
        shown = f"{v:.0f} MiB"
    else:
        wall = med(results["results"][str(n)][key]["runs"])
        shown = f"{secs(v)} s [{secs(wall)} s wall{'' if wall <= limit else ', over'}]"
    return f"{shown} {'✅ pass' if ok else '❌ miss'}{' (' + '; '.join(problems) + ')' if problems else ''}", ok


def failures(results: dict[str, Any]) -> list[str]:
    out = []
    for key in ROWS:
        for n in results["targets"][key]:
            text, ok = verdict(results, key, int(n))
            if ok is False:
                out.append(f"{TARGET_LABELS[key]} at {int(n):,} hosts: {text}")
    for n in results["results"]:
        for key, (figure, limit, ok) in relative_verdicts(results, int(n)).items():
            if ok is False:
                shown = f"{1000 * figure:+.0f} ms (≤ +{1000 * limit:.0f} ms)" if key == "host" else f"{figure:.2f}× (≤ {limit:g}×)"
                out.append(f"{RELATIVE_LABELS[key]} at {int(n):,} hosts: {shown} ❌ miss")
    for n, per in results["results"].items():
        for key, m in per.items():
            if m["problems"] and key not in results["targets"]:
                out.append(f"{key} at {int(n):,} hosts: {'; '.join(m['problems'])}")
    return out


_NOISE = re.compile(r"^(\w{3} \w{3} +\d+ [\d:]+ \d{4}\s|\s*List reduced from|\s*\d+ function calls)")


def tidy_profile(text: str) -> str:
    """pstats output without its repeated date, file name and call-count lines."""
    lines = text.splitlines()
    calls = next((line.strip() for line in lines if "function calls" in line), "")
    kept = [line for line in lines if not _NOISE.match(line)]
    return "\n".join(kept[:1] + ([calls] if calls else []) + kept[1:])


def boots_section(boots: dict[str, Any]) -> list[str]:
    """Bytes and time per boot, by map method, as the end-to-end suite recorded them."""
    out = ["", BOOTS_TITLE, ""]
    if not boots:
        return out + ["Not recorded: run `CEPHBOOT_BOOT_RESULTS=bench/boots.json .venv/bin/python -m pytest tests/e2e/test_boot_scenarios.py "
                      "-k 'sysfs_method or by_mac_through'`, then `.venv/bin/python -m bench.report --boots`."]
    out += ["What one boot fetches over HTTP and how long it takes, from the end-to-end suite (`tests/e2e/test_boot_scenarios.py`, "
            "`boot_costs()`): a QEMU guest under TCG (no KVM: several times slower than hardware) on a 2-core machine shared with "
            "other work, one boot per map method, recorded in `bench/boots.json` (`CEPHBOOT_BOOT_RESULTS=bench/boots.json "
            ".venv/bin/python -m pytest tests/e2e/test_boot_scenarios.py -k 'sysfs_method or by_mac_through'` as root, then "
            "`.venv/bin/python -m bench.report --boots`). *Power-on to root*: from QEMU's start to the "
            "booted system's init printing its line (root mapped, opened and mounted). *cephboot's script*: `scripts/local-top/cephboot` "
            "from its first line to its last, as it prints them (uptime-based, tenths of a second); the target is ≤ 2 s plus the map. "
            "*The map*: from the first map attempt until one worked (both methods; retries and their waits included). "
            "*The Ceph NIC*: finding it, udev done with it, link up, carrier, address. *Load*: the build machine's 1-minute "
            "load average as the boot ended (TCG figures grow with it).", "",
            "| map method | kernel | base initrd | host layer | total fetched | power-on to root | cephboot's script | of it the map "
            "| of it the Ceph NIC | script without the map | load | recorded |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, b in sorted(boots.items()):
        total = b["kernel_bytes"] + b["base_bytes"] + b["layer_bytes"]
        rest = b["script_seconds"] - b["map_seconds"]
        nic = f"{b['nic_seconds']:.1f} s" if "nic_seconds" in b else "not recorded"
        out.append(f"| {method} | {size_bytes(b['kernel_bytes'])} | {size_bytes(b['base_bytes'])} | {size_bytes(b['layer_bytes'])} | "
                   f"{size_bytes(total)} | {b['root_seconds']:.1f} s | {b['script_seconds']:.1f} s | {b['map_seconds']:.1f} s | "
                   f"{nic} | {rest:.1f} s {'✅' if rest <= 2 else '❌'} | {b.get('load', 'not recorded')} | {b['date']} |")
    if {"cli", "sysfs"} <= set(boots):
        full, lean = boots["cli"]["base_bytes"], boots["sysfs"]["base_bytes"]
        out += ["", f"The sysfs hosts' lean base is {size_bytes(lean)}, {lean / full:.0%} of the full base ({size_bytes(full)}): issue 15's "
                f"target of a third {'is met' if lean * 3 <= full else '**is missed**'} (docs/layers-and-publish.md says what the rest is)."]
    return out


BOOTS_TITLE = "## Bytes and time per boot (issue 15)"


def update_boots(text: str, boots: dict[str, Any]) -> str:
    """BENCHMARKS.md ``text`` with its per-boot section made again from ``boots`` (the rest kept)."""
    return put_section(text, BOOTS_TITLE, "\n".join(boots_section(boots)[1:]) + "\n\n")


def boot_paths_section(paths: dict[str, Any]) -> list[str]:
    """Seconds from power-on to each step of the boot chain, per firmware and host, as the e2e tests recorded them."""
    out = [BOOT_PATHS_TITLE, ""]
    if not paths:
        return out + ["Not recorded: run the e2e tests with `CEPHBOOT_BOOT_PATHS=bench/boot-paths.json` "
                      "(`tests/e2e/test_boot_scenarios.py -k by_mac`, `tests/e2e/test_uefi.py`, `tests/e2e/test_secureboot.py`)."]
    out += ["Seconds from QEMU's start (power-on) to each step, as the e2e tests print them (`boot path, <firmware>, <host>: ...`) "
            "and record them with `CEPHBOOT_BOOT_PATHS=bench/boot-paths.json`: QEMU TCG on the shared 2-core build machine, "
            "dnsmasq on a bridge, the files over HTTP (iPXE) or TFTP (GRUB) from the CephFS boot tree. *Loader*: iPXE's banner, "
            "or under Secure Boot the host's GRUB config running (shim and GRUB verified, the machine routed). No step waits a "
            "fixed time. Every path measured so far, with its first stage and route, also those printed before this file "
            "recorded them: [docs/front-end.md](docs/front-end.md#boot-path-timings).", "",
            "| firmware, host | loader | loader running | kernel starts | root mapped | root mounted | recorded |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, rec in sorted(paths.items()):
        steps = dict((name, t) for name, t in rec["steps"])
        loader = rec["steps"][0][0]
        out.append(f"| {key} | {loader} | {steps[loader]:.1f} | {steps['kernel']:.1f} | {steps['mapped']:.1f} | {steps['root']:.1f} | {rec['date']} |")
    return out


def update_boot_paths(text: str, paths: dict[str, Any]) -> str:
    """BENCHMARKS.md ``text`` with its boot-path section (added at the end if missing) made from ``paths``."""
    section = "\n".join(boot_paths_section(paths)) + "\n"
    start = text.find(BOOT_PATHS_TITLE)
    if start < 0:
        return text.rstrip("\n") + "\n\n" + section
    end = text.find("\n## ", start + 1)
    return text[:start] + section + (text[end:] if end >= 0 else "")


def chart(results: dict[str, Any], path: Path) -> Path | None:
    """Time against host count, log-log, min–max as error bars, targets as markers; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = [int(n) for n in results["results"]]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for key, label in results["scenarios"].items():
        xs = [n for n in sizes if key in results["results"][str(n)]]
        ys = [cpu_runs(results["results"][str(n)][key]) for n in xs]
        m = [med(y) for y in ys]
        err = [[a - min(y) for a, y in zip(m, ys)], [max(y) - a for a, y in zip(m, ys)]]
        line = ax.errorbar(xs, m, yerr=err, marker="o", capsize=3, label=label.replace("`", ""))
        targets = results["targets"].get(key, {})
        if targets:
            ax.scatter([int(n) for n in targets], list(targets.values()), marker="_", s=400, color=line[0].get_color(), linewidths=2)
    b = results.get("baseline")
    if b:
        per_host = med(b["runs"])
        ax.plot(sizes, [n * per_host for n in sizes], "k--", label=f"hand-made: one mkinitramfs per host (projected, {per_host:.0f} s each)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hosts")
    ax.set_ylabel("CPU seconds, doit + children (median; bars: min–max; dashes: targets)")
    ax.set_title(f"cephboot on {results['machine']['cores']} cores, {results['machine']['date'][:10]}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path


def _duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 7200 else f"{s / 60:.0f} min" if s >= 120 else f"{s:.0f} s"


def plural(count: float, word: str) -> str:
    return f"{count:,.0f} {word}{'' if count == 1 else 's'}"


def mark(ok: bool | None) -> str:
    return " ✅" if ok else " ❌"


def relative_verdicts(results: dict[str, Any], n: int) -> dict[str, tuple[float, float | None, bool | None]]:
    """Issue 15's relative targets at ``n`` hosts, as (figure, limit, met): no-op / stat floor (judged at 100,000 hosts),
    `doit list` / doit's floor, one host edited − no-op in seconds (judged with 3 runs of each or more); met is None
    where not judged. Empty when the run measured no floors at that size."""
    per = results["results"].get(str(n), {})
    if "floors" not in results or "statfloor" not in per:
        return {}
    noop = cpu(per["noop"])
    stat_x, list_x = results["noop_over_stat"], results["list_over_floor"]
    ratio = noop / cpu(per["statfloor"])
    out: dict[str, tuple[float, float | None, bool | None]] = {
        "noop": (ratio, stat_x, None if n < 100000 else ratio <= stat_x)}
    ratio = cpu(per["list"]) / cpu(per["listfloor"])
    out["list"] = (ratio, list_x, ratio <= list_x)
    if "host" in per:
        extra, limit = cpu(per["host"]) - noop, results["host_over_noop"].get(str(n))
        few = min(len(cpu_runs(per["host"])), len(cpu_runs(per["noop"]))) < 3
        out["host"] = (extra, limit, None if limit is None or few else extra <= limit)
    return out


RELATIVE_LABELS = {"noop": "no-op / stat floor", "list": "`doit list` / doit's floor", "host": "one host edited − no-op"}


def relative_section(results: dict[str, Any], sizes: list[int]) -> list[str]:
    """Issue 15's targets, each against a floor measured at the same size in the same run: in CPU
    seconds (user + system, the process and its children), which other work on a shared machine
    moves far less than wall time; wall time in brackets."""
    if "floors" not in results:
        return []
    out = ["## Cost that follows the change (issue 15)", "",
           "Each figure against a floor measured at the same size in the same run, in CPU seconds (user + system of the process "
           "and of the children it waited for: other work on a shared machine moves them far less than wall time; medians, "
           "wall time in brackets). The stat floor is a fresh Python process that stats every file under hosts/ and build/; "
           "doit's floor is `doit list` of a dodo with as many trivial tasks as the site has (`doit list --all`).", "",
           "The profile edit touches a tenth of the hosts: its cost over a no-op should grow with them, so it is also given per "
           "host it touches.", "",
           "| hosts | no-op / stat floor | `doit list` / doit's floor | one host edited − no-op | one profile edited (1/10 of hosts) − no-op |",
           "| --- | --- | --- | --- | --- |"]

    for n in sizes:
        per = results["results"][str(n)]
        judged = relative_verdicts(results, n)
        if not judged:
            continue
        ratio, limit, ok = judged["noop"]
        cells = [f"{ratio:.2f}× ({both(per['noop'])} / {both(per['statfloor'])})" + ("" if ok is None else f"{mark(ok)} (≤ {limit:g}×)")]
        ratio, limit, ok = judged["list"]
        cells.append(f"{ratio:.2f}× ({both(per['list'])} / {both(per['listfloor'])}){mark(ok)} (≤ {limit:g}×)")
        if "host" in judged:
            extra, limit, ok = judged["host"]
            runs = f"{plural(len(cpu_runs(per['host'])), 'host edit')}, {plural(len(cpu_runs(per['noop'])), 'no-op')}"
            verdict_text = "" if limit is None else f"{mark(ok)} (≤ +{1000 * limit:.0f} ms)" if ok is not None else \
                f" (≤ +{1000 * limit:.0f} ms: not judged, fewer than 3 runs of each ({runs}), which at this size differ by more than the target)"
            cells.append(f"{1000 * extra:+.0f} ms ({both(per['host'])})" + verdict_text)
        else:
            cells.append("not run")
        noop = cpu(per["noop"])
        touched = max(n // 10, 1)
        cells.append(f"{1000 * (cpu(per['profile']) - noop):+.0f} ms ({both(per['profile'])}; "
                     f"{1000 * (cpu(per['profile']) - noop) / touched:.1f} ms for each of its {touched:,} hosts)" if "profile" in per else "not run")
        out.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return out + [""]


def with_stand_ins(results: dict[str, Any]) -> set[str]:
    """The sizes measured with stand-in base initrds (``--fake-initrd``), in this run or in one merged into it."""
    merged = results.get("merged")
    entries = [merged] if isinstance(merged, dict) else merged or []
    taken = {part: g for g in entries for part in g["parts"]}
    fake_here = results["initrd"].get("fake", False)
    return {n for n in results["results"]
            if (g := taken.get(f"{int(n):,} hosts")) and "stand-in base initrds" in g.get("note", "") or not g and fake_here}


def markdown(results: dict[str, Any], chart_path: Path | None, relative_to: Path) -> str:
    m = results["machine"]
    sizes = [int(n) for n in results["results"]]
    cmd = ".venv/bin/python -m bench.run"
    if sizes != [10, 100, 1000, 10000]:
        cmd += f" --sizes {','.join(map(str, sizes))}"
    if results["repeat"] != 5:
        cmd += f" --repeat {results['repeat']}"
    out = [
        "# Benchmarks",
        "",
        "<!-- generated by bench/run.py from bench/results.json; do not edit: rerun `python -m bench.run` (or `python -m bench.report`) -->",
        "",
        f"Measured {m['date']} on {m['cores']} cores ({m['cpu'] or 'unknown CPU'}), {m['memory_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}, doit {m['doit']}, cephboot {m['commit']}. Medians of {results['repeat']} real `doit` processes "
        f"(fewer where a table says so); min–max in brackets. The whole run took {_duration(results['total_seconds'])}, on one shared "
        f"machine (1-minute load average {' at the start, '.join(map(str, m.get('load', [])))} at the end, on {m['cores']} cores).",
        "",
        "**How to read the times.** Other engineers' builds and test VMs share these cores, so a wall time here says as much "
        "about their load as about cephboot. Every time below is therefore given as **CPU seconds**: user + system time of the "
        "`doit` process and of every child it waited for (shellcheck, cpio, ...), from `os.wait4`; the median wall time follows "
        "in brackets. Targets are judged on the CPU seconds; a wall time marked *over* was over the target on this loaded "
        "machine. CPU seconds leave out time spent waiting for the disk (publish's fsyncs), so for the edits that publish, the "
        "wall time is the upper bound and the CPU time the lower. Issue 15's relative targets set each figure against a floor "
        "measured at the same size in the same run, in the same unit.",
        "",
    ]
    merged = results.get("merged")
    for g in [merged] if isinstance(merged, dict) else merged or []:
        load = f", load average {' to '.join(map(str, g['load']))}" if g.get("load") else ""
        out += [f"Taken from another run ({g['date']}, cephboot {g['commit']}, {_duration(g['total_seconds'])}{load}"
                f"{', ' + g['note'] if g.get('note') else ''}): {', '.join(g['parts'])}.", ""]
    if merged:
        out += ["The rest was measured in this one.", ""]
    out += [
        "Reproduce (details in [bench/README.md](bench/README.md)):",
        "",
        "```sh",
        ".venv/bin/pip install -e '.[bench]'   # matplotlib, for the chart",
        cmd,
        "```",
        "",
    ]
    if chart_path:
        out += [f"![time against host count, log-log]({os.path.relpath(chart_path, relative_to)})", ""]
    out += ["## Against the targets (issues 5 and 15)", "",
            "| scenario | 1,000 hosts | target | 10,000 hosts | target | 100,000 hosts | target |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for key in ROWS:
        t = results["targets"][key]
        cells = []
        for n in (1000, 10000, 100000):
            text, _ = verdict(results, key, n)
            limit = (f"≤ {t[str(n)]:g} MB ({t[str(n)] * MIB_PER_MB:.0f} MiB)" if key == "rss" else f"≤ {t[str(n)]:g} s") if str(n) in t else "—"
            cells += [text if str(n) in t else "—", limit]
        out.append(f"| {TARGET_LABELS[key]} | " + " | ".join(cells) + " |")
    missed = failures(results)
    out += ["", f"**{len(missed)} target(s) or check(s) missed.**" if missed else "**Every target that was run is met.**", ""]
    for f in missed:
        out.append(f"- {f}")
    if missed:
        out.append("")

    out += relative_section(results, sizes)
    def cell(m: dict[str, Any]) -> str:
        return f"{spread(cpu_runs(m), repeat=results['repeat'])} [{secs(med(m['runs']))} s]"

    out += ["## Every scenario at every size", "",
            "CPU seconds (user + system of the `doit` process and of the children it waited for), median (min–max); "
            "the median wall time in brackets.", ""]
    out += ["| scenario | " + " | ".join(f"{n:,} hosts" for n in sizes) + " |", "| --- |" + " --- |" * len(sizes)]
    for key, label in results["scenarios"].items():
        out.append(f"| {label} | " + " | ".join(cell(results["results"][str(n)][key])
                                                if key in results["results"][str(n)] else "not run" for n in sizes) + " |")
    for key, label in results.get("floors", {}).items():
        out.append(f"| floor: {label} | " + " | ".join(cell(results["results"][str(n)][key])
                                                       if key in results["results"][str(n)] else "not measured" for n in sizes) + " |")
    out.append("| cold build per host (CPU) | " + " | ".join(f"{1000 * cpu(results['results'][str(n)]['cold']) / n:.1f} ms"
                                                       if "cold" in results["results"][str(n)] else "not run" for n in sizes) + " |")
    out.append("| peak memory (max RSS of any run) | " + " | ".join(f"{peak_mb(results['results'][str(n)]):.0f} MiB" for n in sizes) + " |")
    out.append("| generating the site (not timed above) | " + " | ".join(f"{results['generate_seconds'][str(n)]:.1f} s" for n in sizes) + " |")
    ini = results["initrd"]
    out += [""]
    if ini.get("fake"):
        out.append("Base initrds: not built in this run (`--fake-initrd`: stand-in files).")
    else:
        sz = ", ".join(f"{k}: {size_bytes(v)}" for k, v in sorted(ini["sizes"].items()))
        out.append(f"Base initrds, built once and shared by every size: **{secs(ini['seconds'])} s** for {len(ini['kernels'])} kernels "
                   f"({', '.join(ini['kernels'])}; one `mkinitramfs` per kernel and map method in use, verified; {sz}). The cold builds above start with them present.")
    if results.get("kernel_note"):
        out += ["", f"Note: {results['kernel_note']}."]

    out += ["", "## What ran, and what reached the publish tree", "",
            "Steps run (median: each host a stage redid, e.g. `render:h00007`, and each other task that ran, e.g. `lint:rendered`) and bytes written to `build/publish/` by one edit (median; new or rewritten files, counted by inode: "
            "the previous generation is kept by hard links, which write nothing). A host layer is ~3 KiB; each monolithic host "
            "(one in 500) also republishes its whole initrd.img, base included (~23 MiB).", "",
            "| hosts | host edit | profile edit | monitor edit |", "| --- | --- | --- | --- |"]
    for n in sizes:
        per = results["results"][str(n)]
        cells = []
        for key in ("host", "profile", "site"):
            r = per.get(key)
            if r is None:
                cells.append("not run")
                continue
            written = f"{plural(med(r['files']), 'file')}, {size_bytes(med(r['bytes']))}" if r["files"] else "bytes not recorded"
            cells.append(f"{plural(med(r['tasks_ran']), 'step')}, {written}")
        stand_in = " (stand-in base initrds: a monolithic host's initrd.img is ~0.5 KiB here, not ~23 MiB)" if str(n) in with_stand_ins(results) else ""
        out.append(f"| {n:,}{stand_in} | " + " | ".join(cells) + " |")
    problems = [(n, k, p) for n, per in results["results"].items() for k, r in per.items() for p in r["problems"]]
    out += [""]
    if problems:
        out += ["Checks that failed:", ""] + [f"- {int(n):,} hosts, {results['scenarios'][k]}: {p}" for n, k, p in problems]
    else:
        out.append("Checks: a host edit ran only that host's render, overlay and publish (plus `lint:rendered`, which lints only the "
                   "changed file); a profile edit ran exactly the hosts that use it; a monitor edit republished every host and "
                   "rebuilt no base initrd; a no-op ran nothing.")

    b = results.get("baseline")
    out += ["", "## Against the per-host rebuild it replaces", ""]
    if b:
        per_host = med(b["runs"])
        r10 = results["results"].get(str(b["hosts"]))
        out += [f"The hand-made method runs `update-initramfs` for every host after any change. Measured here as one full "
                f"`mkinitramfs` per host of a {b['hosts']}-host site, each with the host's conf.d, ceph.conf, keyring (and LUKS key) "
                f"baked in, from the same generated confdir as cephboot's base initrd: **{spread(b['runs'])} per host**, "
                f"{secs(sum(b['runs']))} s for all {b['hosts']}.", ""]
        if r10:
            site, host = med(r10["site"]["runs"]), med(r10["host"]["runs"])
            out += ["| the same edit, 10 hosts | hand-made | cephboot | ratio |", "| --- | --- | --- | --- |",
                    f"| monitor address (every host) | {secs(sum(b['runs']))} s | {secs(site)} s | {sum(b['runs']) / site:,.0f}× |",
                    f"| one host | {secs(per_host)} s | {secs(host)} s | {per_host / host:,.0f}× |", ""]
        out += ["Projected at each size (hosts × the median per-host `mkinitramfs`), against cephboot's measured monitor edit:", "",
                "| hosts | hand-made (projected) | cephboot | ratio |", "| --- | --- | --- | --- |"]
        for n in sizes:
            if "site" not in results["results"][str(n)]:
                continue
            site = med(results["results"][str(n)]["site"]["runs"])
            proj = n * per_host
            out.append(f"| {n:,} | {_duration(proj)} | {secs(site)} s | {proj / site:,.0f}× |")
    else:
        out.append("Not measured in this run (`--fake-initrd` or `--no-baseline`).")

    sc = results.get("shellcheck")
    out += ["", "## shellcheck: batched against one process per file", ""]
    if sc:
        batched = med(sc["batched"])
        out += [f"{sc['files']:,} rendered conf.d files, the project's own `tasks.lint.shellcheck` ({sc['batch']} files per process, "
                f"{sc['workers']} processes at a time) against one `shellcheck` process per file with the same options:", "",
                "| how | seconds | ratio |", "| --- | --- | --- |",
                f"| batched ({sc['batch']} per process) | {spread(sc['batched'])} | 1× |",
                f"| one process per file, {sc['workers']} at a time | {secs(sc['per_file_parallel'][0])} s | {sc['per_file_parallel'][0] / batched:.0f}× |",
                f"| one process per file, one at a time | {secs(sc['per_file'][0])} s | {sc['per_file'][0] / batched:.0f}× |"]
    else:
        out.append("Not measured in this run.")

    out += boots_section(json.loads(BOOTS.read_text()) if BOOTS.exists() else {})

    mono = results.get("monolithic")
    out += ["", "## Memory against monolithic hosts", ""]
    if mono:
        floor = med(mono["rss_kb"]["0"]) / 1024
        out += [f"Peak RSS of the `doit` that packs and publishes the layers of a {mono['hosts']}-host site (rendered and linted "
                f"just before, not measured), with more and more hosts monolithic: each is a full copy of its base initrd "
                f"({size_bytes(mono['base_bytes'])}), streamed in 1 MiB blocks (issue 15: never a whole initrd in memory). "
                "The row with none is the floor, measured in the same run.", "",
                "| monolithic hosts | peak RSS | above the floor |", "| --- | --- | --- |"]
        for count, rss in sorted(mono["rss_kb"].items(), key=lambda kv: int(kv[0])):
            mb = med(rss) / 1024
            out.append(f"| {count} | {mb:.1f} MiB ({min(rss) / 1024:.1f}–{max(rss) / 1024:.1f}) | {mb - floor:+.1f} MiB |")
    else:
        out.append("Not measured in this run.")

    out += ["", "## Where the time goes in missed targets", ""]
    if results["profiles"]:
        out.append("One extra run of each missed scenario under `python -m cProfile -m doit` (the doit process only; the "
                   "subprocesses it starts, shellcheck and cpio, show up as time in `subprocess`/`communicate`).")
        for name, text in results["profiles"].items():
            key, n = name.split("@")
            out += ["", f"<details><summary>{results['scenarios'][key]} at {int(n):,} hosts</summary>", "", "```text", tidy_profile(text), "```", "", "</details>"]
    else:
        out.append("No scenario missed its target, so nothing was profiled.")

    out += ["", "## What keeps a no-op cheap at 10,000 hosts", "",
            "A no-op must look at every input and output (~150,000 files at 10,000 hosts; a `stat` costs ~3.5 µs on this "
            "machine) and do little else. What it took (README, \"Per-host stages\"; `tasks/stage.py`):",
            "",
            "- **A no-op loads no host at all** (tasks/quiet.py): a plain `doit` after a run that ended with everything done "
            "stats the paths of that run's manifest (every file its checks looked at, with their keys, in one flat list) and, "
            "when one digest of their keys, doit's records and the environment is unchanged, loads the default tasks from it "
            "alone; anything else (any change, another command line, a failure, `doit forget`) loads every task as below.",
            "- **One doit task per step, not per host.** doit spends ~0.25 ms on every task of every run (a Task object, a state "
            "row, the uptodate callables): three tasks per host cost ~8 s at 10,000 hosts. `render:hosts`, `lint:rendered`, "
            "`overlay:hosts` and `publish:hosts` each keep their own record of every host (its settings and the size, mtime and "
            "mode of each input) and redo only the hosts whose record differs or whose outputs are missing.",
            "- **One stat per file per run.** A rendered file is an output of render and an input of overlay; the stages share "
            "a memo of file keys, and each forgets what it is about to write before it runs.",
            "- **No cyclic garbage collection while tasks load**: its full passes walked the loaded inventory again and again "
            "(~1 s a run at 10,000 hosts); it is turned back on, with the loaded objects frozen, before the run.",
            "- **`doit list` builds no per-host tables** (a stage's hosts are computed when it is first checked), and "
            "`provision`/`verify` are created only when named.",
            "- **Publish overlaps hosts** (`publish.parallel`, 8 threads): most of a site-wide edit is fsyncs.",
            "- The inventory is parsed only when a file changed, and then only what changed: each host is cached with the stat keys of "
            "its inputs, in shards, with an index of the values no two hosts may share; stage records are sharded the same way; "
            "a plain `doit list` reads a summary of the top-level tasks instead of loading them."]

    out += ["", "## How it is measured", "",
            "- **Sites**: `bench/generate.py`, pure functions of the host index: 10 rack profiles (each includes `compute`, which "
            "includes `base`: two levels of nesting), a fifth of the hosts LUKS (profile `luks` includes `secure`: sysfs mapping, "
            "`ms_mode=secure`), another seventh sysfs without LUKS, the rest the rbd CLI; a third on the previous kernel (profile "
            "`old-kernel`); a quarter with two or three Ceph MACs, a quarter with a user NIC, half with a UUID, a tenth on DHCP, "
            "one in 500 monolithic. Addresses in 198.18.0.0/15 (RFC 2544's benchmarking range), locally administered MACs.",
            f"- **Two kernels**: {', '.join(results['kernels'])}, both real Debian kernel packages installed on this machine "
            "(`mkinitramfs` reads `/lib/modules/<version>` by a fixed path, so a renamed copy would not be an honest second kernel).",
            "- **Code**: `dodo.py`, `tasks/` and `templates/` are copied at the start and every `doit` runs that copy, so "
            "edits made to the repository during a long run do not mix versions (the commit above is the copy's). The copy is "
            "byte-compiled once, as Python's own cache would be after a first run (this machine sets PYTHONDONTWRITEBYTECODE).",
            "- **What ran**: doit's `.  task` lines, and the `  - <stage>:<host>` line each per-host stage (`render:hosts`, "
            "`overlay:hosts`, `publish:hosts`) prints for every host it redid; a *step* is one such host line or one other task.",
            "- **Cold build**: `build/` removed, then only the base initrds and doit's records of them put back (hard links from "
            "one build made at the start), the inventory cache gone: everything else is built by one `doit`.",
            "- **No-op** and **`doit list`**: right after a build; the whole output is read (into a file, no pipe to break).",
            "- **Host edit**: a new Ceph address in one host file (it reaches conf.d, so render, lint, overlay and publish all run). "
            "**Profile edit**: `map.deadline` of `rack-03`, used by a tenth of the hosts. **Site edit**: the third monitor address.",
            "- **Memory**: `ru_maxrss` from `os.wait4` of each doit process: the largest RSS of doit or of any process it waited for.",
            "- **Bytes written**: files under the publish tree whose inode is new or whose inode changed size or mtime, summed.",
            "- **Baseline**: `mkinitramfs -d <copy of cephboot's generated confdir>` per host, with the host's files added by one "
            "extra hook; no verification (cephboot's base build also unpacks and checks its initrd, which the hand-made way does not).",
            ""]
    return "\n".join(out)


def put_section(md: str, heading: str, text: str, old_titles: list[str] | None = None) -> str:
    """``md`` with the section under ``heading`` (or one of its ``old_titles``) replaced by ``text`` (or ``text``
    put before 'How it is measured'): the sections that other bench scripts measure and keep across reports."""
    heading = next((t for t in [heading, *(old_titles or [])] if t in md), heading)
    if heading in md:
        start = md.index(heading)
        end = md.find("\n## ", start + len(heading))
        return md[:start] + text + (md[end + 1:] if end >= 0 else "")
    anchor = md.find("## How it is measured")
    return md[:anchor] + text + "\n" + md[anchor:] if anchor >= 0 else md + "\n" + text


def save_section(result: dict[str, Any], json_path: Path, heading: str, text: str) -> None:
    """A bench script's result into its JSON file and its section into BENCHMARKS.md; the section printed."""
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md = PROJECT / "BENCHMARKS.md"
    md.write_text(put_section(md.read_text(), heading, text))
    print(text)


def with_kept_sections(text: str) -> str:
    """``text`` with the sections that other bench scripts and the e2e suite measured (golden images,
    nginx, boot paths), from their own results files."""
    golden_results = PROJECT / "bench" / "golden-results.json"
    if golden_results.exists():  # measured on a cluster by bench/golden.py, kept across reports
        from bench.golden import update_benchmarks
        text = update_benchmarks(text, json.loads(golden_results.read_text()))
    nginx_results = PROJECT / "bench" / "nginx-results.json"
    if nginx_results.exists():  # measured by bench/nginx_bound.py, kept across reports
        from bench import nginx_bound
        text = nginx_bound.update_benchmarks(text, json.loads(nginx_results.read_text()))
    noops = {n: json.loads(p.read_text()) for n, p in NOOP_RESULTS.items() if p.exists()}
    versus = json.loads(NOOP_VERSUS.read_text()) if NOOP_VERSUS.exists() else []
    if noops:  # measured by bench/noop.py on kept sites, kept across reports
        text = put_section(text, NOOP_TITLE, "\n".join(noop_section(noops) + versus_section(versus)) + "\n", old_titles=OLD_NOOP_TITLES)
    paired_results = PROJECT / "bench" / "paired.json"
    if paired_results.exists():  # measured by bench/paired.py: two versions of the code, kept across reports
        from bench import paired
        text = put_section(text, paired.TITLE, "\n".join(paired.section(json.loads(paired_results.read_text()))) + "\n")
    return update_boot_paths(text, json.loads(BOOT_PATHS.read_text()) if BOOT_PATHS.exists() else {})


# bench/noop.py's figures on the kept sites of each size (1,000 and 10,000: bench.run --keep; 100,000: its own run)
NOOP_RESULTS = {n: PROJECT / "bench" / f"noop-{label}.json" for n, label in ((1000, "1k"), (10000, "10k"), (100000, "100k"))}
NOOP_TITLE = "## The no-op and one-host edits from the manifest (issue 15)"
OLD_NOOP_TITLES = ["## The no-op from the manifest at 100,000 hosts (issue 15)"]
HOST_EDIT_TARGET = {1000: 0.05, 10000: 0.1, 100000: 0.3}  # issue 15: one host edited - no-op, seconds
NOOP_VERSUS = PROJECT / "bench" / "noop-versus.json"  # a list of bench/noop.py --versus runs (its --json), oldest first


def versus_section(runs: list[dict[str, Any]]) -> list[str]:
    """bench/noop.py --versus: two versions of the code on host edits, alternating between two copies of a kept site."""
    if not runs:
        return []
    out = ["Two versions of the code on host edits (`bench/noop.py --versus`, bench/README.md): two copies of the kept "
           "site, each with its own version's code, the edits alternating between them (A, B, then B, A), each edit "
           "followed by its no-op; B − A is the median over the pairs, in CPU milliseconds. The machine's speed moves "
           "between runs by more than these differences; within a pair both sides share it.", "",
           "| hosts | A | B | date, load | pairs | A: edited − no-op | B: edited − no-op | B − A: edit | B − A: no-op | B − A: edited − no-op |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for d in runs:
        b = d["versus"]
        ea, na, eb, nb = cpu_runs(d["host"]), cpu_runs(d["noop_after_host"]), cpu_runs(b["host"]), cpu_runs(b["noop_after_host"])
        out.append("| " + " | ".join([
            f"{d['hosts']:,}", d["commit"], b["commit"], f"{d['date']}, {d['load']:.2f}", str(len(ea)),
            f"{1000 * med([e - n for e, n in zip(ea, na)]):+.0f} ms", f"{1000 * med([e - n for e, n in zip(eb, nb)]):+.0f} ms",
            f"{1000 * med([y - x for x, y in zip(ea, eb)]):+.1f} ms", f"{1000 * med([y - x for x, y in zip(na, nb)]):+.1f} ms",
            f"{1000 * med([(y - v) - (x - u) for x, u, y, v in zip(ea, na, eb, nb)]):+.1f} ms"]) + " |")
    return out + [""]


def paired(edits: dict[str, Any], after: dict[str, Any]) -> float:
    """The median over the edits of (an edit's run - the no-op right after it), CPU seconds: each pair
    shares the machine's state of that moment, so a drift of the machine's speed cancels out."""
    return med([e - n for e, n in zip(cpu_runs(edits), cpu_runs(after))])


def noop_section(runs: dict[int, dict[str, Any]]) -> list[str]:
    """bench/noop.py's figures per size: no-ops, the stat floor of the same files, one-host edits and
    one-profile edits on a kept site."""
    out = [NOOP_TITLE, "",
           "Measured by `bench/noop.py` (bench/README.md) on sites a benchmark run kept: the no-op that stats the last "
           "run's manifest and loads no host, the stat floor of the same files right after it, then one-host edits "
           "(bench.run's edit: a new Ceph address in one host file), each followed by a no-op; a host edit's run is "
           "scoped to that host (docs/layers-and-publish.md, \"A no-op `doit` from the manifest, and a host edit scoped "
           "to that host\"). CPU seconds, medians (wall in brackets). \"Edited − no-op\" is the median over the edits "
           "of each edit's run less the no-op right after it (the median of edits less the median of no-ops in "
           "brackets); the target is checked on the first. These supersede the no-op and host-edit rows of "
           "the tables above where they differ (those come from the last full run, with earlier code).",
           "",
           "| hosts | code | no-op | stat floor | no-op / floor | one host edited | no-op after each | edited − no-op | target | how the edits loaded |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, d in sorted(runs.items()):
        noop, floor = cpu(d["noop"]), cpu(d["statfloor"])
        ratio_ok = f" {mark(noop / floor <= 1.3)} (≤ 1.3×)" if n >= 100000 else ""
        row = [f"{n:,}", d["commit"], f"{both(d['noop'])}", f"{both(d['statfloor'])}", f"{noop / floor:.2f}×{ratio_ok}"]
        if d.get("host", {}).get("cpu"):
            extra, limit = paired(d["host"], d["noop_after_host"]), HOST_EDIT_TARGET[n]
            row += [f"{both(d['host'])} ({len(cpu_runs(d['host']))} runs)", both(d["noop_after_host"]),
                    f"{1000 * extra:+.0f} ms ({1000 * (cpu(d['host']) - cpu(d['noop_after_host'])):+.0f} ms)",
                    f"≤ +{1000 * limit:.0f} ms {mark(extra <= limit)}", ", ".join(sorted(set(d.get("host_loaded") or ["(not recorded)"])))]
        else:
            row += ["not run"] * 5
        out.append("| " + " | ".join(row) + " |")
    profiles = {n: d for n, d in sorted(runs.items()) if d.get("profile", {}).get("cpu")}
    if profiles:
        out += ["", "One profile edited (bench.run's edit: a rack profile's map deadline, which a tenth of the hosts "
                "list), each edit followed by a no-op; the run is scoped to the hosts the profile reaches. Target: it "
                "scales with the hosts it touches, so the cost per touched host is the figure to compare across sizes.", "",
                "| hosts | code | hosts it reaches | one profile edited | no-op after each | edited − no-op | per touched host | how the edits loaded |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n, d in profiles.items():
            extra, reached = paired(d["profile"], d["noop_after_profile"]), d["profile_hosts"]
            out.append("| " + " | ".join([f"{n:,}", d["commit"], f"{reached:,}", f"{both(d['profile'])} ({len(cpu_runs(d['profile']))} runs)",
                                          both(d["noop_after_profile"]), f"{1000 * extra:+.0f} ms" if abs(extra) < 10 else f"{extra:+.1f} s",
                                          f"{1000 * extra / reached:.1f} ms",
                                          ", ".join(sorted(set(d.get("profile_loaded") or ["(not recorded)"])))]) + " |")
    out += [f"\n{n:,} hosts: {d['note']}" for n, d in sorted(runs.items()) if d.get("note")]
    out += ["", "Date, load and peak memory of each: " + "; ".join(
        f"{n:,} hosts {d.get('date', '')}, load {d.get('load', 0):.2f}, no-op {max(d['noop']['rss_kb']) / 1024:.0f} MiB"
        for n, d in sorted(runs.items())) + ".", ""]
    return out


def main(argv: list[str]) -> int:
    """Redo BENCHMARKS.md and the chart from a results file; with ``--merge OTHER``, first take from
    OTHER its sizes (e.g. a separate 100,000-host run), replacing those the results file had, and save the merge;
    ``--boots``: only the per-boot section."""
    from bench.run import merge_earlier

    if argv == ["--boots"]:  # only the per-boot section, after the e2e suite recorded bench/boots.json
        md_path = PROJECT / "BENCHMARKS.md"
        md_path.write_text(update_boots(md_path.read_text(), json.loads(BOOTS.read_text()) if BOOTS.exists() else {}))
        print(f"wrote the per-boot section of {md_path.name} from {BOOTS.relative_to(PROJECT)}")
        return 0
    merge = [Path(a) for i, a in enumerate(argv) if i and argv[i - 1] == "--merge"]
    rest = [a for i, a in enumerate(argv) if a != "--merge" and not (i and argv[i - 1] == "--merge")]
    src = Path(rest[0]) if rest else PROJECT / "bench" / "results.json"
    res = json.loads(src.read_text())
    for other in merge:
        merge_earlier(res, json.loads(other.read_text()), replace=True)  # a newer run of those sizes replaces the one merged before
    if merge:
        src.write_text(json.dumps(res, indent=1) + "\n")
    png = chart(res, PROJECT / "bench" / "scaling.png")
    (PROJECT / "BENCHMARKS.md").write_text(with_kept_sections(markdown(res, png, PROJECT)))
    print("wrote BENCHMARKS.md" + (f" and {png}" if png else "") + (f"; merged into {src}" if merge else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
