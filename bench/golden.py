"""Provisioning N hosts as clones of a golden image, as stateless hosts of it, and with one image each (`rbd import`): time and bytes per host, cluster space.

Needs what the end-to-end suite needs (root, /dev/fuse, the Ceph daemons): it starts a
throwaway single-node cluster of the suite's kind (tests/e2e) in a network namespace of its
own, provisions the same small busybox root (tests/e2e/root_image.py) both ways with real
`doit` processes, and stops everything it started.

    .venv/bin/python -m bench.golden --hosts 10 [--size 64M] [--json bench/golden-results.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.ceph_cluster import CephCluster
from tests.e2e.netns import NetworkNamespace
from tests.e2e.provision_site import ProvisionSite
from tests.e2e.root_image import build_root_tree

POOL = "bench"


def _tree(path: Path) -> Path:
    empty = path.parent / "no-rendered-files"
    empty.mkdir(exist_ok=True)
    build_root_tree(path, "template", empty)
    (path / "usr" / "sbin").mkdir(parents=True, exist_ok=True)
    (path / "usr" / "sbin" / "update-initramfs").write_text("#!/bin/sh\n")
    return path


def _stored(cluster: CephCluster) -> int:
    """Bytes the RBD pool stores (before replication), as `ceph df` says."""
    for p in cluster.ceph_json("df")["pools"]:
        if p["name"] == POOL:
            return int(p["stats"]["stored"])
    raise KeyError(POOL)


def _used(cluster: CephCluster, spec: str) -> int:
    """The image's own allocated bytes (a clone's: only what it wrote, not its parent's)."""
    images = json.loads(cluster.rbd("du", "--format", "json", spec).stdout)["images"]
    return int(sum(i["used_size"] for i in images if "snapshot" not in i))


def _settle(cluster: CephCluster, seconds: float = 8) -> int:
    time.sleep(seconds)  # `ceph df` lags the OSD's statistics by a few seconds
    return _stored(cluster)


