"""Per-trial overhead of `ablate run` against a bare Ray Tune script, on the same Ray instance,
and how long a user waits for the first trial and for the command to end.

Both sides run N trials of a workload that does no work (three reported epochs; ablate's also
checkpoints each), so the wall time per trial is what orchestration costs: scheduling, actor
start-up, and for ablate also checkpoints, progress, records, the Parquet files and the trial
log. Ray starts once, before either is timed; each N is run `--repeats` times per side, in turns,
and the median reported with the range. Then one trial as a real process, `ablate run` of a
one-trial grid against a bare Tune script: from the command to the trial's first line of code
(Ray's start included), and from the trial's last line to the command's exit.

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


BARE_SCRIPT = """
import sys, time
import ray
import ray.tune as tune

ray.init(address="local", include_dashboard=False, log_to_driver=False)  # as ablate starts its own

def trainable(config):
    with open(config["marker"], "a") as f:
        f.write(f"{time.time()}\\n")
    for epoch in range(3):
        tune.report({"epoch": epoch + 1, "val_error": 0.5})
    with open(config["marker"], "a") as f:
        f.write(f"{time.time()}\\n")

tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space={"marker": sys.argv[1]},
           run_config=tune.RunConfig(storage_path=sys.argv[2], verbose=0)).fit()
"""


def latency(storage: str, side: str) -> tuple[float, float]:
    """(command to first line of the trial, last line of the trial to the command's exit), s, of
    `ablate run` of a one-trial grid or of a bare Tune script of one trial."""
    marker = Path(storage) / "marker"
    if side == "ablate":
        grid_file = Path(storage) / "one.yaml"
        grid_file.write_text(f"name: one\nworkload: benchmarks.orchestration_overhead:WORKLOAD\n"
                             f"fixed:\n  marker: {marker}\n")
        command = [str(Path(sys.executable).parent / "ablate"), "run", str(grid_file), "--storage", storage, "--quiet"]
    else:
        command = [sys.executable, "-c", BARE_SCRIPT, str(marker), storage]
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    end = time.time()
    began, finished = map(float, marker.read_text().split())
    return began - start, end - finished


def spread(values: list[float]) -> str:
    """The median, with the range where there are several."""
    median = f"{statistics.median(values):.0f}"
    return median if len(values) == 1 else f"{median} ({min(values):.0f}-{max(values):.0f})"


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
    print(f"no-op trials of 3 epochs, 1 CPU each, on {cpus} CPUs; median (and range) of {a.repeats} run(s) per N")
    print(f"  {'trials':>7} {'bare Ray Tune':>16} {'ablate run':>16} {'ratio':>6}   (ms per trial)")
    for n in a.trials:
        times = {"bare": [], "ablate": []}
        for _ in range(a.repeats):
            for name, fn in (("bare", bare_tune), ("ablate", ablate_run)):
                with tempfile.TemporaryDirectory() as storage:
                    times[name].append(fn(n, storage) / n * 1000)
        ratio = statistics.median(times["ablate"]) / statistics.median(times["bare"])
        print(f"  {n:>7} {spread(times['bare']):>16} {spread(times['ablate']):>16} {ratio:>5.2f}x", flush=True)
    ray.shutdown()

    print(f"one trial as a command, median of {max(3, a.repeats)} (s): first trial's first line after the "
          "command / the command's end after the trial's last line")
    for side, name in (("bare", "bare Tune script"), ("ablate", "ablate run")):
        waits = []
        for _ in range(max(3, a.repeats)):
            with tempfile.TemporaryDirectory() as storage:
                waits.append(latency(storage, side))
        print(f"  {name:>16}: {statistics.median(w[0] for w in waits):.1f} / {statistics.median(w[1] for w in waits):.1f}",
              flush=True)


if __name__ == "__main__":
    main()
