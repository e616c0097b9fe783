"""Successive halving inside each cell (`halving:`), on a real local Ray: which settings train to
the end, what is stopped where, what a rerun, a killed driver and a grown grid do."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import GridError, ResultsError
from orchestrator.plan.grid import load_grid
from orchestrator.plan.halving import planned, read_decisions
from orchestrator.run import runner
from orchestrator.run.halving import Halver
from orchestrator.run.runner import run_grid
from orchestrator.store import records
from orchestrator.store.records import trial_schema, write_record
from orchestrator.store.rundir import RunDir
from tests.results_fixture import write_run
from tests.runs import executions, probe_grid, quiet, trials

ABLATE = os.path.join(os.path.dirname(sys.executable), "ablate")
ROOT = Path(__file__).resolve().parent.parent
HALVING = {"over": ["lr"], "rungs": [2, 4], "keep": 0.5}
LRS = [0.1, 0.2, 0.3, 0.4]


def halved_grid(tmp_path: Path, seeds=(0, 1), sleep=0.0, lrs=LRS) -> Path:
    """4 lrs x 2 seeds x 2 targets (the lr each cell does best with: 0.1 for target 0, 0.4 for 0.45)."""
    return probe_grid(tmp_path, axes={"target": [0.0, 0.45], "lr": lrs}, fixed={"epochs": 8, "sleep": sleep},
                      seeds=list(seeds), halving=HALVING)


def epochs_trained(tmp_path: Path) -> int:
    log = tmp_path / "markers" / "epochs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def run(path: Path, storage: Path, **kwargs):
    grid = load_grid(path)
    return run_grid(grid, RunDir.for_grid(str(storage), grid.name), quiet(), **kwargs)


def kept(run_dir: Path) -> list[tuple]:
    """(cell, rung, kept settings) of every decision."""
    return sorted((json.dumps(d["cell"]), d["rung"], tuple(d["kept"])) for d in read_decisions(RunDir(str(run_dir))))


@pytest.mark.parametrize("halving, key, message", [
    ({"over": ["width"], "rungs": [2], "keep": 0.5}, "halving.over[0]", "expected an axis of the grid (axes: lr, target)"),
    ({"over": ["lr"], "rungs": [4, 2], "keep": 0.5}, "halving.rungs", "expected increasing whole numbers"),
    ({"over": ["lr"], "rungs": [2, 8], "keep": 0.5}, "halving.rungs", "the last rung (8) must come before the end"),
    ({"over": ["lr"], "rungs": [2], "keep": 1.5}, "halving.keep", "expected a fraction between 0 and 1"),
    ({"over": ["lr"], "rungs": [2]}, "halving.keep", "missing"),
    ({"over": ["lr"], "rungs": [2], "keep": 0.5, "eta": 3}, "halving.eta", "unknown key"),
])
def test_a_bad_halving_is_one_line_naming_the_key(tmp_path, halving, key, message):
    path = probe_grid(tmp_path, axes={"target": [0.0], "lr": LRS}, fixed={"epochs": 8}, halving=halving)
    with pytest.raises(GridError) as e:
        load_grid(path)
    assert f": {key}: " in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_damaged_halving_decisions_are_one_line_naming_the_file(tmp_path):
    run_dir = RunDir(str(tmp_path))
    (tmp_path / "halving.json").write_text('[{"cell": {}, "cell_k')  # a copy cut short
    with pytest.raises(ResultsError) as e:
        read_decisions(run_dir)
    assert str(e.value) == (f"{tmp_path / 'halving.json'}: unreadable halving decisions (Unterminated string starting "
                            "at: line 1 column 15 (char 14)); restore it from where the run was copied")


def test_a_script_with_epochs_among_its_steps_is_ranked_by_its_last_epoch_value_up_to_the_rung(tmp_path):
    # val_loss comes with each epoch's row, between step rows; an evaluation before any step has no
    # step. Ranked at step 20 (its first report there), each setting has its epoch 1's val_loss.
    grid_text = ("name: mixed\ncommand:\n  run: python train.py --lr {lr} --steps {steps} --seed {seed}\n"
                 "  parameters:\n    lr: 0.1\n    steps: 40\n  steps: steps\nmetric: val_loss\n"
                 "axes:\n  lr: [0.1, 0.5]\nhalving: {over: [lr], rungs: [20], keep: 0.5}\n")
    run = write_run(tmp_path / "run", grid_text, lambda t: None)
    grid = load_grid(tmp_path / "run" / "grid.yaml")
    schema = trial_schema(grid.workload.config)
    for trial in grid.trials:
        val_loss = 0.6 if trial.config["lr"] == 0.1 else 0.3
        epochs = [{"epoch": 0, "val_loss": 0.95}, {"step": 10, "loss": 1.0}, {"epoch": 1, "val_loss": val_loss,
                  "step": 10}, {"step": 20, "loss": 0.9}, {"step": 30, "loss": 0.8}, {"step": 40, "loss": 0.7}]
        write_record(run, schema, trial.trial_id, trial.config, {"status": "completed", "val_loss": val_loss}, epochs)
    Halver(grid, run).next({t.trial_id: "completed" for t in grid.trials})
    (decision,) = read_decisions(run)
    assert decision["kept"] == [json.dumps({"lr": 0.5})]


@pytest.mark.parametrize("other", ["paused", "diverged"])
def test_a_paused_trial_whose_epochs_file_is_damaged_ranks_last_and_is_named_in_a_note(tmp_path, other):
    # Its setting ranked last in silence: the best lr was stopped for good by a disk fault, unnamed.
    # Where the other setting has no value either (it diverged), the first is kept: the note said
    # of that one that it "ranks last".
    grid_text = ("name: paused\ncommand:\n  run: python train.py --lr {lr} --epochs {epochs} --seed {seed}\n"
                 "  parameters:\n    lr: 0.1\n    epochs: 4\n  epochs: epochs\nmetric: val_loss\n"
                 "axes:\n  lr: [0.1, 0.2]\nhalving: {over: [lr], rungs: [2], keep: 0.5}\n")
    run = write_run(tmp_path / "run", grid_text, lambda t: None)
    grid = load_grid(tmp_path / "run" / "grid.yaml")
    for trial in grid.trials:  # both paused at the rung; lr 0.1 is the better, but its epochs file is damaged
        lines = [json.dumps({"epoch": e, "val_loss": trial.config["lr"] + 1 / e}) for e in (1, 2)]
        if trial.config["lr"] == 0.1:
            lines[1] = lines[1][:12]
        elif other == "diverged":
            lines[1] = json.dumps({"epoch": 2, "val_loss": float("nan")})
        run.write_bytes(run.trial_file(trial.trial_id, "epochs.jsonl"), "".join(f"{line}\n" for line in lines).encode())
        run.write_progress(trial.trial_id, {"attempt": 1, "epoch": 2, "paused_at": 2, "metrics": {}})
    notes = []
    Halver(grid, run, notify=notes.append).next({})
    damaged = next(t.trial_id for t in grid.trials if t.config["lr"] == 0.1)
    assert notes == [f"{tmp_path / 'run' / 'trials' / damaged / 'epochs.jsonl'}: unreadable, so trial {damaged} "
                     "has no val_loss at 2: its setting ranks after those that have one there"]
    (decision,) = read_decisions(run)
    assert decision["kept"] == [json.dumps({"lr": 0.2 if other == "paused" else 0.1})]
    assert [e["why"] for e in decision["ranking"]] == ([None, "an unreadable epochs file"] if other == "paused"
                                                       else ["an unreadable epochs file", "diverged"])


def test_a_cell_whose_kept_settings_still_train_has_no_result_yet_not_stopped(tmp_path):
    # Mid-run, after the rung: lr 0.3 and 0.4 were stopped, lr 0.1 and 0.2 train on. The table said
    # the cell was "stopped (4/4)", as if every lr of it had been stopped.
    grid_text = ("name: mid\ncommand:\n  run: python train.py --lr {lr} --model {model} --seed {seed}\n  parameters:\n    lr: 0.1\n"
                 "    model: a\nmetric: val_error\naxes:\n  model: [a, b]\n  lr: [0.1, 0.2, 0.3, 0.4]\nseeds: [0, 1]\n"
                 "halving: {over: [lr], rungs: [2], keep: 0.5}\n")
    write_run(tmp_path / "mid", grid_text, lambda t: {"status": "stopped", "epochs_completed": 2, "val_error": 0.5}
              if t.config["lr"] > 0.2 and t.config["model"] == "a" else None)
    shown = CliRunner().invoke(app, ["summarize", str(tmp_path / "mid"), "--format", "markdown"])
    assert "| a | no result yet<br>stopped early: lr 0.3, 0.4 at 2 |" in shown.stdout, shown.stdout
    # A grid whose only varying axis is halved is one cell, its row the grid's name.
    write_run(tmp_path / "one", grid_text.replace("name: mid", "name: one").replace("  model: [a, b]\n", ""),
              lambda t: {"status": "stopped", "epochs_completed": 2, "val_error": 0.5, "grid": "one"}
              if t.config["lr"] > 0.2 else None)
    shown = CliRunner().invoke(app, ["summarize", str(tmp_path / "one"), "--format", "markdown"])
    assert "| one | no result yet<br>stopped early: lr 0.3, 0.4 at 2 |" in shown.stdout, shown.stdout


def test_a_finished_cell_shown_by_its_stopped_trials_alone_is_stopped_not_waiting(tmp_path):
    # `--where status=stopped` of a finished run: the kept settings completed, their rows left out by
    # the filter. The cell said "no result yet", as if they still trained.
    grid_text = ("name: done\ncommand:\n  run: python train.py --lr {lr} --seed {seed}\n  parameters:\n    lr: 0.1\n"
                 "metric: val_error\naxes:\n  lr: [0.1, 0.2, 0.3, 0.4]\nseeds: [0, 1]\n"
                 "halving: {over: [lr], rungs: [2], keep: 0.5}\n")
    write_run(tmp_path / "done", grid_text, lambda t: {"status": "stopped", "epochs_completed": 2, "val_error": 0.5, "grid": "done"}
              if t.config["lr"] > 0.2 else {"status": "completed", "val_error": 0.3, "grid": "done"})
    shown = CliRunner().invoke(app, ["summarize", str(tmp_path / "done"), "--format", "markdown",
                                     "--where", "status=stopped"])
    assert "| done | stopped (4/4) |" in shown.stdout, shown.stdout
    # Mid-run, the kept settings' trials have no row yet: the cell still waits for them.
    write_run(tmp_path / "mid", grid_text.replace("name: done", "name: mid"), lambda t: {
        "status": "stopped", "epochs_completed": 2, "val_error": 0.5, "grid": "mid"} if t.config["lr"] > 0.2 else None)
    shown = CliRunner().invoke(app, ["summarize", str(tmp_path / "mid"), "--format", "markdown",
                                     "--where", "status=stopped"])
    assert "| mid | no result yet<br>stopped early: lr 0.3, 0.4 at 2 |" in shown.stdout, shown.stdout


def test_a_grid_whose_rungs_were_edited_after_its_decisions_is_titled_by_the_rung_they_were_made_at(tmp_path):
    # `rungs: [3]` run to its end, then edited to [4] and run again (nothing to do): the title said
    # "chosen ... at epoch 4" over cells that say "stopped early ... at 3".
    grid_text = ("name: edited\ncommand:\n  run: python train.py --lr {lr} --seed {seed}\n  parameters:\n    lr: 0.1\n"
                 "metric: val_error\naxes:\n  lr: [0.1, 0.2, 0.3, 0.4]\nseeds: [0, 1]\n"
                 "halving: {over: [lr], rungs: [4], keep: 0.5}\n")
    run = write_run(tmp_path / "edited", grid_text, lambda t: {"status": "stopped", "epochs_completed": 3, "val_error": 0.5,
                                                               "grid": "edited"}
                    if t.config["lr"] > 0.2 else {"status": "completed", "val_error": 0.3, "grid": "edited"})
    (tmp_path / "edited" / "halving.json").write_text(json.dumps([{"cell": {}, "cell_key": "{}", "rung": 3, "ranking": [],
                                                                   "kept": ['{"lr": 0.1}', '{"lr": 0.2}']}]))
    shown = CliRunner().invoke(app, ["summarize", run.display(), "--format", "markdown"])
    assert "lr chosen by successive halving on val_error at epoch 3**" in shown.stdout, shown.stdout
    assert "stopped early: lr 0.3, 0.4 at 3" in shown.stdout, shown.stdout


def test_plan_counts_the_epochs_halving_trains(tmp_path):
    grid = load_grid(halved_grid(tmp_path))
    # Per cell: 4 lrs x 2 seeds to epoch 2, 2 lrs on to 4, 1 lr on to 8.
    assert planned(grid.trials, grid.halving, grid.planned_epochs) == (2 * (16 + 4 * 2 + 4 * 2), 128)
    shown = CliRunner().invoke(app, ["plan", str(grid.path)])
    assert "halving over lr at epochs 2, 4, keeping 0.5: at most 64 of 128 epochs (50%)" in shown.stdout


def test_plan_counts_the_steps_of_a_script_that_reports_steps(tmp_path):
    shown = CliRunner().invoke(app, ["plan", str(steps_grid(tmp_path))])
    # 2 lrs to step 25, one on to step 60; each goes on to its report of step 30, which plan cannot
    # know: its "at most" was exceeded in silence.
    assert ("halving over lr at step 25, keeping 0.5: at most 85 of 120 steps (71%) and what a script trains "
            "from a rung to its next report; compute and time below are of the full grid") in shown.stdout


@pytest.mark.usefixtures("local_ray")
def test_each_cell_trains_one_lr_to_the_end_and_stops_the_others_at_the_rungs(tmp_path):
    path, storage = halved_grid(tmp_path), tmp_path / "runs"
    summary = run(path, storage)
    assert summary.counts == {"completed": 4, "stopped": 12} and summary.exit_code == 0
    rows = trials(storage / "probe")
    done = rows[rows.status == "completed"]
    assert (done.attempts == 1).all()  # resumed after each rung, never failed
    # The lr nearest each cell's target, both seeds together.
    assert sorted(zip(done.target, done.lr, done.seed)) == [(0.0, 0.1, 0), (0.0, 0.1, 1), (0.45, 0.4, 0), (0.45, 0.4, 1)]
    stopped = rows[rows.status == "stopped"]
    assert Counter(stopped.epochs_completed) == {2: 8, 4: 4}  # 2 lrs x 2 seeds per cell at each rung
    assert stopped.status_reason.str.startswith("stopped by halving at ").all()
    assert set(stopped[stopped.target == 0.0].groupby("lr").epochs_completed.first().items()) == {
        (0.3, 2), (0.4, 2), (0.2, 4)}
    trained = epochs_trained(tmp_path)
    assert trained == 64 and trained < 0.6 * 128  # of the full grid's 2 x 4 x 2 x 8

    shown = CliRunner().invoke(app, ["summarize", str(storage / "probe"), "--trust-workload", "--format", "markdown"])
    assert "lr chosen by successive halving on val_error at epochs 2, 4" in shown.stdout
    assert "lr 0.1<br>stopped early: lr 0.3, 0.4 at 2; lr 0.2 at 4" in shown.stdout
    assert "lr 0.4<br>stopped early: lr 0.1, 0.2 at 2; lr 0.3 at 4" in shown.stdout
    shown = CliRunner().invoke(app, ["summarize", str(storage / "probe"), "--trust-workload", "--select", "all"])
    assert "6 of 8 trials did not finish (stopped)" in shown.stdout
    status = CliRunner().invoke(app, ["status", str(storage / "probe"), "--trust-workload"])
    assert "16 finished of 16: 4 completed, 12 stopped" in status.stdout

    run(path, storage)  # a rerun runs nothing and decides nothing new
    assert epochs_trained(tmp_path) == trained and len(read_decisions(RunDir(str(storage / "probe")))) == 4

    grown = halved_grid(tmp_path, seeds=(0, 1, 2))
    decisions = kept(storage / "probe")
    summary = run(grown, storage)
    assert summary.ran == 8 and summary.counts == {"completed": 6, "stopped": 18}
    # The new seed follows its cells' decisions: each lr trains to where its setting was stopped.
    assert epochs_trained(tmp_path) - trained == 2 * (2 * 2 + 4 + 8) and kept(storage / "probe") == decisions

    summary = run(grown, storage, resume_stopped=True)  # the user wants the full curves after all
    assert summary.counts == {"completed": 24}
    trained = epochs_trained(tmp_path)

    # A new lr joins the decided cells where it is as good as what each rung kept: 0.05 is the
    # best yet for target 0 and trains to the end; for 0.45 it is the worst and stops at 2.
    summary = run(halved_grid(tmp_path, seeds=(0, 1, 2), lrs=[0.05, *LRS]), storage)
    assert summary.ran == 6 and summary.counts == {"completed": 27, "stopped": 3}
    rows = trials(storage / "probe")
    new = rows[rows.lr == 0.05]
    assert sorted(zip(new.target, new.status, new.epochs_completed)) == \
        [(0.0, "completed", 8)] * 3 + [(0.45, "stopped", 2)] * 3
    assert epochs_trained(tmp_path) - trained == 3 * (8 + 2)
    assert set(decisions) < set(kept(storage / "probe"))  # the earlier decisions stand; the new lr's are added


@pytest.mark.usefixtures("local_ray")
def test_a_cell_with_one_setting_or_one_left_waits_for_no_decision(tmp_path):
    # Target 0.45 has one lr; target 0 keeps one of its two at 2. Each paused at every rung all the
    # same, waiting for a decision that could stop nothing, and started again from its checkpoint.
    def halved(name, **spec):
        path = probe_grid(tmp_path, name=name, fixed={"epochs": 6}, **spec,
                          halving={"over": ["lr"], "rungs": [2, 4], "keep": 0.5})
        output, grid = io.StringIO(), load_grid(path)
        summary = run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet(output))
        return summary, output.getvalue()

    summary, shown = halved("one", axes={"lr": [0.1]})  # a grid of one lr: halving has nothing to do
    assert summary.counts == {"completed": 1} and "paused" not in shown
    assert [(key, epoch) for key, epoch, _ in executions(tmp_path)] == [("lr0.1-seed0-never", 0)]  # started once

    (tmp_path / "markers" / "executions.log").unlink()
    summary, shown = halved("mixed", axes={"target": [0.0, 0.45], "lr": [0.1, 0.2]},
                            exclude=[{"target": 0.45, "lr": 0.2}])
    assert summary.counts == {"completed": 2, "stopped": 1}
    # Past the one rung where its cell had two settings to compare, lr 0.1 trains straight through;
    # the cell of one lr goes with the other's round to that rung, so as not to hold it up there.
    assert sorted((key, epoch) for key, epoch, _ in executions(tmp_path)) == [
        ("lr0.1-seed0-never", 0), ("lr0.1-seed0-never", 2), ("lr0.1-seed0-never-target0.45", 0),
        ("lr0.1-seed0-never-target0.45", 2), ("lr0.2-seed0-never", 0)]
    assert shown.count("paused: at 2") == 3 and "paused: at 4" not in shown
    assert kept(tmp_path / "runs" / "mixed") == [(json.dumps({"target": 0.0}), 2, (json.dumps({"lr": 0.1}),))]


@pytest.mark.usefixtures("local_ray")
def test_a_trial_stopped_where_an_earlier_run_paused_it_is_counted_in_the_runs_last_line(tmp_path, monkeypatch):
    # The driver died after its decision, before the record of the trial it stopped: the next run
    # said "(1 run now, 0 already done)" of 2 trials, the stopped one in neither count.
    path, storage = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]}, fixed={"epochs": 4},
                               halving={"over": ["lr"], "rungs": [2], "keep": 0.5}), tmp_path / "runs"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr("orchestrator.run.halving.write_stopped", killed)
        with pytest.raises(KeyboardInterrupt):
            run(path, storage)
    assert kept(storage / "probe") == [("{}", 2, (json.dumps({"lr": 0.1}),))]
    shown = CliRunner().invoke(app, ["run", str(path), "--storage", str(storage), "--quiet"])
    assert "probe: 1 completed, 1 stopped (1 run now, 1 stopped by halving without running again, 0 already done)" \
        in shown.stdout, shown.stdout


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("lrs, interrupted", [([0.1, 0.2], "orchestrator.run.halving.write_stopped"),
                                              ([0.1, 0.2, 0.3, 0.4], "second round")])
def test_a_run_resumed_under_halving_counts_the_epochs_left_for_its_eta(tmp_path, monkeypatch, lrs, interrupted):
    # A run of the trials left halved them again as a grid of their own (2 kept lrs: 6 epochs for the
    # 8 they train from their start, so its ETA said no time left while 2 were), and a trial paused
    # in the run before that halving then stopped left its epochs to the rung counted as still to come.
    path, storage = probe_grid(tmp_path, axes={"lr": lrs}, fixed={"epochs": 4},
                               halving={"over": ["lr"], "rungs": [2], "keep": 0.5}), tmp_path / "runs"
    fit, rounds = runner._fit, []

    def second_round(*args, **kwargs):
        rounds.append(kwargs.get("until"))
        if len(rounds) == 2:
            raise KeyboardInterrupt
        return fit(*args, **kwargs)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(*(("orchestrator.run.runner._fit", second_round) if interrupted == "second round"
                          else (interrupted, killed)))
        with pytest.raises(KeyboardInterrupt):
            run(path, storage)
    displays = []

    def display(*args):
        displays.append(quiet()(*args))
        return displays[-1]

    grid = load_grid(path)
    summary = run_grid(grid, RunDir.for_grid(str(storage), grid.name), display)
    assert summary.counts == {"completed": len(lrs) // 2, "stopped": len(lrs) // 2}
    assert displays[0].epochs_left == 0  # every epoch trained: none left for the ETA


@pytest.mark.usefixtures("local_ray")
def test_a_failed_trial_that_retry_failed_runs_again_pauses_at_its_rung_and_goes_on_as_decided(tmp_path):
    # Both settings fail before the rung, and the cell, where every setting failed, keeps the first.
    # Run again by --retry-failed, lr 0.2 paused at the rung while its record still held the earlier
    # failure: the run showed that failure again, with its old error, and left the trial failed.
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]}, fixed={"epochs": 6, "target": 0.1, "fail": "once"},
                      max_failures=0, halving={"over": ["lr"], "rungs": [3], "keep": 0.5})
    storage = tmp_path / "runs"
    assert run(path, storage).counts == {"failed": 2}
    output = io.StringIO()
    grid = load_grid(path)
    summary = run_grid(grid, RunDir.for_grid(str(storage), grid.name), quiet(output), retry_failed=True)
    assert summary.counts == {"completed": 1, "stopped": 1}
    assert "injected failure" not in output.getvalue()
    rows = trials(storage / "probe")
    assert sorted(zip(rows.lr, rows.status, rows.epochs_completed)) == [(0.1, "completed", 6), (0.2, "stopped", 3)]


def test_resume_stopped_refused_before_any_trial_leaves_the_stopped_rows_in_trials_parquet(tmp_path, monkeypatch):
    # A run that stops before training (a tracker that cannot be used) leaves the files as they were:
    # trials.parquet is what users read, and it kept no row of the stopped trial.
    from orchestrator.errors import RunError
    from orchestrator.run import trackers
    from orchestrator.store.records import Publisher

    class Unusable:
        def __init__(self, grid, run, settings):
            raise RunError("tracking with mlflow: no server")

    monkeypatch.setitem(trackers.TRACKERS, "mlflow", Unusable)
    grid = load_grid(probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 4}, tracking=["mlflow"]))
    run, (trial,) = RunDir.for_grid(str(tmp_path / "runs"), grid.name), grid.trials
    write_record(run, trial_schema(grid.workload.config), trial.trial_id, trial.config,
                 {"status": "stopped", "epochs_completed": 2, "val_error": 0.5},
                 [{"epoch": e, "val_error": 0.5} for e in (1, 2)])
    Publisher(run).catch_up()
    with pytest.raises(RunError):
        run_grid(grid, run, quiet(), resume_stopped=True)
    assert pd.read_parquet(run.child("trials.parquet"))["status"].tolist() == ["stopped"]
    assert pd.read_parquet(run.child("epochs.parquet"))["epoch"].tolist() == [1, 2]


def test_a_driver_killed_before_it_published_a_resumed_stopped_trial_leaves_its_full_result(tmp_path):
    # --resume-stopped replaces a stopped trial's record with its full-length result. A driver killed
    # before it published that record left trials.parquet saying `stopped`, which every reader and
    # every later `ablate run` took for the truth: the result it trained was never shown.
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]},
                      fixed={"epochs": 4, "target": 0.1, "fail": "kill_driver_after_record"},
                      halving={"over": ["lr"], "rungs": [2], "keep": 0.5})
    storage, run_dir = tmp_path / "runs", tmp_path / "runs" / "probe"
    assert subprocess.run([ABLATE, "run", str(path), "--storage", str(storage), "--quiet"], cwd=ROOT,
                          capture_output=True).returncode == 0
    assert sorted(zip(trials(run_dir).lr, trials(run_dir).status)) == [(0.1, "completed"), (0.2, "stopped")]

    driver = subprocess.Popen([ABLATE, "run", str(path), "--storage", str(storage), "--quiet", "--resume-stopped"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (tmp_path / "markers" / "driver.pid").write_text(str(driver.pid))  # killed once lr 0.2's record is written
    assert driver.wait(timeout=300) == -signal.SIGKILL

    status = CliRunner().invoke(app, ["status", str(run_dir), "--trust-workload"])
    assert "2 finished of 2: 2 completed" in status.stdout
    again = subprocess.run([ABLATE, "run", str(path), "--storage", str(storage), "--quiet"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert "probe: 2 completed (0 run now, 2 already done)" in again.stdout, again.stdout + again.stderr
    rows = trials(run_dir)
    assert sorted(zip(rows.lr, rows.status, rows.epochs_completed)) == [(0.1, "completed", 4), (0.2, "completed", 4)]
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert list(epochs[epochs.trial_id == rows[rows.lr == 0.2].trial_id.iloc[0]].epoch) == [1, 2, 3, 4]


@pytest.mark.usefixtures("local_ray")
def test_a_metric_summarized_by_its_best_is_ranked_by_its_best_report_up_to_the_rung(tmp_path):
    # lr 0.1's evaluation at the rung is noisy (1 worse): by its last report it would be the worst.
    path = probe_grid(tmp_path, axes={"lr": LRS}, fixed={"epochs": 4, "spike_lr": 0.1}, seeds=[0],
                      halving={"over": ["lr"], "rungs": [2], "keep": 0.5}, metric={"name": "val_error", "summary": "best"})
    storage = tmp_path / "runs"
    assert run(path, storage).counts == {"completed": 2, "stopped": 2}
    [decision] = read_decisions(RunDir(str(storage / "probe")))
    assert [(e["values"]["lr"], round(e["score"], 4)) for e in decision["ranking"]] == [
        (0.2, 0.5333), (0.1, 0.6), (0.3, 0.6333), (0.4, 0.7333)]  # lr 0.1's best is its epoch 1
    rows = trials(storage / "probe").set_index("lr").sort_index()
    assert list(rows.status) == ["completed", "completed", "stopped", "stopped"]
    assert rows.status_reason[0.3] == "stopped by halving at 2: lr=0.3 ranked 3 of 4 by best val_error up to it (0.6333)"


@pytest.mark.usefixtures("local_ray")
def test_a_trial_stopped_after_its_last_checkpoint_keeps_its_epochs_up_to_the_rung(tmp_path):
    # Checkpoints at epochs 2 and 4: the rung, 3, is an epoch after the last checkpoint.
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.4]}, fixed={"epochs": 6, "checkpoint_every": 2},
                      halving={"over": ["lr"], "rungs": [3], "keep": 0.5})
    storage = tmp_path / "runs"
    assert run(path, storage).counts == {"completed": 1, "stopped": 1}
    rows = trials(storage / "probe").set_index("lr")
    epochs = pd.read_parquet(storage / "probe" / "epochs.parquet")
    stopped = epochs[epochs.trial_id == rows.trial_id[0.4]]
    assert list(stopped.epoch) == [1, 2, 3] and rows.epochs_completed[0.4] == 3
    # The value it was ranked by, at the rung, is its row's and its last epoch's.
    assert rows.val_error[0.4] == stopped.val_error.iloc[-1] == pytest.approx(0.4 + 1 / 4)
    assert list(epochs[epochs.trial_id == rows.trial_id[0.1]].epoch) == [1, 2, 3, 4, 5, 6]
    # Its pause at 3 is checkpointed: kept, it goes on from there, training epoch 3 once, not again
    # from its checkpoint of epoch 2.
    trained = [line.split()[:2] for line in (tmp_path / "markers" / "epochs.log").read_text().splitlines()]
    assert sorted(int(epoch) for key, epoch in trained if key.startswith("lr0.1-")) == [1, 2, 3, 4, 5, 6]


# A script that reports every 10 steps and resumes from the last step it reported.
SCRIPT_START = """\
import argparse, json, os, sys, time
parser = argparse.ArgumentParser()
for option in ("--lr", "--steps", "--seed", "--out"):
    parser.add_argument(option)
