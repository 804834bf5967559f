"""The engine's contract (tasks/engine.py): what `doit info` shows of a stage, at any scale."""
from __future__ import annotations

from pathlib import Path

from conftest import Site

from bench import generate, run


def test_doit_info_shows_a_stage_in_a_few_lines_at_any_number_of_hosts(tmp_path: Path) -> None:
    """The check's findings (task.meta) print as one line with a count and a few names, never a record per host."""
    kernels, _ = run.kernels_to_use()
    generate.generate(tmp_path, 300, kernels)
    site = Site(tmp_path)
    out = site.doit("info", "render:hosts", check=False).stdout
    meta = [line for line in out.splitlines() if line.startswith("meta")]
    assert meta == ["meta       : {'due': <300 of 300 hosts due: h00000, h00001, h00002, h00003, h00004, ...>}"], out
    assert len(out.splitlines()) < 20 and "h00299" not in out, out
