"""A plain `doit list` from the last run's summary of top-level tasks (tasks/listing.py)."""
from __future__ import annotations

from pathlib import Path

from conftest import PROJECT, copy_site

from tasks import listing


def test_doit_list_prints_what_a_full_load_prints_and_follows_site_yaml(tmp_path: Path) -> None:
    site = copy_site(PROJECT, tmp_path)
    summary = site.root / listing.SUMMARY
    full = site.doit("list").stdout  # no summary yet: every task loaded
    assert "render" in full and "http://192.0.2.5/boot/" in full and not summary.exists()
    site.doit("render")  # a run writes the summary
    assert summary.stat().st_mode & 0o777 == 0o600
    assert site.doit("list").stdout == full
    site.edit("nodes/notus.yaml", "panic=30,", "panic=31,")  # a host edit changes no top-level name or doc
    assert site.doit("list").stdout == full
    site.edit("site.yaml", "http_base: http://192.0.2.5/boot", "http_base: http://192.0.2.6/boot")
    listed = site.doit("list").stdout  # site.yaml changed: the summary is not used
    assert "http://192.0.2.6/boot/" in listed and "http://192.0.2.5/boot/" not in listed
    assert site.doit("list", "--all").stdout.count("\n") > listed.count("\n")