args = parser.parse_args()
mark = os.path.join(args.out, "step")
start = int(open(mark).read()) if os.path.exists(mark) else 0
"""
STEPS_SCRIPT = SCRIPT_START + """\
for step in range(start + 10, int(args.steps) + 1, 10):
    open(mark + ".tmp", "w").write(str(step))
    os.replace(mark + ".tmp", mark)  # whole: the script is killed when its trial pauses
    print("ABLATE " + json.dumps({"step": step, "val_error": float(args.lr) + 1 / step}), flush=True)
    time.sleep(0.5)  # a step's training: a pause ends the script before it gets further
"""


def steps_grid(tmp_path: Path, script: str = STEPS_SCRIPT, steps: int = 60, lrs=(0.1, 0.4), rungs=(25,)) -> Path:
    """A script (STEPS_SCRIPT) to step 60 at 2 lrs, halved at step 25: between two reports."""
    (tmp_path / "steps.py").write_text(script)
    path = tmp_path / "steps.yaml"
    path.write_text(yaml.safe_dump({
        "name": "steps", "metric": "val_error",
        "command": {"run": [sys.executable, "steps.py", "--lr", "{lr}", "--steps", "{steps}", "--seed", "{seed}",
                            "--out", "{trial_dir}"], "parameters": {"lr": 0.1, "steps": steps}, "steps": "steps"},
        "axes": {"lr": list(lrs)}, "halving": {"over": ["lr"], "rungs": list(rungs), "keep": 0.5}}))
    return path


@pytest.mark.usefixtures("local_ray")
def test_a_script_that_reports_steps_is_stopped_at_the_step_it_reached(tmp_path):
    # The rung, 25, falls between two reports: a trial pauses at its report of step 30.
    path, storage = steps_grid(tmp_path), tmp_path / "runs"
    assert run(path, storage).counts == {"completed": 1, "stopped": 1}
    rows = trials(storage / "steps").set_index("lr")
    assert rows.steps_completed[0.4] == 30 and rows.steps_completed[0.1] == 60
    epochs = pd.read_parquet(storage / "steps" / "epochs.parquet")
    stopped = epochs[epochs.trial_id == rows.trial_id[0.4]]
    assert list(stopped.step) == [10, 20, 30]  # the report it was ranked by included
    assert rows.val_error[0.4] == stopped.val_error.iloc[-1] == pytest.approx(0.4 + 1 / 30)
    shown = CliRunner().invoke(app, ["summarize", str(storage / "steps"), "--format", "markdown"])
    assert "lr 0.1<br>stopped early: lr 0.4 at 30" in shown.stdout


# A script too fast to stop at a rung: it saves and prints every step to 200 at once, before the
# trial's pause at step 25 can kill it (examples/losses.py trains its 1,001 steps in milliseconds).
FAST_SCRIPT = SCRIPT_START + """\
open(mark, "w").write(args.steps)
sys.stdout.write("".join("ABLATE " + json.dumps({"step": step, "val_error": float(args.lr) + 1 / step}) + "\\n"
                         for step in range(start + 10, int(args.steps) + 1, 10)))
