"""`ablate run` on a real local Ray (2 CPUs, one logical GPU): packing, retries, failures, resume."""
from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from orchestrator.errors import AblateError, RunError
from orchestrator.plan.execution import Resources
from orchestrator.plan.grid import load_grid
from orchestrator.run import events, hangs, out_of_memory, runner, scheduling
from orchestrator.run.cluster import check_resources
from orchestrator.run.processes import alive
from orchestrator.run.runner import run_grid
from orchestrator.store import records
from orchestrator.store.rundir import RunDir
from tests import probe
from tests.runs import executions, probe_grid, quiet, starts, trials

pytestmark = pytest.mark.usefixtures("local_ray")


def run(path: Path, storage: Path, output=None, **kwargs):
    grid = load_grid(path)
    return run_grid(grid, RunDir.for_grid(str(storage), grid.name), quiet(output), **kwargs)


def test_four_trials_packed_on_one_gpu_run_at_once(tmp_path):
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4]}, fixed={"epochs": 2, "sleep": 1.0},
                      resources={"cpus": 0.25, "trials_per_gpu": 4})
    summary = run(path, tmp_path / "runs")
    assert summary.counts == {"completed": 4} and summary.exit_code == 0
    log = (tmp_path / "markers" / "executions.log").read_text().splitlines()
    began = [float(line.split()[-1]) for line in log]
    ended = [float(line.split()[-1]) for line in (tmp_path / "markers" / "epochs.log").read_text().splitlines()
             if line.split()[1] == "2"]
    assert len(began) == len(ended) == 4
    assert max(began) < min(ended)  # all four were training at the same moment


def test_ctrl_c_after_the_run_is_the_caller_s_again(tmp_path):
    # Tune sets its Ctrl-C handler in Tuner.fit and leaves it set once the experiment ends; wrapped
    # to say "stopping", a Ctrl-C after the run (or between halving's rounds) said the run stopped
    # and was swallowed. (Python's own handler first: pytest started in the background by a script
    # has Ctrl-C ignored, which the run gives back as it found it.)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        output = io.StringIO()
        summary = run(probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 1}), tmp_path / "runs", output)
        assert summary.counts == {"completed": 1}
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "stopping" not in output.getvalue()


def test_a_trial_that_raises_once_resumes_from_its_checkpoint(tmp_path):
    path = probe_grid(tmp_path, axes={"fail": ["once"]}, fixed={"epochs": 3}, max_failures=1)
    summary = run(path, tmp_path / "runs")
    assert summary.counts == {"completed": 1}
    assert [epoch for _, epoch, _ in executions(tmp_path)] == [0, 1]  # the retry began after epoch 1
    row = trials(tmp_path / "runs" / "probe").iloc[0]
    assert row["status"] == "completed" and row["attempts"] == 2 and row["epochs_completed"] is not None
    assert row["top5_error"] == 0.05  # what train returned beside the usual metrics has a column of its own
    epochs = pd.read_parquet(tmp_path / "runs" / "probe" / "epochs.parquet")
    assert epochs["epoch"].tolist() == [1, 2, 3]  # each epoch once, though two attempts ran


WORKER_DIED = "its worker process died (the kernel's OOM killer, a kill or a crash: dmesg on its node says which)"


def test_a_killed_worker_process_is_retried_and_said_to_have_died_in_one_line(tmp_path):
    # As the kernel's OOM killer does: SIGKILL. Ray says so in a paragraph of possible causes.
    path = probe_grid(tmp_path, axes={"fail": ["kill_once"]}, fixed={"epochs": 3}, max_failures=2)
    output = io.StringIO()
    summary = run(path, tmp_path / "runs", output)
    assert summary.counts == {"completed": 1}
    assert [epoch for _, epoch, _ in executions(tmp_path)] == [0, 1]
    assert f"retrying: {WORKER_DIED}, from its last checkpoint\n" in output.getvalue()
    assert "Some common causes" not in output.getvalue()
    log = (tmp_path / "runs" / "probe" / "trials" / trials(tmp_path / "runs" / "probe").trial_id[0] / "trial.log")
    assert f"failed: {WORKER_DIED}; Ray said:\n" in log.read_text()  # Ray's own words follow, for the details


