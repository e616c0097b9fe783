"""Time `ablate summarize`, `status` and `plot` on a large results set, laid out as `ablate run` writes it.

Generates (once, into --dir) 10,000 All-CNN trials of 350 epochs: 3.5 million epoch rows, one
record per trial as the runner writes them, published. Then times each command `--repeats` times in
a fresh process, as a user runs it, and prints the median and range.

    python benchmarks/summarize_large.py --trials 10000 --epochs 350 --repeats 3
    python benchmarks/summarize_large.py --repeats 5 --code /tmp/before    # and another checkout's code

With `--code DIR` the same commands also run another checkout's code (PYTHONPATH=DIR), in turns
with this one's, so that both sides see the same load on a shared machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.plan.expand import trial_id  # noqa: E402
from orchestrator.store.records import Publisher, trial_schema, write_record  # noqa: E402
from orchestrator.store.rundir import RunDir  # noqa: E402
from workloads.allcnn import RESULTS, Config  # noqa: E402


def generate(run: RunDir, trials: int, epochs: int) -> None:
    seeds = -(-trials // 192)
    cells = itertools.product("ABC", ("base", "strided", "convpool", "all"), ("cifar10", "cifar100"),
                              ("none", "standard"), (0.25, 0.1, 0.05, 0.01), range(seeds))
    run.write_bytes(run.child("grid.yaml"), (
        "name: large\nworkload: allcnn\naxes:\n  model: [A, B, C]\n  variant: [base, strided, convpool, all]\n"
        "  dataset: [cifar10, cifar100]\n  augmentation: [none, standard]\n  lr: [0.25, 0.1, 0.05, 0.01]\n"
        f"repeats: {seeds}\n").encode())
    schema, rng = trial_schema(Config, tuple(RESULTS.items())), np.random.default_rng(0)
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    for i, (model, variant, dataset, aug, lr, seed) in enumerate(itertools.islice(cells, trials)):
        config = dataclasses.asdict(Config(model=model, variant=variant, dataset=dataset, augmentation=aug, lr=lr,
                                           seed=seed))
        tid = trial_id("allcnn", config, set(config) - {"data_dir", "checkpoint_every"})
        curve = 0.1 + 0.8 * np.exp(-np.arange(epochs) / 50) + rng.normal(0, 0.005, epochs)
        write_record(run, schema, tid, config, {
            "status": "completed", "val_error": float(curve[-1]), "test_error": float(curve[-1] + 0.01),
            "params": 1369738, "epochs_completed": epochs, "train_seconds": 0.75 * epochs, "attempts": 1,
            "started_at": t0 + timedelta(minutes=i), "finished_at": t0 + timedelta(minutes=i + 5),
            "grid": "large", "workload": "allcnn"},
            [{"epoch": e + 1, "train_loss": v * 2, "train_error": v - 0.02, "val_error": v, "lr": lr,
              "images_per_second": 60000.0, "seconds": 0.75} for e, v in enumerate(curve.tolist())])
    Publisher(run).catch_up()  # what the driver does as trials finish


def timed(args: list[str], code: Path) -> float:
    """Seconds `ablate ARGS` takes in a new process, importing the orchestrator from `code`."""
    exe = Path(sys.executable).parent / "ablate"
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    subprocess.run([str(exe), *args], check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def label(code: Path) -> str:
    """A checkout as its commit, e.g. `4d12b9f`, with `+` where its files differ from it."""
    git = ["git", "-C", str(code)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return (commit or code.name) + ("+" if dirty.strip() else "")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=350)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", default="/tmp/ablate-bench/large")
    p.add_argument("--code", type=Path, nargs="*", default=[],
                   help="Other checkouts whose code is timed too, in turns with this one's.")
    a = p.parse_args()
    run = RunDir(a.dir)
    if not os.path.isfile(os.path.join(a.dir, "trials.parquet")):
        start = time.perf_counter()
        generate(run, a.trials, a.epochs)
        print(f"generated {a.trials} trials x {a.epochs} epochs in {time.perf_counter() - start:.0f} s")
    codes = [ROOT, *(c.resolve() for c in a.code)]
    names = [label(c) for c in codes]
    plot = os.path.join(a.dir, "..", "large-{}.png")  # a picture per checkout, to compare
    commands = {"ablate --help (start-up)": ["--help"],
                "summarize": ["summarize", a.dir],
                "summarize --format csv": ["summarize", a.dir, "--format", "csv"],
                "status": ["status", a.dir],
                "plot": ["plot", a.dir, "--output", plot]}
    print(f"{a.trials} trials x {a.epochs} epochs, median (range) of {a.repeats} runs, each a new process"
          + (", the checkouts in turns" if len(codes) > 1 else ""))
    print(f"  {'':28}" + "".join(f"{name:>22}" for name in names))
    for command, args in commands.items():
        times = [[] for _ in codes]
        for _ in range(a.repeats):
            for i, code in enumerate(codes):
                times[i].append(timed([arg.format(names[i]) for arg in args], code))
        print(f"  {command:28}" + "".join(f"{_shown(t):>22}" for t in times))


def _shown(times: list[float]) -> str:
    return f"{statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})"


if __name__ == "__main__":
    main()
