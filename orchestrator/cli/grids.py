"""The commands on a grid file: `ablate plan` shows what it will run, `ablate run` runs it."""
from __future__ import annotations

import json
import shlex
from typing import Annotated, Optional

import typer

from orchestrator.cli.common import GridPath, Storage, command, console, err, note


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
    if unseeded := grid.unseeded():
        note(unseeded)


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

    from orchestrator.plan.execution import resources as checked_resources, tracking, trial_timeout as checked_timeout
    from orchestrator.plan.grid import load_grid
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
    if unseeded := grid.unseeded():
        note(unseeded)
    try:
        summary = run_grid(grid, run_dir, display, address=address, resources=resources,
                           retry_failed=retry_failed, fail_fast=fail_fast, data_dir=data_dir, wait=wait,
                           trial_timeout=timeout, resume_stopped=resume_stopped, notify=note)
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