def test_a_worker_killed_as_it_starts_is_retried_in_one_line_and_the_trial_trains_once(tmp_path, monkeypatch):
    # Killed as its actor is created (the OOM killer, as the worker's imports take the last memory),
    # before the trial began: Tune retried it, but the driver said nothing of it.
    monkeypatch.setattr(runner, "run_trial", probe.KilledAsItStarts(str(tmp_path / "killed")))
    path = probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 2}, max_failures=1)
    output = io.StringIO()
    summary = run(path, tmp_path / "runs", output)
    assert (tmp_path / "killed").exists()
    assert summary.counts == {"completed": 1} and summary.ran == 1
    assert f"retrying: {WORKER_DIED}, from its start\n" in output.getvalue()
    assert starts(tmp_path) == {"lr0.1-seed0-never": 1}
    log = (tmp_path / "runs" / "probe" / "trials" / trials(tmp_path / "runs" / "probe").trial_id[0] / "trial.log")
    assert f"failed: {WORKER_DIED}; Ray said:\n" in log.read_text()


def test_a_trial_that_stops_reporting_is_ended_as_hung_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    # Its training thread sleeps in the Ray worker where its third epoch should be: nothing inside
    # it notices. Its epochs take 0.5 s, so silence 10 times its slowest (and, here, over 1 s) is a hang.
    monkeypatch.setattr(hangs, "SILENT_MIN_S", 1.0)
    path = probe_grid(tmp_path, axes={"fail": ["hang_once", "never"]}, fixed={"epochs": 4, "sleep": 0.5},
                      max_failures=1)
    output = io.StringIO()
    summary = run(path, tmp_path / "runs", output)
    assert summary.counts == {"completed": 2}
    # One line says why it is retried, as its log does.
    assert re.search(r"retrying: reported nothing for \d+ s after epoch 2, more than 10 times its slowest epoch so far "
                     r"\([\d.]+ s\): taken for hung, from its last checkpoint\n", output.getvalue()), output.getvalue()
    # Ended after its second epoch and resumed from it; the other trial ran once.
    assert sorted((key, epoch) for key, epoch, _ in executions(tmp_path)) == [
        ("lr0.1-seed0-hang_once", 0), ("lr0.1-seed0-hang_once", 2), ("lr0.1-seed0-never", 0)]
    rows = trials(tmp_path / "runs" / "probe").set_index("fail")
    assert rows.loc["hang_once", "attempts"] == 2 and rows.loc["never", "attempts"] == 1
    log = (tmp_path / "runs" / "probe" / "trials" / rows.loc["hang_once", "trial_id"] / "trial.log").read_text()
    assert "failed: reported nothing for " in log and "after epoch 2, more than 10 times its slowest epoch" in log
    epochs = pd.read_parquet(tmp_path / "runs" / "probe" / "epochs.parquet")
    assert sorted(epochs["epoch"]) == [1, 1, 2, 2, 3, 3, 4, 4]  # each epoch once, though two attempts ran


def test_a_trial_that_always_fails_is_recorded_and_the_rest_go_on(tmp_path):
    path = probe_grid(tmp_path, axes={"fail": ["never", "always"], "lr": [0.1, 0.2]}, max_failures=1)
    output = io.StringIO()
    summary = run(path, tmp_path / "runs", output)
    assert summary.counts == {"completed": 2, "failed": 2} and summary.exit_code == 1
    rows = trials(tmp_path / "runs" / "probe").set_index("fail")
    failed = rows.loc["always"]
    assert (failed["status"] == "failed").all() and (failed["attempts"] == 2).all()
    assert (failed["error"] == "RuntimeError: this trial always fails").all()
    log = Path(failed["log"].iloc[0]).read_text()
    assert "Traceback" in log and "attempt 2" in log
    assert (rows.loc["never"]["status"] == "completed").all()
    assert rows.loc["never"]["error"].isna().all()
    assert "failed: RuntimeError: this trial always fails (log: " in output.getvalue()