"""


@pytest.mark.usefixtures("local_ray")
def test_what_a_script_printed_past_a_rung_before_it_was_stopped_is_recorded_and_not_ranked_by(tmp_path):
    path = steps_grid(tmp_path, FAST_SCRIPT, steps=200, lrs=(0.1, 0.2, 0.4, 0.8), rungs=(25, 100))
    storage = tmp_path / "runs"
    assert run(path, storage).counts == {"completed": 1, "stopped": 3}
    rows = trials(storage / "steps").set_index("lr")
    epochs = pd.read_parquet(storage / "steps" / "epochs.parquet")
    # Kept at both rungs: every step it printed, to its end, though it printed them before its pause at 25.
    assert rows.status[0.1] == "completed" and rows.steps_completed[0.1] == 200
    assert list(epochs[epochs.trial_id == rows.trial_id[0.1]].step) == list(range(10, 201, 10))
    assert rows.val_error[0.1] == pytest.approx(0.1 + 1 / 200)
    # Ranked, and recorded where stopped, at each rung's first report at or past it: not at step 200.
    decisions = {d["rung"]: [(e["values"]["lr"], e["score"]) for e in d["ranking"]]
                 for d in read_decisions(RunDir(str(storage / "steps")))}
    assert decisions[25] == [(lr, pytest.approx(lr + 1 / 30)) for lr in (0.1, 0.2, 0.4, 0.8)]
    assert decisions[100] == [(lr, pytest.approx(lr + 1 / 100)) for lr in (0.1, 0.2)]
    for lr, step in ((0.2, 100), (0.4, 30), (0.8, 30)):
        assert rows.status[lr] == "stopped" and rows.steps_completed[lr] == step
        assert rows.val_error[lr] == pytest.approx(lr + 1 / step)
        assert epochs[epochs.trial_id == rows.trial_id[lr]].step.max() == step


def test_a_script_stopped_past_its_rung_says_the_step_its_row_names(tmp_path):
    # The rung, 25, falls between reports: its row said `steps_completed` 30 and `stopped by halving at 25`.
    grid = load_grid(steps_grid(tmp_path))
    run = RunDir(str(tmp_path / "runs" / "steps"))
    for trial in grid.trials:
        lr = trial.config["lr"]
        run.write_bytes(run.trial_file(trial.trial_id, "epochs.jsonl"), b"".join(
            json.dumps({"step": step, "val_error": lr + 1 / step}).encode() + b"\n" for step in (10, 20, 30)))
        run.write_progress(trial.trial_id, {"epoch": 3, "paused_at": 30, "metrics": {"step": 30, "val_error": lr + 1 / 30}})
    Halver(grid, run).next({})
    (row,) = records.read_trials(run).to_pylist()
    assert (row["lr"], row["steps_completed"]) == (0.4, 30)
    assert row["status_reason"] == ("stopped by halving at 25, at step 30 (its first report past it): lr=0.4 "
                                    "ranked 2 of 2 by val_error (0.4333)")


def test_a_finished_trial_is_ranked_by_its_report_where_it_would_have_paused(tmp_path):
    # Halving given to a grid whose trials finished without it: ranked at step 25 by their report
    # of step 30, as trials that paused there are, not as trials without a val_error at 25.
    grid = load_grid(steps_grid(tmp_path))
    run = RunDir(str(tmp_path / "runs" / "steps"))
    for trial in grid.trials:
        epochs = [{"step": s, "val_error": trial.config["lr"] + 1 / s} for s in range(10, 61, 10)]
        write_record(run, trial_schema(grid.workload.config), trial.trial_id, trial.config,
                     {"status": "completed", "val_error": epochs[-1]["val_error"]}, epochs)
    Halver(grid, run).next({t.trial_id: "completed" for t in grid.trials})
    [decision] = read_decisions(run)
    assert [(e["values"]["lr"], e["score"]) for e in decision["ranking"]] == [(0.1, 0.1 + 1 / 30), (0.4, 0.4 + 1 / 30)]
    assert decision["kept"] == ['{"lr": 0.1}'] and decision["note"] is None


def test_a_trial_that_ended_before_the_rung_is_ranked_by_its_last_report(tmp_path):
    # lr 0.1's seed 0 stopped early itself (its own early stopping) at epoch 2, before the rung at 3:
    # the best setting was ranked last as having "no val_error", and its seed 1 stopped by halving.
    grid = load_grid(probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4]}, fixed={"epochs": 6}, seeds=[0, 1],
                                halving={"over": ["lr"], "rungs": [3], "keep": 0.5}))
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    for trial in grid.trials:
        ended = 2 if trial.config["lr"] == 0.1 and trial.config["seed"] == 0 else 6
        epochs = [{"epoch": e, "val_error": trial.config["lr"] + 1 / e} for e in range(1, ended + 1)]
        write_record(run, trial_schema(grid.workload.config), trial.trial_id, trial.config,
                     {"status": "completed", "val_error": epochs[-1]["val_error"]}, epochs)
    Halver(grid, run).next({t.trial_id: "completed" for t in grid.trials})
    [decision] = read_decisions(run)
    assert [(e["values"]["lr"], e["score"]) for e in decision["ranking"]][0] == (0.1, pytest.approx(0.1 + (1 / 2 + 1 / 3) / 2))
    assert decision["kept"] == [json.dumps({"lr": 0.1}), json.dumps({"lr": 0.2})]


def paused_at_rung(run: RunDir, trial, errors: list[float]) -> None:
    """The trial's files as its worker leaves them when it pauses at a rung, after epochs of `errors`."""
    run.write_bytes(run.trial_file(trial.trial_id, "epochs.jsonl"),
                    b"".join(json.dumps({"epoch": e, "val_error": v}).encode() + b"\n" for e, v in enumerate(errors, 1)))
    run.write_progress(trial.trial_id, {"epoch": len(errors), "paused_at": len(errors),
                                        "metrics": {"val_error": errors[-1]}})
    run.write_bytes(run.trial_file(trial.trial_id, "trial.log"),
                    f"2026-12-07 19:00:00 paused after {len(errors)} until its round of halving ends\n".encode())


