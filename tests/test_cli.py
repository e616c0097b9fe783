"""The command line as a user meets it: help, plan, models."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.plan import estimate
from tests.conftest import ROOT, ablate
from workloads.allcnn import rates

GRIDS = sorted((ROOT / "grids").glob("*.yaml")) + [ROOT / "examples" / "toy.yaml"]
COMMANDS = ["plan", "run", "summarize", "compare", "status", "log", "track", "plot", "models", "visualize"]


def test_help_lists_every_command():
    result = ablate("--help")
    assert result.returncode == 0
    # The rows of the Commands panel, "│ plan       Show what ...", not words of the description.
    commands = result.stdout[result.stdout.index("Commands"):]
    assert re.findall(r"^│ ([a-z]+) {2,}\S", commands, re.M) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout
    assert len(result.stdout.splitlines()) > 5


def test_help_reads_as_sentences_at_the_terminal_width():
    result = ablate("run", "--help", env={"COLUMNS": "200"})
    # A paragraph flows to the width, not broken where the source breaks it, and names the folder.
    assert "resume from their last checkpoint, and results go to STORAGE/NAME/, NAME being the grid's name" \
        in result.stdout
    # A flag is one option, so the panel leaves its help the room: --retry-failed, not --no-retry-failed too.
    options = re.findall(r"^│ (--[a-z-]+)", result.stdout, re.M)
    assert {"--retry-failed", "--resume-stopped", "--fail-fast", "--wait"} <= set(options)
    assert "--no-" not in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_is_one_option(command):
    # As in `run`: --trust-workload, not --no-trust-workload beside it and a default named after it.
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--no-" not in result.stdout, result.stdout


def test_track_help_says_a_run_of_an_untrusted_workload_is_refused():
    # track sends nothing without the workload (its config names the trackers' parameters): no
    # "results are shown without the workload's layout", which is summarize's.
    result = CliRunner().invoke(app, ["track", "--help"], env={"COLUMNS": "200"})
    assert "Without it such a run is refused." in result.stdout, result.stdout
    assert "shown without" not in result.stdout


@pytest.mark.parametrize("grid", GRIDS, ids=lambda p: p.stem)
def test_plan_json_lists_every_trial_with_its_resolved_config(grid):
    result = CliRunner().invoke(app, ["plan", str(grid), "--json"])
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["grid"] == grid.stem
    ids = [t["trial_id"] for t in plan["trials"]]
    assert len(ids) == len(set(ids)) > 0
    assert all(len(i) == 12 and "seed" in t["config"] for i, t in zip(ids, plan["trials"]))


def test_plan_json_in_a_real_process_is_one_json_object():
    result = ablate("plan", "grids/paper.yaml", "--json")
    assert result.returncode == 0
    plan = json.loads(result.stdout)
    assert len(plan["trials"]) == 192
    assert plan["trials"][0]["config"]["epochs"] == 350


def test_plan_shows_axes_trials_and_compute():
    result = CliRunner().invoke(app, ["plan", str(ROOT / "grids" / "paper.yaml")])
    assert result.exit_code == 0
    out = result.stdout
    assert "paper: 192 trials" in out
    assert "base, strided, convpool, all" in out
    assert "0.25, 0.1, 0.05, 0.01" in out
    # 192 trials x 350 epochs x 45,000 training images (5,000 held out), whole batches of 128.
    assert "training images: 3.02 Gimages" in out
    assert "compute: 3.75 EFLOP" in out
    assert "0.25 GPU" in out


def test_plan_of_a_command_grid_names_it_on_a_line_and_its_cost_as_unknown_once():
    result = ablate("plan", ROOT / "examples" / "losses.yaml", env={"COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert lines[0] == "losses: 12 trials of its command"
    # A command's cost is unknown until it runs: said once, not as unknown images and FLOPs.
    assert "trials: 12" in lines and "unknown" not in result.stdout
    assert "time: not estimated: a command says nothing of its cost before it runs; `ablate status` has an ETA " \
           "once trials report" in lines


# All-CNN-C at the paper's width and batch; 350 epochs of 45,000 CIFAR-10 images (5,000 held out)
# in whole batches of 128 are 15,724,800 images a trial.
C_ALL = {"model": "C", "variant": "all", "width": 1.0, "batch_size": 128}
MEASURED = {"date": "2026-12-03", "where": "benchmarks/gpu_check.py on gpu-1", "torch_version": "2.11.0"}


def h200(trials, images_per_second, device="NVIDIA H200"):
    return {"device": device, "kind": "gpu", **C_ALL, "trials": trials, "images_per_second": images_per_second,
            **MEASURED}


def plan_time(tmp_path, monkeypatch, measured, resources, variants="[all]", fixed=""):
    """The time lines of `ablate plan` for 2 learning rates x `variants` of Model C, 350 epochs
    (`fixed`: more lines of its `fixed:`)."""
    (tmp_path / "rates.json").write_text(json.dumps({"rates": measured}))
    monkeypatch.setattr(rates, "RATES", tmp_path / "rates.json")
    (tmp_path / "g.yaml").write_text(f"name: g\nworkload: allcnn\naxes:\n  variant: {variants}\n  lr: [0.1, 0.01]\n"
                                     f"fixed:\n  model: C\n  epochs: 350\n{fixed}resources: {resources}\n")
    result = CliRunner().invoke(app, ["plan", str(tmp_path / "g.yaml")])
    assert result.exit_code == 0, result.output
    return [line for line in result.stdout.splitlines() if line.startswith(("time", "  on "))]


def test_plan_estimates_gpu_hours_from_the_rate_measured_with_as_many_trials_per_gpu(tmp_path, monkeypatch):
    lines = plan_time(tmp_path, monkeypatch, [h200(1, 64_506.0), h200(4, 93_700.0)], "{gpus: 0.25}",
                      variants="[all, base]")
    # 2 trials x 15,724,800 images / 93,700 images/s = 0.0932 h; Model C base has no rate.
    assert lines == ["time on NVIDIA H200: 0.0932 GPU-hours for 2 of 4 trials (the others have no rate measured "
                     "there), from 93,700 images/s with 4 trials per GPU, measured 2026-12-03 by "
                     "benchmarks/gpu_check.py on gpu-1"]


def test_plan_takes_the_rate_of_fewer_trials_per_gpu_where_that_many_were_not_measured(tmp_path, monkeypatch):
    lines = plan_time(tmp_path, monkeypatch, [h200(1, 64_506.0), h200(4, 93_700.0)], "{gpus: 1}")
    assert lines == ["time on NVIDIA H200: 0.135 GPU-hours, from 64,506 images/s with 1 trial per GPU, measured "
                     "2026-12-03 by benchmarks/gpu_check.py on gpu-1"]
    lines = plan_time(tmp_path, monkeypatch, [h200(1, 64_506.0), h200(4, 93_700.0)], "{gpus: 0.5}")
    assert lines == ["time on NVIDIA H200: 0.135 GPU-hours, from 64,506 images/s with 1 trial per GPU (this grid: "
                     "2), measured 2026-12-03 by benchmarks/gpu_check.py on gpu-1"]


def test_plan_counts_trials_per_gpu_as_ray_packs_them(tmp_path, monkeypatch):
    # gpus: 0.35 each: Ray fits 2 on one GPU (3 would need 1.05), so the rate of 2 at once applies.
    lines = plan_time(tmp_path, monkeypatch, [h200(2, 80_000.0), h200(3, 90_000.0)], "{gpus: 0.35}")
    assert lines == ["time on NVIDIA H200: 0.109 GPU-hours, from 80,000 images/s with 2 trials per GPU, measured "
                     "2026-12-03 by benchmarks/gpu_check.py on gpu-1"]


def test_plan_with_max_concurrent_takes_the_rate_of_that_many_per_gpu(tmp_path, monkeypatch):
    # gpus: 0.25 would put 4 on a GPU, but only 1 runs at once: the rate of one trial alone.
    lines = plan_time(tmp_path, monkeypatch, [h200(1, 64_506.0), h200(4, 93_700.0)], "{gpus: 0.25, max_concurrent: 1}")
    assert lines == ["time on NVIDIA H200: 0.135 GPU-hours, from 64,506 images/s with 1 trial per GPU, measured "
                     "2026-12-03 by benchmarks/gpu_check.py on gpu-1"]


def test_plan_with_rates_of_several_gpus_estimates_each(tmp_path, monkeypatch):
    lines = plan_time(tmp_path, monkeypatch, [h200(2, 80_000.0, "NVIDIA H100"), h200(2, 94_000.0)], "{gpus: 0.5}")
    assert lines == [
        "time: rates are measured on 2 GPUs; the trials run on whichever the cluster has:",
        "  on NVIDIA H100: 0.109 GPU-hours, from 80,000 images/s with 2 trials per GPU, measured 2026-12-03 by "
        "benchmarks/gpu_check.py on gpu-1",
        "  on NVIDIA H200: 0.0929 GPU-hours, from 94,000 images/s with 2 trials per GPU, measured 2026-12-03 by "
        "benchmarks/gpu_check.py on gpu-1"]


@pytest.mark.parametrize("fixed", ["compile: 'off'", "precision: fp32", "channels_last: false", "device: cpu"])
def test_plan_takes_no_rate_measured_with_other_settings_than_the_trials_train_with(tmp_path, monkeypatch, fixed):
    # The rates are of the trainer's defaults (compiled, bf16 on a GPU): eager fp32 trials trained
    # at less than half the speed the plan's hours were computed from.
    lines = plan_time(tmp_path, monkeypatch, [h200(4, 93_700.0)], "{gpus: 0.25}", fixed=f"  {fixed}\n")
    assert lines == ["time: not estimated, FLOPs only: no training rate of these trials' networks is measured on a GPU "
                     "with their settings"]
    # Set to what the trainer does by default there: the rate holds.
    same = {"compile: 'off'": "compile: reduce-overhead", "precision: fp32": "precision: bf16",
            "channels_last: false": "channels_last: true", "device: cpu": "device: cuda"}[fixed]
    assert plan_time(tmp_path, monkeypatch, [h200(4, 93_700.0)], "{gpus: 0.25}", fixed=f"  {same}\n")[0].startswith(
        "time on NVIDIA H200: 0.0932 GPU-hours, from 93,700 images/s")


def test_plan_without_a_measured_rate_has_flops_only(tmp_path, monkeypatch):
    lines = plan_time(tmp_path, monkeypatch, [], "{gpus: 0.25}")
    assert lines == ["time: not estimated, FLOPs only: no training rate of these trials' networks is measured on a GPU "
                     "with their settings"]


def test_plan_of_cpu_trials_uses_the_rate_of_this_kind_of_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(estimate, "cpu_name", lambda: "cpu: Test CPU x2")
    monkeypatch.setattr(estimate, "cpu_cores", lambda: 2)
    cpu = [dict(h200(2, 1_000.0, "cpu: Test CPU x2"), kind="cpu"), dict(h200(2, 9_000.0, "cpu: Other x64"), kind="cpu")]
    # 2 trials of 1 CPU at once on 2 cores: 31,449,600 images / 1,000 images/s.
    assert plan_time(tmp_path, monkeypatch, cpu + [h200(1, 64_506.0)], "{cpus: 1}") == [
        "time on this machine (cpu: Test CPU x2): 8.74 hours, from 1,000 images/s with 2 trials at once, measured "
        "2026-12-03 by benchmarks/gpu_check.py on gpu-1"]
    # Half a CPU each: 4 trials at once on 2 cores, as Ray packs them; 4 were not measured, 2 were.
    base = dict(cpu[0], variant="base")
    assert plan_time(tmp_path, monkeypatch, cpu + [base], "{cpus: 0.5}", variants="[all, base]") == [
        "time on this machine (cpu: Test CPU x2): 17.5 hours, from the rates of 2 networks with 2 trials at once "
        "(this grid: 4), measured 2026-12-03 by benchmarks/gpu_check.py on gpu-1"]
    assert plan_time(tmp_path, monkeypatch, cpu[1:], "{cpus: 1}") == [
        "time: not estimated, FLOPs only: no training rate of these trials' networks is measured on this "
        "machine's CPU (cpu: Test CPU x2) with their settings"]


def test_models_json_has_the_paper_parameter_counts():
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert len(rows) == 24
    assert {"model": "C", "variant": "all", "classes": 10, "params": 1369738} in rows
    assert {"model": "C", "variant": "all", "classes": 100, "params": 1387108} in rows


def test_models_table():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0
    assert "Models of workload 'allcnn'" in result.stdout
    assert "1,369,738" in result.stdout and "839,242" in result.stdout


def test_models_of_a_workload_without_a_table_is_one_line():
    result = CliRunner().invoke(app, ["models", "tests.probe:WORKLOAD"])
    assert result.exit_code == 1
    assert result.stderr == "error: workload 'probe' has no table of models\n"
    result = CliRunner().invoke(app, ["models", "nope"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: unknown workload 'nope' (known: allcnn; ")


def test_importing_ablate_changes_no_process_wide_state(tmp_path):
    # Environment variables, matplotlib's backend, the import path: a library must not touch them
    # (`-P`: the working directory is not on sys.path to begin with; the repository is, by PYTHONPATH).
    # Ray and matplotlib are imported first: what they do on import is theirs, not ablate's.
    code = ("import os, sys, ray, matplotlib; env = dict(os.environ); "
            "import orchestrator.cli, orchestrator.run.runner, orchestrator.results.plots, workloads; "
            "workloads.get('tests.probe:WORKLOAD'); "
            "print(dict(os.environ) == env, os.getcwd() not in sys.path, matplotlib.rcParams._get_backend_or_none())")
    result = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split() == ["True", "True", "None"], result.stderr


@pytest.mark.parametrize("args", [["summarize", "-f", "markdown"], ["summarize"], ["compare", "--baseline", "lr=0.1"],
                                  ["plot"], ["visualize", "--trial", "t1"]], ids=" ".join)
def test_an_output_file_in_a_missing_folder_is_one_line_before_any_work(tmp_path, args):
    from tests.results_fixture import write_fixture

    write_fixture(tmp_path / "run")
    (tmp_path / "file").write_text("")
    for folder, why in [("nodir", f"there is no folder {tmp_path / 'nodir'}"),
                        ("file", f"{tmp_path / 'file'} is not a folder")]:
        output = tmp_path / folder / "out.png"
        result = CliRunner().invoke(app, [args[0], str(tmp_path / "run"), *args[1:], "-o", str(output)])
        assert result.exit_code == 1
        assert result.stderr == f"error: --output {output}: {why}\n"
        assert result.stdout == ""


@pytest.mark.parametrize("args", [["summarize", "-f", "markdown"], ["summarize"], ["compare", "--baseline", "lr=0.1"],
                                  ["plot"]], ids=" ".join)
@pytest.mark.parametrize("where", ["a read-only folder", "a full disk"])
def test_an_output_file_that_cannot_be_written_is_one_line(tmp_path, args, where):
    # A folder that exists but cannot be written ended the command with a traceback.
    from tests.results_fixture import write_fixture

    write_fixture(tmp_path / "run")
    folder = tmp_path / "out"
    folder.mkdir()
    if where == "a read-only folder":  # chattr +i holds for root, where chmod does not
        made, undo, why = ["chattr", "+i", str(folder)], ["chattr", "-i", str(folder)], "Operation not permitted"
    else:
        made, undo, why = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], ["umount", "-l", str(folder)], \
            "No space left on device"
    probe = subprocess.run(made, capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make {where} here: {probe.stderr.decode().strip()}")
    try:
        if where == "a full disk":
            (folder / "filler").write_bytes(b"x" * 64 * 1024)
        output = folder / "out.png"
        result = CliRunner().invoke(app, [args[0], str(tmp_path / "run"), *args[1:], "-o", str(output)])
        left = output.exists()  # a file cut short by the full disk, which the error line disowns
    finally:
        subprocess.run(undo, check=True)
    assert result.exit_code == 1
    assert result.stderr == f"error: --output {output}: cannot write it ({why})\n"
    assert not left


def test_a_disk_full_before_the_output_was_reached_leaves_the_file_that_was_there(tmp_path):
    # A full disk met elsewhere (a dataset's cache) is said as the output's; the figure written
    # there before is the user's, whole, and stays.
    import errno

    from orchestrator.cli.common import writing
    from orchestrator.errors import AblateError

    output = tmp_path / "units.png"
    output.write_bytes(b"an earlier figure")
    with pytest.raises(AblateError), writing(output):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert output.read_bytes() == b"an earlier figure"
