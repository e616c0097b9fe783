"""`ablate run` as a real process: the smoke grid end to end, and a driver killed with SIGKILL."""
from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import duckdb
import pandas as pd
import polars as pl
import pytest

from orchestrator.store.rundir import RunDir
from tests.conftest import ROOT, ablate
from tests.runs import executions, probe_grid, trials
from tests.test_store import CreatesAFile


def test_smoke_grid_end_to_end(tmp_path, data_dir):
    result = ablate("run", "grids/smoke.yaml", "--storage", tmp_path / "runs", timeout=600)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "runs" / "smoke"
    assert "smoke: 12 completed (12 run now, 0 already done)" in result.stdout
    assert f"results: {run_dir / 'trials.parquet'} and {run_dir / 'epochs.parquet'}" in result.stdout

    rows = trials(run_dir)
    assert len(rows) == 12 and rows["trial_id"].is_unique and (rows["status"] == "completed").all()
    assert set(zip(rows["model"], rows["variant"])) == {(m, v) for m in "ABC" for v in ("base", "strided", "convpool", "all")}
    for column in ("trial_id", "status", "model", "variant", "dataset", "augmentation", "lr", "seed", "val_error",
                   "test_error", "params", "epochs_completed", "train_seconds", "images_per_second", "attempts",
                   "error", "started_at", "finished_at", "ablate_version", "torch_version", "ray_version", "host"):
        assert column in rows.columns, column
    assert (rows["dataset"] == "synthetic").all() and rows["test_error"].between(0, 1).all()
    assert (rows["started_at"] <= rows["finished_at"]).all() and rows["params"].gt(0).all()

    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert len(epochs) == 12 * 4 and set(epochs["trial_id"]) == set(rows["trial_id"])
    # Every tool a user might reach for reads the same results.
    assert pl.read_parquet(run_dir / "trials.parquet").height == 12
    assert duckdb.sql(f"select count(*) from read_parquet('{run_dir}/epochs.parquet')").fetchall() == [(48,)]

    again = ablate("run", "grids/smoke.yaml", "--storage", tmp_path / "runs")
    assert again.returncode == 0 and "smoke: 12 completed (0 run now, 12 already done)" in again.stdout


WORKLOAD_WITH_DATA = """
import os
from dataclasses import dataclass

from workloads.base import Workload


@dataclass
class Config:
    lr: float = 0.1
    seed: int = 0


def train(config, session):
    open(os.path.join(os.environ["ABLATE_DATA"], f"lr{config.lr}"), "w").close()  # where its dataset would be
    session.report({"epoch": 1, "val_error": config.lr})
    return {"status": "completed", "val_error": config.lr, "test_error": config.lr}


WORKLOAD = Workload(name="mine", config=Config, train=train)
"""


def test_a_workload_module_in_the_working_directory_runs_on_local_workers_with_the_data_dir(tmp_path):
    # As a user would: their own module beside their grid, nothing on PYTHONPATH. The driver
    # imports it from the working directory, and the Ray workers are told to do the same, and
    # where --data-dir is.
    (tmp_path / "mywork.py").write_text(WORKLOAD_WITH_DATA)
    (tmp_path / "mine.yaml").write_text("name: mine\nworkload: mywork:WORKLOAD\naxes:\n  lr: [0.1, 0.5]\n")
    (tmp_path / "data").mkdir()
    result = ablate("run", "mine.yaml", "--quiet", "--data-dir", "data", cwd=tmp_path,
                    env={"PYTHONPATH": "", "ABLATE_DATA": ""})
    assert result.returncode == 0, result.stderr
    assert "mine: 2 completed (2 run now, 0 already done)" in result.stdout
    rows = pd.read_parquet(tmp_path / "runs" / "mine" / "trials.parquet")
    assert sorted(rows["lr"]) == [0.1, 0.5]
    # Written in Ray's workers (each in a trial's own directory): the data dir, relative to where
    # `ablate run` was started, reached them.
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["lr0.1", "lr0.5"]


