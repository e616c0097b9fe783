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
"""
from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import os
import shlex
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

import workloads
from orchestrator.errors import AblateError
from workloads.base import WorkloadError

app = typer.Typer(help="Run ablation grids of deep-learning experiments: one YAML grid becomes a "
                  "reproducible study. Plan it, run it as Ray Tune trials, read the results from Parquet.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown")
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
    fix as much as ours, wherever they are raised: one line and exit code 1 too. A command's
    `--output` file is checked before the command does its work (a plot can take a while).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            if kwargs.get("output") is not None:
                _check_output(kwargs["output"])
            return fn(*args, **kwargs)
        except (AblateError, WorkloadError) as e:
            err.print(f"error: {e}", markup=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 1)) from None

    return app.command(name)(wrapper)


def _check_output(output: Path) -> None:
    """An output file can be written only into a folder that exists, and not over a folder."""
    if output.is_dir():
        raise AblateError(f"--output {output}: is a folder; name the file to write")
    if not output.parent.is_dir():
        why = f"{output.parent} is not a folder" if output.parent.exists() else f"there is no folder {output.parent}"
        raise AblateError(f"--output {output}: {why}")


@contextlib.contextmanager
def _writing(output: Path | None):
    """Writing `output`: where it cannot be written (a read-only folder, a full disk), one line naming it.
    Only the output's own errors: one naming it, or a full disk (a read of the run is never that),
    which leaves no file cut short behind: one the command wrote to (a file it never reached stays)."""
    before = _version(output)
    try:
        yield
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        if output is None or not (e.filename == str(output) or full):
            raise
        if full and _version(output) not in (before, None):
            output.unlink()
        raise AblateError(f"--output {output}: cannot write it ({e.strerror or e})") from None


def _version(path: Path | None) -> tuple | None:
    """Which version of a file is there: None where there is none."""
    if path is None or not path.exists():
        return None
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@command
def plan(grid_file: GridPath,
         json_output: Annotated[bool, typer.Option("--json", help="Print the trials as one JSON object.")] = False):
    """Show what a grid will run: its axes, number of trials and estimated compute."""
    from orchestrator import terminal
    from orchestrator.plan.grid import load_grid

    grid = load_grid(grid_file)
    invocation = grid.workload.invocation  # a grid over a script: what each trial runs
    if json_output:
        print(json.dumps({"grid": grid.name, "trials": [
            {"trial_id": t.trial_id, "config": t.config,
             **({"command_line": invocation(grid.workload.config(**t.config))} if invocation else {})}
            for t in grid.trials]}))
        return
    terminal.show_plan(console, grid)
    if note := grid.unseeded():
        _note(note)


@command
def run(grid_file: GridPath,
        storage: Storage = "./runs",
        address: Annotated[Optional[str], typer.Option(
            help="A Ray cluster to join ('auto', or its head's HOST:6379). Default: start Ray on this machine.")] = None,
        cpus: Annotated[Optional[float], typer.Option(help="CPUs per trial (overrides the grid).")] = None,
        gpus: Annotated[Optional[float], typer.Option(help="GPUs per trial; a fraction shares a GPU.")] = None,
        trials_per_gpu: Annotated[Optional[int], typer.Option(help="Trials packed on one GPU (sets --gpus 1/N).")] = None,
        max_concurrent: Annotated[Optional[int], typer.Option(help="At most this many trials at once.")] = None,
        retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed trials again.")] = False,
        resume_stopped: Annotated[bool, typer.Option(
            "--resume-stopped", help="Train the trials that halving (or a scheduler) stopped to their end, from their checkpoints.")] = False,
        fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop the whole grid at the first failed trial.")] = False,
        data_dir: Annotated[Optional[str], typer.Option(help="Dataset cache (default: $ABLATE_DATA or ~/.cache/ablate/data).")] = None,
        wait: Annotated[bool, typer.Option("--wait", help="If another `ablate run` is running this grid in this storage, "
                                           "wait for it to end (or its heartbeat to stop), then run.")] = False,
        trial_timeout: Annotated[Optional[float], typer.Option(
            help="End an attempt of a trial that runs longer than this many seconds, as a failure "
                 "(retried under max_failures; overrides the grid's trial_timeout).")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="One line per event instead of a live table.")] = False,
        track: Annotated[Optional[list[str]], typer.Option(
            help="Log every trial to this tracker too (mlflow, tensorboard, wandb); repeat for several. Adds to the grid's `tracking:`.")] = None):
    """Run a grid's trials with Ray Tune; run it again to resume or to run what was added.

    Trials with a result are skipped, unfinished ones resume from their last checkpoint, and
    results go to STORAGE/NAME/, NAME being the grid's `name`, as Parquet (trials.parquet,
    epochs.parquet).
    """
    import dataclasses

    from orchestrator.plan.grid import load_grid, resources as checked_resources, tracking, trial_timeout as checked_timeout
    from orchestrator.run.display import LiveDisplay, PlainDisplay, trials
    from orchestrator.run.runner import run_grid
    from orchestrator.store.rundir import RunDir

    grid = load_grid(grid_file)
    if track:
        grid = dataclasses.replace(grid, tracking={**tracking({name: {} for name in track}, key="--track"),
                                                   **grid.tracking})
    # The grid file's rules for `resources`, applied to the options: one owner, the same errors.
    options = {"cpus": cpus, "gpus": gpus, "trials_per_gpu": trials_per_gpu, "max_concurrent": max_concurrent}
    resources = checked_resources({k: v for k, v in options.items() if v is not None},
                                  lambda name: "--" + name.replace("_", "-"), base=grid.resources)
    timeout = checked_timeout(trial_timeout, "--trial-timeout")

    live = console.is_terminal and not quiet
    run_dir = RunDir.for_grid(storage, grid.name)

    def display(total, skipped, planned_epochs, metrics):
        return (LiveDisplay if live else PlainDisplay)(console, total, skipped, planned_epochs, metrics,
                                                       grid.workload.unit)

    console.print(f"{grid.name}: {trials(len(grid.trials))}; results in {run_dir.display()}", soft_wrap=True)
    if note := grid.unseeded():
        _note(note)
    try:
        summary = run_grid(grid, run_dir, display, address=address, resources=resources,
                           retry_failed=retry_failed, fail_fast=fail_fast, data_dir=data_dir, wait=wait,
                           trial_timeout=timeout, resume_stopped=resume_stopped, notify=_note)
    except KeyboardInterrupt:
        err.print(f"interrupted: finished trials are saved in {run_dir.display()}; "
                  f"run the same command again to resume", soft_wrap=True)
        raise typer.Exit(130) from None
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts.items()) or "no results"
    unrun = f", {summary.stopped_unrun} stopped by halving without running again" if summary.stopped_unrun else ""
    console.print(f"{grid.name}: {counts} ({summary.ran} run now{unrun}, {summary.skipped} already done)",
                  soft_wrap=True)
    if summary.failed_earlier:
        console.print(f"{trials(summary.failed_earlier)} failed in an earlier run; --retry-failed runs them again")
    if summary.unfinished:
        console.print(f"{trials(summary.unfinished)} unfinished: run the same command again to resume them")
    console.print(f"results: {run_dir.display('trials.parquet')} and {run_dir.display('epochs.parquet')}",
                  soft_wrap=True)
    if summary.counts:
        # To paste as it is: a storage path with a space (`--storage "my runs"`) quoted.
        console.print(f"tables: ablate summarize {shlex.quote(run_dir.display())}", soft_wrap=True, markup=False)
    if summary.ray_log:
        console.print(f"Ray's own messages: {summary.ray_log}", soft_wrap=True)
    raise typer.Exit(summary.exit_code)


RunArg = Annotated[str, typer.Argument(
    help="A run directory (runs/paper, s3://bucket/runs/paper), or a grid file (then --storage applies).",
    show_default=False)]


def _note(message: str) -> None:
    err.print(f"note: {message}", markup=False, soft_wrap=True)


def _open_run(run: str, storage: str):
    """The run a RUN argument names: a grid file's run under `storage`, or a run directory."""
    from orchestrator.errors import ResultsError
    from orchestrator.plan.grid import load_grid
    from orchestrator.store.rundir import RunDir, resolve_storage

    if run.endswith((".yaml", ".yml")) and Path(run).is_file():
        return RunDir.for_grid(storage, load_grid(run).name)
    if "://" not in run and not Path(run).is_dir():
        raise ResultsError(f"{run}: no such run directory (expected <storage>/<grid name> or a grid file)")
    return RunDir(resolve_storage(run))


