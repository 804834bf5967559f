"""The benchmark still works: a generated site is valid and varied, and the runner completes at 10 hosts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import PROJECT

from bench import generate, run
from tasks import inventory


@pytest.fixture
def a_generated_site(tmp_path: Path) -> inventory.Site:
    kernels, _ = run.kernels_to_use()
    generate.generate(tmp_path, 60, kernels)
    return inventory.load(tmp_path, use_cache=False)


def test_the_generated_site_is_valid_and_has_the_promised_variety(a_generated_site: inventory.Site) -> None:
    hosts = [h.data for h in a_generated_site.hosts.values()]
    assert len(hosts) == 60
    assert sum(1 for h in hosts if h["luks"]) == 12
    assert {h["map"]["method"] for h in hosts} == {"cli", "sysfs"}
    assert any(len(h["nics"]["ceph"]["macs"]) == 3 for h in hosts) and any(h["nics"]["user"] for h in hosts)
    assert any(h["nics"]["ceph"]["address"] == "dhcp" for h in hosts) and any(h["monolithic"] for h in hosts)
    assert len({h["kernel_version"] for h in hosts}) == len(set(run.kernels_to_use()[0]))
    # rack-03 comes with its includes, in order: base < compute < rack-03
    h3 = a_generated_site.hosts["h00003"]
    assert [s.rsplit("/", 1)[-1] for s in h3.sources[1:4]] == ["base.yaml", "compute.yaml", "rack-03.yaml"]
    assert h3.data["kernel_args"][-1] == "quiet" and h3.data["rbd"]["pool"] == "rbd-rack03"
    shapes = [generate.Shape(i) for i in range(60)]
    assert generate.hosts_with_profile(shapes, "rack-03") == {f"h{i:05d}" for i in range(3, 60, 10)}


def test_publish_bytes_count_new_inodes_not_hard_links(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 10)
    before = run.tree_state(tmp_path)
    (tmp_path / "prev").mkdir()
    (tmp_path / "prev" / "a").hardlink_to(tmp_path / "a")  # the previous generation: no data written
    (tmp_path / "new").write_bytes(b"y" * 7)
    (tmp_path / "a.tmp").write_bytes(b"z" * 3)
    (tmp_path / "a.tmp").replace(tmp_path / "a")
    assert run.bytes_written(before, run.tree_state(tmp_path)) == (10, 2)


def test_the_runner_completes_at_10_hosts_without_base_initrds(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = run.main(["--sizes", "10", "--repeat", "1", "--fake-initrd", "--shellcheck-files", "10", "--no-profile", "--monolithic", "0,2",
                     "--workdir", str(tmp_path / "work"), "--out", str(out / "BENCHMARKS.md"),
                     "--chart", str(out / "scaling.png"), "--json", str(out / "results.json")])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    per = results["results"]["10"]
    assert set(per) == set(run.SCENARIOS) | set(run.FLOORS)  # each scenario, and the floors of the same run
    assert all(m["cpu"][0] > 0 for m in per.values())
    assert all(m["problems"] == [] for m in per.values()), {k: m["problems"] for k, m in per.items()}
    assert per["noop"]["tasks_ran"] == [0]
    assert per["host"]["tasks_ran"] == [4]  # render, lint:rendered, overlay, publish of one host
    assert per["site"]["bytes"][0] > per["host"]["bytes"][0] > 0
    report = (out / "BENCHMARKS.md").read_text()
    assert "| one host file edited | " in report and "shellcheck" in report
    assert "## Cost that follows the change (issue 15)" in report and "| 10 | " in report
    assert set(results["monolithic"]["rss_kb"]) == {"0", "2"} and "## Memory against monolithic hosts" in report
    assert results["machine"]["cores"] >= 1
    assert PROJECT.joinpath("bench", "README.md").is_file()


def test_the_nginx_benchmark_gets_the_generated_block_through_nginx() -> None:
    from bench import nginx_bound

    result = nginx_bound.run([10])  # raises when nginx -t refuses the block
    rows = result["rows"]
    assert [r["hosts"] for r in rows] == [0, 10] and rows[1]["bytes"] > rows[0]["bytes"]
    assert "## nginx config with address-bound hosts" in nginx_bound.section(result)