def test_a_worker_lost_after_recording_its_result_leaves_the_result(tmp_path):
    # Tune sees the lost worker as the trial's error, with no retry left; the trial had finished.
    path = probe_grid(tmp_path, axes={"fail": ["kill_after_record"]}, max_failures=0)
    output = io.StringIO()
    summary = run(path, tmp_path / "runs", output)
    assert summary.counts == {"completed": 1} and summary.exit_code == 0
    row = trials(tmp_path / "runs" / "probe").iloc[0]
    assert row["status"] == "completed" and row["test_error"] == 0.1 and pd.isna(row["error"])
    assert "failed" not in output.getvalue()


@pytest.mark.parametrize("max_failures", [0, 1])
def test_a_trial_handed_a_reused_worker_that_died_while_idle_starts_again_and_is_not_failed(tmp_path, monkeypatch,
                                                                                           max_failures):
    # Tune hands the next trial the worker a finished trial left. Killed in between (the OOM killer,
    # a user), that worker is found dead only then, and Tune errors the trial, which never began,
    # whatever its max_failures. Here the first trial's worker is killed before the second is handed out.
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]}, fixed={"epochs": 1}, resources={"cpus": 2},  # one at a time
                      max_failures=max_failures)
    storage = tmp_path / "runs"
    first_id = load_grid(path).trials[0].trial_id
    suggest, killed = scheduling.GridTrials.suggest, []

    def suggest_once_its_worker_is_dead(self, tune_id):
        if self.given == 1 and not (self.waiting or self.running or killed):  # the first trial ended
            worker = RunDir.for_grid(str(storage), "probe").progress(first_id)["worker"]
            os.kill(worker["pid"], signal.SIGKILL)
            killed.append(worker)
            deadline = time.monotonic() + 30
            while alive(worker) and time.monotonic() < deadline:
                time.sleep(0.01)
        return suggest(self, tune_id)

    monkeypatch.setattr(scheduling.GridTrials, "suggest", suggest_once_its_worker_is_dead)
    output = io.StringIO()
    summary = run(path, storage, output)
    assert killed and not alive(killed[0])
    assert summary.counts == {"completed": 2} and summary.unfinished == 0 and summary.exit_code == 0
    assert "failed" not in output.getvalue()
    assert "retrying: its worker died before it could start; it starts again" in output.getvalue()
    assert starts(tmp_path) == {"lr0.1-seed0-never": 1, "lr0.2-seed0-never": 1}  # nothing trained twice


def test_a_ray_without_the_private_method_the_out_of_memory_patch_replaces_still_runs_trials(tmp_path, monkeypatch):
    # out_of_memory.out_of_memory_as_death patches RayActorManager._actor_task_failed, a private name a
    # later Ray may rename: without it, the run keeps Ray's own behaviour, not a traceback for every run.
    from ray.air.execution._internal.actor_manager import RayActorManager
    monkeypatch.delattr(RayActorManager, "_actor_task_failed")
    summary = run(probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 1}), tmp_path / "runs")
    assert summary.counts == {"completed": 1}


def test_the_out_of_memory_patch_leaves_a_method_of_other_parameters_alone(monkeypatch):
    from ray.air.execution._internal.actor_manager import RayActorManager

    def renamed(self, task, error):  # as a later Ray might call it: the patch's keywords would not fit
        pass
    monkeypatch.setattr(RayActorManager, "_actor_task_failed", renamed)
    with out_of_memory.out_of_memory_as_death():
        assert RayActorManager._actor_task_failed is renamed


