"""The `ablate` command line: thin commands that parse, call the library and render.

    ablate plan grids/paper.yaml        what will run, how many trials, how much compute
    ablate run grids/smoke.yaml         run the grid's trials with Ray Tune (local, or --address)
    ablate summarize runs/smoke         the results as the paper's tables
    ablate status runs/smoke            where a run stands
    ablate plot runs/smoke -o smoke.png validation curves and a bar chart
    ablate visualize runs/smoke --trial ID -o units.png   guided backpropagation
    ablate models                       the registered networks and their parameter counts
"""
from __future__ import annotations

import functools
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from orchestrator.errors import AblateError
from workloads.base import WorkloadError

app = typer.Typer(help="Run ablation grids of deep-learning experiments: one YAML grid becomes a "
                  "reproducible study. Plan it, run it as Ray Tune trials, read the results from Parquet.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

GridPath = Annotated[Path, typer.Argument(help="A grid file (YAML), e.g. grids/paper.yaml.", show_default=False)]
Storage = Annotated[str, typer.Option(help="Where runs live: a local path, an NFS path or s3://bucket/prefix.")]


def command(fn):
    """Register a command; library errors become one `error: ...` line and their exit code.

    A workload's own errors (a dataset missing offline, a corrupted download) are for the user to
    fix as much as ours, wherever they are raised: one line and exit code 1 too.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (AblateError, WorkloadError) as e:
            err.print(f"error: {e}", markup=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 1)) from None

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
        wait: Annotated[bool, typer.Option(help="If another `ablate run` is running this grid in this storage, "
                                           "wait for it to end (or its heartbeat to stop), then run.")] = False,
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
                           retry_failed=retry_failed, fail_fast=fail_fast, data_dir=data_dir, wait=wait,
                           notify=lambda message: err.print(f"note: {message}", markup=False, soft_wrap=True))
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


RunArg = Annotated[str, typer.Argument(
    help="A run directory (<storage>/<grid name>, local or s3://...), or a grid file (then --storage applies).",
    show_default=False)]


def _open_run(run: str, storage: str):
    """The run a RUN argument names: a grid file's run under `storage`, or a run directory."""
    from orchestrator.errors import ResultsError
    from orchestrator.grid import load_grid
    from orchestrator.store import RunDir, resolve_storage

    if run.endswith((".yaml", ".yml")) and Path(run).is_file():
        return RunDir.for_grid(storage, load_grid(run).name)
    if "://" not in run and not Path(run).is_dir():
        raise ResultsError(f"{run}: no such run directory (expected <storage>/<grid name> or a grid file)")
    return RunDir(resolve_storage(run))


def _workload_of(run_dir):
    """The run's workload, for its default layout and published numbers; None if not importable."""
    import yaml

    import workloads

    data = run_dir.read_bytes(run_dir.child("grid.yaml"))
    try:
        spec = yaml.safe_load(data) if data else {}
        return workloads.get((spec or {}).get("workload", "allcnn"))
    except (workloads.UnknownWorkload, yaml.YAMLError):
        return None


def _tables(run: str, storage: str, where: list[str] | None, **layout):
    """A run's results laid out as tables: the workload's default layout, with `layout` overrides."""
    from orchestrator import report

    run_dir = _open_run(run, storage)
    results = report.where(report.load(run_dir), where or [])
    if results.trials.empty:
        raise AblateError(f"{run_dir.display()}: no trial matches --where {' '.join(where or [])}")
    workload = _workload_of(run_dir)
    chosen = report.layout_for(results, workload.layout if workload else None, **layout)
    return results, report.summarize(results, chosen, workload.references if workload else ())


class Format(str, Enum):
    table = "table"
    markdown = "markdown"
    latex = "latex"
    csv = "csv"
    json = "json"


class Select(str, Enum):
    best = "best"
    all = "all"


@command
def summarize(run: RunArg, storage: Storage = "./runs",
              rows: Annotated[Optional[str], typer.Option(help="Column whose values are the rows.")] = None,
              cols: Annotated[Optional[str], typer.Option(help="Column whose values are the columns.")] = None,
              tables: Annotated[Optional[str], typer.Option(
                  help="Comma-separated columns that split the results into one table per value.")] = None,
              metric: Annotated[str, typer.Option(help="The value shown in each cell.")] = "test_error",
              where: Annotated[Optional[list[str]], typer.Option(
                  help="Keep trials with column=value (or column!=value); repeat to combine.")] = None,
              select: Annotated[Select, typer.Option(
                  help="best: per cell, the values of the other axes (e.g. lr) with the best validation "
                       "error; all: pool every trial of the cell.")] = Select.best,
              format: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
              output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file.")] = None):
    """Tables of results: by default the paper's layout, one table per dataset and augmentation.

    Each cell is the metric as mean ± std over seeds (n), the learning rate chosen for it on
    validation data, the parameter count, and the published number with our difference.
    """
    from orchestrator import formats

    _, summary = _tables(run, storage, where, rows=rows, cols=cols, metric=metric, select=select.value,
                         tables=None if tables is None else [t for t in tables.split(",") if t])
    if format is Format.table:
        target = Console(file=open(output, "w"), width=200) if output else console
        for table in summary:
            target.print(formats.to_rich(table))
        if output:
            target.file.close()
    else:
        text = {"markdown": formats.to_markdown, "latex": formats.to_latex, "csv": formats.to_csv,
                "json": formats.to_json}[format.value](summary)
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if output:
        err.print(f"wrote {output}")


@command
def status(run: RunArg, storage: Storage = "./runs"):
    """Where a run stands: trials by status, running trials with their epoch, compute used, ETA.

    Reads what is on disk, so it works while `ablate run` is running, and after.
    """
    from orchestrator.progress import duration
    from orchestrator.records import statuses
    from orchestrator.records import trials as finished_trials
    from orchestrator.status import status as run_status
    from orchestrator.store import now

    run_dir = _open_run(run, storage)
    table = finished_trials(run_dir)
    trials = table.to_pandas() if table is not None else None
    finished = statuses(table)
    s = run_status(run_dir, finished, trials)
    if not s.counts and not s.planned:
        raise AblateError(f"{run_dir.display()}: nothing there yet: no results, no running trials, no grid")
    total = f" of {s.planned}" if s.planned else ""
    console.print(f"{run_dir.display()}: {len(finished)} finished{total}: "
                  + ", ".join(f"{n} {k}" for k, n in s.counts.items()), soft_wrap=True)
    console.print(f"compute used: {s.used_hours:.2f} {s.unit}-hours; ETA: {duration(s.eta_seconds)}")
    if s.active:
        out = Table(box=None, header_style="bold")
        for column in ("trial", "state", "epoch", "val_error", "updated"):
            out.add_column(column)
        for a in s.active:
            out.add_row(a.trial_id, "stopped" if a.stopped else "running", f"{a.epoch}/{a.epochs or '?'}",
                        f"{a.metrics['val_error']:.4f}" if isinstance(a.metrics.get("val_error"), float) else "-",
                        f"{duration((now() - a.updated).total_seconds())} ago")
        console.print(out)
    if s.counts.get("stopped"):
        console.print("stopped trials resume from their checkpoints at the next `ablate run`")


@command
def plot(run: RunArg, output: Annotated[Path, typer.Option("--output", "-o", help="A .png or .svg file.")],
         storage: Storage = "./runs",
         where: Annotated[Optional[list[str]], typer.Option(help="Keep trials with column=value; repeat to combine.")] = None):
    """Plot validation error per epoch for each cell, grouped as in the tables, and a bar chart of the main table."""
    from orchestrator import plots

    plots.plot(*_tables(run, storage, where), output)
    console.print(f"wrote {output}")


@command
def visualize(run: RunArg,
              trial: Annotated[str, typer.Option(help="The trial_id of a trained trial.", show_default=False)],
              output: Annotated[Path, typer.Option("--output", "-o", help="The picture to write (.png).")],
              storage: Storage = "./runs",
              layer: Annotated[Optional[str], typer.Option(
                  help="convN or poolN; default: the last downsampling layer.")] = None,
              units: Annotated[int, typer.Option(help="How many of the layer's most active units.")] = 6,
              images: Annotated[int, typer.Option(help="Test images searched for the top activations.")] = 500,
              methods: Annotated[str, typer.Option(help="Comma-separated: guided, gradient, deconvnet.")]
              = "guided,gradient,deconvnet"):
    """Guided backpropagation (paper section 3.3): what the units of a trained All-CNN network respond to.

    For the layer's most active units over a sample of test images, shows the input patch each
    responds to and its reconstruction by guided backpropagation, beside the plain gradient and
    the deconvnet rule.
    """
    from dataclasses import fields

    import pyarrow.compute as pc

    from orchestrator.records import trials as finished_trials

    run_dir = _open_run(run, storage)
    table = finished_trials(run_dir)
    rows = table.filter(pc.field("trial_id") == trial).to_pylist() if table is not None else []
    if not rows:
        known = table["trial_id"].to_pylist()[:5] if table is not None else []
        raise AblateError(f"{run_dir.display()}: unknown trial '{trial}'"
                          + (f" (for example: {', '.join(known)})" if known else " (the run has no finished trials)"))
    workload = _workload_of(run_dir)
    if workload is None or workload.name != "allcnn":
        raise AblateError(f"{run_dir.display()}: visualize works on the allcnn workload's networks")
    checkpoint = run_dir.read_bytes(run_dir.trial_file(trial, "checkpoint.pt"))
    if checkpoint is None:
        raise AblateError(f"{run_dir.display()}: trial '{trial}' ({rows[0]['status']}) has no checkpoint to load")
    from workloads.allcnn.visualize import visualize_checkpoint

    config = workload.config(**{f.name: rows[0][f.name] for f in fields(workload.config)})
    try:
        drawn = visualize_checkpoint(config, checkpoint, output, layer, units, images,
                                     tuple(m.strip() for m in methods.split(",") if m.strip()))
    except ValueError as e:
        raise AblateError(f"{run_dir.display()}: trial '{trial}': {e}") from None
    console.print(f"wrote {output}: layer {drawn['layer']}, units {', '.join(map(str, drawn['units']))}")


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


if __name__ == "__main__":
    main()