def test_a_new_setting_stopped_at_a_decided_rung_is_said_to_rank_where_its_score_places_it(tmp_path):
    # lr 0.25 joined a cell that had kept 0.1 and 0.2 at the rung, stopping 0.3 and 0.4: worse than 0.2,
    # better than 0.3, it was said to rank "5 of 5", after the settings it beat.
    path = probe_grid(tmp_path, axes={"lr": LRS}, fixed={"epochs": 6}, halving={"over": ["lr"], "rungs": [2], "keep": 0.5})
    run = RunDir.for_grid(str(tmp_path / "runs"), "probe")
    for trial in load_grid(path).trials:
        paused_at_rung(run, trial, [1.0, trial.config["lr"]])
    Halver(load_grid(path), run).next({})
    grown = load_grid(probe_grid(tmp_path, axes={"lr": [0.25, *LRS]}, fixed={"epochs": 6},
                                 halving={"over": ["lr"], "rungs": [2], "keep": 0.5}))
    [new] = [t for t in grown.trials if t.config["lr"] == 0.25]
    paused_at_rung(run, new, [1.0, 0.25])
    Halver(grown, run).next({r["trial_id"]: r["status"] for r in records.read_trials(run).to_pylist()})
    reasons = {r["lr"]: r["status_reason"] for r in records.read_trials(run).to_pylist()}
    assert reasons == {0.25: "stopped by halving at 2: lr=0.25 ranked 3 of 5 by val_error (0.25)",
                       0.3: "stopped by halving at 2: lr=0.3 ranked 3 of 4 by val_error (0.3)",
                       0.4: "stopped by halving at 2: lr=0.4 ranked 4 of 4 by val_error (0.4)"}
    # Its log, which ended at its pause ("paused after 2 until its round of halving ends"), says so too.
    assert (tmp_path / "runs" / "probe" / "trials" / new.trial_id / "trial.log").read_text().endswith(
        " stopped by halving at 2: lr=0.25 ranked 3 of 5 by val_error (0.25)\n")