def test_an_address_where_no_ray_answers_is_one_line_at_once(tmp_path):
    # Ray itself retries such an address for minutes, printing its client's warnings meanwhile.
    with socket.socket() as taken:  # a port of this machine that nothing listens on
        taken.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = ablate("run", probe_grid(tmp_path), "--storage", tmp_path / "runs", "--address", address)
    assert result.returncode == 1
    assert result.stderr == (f"error: cannot connect to Ray at {address} (Connection refused): is its head running, "
                             "and is this the port `ray start --head` printed (6379 by default)?\n")


def test_an_http_address_is_one_line_at_once(tmp_path):
    # The dashboard's address, which `ray job submit` takes (README: `ray dashboard` forwards 8265),
    # given to --address: Ray waited on it for minutes, or blamed a RAY_ADDRESS that was not set.
    dashboard = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=dashboard.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{dashboard.server_address[1]}"
    try:
        as_url, as_host_port = (ablate("run", probe_grid(tmp_path), "--storage", tmp_path / "runs", "--address", a,
                                       timeout=60)
                                for a in (f"http://{address}", address))
    finally:
        dashboard.shutdown()
    assert as_url.returncode == as_host_port.returncode == 1
    assert as_url.stderr == (
        f"error: cannot connect to Ray at http://{address}: that is an HTTP address (the dashboard's, which `ray job "
        "submit` takes); pass the head's address, HOST:PORT as `ray start --head` printed (port 6379 by default), or "
        "--address auto on the head\n")
    assert as_host_port.stderr == (
        f"error: cannot connect to Ray at {address}: it answers HTTP, as a dashboard does (8265, which `ray dashboard` "
        "forwards), not as a Ray head; pass the port `ray start --head` printed (6379 by default)\n")


def test_ray_client_is_refused_up_front(tmp_path):
    # Through Ray Client, Tune runs the experiment on the head, with none of this driver's callbacks:
    # it ended in a traceback (AttributeError: 'Events' object has no attribute 'hangs').
    result = ablate("run", probe_grid(tmp_path), "--storage", tmp_path / "runs", "--address", "ray://127.0.0.1:10001",
                    timeout=120)
    assert result.returncode == 1
    assert result.stderr == (
        "error: cannot run through Ray Client (ray://127.0.0.1:10001): ablate's driver must run on the cluster; run it "
        "on the head (`ray attach`, then --address auto) or submit it as a Ray job (`ray job submit`)\n")


@pytest.mark.parametrize("ray_address, refused", [
    ("ray://127.0.0.1:10001", "cannot run through Ray Client (ray://127.0.0.1:10001): "),
    ("http://127.0.0.1:8265", "cannot connect to Ray at http://127.0.0.1:8265: that is an HTTP address ")])
def test_an_address_that_auto_takes_from_ray_address_is_checked_as_one_given(tmp_path, ray_address, refused):
    # ray.init("auto") joins RAY_ADDRESS where it is set (Ray's job docs export the dashboard's): through
    # Ray Client, or "cannot connect to Ray at auto: 2. Set RAY_ADDRESS to the GCS address instead".
    result = ablate("run", probe_grid(tmp_path), "--storage", tmp_path / "runs", "--address", "auto",
                    env={"RAY_ADDRESS": ray_address}, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: RAY_ADDRESS, which --address auto takes: {refused}"), result.stderr
    assert result.stderr.count("\n") == 1


def test_gpus_on_a_machine_without_gpus_is_refused_up_front(tmp_path):
    result = ablate("run", "grids/smoke.yaml", "--storage", tmp_path / "runs", "--trials-per-gpu", "4")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: each trial asks for 0.25 GPU but the Ray cluster has no GPU; use --gpus 0 "
        "(or resources.gpus: 0) to train on CPUs")


