"""The record of finished trials: what readers and the next driver find in it."""
from __future__ import annotations

import pyarrow.parquet as pq

from orchestrator import records
from orchestrator.store import RunDir
from workloads.allcnn import Config


def test_records_an_older_ablate_wrote_as_parquet_still_count(tmp_path):
    """Before records were Arrow files they were Parquet: a driver killed before publishing them
    left them unpublished, and the next driver must still find them (or train them again)."""
    run = RunDir(str(tmp_path))
    schema = records.trial_schema(Config)
    records.record(run, schema, "old", {"lr": 0.1}, {"status": "completed", "val_error": 0.2},
                   [{"epoch": 1, "val_error": 0.3}, {"epoch": 2, "val_error": 0.2}])
    folder = tmp_path / "records"
    for name in ("old", "old.epochs"):  # as an older ablate left it
        arrow = folder / f"{name}.arrow"
        pq.write_table(run.read_table(str(arrow)), folder / f"{name}.parquet")
        arrow.unlink()

    assert records.statuses(records.read_trials(run)) == {"old": "completed"}
    records.Publisher(run).catch_up()
    published = pq.read_table(tmp_path / "trials.parquet")
    assert published["trial_id"].to_pylist() == ["old"] and published["val_error"].to_pylist() == [0.2]
    assert pq.read_table(tmp_path / "epochs.parquet")["val_error"].to_pylist() == [0.3, 0.2]
