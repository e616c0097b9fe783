"""The `ablate` command line: thin commands that parse, call the library and render.

    ablate plan grids/paper.yaml        what will run, how many trials, how much compute
    ablate run grids/smoke.yaml         run the grid's trials with Ray Tune (local, or --address)
    ablate summarize runs/smoke         the results as the paper's tables
    ablate compare runs/smoke --baseline variant=base   each variant against base, paired by seed
    ablate status runs/smoke            where a run stands
    ablate plot runs/smoke -o smoke.png validation curves and a bar chart
    ablate models                       a workload's networks and their parameter counts

Registered workloads add their own commands on trained trials (the All-CNN study's `visualize`).
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

import workloads
from orchestrator.errors import AblateError
from workloads.base import WorkloadError

app = typer.Typer(help="Run ablation grids of deep-learning experiments: one YAML grid becomes a "
                  "reproducible study. Plan it, run it as Ray Tune trials, read the results from Parquet.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

GridPath = Annotated[Path, typer.Argument(help="A grid file (YAML), e.g. grids/paper.yaml.", show_default=False)]
Storage = Annotated[str, typer.Option(help="Where runs live: a local path, an NFS path or s3://bucket/prefix.")]


@app.callback()
def main_options():
    # As `python -m` does: a workload module of the user's (`workload: mine:WORKLOAD`) imports
    # from the working directory. Done once, here, for the whole command.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def command(fn, name: str | None = None):
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

    return app.command(name)(wrapper)


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
    command_line = grid.workload.command_line  # a grid over a script: what each trial runs
    if json_output:
        print(json.dumps({"grid": grid.name, "trials": [
            {"trial_id": t.trial_id, "config": t.config,
             **({"command_line": command_line(grid.workload.config(**t.config))} if command_line else {})}
            for t in grid.trials]}))
        return
    cost = grid.cost()
    title = f"{grid.name}: {len(grid.trials)} trials of workload '{grid.workload.name}'"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("axis", style="bold")
    table.add_column("values")
    table.add_column("count", justify="right")
    for axis, values in grid.axes.items():
        table.add_row(axis, Text(", ".join(map(str, values))), str(len(values)))  # Text: a value is not markup
    seeds = sorted({t.config["seed"] for t in grid.trials})
    table.add_row("seed", ", ".join(map(str, seeds)), str(len(seeds)))
    console.print(table)
    if grid.description:
        console.print(grid.description, markup=False)
    if grid.fixed:
        console.print("fixed: " + ", ".join(f"{k}={v}" for k, v in grid.fixed.items()), soft_wrap=True, markup=False)
    if command_line:
        console.print("commands:")
        for t in grid.trials:
            console.print(f"  {t.trial_id}  {command_line(grid.workload.config(**t.config))}", markup=False, soft_wrap=True)
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
    from orchestrator.display import LiveDisplay, PlainDisplay
    from orchestrator.grid import load_grid, resources as checked_resources
    from orchestrator.runner import run_grid
    from orchestrator.store import RunDir

    grid = load_grid(grid_file)
    # The grid file's rules for `resources`, applied to the options: one owner, the same errors.
    options = {"cpus": cpus, "gpus": gpus, "trials_per_gpu": trials_per_gpu, "max_concurrent": max_concurrent}
    resources = checked_resources({k: v for k, v in options.items() if v is not None},
                                  lambda name: "--" + name.replace("_", "-"), base=grid.resources)

    live = console.is_terminal and not quiet
    run_dir = RunDir.for_grid(storage, grid.name)

    def display(total, skipped, planned_epochs, metrics):
        return (LiveDisplay if live else PlainDisplay)(console, total, skipped, planned_epochs, metrics)

    console.print(f"{grid.name}: {len(grid.trials)} trials; results in {run_dir.display()}", soft_wrap=True)
    try:
        summary = run_grid(grid, run_dir, display, address=address, resources=resources,
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
    if summary.ray_log:
        console.print(f"Ray's own messages: {summary.ray_log}", soft_wrap=True)
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


def _results(run: str, storage: str, where: list[str] | None):
    from orchestrator import report

    run_dir = _open_run(run, storage)
    results = report.where(report.load(run_dir), where or [])
    if results.trials.empty:
        raise AblateError(f"{run_dir.display()}: no trial matches --where {' '.join(where or [])}")
    return results


def _tables(run: str, storage: str, where: list[str] | None, **layout):
    """A run's results laid out as tables: the workload's default layout, with `layout` overrides."""
    from orchestrator import report

    results = _results(run, storage, where)
    workload = results.workload
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


def _write(sheets, rows, format: Format, output: Path | None):
    """Sheets to the terminal or as markdown/LaTeX, rows as CSV/JSON; to `output` if given."""
    from orchestrator import formats

    if format is Format.table:
        target = Console(file=open(output, "w"), width=200) if output else console
        for sheet in sheets:
            target.print(formats.to_rich(sheet))
        if output:
            target.file.close()
    else:
        text = {"markdown": lambda: formats.to_markdown(sheets), "latex": lambda: formats.to_latex(sheets),
                "csv": lambda: formats.to_csv(rows), "json": lambda: formats.to_json(rows)}[format.value]()
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if output:
        err.print(f"wrote {output}")


Where = Annotated[Optional[list[str]], typer.Option(
    help="Keep trials with column=value (or column!=value); repeat to combine.")]
SelectOption = Annotated[Select, typer.Option(
    help="best: per cell, the values of the other axes (e.g. lr) with the best validation "
         "error; all: pool every trial of the cell.")]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file.")]


@command
def summarize(run: RunArg, storage: Storage = "./runs",
              rows: Annotated[Optional[str], typer.Option(help="Column whose values are the rows.")] = None,
              cols: Annotated[Optional[str], typer.Option(help="Column whose values are the columns.")] = None,
              tables: Annotated[Optional[str], typer.Option(
                  help="Comma-separated columns that split the results into one table per value.")] = None,
              metric: Annotated[str, typer.Option(help="The value shown in each cell.")] = "test_error",
              where: Where = None, select: SelectOption = Select.best,
              format: FormatOption = Format.table, output: Output = None):
    """Tables of results: by default the paper's layout, one table per dataset and augmentation.

    Each cell is the metric as mean ± std over seeds (n) with its 95% t-interval, the learning
    rate chosen for it on validation data, the parameter count, and the published number: with
    our difference where the cell ran the published protocol on the published data, else with
    what differs. Under the tables, the study's claims, checked on paired seeds.
    """
    from orchestrator import compare, formats, report

    results, summary = _tables(run, storage, where, rows=rows, cols=cols, metric=metric, select=select.value,
                               tables=None if tables is None else [t for t in tables.split(",") if t])
    workload = results.workload
    checks = compare.check_claims(results, report.layout_for(results, workload.layout), workload.claims) \
        if workload and workload.claims else []
    sheets = [formats.table_sheet(table) for table in summary] + ([formats.claims_sheet(checks)] if checks else [])
    _write(sheets, formats.records(summary, checks), format, output)


def compare_values(run: RunArg, storage: Storage = "./runs",
                   baseline: Annotated[str, typer.Option(
                       help="The axis to compare and its reference value, e.g. variant=base.",
                       show_default=False)] = ...,
                   metric: Annotated[str, typer.Option(help="The value compared.")] = "test_error",
                   where: Where = None, select: SelectOption = Select.best,
                   format: FormatOption = Format.table, output: Output = None):
    """Each value of an axis against a baseline value, in every cell of the layout, paired by seed.

    In each cell (e.g. dataset, augmentation, model) the mean over seeds of (value - baseline),
    taking the two runs of each seed together, with its 95% t-interval: "lower" or "higher" when
    the interval excludes 0, "interval includes 0" when the seeds cannot tell, "n too small"
    with fewer than two paired seeds. Each side's learning rate is chosen on validation data.
    """
    from orchestrator import compare, formats, report

    results = _results(run, storage, where)
    workload = results.workload
    layout = report.layout_for(results, workload.layout if workload else None, metric=metric, select=select.value)
    axis, base = compare.baseline(results, baseline)
    differences = compare.compare(results, layout, axis, base)
    if not differences:
        raise AblateError(f"--baseline {baseline}: {axis} has no other value to compare with")
    _write([formats.comparison_sheet(differences, layout)], formats.comparison_records(differences), format, output)


command(compare_values, "compare")  # `compare` is the library module the command calls


@command
def status(run: RunArg, storage: Storage = "./runs"):
    """Where a run stands: trials by status, running trials with their epoch, compute used, ETA.

    Reads what is on disk, so it works while `ablate run` is running, and after.
    """
    from orchestrator.display import duration
    from orchestrator.records import read_trials, statuses
    from orchestrator.status import read_status
    from orchestrator.store import now

    run_dir = _open_run(run, storage)
    table = read_trials(run_dir)
    trials = table.to_pandas() if table is not None else None
    finished = statuses(table)
    s = read_status(run_dir, finished, trials)
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
def models(workload: Annotated[str, typer.Argument(help="A registered workload or module:object.")]
           = workloads.DEFAULT,
           json_output: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False):
    """List a workload's networks with their parameter counts (All-CNN: paper Tables 1 and 2)."""
    found = _workload(workload)
    if found.models is None:
        raise AblateError(f"workload '{found.name}' has no table of models")
    rows = found.models()
    if json_output:
        print(json.dumps(rows))
        return
    table = Table(title=f"Models of workload '{found.name}'", title_justify="left")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        table.add_column(column, justify="right" if isinstance(rows[0].get(column), int) else "left")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in (row.get(c, "") for c in columns)))
    console.print(table)


