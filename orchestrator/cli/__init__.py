"""The `ablate` command line: thin commands that parse, call the library and render.

    ablate plan grids/paper.yaml        what will run, how many trials, how much compute
    ablate run grids/smoke.yaml         run the grid's trials with Ray Tune (local, or --address)
    ablate summarize runs/smoke         the results as the paper's tables
    ablate compare runs/smoke --baseline variant=base   each variant against base, paired by seed
    ablate status runs/smoke            where a run stands
    ablate log runs/smoke --trial ID    a trial's log, on any storage
    ablate plot runs/smoke -o smoke.png validation curves and a bar chart
    ablate track runs/smoke --to mlflow send a finished run to a tracker
    ablate models                       a workload's networks and their parameter counts

Registered workloads add their own tools on trained trials as commands (the All-CNN study's
`visualize`).

The commands are in common.py (what they share), grids.py (`plan`, `run`), runs.py (those that
read a run) and tools.py (a workload's); `ablate --help` lists them in the order imported here.
"""
import sys

from orchestrator.cli import grids, runs, tools  # each registers its commands on `app`
from orchestrator.cli.common import app

__all__ = ["app", "main", "grids", "runs", "tools"]


def main() -> None:  # pragma: no cover - the console script
    sys.exit(app())
