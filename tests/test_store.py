"""A trial's files in storage: checkpoints of workloads with and without torch (in forms that load
without running code), its log and progress."""
from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from orchestrator.errors import CheckpointError, StorageError, UnloadableCheckpoint
from orchestrator.run.session import StoredSession
from orchestrator.store.lines import PROGRESS_LIMIT
from orchestrator.store.rundir import RunDir
from tests.conftest import ROOT


def test_a_workload_without_torch_checkpoints_and_resumes_without_importing_it(tmp_path):
    # A script or a plain-Python workload should not pay torch's import in every Ray worker.
    code = ("import sys; from orchestrator.run.session import StoredSession; from orchestrator.store.rundir import RunDir; "
            f"s = StoredSession(RunDir({str(tmp_path)!r}), 't'); s.start(); "
            "s.report({'epoch': 1}, checkpoint={'step': 7}); s.flush(); "
            f"again = StoredSession(RunDir({str(tmp_path)!r}), 't'); "
            "print(again.restore(), again.epochs, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split("\n")[0] == "{'step': 7} [{'epoch': 1}] False", result.stderr


def stopped_at_the_rung(tmp_path, name: str, reports: list[dict], until: int):
    """The row and epochs of a trial paused at a rung by `reports`, then stopped there by halving."""
    import dataclasses

    from orchestrator.run.session import Paused
    from orchestrator.run.trial import write_stopped
    from orchestrator.store import records
    from tests.probe import WORKLOAD, Config

    run = RunDir(str(tmp_path / name))
    session = StoredSession(run, "t", until=until)
    session.start()
    with pytest.raises(Paused):
        for report in reports:
            session.report(report, checkpoint={"reports": len(session.epochs)})
    session.close()
    progress = run.progress("t")
    write_stopped(run, WORKLOAD, "g", "t", dataclasses.asdict(Config()), progress, until)
    return records.read_trials(run).to_pylist()[0], records.read_epochs(run, ["t"]).to_pylist()


def test_every_epoch_recorded_goes_to_the_driver_in_order_however_many_since_the_last(tmp_path):
    # A script printed three epochs while the driver took the one before: a scheduler counts
    # Tune's results as epochs (ASHA's training_iteration), so each is one result.
    taken = []
    session = StoredSession(RunDir(str(tmp_path)), "t", on_report=lambda metrics: taken.append(metrics["epoch"]))
    session.start()
    for epoch in (1, 2, 3):
        session.record({"epoch": epoch, "val_loss": 1 / epoch}, checkpoint={})
    session.announce()
    session.announce()  # nothing new: nothing again
    session.close()
    assert taken == [1, 2, 3]


def test_the_report_that_reaches_the_rung_goes_to_the_driver_before_the_trial_pauses(tmp_path):
    # A script's reports are recorded in a thread of their own while Tune takes the one before:
    # the one at the rung, recorded meanwhile, is still passed on, and the trial then pauses.
    from orchestrator.run.session import Paused

    taken = []

    def take(metrics):  # Tune's report, while the script's next report is recorded
        taken.append(metrics["epoch"])
        if metrics["epoch"] == 1:
            session.record({"epoch": 2, "val_loss": 0.4}, checkpoint={})

    session = StoredSession(RunDir(str(tmp_path)), "t", on_report=take, until=2)
    session.start()
    session.record({"epoch": 1, "val_loss": 0.5}, checkpoint={})
    session.announce()
    with pytest.raises(Paused):
        session.announce()
    session.close()
    assert taken == [1, 2]


def test_what_a_script_printed_past_the_rung_is_recorded_but_not_passed_to_the_driver(tmp_path):
    # Its trial may be stopped at the rung: the driver's trackers and live table must not show it
    # going on past there (MLflow holds what it is sent: a stopped trial's curve ran to epoch 72).
    from orchestrator.run.session import Paused

    taken = []
    session = StoredSession(RunDir(str(tmp_path)), "t", on_report=lambda metrics: taken.append(metrics["epoch"]),
                            until=2)
    session.start()
    for epoch in (1, 2, 3, 4):  # printed before it could be killed at the rung
        session.record({"epoch": epoch, "val_loss": 1 / epoch}, checkpoint={})
    with pytest.raises(Paused):
        session.announce()
    session.close()
    assert taken == [1, 2]
    assert [e["epoch"] for e in session.epochs] == [1, 2, 3, 4]


def test_a_trial_stopped_at_a_rung_keeps_its_reports_and_the_last_value_of_each_metric(tmp_path):
    # A script that prints val_loss only with its epochs, among its steps: its row has the last
    # val_loss, which halving ranked it by, though its last report (step 20) has none.
    reports = [{"step": 10, "loss": 1.0}, {"epoch": 1, "val_loss": 0.3, "step": 10}, {"step": 20, "loss": 0.9}]
    row, epochs = stopped_at_the_rung(tmp_path, "steps", reports, until=20)
    assert (row["status"], row["val_loss"], row["loss"], row["steps_completed"]) == ("stopped", 0.3, 0.9, 20)
    assert [e["step"] for e in epochs] == [10, 10, 20]
    # One that numbers its epochs 5, 10, ...: paused at its second report, it keeps both.
    reports = [{"epoch": 5, "val_loss": 0.5}, {"epoch": 10, "val_loss": 0.4}]
    row, epochs = stopped_at_the_rung(tmp_path, "fives", reports, until=2)
    assert row["val_loss"] == 0.4 and [e["epoch"] for e in epochs] == [5, 10]


def test_a_checkpoint_with_tensors_resumes_with_them(tmp_path):
    session = StoredSession(RunDir(str(tmp_path)), "t")
    session.start()
    session.report({"epoch": 1}, checkpoint={"weights": torch.arange(3.0)})
    session.flush()
    restored = StoredSession(RunDir(str(tmp_path)), "t").restore()
    assert torch.equal(restored["weights"], torch.arange(3.0))
    assert (tmp_path / "trials" / "t" / "checkpoint.pt").read_bytes()[:2] == b"PK"  # torch.save's zip


def test_a_checkpoint_holds_the_state_as_reported_though_training_goes_on_while_it_is_written(tmp_path):
    session = StoredSession(RunDir(str(tmp_path)), "t")
    session.start()
    weights = torch.zeros(3)
    session.report({"epoch": 1}, checkpoint={"weights": weights})
    weights.add_(1)  # the next epoch trains in place while epoch 1's files are written
    session.flush()
    assert torch.equal(StoredSession(RunDir(str(tmp_path)), "t").restore()["weights"], torch.zeros(3))


def test_a_checkpoint_that_cannot_be_written_fails_the_trial_at_a_step_after_it(tmp_path, monkeypatch):
    run = RunDir(str(tmp_path))
    session = StoredSession(run, "t")
    session.start()

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(run, "write_bytes", disk_full)
    session.report({"epoch": 1}, checkpoint={"step": 1})
    with pytest.raises(OSError, match="No space left on device"):  # written while the trial goes on
        for epoch in range(2, 10_000):
            session.report({"epoch": epoch}, checkpoint={"step": epoch})
    with pytest.raises(OSError, match="No space left on device"):  # and so at its end
        session.report({"epoch": 10_000}, checkpoint={"step": 10_000})
        session.flush()


class _FullDisk:
    """A trial's open file on a disk that filled up: Python keeps the line it could not write and
    tries it again when the file is closed."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        raise OSError(28, "No space left on device")

    def close(self):
        self.file.close()
        raise OSError(28, "No space left on device")


def test_a_disk_that_fills_up_under_a_trials_lines_ends_the_attempt_with_the_storages_error(tmp_path):
    # The driver tells the storage's error from the trial's own by its StorageError: a plain OSError
    # from closing the files counted as the trial failing, used up its retries and recorded it failed.
    session = StoredSession(RunDir(str(tmp_path)), "t")
    session.start()
    session.report({"epoch": 1}, checkpoint={"epoch": 1})
    session.flush()
    session.progress_lines.file = _FullDisk(session.progress_lines.file)
    session.report({"epoch": 2})
    with pytest.raises(StorageError, match=r"cannot write there \(No space left on device\)"):
        session.close()
    assert [lines.file for lines in (session.progress_lines, session.epoch_lines, session.log_lines)] == [None] * 3


@pytest.mark.parametrize("folder", ["my runs ü", "a?b", "a#b%20c"])
def test_a_local_storage_path_is_taken_as_it_is_written(tmp_path, folder):
    # A `?` was read as the start of a URI's query: `--storage /data/a?b` put the run in /data/a/probe?b.
    run = RunDir.for_grid(str(tmp_path / folder), "probe")
    run.write_progress("t", {"epoch": 1})
    assert run.display() == str(tmp_path / folder / "probe")
    assert RunDir(run.display()).progress("t") == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == [folder]


def test_a_trials_log_and_progress_grow_by_lines_and_a_reader_takes_the_last_whole_one(tmp_path):
    run = RunDir(str(tmp_path))
    session = StoredSession(run, "t")
    session.start()
    for epoch in (1, 2):
        session.report({"epoch": epoch, "val_error": 0.5})
    session.log("finished: completed")
    session.close()
    log = (tmp_path / "trials" / "t" / "trial.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in log] == [
        "attempt 1 on " + socket.gethostname(), "epoch=1 val_error=0.5", "epoch=2 val_error=0.5", "finished: completed"]
    assert run.progress("t")["epoch"] == 2

    with open(tmp_path / "trials" / "t" / "progress.jsonl", "ab") as f:
        f.write(b'{"attempt": 1, "epoch": 3, "metr')  # a line being written, or cut short by a crash
    assert run.progress("t")["epoch"] == 2
    again = StoredSession(run, "t")  # the next attempt, after that crash
    assert again.start() == 2
    again.close()
    assert run.progress("t")["attempt"] == 2


def test_a_progress_file_stays_small_however_many_epochs_a_trial_reports(tmp_path):
    run = RunDir(str(tmp_path))
    session = StoredSession(run, "t")
    session.start()
    for epoch in range(1, 2001):
        session.report({"epoch": epoch, "val_error": 0.5})
    session.close()
    assert (tmp_path / "trials" / "t" / "progress.jsonl").stat().st_size <= PROGRESS_LIMIT
    assert run.progress("t")["epoch"] == 2000
    assert StoredSession(run, "t").start() == 2  # the attempt count survives the start over


def test_a_checkpoint_stays_small_however_many_epochs_it_covers(tmp_path):
    # A script that prints a report every few steps reports thousands, each with its checkpoint:
    # one that held every report before it made a trial's reports cost time and disk quadratically.
    run = RunDir(str(tmp_path))
    session = StoredSession(run, "t")
    session.start()
    for step in range(1, 3001):
        session.report({"step": step, "loss": 1 / step}, checkpoint={"epoch": step})
    session.close()
    assert (tmp_path / "trials" / "t" / "checkpoint.pt").stat().st_size < 100
    again = StoredSession(run, "t")
    assert again.restore() == {"epoch": 3000}
    assert [e["step"] for e in again.epochs] == list(range(1, 3001))


def test_a_retry_from_a_checkpoint_has_none_of_the_epochs_an_earlier_attempt_reported_past_it(tmp_path):
    run = RunDir(str(tmp_path))
    first = StoredSession(run, "t")
    first.start()
    for epoch in (1, 2, 3):  # a checkpoint every second epoch; the worker dies after epoch 3
        first.report({"epoch": epoch, "val_error": 0.5}, checkpoint={"epoch": epoch} if epoch % 2 == 0 else None)
    first.close()
    retry = StoredSession(run, "t")
    retry.start()
    assert retry.restore() == {"epoch": 2}
    retry.report({"epoch": 3, "val_error": 0.25}, checkpoint={"epoch": 3})
    retry.close()
    assert run.checkpoint("t")["epochs"] == [{"epoch": 1, "val_error": 0.5}, {"epoch": 2, "val_error": 0.5},
                                            {"epoch": 3, "val_error": 0.25}]
    assert len((tmp_path / "trials" / "t" / "epochs.jsonl").read_text().splitlines()) == 3


def test_an_older_ablates_progress_file_is_still_read(tmp_path):
    """Older ablates rewrote progress.json whole: a trial they left half-way resumes with its
    attempts and time counted."""
    (tmp_path / "trials" / "t").mkdir(parents=True)
    (tmp_path / "trials" / "t" / "progress.json").write_text(json.dumps({"attempt": 2, "train_seconds": 30.0}))
    session = StoredSession(RunDir(str(tmp_path)), "t")
    assert session.start() == 3
    session.report({"epoch": 1})
    session.close()
    assert RunDir(str(tmp_path)).progress("t")["train_seconds"] > 30.0


class CreatesAFile:
    """What a tampered checkpoint holds: an object whose unpickling calls open(path, "w")."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_scripts_checkpoint_is_json_and_a_training_state_loads_with_weights_only(tmp_path):
    from workloads.allcnn import Config
    from workloads.allcnn.train import train

    run = RunDir(str(tmp_path))
    session = StoredSession(run, "script")
    session.start()
    session.report({"epoch": 1, "val_error": 0.5}, checkpoint={"epoch": 1})
    session.flush()
    assert json.loads((tmp_path / "trials" / "script" / "checkpoint.pt").read_bytes()) == {
        "state": {"epoch": 1}, "reported": 1}
    assert (tmp_path / "trials" / "script" / "epochs.jsonl").read_text() == '{"epoch": 1, "val_error": 0.5}\n'

    # All-CNN's: model, optimizer and schedule state (a Counter of milestones), RNG states as tensors.
    session = StoredSession(run, "allcnn")
    session.start()
    train(Config(model="A", variant="base", dataset="synthetic", width=0.125, epochs=1, batch_size=32,
                 train_size=200, val_size=50, test_size=50, device="cpu"), session)
    session.flush()
    saved = torch.load(tmp_path / "trials" / "allcnn" / "checkpoint.pt", weights_only=True)
    assert set(saved["state"]) >= {"model", "optimizer", "schedule", "generator", "rng"}


def test_what_would_not_load_back_without_code_is_refused_when_reported_naming_it(tmp_path):
    session = StoredSession(RunDir(str(tmp_path)), "t")
    session.start()
    session.report({"epoch": 1, "val_error": np.float64(0.25)}, checkpoint={"w": torch.zeros(2), "step": np.int64(3)})
    session.flush()
    again = StoredSession(RunDir(str(tmp_path)), "t")
    assert again.restore()["step"] == 3 and again.epochs == [{"epoch": 1, "val_error": 0.25}]  # as plain numbers
    with pytest.raises(CheckpointError, match=r"^checkpoint\['state'\]\['mean'\]: a numpy.ndarray would need code to "
                                              r"load; a checkpoint holds tensors and plain values"):
        session.report({"epoch": 2}, checkpoint={"w": torch.zeros(2), "mean": np.zeros(3)})


def test_a_numpy_or_torch_scalar_metric_is_recorded_as_its_number_and_an_array_is_refused_naming_it(tmp_path):
    run = RunDir(str(tmp_path))
    session = StoredSession(run, "t")
    session.start()
    session.report({"epoch": 1, "loss": torch.tensor(0.5), "acc": np.float32(0.25), "seen": np.int64(3)},
                   checkpoint={"epoch": 1})
    session.flush()
    assert run.checkpoint("t")["epochs"] == [{"epoch": 1, "loss": 0.5, "acc": 0.25, "seen": 3}]
    with pytest.raises(TypeError, match=r"^metric 'loss': a torch.Tensor is not a number, text, list or mapping$"):
        session.report({"epoch": 2, "loss": torch.ones(2)})


@pytest.mark.parametrize("damage", ["cut short", "emptied", "json cut short", "its epochs cut short",
                                    "20 kB cut short"])
def test_a_damaged_checkpoint_is_one_line_saying_what_to_do(tmp_path, damage):
    # "20 kB cut short": torch's zip reader raised ValueError (negative seek value), so the trial was
    # retried, each retry failing the same way, and recorded failed without the file's name.
    session = StoredSession(RunDir(str(tmp_path)), "t")
    session.start()
    state = {"w": torch.zeros(50, 100) if damage == "20 kB cut short" else torch.zeros(2)}
    session.report({"epoch": 1}, checkpoint=state if damage != "json cut short" else {"epoch": 1})
    session.close()
    path = tmp_path / "trials" / "t" / "checkpoint.pt"
    damaged = path.with_name("epochs.jsonl") if damage == "its epochs cut short" else path
    damaged.write_bytes(b"" if damage == "emptied" else damaged.read_bytes()[: damaged.stat().st_size // 2])
    with pytest.raises(UnloadableCheckpoint) as damaged:  # its trial fails at once, not retried (run/trial.py)
        StoredSession(RunDir(str(tmp_path)), "t").restore()
    assert str(damaged.value).startswith(f"{path}: not a readable checkpoint (")
    assert str(damaged.value).endswith("); delete it to train the trial from its start (`ablate run --retry-failed`), "
                                       "or put back a copy")
    assert "\n" not in str(damaged.value)


@pytest.mark.parametrize("form", ["a plain pickle", "a torch.save zip"])
def test_a_checkpoint_that_would_run_code_is_refused_naming_the_file(tmp_path, form):
    marker = tmp_path / "created-by-the-checkpoint"
    path = tmp_path / "run" / "trials" / "t" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    payload = {"state": CreatesAFile(marker), "epochs": []}
    if form == "a plain pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(UnloadableCheckpoint) as refused:  # its trial fails at once, as a damaged one
        StoredSession(RunDir(str(tmp_path / "run")), "t").restore()
    assert str(refused.value) == (f"{path}: refused: it names io.open, "
                                  "which loading it would run; a checkpoint holds only tensors and plain values "
                                  "(delete the file to train the trial from its start)")
    assert not marker.exists()


def test_an_older_ablates_plain_pickle_of_plain_values_still_resumes(tmp_path):
    path = tmp_path / "trials" / "t" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"state": {"epoch": 2, "seen": (1, 2)}, "epochs": [{"epoch": 1}, {"epoch": 2}]}))
    session = StoredSession(RunDir(str(tmp_path)), "t")
    assert session.restore() == {"epoch": 2, "seen": (1, 2)}
    assert session.epochs == [{"epoch": 1}, {"epoch": 2}]  # an older ablate kept them in the checkpoint
    session.report({"epoch": 3}, checkpoint={"epoch": 3, "seen": [1, 2, 3]})
    session.close()
    assert RunDir(str(tmp_path)).checkpoint("t")["epochs"] == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]


