"""Trials in experiment trackers (run/tracking.py, run/trackers.py): a real MLflow tracking server, read back with
MlflowClient; one tracker run per trial across retries and reruns, each step once."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import GridError, RunError
from orchestrator.plan.grid import load_grid
from orchestrator.run import trackers, tracking
from orchestrator.run.runner import run_grid
from orchestrator.store.records import Record
from orchestrator.store.rundir import RunDir
from tests.conftest import ablate
from tests.runs import probe_grid, quiet, trials

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with a sqlite backend; ended by its PID (its process group)."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    exe = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                             "--default-artifact-root", str(root / "artifacts")],
                            stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                MlflowClient(uri).search_experiments(max_results=1)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group is the server's own: start_new_session
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(autouse=True)
def quick_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def runs_of(uri: str, experiment: str):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client, client.search_runs([found.experiment_id]) if found else []


def steps(client, run, key="val_error") -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, key)]


def test_each_trial_is_one_mlflow_run_with_its_params_and_one_value_per_epoch(tmp_path, mlflow_server, local_ray):
    path = probe_grid(tmp_path, name="mlf-basic", axes={"lr": [0.1, 0.2]}, fixed={"epochs": 3},
                      tracking={"mlflow": {"tracking_uri": mlflow_server}})
    grid = load_grid(path)
    summary = run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())
    assert summary.counts == {"completed": 2}
    client, runs = runs_of(mlflow_server, "mlf-basic")
    assert sorted(r.data.tags["ablate.trial_id"] for r in runs) == sorted(t.trial_id for t in grid.trials)
    for r in runs:
        trial = next(t for t in grid.trials if t.trial_id == r.data.tags["ablate.trial_id"])
        assert r.info.run_name.startswith(trial.trial_id) and f"lr={trial.config['lr']}" in r.info.run_name
        assert r.data.params["lr"] == str(trial.config["lr"]) and r.data.params["epochs"] == "3"
        assert r.data.tags["ablate.cell"] == f"lr={trial.config['lr']}"  # seeds of a cell share it
        assert steps(client, r) == [1, 2, 3]
        assert r.info.status == "FINISHED" and r.data.tags["ablate.status"] == "completed"
        assert r.data.metrics["final/top5_error"] == pytest.approx(trial.config["lr"] / 2)
    state = (tmp_path / "runs" / "mlf-basic" / "trials" / grid.trials[0].trial_id / "tracking.json").read_text()
    assert '"last_step": 3' in state


def test_a_trial_halving_stops_ends_its_mlflow_run_at_the_rung(tmp_path, mlflow_server, local_ray):
    path = probe_grid(tmp_path, name="mlf-halving", axes={"lr": [0.1, 0.2, 0.3, 0.4]}, fixed={"epochs": 4},
                      halving={"over": ["lr"], "rungs": [2], "keep": 0.5},
                      tracking={"mlflow": {"tracking_uri": mlflow_server}})
    grid = load_grid(path)
    assert run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet()).counts == \
        {"completed": 2, "stopped": 2}
    client, runs = runs_of(mlflow_server, "mlf-halving")
    ended = sorted((float(r.data.params["lr"]), r.info.status, r.data.tags["ablate.status"], steps(client, r))
                   for r in runs)
    assert ended == [(0.1, "FINISHED", "completed", [1, 2, 3, 4]), (0.2, "FINISHED", "completed", [1, 2, 3, 4]),
                     (0.3, "KILLED", "stopped", [1, 2]), (0.4, "KILLED", "stopped", [1, 2])]


def test_a_killed_and_resumed_trial_and_a_second_run_keep_one_mlflow_run_and_each_step_once(
        tmp_path, mlflow_server, local_ray):
    path = probe_grid(tmp_path, name="mlf-resume", axes={"fail": ["kill_once", "always"]}, fixed={"epochs": 3},
                      max_failures=1, tracking={"mlflow": {"tracking_uri": mlflow_server}})
    grid = load_grid(path)
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    assert run_grid(grid, run, quiet()).counts == {"completed": 1, "failed": 1}
    # The failed trial runs again: its tracker run continues; nothing already logged is logged again.
    assert run_grid(grid, run, quiet(), retry_failed=True).counts == {"completed": 1, "failed": 1}
    run_grid(grid, run, quiet())  # every trial done: nothing new
    client, runs = runs_of(mlflow_server, "mlf-resume")
    assert Counter(r.data.tags["ablate.trial_id"] for r in runs) == Counter(t.trial_id for t in grid.trials)
    by_fail = {r.data.params["fail"]: r for r in runs}
    assert steps(client, by_fail["kill_once"]) == [1, 2, 3]  # killed after epoch 1, resumed: each once
    assert steps(client, by_fail["always"]) == [1]
    assert by_fail["always"].info.status == "FAILED" and by_fail["kill_once"].info.status == "FINISHED"


def test_ablate_track_sends_a_finished_run_afterwards_twice_the_same_runs(tmp_path, mlflow_server, local_ray,
                                                                             monkeypatch):
    path = probe_grid(tmp_path, name="mlf-later", axes={"lr": [0.1, 0.2]}, fixed={"epochs": 2})
    grid = load_grid(path)
    run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    for _ in range(2):
        result = CliRunner().invoke(app, ["track", str(tmp_path / "runs" / "mlf-later"), "--trust-workload", "--to", "mlflow"])
        assert result.exit_code == 0, result.output
        assert "2 trials in mlflow" in result.output
        # Where they are, once; not MLflow's two lines of links for every trial.
        assert f"note: trials are tracked in MLflow: {mlflow_server}/#/experiments/" in result.output
        assert "View run" not in result.output
    client, runs = runs_of(mlflow_server, "mlf-later")
    assert len(runs) == 2
    for r in runs:
        assert steps(client, r) == [1, 2] and r.info.status == "FINISHED"
        assert len(client.get_metric_history(r.info.run_id, "final/val_error")) == 1


def test_a_tracking_server_that_does_not_answer_is_one_line_before_any_trial(tmp_path):
    path = probe_grid(tmp_path, name="mlf-down", tracking={"mlflow": {"tracking_uri": f"http://127.0.0.1:{_free_port()}"}})
    grid = load_grid(path)
    with pytest.raises(RunError, match=r"^tracking with mlflow: http://127.0.0.1:\d+ does not answer"):
        run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())
    assert not (tmp_path / "markers" / "executions.log").exists()


def test_a_tracking_uri_mlflow_refuses_is_one_line_before_any_trial(tmp_path):
    result = ablate("run", probe_grid(tmp_path, tracking={"mlflow": {"tracking_uri": "htp://127.0.0.1:5000"}}),
                    "--storage", tmp_path / "runs")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: tracking with mlflow: htp://127.0.0.1:5000: ") and "htp" in line[40:]
    assert not (tmp_path / "markers" / "executions.log").exists()


def test_an_unknown_tracker_is_a_grid_error(tmp_path):
    with pytest.raises(GridError, match=r"tracking\.comet: unknown tracker 'comet' \(known: mlflow"):
        load_grid(probe_grid(tmp_path, tracking=["comet"]))


def test_every_tracker_a_grid_may_name_has_a_client():
    # A name plan/execution.py accepts without a client in run/trackers.py would pass `ablate plan`, then
    # fail `ablate run` with a KeyError; a client without the name could never be asked for.
    from orchestrator.plan.execution import TRACKER_SETTINGS

    assert list(trackers.TRACKERS) == list(TRACKER_SETTINGS)


class FakeTracker:
    """In MLflow's place, for a test to say what starting or logging a trial does."""
    name = "mlflow"

    def __init__(self, grid, run, settings):
        pass

    def where(self):
        return "nowhere"

    def shown(self):
        return "nowhere"


