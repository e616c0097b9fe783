"""Per-trial overhead of `ablate run` against a bare Ray Tune script, on the same Ray instance,
and how long a user waits for the first trial and for the command to end.

Both sides run N trials of a workload that does no work (three reported epochs, a checkpoint at
each), so the wall time per trial is what orchestration costs: scheduling, actor start-up,
checkpoints, progress, and for ablate also the Parquet records and the trial log. Ray starts
once, before either is timed; each N is run `--repeats` times per side and the median reported.
Then `ablate run` of a one-trial grid as a real process: from the command to the trial's first
line of code (Ray's start included), and from the trial's last line to the command's exit.

    python benchmarks/orchestration_overhead.py --trials 30 300 1000 3000 --repeats 1
"""
from __future__ import annotations

import argparse
import functools
import io
import os
import statistics
import subprocess
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
    marker: str = ""  # a file to append the times the trial starts and ends to


def train(config, session):
    if config.marker:
        with open(config.marker, "a") as f:
            f.write(f"{time.time()}\n")
    state = session.restore() or {"epoch": 0}
    for epoch in range(state["epoch"], config.epochs):
        session.report({"epoch": epoch + 1, "val_error": 0.5}, checkpoint={"epoch": epoch + 1})
    if config.marker:
        with open(config.marker, "a") as f:
            f.write(f"{time.time()}\n")
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


def latency(storage: str) -> tuple[float, float]:
    """(command to first line of the trial, last line of the trial to the command's exit), s."""
    marker = Path(storage) / "marker"
    grid_file = Path(storage) / "one.yaml"
    grid_file.write_text(f"name: one\nworkload: benchmarks.orchestration_overhead:WORKLOAD\n"
                         f"fixed:\n  marker: {marker}\n")
    exe = Path(sys.executable).parent / "ablate"
    start = time.time()
    subprocess.run([str(exe), "run", str(grid_file), "--storage", storage, "--quiet"], cwd=ROOT, check=True,
                   capture_output=True)
    end = time.time()
    began, finished = map(float, marker.read_text().split())
    return began - start, end - finished


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, nargs="+", default=[30, 300, 1000])
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    import logging

    import ray

    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # the bare side's missing-result warnings
    os.chdir(ROOT)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    print(f"no-op trials of 3 epochs, 1 CPU each, on {cpus} CPUs; median of {a.repeats} run(s) per N")
    print(f"  {'trials':>7} {'bare Ray Tune':>14} {'ablate run':>11} {'ratio':>6}   (ms per trial)")
    for n in a.trials:
        times = {"bare": [], "ablate": []}
        for _ in range(a.repeats):
            for name, fn in (("bare", bare_tune), ("ablate", ablate_run)):
                with tempfile.TemporaryDirectory() as storage:
                    times[name].append(fn(n, storage))
        bare, ablate = (statistics.median(times[k]) / n * 1000 for k in ("bare", "ablate"))
        print(f"  {n:>7} {bare:>14.0f} {ablate:>11.0f} {ablate / bare:>5.2f}x", flush=True)
    ray.shutdown()

    waits = []
    for _ in range(max(3, a.repeats)):
        with tempfile.TemporaryDirectory() as storage:
            waits.append(latency(storage))
    print(f"ablate run of one trial, median of {len(waits)}: first trial starts "
          f"{statistics.median(w[0] for w in waits):.1f} s after the command; the command ends "
          f"{statistics.median(w[1] for w in waits):.1f} s after the last trial")


if __name__ == "__main__":
    main()
