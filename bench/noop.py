"""Measure no-ops on a site a benchmark run kept (``bench.run --workdir DIR --keep``), with any checkout's code,
the way bench.run measures them, and the stat floor of the same files right after:

    .venv/bin/python -m bench.noop /work/bench100k/site-100000 --code /work/wt/other --repeat 1

The checkout's dodo.py, tasks/ and templates/ are copied to ``code/`` next to the site and byte-compiled, as bench.run
does; the copy that was there is renamed ``code.<date-time>``, not removed. It must be that path: the base initrds'
doit records name files under it (a copy elsewhere rebuilds them, for real, however the site was built, and then every
monolithic host republishes a full initrd). doit runs with this interpreter, as in bench.run (``--python``: another; its venv's shellcheck
is another binary, so lint:base and lint:rendered are due once). ``--warm`` runs (default 1, not
measured) come first: code other than the one that built the site may first rewrite its own caches and records.
Each measured run must run nothing (a no-op); what a run did is printed. These runs write the site's build/ state
(doit's records, caches): the code that built the site may need a run of its own before its next no-op.

Two versions of the code on host edits (``--versus``): a copy of the site (``cp -a``, before either runs) with
``--versus-code``'s code frozen next to it the same way. Both are warmed up; then the host edits alternate between
them (A: the site and ``--code``, B: the copy and ``--versus-code``; A, B in even rounds, B, A in odd ones), each edit
followed by a no-op, so that both sides share the machine's drift. B - A of the edits and of the no-ops is judged
over the pairs (their medians).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import PROJECT, STAT_FLOOR, freeze_code, run_process, steps


def commit_of(checkout: Path) -> str:
    r = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.noop", description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path, help="a kept site folder (hosts/ and build/), e.g. /work/bench100k/site-100000")
    ap.add_argument("--code", type=Path, default=PROJECT, help="the checkout whose code runs (default: this one)")
    ap.add_argument("--python", type=Path, help="interpreter for doit (default: this one, as bench.run: another venv's "
                    "shellcheck is another binary, which makes the lint stages due)")
    ap.add_argument("--warm", type=int, default=1, help="unmeasured runs first (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="measured no-ops, and as many stat floors (default: %(default)s)")
    ap.add_argument("--host-edits", type=int, default=0, help="then this many one-host edits (bench.run's), each "
                    "followed by a no-op, all measured (default: %(default)s)")
    ap.add_argument("--profile-edits", type=int, default=0, help="then this many edits of one rack's profile (bench.run's: "
                    "a tenth of the hosts), each followed by a no-op, all measured (default: %(default)s)")
    ap.add_argument("--versus", type=Path, metavar="SITE", help="a copy of the site: the host edits alternate between "
                    "the two, this one with --versus-code (above)")
    ap.add_argument("--versus-code", type=Path, metavar="CHECKOUT", help="the checkout whose code runs on --versus")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    if (a.versus is None) != (a.versus_code is None):
        ap.error("--versus and --versus-code go together")
    site = a.site.resolve()
    if not (site / "hosts").is_dir() or not (site / "build").is_dir():
        ap.error(f"{site}: expected a built site (hosts/ and build/), as bench.run --keep leaves it")
    if a.repeat < 1 or a.warm < 0:
        ap.error("--repeat must be at least 1 and --warm at least 0")
    python = a.python or Path(sys.executable)
    checkout, commit, cmd = with_code(site, a.code.resolve(), python)
    if a.versus is not None:
        other = a.versus.resolve()
        if other.parent == site.parent or not (other / "hosts").is_dir() or not (other / "build").is_dir():
            ap.error(f"{other}: expected a copy of the site (hosts/ and build/) in a folder of its own (its code goes next to it)")
        versus_checkout, versus_commit, versus_cmd = with_code(other, a.versus_code.resolve(), python)
    for c in [cmd] if a.versus is None else [cmd, versus_cmd]:
        if not warm_up(c, a.warm, settle=a.versus is not None):
            return 1
    noops = []
    for i in range(a.repeat):
        r = run_process(cmd)
        done = sorted(steps(r.ran))
        noops.append(r)
        print(f"no-op {i + 1}/{a.repeat}: {r.seconds:.3f} s ({r.cpu:.3f} s CPU), {r.rss_kb / 1024:.1f} MiB, {len(done)} steps ran"
              f"{': NOT A NO-OP: ' + ', '.join(done[:5]) if done else ''}", flush=True)
        if r.returncode or done:
            print(r.stdout[-2000:] + r.stderr[-2000:], file=sys.stderr)
            return 1
    with tempfile.NamedTemporaryFile("w", prefix="bench-noop-files-", delete=False) as f:  # the files as they are now
        f.write("\0".join(os.path.join(d, n) for top in (site / "hosts", site / "build") for d, _, names in os.walk(top) for n in names))
    try:
        floors = [run_process([sys.executable, "-c", STAT_FLOOR, f.name]) for _ in range(a.repeat)]
    finally:
        os.unlink(f.name)
    for i, r in enumerate(floors):
        print(f"stat floor {i + 1}/{a.repeat}: {r.seconds:.3f} s ({r.cpu:.3f} s CPU), {r.rss_kb / 1024:.1f} MiB", flush=True)
    noop_cpu, floor_cpu = statistics.median(r.cpu for r in noops), statistics.median(r.cpu for r in floors)
    print(f"no-op / stat floor: {noop_cpu / floor_cpu:.2f}x in CPU seconds ({noop_cpu:.3f} s / {floor_cpu:.3f} s; "
          f"wall {statistics.median(r.seconds for r in noops):.3f} s / {statistics.median(r.seconds for r in floors):.3f} s); "
          f"load average {os.getloadavg()[0]:.2f}")
    if a.versus is not None:
        (edits, after, ways), versus = host_edits_versus(site, cmd, other, versus_cmd, a.host_edits)
    else:
        (edits, after, ways), versus = host_edits(site, cmd, a.host_edits), None
    p_edits, p_after, p_ways = profile_edits(site, cmd, a.profile_edits)
    if a.json:
        a.json.write_text(json.dumps({"site": str(site), "code": str(checkout), "commit": commit,
                                      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                      "hosts": sum(1 for _ in (site / "hosts" / "nodes").iterdir()),
                                      "load": os.getloadavg()[0],
                                      "noop": measured(noops), "statfloor": measured(floors),
                                      "host": measured(edits), "noop_after_host": measured(after), "host_loaded": ways,
                                      **({"profile": measured(p_edits), "noop_after_profile": measured(p_after), "profile_loaded": p_ways,
                                          "profile_hosts": len(rack_hosts(site))} if p_edits else {}),
                                      **({"versus": {"site": str(other), "code": str(versus_checkout), "commit": versus_commit,
                                                     "host": measured(versus[0]), "noop_after_host": measured(versus[1]),
                                                     "host_loaded": versus[2]}} if versus else {})}, indent=1) + "\n")
    return 0


def with_code(site: Path, checkout: Path, python: Path) -> tuple[Path, str, list[str]]:
    """``checkout``'s code frozen next to ``site`` (the copy there set aside); its commit and the doit command on the site."""
    commit = commit_of(checkout)
    code = site.parent / "code"  # where bench.run froze the code that built the site: doit's records name files under it
    if code.exists():
        aside = set_aside(code)
        print(f"the code copy that was there is now {aside}", flush=True)
    dodo = freeze_code(site.parent, checkout, code.name)
    cmd = [str(python), "-m", "doit", "-f", str(dodo), "-d", str(site)]
    print(f"code of {checkout} at {commit}, copied to {code}; {' '.join(cmd)}", flush=True)
    return checkout, commit, cmd