def _results(run: str, storage: str, where: list[str] | None, all_trials: bool = False,
             trust_workload: bool = False):
    from orchestrator.results import select, tables

    run_dir = _open_run(run, storage)
    loaded = tables.load(run_dir, all_trials=all_trials, notify=_note, trust_workload=trust_workload)
    if loaded.trials.empty and loaded.others:  # its grid was edited since and not run again
        raise AblateError(f"{run_dir.display()}: none of the trials of its grid as it is now has finished; "
                          f"--all-trials shows the {loaded.others} trials of an earlier version of the grid")
    results = select.where(loaded, where or [], _note)
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
            _note(f"{results.run.display()}: {metric} is not numeric: no table of it")
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
        with _writing(output):
            target = Console(file=open(output, "w"), width=200) if output else console
            for sheet in sheets:
                target.print(formats.to_rich(sheet))
            if output:
                target.file.close()
    else:
        text = {"markdown": lambda: formats.to_markdown(sheets), "latex": lambda: formats.to_latex(sheets),
                "csv": lambda: formats.to_csv(rows), "json": lambda: formats.to_json(rows)}[format.value]()
        if output:
            with _writing(output):
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

    run_dir = _open_run(run, storage)
    s = read_status(run_dir, read_trials(run_dir, notify=_note), trust_workload, _driven(run_dir), _note)
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

    run_dir = _open_run(run, storage)
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
        _note(f"{e}; until then whether a driver runs it cannot be told, and a trial that reported in the last "
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
    from orchestrator.plan.grid import read_saved_grid, tracking
    from orchestrator.run.display import trials
    from orchestrator.run.tracking import track_run

    run_dir = _open_run(run, storage)
    # Like `ablate run`, it needs the run's workload (its config names the tracker's parameters).
    saved = read_saved_grid(run_dir, trust_workload)
    if saved.untrusted:
        raise AblateError(f"{_not_imported(run_dir, saved.untrusted)}; track needs it to send the trials")
    grid = saved.grid
    if grid is None:
        raise AblateError(f"{run_dir.display('grid.yaml')}: the run's grid is missing or does not load here")
    names = list(tracking({name: {} for name in to}, key="--to"))
    sent = track_run(grid, run_dir, names, notify=_note)
    console.print(f"{run_dir.display()}: {trials(sent)} in {', '.join(names)}", soft_wrap=True)


@command
def plot(run: RunArg, output: Annotated[Path, typer.Option("--output", "-o", help="A .png or .svg file.")],
         storage: Storage = "./runs",
         where: Where = None,
         all_trials: AllTrials = False, trust_workload: TrustWorkload = False):
    """Plot the grid's metric per epoch (or step) for each cell, grouped as in the tables, and a bar chart of the main table."""
    from orchestrator.results import plots

    results, summary = _tables(run, storage, where, all_trials, trust_workload)
    with _writing(output):
        plots.plot(results, [t for t in summary if t.layout.metric == summary[0].layout.metric], output, _note)
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
    from orchestrator import terminal

    terminal.show_models(console, found.name, rows)


def _workload(name: str):
    try:
        return workloads.get(name)
    except workloads.UnknownWorkload as e:
        raise AblateError(str(e)) from None


def _tool_command(name: str, workload_name: str, tool):
    """`ablate NAME RUN --trial ID --output FILE [the tool's own options]` for a registered
    workload's tool on trained trials (workloads/base.py, TrialTool): the run, trial and checkpoint
    are found here, and the tool does the rest."""

    def tool_command(run: RunArg,
                     trial: Annotated[str, typer.Option(help="The trial_id of a trained trial.", show_default=False)],
                     output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
                     storage: Storage = "./runs", **options):
        from orchestrator.results.trained import trained_trial

        _check_options(tool, options)
        run_dir = _open_run(run, storage)
        config, state = trained_trial(run_dir, trial, workload_name, name)
        try:
            with _writing(output):
                shown = tool(config, state, output, **options)
            console.print(shown)
        except ValueError as e:
            raise AblateError(f"{run_dir.display()}: trial '{trial}': {e}") from None

    # Typer reads a command's options from its signature: the common ones above, then the tool's.
    common = list(inspect.signature(tool_command, eval_str=True).parameters.values())[:-1]
    own = list(inspect.signature(tool, eval_str=True).parameters.values())[3:]
    tool_command.__signature__ = inspect.Signature(common + [p.replace(kind=p.KEYWORD_ONLY) for p in own])
    tool_command.__doc__ = inspect.getdoc(tool)
    tool_command.__name__ = name
    command(tool_command, name)


def _check_options(tool, options: dict) -> None:
    """A tool's option values against the annotated-types constraints their annotations declare
    (`units: Annotated[int, Ge(1), typer.Option(...)]`), as a workload's config fields are checked."""
    from orchestrator.plan.params import CHECKED, constraints, expectation, fmt, holds

    hints = typing.get_type_hints(tool, include_extras=True)
    for name, value in options.items():
        expected, metadata = constraints(hints[name])
        checked = [c for c in metadata if isinstance(c, CHECKED)]  # not the typer.Option beside them
        if value is not None and not holds(checked, value):
            raise AblateError(f"--{name.replace('_', '-')}: expected {expectation(expected, checked)}, got {fmt(value)}")


for _name in workloads.REGISTRY:
    for _tool_name, _tool in workloads.get(_name).tools.items():
        _tool_command(_tool_name, _name, _tool)


def main() -> None:  # pragma: no cover - the console script
    sys.exit(app())


if __name__ == "__main__":
    main()
