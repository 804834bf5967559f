"""The project's own shell scripts (installer, CI entry) pass shellcheck too."""
from __future__ import annotations

import subprocess

import pytest

from conftest import PROJECT
from tasks.lint import shellcheck_binary


@pytest.mark.parametrize(("script", "dialect"), [("scripts/setup", "sh"), (".ci/run", "bash")])
def test_shipped_scripts_are_shellcheck_clean(script: str, dialect: str) -> None:
    done = subprocess.run([shellcheck_binary(), f"--shell={dialect}", "--severity=style", str(PROJECT / script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
