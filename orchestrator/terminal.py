"""What the `plan`, `status` and `models` commands print on a terminal (the cli package calls these; the
result tables of `summarize` and `compare` are results/formats.py's)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.plan.estimate import Estimate, estimate
from orchestrator.plan.grid import Grid
from orchestrator.plan.halving import planned
from orchestrator.results.status import Status
from orchestrator.run.display import duration, number, trials
from orchestrator.store.rundir import now


def si(value: float | None, unit: str) -> str:
    if value is None:
        return "unknown"
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def show_plan(console: Console, grid: Grid) -> None:
    """The grid's axes, seeds, fixed values, each trial's command line (a script's), compute, time and resources."""
    invocation = grid.workload.invocation
    cost = grid.cost()
    # Above the table, not its title: a title wraps to the width of a narrow table.
    owner = "its command" if invocation else f"workload '{grid.workload.name}'"
    console.print(f"{grid.name}: {trials(len(grid.trials))} of {owner}",
                  style="italic", markup=False, soft_wrap=True)
    table = Table(show_lines=False)
    table.add_column("axis", style="bold")
    table.add_column("values")
    table.add_column("count", justify="right")
    for axis in grid.axes:
        # Where the rules leave some values fewer trials than others (or add one), each says how many.
        values = grid.axis_values(axis)
        even = len({n for _, n in values}) == 1 and len(values) == len(grid.axes[axis])
        shown = ", ".join(str(v) if even else f"{v} ({trials(n)})" for v, n in values)
        table.add_row(axis, Text(shown), str(len(values)))  # Text: a value is not markup
    seeds = sorted({t.config["seed"] for t in grid.trials})
    table.add_row("seed", ", ".join(map(str, seeds)), str(len(seeds)))
    console.print(table)
    for word, rules in (("exclude", grid.exclude), ("include", grid.include)):
        for rule in rules:
            said = ", ".join(f"{k}={'/'.join(map(str, v))}" for k, v in rule.items())
            console.print(f"{word}: {said}", markup=False, soft_wrap=True)
    if grid.description:
        console.print(grid.description, markup=False)
    if grid.fixed:
        console.print("fixed: " + ", ".join(f"{k}={v}" for k, v in grid.fixed.items()), soft_wrap=True, markup=False)
    if invocation:
        console.print("commands:")
        for t in grid.trials:
            console.print(f"  {t.trial_id}  {invocation(grid.workload.config(**t.config))}", markup=False, soft_wrap=True)
    r = grid.resources
    console.print(f"trials: {len(grid.trials)}" + ("" if grid.workload.cost is None else
                  f"   training images: {si(cost['images'], 'images')}   compute: {si(cost['flops'], 'FLOP')}"))
    for line in halving_lines(grid):
        console.print(line, markup=False, soft_wrap=True)
    for line in time_lines(grid):
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"per trial: {r.cpus:g} CPU, {r.gpus:g} GPU"
                  + (f", at most {r.max_concurrent} at once" if r.max_concurrent else "")
                  + f"; retries: {grid.max_failures}")


def halving_lines(grid: Grid) -> list[str]:
    """What halving saves: epochs (or steps) and compute with it, against the full grid."""
    h = grid.halving
    if h is None:
        return []
    epochs = planned(grid.trials, h, grid.planned_epochs)
    if epochs is None:
        return [f"{h.describe()}; {h.unit}s saved: not known (the workload does not say how many its trials train)"]
    # A script that reports every N steps pauses at its first report at or past a rung, which
    # plan cannot know: what it trains past the rung is said, not counted.
    past = " and what a script trains from a rung to its next report" if h.unit == "step" else ""
    lines = [f"{h.describe()}: at most {epochs[0]:,.0f} of {epochs[1]:,.0f} {h.unit}s ({epochs[0] / epochs[1]:.0%}){past}; "
             "compute and time below are of the full grid"]
    if grid.workload.cost is not None:
        workload = grid.workload

        def flops_per_epoch(trial):
            config = workload.config(**trial.config)
            return (workload.cost(config).get("flops") or 0.0) / max(1, grid.planned_epochs(trial))

        flops = planned(grid.trials, h, grid.planned_epochs, flops_per_epoch)
        if flops[1]:
            lines.append(f"compute with halving: at most {si(flops[0], 'FLOP')} of {si(flops[1], 'FLOP')}")
    return lines


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.3g}"


