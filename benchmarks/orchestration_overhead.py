"""Per-trial overhead of `ablate run` against a bare Ray Tune script, on the same Ray instance.

Both run N trials of a workload that does no work (three reported epochs, a checkpoint at each),
so the wall time per trial is what orchestration costs: scheduling, actor start-up, checkpoints,
progress, and for ablate also the Parquet records and the trial log. Ray starts once, before
either is timed; each side is run `--repeats` times and the median is reported.

    python benchmarks/orchestration_overhead.py --trials 40 --repeats 3
"""
from __future__ import annotations

import argparse
import functools
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

from orchestrator.runner import TUNE_ENVIRONMENT  # noqa: E402
from workloads.base import Workload  # noqa: E402

os.environ.update(TUNE_ENVIRONMENT)  # the Tune settings ablate runs with, for both sides


@dataclass
class Config:
    lr: float = 0.1
    seed: int = 0
    epochs: int = 3


def train(config, session):
    state = session.restore() or {"epoch": 0}
    for epoch in range(state["epoch"], config.epochs):
        session.report({"epoch": epoch + 1, "val_error": 0.5}, checkpoint={"epoch": epoch + 1})
    return {"status": "completed", "val_error": 0.5, "test_error": 0.5}


WORKLOAD = Workload(name="noop", config=Config, train=train)


def bare_tune(n: int, storage: str) -> float:
    import ray.tune as tune

    def trainable(config):
        for epoch in range(3):
            tune.report({"epoch": epoch + 1, "val_error": 0.5})

    start = time.perf_counter()
    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={"lr": tune.grid_search([i / n for i in range(n)])},
                       tune_config=tune.TuneConfig(reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=storage, verbose=0))
    tuner.fit()
    return time.perf_counter() - start


def ablate_run(n: int, storage: str) -> float:
    from rich.console import Console

    from orchestrator.display import PlainDisplay
    from orchestrator.grid import load_grid
    from orchestrator.runner import run_grid
    from orchestrator.store import RunDir

    grid_file = Path(storage) / "noop.yaml"
    grid_file.write_text(f"name: noop\nworkload: benchmarks.orchestration_overhead:WORKLOAD\n"
                         f"axes:\n  lr: [{', '.join(str(i / n) for i in range(n))}]\n")
    grid = load_grid(grid_file)
    console = Console(file=io.StringIO())
    start = time.perf_counter()
    summary = run_grid(grid, RunDir.for_grid(storage, "noop"),
                       functools.partial(PlainDisplay, console))
    assert summary.counts == {"completed": n}, summary.counts
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import logging

    import ray

    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # the bare side's missing-result warnings
    os.chdir(ROOT)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    times = {"bare Ray Tune": [], "ablate run": []}
    for _ in range(a.repeats):
        for name, fn in (("bare Ray Tune", bare_tune), ("ablate run", ablate_run)):
            with tempfile.TemporaryDirectory() as storage:
                times[name].append(fn(a.trials, storage))
    cpus = int(ray.cluster_resources().get("CPU", 0))
    print(f"{a.trials} no-op trials of 3 epochs, 1 CPU each, on {cpus} CPUs; median of {a.repeats} runs")
    per = {k: statistics.median(v) / a.trials for k, v in times.items()}
    for name, values in times.items():
        print(f"  {name:14} {per[name] * 1000:7.0f} ms per trial   runs (s): {', '.join(f'{t:.1f}' for t in values)}")
    print(f"  ratio          {per['ablate run'] / per['bare Ray Tune']:7.2f} x")


if __name__ == "__main__":
    main()