def test_a_trial_whose_worker_died_leaves_rays_message_in_the_driver_log_not_among_the_runs_lines(tmp_path):
    # Ray's listener prints what its raylet says of a dead worker straight to the driver's stdout,
    # "\x1b[33m(raylet)\x1b[0m A worker died or was killed ...", between the display's lines.
    path = probe_grid(tmp_path, axes={"fail": ["kill_once"]}, fixed={"epochs": 3}, max_failures=1)
    result = ablate("run", path, "--storage", tmp_path / "runs", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "raylet" not in result.stdout + result.stderr
    assert "(raylet) A worker died or was killed" in (tmp_path / "runs" / "probe" / "driver.log").read_text()


def test_a_trial_ray_kills_for_running_out_of_memory_is_one_line_and_retried_not_the_run_s_end(tmp_path):
    # Ray's memory monitor (on by default) kills a worker past a share of the node's memory; Tune's
    # actor manager raised the OutOfMemoryError this gives, and the run ended with a traceback.
    # Here the share is what the machine uses now plus 3 GiB, and the trial takes 5 GB more. Ray and
    # the driver take most of a GiB as they start: with less room the monitor kills the trial's first
    # worker as it starts, which is not retried.
    meminfo = dict(line.split(":") for line in open("/proc/meminfo"))
    total, available = (int(meminfo[key].split()[0]) * 1024 for key in ("MemTotal", "MemAvailable"))
    if available < 8 * 2**30 or _memory_limit() < total:  # Ray's monitor would count a container's limit
        pytest.skip("needs 8 GiB free and no container memory limit, to let Ray's monitor kill a 5 GB trial")
    threshold = (total - available + 3 * 2**30) / total
    path = probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 4, "sleep": 1, "ballast": 5_000_000,
                                                            "checkpoint_every": 100}, max_failures=1)
    result = ablate("run", path, "--storage", tmp_path / "runs", "--quiet",
                    env={"RAY_memory_monitor_refresh_ms": "100", "RAY_memory_usage_threshold": f"{threshold:.3f}"})
    said = "its worker process was killed for running out of memory (Ray's memory monitor)"
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 1 and "probe: 1 failed (1 run now, 0 already done)" in result.stdout, result.stdout
    row = trials(tmp_path / "runs" / "probe").iloc[0]
    assert row["status"] == "failed" and row["error"] == said
    # Retried: killed as it trains, or (memory not yet given back) as its next worker starts.
    assert f"retrying: {said}, from its " in result.stdout
    assert f"failed: {said} (log: " in result.stdout
    log = open(row["log"]).read()
    assert f"failed: {said}; Ray said:\n" in log and "killed due to the node running low on memory" in log


def test_a_trial_whose_workers_ray_kills_for_memory_as_they_start_is_retried_in_one_line_then_failed(tmp_path):
    # Killed by Ray's memory monitor in its actor's creation, before it began: the retry went unsaid,
    # and the last line read "1 failed (0 run now, ...)". Here the share allowed is less than the
    # machine uses before Ray starts: every worker is killed as soon as it is given a task.
    meminfo = dict(line.split(":") for line in open("/proc/meminfo"))
    total, available = (int(meminfo[key].split()[0]) * 1024 for key in ("MemTotal", "MemAvailable"))
    if _memory_limit() < total:  # Ray's monitor would count a container's limit
        pytest.skip("needs no container memory limit, to set the share Ray's monitor allows")
    threshold = max(0.001, (total - available) / total / 2)
    path = probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 2, "sleep": 1}, max_failures=1)
    result = ablate("run", path, "--storage", tmp_path / "runs", "--quiet",
                    env={"RAY_memory_monitor_refresh_ms": "20", "RAY_memory_usage_threshold": f"{threshold:.3f}"})
    said = "its worker process was killed for running out of memory (Ray's memory monitor)"
    assert "Traceback" not in result.stdout + result.stderr
    assert f"retrying: {said}, from its start\n" in result.stdout, result.stdout
    assert f"failed: {said} (log: " in result.stdout
    assert result.returncode == 1 and "probe: 1 failed (1 run now, 0 already done)" in result.stdout, result.stdout
    assert not executions(tmp_path)  # it never began