def test_a_grid_whose_fixed_values_changed_decides_anew_for_its_new_trials(tmp_path):
    # The same grid run again with another fixed target: new trials, whose best lr is the other end.
    # The first run's decisions were applied to them: lr 0.4, now the best, was stopped "ranked 4 of
    # 4 (0.4)", a score of another experiment, and lr 0.1, now the worst, trained to the end.
    def grid(target):
        return load_grid(probe_grid(tmp_path, axes={"lr": LRS}, fixed={"epochs": 6, "target": target},
                                    halving={"over": ["lr"], "rungs": [2], "keep": 0.5}))
    run = RunDir.for_grid(str(tmp_path / "runs"), "probe")
    for target in (0.0, 0.45):
        edited = grid(target)
        for trial in edited.trials:
            paused_at_rung(run, trial, [1.0, abs(trial.config["lr"] - target)])
        plan = Halver(edited, run).next({})
        assert sorted(t.config["lr"] for t in edited.trials if t.trial_id in plan) == ([0.1, 0.2] if target == 0 else [0.3, 0.4])
    assert [d["kept"] for d in read_decisions(run)] == [[json.dumps({"lr": 0.1}), json.dumps({"lr": 0.2})],
                                                        [json.dumps({"lr": 0.4}), json.dumps({"lr": 0.3})]]