def test_a_trial_whose_worker_dies_as_it_trains_with_no_retry_left_is_recorded_failed(tmp_path):
    path = probe_grid(tmp_path, axes={"fail": ["kill_once"]}, max_failures=0)
    output = io.StringIO()
    summary = run(path, tmp_path / "runs", output)
    assert summary.counts == {"failed": 1} and summary.unfinished == 0
    row = trials(tmp_path / "runs" / "probe").iloc[0]
    assert row["error"] == WORKER_DIED
    assert f"failed: {WORKER_DIED} (log: " in output.getvalue()
    assert Path(row["log"]).read_text().count(f"failed: {WORKER_DIED}; Ray said:") == 1


def test_failed_trials_wait_for_retry_failed(tmp_path):
    path = probe_grid(tmp_path, axes={"fail": ["once"]}, max_failures=0)
    storage = tmp_path / "runs"
    assert run(path, storage).counts == {"failed": 1}
    assert trials(storage / "probe").iloc[0]["error"] == "RuntimeError: injected failure"  # its one attempt's error
    again = run(path, storage)
    assert (again.ran, again.failed_earlier, again.exit_code) == (0, 1, 1)
    retried = run(path, storage, retry_failed=True)
    assert retried.counts == {"completed": 1} and retried.exit_code == 0
    assert len(trials(storage / "probe")) == 1  # replaced, not added


def test_a_grid_grown_by_one_seed_runs_only_the_new_trials(tmp_path):
    storage = tmp_path / "runs"
    first = run(probe_grid(tmp_path, seeds=[0]), storage)
    assert first.counts == {"completed": 2} and starts(tmp_path) == {"lr0.1-seed0-never": 1, "lr0.2-seed0-never": 1}
    second = run(probe_grid(tmp_path, seeds=[0, 1]), storage)
    assert (second.ran, second.skipped) == (2, 2)
    assert starts(tmp_path) == {"lr0.1-seed0-never": 1, "lr0.2-seed0-never": 1,
                                "lr0.1-seed1-never": 1, "lr0.2-seed1-never": 1}
    assert len(trials(storage / "probe")) == 4


def test_a_finished_grid_run_again_runs_nothing(tmp_path):
    storage, path = tmp_path / "runs", probe_grid(tmp_path)
    run(path, storage)
    again = run(path, storage)
    assert (again.ran, again.skipped, again.exit_code) == (0, 2, 0)
    assert sum(starts(tmp_path).values()) == 2


def test_a_trial_a_scheduler_stops_early_is_recorded_as_stopped_and_not_run_again(tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    # One trial at a time, best first: at ASHA's first rung (epoch 1) each later trial is worse
    # than the ones before it, and is stopped there. max_t beyond the last epoch: see run_grid.
    storage = tmp_path / "runs"
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3]}, fixed={"epochs": 3},
                      resources={"cpus": 1, "max_concurrent": 1})
    scheduler = ASHAScheduler(metric="val_error", mode="min", max_t=10, grace_period=1, reduction_factor=2)
    output = io.StringIO()
    summary = run(path, storage, output, scheduler=scheduler)
    assert summary.counts == {"completed": 1, "stopped": 2} and summary.exit_code == 0
    rows = trials(storage / "probe").set_index("lr")
    assert rows.loc[0.1, "status"] == "completed" and rows.loc[0.1, "epochs_completed"] == 3
    for lr in (0.2, 0.3):  # where it got to, truthfully: one epoch, its validation error then
        assert rows.loc[lr, "status"] == "stopped" and rows.loc[lr, "epochs_completed"] == 1
        assert rows.loc[lr, "val_error"] == pytest.approx(lr + 1 / 2)
        assert pd.isna(rows.loc[lr, "test_error"]) and pd.isna(rows.loc[lr, "error"])
    epochs = pd.read_parquet(storage / "probe" / "epochs.parquet")
    assert epochs.groupby("trial_id")["epoch"].max().sort_values().tolist() == [1, 1, 3]
    assert "stopped: lr=0.2" in output.getvalue()

    again = run(path, storage)  # no scheduler now: stopped is a result, not unfinished work
    assert (again.ran, again.skipped, again.exit_code) == (0, 3, 0)
    assert sum(starts(tmp_path).values()) == 3