def _memory_limit() -> float:
    """The memory limit of this machine's container (cgroup v2 or v1), inf where it has none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        return float("inf") if text == "max" else float(text)
    return float("inf")


def test_sigkill_of_the_driver_loses_nothing_and_runs_nothing_twice(tmp_path):
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}, fixed={"epochs": 4, "sleep": 0.4},
                      resources={"cpus": 1})
    storage = tmp_path / "runs"
    records = storage / "probe" / "records"  # each finished trial's record, written as it finishes
    exe = os.path.join(os.path.dirname(sys.executable), "ablate")
    driver = subprocess.Popen([exe, "run", str(path), "--storage", str(storage)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = storage / "probe"

    def finished_ids():
        return {p.name.split(".")[0] for p in records.glob("*.json")}

    def checkpointed_unfinished():
        """trial_id -> last checkpointed epoch, for trials without a result row."""
        done = finished_ids()
        out = {}
        for progress in run_dir.glob("trials/*/progress.jsonl"):
            trial_id = progress.parent.name
            epoch = RunDir(str(run_dir)).progress(trial_id).get("epoch", 0)
            if trial_id not in done and epoch >= 1:
                out[trial_id] = epoch
        return out

    # Kill when some trials are finished and others are half-way through.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done_before = finished_ids()
        if len(done_before) >= 2 and (midway := checkpointed_unfinished()):
            break
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert 2 <= len(done_before) < 6 and midway

    # The dead driver's hold is fresh (it beat less than 30 s ago), but its process is gone from
    # this machine: the same command, run again at once and without --wait, takes the run over.
    result = ablate("run", path, "--storage", storage)
    assert result.returncode == 0, result.stderr
    assert f"its driver, pid {driver.pid} on {socket.gethostname()}, has ended; taking the run over" in result.stderr
    rows = trials(run_dir)
    assert len(rows) == 6 and rows["trial_id"].is_unique and (rows["status"] == "completed").all()
    key = {row.trial_id: f"lr{row.lr}-seed0-never" for row in rows.itertuples()}
    started = Counter(k for k, _, _ in executions(tmp_path))
    for trial_id in done_before:  # finished before the kill: never ran again
        assert started[key[trial_id]] == 1
    restarts = {k: epoch for k, epoch, _ in executions(tmp_path)}  # the last start of each trial
    for trial_id, epoch in midway.items():  # cut off half-way: resumed from its checkpoint, once
        assert started[key[trial_id]] == 2 and restarts[key[trial_id]] >= epoch
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert len(epochs) == 6 * 4 and not epochs.duplicated(["trial_id", "epoch"]).any()


@pytest.mark.parametrize("stop, group", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
                         ids=["ctrl-c", "sigterm", "sigterm-to-the-group"])
def test_ctrl_c_or_sigterm_stops_cleanly_and_says_how_to_resume(tmp_path, stop, group):
    # SIGTERM is how `kill` ends a job, and `timeout` or a batch scheduler: to every process of the
    # job, the local Ray's own included. As Ctrl-C, not Ray's stack dump, nor a wait on a dead Ray.
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4, 0.5]}, fixed={"epochs": 3, "sleep": 0.4},
                      resources={"cpus": 1})
    storage = tmp_path / "runs"
    records = storage / "probe" / "records"
    exe = os.path.join(os.path.dirname(sys.executable), "ablate")
    driver = subprocess.Popen([exe, "run", str(path), "--storage", str(storage)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (records.exists() and any(records.glob("*.json"))):
            time.sleep(0.05)
        if group:
            os.killpg(driver.pid, stop)
        else:
            driver.send_signal(stop)
        out, errors = driver.communicate(timeout=120)
    finally:  # the driver's session, Ray's processes included, whatever is left of it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 1
    assert "trials unfinished: run the same command again to resume them" in (errors if group else out)
    assert "Traceback" not in out + errors and "SIGTERM received" not in errors
    done = {p.name.split(".")[0] for p in records.glob("*.json")}
    started_before = Counter(k for k, _, _ in executions(tmp_path))
    if not group:  # (where Ray's own processes were killed too, the driver ends as a killed one would)
        # What it says it ran are the trials that started, not the 5 it would have run.
        ran = int(re.search(r"\((\d+) run now", out).group(1))
        assert len(done) <= ran < 5, out

    result = ablate("run", path, "--storage", storage)
    assert result.returncode == 0, result.stderr
    rows = trials(storage / "probe")
    assert len(rows) == 5 and rows["trial_id"].is_unique
    started = Counter(k for k, _, _ in executions(tmp_path))
    for row in rows[rows["trial_id"].isin(done)].itertuples():  # finished before Ctrl-C: not run again
        key = f"lr{row.lr}-seed0-never"
        assert started[key] == started_before[key] == 1


@pytest.mark.parametrize("ctrl_c", [signal.default_int_handler, signal.SIG_IGN], ids=["", "ctrl-c-ignored"])
def test_sigterm_before_any_trial_runs_says_how_to_resume(tmp_path, ctrl_c):
    # Waiting for another driver of the run (this test's process holds it): no Ray yet. A driver
    # started in the background by a script (`nohup ablate run ... &`) has Ctrl-C ignored; a
    # SIGTERM stops it all the same (it waited on, and took the run once the hold went stale).
    from tests.test_lock import plant_hold

    path, storage = probe_grid(tmp_path), tmp_path / "runs"
    plant_hold(RunDir(str(storage / "probe")))
    errors = tmp_path / "stderr"
    exe = os.path.join(os.path.dirname(sys.executable), "ablate")
    with open(errors, "w") as stderr:
        driver = subprocess.Popen([exe, "run", str(path), "--storage", str(storage), "--wait"], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=stderr,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, ctrl_c))
    try:
        deadline = time.monotonic() + 60
        while "waiting for it" not in errors.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=60) == 130
    finally:
        driver.kill()
    assert errors.read_text().endswith(f"interrupted: finished trials are saved in {storage / 'probe'}; "
                                       "run the same command again to resume\n")


def test_an_empty_storage_is_refused_not_the_current_folder(tmp_path):
    # `--storage "$RESULTS"` with RESULTS unset would otherwise write the run where the command was typed.
    path = probe_grid(tmp_path)
    for command in ("run", "summarize"):
        result = ablate(command, path, "--storage", "", cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr == "error: --storage: expected a local path, an NFS path or s3://bucket/prefix, got ''\n"
    assert not (tmp_path / "probe").exists()


def test_storage_that_cannot_be_written_is_one_line(tmp_path):
    path = probe_grid(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    result = ablate("run", path, "--storage", tmp_path / "a-file" / "runs")
    assert result.returncode == 1
    assert result.stderr == (f"error: {tmp_path / 'a-file' / 'runs' / 'probe'}: cannot write there (Not a directory); "
                             "what finished is kept: run the same command again once it can be written\n")


def with_a_damaged_checkpoint(tmp_path, damage: str, fixed: dict, **grid):
    """A probe grid of two trials, lr 0.1 and 0.2, as if the first had run half-way and its checkpoint
    was then replaced (`damage`: with one that would run code) or cut short. Returns the grid file,
    the storage, the first trial's id and its checkpoint."""
    import pickle

    from orchestrator.plan.grid import load_grid

    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]}, fixed=fixed, resources={"cpus": 1}, **grid)
    storage = tmp_path / "runs"
    tampered = {t.config["lr"]: t.trial_id for t in load_grid(path).trials}[0.1]
    checkpoint = storage / "probe" / "trials" / tampered / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(pickle.dumps({"state": CreatesAFile(tmp_path / "created-by-the-checkpoint"), "epochs": []})
                           if damage == "would run code" else b'{"state": {"epoch": 1}, "repo')
    return path, storage, tampered, checkpoint