@pytest.mark.parametrize("blown", [float("nan"), float("-inf")])
def test_a_setting_whose_metric_is_nan_or_inf_at_the_rung_ranks_last_as_a_diverged_one(tmp_path, blown):
    # lr 0.9's loss blew up before the rung, and it paused there with val_error nan: it was ranked
    # first and kept (halving.json said "score": NaN), stopping lr 0.2, a good setting, in its place.
    grid = load_grid(probe_grid(tmp_path, axes={"lr": [0.9, 0.1, 0.2, 0.3]}, fixed={"epochs": 6},
                                halving={"over": ["lr"], "rungs": [2], "keep": 0.5}))
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    for trial in grid.trials:
        paused_at_rung(run, trial, [blown, blown] if trial.config["lr"] == 0.9
                       else [trial.config["lr"] + 1 / e for e in (1, 2)])
    plan = Halver(grid, run).next({})
    [decision] = read_decisions(run)
    assert [(e["values"]["lr"], e["score"], e["why"]) for e in decision["ranking"]] == [
        (0.1, 0.6, None), (0.2, 0.7, None), (0.3, pytest.approx(0.8), None), (0.9, None, "diverged")]
    assert decision["kept"] == [json.dumps({"lr": 0.1}), json.dumps({"lr": 0.2})]
    assert sorted(grid.trials[i].config["lr"] for i, t in enumerate(grid.trials) if t.trial_id in plan) == [0.1, 0.2]
    stopped = records.read_trials(run).to_pylist()
    assert {r["lr"]: r["status_reason"] for r in stopped}[0.9] == \
        "stopped by halving at 2: lr=0.9 ranked 4 of 4 by val_error (diverged)"
    json.loads((tmp_path / "runs" / "probe" / "halving.json").read_text(), parse_constant=pytest.fail)  # plain JSON


