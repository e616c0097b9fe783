"""Per-trial overhead of `ablate run` against a bare Ray Tune script, on the same Ray instance,
and how long a user waits for the first trial and for the command to end.

Both sides run N trials of a workload that does no work (three reported epochs; ablate's also
checkpoints each), so the wall time per trial is what orchestration costs: scheduling, actor
start-up, and for ablate also checkpoints, progress, records, the Parquet files and the trial
log. Ray starts once, before either is timed; each N is run `--repeats` times per side, in turns,
and the median reported with the range. Each trial notes when it starts and ends and in which
process, so every N also says where the time went: before the first trial, per trial while
trials run, after the last one, and on how many actors Tune ran the trials (Tune reuses an actor
as soon as a trial ends, so short trials often all run on one, whatever the CPUs; when a second
actor comes up in time, they share two, and the run is much faster). Then one trial as a real
process, `ablate run` of a one-trial grid against a bare Tune script: from the command to the
trial's first line of code (Ray's start included), and from the trial's last line to the
command's exit.

    python benchmarks/orchestration_overhead.py --trials 30 300 1000 3000 --repeats 3

With `--track tensorboard` (or mlflow, to a sqlite store in the run's folder), ablate also runs
each N with that tracker, in the same turns, and what tracking adds per trial is printed.
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

from workloads.base import Workload  # noqa: E402


@dataclass
class Config:
    lr: float = 0.1
    seed: int = 0
    epochs: int = 3
    marker: str = ""  # a file to note the times the trial starts and ends in


def note(marker: str, event: str) -> None:
    with open(marker, "a") as f:
        f.write(f"{event} {time.time()} {os.getpid()}\n")


def train(config, session):
    note(config.marker, "start")
    state = session.restore() or {"epoch": 0}
    for epoch in range(state["epoch"], config.epochs):
        session.report({"epoch": epoch + 1, "val_error": 0.5}, checkpoint={"epoch": epoch + 1})
    note(config.marker, "end")
    return {"status": "completed", "val_error": 0.5, "test_error": 0.5}


WORKLOAD = Workload(name="noop", config=Config, train=train)


def bare_tune(n: int, storage: str, marker: str) -> None:
    import ray.tune as tune

    def trainable(config):
        note(config["marker"], "start")
        for epoch in range(3):
            tune.report({"epoch": epoch + 1, "val_error": 0.5})
        note(config["marker"], "end")

    tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                       param_space={"lr": tune.grid_search([i / n for i in range(n)]), "marker": marker},
                       tune_config=tune.TuneConfig(reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=storage, verbose=0))
    tuner.fit()


def ablate_run(n: int, storage: str, marker: str, track: str | None = None) -> None:
    from rich.console import Console

    from orchestrator.plan.grid import load_grid
    from orchestrator.run.display import PlainDisplay
    from orchestrator.run.runner import run_grid
    from orchestrator.store.rundir import RunDir

    grid_file = Path(storage) / "noop.yaml"
    grid_file.write_text(f"name: noop\nworkload: benchmarks.orchestration_overhead:WORKLOAD\n"
                         f"fixed:\n  marker: {marker}\naxes:\n  lr: [{', '.join(str(i / n) for i in range(n))}]\n"
                         + (f"tracking:\n  {track}: {{}}\n" if track else ""))
    if track == "mlflow":
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{storage}/mlflow.db"
    grid = load_grid(grid_file)
    summary = run_grid(grid, RunDir.for_grid(storage, "noop"),
                       functools.partial(PlainDisplay, Console(file=io.StringIO())))
    assert summary.counts == {"completed": n}, summary.counts


@dataclass
class Timing:
    total_ms: float  # per trial, from the call to its return
    before_s: float  # from the call to the first trial's start
    running_ms: float  # per trial, from the first trial's start to the last one's end
    after_s: float  # from the last trial's end to the return
    actors: int  # processes the trials ran in


def timed(fn, n: int) -> Timing:
    with tempfile.TemporaryDirectory() as storage:
        marker = os.path.join(storage, "marker")
        began = time.time()
        fn(n, storage, marker)
        ended = time.time()
        notes = [line.split() for line in Path(marker).read_text().splitlines()]
    first = min(float(t) for event, t, _ in notes if event == "start")
    last = max(float(t) for event, t, _ in notes if event == "end")
    return Timing((ended - began) / n * 1000, first - began, (last - first) / n * 1000, ended - last,
                  len({pid for _, _, pid in notes}))


BARE_SCRIPT = """
import sys, time
import ray
import ray.tune as tune

