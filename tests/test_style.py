"""The code style the README promises: `ruff check` and `ruff format --check` clean, with the ruff
pinned in the dev extra and the settings in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

RUFF = Path(sys.executable).parent / "ruff"
PATHS = ["qa_forge", "stages", "bench", "tests"]


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(args):
    proc = subprocess.run([str(RUFF), *args, *PATHS], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
