"""A trial's files in storage: checkpoints of workloads with and without torch."""
from __future__ import annotations

import subprocess
import sys

import torch

from orchestrator.store import RunDir, StoredSession
from tests.conftest import ROOT


def test_a_workload_without_torch_checkpoints_and_resumes_without_importing_it(tmp_path):
    # A script or a plain-Python workload should not pay torch's import in every Ray worker.
    code = ("import sys; from orchestrator.store import RunDir, StoredSession; "
            f"s = StoredSession(RunDir({str(tmp_path)!r}), 't'); s.start(); "
            "s.report({'epoch': 1}, checkpoint={'step': 7}); "
            f"again = StoredSession(RunDir({str(tmp_path)!r}), 't'); "
            "print(again.restore(), again.epochs, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split("\n")[0] == "{'step': 7} [{'epoch': 1}] False", result.stderr


def test_a_checkpoint_with_tensors_resumes_with_them(tmp_path):
    session = StoredSession(RunDir(str(tmp_path)), "t")
    session.start()
    session.report({"epoch": 1}, checkpoint={"weights": torch.arange(3.0)})
    restored = StoredSession(RunDir(str(tmp_path)), "t").restore()
    assert torch.equal(restored["weights"], torch.arange(3.0))
    assert (tmp_path / "trials" / "t" / "checkpoint.pt").read_bytes()[:2] == b"PK"  # torch.save's zip
