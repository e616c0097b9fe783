"""benchmarks/gpu_check.py's pieces on a CPU, small: the JSON line a GPU run will print, and the
rates it records for `ablate plan`."""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import subprocess
import sys
import time

import pytest
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent, FunctionEventAvg

from benchmarks import gpu_check
from tests.conftest import ROOT
from workloads.allcnn import Config, WORKLOAD, rates

KEYS = {"loss_falls", "resume_exact", "reference_images_per_second", "images_per_second", "processes",
        "compile_seconds", "device", "torch_version"}


@pytest.fixture(scope="module")
def check(tmp_path_factory):
    """One small run on synthetic data (an empty data directory): 2 epochs of 14 steps, then speed
    epochs of 2 steps timed over 1 s, by 1 and by 2 trainer processes, then one profiled epoch."""
    out = tmp_path_factory.mktemp("gpu-check")
    argv = ["--device", "cpu", "--quick", "--data-dir", str(out), "--width", "0.125", "--batch", "32",
            "--epochs", "2", "--train-size", "512", "--val-size", "64", "--lr", "0.05", "--steps", "2",
            "--window", "1", "--processes", "1,2", "--compile", "off", "--reference-steps", "2", "--repeats", "1",
            "--workers", "0", "--json", str(out / "check.json"), "--trace", str(out / "trace.json.gz")]
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


def test_the_check_ends_with_one_profiled_epoch_and_its_trace(check):
    stdout, check = check
    profile = check["profile"]
    # On a CPU the operators are the work, ranked by their time: the network's convolutions are
    # among the first (which one leads varies on a busy machine); no device kernels.
    seconds = [op["seconds"] for op in profile["host_ops"]]
    assert seconds == sorted(seconds, reverse=True)
    assert any("convolution" in op["name"] for op in profile["host_ops"][:6])
    assert sum(op["seconds"] for op in profile["host_ops"]) <= profile["host_seconds"] + 1e-9
    assert profile["device_ops"] == [] and profile["device_busy_fraction"] is None
    assert "profile of one epoch of a trainer process alone" in stdout
    assert f"calls  {profile['host_ops'][0]['name']}" in stdout
    with gzip.open(profile["trace"]) as f:
        names = {event.get("name") for event in json.load(f)["traceEvents"]}
    assert "aten::convolution_backward" in names  # Chrome's trace format, for Perfetto


def test_a_profiled_gpu_epoch_counts_each_kernel_once_and_no_annotation():
    # The events kineto gives for a CUDA-graph step, as FunctionEvents: the launch on the host, which
    # also lists the kernel it launched, the kernels on the device, and a user annotation there.
    def event(i, name, start, end, device_type=DeviceType.CPU, **kw):
        return FunctionEvent(i, name, thread=0, start_us=start, end_us=end, use_device="cuda",
                             device_type=device_type, **kw)

    launch = event(1, "cudaGraphLaunch", 0, 50)
    launch.append_kernel("conv_kernel", 0, 300)
    events = [launch, event(2, "conv_kernel", 60, 360, DeviceType.CUDA),
              event(3, "sgd_kernel", 360, 460, DeviceType.CUDA),
              event(4, "## Call CompiledFxGraph ##", 0, 500, DeviceType.CUDA, is_user_annotation=True)]
    averages = {}
    for e in events:  # what the profiler's key_averages() gives
        averages.setdefault(e.key, FunctionEventAvg()).add(e)
    summary = gpu_check.profile_summary(list(averages.values()), seconds=0.001, trace=None)
    assert summary["device_seconds"] == pytest.approx(400e-6)
    assert [(op["name"], op["calls"], op["share"]) for op in summary["device_ops"]] == [
        ("conv_kernel", 1, 0.75), ("sgd_kernel", 1, 0.25)]
    assert [op["name"] for op in summary["host_ops"]] == ["cudaGraphLaunch"]
    assert summary["host_seconds"] == pytest.approx(50e-6)
    lines = gpu_check.profile_table({**summary, "device_busy_fraction": 0.4})
    assert "  the GPU: busy 0.000 s, 40% of the trainer's epoch" in lines
    assert any(line.endswith("1 calls  conv_kernel") and "75%" in line for line in lines)


def test_a_profile_that_fails_says_so_and_keeps_what_was_measured(tmp_path):
    # The timed window is over at the first report; the profiled epoch ends at the second.
    session = gpu_check.WindowSession(go=time.time(), window=0, profile={"trace": str(tmp_path / "gone" / "t.json.gz")})
    session.report({"seconds": 0.5})
    with pytest.raises(gpu_check.Stop):
        session.report({"seconds": 0.6})
    assert [e["seconds"] for e in session.epochs] == [0.5] and session.peak_memory_mb > 0
    assert "No such file or directory" in session.profile["error"]
    assert gpu_check.profile_table(session.profile)[1].startswith("profile of one epoch: failed (")


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
    # The lent GPU machines have torch but no Ray (benchmarks/README.md: what travels there); of
    # ablate's own modules the check takes the trainer and the store's checkpoint format alone.
    code = ("import sys; import benchmarks.gpu_check; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow', 'pandas', 'rich', "
            "'orchestrator')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == str(["orchestrator", "orchestrator.errors", "orchestrator.store",
                                         "orchestrator.store.checkpoint"]), result.stderr