def test_a_stopped_trial_is_recorded_from_its_last_reported_epoch_files_even_when_they_land_after_the_result(tmp_path):
    """A worker writes an epoch's files while Tune carries its result to the driver, so a trial a
    scheduler stops on that result may not have them on storage yet: the driver waits for them."""
    stored = RunDir(str(tmp_path))
    stored.write_progress("t", {"attempt": 1, "reports": 1, "train_seconds": 1.0})
    later = threading.Timer(0.3, stored.write_progress, ["t", {"attempt": 1, "reports": 2, "train_seconds": 2.0}])
    later.start()
    try:
        assert events.progress_after(stored, "t", reports=2)["train_seconds"] == 2.0
    finally:
        later.cancel()
    # A worker that died writes nothing more: the driver takes what is there, after a while.
    assert events.progress_after(stored, "t", reports=3, timeout_s=0.2)["reports"] == 2


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def handed(trials: scheduling.GridTrials, *tune_ids: str) -> list[bool]:
    """Which of these asks of Tune's for a trial got one."""
    return [trials.suggest(tune_id) not in (None, scheduling.Searcher.FINISHED) for tune_id in tune_ids]


def test_tune_is_handed_only_the_trials_that_fit_and_a_new_one_as_one_ends():
    clock = Clock()
    trials = scheduling.GridTrials([SimpleNamespace(trial_id=f"t{i}", config={}) for i in range(4)], slots=2, clock=clock)
    assert handed(trials, "a", "b", "c") == [True, True, False]
    clock.now = 3.0
    for tune_id in ("a", "b"):  # both actors up
        trials.started(tune_id)
    trials.on_trial_complete("a")
    assert handed(trials, "c", "d") == [True, False]
    trials.started("c")
    trials.on_trial_complete("b")
    trials.on_trial_complete("c")
    assert handed(trials, "d") == [True]
    assert trials.suggest("e") == scheduling.Searcher.FINISHED  # that was the grid's last


def test_trials_shorter_than_an_actors_start_are_handed_out_for_the_actors_up():
    """Tune gives a waiting trial the actor a finished trial left over its own, still starting, and
    drops that one: for trials shorter than an actor's start it would start and drop actors all
    run long, and end waiting for the last. So after that happened once, a trial is handed out
    only as one ends, until a trial runs for longer than an actor took to start."""
    clock = Clock()
    trials = scheduling.GridTrials([SimpleNamespace(trial_id=f"t{i}", config={}) for i in range(9)], slots=2, clock=clock)
    assert handed(trials, "a", "b") == [True, True]
    clock.now = 3.0
    trials.started("a")  # the first actor is up after 3 s; b's is still starting
    clock.now = 3.03
    trials.on_trial_complete("a")  # b takes a's actor, and Tune drops b's own
    assert handed(trials, "c") == [False]
    trials.started("b")
    trials.on_trial_complete("b")
    assert handed(trials, "c", "d") == [True, False]
    trials.started("c")
    clock.now += 2.9  # c has run for less than the 3 s an actor took to start
    assert handed(trials, "d") == [False]
    clock.now += 0.2  # now for longer: another actor would be up before it ends
    assert handed(trials, "d", "e") == [True, False]


def test_a_run_leaves_the_drivers_environment_as_it_found_it(tmp_path):
    # A notebook or a test that runs a grid keeps its own settings: --data-dir and Tune's
    # settings reach Ray and the workers, not the rest of the process.
    before = dict(os.environ)
    summary = run(probe_grid(tmp_path), tmp_path / "runs", data_dir=str(tmp_path / "data"))
    assert summary.counts == {"completed": 2}
    assert dict(os.environ) == before


