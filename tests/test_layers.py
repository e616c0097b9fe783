"""The package layering in pyproject.toml ([tool.importlinter]): a module that imports against it
(a workload importing the orchestrator, Ray outside the run stage, a driver module on the trial
side) fails here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_imports_follow_the_stages():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in result.stdout