def _workload(name: str):
    try:
        return workloads.get(name)
    except workloads.UnknownWorkload as e:
        raise AblateError(str(e)) from None


def _trial_command(name: str, workload_name: str, fn):
    """`ablate NAME RUN --trial ID --output FILE [the command's own options]` for a registered
    workload's TrialCommand (workloads/base.py): the run, trial and checkpoint are found here,
    and the workload's function does the rest."""

    def trial_command(run: RunArg,
                      trial: Annotated[str, typer.Option(help="The trial_id of a trained trial.", show_default=False)],
                      output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
                      storage: Storage = "./runs", **options):
        run_dir = _open_run(run, storage)
        config, state = _trained_trial(run_dir, trial, workload_name, name)
        try:
            console.print(fn(config, state, output, **options))
        except ValueError as e:
            raise AblateError(f"{run_dir.display()}: trial '{trial}': {e}") from None

    # Typer reads a command's options from its signature: the common ones above, then the workload's.
    common = list(inspect.signature(trial_command, eval_str=True).parameters.values())[:-1]
    own = list(inspect.signature(fn, eval_str=True).parameters.values())[3:]
    trial_command.__signature__ = inspect.Signature(common + [p.replace(kind=p.KEYWORD_ONLY) for p in own])
    trial_command.__doc__ = inspect.getdoc(fn)
    trial_command.__name__ = name
    command(trial_command, name)