def test_a_tracker_failing_mid_run_is_one_warning_and_tracking_stops(tmp_path, monkeypatch):
    class Failing(FakeTracker):
        def start_or_resume(self, *args):
            raise ConnectionError("server went away")

    monkeypatch.setitem(trackers.TRACKERS, "mlflow", Failing)
    grid = load_grid(probe_grid(tmp_path, tracking=["mlflow"]))
    notes = []
    t = tracking.Tracking.start(grid, RunDir(str(tmp_path / "run")), notes.append)
    record = Record({"trial_id": grid.trials[0].trial_id, "status": "completed", "val_error": 0.1}, None,
                    [{"epoch": 1, "val_error": 0.2}])
    t.epoch(grid.trials[0].trial_id, {"epoch": 1, "val_error": 0.2})
    t.finished(grid.trials[0].trial_id, record)
    assert notes == ["trials are tracked in nowhere", "tracking with mlflow stopped (server went away); the trials go on, their results are saved "
                     f"as always: `ablate track {tmp_path / 'run'} --to mlflow` sends them once it works again"]


def test_the_results_do_not_depend_on_tracking(tmp_path, mlflow_server, local_ray):
    path = probe_grid(tmp_path, name="mlf-rows", fixed={"epochs": 2}, tracking={"mlflow": {"tracking_uri": mlflow_server}})
    grid = load_grid(path)
    run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())
    assert trials(tmp_path / "runs" / "mlf-rows")["status"].tolist() == ["completed", "completed"]