@pytest.mark.parametrize("damage", ["would run code", "cut short"])
def test_a_checkpoint_that_cannot_be_loaded_fails_its_trial_at_once_and_trains_from_its_start_once_deleted(
        tmp_path, damage):
    # Every retry would read the same file: retries would be spent for the same error each time.
    path, storage, tampered, checkpoint = with_a_damaged_checkpoint(tmp_path, damage, {"epochs": 2}, max_failures=2)
    marker = tmp_path / "created-by-the-checkpoint"

    result = ablate("run", path, "--storage", storage, "--quiet")
    assert result.returncode == 1, result.stderr
    assert not marker.exists()
    assert "probe: 1 completed, 1 failed (2 run now, 0 already done)" in result.stdout
    row = trials(storage / "probe").set_index("trial_id").loc[tampered]
    assert row["status"] == "failed" and row["attempts"] == 1  # not max_failures + 1
    assert re.findall(r" attempt (\d+) on ", (checkpoint.parent / "trial.log").read_text()) == ["1"]
    if damage == "would run code":
        assert row["error"] == (f"{checkpoint}: refused: it names io.open, which loading it would run; a checkpoint "
                                "holds only tensors and plain values (delete the file to train the trial from its start)")
    else:
        assert row["error"].startswith(f"{checkpoint}: not a readable checkpoint (")
        assert row["error"].endswith("); delete it to train the trial from its start (`ablate run --retry-failed`), "
                                     "or put back a copy")
    shown = [line for line in result.stdout.splitlines() if f" {tampered} " in line]
    assert shown[-1].endswith(f"] {tampered} failed: {row['error']} (log: {checkpoint.parent / 'trial.log'})")
    assert [line.split(" ")[2] for line in shown] == ["started:", "failed:"]  # no retry

    checkpoint.unlink()  # what the error says to do: the trial trains from its start
    again = ablate("run", path, "--storage", storage, "--quiet", "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert "probe: 2 completed (1 run now, 1 already done)" in again.stdout
    assert not marker.exists()
    assert sorted((key, start) for key, start, _ in executions(tmp_path)) == [("lr0.1-seed0-never", 0),
                                                                             ("lr0.2-seed0-never", 0)]


def test_fail_fast_stops_the_grid_at_a_trial_failed_by_its_checkpoint(tmp_path):
    # Such a trial raises nothing for Tune's own fail_fast to see (run/trial.py).
    path, storage, tampered, _ = with_a_damaged_checkpoint(tmp_path, "cut short", {"epochs": 20, "sleep": 0.5},
                                                           max_failures=0)
    result = ablate("run", path, "--storage", storage, "--quiet", "--fail-fast")
    assert result.returncode == 1, result.stderr
    assert dict(trials(storage / "probe")[["trial_id", "status"]].values) == {tampered: "failed"}


def test_fail_fast_stops_the_grid_once_a_trial_has_failed_its_retries_and_the_next_run_goes_on(tmp_path):
    # max_failures 1 (the default), which Tune's own fail_fast refuses. The trials it stops are
    # not recorded: they go on at the next `ablate run`, from their checkpoints.
    path = probe_grid(tmp_path, axes={"fail": ["always", "never"]}, fixed={"epochs": 20, "sleep": 0.3},
                      resources={"cpus": 1})
    storage = tmp_path / "runs"
    result = ablate("run", path, "--storage", storage, "--quiet", "--fail-fast")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    rows = trials(storage / "probe")
    assert rows[["fail", "status", "attempts"]].values.tolist() == [["always", "failed", 2]]
    assert "1 trial unfinished: run the same command again to resume them" in result.stdout

    again = ablate("run", path, "--storage", storage, "--quiet")
    assert again.returncode == 1, again.stderr  # the failed trial waits for --retry-failed
    rows = trials(storage / "probe").set_index("fail")
    assert rows.status["never"] == "completed" and rows.epochs_completed["never"] == 20
    trained = [line.split()[1] for line in (tmp_path / "markers" / "epochs.log").read_text().splitlines()
               if "-never" in line]
    assert sorted(trained, key=int) == [str(epoch) for epoch in range(1, 21)]  # each epoch once


def test_a_local_ray_that_cannot_start_is_one_line(tmp_path):
    # Under a 2 MB file-size limit Ray's own processes die as they start, and ray.init raises a bare
    # Exception after its startup timeout.
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))

    path = probe_grid(tmp_path)
    exe = os.path.join(os.path.dirname(sys.executable), "ablate")
    driver = subprocess.Popen([exe, "run", str(path), "--storage", str(tmp_path / "runs")], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limit,
                              start_new_session=True)
    try:
        _, errors = driver.communicate(timeout=240)
    finally:  # what Ray started, whatever is left of it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 1
    assert errors.startswith("error: cannot start Ray on this machine: ") and errors.count("\n") == 1, errors
