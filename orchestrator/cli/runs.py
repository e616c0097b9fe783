"""The commands that read a run directory: its results as tables (`summarize`), comparisons
(`compare`) and plots (`plot`), where it stands (`status`), a trial's log (`log`), and its
finished trials sent to a tracker afterwards (`track`)."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from orchestrator.cli.common import RunArg, Storage, command, console, err, note, open_run, writing
from orchestrator.errors import AblateError


def _results(run: str, storage: str, where: list[str] | None, all_trials: bool = False,
             trust_workload: bool = False):
    from orchestrator.results import select, tables

    run_dir = open_run(run, storage)
    loaded = tables.load(run_dir, all_trials=all_trials, notify=note, trust_workload=trust_workload)
    if loaded.trials.empty and loaded.others:  # its grid was edited since and not run again
        raise AblateError(f"{run_dir.display()}: none of the trials of its grid as it is now has finished; "
                          f"--all-trials shows the {loaded.others} trials of an earlier version of the grid")
    results = select.where(loaded, where or [], note)
    if results.untrusted:
        _untrusted(run_dir, results.untrusted, "the tables are laid out by the axes that vary, without its "
                                              "published numbers and claims")
    if results.others:
        err.print(f"note: {run_dir.display()} also holds {results.others} trials of an earlier version of its grid, "
                  "left out; --all-trials shows them too", markup=False, soft_wrap=True)
    if results.trials.empty:
        raise AblateError(f"{run_dir.display()}: no trial matches --where {' '.join(where or [])}")
    return results


def _tables(run: str, storage: str, where: list[str] | None, all_trials: bool = False,
            trust_workload: bool = False, **layout):
    """A run's results laid out as tables: the workload's default layout, with `layout` overrides;
    without a `metric`, tables of each metric the grid reports."""
    from orchestrator.results import tables

    results = _results(run, storage, where, all_trials, trust_workload)
    workload = results.workload
    asked = layout.pop("metric", None)
    metrics = [asked] if asked else [m.name for m in results.objective.report]
    summary = []
    for metric in metrics:
        # A text value a grid also reports (a checkpoint's name) has no table, but the others do.
        if not asked and metric != metrics[0] and metric in results.trials.columns and not results.numeric(metric):
            note(f"{results.run.display()}: {metric} is not numeric: no table of it")
            continue
        chosen = tables.layout_for(results, workload.layout if workload else None, metric=metric, **layout)
        summary += tables.summarize(results, chosen, workload.references if workload else ())
    return results, summary


def _not_imported(run_dir, workload: str) -> str:
    return (f"{run_dir.display('grid.yaml')}: workload '{workload}' is not a registered workload, so it was "
            "not imported (--trust-workload imports it, running its code)")


def _untrusted(run_dir, workload: str, without: str) -> None:
    err.print(f"note: {_not_imported(run_dir, workload)}; {without}", markup=False, soft_wrap=True)


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
    from orchestrator.results import formats

    if format is Format.table:
        with writing(output):
            target = Console(file=open(output, "w"), width=200) if output else console
            for sheet in sheets:
                target.print(formats.to_rich(sheet))
            if output:
                target.file.close()
    else:
        text = {"markdown": lambda: formats.to_markdown(sheets), "latex": lambda: formats.to_latex(sheets),
                "csv": lambda: formats.to_csv(rows), "json": lambda: formats.to_json(rows)}[format.value]()
        if output:
            with writing(output):
                output.write_text(text)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if output:
        err.print(f"wrote {output}")


Where = Annotated[Optional[list[str]], typer.Option(
    help="Keep trials with column=value (or column!=value); repeat to combine.")]
SelectOption = Annotated[Select, typer.Option(
    help="best: per cell, the values of the other axes (e.g. lr) with the best value of the grid's "
         "metric (validation data); all: pool every trial of the cell.")]
AllTrials = Annotated[bool, typer.Option(
    "--all-trials", help="Also the trials of earlier versions of the grid that the run directory holds.")]
MetricOption = Annotated[Optional[str], typer.Option(
    help="The metric shown in each cell (default: those the grid reports, e.g. test_error).", show_default=False)]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file.")]


def _trust_workload(without: str):
    """--trust-workload, its help ending with what the command does `without` it."""
    return Annotated[bool, typer.Option(
        "--trust-workload", help="Import the workload module the run's grid.yaml names where it is not a registered "
        f"workload. That runs the module's code: only for a run whose files you trust. Without it {without}")]


TrustWorkload = _trust_workload(
    "such a run's results are shown without the workload's layout, published numbers and claims.")


@command
def summarize(run: RunArg, storage: Storage = "./runs",
              rows: Annotated[Optional[str], typer.Option(help="Column whose values are the rows.")] = None,
              cols: Annotated[Optional[str], typer.Option(help="Column whose values are the columns.")] = None,
              tables: Annotated[Optional[str], typer.Option(
                  help="Comma-separated columns that split the results into one table per value.")] = None,
              metric: MetricOption = None, where: Where = None, select: SelectOption = Select.best,
              all_trials: AllTrials = False, format: FormatOption = Format.table, output: Output = None,
              trust_workload: TrustWorkload = False):
    """Tables of results: by default the paper's layout, one table per dataset and augmentation.

    Each cell is the metric as mean ± std over seeds (n) with its 95% t-interval, the learning
    rate chosen for it on validation data, the parameter count, and the published number: with
    our difference where the cell ran the published protocol on the published data, else with
    what differs. Under the tables, the study's claims, checked on paired seeds.
    """
    from orchestrator.results import compare, formats
    from orchestrator.results.tables import layout_for

    results, summary = _tables(run, storage, where, all_trials, trust_workload, rows=rows, cols=cols, metric=metric,
                               select=select.value, tables=None if tables is None else [t for t in tables.split(",") if t])
    workload = results.workload
    checks = compare.check_claims(results, layout_for(results, workload.layout), workload.claims) \
        if workload and workload.claims else []
    sheets = [formats.table_sheet(table) for table in summary] + ([formats.claims_sheet(checks)] if checks else [])
    _write(sheets, formats.table_rows(summary, checks), format, output)


def compare_values(run: RunArg, storage: Storage = "./runs",
                   baseline: Annotated[str, typer.Option(
                       help="The axis to compare and its reference value, e.g. variant=base.",
                       show_default=False)] = ...,
                   metric: MetricOption = None, where: Where = None, select: SelectOption = Select.best,
                   all_trials: AllTrials = False, format: FormatOption = Format.table, output: Output = None,
                   trust_workload: TrustWorkload = False):
    """Each value of an axis against a baseline value, in every cell of the layout, paired by seed.

    In each cell (e.g. dataset, augmentation, model) the mean over seeds of (value - baseline),
    taking the two runs of each seed together, with its 95% t-interval: "lower" or "higher" when
    the interval excludes 0, "interval includes 0" when the seeds cannot tell, "n too small"
    with fewer than two paired seeds, "not finite" where a seed's value is inf; where a side has
    no value, why ("warmup=100 diverged", failed, no result yet, not in the grid). Each side's
    learning rate is chosen on validation data.
    """
    from orchestrator.results import compare, formats
    from orchestrator.results.tables import layout_for

    results = _results(run, storage, where, all_trials, trust_workload)
    workload = results.workload
    layout = layout_for(results, workload.layout if workload else None, metric=metric, select=select.value)
    axis, base = compare.baseline(results, baseline)
    differences = compare.compare(results, layout, axis, base)
    if not differences:
        raise AblateError(f"--baseline {baseline}: {axis} has no other value to compare with")
    _write([formats.comparison_sheet(differences, layout)], formats.comparison_rows(differences), format, output)


command(compare_values, "compare")  # `compare` is the library module the command calls


StatusTrustWorkload = _trust_workload("such a run is shown without its grid: no pending trials, no ETA.")


@command
def status(run: RunArg, storage: Storage = "./runs", trust_workload: StatusTrustWorkload = False):
    """Where a run stands: trials by status, running trials with their epoch, compute used, ETA.

    Reads what is on disk, so it works while `ablate run` is running, and after.
    """
    from orchestrator import terminal
    from orchestrator.results.status import read_status
    from orchestrator.store.records import read_trials

    run_dir = open_run(run, storage)
    s = read_status(run_dir, read_trials(run_dir, notify=note), trust_workload, _driven(run_dir), note)
    if s.untrusted:
        _untrusted(run_dir, s.untrusted, "shown without the grid: no pending trials, no ETA")
    if not s.counts and not s.planned and not s.others:
        raise AblateError(f"{run_dir.display()}: nothing there yet: no results, no running trials, no grid")
    terminal.show_status(console, run_dir.display(), s)


@command
def log(run: RunArg, trial: Annotated[str, typer.Option(
            help="The trial_id, as `ablate run` and `ablate status` show it.", show_default=False)],
        storage: Storage = "./runs"):
    """Print a trial's log: each attempt, a script's output, the traceback of a failure.

    From any storage (on S3 a running trial's log is kept in parts), while the trial runs too.
    """
    from orchestrator.store.lines import read_lines

    run_dir = open_run(run, storage)
    started = sorted(run_dir.names(run_dir.child("trials")))
    if trial not in started:
        raise AblateError(f"{run_dir.display()}: no trial '{trial}' has started" + (
            f" (those that have: {', '.join(started[:5])}{', ...' if len(started) > 5 else ''})" if started else ""))
    data = read_lines(run_dir, run_dir.trial_file(trial, "trial.log"))
    sys.stdout.write((data or b"").decode(errors="replace"))


def _driven(run_dir) -> bool | None:
    """Whether a driver holds the run now; None where its lock cannot be read (a read-only copy,
    said nothing of; a damaged lock record, said in a note)."""
    from orchestrator.errors import RunError
    from orchestrator.results.status import STALE_AFTER
    from orchestrator.run.lock import DriverLock, UnreadableLock

    try:
        return DriverLock(run_dir).driven()
    except UnreadableLock as e:
        note(f"{e}; until then whether a driver runs it cannot be told, and a trial that reported in the last "
              f"{STALE_AFTER.seconds // 60} minutes (3 of its epochs, if longer) is shown running")
        return None
    except (OSError, RunError):
        return None


TrackTrustWorkload = _trust_workload("such a run is refused.")


@command
def track(run: RunArg, to: Annotated[list[str], typer.Option(
              "--to", help="The tracker to send to (mlflow, tensorboard, wandb); repeat for several.", show_default=False)],
          storage: Storage = "./runs", trust_workload: TrackTrustWorkload = False):
    """Send a run's finished trials to a tracker afterwards, as `ablate run --track` would have.

    Where it writes follows the run's grid (`tracking:`) and the tracker's own settings
    (MLFLOW_TRACKING_URI). Run it again and what the tracker holds is not sent twice.
    """
    from orchestrator.plan.execution import tracking
    from orchestrator.plan.grid import read_saved_grid
    from orchestrator.run.display import trials
    from orchestrator.run.tracking import track_run

    run_dir = open_run(run, storage)
    # Like `ablate run`, it needs the run's workload (its config names the tracker's parameters).
    saved = read_saved_grid(run_dir, trust_workload)
    if saved.untrusted:
        raise AblateError(f"{_not_imported(run_dir, saved.untrusted)}; track needs it to send the trials")
    grid = saved.grid
    if grid is None:
        raise AblateError(f"{run_dir.display('grid.yaml')}: the run's grid is missing or does not load here")
    names = list(tracking({name: {} for name in to}, key="--to"))
    sent = track_run(grid, run_dir, names, notify=note)
    console.print(f"{run_dir.display()}: {trials(sent)} in {', '.join(names)}", soft_wrap=True)


@command
def plot(run: RunArg, output: Annotated[Path, typer.Option("--output", "-o", help="A .png or .svg file.")],
         storage: Storage = "./runs",
         where: Where = None,
         all_trials: AllTrials = False, trust_workload: TrustWorkload = False):
    """Plot the grid's metric per epoch (or step) for each cell, grouped as in the tables, and a bar chart of the main table."""
    from orchestrator.results import plots

    results, summary = _tables(run, storage, where, all_trials, trust_workload)
    with writing(output):
        plots.plot(results, [t for t in summary if t.layout.metric == summary[0].layout.metric], output, note)
    console.print(f"wrote {output}")
