"""The code passes `ruff check` with the project's config (pyproject.toml, [tool.ruff]): CI enforces the linter."""
from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT


def test_the_code_passes_ruff() -> None:
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                       cwd=PROJECT, capture_output=True, text=True)
    assert r.returncode == 0, f"ruff check found problems (scripts/setup installs ruff with the test extra):\n{r.stdout}{r.stderr}"
