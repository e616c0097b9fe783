"""What `ablate run` shows while it runs: a live rich table on a terminal, one line per event
otherwise (logs, CI, `--quiet`). Fed by the driver's Tune callback (events.py); knows nothing of
Ray. The columns are the metrics the workload names (workloads/base.py, `Workload.metrics`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.store.records import STATUSES


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def trials(n: int) -> str:
    return f"{n} trial" if n == 1 else f"{n} trials"


def describe(cell: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in cell.items())


@dataclass
class Running:
    cell: dict[str, Any]
    planned: int | None  # epochs it will train, where known
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    retries: int = 0


class Display:
    """Counts and ETA of a run. Subclasses decide how to show them."""

    def __init__(self, console: Console, total: int, skipped: int, planned_epochs: dict[str, int | None],
                 metrics: tuple[str, ...] = ("val_error",), unit: str = "epoch"):
        self.console, self.total, self.skipped = console, total, skipped
        self.unit = unit  # what a trial counts its progress in: "step" for a script reporting every N steps
        self.planned_epochs = planned_epochs  # trial_id -> epochs it trains, where known, for the ETA
        self.metrics = metrics  # the workload's metrics to show for running trials
        self.running: dict[str, Running] = {}
        self.paused: dict[str, Running | None] = {}  # trials waiting at a rung of halving
        self.counts = {s: 0 for s in STATUSES}
        self.unfinished = 0  # ended without a result, for the next `ablate run`
        self.ran: set[str] = set()  # trials that began an attempt in this run
        known = list(planned_epochs.values())
        self.epochs_left = None if None in known else sum(known)
        self.epochs_trained = 0
        self.started = time.monotonic()

    def halved(self, at_most: float | None) -> None:
        """With halving, the epochs left are `at_most` (runner.py, as `ablate plan` counts them):
        not the full grid's, and a trial it stops at a rung is counted to there."""
        if at_most is not None and self.epochs_left is not None:
            self.epochs_left = at_most

    # -- events --------------------------------------------------------------------------------
    def trial_started(self, trial_id: str, cell: dict[str, Any]) -> None:
        self.ran.add(trial_id)
        # A retry goes on where its trial got to (its checkpoint), as a retry.
        self.running[trial_id] = self.paused.pop(trial_id, None) or self.running.get(trial_id) \
            or Running(cell, self.planned_epochs.get(trial_id))
        self.show(trial_id, "started", describe(cell))

    def trial_result(self, trial_id: str, metrics: dict[str, Any]) -> None:
        run = self.running.get(trial_id)
        at = metrics.get("step", metrics.get("epoch"))  # a script may report every N steps instead
        if run and at is not None:
            # A resumed trial's first epoch follows its checkpoint: it advances the trial by
            # several epochs, but only one was trained in this run.
            self.epochs_trained += at - run.epoch if run.epoch else 1
            if self.epochs_left is not None:
                self.epochs_left -= at - run.epoch
            run.epoch, run.metrics = at, metrics

    def tried(self, trial_id: str) -> None:
        """Ray gave the trial a worker in this run, though it may have died before the trial began."""
        self.ran.add(trial_id)

    def trial_retrying(self, trial_id: str, detail: str = "after a failure, from its last checkpoint") -> None:
        if trial_id in self.running:
            self.running[trial_id].retries += 1
        self.show(trial_id, "retrying", detail)

    def trial_paused(self, trial_id: str, at: int) -> None:
        """At a rung of halving, until every setting of its cell is there too."""
        self.paused[trial_id] = self.running.pop(trial_id, None)
        self.show(trial_id, "paused", f"at {at}, until its round of halving ends")

    def trial_finished(self, trial_id: str, status: str, detail: str, rung: int | None = None) -> None:
        """`rung`: where halving stopped it (maybe without running it again, where an earlier run paused it)."""
        self._ended(trial_id, counted=rung)
        self.counts[status] = self.counts.get(status, 0) + 1
        self.show(trial_id, status, detail)

    def trial_unfinished(self, trial_id: str, detail: str) -> None:
        """Ended without a result, for the next `ablate run` to run."""
        self._ended(trial_id)
        self.unfinished += 1
        self.show(trial_id, "unfinished", detail)

    def _ended(self, trial_id: str, counted: int | None = None) -> None:
        # One that never started in this run (its worker died first, or it paused in an earlier one):
        # none of its epochs come. `counted`: where the epochs left count it to, if not its end.
        run = self.running.pop(trial_id, None) or self.paused.pop(trial_id, None) \
            or Running({}, self.planned_epochs.get(trial_id))
        until = run.planned if counted is None else counted
        if until and self.epochs_left is not None:
            self.epochs_left -= max(0, until - run.epoch)  # stopped early: those epochs never come

    def stop_asked(self) -> None:
        """The run was told to stop (Ctrl-C, SIGTERM): said at once, as Tune then gives the running
        trials up to 10 s to end before it kills their workers (about 15 s in all), and the next run
        goes on with them."""
        self.console.print("stopping: running trials end within about 15 s, and the next `ablate run` goes on "
                           "with what is left", soft_wrap=True, markup=False, highlight=False)

    # -- numbers -------------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def eta(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if self.epochs_left is not None and self.epochs_trained:
            return elapsed * max(0, self.epochs_left) / self.epochs_trained
        if self.done:
            return elapsed * (self.total - self.done - self.unfinished) / self.done
        return None

    def counts_line(self) -> str:
        pending = self.total - self.done - self.unfinished - len(self.running) - len(self.paused)
        parts = [f"{self.done}/{self.total} done", f"{len(self.running)} running",
                 *([f"{len(self.paused)} paused at a rung"] if self.paused else []), f"{pending} pending"]
        parts += [f"{n} {s}" for s, n in self.counts.items() if n and s != "completed"]
        if self.unfinished:
            parts.append(f"{self.unfinished} unfinished")
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        return ", ".join(parts) + f" | elapsed {duration(time.monotonic() - self.started)}, ETA {duration(self.eta())}"

    # -- display -------------------------------------------------------------------------------
    def show(self, trial_id: str, event: str, detail: str) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class PlainDisplay(Display):
    """One line per event, for logs, pipes and `--quiet`; and as trials report, a line of progress
    at most every `progress_every_s`: without it a log says nothing for as long as a trial trains
    (hours, on a paper's grid)."""

    progress_every_s = 300.0
    shown_running = 4  # trials whose epoch a progress line names

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress_at = time.monotonic()

    def trial_result(self, trial_id, metrics):
        super().trial_result(trial_id, metrics)
        if time.monotonic() - self.progress_at >= self.progress_every_s:
            self.progress_at = time.monotonic()
            running = [f"{i} {run.epoch}/{run.planned or '?'}" for i, run in self.running.items()]
            more = len(running) - self.shown_running
            at = ", ".join(running[:self.shown_running]) + (f", {more} more" if more > 0 else "")
            print(f"[{self.done}/{self.total}] progress: {self.counts_line()} | at {at}", file=self.console.file,
                  flush=True)

    def show(self, trial_id, event, detail):
        # Plain text, so written as is: rich's rendering of a line is a large part of what a
        # busy driver does per short trial.
        print(f"[{self.done}/{self.total}] {trial_id} {event}: {detail}", file=self.console.file, flush=True)


