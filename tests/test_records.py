"""The record of finished trials: what readers and the next driver find in it."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

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