@pytest.mark.usefixtures("local_ray")
def test_max_failures_counts_a_trials_failures_over_every_round_as_without_halving(tmp_path):
    # Each trial fails once before the rung (3) and once after it; max_failures 1 allows one.
    outcomes = {}
    for halving in (None, {"over": ["lr"], "rungs": [3], "keep": 0.5}):
        path = probe_grid(tmp_path, name="halved" if halving else "plain", axes={"lr": [0.1, 0.4]},
                          fixed={"epochs": 6, "fail": "twice", "marker_dir": str(tmp_path / str(bool(halving)))},
                          max_failures=1, **({"halving": halving} if halving else {}))
        (tmp_path / str(bool(halving))).mkdir()
        grid = load_grid(path)
        run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())
        outcomes[grid.name] = trials(tmp_path / "runs" / grid.name).set_index("lr")
    plain, halved = outcomes["plain"], outcomes["halved"]
    assert list(plain.status) == ["failed", "failed"]
    # lr 0.1, kept at the rung, fails there as it does without halving; lr 0.4 was stopped before.
    assert halved.status[0.1] == "failed" and halved.status[0.4] == "stopped"
    assert halved.error[0.1] == plain.error[0.1] == "RuntimeError: injected failure at epoch 4"
    # Attempts: the first and the retry after a failure, not the rounds it was resumed in.
    assert halved.attempts[0.1] == plain.attempts[0.1] == 2 and halved.attempts[0.4] == 2