def _estimate(e: Estimate) -> str:
    unit, per = ("GPU-hours", "per GPU") if e.kind == "gpu" else ("hours", "at once")
    covered = (f" for {e.trials} of {e.total} trials (the others have no rate measured there)"
               if e.trials < e.total else "")
    (m, *more) = e.measured
    rate = f"{m['images_per_second']:,.0f} images/s" if not more else f"the rates of {len(e.measured)} networks"
    shared = {x["trials"] for x in e.measured}
    trials = f"{', '.join(map(str, sorted(shared)))} trial{'s' if max(shared) > 1 else ''} {per}"
    if shared != {e.sharing}:
        trials += f" (this grid: {e.sharing})"
    when = "; ".join(dict.fromkeys(f"{x['date']} by {x['where']}" for x in e.measured))
    return f"{_hours(e.hours)} {unit}{covered}, from {rate} with {trials}, measured {when}"


def time_lines(grid: Grid) -> list[str]:
    """How long the grid trains where a training rate is measured, else that it has FLOPs only."""
    estimates = estimate(grid)
    if isinstance(estimates, str):
        return [f"time: not estimated{', FLOPs only' if grid.workload.cost else ''}: {estimates}"]
    if estimates[0].kind == "cpu":
        return [f"time on this machine ({estimates[0].device}): {_estimate(estimates[0])}"]
    if len(estimates) == 1:
        return [f"time on {estimates[0].device}: {_estimate(estimates[0])}"]
    return ([f"time: rates are measured on {len(estimates)} GPUs; the trials run on whichever the cluster has:"]
            + [f"  on {e.device}: {_estimate(e)}" for e in estimates])


def show_status(console: Console, where: str, s: Status) -> None:
    """Counts, compute used, ETA, and a table of the trials that run or stopped."""
    total = f" of {s.planned}" if s.planned else ""
    console.print(f"{where}: {s.finished} finished{total}: " + ", ".join(f"{n} {k}" for k, n in s.counts.items()),
                  soft_wrap=True)
    if s.others:
        console.print(f"and {s.others} finished trials of an earlier version of the grid, not counted "
                      "(summarize --all-trials shows them)")
    console.print(f"compute used: {s.used_hours:.2f} {s.unit}-hours; ETA: {duration(s.eta_seconds)}")
    if s.active:
        out = Table(box=None, header_style="bold")
        for column in ("trial", "state", "step" if any("step" in a.metrics for a in s.active) else "epoch",
                       s.metric, "updated"):
            out.add_column(column)
        for a in s.active:
            state = "paused" if a.paused else "interrupted" if a.interrupted else "running"
            out.add_row(a.trial_id, state, f"{a.epoch}/{a.epochs or '?'}",
                        number(a.metrics.get(s.metric)), f"{duration((now() - a.updated).total_seconds())} ago")
        console.print(out)
    if s.counts.get("interrupted") and s.resumes:
        console.print("interrupted trials resume from their checkpoints at the next `ablate run`")
    elif s.counts.get("interrupted"):  # a script given no `command.resume`
        console.print("interrupted trials run their command again at the next `ablate run`: from its start, "
                      "unless the script loads its own checkpoint from its trial directory")
    if s.counts.get("paused"):
        console.print("paused trials wait at a rung of halving for the other settings of their cell")


def show_models(console: Console, workload_name: str, rows: list[dict]) -> None:
    table = Table(title=f"Models of workload '{workload_name}'", title_justify="left")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        table.add_column(column, justify="right" if isinstance(rows[0].get(column), int) else "left")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in (row.get(c, "") for c in columns)))
    console.print(table)