@pytest.mark.parametrize("damaged", [b'{"attempt": 2, "train_sec', b"[1, 2]\n"])
def test_a_damaged_progress_file_of_an_older_ablate_is_one_line_naming_it(tmp_path, damaged):
    # `ablate status` of such a run ended in json's traceback.
    from typer.testing import CliRunner

    from orchestrator.cli import app

    (tmp_path / "trials" / "t").mkdir(parents=True)
    (tmp_path / "trials" / "t" / "progress.json").write_bytes(damaged)
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {tmp_path / 'trials' / 't' / 'progress.json'}: an older ablate's "
                                    "progress file, unreadable (")
    assert result.output.endswith("delete it to count the trial's attempts and time afresh\n")
    assert len(result.output.splitlines()) == 1


@pytest.mark.parametrize("fault", ["EIO", "a folder"])
def test_a_progress_file_the_disk_cannot_read_is_one_line_naming_it(tmp_path, monkeypatch, fault):
    # A raw OSError: read by a trial's worker or the driver's Tune callbacks, it ended the run with
    # Tune's traceback; by `ablate status`, with Python's.
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from tests.test_records import fail_reads_of

    path = tmp_path / "trials" / "t" / "progress.jsonl"
    if fault == "EIO":
        RunDir(str(tmp_path)).write_progress("t", {"attempt": 1})
        fail_reads_of(monkeypatch, "read_bytes", path)
    else:
        path.mkdir(parents=True)
    result = CliRunner().invoke(app, ["status", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: {path}: unreadable progress file (")
    assert len(result.output.splitlines()) == 1