def tensorboard_values(path: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tensorboard_scalars(path: Path) -> dict[str, list[int]]:
    return {tag: [step for step, _ in values] for tag, values in tensorboard_values(path).items()}


def test_tensorboard_one_log_dir_per_trial_each_step_once_across_a_retry_and_reruns(tmp_path, local_ray):
    pytest.importorskip("tensorboard")
    path = probe_grid(tmp_path, name="tb", axes={"fail": ["kill_once", "always"]}, fixed={"epochs": 3},
                      max_failures=1, tracking=["tensorboard"])
    grid = load_grid(path)
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    run_grid(grid, run, quiet())
    run_grid(grid, run, quiet(), retry_failed=True)
    run_grid(grid, run, quiet())
    logs = tmp_path / "runs" / "tb" / "tensorboard"
    assert sorted(p.name for p in logs.iterdir()) == sorted(t.trial_id for t in grid.trials)
    by_fail = {t.config["fail"]: tensorboard_scalars(logs / t.trial_id) for t in grid.trials}
    assert by_fail["kill_once"]["val_error"] == [1, 2, 3]
    assert by_fail["kill_once"]["final/top5_error"] == [3]
    assert by_fail["always"]["val_error"] == [1]


def test_ablate_track_to_tensorboard_twice_writes_each_step_once(tmp_path, local_ray):
    pytest.importorskip("tensorboard")
    path = probe_grid(tmp_path, name="tb-later", fixed={"epochs": 2})
    grid = load_grid(path)
    run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())
    for _ in range(2):
        result = CliRunner().invoke(app, ["track", str(tmp_path / "runs" / "tb-later"), "--trust-workload", "--to", "tensorboard"])
        assert result.exit_code == 0, result.output
    for t in grid.trials:
        scalars = tensorboard_scalars(tmp_path / "runs" / "tb-later" / "tensorboard" / t.trial_id)
        assert scalars["val_error"] == [1, 2] and scalars["final/val_error"] == [2]