def run(hosts: int, size: str, work: Path) -> dict[str, Any]:
    netns = NetworkNamespace()
    netns.create()
    run_dir = Path(tempfile.mkdtemp(prefix="cephboot-bench-"))
    cluster = CephCluster(netns, work / "ceph", run_dir)
    try:
        cluster.start()
        cluster.create_rbd_pool(POOL)
        tree = _tree(work / "tree")
        out: dict[str, Any] = {"hosts": hosts, "size": size, "tree_bytes": sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())}
        snap = ""
        for method in ("import", "clone", "stateless"):
            site = ProvisionSite(cluster, netns, work / method, f"/bench-{method}", "http://192.0.2.1:8099",
                                 {"rbd": {"pool": POOL, "size": size, "features": ["layering"]}, "rootfs": {"source": str(tree)}})
            before = _settle(cluster, 1)
            image_s = 0.0
            if method != "import":
                (site.hosts / "images").mkdir()
                (site.hosts / "images" / "base.yaml").write_text(yaml.safe_dump({"rootfs": {"source": str(tree)}, "size": size, "pool": POOL}))
            names = [f"{method[:2]}{i:03d}" for i in range(hosts)]
            for i, name in enumerate(names):
                extra = {"root": {"image": "base"}} if method == "clone" else {}
                if method == "stateless":  # the version the clones were made from: built once, by the clone run
                    extra = {"root": {"image": "base", "mode": "stateless", "snapshot": snap}}
                site.add_host(name, f"52:54:00:ee:{('import', 'clone', 'stateless').index(method):02x}:{i:02x}", **extra)
            if method == "clone":
                t = time.monotonic()
                built = site.doit("image:base").stdout
                image_s = time.monotonic() - t
                snap = built.split("@", 1)[1].split()[0]
            site.doit("render")  # the hosts' files, outside the timed steps (both methods need them)
            times = []
            for name in names:
                t = time.monotonic()
                site.doit("provision", "--only", name)
                times.append(time.monotonic() - t)
            # a stateless host has no image: nothing of its own in RBD
            used = [0 if method == "stateless" else _used(cluster, f"{POOL}/{name}/root") for name in names]
            after = _settle(cluster)
            out[method] = {
                "golden_image_s": round(image_s, 2),
                "provision_s_per_host": {"median": round(sorted(times)[len(times) // 2], 2), "min": round(min(times), 2), "max": round(max(times), 2)},
                "image_bytes_per_host": {"median": sorted(used)[len(used) // 2], "min": min(used), "max": max(used)},
                "pool_stored_bytes_added": after - before,
            }
            print(json.dumps({method: out[method]}), flush=True)
        return out
    finally:
        try:
            cluster.unmount_admin_fs()
        finally:
            cluster.stop()
            netns.delete()
            shutil.rmtree(run_dir, ignore_errors=True)


HEADING = "## Golden images: clone against import (issue 14)"


def section(r: dict[str, Any]) -> str:
    """The BENCHMARKS.md section for a result of run()."""
    imp, cl, sl = r["import"], r["clone"], r["stateless"]
    mib = 1 << 20

    def row(name: str, m: dict[str, Any]) -> str:
        t, b = m["provision_s_per_host"], m["image_bytes_per_host"]
        return (f"| {name} | {t['median']} s ({t['min']}-{t['max']}) | {b['median'] / mib:.2f} MiB ({b['min'] / mib:.2f}-{b['max'] / mib:.2f}) "
                f"| {m['pool_stored_bytes_added'] / mib:.1f} MiB |")

    return "\n".join([
        HEADING, "",
        f"`python -m bench.golden --hosts {r['hosts']} --size {r['size']}`: {r['hosts']} hosts provisioned one `doit provision --only <host>` at a time "
        f"on a throwaway single-node cluster (the e2e suite's kind), from the same busybox root ({r['tree_bytes'] / mib:.1f} MiB of files) in "
        f"{r['size']} images: once with an image of their own each (`mkfs.ext4 -d` + `rbd import`), once as clones of a golden image "
        f"(`doit image:base` first: {cl['golden_image_s']} s, once), once as stateless hosts booting that same version read-only "
        f"(no image of their own; the golden image already there). Time is the whole provisioning step (namespace, client, /boot through "
        "ceph-fuse, root image), median (min-max). Bytes per host: `rbd du` of the host's image (a clone's own objects only). "
        "Cluster: what the RBD pool stores after, less before (`ceph df`, before replication; the golden image included for clones).", "",
        "| method | provisioning per host | image bytes per host | pool growth, all hosts |",
        "| --- | --- | --- | --- |",
        row("own image (import)", imp),
        row("clone of a golden image", cl),
        row("stateless (golden snapshot read-only)", sl),
        "",
        "What this says, and what it does not: a clone's own objects are those debugfs touched when it wrote the host's files "
        "(inode table, bitmaps, directories, the files' blocks), copied up from the parent on first write; they do not grow with "
        "the root. A stateless host stores nothing in RBD: its provisioning is the client and /boot. An image of its own holds every used block of the root, so its cost grows with it (a Debian root: ~1 GB per "
        f"host, docs/provisioning.md). With this {r['tree_bytes'] / mib:.1f} MiB root the data written to the pool is about the same "
        f"either way; per host a clone took {cl['provision_s_per_host']['median']} s against the import's "
        f"{imp['provision_s_per_host']['median']} s (a clone pays for the FUSE export, debugfs and reading every file back, an import "
        "for writing the whole root, which this small root keeps cheap): the sure gain is in allocated objects (`rbd du`). Not "
        "measured: a root large enough for the import to dominate.", "",
    ])


def update_benchmarks(md: str, r: dict[str, Any]) -> str:
    """BENCHMARKS.md with its golden-image section replaced (or put before 'How it is measured')."""
    from bench.report import put_section
    return put_section(md, HEADING, section(r))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10)
    ap.add_argument("--size", default="64M")
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("golden-results.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cephboot-bench-golden-"))
    try:
        result = run(args.hosts, args.size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from bench.report import save_section
    save_section(result, args.json, HEADING, section(result))


if __name__ == "__main__":
    main()
