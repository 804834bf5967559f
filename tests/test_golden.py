"""Golden files: every rendered artifact of every case under tests/cases/ matches its expected copy.

Adding a case means adding a folder tests/cases/<case>/hosts/.  To accept new
output after an intended change: CEPHBOOT_UPDATE_GOLDEN=1 pytest tests/test_golden.py
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import Site

CASES = Path(__file__).parent / "cases"
UPDATE = os.environ.get("CEPHBOOT_UPDATE_GOLDEN") == "1"


def rendered(site: Site) -> dict[str, bytes]:
    out = {}
    for top in ("hosts", "site"):
        for p in sorted((site.build / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(site.build))] = p.read_bytes()
    return out


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if (p / "hosts").is_dir()))
def test_rendered_files_match_the_golden_copies(case: str, tmp_path: Path) -> None:
    shutil.copytree(CASES / case / "hosts", tmp_path / "hosts")
    for secret in (tmp_path / "hosts" / "keys").iterdir():
        secret.chmod(0o600)  # git does not keep modes; the inventory insists on 0600
    site = Site(tmp_path)
    site.doit("render")
    got = rendered(site)
    expected_dir = CASES / case / "expected"
    if UPDATE:
        shutil.rmtree(expected_dir, ignore_errors=True)
        for rel, data in got.items():
            (expected_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (expected_dir / rel).write_bytes(data)
    expected = {str(p.relative_to(expected_dir)): p.read_bytes() for p in sorted(expected_dir.rglob("*")) if p.is_file()}
    assert sorted(got) == sorted(expected), "the set of rendered files changed"
    for rel in expected:
        assert got[rel].decode() == expected[rel].decode(), f"{case}: {rel} differs from its golden copy"


def test_secrets_are_rendered_owner_only(tmp_path: Path) -> None:
    shutil.copytree(CASES / "example" / "hosts", tmp_path / "hosts")
    for secret in (tmp_path / "hosts" / "keys").iterdir():
        secret.chmod(0o600)
    site = Site(tmp_path)
    site.doit("render")
    modes = {str(p.relative_to(site.build)): p.stat().st_mode & 0o777 for p in site.build.rglob("*") if p.is_file() and "hosts/" in str(p)}
    secrets = {k: v for k, v in modes.items() if k.endswith((".keyring", ".key", "/sealed", "/sealed.stamp"))}
    assert len(secrets) == 4 + 3 * 2  # three keyrings and one LUKS key; three sealed envelopes and their stamps
    assert set(secrets.values()) == {0o600}
    assert all(v == 0o644 for k, v in modes.items() if k not in secrets)