def wandb_records(path: Path) -> list:
    """The records of an offline run's .wandb file (wandb's own protobuf Record, in the leveldb-log
    framing `wandb sync` reads: 32 KiB blocks, 7-byte chunk headers, after a 7-byte file header)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb
    data, pos, buf, out = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a whole record, or its last chunk
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_one_run_per_trial_with_config_history_and_summary(tmp_path, local_ray, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = probe_grid(tmp_path, name="wb", axes={"fail": ["kill_once"]}, fixed={"epochs": 3}, max_failures=1,
                      tracking=["wandb"])
    grid = load_grid(path)
    run = RunDir.for_grid(str(tmp_path / "runs"), grid.name)
    assert run_grid(grid, run, quiet()).counts == {"completed": 1}
    run_grid(grid, run, quiet())  # done: logs nothing new
    result = CliRunner().invoke(app, ["track", str(tmp_path / "runs" / "wb"), "--trust-workload", "--to", "wandb"])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "runs" / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1  # neither the second run nor `ablate track` opened the finished trial's run again
    found = [r for f in files for r in wandb_records(f)]
    runs = [r.run for r in found if r.WhichOneof("record_type") == "run"]
    assert {r.run_id for r in runs} == {files[0].stem.removeprefix("run-")}  # one run, however often opened
    assert runs[0].display_name.startswith(grid.trials[0].trial_id) and runs[0].run_group == "fail=kill_once"
    assert {_key(i): i.value_json for i in runs[0].config.update}["lr"] == "0.1"
    history = [r.history for r in found if r.WhichOneof("record_type") == "history"]
    assert [h.step.num for h in history] == [1, 2, 3]
    assert all("val_error" in {_key(i) for i in h.item} for h in history)
    summary = {_key(i): i.value_json for r in found if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert summary["status"] == '"completed"' and float(summary["final/top5_error"]) == pytest.approx(0.05)


def test_wandb_online_without_credentials_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    grid = load_grid(probe_grid(tmp_path, tracking=["wandb"]))
    with pytest.raises(RunError, match=r"^tracking with wandb: no W&B credentials"):
        run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())


def test_a_driver_killed_mid_run_then_rerun_keeps_one_mlflow_run_per_trial_and_each_step_once(
        tmp_path, mlflow_server):
    from tests.conftest import ROOT, ablate

    path = probe_grid(tmp_path, name="mlf-kill", axes={"lr": [0.1, 0.2, 0.3, 0.4]}, fixed={"epochs": 4, "sleep": 0.4},
                      resources={"cpus": 1})
    storage = tmp_path / "runs"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server,
           "ABLATE_LOCK_HEARTBEAT_S": "0.2", "ABLATE_LOCK_STALE_S": "4"}
    exe = Path(sys.executable).parent / "ablate"
    driver = subprocess.Popen([str(exe), "run", str(path), "--storage", str(storage), "--track", "mlflow"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once a trial is logged half-way
            states = [p.read_text() for p in (storage / "mlf-kill").glob("trials/*/tracking.json")]
            if any('"last_step": 2' in s or '"last_step": 3' in s for s in states):
                break
            time.sleep(0.05)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert states, "no trial was tracked before the kill"
    result = ablate("run", path, "--storage", storage, "--track", "mlflow", "--wait",
                    env={k: env[k] for k in ("MLFLOW_TRACKING_URI", "ABLATE_LOCK_HEARTBEAT_S", "ABLATE_LOCK_STALE_S")})
    assert result.returncode == 0, result.stderr
    assert ablate("run", path, "--storage", storage, "--track", "mlflow",
                  env={"MLFLOW_TRACKING_URI": mlflow_server}).returncode == 0  # all done: nothing new
    client, runs = runs_of(mlflow_server, "mlf-kill")
    assert sorted(r.data.tags["ablate.trial_id"] for r in runs) == sorted(trials(storage / "mlf-kill")["trial_id"])
    for r in runs:
        assert steps(client, r) == [1, 2, 3, 4] and r.info.status == "FINISHED"


def test_a_trial_that_finished_as_its_driver_was_killed_has_its_mlflow_run_ended_by_the_next_run(
        tmp_path, mlflow_server):
    # The driver is killed (SIGKILL) once the trial's worker has written its record, before the driver
    # ended its MLflow run. The next run skips the trial as finished: its run stayed RUNNING, and the
    # next run said only "1 completed (0 run now, 1 already done)".
    path = probe_grid(tmp_path, name="mlf-left", axes={"lr": [0.1]}, fixed={"epochs": 2, "fail": "kill_driver_after_record"},
                      tracking={"mlflow": {"tracking_uri": mlflow_server}})
    storage = tmp_path / "runs"
    driver = subprocess.Popen([str(Path(sys.executable).parent / "ablate"), "run", str(path), "--storage", str(storage)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (tmp_path / "markers" / "driver.pid").write_text(str(driver.pid))
    assert driver.wait(timeout=300) == -signal.SIGKILL
    client, (r,) = runs_of(mlflow_server, "mlf-left")
    assert r.info.status == "RUNNING"
    again = ablate("run", path, "--storage", storage, "--quiet")
    assert again.returncode == 0, again.stderr
    assert "mlf-left: 1 completed (0 run now, 1 already done)" in again.stdout
    assert "note: the driver before this one left the tracker runs of 1 finished trial(s) open; they are ended now" \
        in again.stderr
    client, (r,) = runs_of(mlflow_server, "mlf-left")
    assert r.info.status == "FINISHED" and r.data.tags["ablate.status"] == "completed"
    assert steps(client, r) == [1, 2] and len(client.get_metric_history(r.info.run_id, "final/val_error")) == 1


def test_ablate_run_track_an_unknown_tracker_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["run", str(probe_grid(tmp_path)), "--storage", str(tmp_path / "runs"),
                                      "--track", "comet"])
    assert result.exit_code == 2  # as every mistake in a grid or its options
    assert "error: --track: unknown tracker 'comet' (known: mlflow, tensorboard, wandb)" in result.output
    assert not (tmp_path / "runs").exists()


def script_grid(tmp_path: Path, name: str, script: str, **top) -> Path:
    """A grid over one trial of a script in tmp_path that prints ablate's JSON lines."""
    import textwrap

    import yaml

    (tmp_path / f"{name}.py").write_text(textwrap.dedent(script))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "command": {"run": [sys.executable, f"{name}.py", "{seed}"]},
                                    "metric": "val_loss", "mode": "min", **top}))
    return path