def test_resources_no_node_can_give_are_refused_up_front(tmp_path):
    path = probe_grid(tmp_path)
    with pytest.raises(RunError, match=r"each trial asks for 64 CPUs but the largest Ray node has 2; use --cpus 2 or fewer"):
        run(path, tmp_path / "runs", resources=Resources(cpus=64))
    with pytest.raises(RunError, match="each trial asks for 2 GPUs but no Ray node has that many"):
        run(path, tmp_path / "runs", resources=Resources(cpus=1, gpus=2))
    assert executions(tmp_path) == []


def test_results_are_written_as_trials_finish(tmp_path, monkeypatch):
    # Trials of half a second: rewriting trials.parquet after each is due at any pace worth having
    # (tests/test_records.py checks the pace itself), however slow this machine writes today.
    monkeypatch.setattr(records, "REWRITE_PACE", 1)
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3]}, fixed={"epochs": 1, "sleep": 0.5},
                      resources={"cpus": 2})  # one at a time
    seen = []

    class Watching(io.StringIO):
        def write(self, text):
            if " completed" in text:
                seen.append(len(pd.read_parquet(tmp_path / "runs" / "probe" / "trials.parquet")))
            return super().write(text)

    run(path, tmp_path / "runs", Watching())
    assert seen == [1, 2, 3]


def test_on_a_joined_cluster_missing_nodes_are_a_note_not_an_error():
    # With --address an autoscaler may still add the node; the user is told, the run waits.
    notes = check_resources(Resources(cpus=64, gpus=2), autoscaling=True)
    assert notes == ["each trial asks for 2 GPUs but no Ray node has that many: trials wait until such a node "
                     "joins (one the cluster's autoscaler adds, if it has one)",
                     "each trial asks for 64 CPUs but the largest Ray node has 2: trials wait until such a node "
                     "joins (one the cluster's autoscaler adds, if it has one)"]
    assert check_resources(Resources(cpus=1, gpus=0.25), autoscaling=False) == []


def test_a_dataset_that_cannot_be_had_is_one_error_before_any_trial(tmp_path, data_dir, monkeypatch):
    import dataclasses
    import socket

    from workloads.allcnn.data import SOURCES

    with socket.socket() as s:  # a port where nothing listens: offline
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/cifar-10-python.tar.gz"
    monkeypatch.setitem(SOURCES, "cifar10", dataclasses.replace(SOURCES["cifar10"], url=url))
    path = tmp_path / "g.yaml"
    path.write_text("name: g\naxes:\n  lr: [0.1, 0.01]\nfixed:\n  dataset: cifar10\n  epochs: 1\n  lr_milestones: []\n")
    with pytest.raises(RunError, match=rf"^cifar-10-python.tar.gz is not in {data_dir} and downloading {url} failed"):
        run(path, tmp_path / "runs")
    assert not (tmp_path / "runs" / "g" / "trials").exists()  # no trial started


def test_a_trial_a_scheduler_stops_is_recorded_with_every_epoch_its_row_counts(tmp_path):
    # A script's epochs are recorded as it prints them: Tune stopped it on its result of epoch 1,
    # by when it had printed 3. Its row (epoch 3's values) and its epochs say the same.
    import dataclasses

    from orchestrator.run.session import StoredSession
    from tests.probe import WORKLOAD, Config

    run = RunDir(str(tmp_path))
    session = StoredSession(run, "t")
    session.start()
    for epoch in (1, 2, 3):
        session.record({"epoch": epoch, "val_error": 1 / epoch}, checkpoint={"epoch": epoch})
    session.close()
    stopped = events.Events.__new__(events.Events)
    stopped.run, stopped.grid = run, SimpleNamespace(workload=WORKLOAD, name="g")
    stopped._record_stopped("t", dataclasses.asdict(Config()), {"training_iteration": 1, "epoch": 1})
    row = records.read_trials(run).to_pylist()[0]
    assert (row["status"], row["epochs_completed"], row["val_error"]) == ("stopped", 3, pytest.approx(1 / 3))
    assert [e["epoch"] for e in records.read_epochs(run, ["t"]).to_pylist()] == [1, 2, 3]


