"""One trial in its worker (orchestrator/run/trial.py), run without Ray: what its row and its
epochs say of what a Python workload reported."""
from __future__ import annotations

from dataclasses import dataclass

from orchestrator.plan.grid import load_grid
from orchestrator.run.trial import run_trial
from orchestrator.store import records
from orchestrator.store.columns import workload_columns
from orchestrator.store.rundir import RunDir
from workloads.base import Workload


@dataclass
class Config:
    lr: float = 0.2
    epochs: int = 3
    seed: int = 0


def _train(config, session):
    for epoch in range(1, config.epochs + 1):  # a scheduler halving the rate each epoch
        session.report({"epoch": epoch, "lr": config.lr / 2 ** (epoch - 1), "val_error": 1 / epoch, "host": "gpu7"})
    return {"status": "completed", "test_error": 0.5, "epochs": 2, "params": 11}  # stopped early, after 2


SCHEDULED = Workload(name="scheduled", config=Config, train=_train, epochs=lambda c: c.epochs,
                     metrics=("lr", "val_error"), produces=("val_error", "test_error", "lr", "epochs", "params"))


def test_a_python_workloads_metrics_named_like_its_parameters_are_kept_beside_them(tmp_path):
    # Its scheduler's current `lr` and its early stop's `epochs` were dropped from the row for the
    # parameters' values without a word (lr 0.2 on a trial that ended at 0.05), while epochs.parquet
    # had them under the parameters' names; its `host` lost to ablate's.
    (tmp_path / "grid.yaml").write_text("name: sched\nworkload: tests.test_trial:SCHEDULED\naxes:\n  lr: [0.2]\n"
                                        "report: [test_error, reported_lr]\n")
    grid = load_grid(tmp_path / "grid.yaml")
    (trial,) = grid.trials
    run = RunDir(str(tmp_path / "runs"))
    run_trial({"trial": {"trial_id": trial.trial_id, "config": trial.config}}, run_uri=run.uri,
              workload_ref=grid.workload_ref, grid_name=grid.name, report=lambda metrics: None,
              objective=grid.objective)
    publisher = records.Publisher(run)
    publisher.publish(trial.trial_id)
    publisher.flush()
    (row,) = records.read_trials(run).to_pylist()
    assert (row["status"], row["lr"], row["epochs"], row["reported_lr"], row["reported_epochs"]) == \
        ("completed", 0.2, 3, 0.05, 2)
    assert row["reported_host"] == "gpu7" and row["host"] != "gpu7"
    assert (row["params"], row["epochs_completed"]) == (11, 3)  # the workload's to give, as workloads/base.py says
    epochs = records.read_epochs(run, [trial.trial_id]).to_pylist()
    assert [(e["epoch"], e["reported_lr"]) for e in epochs] == [(1, 0.2), (2, 0.1), (3, 0.05)]
    assert "lr" not in epochs[0] and "host" not in epochs[0]
    log = (tmp_path / "runs" / "trials" / trial.trial_id / "trial.log").read_text()
    assert "ablate writes columns named lr, host: the trial's own are kept as reported_lr, reported_host" in log
    assert "ablate writes columns named epochs: the trial's own are kept as reported_epochs" in log


def test_the_live_table_shows_a_python_workloads_own_metric_named_like_its_parameter():
    # `Workload.metrics` naming its scheduler's `lr`: the column of `ablate run` is the one its
    # reports are kept in, not a column they never fill; `params`, which `train` returns, is its own.
    assert workload_columns(SCHEDULED, (*SCHEDULED.metrics, "params")) == ("reported_lr", "val_error", "params")