def test_a_script_s_step_0_is_logged_in_every_tracker_at_its_step(tmp_path, mlflow_server, local_ray, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = script_grid(tmp_path, "steps0", """\
        import json
        for step in range(0, 301, 100):  # as examples/losses.py: the loss before training first
            print("ABLATE " + json.dumps({"step": step, "val_loss": 1 / (step + 1)}), flush=True)
        """, tracking={"mlflow": {"tracking_uri": mlflow_server}, "tensorboard": {}, "wandb": {}})
    grid = load_grid(path)
    assert run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet()).counts == {"completed": 1}
    recorded = pd.read_parquet(tmp_path / "runs" / "steps0" / "epochs.parquet")
    assert recorded["step"].tolist() == [0, 100, 200, 300]
    client, (run,) = runs_of(mlflow_server, "steps0")
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")] == \
        list(zip(recorded["step"], recorded["val_loss"]))
    trial_id = grid.trials[0].trial_id
    logs = tmp_path / "runs" / "steps0" / "tensorboard"
    assert tensorboard_scalars(logs / trial_id)["val_loss"] == [0, 100, 200, 300]
    (file,) = (tmp_path / "runs" / "steps0" / "wandb").glob("offline-run-*/run-*.wandb")
    history = [r.history for r in wandb_records(file) if r.WhichOneof("record_type") == "history"]
    assert [h.step.num for h in history] == [0, 100, 200, 300]


def test_a_metric_name_mlflow_refuses_is_logged_with_its_characters_replaced(tmp_path, mlflow_server, local_ray):
    path = script_grid(tmp_path, "names", """\
        import json
        for epoch in (1, 2):
            print("ABLATE " + json.dumps({"epoch": epoch, "val_loss": 1 / epoch, "acc@1": epoch / 4,
                                          "val/top 5": epoch / 8, "val//x": 1.0}), flush=True)
        """, seeds=[0, 1], tracking={"mlflow": {"tracking_uri": mlflow_server}})
    grid = load_grid(path)
    output = io.StringIO()
    assert run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet(output)).counts == \
        {"completed": 2}
    assert "tracking with mlflow stopped" not in output.getvalue()
    client, runs = runs_of(mlflow_server, "names")
    assert len(runs) == 2
    for r in runs:  # every trial's every metric, each at its epoch; a name MLflow refuses with _ for what it refuses
        assert {key: steps(client, r, key) for key in r.data.metrics if not key.startswith("final/")} == \
            {"val_loss": [1, 2], "acc_1": [1, 2], "val/top 5": [1, 2], "val/_/x": [1, 2]}
        assert r.data.metrics["final/acc_1"] == 0.5 and r.info.status == "FINISHED"


