"""The `ablate` command line: thin commands that parse, call the library and render.

    ablate plan grids/paper.yaml        what will run, how many trials, how much compute
    ablate run grids/smoke.yaml         run the grid's trials with Ray Tune (local, or --address)
    ablate models                       the registered networks and their parameter counts
"""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.errors import AblateError

app = typer.Typer(help="Run ablation grids of deep-learning experiments: one YAML grid becomes a "
                  "reproducible study. Plan it, run it as Ray Tune trials, read the results from Parquet.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

GridPath = Annotated[Path, typer.Argument(help="A grid file (YAML), e.g. grids/paper.yaml.", show_default=False)]
Storage = Annotated[str, typer.Option(help="Where runs live: a local path, an NFS path or s3://bucket/prefix.")]


def command(fn):
    """Register a command; library errors become one `error: ...` line and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AblateError as e:
            err.print(f"error: {e}", markup=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None

    return app.command()(wrapper)


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "unknown"
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


@command
def plan(grid_file: GridPath,
         json_output: Annotated[bool, typer.Option("--json", help="Print the trials as one JSON object.")] = False):
    """Show what a grid will run: its axes, number of trials and estimated compute."""
    from orchestrator.grid import load_grid

    grid = load_grid(grid_file)
    if json_output:
        print(json.dumps({"grid": grid.name, "trials": [{"trial_id": t.trial_id, "config": t.config}
                                                         for t in grid.trials]}))
        return
    cost = grid.cost()
    title = f"{grid.name}: {len(grid.trials)} trials of workload '{grid.workload.name}'"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("axis", style="bold")
    table.add_column("values")
    table.add_column("count", justify="right")
    for axis, values in grid.axes.items():
        table.add_row(axis, ", ".join(map(str, values)), str(len(values)))
    seeds = sorted({t.config["seed"] for t in grid.trials})
    table.add_row("seed", ", ".join(map(str, seeds)), str(len(seeds)))
    console.print(table)
    if grid.description:
        console.print(grid.description)
    if grid.fixed:
        console.print("fixed: " + ", ".join(f"{k}={v}" for k, v in grid.fixed.items()), soft_wrap=True)
    r = grid.resources
    console.print(f"trials: {len(grid.trials)}   training images: {_si(cost['images'], 'images')}   "
                  f"compute: {_si(cost['flops'], 'FLOP')}")
    console.print(f"per trial: {r.cpus:g} CPU, {r.gpus:g} GPU"
                  + (f", at most {r.max_concurrent} at once" if r.max_concurrent else "")
                  + f"; retries: {grid.max_failures}")


@command
def run(grid_file: GridPath,
        storage: Storage = "./runs",
        address: Annotated[Optional[str], typer.Option(
            help="A Ray cluster to join ('auto', 'ray://host:10001'). Default: start Ray on this machine.")] = None,
        cpus: Annotated[Optional[float], typer.Option(help="CPUs per trial (overrides the grid).")] = None,
        gpus: Annotated[Optional[float], typer.Option(help="GPUs per trial; a fraction shares a GPU.")] = None,
        trials_per_gpu: Annotated[Optional[int], typer.Option(help="Trials packed on one GPU (sets --gpus 1/N).")] = None,
        max_concurrent: Annotated[Optional[int], typer.Option(help="At most this many trials at once.")] = None,
        retry_failed: Annotated[bool, typer.Option(help="Run failed trials again.")] = False,
        fail_fast: Annotated[bool, typer.Option(help="Stop the whole grid at the first failed trial.")] = False,
        data_dir: Annotated[Optional[str], typer.Option(help="Dataset cache (default: $ABLATE_DATA or ~/.cache/ablate/data).")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="One line per event instead of a live table.")] = False):
    """Run a grid's trials with Ray Tune; run it again to resume or to run what was added.

    Trials with a result are skipped, unfinished ones resume from their last checkpoint, and
    results go to STORAGE/<grid name>/ as Parquet (trials.parquet, epochs.parquet).
    """
    from dataclasses import replace

    from orchestrator.errors import RunError
    from orchestrator.grid import load_grid
    from orchestrator.progress import LiveProgress, PlainProgress
    from orchestrator.runner import run_grid
    from orchestrator.store import RunDir

    grid = load_grid(grid_file)
    resources = grid.resources
    if gpus is not None and trials_per_gpu is not None:
        raise RunError("give either --gpus or --trials-per-gpu, not both")
    for name, value in (("cpus", cpus), ("gpus", gpus), ("max_concurrent", max_concurrent)):
        if value is not None:
            if value < 0 or (name != "gpus" and value <= 0):
                raise RunError(f"--{name.replace('_', '-')} must be positive, got {value:g}")
            resources = replace(resources, **{name: value})
    if trials_per_gpu is not None:
        if trials_per_gpu < 1:
            raise RunError(f"--trials-per-gpu must be at least 1, got {trials_per_gpu}")
        resources = replace(resources, gpus=1 / trials_per_gpu)

    live = console.is_terminal and not quiet
    run_dir = RunDir.for_grid(storage, grid.name)

    def progress(total, skipped, epochs):
        return (LiveProgress if live else PlainProgress)(console, total, skipped, epochs)

    console.print(f"{grid.name}: {len(grid.trials)} trials; results in {run_dir.display()}", soft_wrap=True)
    try:
        summary = run_grid(grid, run_dir, progress, address=address, resources=resources,
                           retry_failed=retry_failed, fail_fast=fail_fast, data_dir=data_dir)
    except KeyboardInterrupt:
        err.print(f"interrupted: finished trials are saved in {run_dir.display()}; "
                  f"run the same command again to resume")
        raise typer.Exit(130) from None
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts.items()) or "no results"
    console.print(f"{grid.name}: {counts} ({summary.ran} run now, {summary.skipped} already done)")
    if summary.failed_earlier:
        console.print(f"{summary.failed_earlier} trials failed in an earlier run; --retry-failed runs them again")
    if summary.unfinished:
        console.print(f"{summary.unfinished} trials unfinished: run the same command again to resume them")
    console.print(f"results: {run_dir.display('trials.parquet')} and {run_dir.display('epochs.parquet')}",
                  soft_wrap=True)
    raise typer.Exit(summary.exit_code)


@command
def models(json_output: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False):
    """List the All-CNN study's networks (paper Tables 1 and 2) with their parameter counts."""
    from workloads.allcnn.models import MODELS, VARIANTS, build, count_params

    rows = [{"model": m, "variant": v, "classes": k, "params": count_params(build(m, v, k))}
            for k in (10, 100) for m in MODELS for v in VARIANTS]
    if json_output:
        print(json.dumps(rows))
        return
    table = Table(title="All-CNN networks (Springenberg et al. 2015)", title_justify="left")
    for column in ("model", "variant", "params, 10 classes", "params, 100 classes"):
        table.add_column(column, justify="right" if "params" in column else "left")
    by_key = {(r["model"], r["variant"], r["classes"]): r["params"] for r in rows}
    for m in MODELS:
        for v in VARIANTS:
            table.add_row(m, v, f"{by_key[m, v, 10]:,}", f"{by_key[m, v, 100]:,}")
    console.print(table)


def main() -> None:  # pragma: no cover - the console script
    sys.exit(app())