ray.init(address="local", include_dashboard=False, log_to_driver=False)  # as ablate starts its own

def trainable(config):
    with open(config["marker"], "a") as f:
        f.write(f"start {time.time()} 0\\n")
    for epoch in range(3):
        tune.report({"epoch": epoch + 1, "val_error": 0.5})
    with open(config["marker"], "a") as f:
        f.write(f"end {time.time()} 0\\n")

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
    (_, began, _), (_, finished, _) = (line.split() for line in marker.read_text().splitlines())
    return float(began) - start, end - float(finished)


def spread(values: list[float], digits: int = 0) -> str:
    """The median, with the range where there are several."""
    median = f"{statistics.median(values):.{digits}f}"
    return median if len(values) == 1 else f"{median} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, nargs="*", default=[30, 300, 1000], help="none: one trial as a command only")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--track", choices=["tensorboard", "mlflow"], help="also run ablate with this tracker")
    a = p.parse_args()
    import logging

    import ray

    from orchestrator.run.settings import TUNE_ENVIRONMENT

    # The Tune settings ablate runs with, for both sides. Imported here, not at the top: Ray workers
    # import this module for its workload, and a workload module of a user's imports no runner.
    os.environ.update(TUNE_ENVIRONMENT)

    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # the bare side's missing-result warnings
    os.chdir(ROOT)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    print(f"no-op trials of 3 epochs, 1 CPU each, on {cpus} CPUs; median (and range) of {a.repeats} run(s) per N")
    print(f"  {'trials':>7} {'bare Ray Tune':>16} {'ablate run':>16} {'ratio':>6}   (ms per trial)")
    for n in a.trials:
        runs = {"bare": [], "ablate": []}
        sides = [("bare", bare_tune), ("ablate", ablate_run)]
        if a.track:
            runs[f"ablate --track {a.track}"] = []
            sides.append((f"ablate --track {a.track}", functools.partial(ablate_run, track=a.track)))
        for _ in range(a.repeats):
            for name, fn in sides:
                runs[name].append(timed(fn, n))
        total = {name: [t.total_ms for t in timings] for name, timings in runs.items()}
        ratio = statistics.median(total["ablate"]) / statistics.median(total["bare"])
        print(f"  {n:>7} {spread(total['bare']):>16} {spread(total['ablate']):>16} {ratio:>5.2f}x", flush=True)
        if a.track:
            tracked = total[f"ablate --track {a.track}"]
            added = [t - u for t, u in zip(tracked, total["ablate"])]
            print(f"  {'':>7}   ablate --track {a.track}: {spread(tracked)} ms per trial; tracking adds "
                  f"{spread(added)} ms per trial (each turn against the untracked ablate run of the same turn)",
                  flush=True)
        for name, timings in runs.items():
            print(f"  {'':>7}   {name}: first trial after {spread([t.before_s for t in timings], 1)} s, "
                  f"{spread([t.running_ms for t in timings])} ms per trial while they run, "
                  f"end {spread([t.after_s for t in timings], 1)} s after the last; "
                  f"actors used: {', '.join(str(t.actors) for t in timings)}", flush=True)
    ray.shutdown()
    if a.track:
        return  # the one-trial latency does not change with tracking: measured without --track

    print(f"one trial as a command, median (range) of {max(3, a.repeats)} (s): first trial's first line after the "
          "command / the command's end after the trial's last line")
    waits = {"bare": [], "ablate": []}
    for _ in range(max(3, a.repeats)):  # the two sides in turns, as above
        for side, side_waits in waits.items():
            with tempfile.TemporaryDirectory() as storage:
                side_waits.append(latency(storage, side))
    for side, name in (("bare", "bare Tune script"), ("ablate", "ablate run")):
        print(f"  {name:>16}: {spread([w[0] for w in waits[side]], 1)} / {spread([w[1] for w in waits[side]], 1)}",
              flush=True)


if __name__ == "__main__":
    main()