def test_a_name_mlflow_refuses_beside_the_name_it_would_become_is_a_metric_of_its_own(tmp_path, mlflow_server):
    # acc@1 would be acc_1, which the script reports too: neither is logged over the other, by
    # each driver (a second one takes the trial up at epoch 3) and in the final values.
    grid = load_grid(script_grid(tmp_path, "clash", "print('trained')\n",
                                 tracking={"mlflow": {"tracking_uri": mlflow_server}}))
    trial_id, run = grid.trials[0].trial_id, RunDir(str(tmp_path / "run"))
    epochs = [{"epoch": e, "acc_1": e / 8, "acc@1": e / 4, "val_loss": 1 / e} for e in (1, 2, 3)]
    first = tracking.Tracking.start(grid, run)
    for epoch in epochs[:2]:
        first.epoch(trial_id, epoch)
    record = Record({"trial_id": trial_id, "status": "completed", "acc@1": 0.75, "acc_1": 0.375, "val_loss": 1 / 3},
                    None, epochs)
    tracking.Tracking.start(grid, run).finished(trial_id, record)
    client, (r,) = runs_of(mlflow_server, "clash")
    logged = {key: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, key)] for key in r.data.metrics}
    assert logged == {"acc_1": [(e, e / 8) for e in (1, 2, 3)], "acc-1": [(e, e / 4) for e in (1, 2, 3)],
                      "val_loss": [(e, 1 / e) for e in (1, 2, 3)],
                      "final/acc_1": [(3, 0.375)], "final/acc-1": [(3, 0.75)], "final/val_loss": [(3, 1 / 3)]}


def test_a_name_mlflow_takes_keeps_it_unless_a_refused_name_reported_before_took_it():
    given = trackers.mlflow_names(["acc@1", "val//x"], {})
    assert given == {"acc@1": "acc_1", "val//x": "val/_/x"}
    assert trackers.mlflow_names(["acc@1", "acc_1", "acc#1", "val/_/x"], given) == \
        {"acc@1": "acc_1", "val//x": "val/_/x", "acc_1": "acc_1-2", "acc#1": "acc-1", "val/_/x": "val/_/x-2"}
    assert trackers.mlflow_names(["acc#1", "acc@1", "acc 1", "acc_1"], {}) == \
        {"acc 1": "acc 1", "acc_1": "acc_1", "acc#1": "acc-1", "acc@1": "acc_1-2"}


def test_a_script_s_epochs_between_its_steps_are_at_their_step_in_every_tracker(tmp_path, mlflow_server, local_ray,
                                                                                 monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = script_grid(tmp_path, "mixed", """\
        import json, time
        for step in range(0, 5):  # the training loss each step, the validation loss each epoch of 2 steps
            print("ABLATE " + json.dumps({"step": step, "train_loss": 1 / (step + 1)}), flush=True)
            if step in (2, 4):
                print("ABLATE " + json.dumps({"epoch": step // 2, "val_loss": 2 / (step + 1)}), flush=True)
            time.sleep(0.2)
        """, tracking={"mlflow": {"tracking_uri": mlflow_server}, "tensorboard": {}, "wandb": {}})
    grid = load_grid(path)
    assert run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet()).counts == {"completed": 1}
    recorded = pd.read_parquet(tmp_path / "runs" / "mixed" / "epochs.parquet")
    curves = {key: list(zip(rows["step"], rows[key])) for key in ("train_loss", "val_loss")
              for rows in [recorded.dropna(subset=[key])]}
    assert [step for step, _ in curves["val_loss"]] == [2, 4]  # each epoch at the step it came after
    client, (run,) = runs_of(mlflow_server, "mixed")
    logged = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] for key in curves}
    assert logged == curves
    trial_id = grid.trials[0].trial_id
    scalars = tensorboard_scalars(tmp_path / "runs" / "mixed" / "tensorboard" / trial_id)
    assert {key: scalars[key] for key in curves} == {"train_loss": [0, 1, 2, 3, 4], "val_loss": [2, 4]}
    (file,) = (tmp_path / "runs" / "mixed" / "wandb").glob("offline-run-*/run-*.wandb")
    history = [r.history for r in wandb_records(file) if r.WhichOneof("record_type") == "history"]
    assert [(h.step.num, "val_loss" in {_key(i) for i in h.item}) for h in history] == \
        [(0, False), (1, False), (2, True), (3, False), (4, True)]


