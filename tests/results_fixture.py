"""A small results set written the way `ablate run` writes it, with every case a table must show:
a learning rate that wins on validation but not on test, diverged, failed cells and one not run yet.

By default its trials ran the paper's protocol on the whole of real CIFAR-10, as their rows say;
`write_fixture(path, fixed=QUARTER_WIDTH, data=SUBSET)` writes the issue's run instead (model C
at quarter width for 40 epochs on a 4,000-image subset), and `trials=` other results.
`write_run(path, grid, result_of)` writes the run of any grid file's text, e.g. a script's.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from orchestrator.plan.expand import Trial, trial_id
from orchestrator.plan.grid import load_grid
from orchestrator.store.records import Publisher, trial_schema, write_record
from orchestrator.store.rundir import RunDir
from workloads.allcnn import RESULTS, Config

# The paper's protocol (workloads/allcnn/paper.py): the workload's defaults but for preprocessing.
PAPER_PROTOCOL = {"dataset": "cifar10", "preprocessing": "zca"}
# What such a trial records about its data: real CIFAR-10, 50,000 training images less the
# 5,000 of the validation split, the whole test set.
FULL_DATA = {"train_examples": 45_000, "test_examples": 10_000, "data_fingerprint": "c1f4a2b7d9e03a65",
             "synthetic_data": False}
# The run: quarter width, 40 epochs, a 4,000-image subset (3,000 after the validation split).
QUARTER_WIDTH = {**PAPER_PROTOCOL, "width": 0.25, "epochs": 40, "lr_milestones": [20, 30],
                 "train_size": 4000, "val_size": 1000}
SUBSET = {**FULL_DATA, "train_examples": 3_000, "data_fingerprint": "07b2e95c1d4f8a30"}

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


def grid_text(trials: dict, fixed: dict, objective: str = "") -> str:
    """The grid file of these trials: their models, variants and learning rates as axes;
    `objective`: its own metric, mode and report, as YAML lines."""
    model, variant, lr, seed = (list(dict.fromkeys(key[i] for key in trials)) for i in range(4))
    return "\n".join(["name: fixture", "workload: allcnn", "axes:", f"  model: {json.dumps(model)}",
                      f"  variant: {json.dumps(variant)}", f"  lr: {json.dumps(lr)}", f"seeds: {json.dumps(seed)}",
                      "fixed:", *(f"  {k}: {json.dumps(v)}" for k, v in fixed.items()), objective, ""])


def write_fixture(path, trials: dict = TRIALS, fixed: dict = PAPER_PROTOCOL, data: dict = FULL_DATA,
                  settings: dict | None = None, objective: str = "") -> RunDir:
    """`settings`: more parameters of some trials, by key, e.g. a checkpoint_every they ran with."""
    run = RunDir(str(path))
    run.write_bytes(run.child("grid.yaml"), grid_text(trials, fixed, objective).encode())
    schema = trial_schema(Config, tuple(RESULTS.items()))  # as an All-CNN trial writes its record
    for i, ((model, variant, lr, seed), (status, val, test)) in enumerate(sorted(trials.items())):
        config = dataclasses.asdict(Config(model=model, variant=variant, lr=lr, seed=seed,
                                           **{**fixed, **(settings or {}).get((model, variant, lr, seed), {})}))
        tid = trial_id("allcnn", config, set(config) - {"data_dir", "checkpoint_every"})
        epochs = [{"epoch": e, "val_error": (val or 0.9) + 0.1 / e, "train_loss": 1.0 / e} for e in (1, 2, 3)]
        write_record(run, schema, tid, config, {
            "status": status, "val_error": val, "test_error": test, "params": 839242 if model == "A" else 1369738,
            "epochs_completed": 3 if status == "completed" else 1, "train_seconds": 3600.0, "attempts": 1,
            "error": "RuntimeError: CUDA out of memory" if status == "failed" else None,
            "started_at": T0 + timedelta(hours=i), "finished_at": T0 + timedelta(hours=i + 1),
            "grid": "fixture", "workload": "allcnn", "trained_on": "NVIDIA H100", "host": "node-1",
            "ablate_version": "0.1.0", "torch_version": "2.14.1", "ray_version": "2.60.0",
            **(data if status != "failed" else {})},
            epochs if status != "failed" else None)
    Publisher(run).catch_up()  # as the driver does
    return run


def write_run(path, grid: str, result_of: Callable[[Trial], dict | None],
              epochs_of: Callable[[Trial], list[dict]] = lambda trial: []) -> RunDir:
    """The run of a grid file's text: each trial's record holds what `result_of(trial)` returns
    (its status and metrics) and the reports `epochs_of(trial)`, or there is none where it returns
    None (not run yet)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "grid.yaml").write_text(grid)
    loaded = load_grid(path / "grid.yaml")
    run = RunDir(str(path))
    schema = trial_schema(loaded.workload.config)
    for trial in loaded.trials:
        if (result := result_of(trial)) is not None:
            write_record(run, schema, trial.trial_id, trial.config,
                         {"epochs_completed": 3, "train_seconds": 10.0, "attempts": 1, **result}, epochs_of(trial))
    Publisher(run).catch_up()
    return run


# A grid with rules: width 64 never runs with warmup 100 (exclude), width 128 only with warmup 0
# (include); `rules_result` leaves width 32 at warmup 100 unrun and diverges width 16 there.
RULES_GRID = """name: rules
command:
  run: python train.py --width {width} --warmup {warmup} --seed {seed}
  parameters:
    width: 16
    warmup: 0
axes:
  width: [16, 32, 64]
  warmup: [0, 100]
seeds: [0, 1]
exclude:
  - {width: 64, warmup: 100}
include:
  - {width: 128, warmup: 0}
metric: val_loss
"""


def rules_result(trial: Trial) -> dict | None:
    width, warmup, seed = trial.config["width"], trial.config["warmup"], trial.config["seed"]
    if (width, warmup) == (32, 100):
        return None
    if (width, warmup) == (16, 100):
        return {"status": "diverged", "val_loss": None}
    return {"status": "completed", "val_loss": 1 / width + 0.01 * seed}