def set_aside(path: Path) -> Path:
    """``path`` renamed to a free name beside it that carries the UTC time: two runs in one second each keep their own."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for n in range(1, 1000):
        aside = path.with_name(f"{path.name}.{stamp}" + (f".{n}" if n > 1 else ""))
        try:
            aside.mkdir()  # claims the name: a rename onto an empty folder of ours replaces it
        except FileExistsError:
            continue
        path.rename(aside)
        return aside
    raise SystemExit(f"{path}: no free name beside it to set it aside")


def warm_up(cmd: list[str], count: int, settle: bool = False) -> bool:
    """``count`` unmeasured runs; ``settle``: then more (up to 3) until one runs nothing, so that the last one
    left the manifest a plain `doit` starts from (a run that did other work than a host's leaves none)."""
    done: list[str] | None = None  # what the last run did (None: no run yet)
    for i in range(count + (3 if settle else 0)):
        if i >= count and done == []:
            break
        r = run_process(cmd)
        done = sorted(steps(r.ran))
        print(f"warm-up {i + 1}: {r.seconds:.3f} s ({r.cpu:.3f} s CPU), {r.rss_kb / 1024:.1f} MiB, "
              f"{len(done)} steps ran{': ' + ', '.join(done[:5]) if done else ''}", flush=True)
        if r.returncode:
            print(r.stdout[-2000:] + r.stderr[-2000:], file=sys.stderr)
            return False
    return True


def measured(runs: list[Any]) -> dict[str, list[float]]:
    return {"runs": [r.seconds for r in runs], "cpu": [r.cpu for r in runs], "rss_kb": [r.rss_kb for r in runs]}


def host_edits(site: Path, cmd: list[str], count: int) -> tuple[list[Any], list[Any], list[str]]:
    """``count`` times: bench.run's one-host edit (a new Ceph address in one host file), a measured `doit`
    that must redo that host alone, then a measured no-op; and how each edit's run loaded
    (build/state/quiet.last: "scoped: 1 hosts" when it loaded that host alone)."""
    from bench.generate import Shape
    from bench.run import EDITED_HOST

    name = Shape(EDITED_HOST).name
    return edit_runs(site, cmd, count, site / "hosts" / "nodes" / f"{name}.yaml", r"(?m)^    address: .*$",
                     lambda text: f"    address: 198.19.251.{_after(_EDITED_ADDRESS, text, 1, 250)}/15", "host edit", {name})


_EDITED_ADDRESS = r"(?m)^    address: 198\.19\.251\.(\d+)/15$"
_EDITED_DEADLINE = r"(?m)^  deadline: (\d+)$"


def host_edits_versus(site: Path, cmd: list[str], other: Path, other_cmd: list[str], count: int) -> tuple[Any, Any]:
    """host_edits on both sites, alternating (A, B in even rounds, B, A in odd ones); each side's
    (edits, no-ops after them, how each loaded), and B - A judged over the pairs."""
    from bench.generate import Shape
    from bench.run import EDITED_HOST

    name = Shape(EDITED_HOST).name
    sides = {"A": (site, cmd, ([], [], [])), "B": (other, other_cmd, ([], [], []))}
    for i in range(count):
        for label in ("A", "B") if i % 2 == 0 else ("B", "A"):
            root, c, (edits, after, ways) = sides[label]
            path = root / "hosts" / "nodes" / f"{name}.yaml"
            octet = _after(r"(?m)^    address: 198\.19\.253\.(\d+)/15$", path.read_text(), 1, 250)
            e, n, way = edit_once(root, c, path, r"(?m)^    address: .*$", f"    address: 198.19.253.{octet}/15",
                                  f"{label}: host edit {i + 1}/{count}", {name})
            edits.append(e)
            after.append(n)
            ways.append(way)
    (ea, na, _), (eb, nb, _) = sides["A"][2], sides["B"][2]
    if count:
        for label in ("A", "B"):
            edits, after, ways = sides[label][2]
            print(f"{label}: host edit - no-op: {1000 * statistics.median(e.cpu - n.cpu for e, n in zip(edits, after)):+.0f} ms "
                  f"in CPU seconds (median of the pairs' differences, {count}); loaded: {', '.join(sorted(set(ways)))}")
        print(f"B - A over {count} pairs (medians): host edit {1000 * statistics.median(b.cpu - a.cpu for a, b in zip(ea, eb)):+.1f} ms, "
              f"no-op after it {1000 * statistics.median(b.cpu - a.cpu for a, b in zip(na, nb)):+.1f} ms, edit - no-op "
              f"{1000 * statistics.median((b.cpu - y.cpu) - (a.cpu - x.cpu) for a, x, b, y in zip(ea, na, eb, nb)):+.1f} ms")
    return sides["A"][2], sides["B"][2]


def rack_hosts(site: Path) -> set[str]:
    """The hosts whose file lists bench.run's edited rack profile (a tenth of them)."""
    from bench.generate import EDITED_RACK

    listed = re.compile(rf'(?m)^profiles: .*"rack-{EDITED_RACK:02d}"')
    return {p.stem for p in (site / "hosts" / "nodes").iterdir() if listed.search(p.read_text())}


def profile_edits(site: Path, cmd: list[str], count: int) -> tuple[list[Any], list[Any], list[str]]:
    """``count`` times: bench.run's profile edit (rack-NN's map deadline, reaching a tenth of the hosts),
    a measured `doit` that must redo those hosts alone, then a measured no-op."""
    from bench.generate import EDITED_RACK

    if not count:
        return [], [], []
    return edit_runs(site, cmd, count, site / "hosts" / "profiles" / f"rack-{EDITED_RACK:02d}.yaml", r"(?m)^  deadline: \d+$",
                     lambda text: f"  deadline: {_after(_EDITED_DEADLINE, text, 400, 499)}", "profile edit", rack_hosts(site))


def _after(pattern: str, text: str, first: int, last: int) -> int:
    """The number after the one ``pattern`` finds in ``text``, from ``first`` to ``last`` and round again
    (``first`` when it finds none): an edit never writes the value the file already has."""
    found = re.search(pattern, text)
    return first if found is None or not first <= int(found[1]) < last else int(found[1]) + 1


def edit_runs(site: Path, cmd: list[str], count: int, path: Path, pattern: str, new_line: Any, what: str,
              hosts: set[str]) -> tuple[list[Any], list[Any], list[str]]:
    """``count`` edits of ``path`` (``pattern``'s line becomes ``new_line(the file's text)``), each run measured, which must
    redo ``hosts`` alone, and each followed by a measured no-op."""
    edits: list[Any] = []
    after: list[Any] = []
    ways: list[str] = []
    for i in range(count):
        e, n, way = edit_once(site, cmd, path, pattern, new_line(path.read_text()), f"{what} {i + 1}/{count}", hosts)
        edits.append(e)
        after.append(n)
        ways.append(way)
    if edits:
        extra = statistics.median(r.cpu for r in edits) - statistics.median(r.cpu for r in after)
        pairs = sorted(e.cpu - n.cpu for e, n in zip(edits, after))
        print(f"{what} - no-op: {1000 * extra:+.0f} ms in CPU seconds (medians of {count}; median of the pairs' differences "
              f"{1000 * statistics.median(pairs):+.0f} ms){f', {1000 * extra / len(hosts):.1f} ms per host' if len(hosts) > 1 else ''}; "
              f"loaded: {', '.join(sorted(set(ways)))}")
    return edits, after, ways


def edit_once(site: Path, cmd: list[str], path: Path, pattern: str, line: str, what: str, hosts: set[str]) -> tuple[Any, Any, str]:
    """One edit of ``path`` (``pattern``'s line becomes ``line``), its run measured, which must redo ``hosts``
    alone, then a measured no-op; and how the edit's run loaded (build/state/quiet.last)."""
    text = path.read_text()
    new = re.sub(pattern, line, text)
    if new == text:
        raise SystemExit(f"{path}: no line matching {pattern!r} to edit, or it already reads {line!r}")
    path.write_text(new)
    r = run_process(cmd)
    others = sorted(t for t in steps(r.ran) if t.split(":", 1)[-1] not in hosts and t != "lint:rendered")
    missing = sorted(hosts - {t.split(":", 1)[-1] for t in steps(r.ran)})
    print(f"{what}: {r.seconds:.3f} s ({r.cpu:.3f} s CPU), {r.rss_kb / 1024:.1f} MiB, "
          f"{len(steps(r.ran))} steps ran{': OTHER HOSTS OR TASKS: ' + ', '.join(others[:5]) if others else ''}"
          f"{f'; NOT REDONE: {len(missing)} of {len(hosts)} hosts' if missing else ''}", flush=True)
    if r.returncode or others or missing:
        print(r.stdout[-2000:] + r.stderr[-2000:], file=sys.stderr)
        raise SystemExit(1)
    way = (site / "build" / "state" / "quiet.last").read_text().strip()
    n = run_process(cmd)
    print(f"no-op after it: {n.seconds:.3f} s ({n.cpu:.3f} s CPU), {n.rss_kb / 1024:.1f} MiB, {len(steps(n.ran))} steps ran", flush=True)
    return r, n, way


if __name__ == "__main__":
    sys.exit(main())