def test_a_count_that_starts_again_goes_on_after_the_last_step_in_every_tracker(tmp_path, mlflow_server):
    # Pretraining then fine-tuning, both counted from epoch 1: epochs.parquet has both, so must the
    # trackers, whose steps only go forward; fine-tuning's epoch 4 is not pretraining's next step.
    pytest.importorskip("tensorboard")
    grid = load_grid(script_grid(tmp_path, "again", "print('trained')\n",
                                 tracking={"mlflow": {"tracking_uri": mlflow_server}, "tensorboard": {}}))
    trial_id, run = grid.trials[0].trial_id, RunDir(str(tmp_path / "run"))
    epochs = [{"epoch": e, "val_loss": 1 / e} for e in (1, 2, 3)] + \
             [{"epoch": e, "val_loss": 0.1 / e} for e in (1, 2, 3, 4, 5)]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logged():
        client, (r,) = runs_of(mlflow_server, "again")
        events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / trial_id), size_guidance={"scalars": 0})
        events.Reload()
        return [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "val_loss")], \
            [(e.step, pytest.approx(e.value)) for e in events.Scalars("val_loss")]

    live = tracking.Tracking.start(grid, run)
    for epoch in epochs:
        live.epoch(trial_id, epoch)
    curve = [(step, e["val_loss"]) for step, e in enumerate(epochs, 1)]
    assert logged() == (curve, curve)  # as it trains, fine-tuning too, not only once the trial has ended
    live.finished(trial_id, Record({"trial_id": trial_id, "status": "completed", "val_loss": 0.02}, None, epochs))
    assert logged() == (curve, curve)  # each step once


def test_a_retry_of_a_trial_whose_count_started_again_logs_each_epoch_at_its_step(tmp_path):
    # Pretraining's epochs 1-3 and fine-tuning's 1 were logged at steps 1-4; the retry resumes from
    # fine-tuning's checkpoint after epoch 1, and its epoch 5 is not step 5: where its reports go
    # depends on the epochs before its checkpoint, which the record has (steps 5-8).
    pytest.importorskip("tensorboard")
    grid = load_grid(script_grid(tmp_path, "again-retry", "print('trained')\n", tracking={"tensorboard": {}}))
    trial_id, run = grid.trials[0].trial_id, RunDir(str(tmp_path / "run"))
    epochs = [{"epoch": e, "val_loss": 1 / e} for e in (1, 2, 3)] + \
             [{"epoch": e, "val_loss": 0.1 / e} for e in (1, 2, 3, 4, 5)]
    live = tracking.Tracking.start(grid, run)
    live.attempt(trial_id)
    for epoch in epochs[:5]:
        live.epoch(trial_id, epoch)
    live.attempt(trial_id)  # the retry, from the checkpoint after fine-tuning's epoch 1
    for epoch in epochs[4:]:
        live.epoch(trial_id, epoch)
    live.finished(trial_id, Record({"trial_id": trial_id, "status": "completed", "val_loss": 0.02}, None, epochs))
    scalars = tensorboard_values(tmp_path / "run" / "tensorboard" / trial_id)["val_loss"]
    assert scalars == [(step, pytest.approx(e["val_loss"])) for step, e in enumerate(epochs, 1)]


