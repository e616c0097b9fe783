"""The record of finished trials: what readers and the next driver find in it."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from orchestrator.errors import ResultsError
from orchestrator.store import records
from orchestrator.store.rundir import RunDir
from workloads.allcnn import RESULTS, Config

# The columns of an All-CNN trial's row, as the trial writes its record.
SCHEMA = records.trial_schema(Config, tuple(RESULTS.items()))


def write_old(path, table: pa.Table) -> None:
    """A record file as an older ablate wrote it: Arrow IPC (`.arrow`) or Parquet."""
    path.parent.mkdir(exist_ok=True)
    if path.suffix == ".arrow":
        feather.write_feather(table, path)
    else:
        pq.write_table(table, path)


@pytest.mark.parametrize("suffix", [".arrow", ".parquet"])
def test_records_an_older_ablate_wrote_still_count(tmp_path, suffix):
    """Older ablates wrote a record as two files, the row and its epochs, as Parquet before Arrow:
    a driver killed before publishing them left them unpublished, and the next driver must still
    find them (or train them again)."""
    run = RunDir(str(tmp_path))
    schema = SCHEMA
    row = pa.Table.from_pylist([{"trial_id": "old", "status": "completed", "lr": 0.1, "val_error": 0.2}], schema)
    epochs = pa.table({"trial_id": ["old", "old"], "epoch": [1, 2], "val_error": [0.3, 0.2]})
    write_old(tmp_path / "records" / f"old{suffix}", row)
    write_old(tmp_path / "records" / f"old.epochs{suffix}", epochs)

    assert records.statuses(records.read_trials(run)) == {"old": "completed"}
    assert records.read_epochs(run, ["old"])["val_error"].to_pylist() == [0.3, 0.2]
    records.Publisher(run).catch_up()
    published = pq.read_table(tmp_path / "trials.parquet")
    assert published["trial_id"].to_pylist() == ["old"] and published["val_error"].to_pylist() == [0.2]
    assert pq.read_table(tmp_path / "epochs.parquet")["val_error"].to_pylist() == [0.3, 0.2]


def test_records_of_the_ablate_before_with_epochs_nested_in_one_arrow_file_still_count(tmp_path):
    run = RunDir(str(tmp_path))
    row = pa.Table.from_pylist([{"trial_id": "old", "status": "completed", "lr": 0.1, "val_error": 0.2}],
                               SCHEMA)
    nested = pa.array([[{"epoch": 1, "val_error": 0.3}, {"epoch": 2, "val_error": 0.2}]])
    write_old(tmp_path / "records" / "old.arrow", row.append_column("@epochs", nested))

    assert records.statuses(records.read_trials(run)) == {"old": "completed"}
    assert records.read_epochs(run, ["old"])["val_error"].to_pylist() == [0.3, 0.2]
    records.Publisher(run).catch_up()
    assert pq.read_table(tmp_path / "trials.parquet")["val_error"].to_pylist() == [0.2]
    assert pq.read_table(tmp_path / "epochs.parquet")["epoch"].to_pylist() == [1, 2]


def test_a_record_gives_back_every_value_with_the_type_of_its_column(tmp_path):
    """Records are JSON; what reads them must come back as the trial had it: times, lists,
    a loss that became NaN, NumPy numbers a workload returned."""
    run = RunDir(str(tmp_path))
    started = datetime(2026, 12, 1, 19, 50, 16, 123000, tzinfo=timezone.utc)
    records.write_record(run, SCHEMA, "t", {"lr": 0.05, "lr_milestones": [2, 4], "channels_last": False},
                   {"status": "diverged", "val_error": float("nan"), "test_error": np.float32(0.25),
                    "params": np.int64(1369738), "started_at": started},
                   [{"epoch": 1, "train_loss": np.float32(2.5)}, {"epoch": 2, "train_loss": float("nan")}])
    row = records.read_trials(run).to_pylist()[0]
    assert row["lr"] == 0.05 and row["lr_milestones"] == [2, 4] and row["channels_last"] is False
    assert math.isnan(row["val_error"]) and row["test_error"] == 0.25 and row["params"] == 1369738
    assert row["started_at"] == started
    epochs = records.read_epochs(run, ["t"])
    assert epochs["train_loss"][0].as_py() == 2.5 and math.isnan(epochs["train_loss"][1].as_py())
    records.Publisher(run).catch_up()
    assert pq.read_table(tmp_path / "trials.parquet").schema == SCHEMA


def test_a_record_is_one_file_that_readers_and_the_publisher_split_into_row_and_epochs(tmp_path):
    run = RunDir(str(tmp_path))
    schema = SCHEMA
    records.write_record(run, schema, "done", {"lr": 0.1}, {"status": "completed", "val_error": 0.2},
                   [{"epoch": 1, "val_error": 0.3, "note": "warm-up"}, {"epoch": 2, "val_error": 0.2}])
    records.write_record(run, schema, "broke", {"lr": 0.2}, {"status": "failed", "error": "out of memory"})
    assert [p.name for p in sorted((tmp_path / "records").iterdir())] == ["broke.json", "done.json"]

    assert records.read_trials(run).column_names == schema.names  # no nested epochs among the columns
    expected = [{"trial_id": "done", "epoch": 1, "val_error": 0.3, "note": "warm-up"},
                {"trial_id": "done", "epoch": 2, "val_error": 0.2, "note": None}]
    assert records.read_epochs(run, ["done", "broke"]).to_pylist() == expected
    records.Publisher(run).catch_up()
    assert sorted(pq.read_table(tmp_path / "trials.parquet")["trial_id"].to_pylist()) == ["broke", "done"]
    assert pq.read_table(tmp_path / "epochs.parquet").to_pylist() == expected


def test_values_of_other_kinds_than_their_column_are_kept_as_text_and_nothing_breaks(tmp_path):
    """A script's metric named like ablate's `error` column, text where the workload declared a
    number, a flag in one trial and a number in another: every value is kept, the column becomes
    text, and neither the publisher nor a reader fails (a failure there retrained finished trials)."""
    run = RunDir(str(tmp_path))
    publisher = records.Publisher(run)
    records.write_record(run, SCHEMA, "a", {"lr": 0.1}, {"status": "completed", "val_error": 0.2, "error": 0.008,
                                                         "phase": 0.5, "big": 2**64}, [{"epoch": 1, "loss": 0.5}])
    publisher.publish("a")
    publisher.flush()
    records.write_record(run, SCHEMA, "b", {"lr": 0.2}, {"status": "completed", "val_error": "diverged",
                                                         "phase": True}, [{"epoch": 1, "loss": "nan?"}])
    records.write_record(run, SCHEMA, "c", {"lr": 0.3}, {"status": "failed", "error": "out of memory"})
    expected = {"a": {"error": "0.008", "val_error": "0.2", "phase": "0.5", "big": 2.0**64},
                "b": {"error": None, "val_error": "diverged", "phase": "True", "big": None},
                "c": {"error": "out of memory", "val_error": None, "phase": None, "big": None}}

    def rows(table):
        return {row["trial_id"]: {k: row[k] for k in expected["a"]} for row in table.to_pylist()}

    assert rows(records.read_trials(run)) == expected  # a published, b and c merged in from their records
    for trial_id in "bc":
        publisher.publish(trial_id)
    publisher.flush()
    assert rows(pq.read_table(tmp_path / "trials.parquet")) == expected
    assert records.read_epochs(run, ["a", "b"])["loss"].to_pylist() == ["0.5", "nan?"]


def test_a_list_a_mapping_or_an_array_a_trial_returned_is_kept_as_its_text(tmp_path):
    # Per-class accuracies as a list or a NumPy array: no column type holds them, and an array once
    # failed the trial's record after all its training.
    run = RunDir(str(tmp_path))
    records.write_record(run, SCHEMA, "a", {"lr": 0.1}, {"status": "completed", "per_class": [0.5, 0.25],
                                                         "confusion": {"cat": 3}, "scores": np.array([1.0, 2.0])})
    row = records.read_trials(run).to_pylist()[0]
    assert (row["per_class"], row["confusion"], row["scores"]) == ("[0.5, 0.25]", "{'cat': 3}", "[1. 2.]")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("trials, every_s", [(20_000, 0.01), (100, 60.0)])
def test_rewriting_the_results_takes_a_bounded_share_of_the_driver_however_many_trials_came_before(trials, every_s):
    """A file rewritten whole grows with the trials before it; rewritten after every trial, 10,000
    short trials would make the driver spend its time rewriting. Here a rewrite of a file of n
    rows costs n x 0.1 ms, and a trial ends every `every_s`."""
    clock = Clock()
    pace = records._Pace(clock)
    spent, written, waiting = 0.0, 0, 0
    for n in range(1, trials + 1):
        clock.now += every_s
        waiting += 1
        if pace.due(n):
            with pace.writing(n):
                clock.now += n * 1e-4
                spent += n * 1e-4
            written, waiting = written + 1, 0
        assert waiting * every_s <= records.REWRITE_PACE * n * 1e-4 + every_s  # stale for a bounded while
    assert spent <= clock.now / records.REWRITE_PACE
    if every_s >= 60:  # long trials: the file follows every one of them
        assert written == trials


@pytest.mark.parametrize("suffix", [".arrow", ".parquet"])
def test_a_damaged_record_of_an_older_ablate_is_a_note_as_a_damaged_json_one_is(tmp_path, suffix):
    # It stopped every reader, and `ablate run`, with its error: the other trials unseen.
    run = RunDir(str(tmp_path))
    records.write_record(run, SCHEMA, "new", {"lr": 0.1}, {"status": "completed", "val_error": 0.2})
    old = tmp_path / "records" / f"old{suffix}"
    write_old(old, pa.Table.from_pylist([{"trial_id": "old", "status": "completed", "lr": 0.2}], SCHEMA))
    old.write_bytes(old.read_bytes()[:100])  # a copy cut short
    notes = []
    assert records.statuses(records.read_trials(run, notes.append)) == {"new": "completed"}
    (note,) = notes
    assert note.startswith(f"{old}: unreadable {'Arrow' if suffix == '.arrow' else 'Parquet'} (")
    assert note.endswith("; its trial counts as unfinished and runs again at the next `ablate run`")


def fail_reads_of(monkeypatch, method: str, path, times: int | None = None) -> None:
    """RunDir.<method> raising EIO (a disk's or NFS's read fault) for `path` only: every read, or
    the first `times` (a fault that passes). In this process only: Ray workers read as usual."""
    import errno

    read = getattr(RunDir, method)
    left = [times]

    def faulty(self, at, *args, **kwargs):
        if at == str(path) and left[0] != 0:
            left[0] = None if left[0] is None else left[0] - 1
            raise OSError(errno.EIO, "Input/output error", at)
        return read(self, at, *args, **kwargs)
    monkeypatch.setattr(RunDir, method, faulty)


@pytest.mark.parametrize("suffix", [".arrow", ".parquet"])
def test_an_older_ablates_record_the_disk_cannot_read_stops_the_reader_not_noted_as_damaged(tmp_path, monkeypatch,
                                                                                              suffix):
    # A read fault (EIO of a disk or NFS) made its finished trial count as unfinished: `ablate run`
    # trained it again. A JSON record's fault stops the reader too.
    run = RunDir(str(tmp_path))
    old = tmp_path / "records" / f"old{suffix}"
    write_old(old, pa.Table.from_pylist([{"trial_id": "old", "status": "completed", "lr": 0.2}], SCHEMA))
    fail_reads_of(monkeypatch, "_read_buffer", old)
    notes = []
    kind = "Arrow" if suffix == ".arrow" else "Parquet"
    with pytest.raises(ResultsError, match=f"^{old}: unreadable {kind} \\(\\[Errno 5\\] "):
        records.read_trials(run, notes.append)
    assert notes == []


@pytest.mark.parametrize("fault", ["EIO", "a folder in its place"])
def test_a_json_record_the_disk_cannot_read_stops_the_reader_in_one_line_naming_it(tmp_path, monkeypatch, fault):
    # It ended `ablate summarize` and `ablate run` in a raw OSError traceback; noted as damaged
    # instead, its finished trial would count as unfinished and be trained again.
    run = RunDir(str(tmp_path))
    records.write_record(run, SCHEMA, "done", {"lr": 0.1}, {"status": "completed", "val_error": 0.2})
    path = tmp_path / "records" / "done.json"
    if fault == "EIO":
        fail_reads_of(monkeypatch, "read_bytes", path)
    else:
        path.unlink()
        path.mkdir()
    notes = []
    with pytest.raises(ResultsError, match=f"^{path}: unreadable record \\(.+\\)$"):
        records.read_trials(run, notes.append)
    assert notes == []
