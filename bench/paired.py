"""Compare two checkouts' code on the same synthetic site, in paired, interleaved runs (A, B, A, B, ...):

    .venv/bin/python -m bench.paired /work/wt/old /work/main --hosts 10000 --repeat 5 --workdir DIR

Each side gets its own folder under DIR (``a/``, ``b/``): its code frozen there as bench.run freezes it, its own
base initrds (built once with its own code, as bench.run does, so that neither side rebuilds them), and its own site,
generated alike (bench/generate.py; a host is a function of its index, only the fresh keys differ). Then, pair by pair,
each scenario (bench.run's cold build and site-wide edit, incl. publish) runs on A's site with A's code and on B's
with B's, with bench.run's checks, timed as bench.run times it (wall, and CPU seconds of the doit process and the
children it waited for: on a shared machine, less moved by others' load). Between the cold builds and the edits,
the stat floor of each site (bench.run's). Both sides run with this interpreter (another venv's shellcheck is
another binary, which would make the lint stages due). Prints each run and the medians; ``--json`` keeps them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import generate, report
from bench import run as bench
from bench.noop import commit_of
from bench.run import PROJECT

KEYS = ("cold", "site")
SAVED = "paired.json"  # the last comparison, kept across reports (bench.report.with_kept_sections)
TITLE = "## Two versions of the code, paired"  # the heading's start: the rest names the versions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, nargs="?", help="checkout A (e.g. the older code)")
    ap.add_argument("b", type=Path, nargs="?", help="checkout B")
    ap.add_argument("--hosts", type=int, default=10000, help="site size (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=5, help="pairs per scenario (default: %(default)s)")
    ap.add_argument("--scenarios", default=",".join(KEYS), help=f"of {', '.join(KEYS)}, in this order (default: %(default)s)")
    ap.add_argument("--workdir", type=Path, help="where both sides' code, base initrds and sites go (kept)")
    ap.add_argument("--json", type=Path, help="also write every run here")
    ap.add_argument("--again", action="store_true", help="more runs on the sites an earlier run left in --workdir, "
                    "added to its --json file")
    ap.add_argument("--report", type=Path, metavar="JSON",
                    help="write no new runs: put the section of this --json file into BENCHMARKS.md (kept across reports as "
                    f"bench/{SAVED}) and print it")
    ap.add_argument("--why", help="with --report: what the comparison is for (in its heading)")
    ap.add_argument("--note", help="with --report: a paragraph under the table (the verdict, how it was judged)")
    a = ap.parse_args(argv)
    if a.report:
        d = json.loads(a.report.read_text())
        d.update({k: v for k, v in (("why", a.why), ("note", a.note)) if v})
        report.save_section(d, PROJECT / "bench" / SAVED, TITLE, "\n".join(section(d)) + "\n")
        return 0
    keys = [k for k in a.scenarios.split(",") if k]
    if not (a.a and a.b and a.workdir):
        ap.error("two checkouts and --workdir are needed (or --report JSON)")
    if a.repeat < 1 or a.hosts < 10 or not keys or set(keys) - set(KEYS):
        ap.error(f"--repeat at least 1, --hosts at least 10, --scenarios of {', '.join(KEYS)}")
    if a.again and not (a.json and a.json.exists()):
        ap.error("--again adds to the runs of an earlier --json file: name it")
    if "site" in keys and keys[0] != "cold" and not a.again:
        ap.error("the site-wide edit needs a built site: run cold first")
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True)

    kernels, note = bench.kernels_to_use()
    earlier = json.loads(a.json.read_text()) if a.again else {}
    sides: dict[str, dict[str, Any]] = {}
    for label, checkout in (("A", a.a.resolve()), ("B", a.b.resolve())):
        work = a.workdir.resolve() / label.lower()
        if a.again:  # the code, base initrds and site as the earlier runs left them
            before = earlier["sides"][label]
            if before["checkout"] != str(checkout):
                ap.error(f"{a.json}: side {label} was {before['checkout']}, not {checkout}")
            dodo, template = work / "code" / "dodo.py", work / "template"
            site = bench.Site(work / f"site-{a.hosts}", [generate.Shape(i) for i in range(a.hosts)], kernels)
            commit, runs = before["commit"], before["runs"]
        else:
            work.mkdir(parents=True)
            dodo = bench.freeze_code(work, checkout)
            bench.DODO = dodo
            template, _ = bench.base_template(work, kernels, False, log)
            t = time.perf_counter()
            site = bench.make_site(work / f"site-{a.hosts}", a.hosts, kernels)
            commit, runs = commit_of(checkout), {}
            log(f"{label}: generated {a.hosts} hosts in {time.perf_counter() - t:.1f} s")
        log(f"{label}: {checkout} at {commit}, code in {dodo.parent}")
        sides[label] = {"checkout": str(checkout), "commit": commit, "dodo": dodo, "site": site,
                        "scenarios": {sc.key: sc for sc in bench.scenarios(site, template)}, "runs": runs}
    log(f"kernels {kernels[0]}, {kernels[1]}{' (' + note + ')' if note else ''}; load average {os.getloadavg()[0]:.2f}")
    for key in keys:
        first = len(sides["A"]["runs"].get(key, []))  # an edit's new value is numbered by the run: never the one before
        for rep in range(first, first + a.repeat):
            for label, side in sides.items():
                one(side, key, rep, label, first + a.repeat, log)
        if key == "cold":
            for label, side in sides.items():
                stat_floor(side, a.workdir.resolve() / label.lower(), a.repeat, label, log)
    summary = {}
    for key in [*keys, "statfloor"]:
        for label, side in sides.items():
            runs = side["runs"].get(key, [])
            if runs:
                wall, cpu = statistics.median(r["seconds"] for r in runs), statistics.median(r["cpu"] for r in runs)
                summary.setdefault(key, {})[label] = {"wall": wall, "cpu": cpu}
                log(f"{key:<9} {label} ({side['commit']}): median {wall:7.2f} s wall, {cpu:7.2f} s CPU "
                    f"(CPU {min(r['cpu'] for r in runs):.2f} to {max(r['cpu'] for r in runs):.2f}; {len(runs)} runs)")
        pair = summary.get(key, {})
        if "A" in pair and "B" in pair:
            log(f"{key:<9} B / A: {pair['B']['wall'] / pair['A']['wall']:.3f} wall, {pair['B']['cpu'] / pair['A']['cpu']:.3f} CPU")
    problems = [p for side in sides.values() for runs in side["runs"].values() for r in runs for p in r.get("problems", [])]
    for p in problems:
        log(f"PROBLEM: {p}")
    if a.json:
        a.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "hosts": a.hosts,
            "commands": [*earlier.get("commands", []), " ".join(["python -m bench.paired", *(argv if argv is not None else sys.argv[1:])])],
            "machine": bench.machine(), "load_end": os.getloadavg()[0], "summary": summary,
            "sides": {label: {k: v for k, v in side.items() if k in ("checkout", "commit", "runs")} for label, side in sides.items()},
        }, indent=1) + "\n")
    return 1 if problems else 0


# two-sided 95 % quantiles of Student's t by degrees of freedom (pairs - 1); from 30 on, the normal's
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23, 11: 2.20, 12: 2.18,
       13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11, 18: 2.10, 19: 2.09, 20: 2.09, 25: 2.06, 30: 1.96}


def pair_ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """B / A over pairs: the geometric mean of each pair's ratio and its 95 % interval (t on the logs; (mean, nan, nan)
    with one pair). The interval holding 1 means the pairs do not tell the two apart."""
    logs = [math.log(y / x) for x, y in zip(a, b)]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), math.nan, math.nan
    t = T95[max(k for k in T95 if k <= len(logs) - 1)]
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def section(d: dict[str, Any]) -> list[str]:
    """The BENCHMARKS.md section of one comparison (``--json``'s file): medians of each side, and B / A over the pairs."""
    sides, hosts = d["sides"], d["hosts"]
    a, b = sides["A"], sides["B"]
    loads = [r["load"] for s in sides.values() for k in KEYS for r in s["runs"].get(k, [])]
    out = [f"{TITLE}: {d['why'] + ', ' if d.get('why') else ''}{a['commit']} vs {b['commit']}, {hosts:,} hosts", "",
           f"Measured {d['date']} by `bench/paired.py` (bench/README.md): A is cephboot {a['commit']}, B is {b['commit']}, "
           "each with its own copy of a generated site and its own base initrds, runs interleaved (A, B, A, B, ...) so that "
           "both sides share the machine's load; the same interpreter for both. CPU seconds of doit and the children it "
           "waited for (wall in brackets), medians; the stat floor of each site as its cold build left it; B / A as the "
           "geometric mean of each pair's ratio with its 95 % interval (Student's t on the logs): an interval that holds 1 "
           f"does not tell the two apart. 1-minute load average {min(loads):.1f} to {max(loads):.1f} during the runs (2 cores).",
           "", "```sh", *(f".venv/bin/{c}" for c in d["commands"]), "```", "",
           f"| scenario | A: {a['commit']} | B: {b['commit']} | B / A, CPU (95 % interval) | each pair's B / A, CPU |",
           "| --- | --- | --- | --- | --- |"]
    labels = {**bench.SCENARIOS, "statfloor": "stat floor: every file under hosts/ and build/"}
    for key in [k for k in (*KEYS, "statfloor") if k in a["runs"] and k in b["runs"]]:
        ra, rb = a["runs"][key], b["runs"][key]
        ma, mb = ({"runs": [r["seconds"] for r in rs], "cpu": [r["cpu"] for r in rs]} for rs in (ra, rb))
        ratio, low, high = pair_ratio(ma["cpu"], mb["cpu"])
        pairs = ", ".join(f"{y / x:.2f}" for x, y in zip(ma["cpu"], mb["cpu"]))
        out.append(f"| {labels[key]} | {report.both(ma)} | {report.both(mb)} | {ratio:.3f} ({low:.2f} to {high:.2f}) | {pairs} |")
    return out + (["", d["note"]] if d.get("note") else [])


def one(side: dict[str, Any], key: str, rep: int, label: str, repeat: int, log: Any) -> None:
    """One repetition of a scenario on this side's site, with its code, timed and checked as bench.run does."""
    sc, site = side["scenarios"][key], side["site"]
    bench.DODO = side["dodo"]
    sc.prepare(rep)
    before = bench.tree_state(site.publish) if sc.count_bytes else {}
    r = bench.doit(site.root, *sc.args)
    out = {"seconds": r.seconds, "cpu": r.cpu, "rss_kb": r.rss_kb, "steps": len(bench.steps(r.ran)),
           "load": os.getloadavg()[0], "problems": [f"{label} {key} run {rep + 1}: {p}" for p in sc.check(r)]}
    if sc.count_bytes:
        out["bytes"], out["files"] = bench.bytes_written(before, bench.tree_state(site.publish))
    side["runs"].setdefault(key, []).append(out)
    log(f"{key:<9} {label} run {rep + 1}/{repeat}: {r.seconds:8.3f} s ({r.cpu:.3f} s CPU), {r.rss_kb / 1024:6.1f} MiB, "
        f"{out['steps']} steps ran{', ' + str(out.get('bytes', '')) + ' bytes published' if sc.count_bytes else ''}, load {out['load']:.2f}")


def stat_floor(side: dict[str, Any], work: Path, repeat: int, label: str, log: Any) -> None:
    """bench.run's stat floor of this side's site as the cold build left it."""
    site = side["site"]
    files = work / "files"
    files.write_text("\0".join(os.path.join(d, n) for top in (site.hosts, site.build) for d, _, names in os.walk(top) for n in names))
    for rep in range(repeat):
        r = bench.run_process([sys.executable, "-c", bench.STAT_FLOOR, str(files)])
        side["runs"].setdefault("statfloor", []).append({"seconds": r.seconds, "cpu": r.cpu, "rss_kb": r.rss_kb})
        log(f"statfloor {label} run {rep + 1}/{repeat}: {r.seconds:8.3f} s ({r.cpu:.3f} s CPU)")
    files.unlink()


if __name__ == "__main__":
    sys.exit(main())