def test_a_wandb_mode_that_is_none_of_its_modes_is_a_grid_error(tmp_path):
    # As any value in a grid file: one line naming the file and key at `ablate plan`, exit code 2.
    path = probe_grid(tmp_path, tracking={"wandb": {"mode": "offlne"}})
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == \
        f"error: {path}: tracking.wandb.mode: expected one of online, offline, disabled, got 'offlne'"


def test_a_trial_that_finished_as_the_run_was_stopped_ends_its_tracker_run(tmp_path, local_ray, monkeypatch):
    # Ctrl-C as its result came in: its record is written, the driver never took it, and a later
    # run skips it as finished. Its tracker run ends as the driver stops, not left RUNNING.
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from orchestrator.run import events

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(events.Events, "on_trial_complete", interrupted)
    grid = load_grid(probe_grid(tmp_path, axes={"lr": [0.1]}, fixed={"epochs": 2}, tracking=["tensorboard"]))
    with pytest.raises(KeyboardInterrupt):
        run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())
    logs = EventAccumulator(str(tmp_path / "runs" / "probe" / "tensorboard" / grid.trials[0].trial_id),
                            size_guidance={"scalars": 0, "tensors": 0})
    logs.Reload()
    assert [e.step for e in logs.Scalars("final/val_error")] == [2]
    assert [e.step for e in logs.Tensors("status/text_summary")] == [2]


def test_a_retried_trial_goes_on_logging_live_past_the_epochs_logged_before(tmp_path, monkeypatch):
    # An attempt that failed at epoch 5 is retried from its checkpoint after epoch 2: its epochs 3
    # to 5 were logged, epoch 6 is the next step and is logged as it comes, not only at the end.
    logged = []

    class Recording(FakeTracker):
        def start_or_resume(self, trial_id, cell, config, state):
            return {"last_step": (state or {}).get("last_step", trackers.NOTHING)}

        def log_epochs(self, state, epochs):
            logged.extend(step for step, _ in epochs)

    monkeypatch.setitem(trackers.TRACKERS, "mlflow", Recording)
    grid = load_grid(probe_grid(tmp_path, tracking=["mlflow"]))
    trial_id = grid.trials[0].trial_id
    live = tracking.Tracking.start(grid, RunDir(str(tmp_path / "run")))
    for epoch in (1, 2, 3, 4, 5):
        live.epoch(trial_id, {"epoch": epoch, "val_error": 0.1})
    live.attempt(trial_id)  # Tune starts its retry (events.py, on_trial_start)
    for epoch in (3, 4, 5, 6, 7):
        live.epoch(trial_id, {"epoch": epoch, "val_error": 0.1})
    assert logged == [1, 2, 3, 4, 5, 6, 7]


def test_tracker_runs_a_killed_driver_left_open_are_said_ended_only_where_they_were(tmp_path, monkeypatch):
    # The next run ends them (Tracking.end_left_open); a tracker that fails as it ends one says so in
    # its own note, and the run did not say "they are ended now" of a run left open.
    pytest.importorskip("tensorboard")
    grid = load_grid(script_grid(tmp_path, "left-open", "print('trained')\n", tracking={"tensorboard": {}}))
    trial_id, run = grid.trials[0].trial_id, RunDir(str(tmp_path / "run"))
    killed = tracking.Tracking.start(grid, run)
    killed.epoch(trial_id, {"epoch": 1, "val_loss": 0.5})  # the driver is killed before the trial's end
    record = Record({"trial_id": trial_id, "status": "completed", "val_loss": 0.5}, None, [{"epoch": 1, "val_loss": 0.5}])
    monkeypatch.setattr(tracking.records, "read_record", lambda run, trial_id, notify=None: record)

    def full(self, state, status, final):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(trackers.TensorBoard, "finish", full)
    notes = []
    tracking.Tracking.start(grid, run, notes.append).end_left_open([trial_id])
    assert notes[-1].startswith("tracking with tensorboard stopped (")
    assert not any("they are ended now" in note for note in notes), notes
