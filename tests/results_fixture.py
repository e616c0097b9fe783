"""A small results set written the way `ablate run` writes it, with every case a table must show:
a learning rate that wins on validation but not on test, diverged, failed and missing cells."""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

from orchestrator.grid import trial_id
from orchestrator.records import Publisher, record, trial_schema
from orchestrator.store import RunDir
from workloads.allcnn import Config

GRID = """\
name: fixture
workload: allcnn
axes:
  model: [A, C]
  variant: [base, all]
  lr: [0.1, 0.01]
seeds: [0, 1]
fixed:
  dataset: cifar10
"""

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)

# (model, variant, lr, seed): (status, val_error, test_error)
TRIALS = {
    # A-base: lr 0.1 is best on validation (0.21) though lr 0.01 is better on test: 0.1 must be chosen.
    ("A", "base", 0.1, 0): ("completed", 0.20, 0.13),
    ("A", "base", 0.1, 1): ("completed", 0.22, 0.12),
    ("A", "base", 0.01, 0): ("completed", 0.25, 0.10),
    ("A", "base", 0.01, 1): ("completed", 0.25, 0.10),
    # A-all: lr 0.1 diverged; lr 0.01 is what is left.
    ("A", "all", 0.1, 0): ("diverged", None, None),
    ("A", "all", 0.1, 1): ("diverged", None, None),
    ("A", "all", 0.01, 0): ("completed", 0.18, 0.110),
    ("A", "all", 0.01, 1): ("completed", 0.19, 0.100),
    # C-base: every trial failed.
    ("C", "base", 0.1, 0): ("failed", None, None),
    ("C", "base", 0.01, 0): ("failed", None, None),
    # C-all: nothing yet.
}


def write_fixture(path) -> RunDir:
    run = RunDir(str(path))
    run.write_bytes(run.child("grid.yaml"), GRID.encode())
    schema = trial_schema(Config)
    for i, ((model, variant, lr, seed), (status, val, test)) in enumerate(sorted(TRIALS.items())):
        config = dataclasses.asdict(Config(model=model, variant=variant, lr=lr, seed=seed, dataset="cifar10"))
        tid = trial_id("allcnn", config, set(config) - {"data_dir", "checkpoint_every"})
        epochs = [{"epoch": e, "val_error": (val or 0.9) + 0.1 / e, "train_loss": 1.0 / e} for e in (1, 2, 3)]
        record(run, schema, tid, config, {
            "status": status, "val_error": val, "test_error": test, "params": 839242 if model == "A" else 1369738,
            "epochs_completed": 3 if status == "completed" else 1, "train_seconds": 3600.0, "attempts": 1,
            "error": "RuntimeError: CUDA out of memory" if status == "failed" else None,
            "started_at": T0 + timedelta(hours=i), "finished_at": T0 + timedelta(hours=i + 1),
            "grid": "fixture", "workload": "allcnn", "trained_on": "NVIDIA H100", "host": "node-1",
            "ablate_version": "0.1.0", "torch_version": "2.14.1", "ray_version": "2.60.0"},
            epochs if status != "failed" else None)
    Publisher(run).catch_up()  # as the driver does
    return run