@pytest.mark.usefixtures("local_ray")
def test_a_cell_where_every_setting_fails_before_the_rung_keeps_one_and_says_so(tmp_path):
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]}, fixed={"epochs": 4, "fail": "always"},
                      halving={"over": ["lr"], "rungs": [2], "keep": 0.5})
    summary = run(path, tmp_path / "runs")
    assert summary.counts == {"failed": 2}
    (decision,) = read_decisions(RunDir(str(tmp_path / "runs" / "probe")))
    assert len(decision["kept"]) == 1
    assert decision["note"] == "no setting has a val_error at 2 (every one has a seed that failed): the first is kept"


def test_a_driver_killed_between_rungs_and_run_again_makes_the_same_decisions(tmp_path):
    path, storage = halved_grid(tmp_path, sleep=0.2), tmp_path / "runs"
    run_dir = storage / "probe"
    driver = subprocess.Popen([ABLATE, "run", str(path), "--storage", str(storage), "--quiet"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not read_decisions(RunDir(str(run_dir))) and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.05)
        assert read_decisions(RunDir(str(run_dir))) and driver.poll() is None, "no decision before the run ended"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    result = subprocess.run([ABLATE, "run", str(path), "--storage", str(storage), "--quiet"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = [(json.dumps({"target": t}), rung, tuple(json.dumps({"lr": lr}) for lr in lrs))
                for t, by_rung in ((0.0, {2: [0.1, 0.2], 4: [0.1]}), (0.45, {2: [0.4, 0.3], 4: [0.4]}))
                for rung, lrs in by_rung.items()]
    assert kept(run_dir) == sorted(expected)
    assert Counter(trials(run_dir).status) == {"completed": 4, "stopped": 12}


def test_status_counts_the_epochs_left_as_halving_trains_them(tmp_path):
    from orchestrator.results.status import read_status
    from orchestrator.store.rundir import now

    grid = load_grid(halved_grid(tmp_path))  # at most 64 of its 128 epochs
    run = RunDir(str(tmp_path / "runs" / "probe"))
    run.write_bytes(run.child("grid.yaml"), grid.path.read_bytes())
    run.write_progress(grid.trials[0].trial_id, {"attempt": 1, "epoch": 1, "metrics": {"val_error": 0.5},
                                                  "seconds": 10.0, "train_seconds": 10.0,
                                                  "updated_at": now().isoformat()})
    status = read_status(run, None, trust_workload=True)
    assert status.counts == {"running": 1, "pending": 15}
    assert status.eta_seconds == (64 - 1) * 10.0  # not (128 - 1) x 10 s: the epochs halving will not train


@pytest.mark.usefixtures("local_ray")
def test_fail_fast_stops_a_halving_grid_at_a_failed_trial_though_the_others_paused_at_the_rung(tmp_path):
    # The others paused at the rung before the trial failed its retries: no next round runs them.
    path = probe_grid(tmp_path, axes={"fail": ["never", "always"]}, fixed={"epochs": 6},
                      halving={"over": ["fail"], "rungs": [3], "keep": 0.5})
    summary = run(path, tmp_path / "runs", fail_fast=True)
    assert summary.counts == {"failed": 1} and summary.unfinished == 1
    assert sorted(epoch for key, epoch, _ in (line.split() for line in
                  (tmp_path / "markers" / "epochs.log").read_text().splitlines()) if "never" in key) == ["1", "2", "3"]