def _trained_trial(run_dir, trial: str, workload_name: str, command_name: str):
    """The config object and final checkpoint state of a finished trial of `workload_name`."""
    import pyarrow.compute as pc

    from orchestrator.grid import saved_grid
    from orchestrator.records import read_trials

    table = read_trials(run_dir)
    rows = table.filter(pc.field("trial_id") == trial).to_pylist() if table is not None else []
    if not rows:
        known = table["trial_id"].to_pylist()[:5] if table is not None else []
        raise AblateError(f"{run_dir.display()}: unknown trial '{trial}'"
                          + (f" (for example: {', '.join(known)})" if known else " (the run has no finished trials)"))
    grid = saved_grid(run_dir)
    if grid is None or grid.workload.name != workload_name:
        ran = f"workload '{grid.workload.name}'" if grid else "a workload that cannot be loaded here"
        raise AblateError(f"{run_dir.display()}: {command_name} is a command of workload '{workload_name}'; "
                          f"this run is of {ran}")
    saved = run_dir.checkpoint(trial)
    if saved is None:
        raise AblateError(f"{run_dir.display()}: trial '{trial}' ({rows[0]['status']}) has no checkpoint to load")
    workload = grid.workload
    config = workload.config(**{f: rows[0][f] for f in workload.config.__dataclass_fields__})
    return config, saved["state"]


for _name in workloads.REGISTRY:
    for _command_name, _fn in workloads.get(_name).commands.items():
        _trial_command(_command_name, _name, _fn)


def main() -> None:  # pragma: no cover - the console script
    sys.exit(app())


if __name__ == "__main__":
    main()
