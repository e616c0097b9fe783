"""benchmarks/gpu_check.py's pieces on a CPU, small: the JSON line a GPU run will print, and the
rates it records for `ablate plan`."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest

from benchmarks import gpu_check
from tests.conftest import ROOT
from workloads.allcnn import Config, WORKLOAD, rates

KEYS = {"loss_falls", "resume_exact", "reference_images_per_second", "images_per_second", "processes",
        "compile_seconds", "device", "torch_version"}


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    """One small run on synthetic data (an empty data directory): 2 epochs of 14 steps, then speed
    epochs of 2 steps timed over 1 s, by 1 and by 2 trainer processes."""
    out = tmp_path_factory.mktemp("gpu-check")
    argv = ["--device", "cpu", "--quick", "--data-dir", str(out), "--width", "0.125", "--batch", "32",
            "--epochs", "2", "--train-size", "512", "--val-size", "64", "--lr", "0.05", "--steps", "2",
            "--window", "1", "--processes", "1,2", "--compile", "off", "--reference-steps", "2", "--repeats", "1",
            "--workers", "0", "--json", str(out / "check.json")]
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert gpu_check.main(argv) == 0
    return stdout.getvalue(), json.loads((out / "check.json").read_text())


def test_the_quick_check_prints_a_table_then_its_json_line_last(check):
    stdout, check = check
    assert json.loads(stdout.splitlines()[-1]) == check
    assert "  loss falls      yes " in stdout and "  resume exact    yes " in stdout
    assert KEYS <= check.keys()
    assert check["device"] == "cpu" and check["device_name"].startswith("cpu: ")
    assert check["loss_falls"] is True
    assert check["resume_exact"] is True
    assert check["bf16_fp32_agree"] is None and "CUDA only" in check["bf16_fp32_skipped"]
    assert [p["n"] for p in check["processes"]] == [1, 2]
    assert all(p["images_per_second"] > 0 and p["peak_memory_mb"] > 0 and len(p["per_process"]) == p["n"]
               for p in check["processes"])
    assert check["images_per_second"] > 0
    assert check["compile_seconds"] is None and check["skipped"] == ["compile (--compile off)"]
    assert check["errors"] == {}


def test_images_in_a_window_count_each_epoch_by_its_overlap():
    epochs = [{"end": 2.0, "seconds": 1.0}, {"end": 4.0, "seconds": 2.0}, {"end": 5.0, "seconds": 1.0}]
    # Window [1.5, 4.5]: half of the first epoch, all of the second, half of the third.
    assert gpu_check.window_images(epochs, 1.5, 4.5, images=100) == 200.0
    assert gpu_check.window_images(epochs, 5.0, 6.0, images=100) == 0.0


def test_recorded_rates_are_the_workloads_for_that_network(check, tmp_path, monkeypatch):
    _, check = check
    monkeypatch.setattr(rates, "RATES", tmp_path / "rates.json")
    rates.record(check, "benchmarks/gpu_check.py --quick on test")
    again = dict(check, processes=[{"n": 1, "images_per_second": 123.0}])
    rates.record(again, "a second run")  # replaces the rate of 1 process, keeps that of 2
    network = Config(model="C", variant="all", width=0.125, batch_size=32)
    measured = WORKLOAD.rates(network)
    assert [(r["trials"], r["where"]) for r in measured] == [(1, "a second run"),
                                                             (2, "benchmarks/gpu_check.py --quick on test")]
    assert measured[0] | {"date": "-", "torch_version": "-"} == {
        "device": check["device_name"], "kind": "cpu", "model": "C", "variant": "all", "width": 0.125,
        "batch_size": 32, "trials": 1, "images_per_second": 123.0, "date": "-", "where": "a second run",
        "torch_version": "-"}
    assert WORKLOAD.rates(Config(model="C", variant="all", width=0.125, batch_size=64)) == []


def test_the_check_imports_nothing_a_gpu_machine_lacks():
    # The lent GPU machines have torch but no Ray or pyarrow (benchmarks/README.md: what travels there).
    code = ("import sys; import benchmarks.gpu_check; "
            "print(sorted(m for m in ('ray', 'pyarrow', 'pandas', 'orchestrator', 'rich') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr
