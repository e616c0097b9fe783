"""What successive halving saves, and whether it keeps the setting the full grid would choose, on
real photos: the same grid run twice with `ablate run`, once in full and once with `halving:`.

    ABLATE_DATA=$(realpath ../shared/data) python benchmarks/halving.py --dir /tmp/halving

Reports, for the two runs: epochs trained (every row's epochs_completed), wall time, and per
cell the learning rate the full grid chooses (best mean final val_error over seeds, as
`ablate summarize` does) against the one halving trained to the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
GRID = {
    "workload": "allcnn",
    "description": "halving benchmark on cifar10-subset (not comparable to the paper)",
    "axes": {"variant": ["strided", "all"], "augmentation": ["none", "standard"], "lr": [0.1, 0.05, 0.025, 0.01]},
    "seeds": [0, 1],
    "fixed": {"model": "C", "dataset": "cifar10-subset", "width": 0.25, "epochs": 6, "lr_milestones": [5],
              "batch_size": 64, "val_size": 1000, "dead_start_restarts": 0, "device": "cpu"},
    "resources": {"cpus": 1},
}
HALVING = {"over": ["lr"], "rungs": [2, 4], "keep": 0.5}


def run(directory: Path, name: str, grid: dict) -> float:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **grid}, sort_keys=False))
    began = time.monotonic()
    subprocess.run([str(Path(sys.executable).parent / "ablate"), "run", str(path), "--storage",
                    str(directory / "runs"), "--quiet"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.monotonic() - began


def rows(directory: Path, name: str) -> list[dict]:
    return pq.read_table(directory / "runs" / name / "trials.parquet").to_pylist()


def choices(trials: list[dict]) -> dict[tuple, float]:
    """cell (variant, augmentation) -> the lr with the best mean final val_error over its seeds,
    among lrs whose every seed completed."""
    by_setting: dict[tuple, list[dict]] = {}
    for t in trials:
        by_setting.setdefault((t["variant"], t["augmentation"], t["lr"]), []).append(t)
    best: dict[tuple, tuple[float, float]] = {}
    for (variant, augmentation, lr), seeds in by_setting.items():
        if all(s["status"] == "completed" and s["val_error"] is not None for s in seeds):
            score = statistics.fmean(s["val_error"] for s in seeds)
            if (variant, augmentation) not in best or score < best[(variant, augmentation)][0]:
                best[(variant, augmentation)] = (score, lr)
    return {cell: lr for cell, (_, lr) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/ablate-halving"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if "ABLATE_DATA" not in os.environ:
        sys.exit("set ABLATE_DATA to the folder holding cifar10-subset.npz")
    seconds = {"full": run(args.dir, "full", GRID), "halved": run(args.dir, "halved", {**GRID, "halving": HALVING})}
    full, halved = rows(args.dir, "full"), rows(args.dir, "halved")
    epochs = {name: sum(t["epochs_completed"] or 0 for t in trials) for name, trials in (("full", full), ("halved", halved))}
    print(f"epochs trained: full {epochs['full']}, halved {epochs['halved']} "
          f"({epochs['halved'] / epochs['full']:.0%}); wall time: full {seconds['full']:.0f} s, "
          f"halved {seconds['halved']:.0f} s")
    chosen, kept = choices(full), choices(halved)
    same = 0
    for cell in sorted(set(chosen) | set(kept)):
        agree = chosen.get(cell) == kept.get(cell)
        same += agree
        print(f"  {cell}: full grid chooses lr {chosen.get(cell)}, halving kept lr {kept.get(cell)}"
              f"{'' if agree else '  (differs)'}")
    print(f"same setting in {same} of {len(set(chosen) | set(kept))} cells")


if __name__ == "__main__":
    main()