def test_the_grid_saved_with_the_run_is_the_one_it_ran_though_the_file_changed_since_it_was_read(tmp_path):
    # The file was read again to save it: edited while `ablate run --wait` waited (or Ray started),
    # the run's grid.yaml named other trials than those run, and status and summarize showed those.
    from orchestrator.plan.grid import read_saved_grid
    from tests.probe import Config

    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]})
    grid = load_grid(path)
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    for trial in grid.trials:  # every trial done: nothing for Ray to do
        records.write_record(run, records.trial_schema(Config), trial.trial_id, trial.config, {"status": "completed"})
    path.write_text(path.read_text().replace("0.2", "0.3"))  # the next study, edited meanwhile
    run_grid(grid, run, quiet())
    saved = read_saved_grid(run, trust_workload=True).grid
    assert [t.trial_id for t in saved.trials] == [t.trial_id for t in grid.trials]


def test_a_damaged_progress_file_of_an_older_ablate_stops_the_run_in_its_one_line_and_nothing_is_lost(tmp_path):
    # Read by the trial's worker and by the driver's Tune callbacks, it ended the run with Tune's traceback.
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]})
    grid = load_grid(path)
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    damaged = tmp_path / "runs" / "probe" / "trials" / grid.trials[0].trial_id / "progress.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"attempt": 2, "train_sec')
    with pytest.raises(RunError, match=f"^{damaged}: an older ablate's progress file, unreadable .*; delete it "
                                       "to count the trial's attempts and time afresh$"):
        run_grid(grid, run, quiet())
    assert grid.trials[0].trial_id not in records.statuses(records.read_trials(run))  # not recorded failed

    damaged.unlink()
    assert run_grid(grid, run, quiet()).counts == {"completed": 2}
    # Its worker failed before training it: it trained once, in the run after the file was deleted.
    assert starts(tmp_path)[f"lr{grid.trials[0].config['lr']}-seed0-never"] == 1


@pytest.mark.parametrize("times", [1, None], ids=["once", "always"])
def test_a_finished_trials_record_the_driver_cannot_read_stops_the_run_in_its_one_line(tmp_path, monkeypatch, times):
    # Read in a Tune callback as the trial completed: Tune took the ResultsError for the trial's
    # failure and ran the finished trial again (a fault that passed: the run went on without a word).
    from tests.test_records import fail_reads_of

    path = probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 2})
    grid = load_grid(path)
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    record = run.child("records", grid.trials[0].trial_id + ".json")
    fail_reads_of(monkeypatch, "read_bytes", record, times)
    with pytest.raises(AblateError, match=f"^{record}: unreadable record \\(\\[Errno 5\\] Input/output error"):
        run_grid(grid, run, quiet())
    monkeypatch.undo()
    summary = run_grid(grid, run, quiet())
    assert summary.counts == {"completed": 1} and summary.ran == 0  # kept: the next run goes on
    assert starts(tmp_path) == {"lr0.1-seed0-never": 1}  # trained once


def test_a_progress_file_the_driver_cannot_read_as_a_trial_fails_stops_the_run_in_its_one_line(tmp_path, monkeypatch):
    # Read in a Tune callback to say where the trial resumes: the OSError ended the run with Tune's traceback.
    from tests.test_records import fail_reads_of

    path = probe_grid(tmp_path, axes={"fail": ["once"]}, fixed={"epochs": 3}, max_failures=1)
    grid = load_grid(path)
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    progress = run.trial_file(grid.trials[0].trial_id, "progress.jsonl")
    fail_reads_of(monkeypatch, "read_bytes", progress)
    with pytest.raises(RunError, match=f"^{progress}: unreadable progress file \\(\\[Errno 5\\] "):
        run_grid(grid, run, quiet())
    monkeypatch.undo()
    assert run_grid(grid, run, quiet()).counts == {"completed": 1}
    assert [epoch for _, epoch, _ in executions(tmp_path)] == [0, 1]  # the next run resumed it from its checkpoint
