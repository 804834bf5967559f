"""The generated nginx config with every host in secrets.mode: address: its size, and what `nginx -t` costs.

One location per address-bound host (its folder, allowed to its reserved address only, with its
boot.ipxe open to all) is what `doit nginx` writes; this builds the block for N such hosts with
tasks.nginx.nginx_conf (addresses in 198.18.0.0/15, the benchmarking range) and runs the real
`nginx -t` on it, which parses it and builds the location tree as the server does on start and
reload. Needs nginx (and root, as nginx -t wants to open its files as the workers' user).

    .venv/bin/python -m bench.nginx_bound [--hosts 100 1000 10000] [--json bench/nginx-results.json]
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.nginx import nginx_conf
from tests.e2e.boot_tree import nginx_main_conf

HEADING = "## nginx config with address-bound hosts (issue 13)"
RUNS = 5
# measured the same way on 2026-11-30 with one location per host folder and a nested exact location for
# its boot.ipxe: nginx sorts the locations of a level by insertion, so the cost grows with the square
PER_LOCATION = "0.149 s at 1,000 hosts and 4.22 s (154 MiB) at 10,000"


def bound(hosts: int) -> list[tuple[str, list[str]]]:
    first = ipaddress.IPv4Address("198.18.0.10")
    return [(f"h{i:05d}", [str(first + i)]) for i in range(hosts)]


def measure(hosts: int, work: Path) -> dict[str, Any]:
    """Size of the server block and `nginx -t` seconds and peak RSS (median of RUNS) for ``hosts``."""
    prefix = work / f"n{hosts}"
    prefix.mkdir()
    # nginx -t binds the listen address: loopback, on a port nobody uses
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = {"pxe": {"http_base": f"http://127.0.0.1:{port}/boot"}, "publish": {"target": str(work), "web_root": str(work)}}
    started = time.perf_counter()
    block = nginx_conf(settings, work, bound(hosts))
    render = time.perf_counter() - started
    (prefix / "cephboot.conf").write_text(block)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_main_conf(prefix, prefix / "cephboot.conf", "nogroup"))
    seconds, rss = [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        with subprocess.Popen(["nginx", "-t", "-q", "-p", str(prefix), "-c", str(conf)], stderr=subprocess.PIPE) as proc:
            assert proc.stderr is not None
            err = proc.stderr.read().decode()  # until nginx exits
            _, status, usage = os.wait4(proc.pid, 0)  # reaped here, for its rusage
            proc.returncode = os.waitstatus_to_exitcode(status)
        seconds.append(time.perf_counter() - started)
        if status != 0:
            raise RuntimeError(f"nginx -t refused the block for {hosts} hosts: {err}")
        rss.append(usage.ru_maxrss / 1024)
    return {"hosts": hosts, "bytes": len(block.encode()), "render_s": render, "test_s": statistics.median(seconds),
            "test_min_s": min(seconds), "test_max_s": max(seconds), "rss_mb": statistics.median(rss)}


def run(sizes: list[int]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cephboot-bench-nginx-") as work:
        rows = [measure(n, Path(work)) for n in [0, *sizes]]
    version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {"measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "nginx": version, "runs": RUNS, "rows": rows}


def section(r: dict[str, Any]) -> str:
    out = [HEADING, "",
           f"`python -m bench.nginx_bound` ({r['measured']}, {r['nginx']}): the server block `doit nginx` writes when every "
           "host is in `secrets.mode: address` (a `geo` entry per reserved address and a `map` entry per host; one regex "
           "location refuses a bound host's folder, but its `boot.ipxe`, to every other client), and the real `nginx -t` "
           f"on it: nginx parses it and builds its lookups, as on every start and reload. Median of {r['runs']} (min-max). "
           f"For comparison, a `location` with `allow`/`deny` per host (the first design) took {PER_LOCATION}.", "",
           "| address-bound hosts | server block | rendering it | `nginx -t` | peak RSS of `nginx -t` |",
           "| --- | --- | --- | --- | --- |"]
    for row in r["rows"]:
        out.append(f"| {row['hosts']:,} | {row['bytes'] / 1024:,.1f} KiB | {row['render_s'] * 1000:,.0f} ms | "
                   f"{row['test_s']:.3f} s ({row['test_min_s']:.3f}-{row['test_max_s']:.3f}) | {row['rss_mb']:.1f} MiB |")
    out += ["", "A request to a host folder tests two regex locations (dot files, the bound hosts) and looks the "
            "client up in the `geo` radix tree and the host in the `map` hash: its cost does not grow with the hosts. "
            "Past ~4,000 bound hosts (between 3,000 and 5,000 here) `nginx -t` warns `could not build optimal map_hash` and works; "
            "`map_hash_max_size 16384;` in nginx.conf's `http { }` silences it.", ""]
    return "\n".join(out)


def update_benchmarks(md: str, r: dict[str, Any]) -> str:
    """BENCHMARKS.md with this section replaced (or put before 'How it is measured')."""
    from bench.report import put_section
    return put_section(md, HEADING, section(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("nginx-results.json"))
    args = ap.parse_args()
    result = run(args.hosts)
    from bench.report import save_section
    save_section(result, args.json, HEADING, section(result))


if __name__ == "__main__":
    main()