class LiveDisplay(Display):
    """A table of running trials under a line of counts, redrawn in place."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.live = Live(console=self.console, get_renderable=self.render, refresh_per_second=2,
                         transient=True)

    def __enter__(self):
        self.live.start()
        return self

    def __exit__(self, *exc):
        self.live.stop()
        return False

    def show(self, trial_id, event, detail):
        if event != "started":  # finished trials scroll above the live table
            style = {"completed": "green", "failed": "bold red", "retrying": "yellow"}.get(event, "magenta")
            self.console.print(Text.assemble((f"{event:>11} ", style), f"{trial_id} {detail}"), soft_wrap=True)

    def render(self):
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("trial", "cell", self.unit, *self.metrics):
            table.add_column(column, justify="left" if column in ("trial", "cell") else "right")
        for trial_id, run in list(self.running.items())[:20]:
            table.add_row(trial_id, describe(run.cell) + (f" (retry {run.retries})" if run.retries else ""),
                          f"{run.epoch}/{run.planned or '?'}", *(number(run.metrics.get(m)) for m in self.metrics))
        return Group(Text(self.counts_line(), style="bold"), table)


def number(value) -> str:
    """A metric for a narrow column: 4 decimals for errors and losses, whole numbers for rates."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-" if value is None else str(value)
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4f}"
