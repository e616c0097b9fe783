"""`ablate status`: where a run stands, from what is on disk, while it runs or after.

Finished trials come from trials.parquet; running ones from their progress files, while a driver
holds the run (run/lock.py) and their progress moved lately (else they are interrupted: their run
was stopped); pending ones are the grid's trials with neither.
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from orchestrator.plan import halving
from orchestrator.plan.grid import read_saved_grid, saved_objective
from orchestrator.plan.script_workload import resumes
from orchestrator.store.records import STATUSES, statuses, trained
from orchestrator.store.rundir import OLD_PROGRESS, PROGRESS, RunDir, now, position

# A trial counts as running while its progress moved within max(this, 3 epochs).
STALE_AFTER = timedelta(minutes=10)


@dataclass
class Active:
    trial_id: str
    epoch: int
    epochs: int | None
    metrics: dict[str, Any]
    train_seconds: float  # wall time of its epochs so far, every attempt
    updated: datetime
    interrupted: bool  # no driver holds the run, or no progress for a long while: its run was stopped
    paused: bool = False  # at a rung of halving, until its round ends


@dataclass
class Status:
    counts: dict[str, int]  # finished trials by status (stopped: by halving or a scheduler), plus running /
    # paused (at a rung of halving) / interrupted (no driver, or no progress for a long while) / pending
    active: list[Active] = field(default_factory=list)
    planned: int | None = None
    used_hours: float = 0.0
    unit: str = "CPU"
    eta_seconds: float | None = None
    finished: int = 0  # trials of the grid as last run with a result
    others: int = 0  # finished trials of the run directory that are not the grid's (it was edited since)
    metric: str = "val_error"  # the grid's metric, shown for running trials
    untrusted: str | None = None  # the workload grid.yaml names, where it was not imported (plan/grid.py)
    # Whether interrupted trials resume from a checkpoint: a Python workload's own, or a script's told
    # to (`command.resume`); another script runs its command again.
    resumes: bool = True


def progress_files(run: RunDir, finished) -> dict[str, dict]:
    """trial_id -> latest progress of every trial not in `finished` that has some."""
    selector = pafs.FileSelector(run.child("trials"), allow_not_found=True, recursive=True)
    ids = {info.path.rsplit("/", 2)[-2] for info in run.fs.get_file_info(selector)
           if info.base_name in (PROGRESS, OLD_PROGRESS)}
    return {trial_id: progress for trial_id in sorted(ids.difference(finished))
            if (progress := run.progress(trial_id))}


def read_status(run: RunDir, trials: pa.Table | None, trust_workload: bool = False,
                driven: bool | None = None, notify=None) -> Status:
    """Where the run stands; `trials` holds every finished trial's row (records.read_trials).
    `driven`: whether a driver holds the run (run/lock.py); False: none of its trials is running,
    however recent its progress (a driver stopped a minute ago); None: not known, judged by age.
    `notify`: told of a grid.yaml that does not load (read_saved_grid)."""
    saved = read_saved_grid(run, trust_workload, notify)
    grid = saved.grid
    planned = {t.trial_id: t for t in grid.trials} if grid else {}
    recorded = finished = statuses(trials)
    others = 0
    if grid:  # the grid as last run: an edited grid's older trials are not part of it
        others = sum(1 for t in finished if t not in planned)
        finished = {t: s for t, s in finished.items() if t in planned}
    # In the order of STATUSES, not of trial ids (hashes): the line reads the same from run to run.
    tally = Counter(finished.values())
    order = {s: i for i, s in enumerate(STATUSES)}
    counts: dict[str, int] = {s: tally[s] for s in sorted(tally, key=lambda s: order.get(s, len(order)))}

    # Only unfinished trials' progress: finished ones keep their progress files, those of an
    # edited grid's earlier version too, and are neither running nor counted twice. The earlier
    # version's unfinished trials are no longer to run: neither running nor to resume.
    progress_by_trial = progress_files(run, recorded)
    if grid:
        progress_by_trial = {i: p for i, p in progress_by_trial.items() if i in planned}
    # A report's seconds are the trial's average, not its last report's: a script's reports can
    # come in a burst (a training line and a validation line at an epoch's end), the last timed at ~0 s.
    report_seconds = [p["train_seconds"] / p["epoch"] for p in progress_by_trial.values()
                      if p.get("train_seconds") and p.get("epoch")]
    typical = statistics.median(report_seconds) if report_seconds else 0.0
    stale = max(STALE_AFTER, timedelta(seconds=3 * typical))
    active = []
    for trial_id, progress in sorted(progress_by_trial.items()):
        if "updated_at" not in progress:
            continue
        updated = datetime.fromisoformat(progress["updated_at"])
        epochs = grid.planned_epochs(planned[trial_id]) if trial_id in planned else None
        metrics = progress.get("metrics", {})
        active.append(Active(trial_id, position(progress), epochs, metrics,
                             progress.get("train_seconds", 0.0), updated,
                             interrupted=driven is False or now() - updated > stale,
                             paused="paused_at" in progress))
    running = [a for a in active if not a.interrupted and not a.paused]
    counts["running"] = len(running)
    counts["paused"] = sum(1 for a in active if a.paused)
    counts["interrupted"] = len(active) - len(running) - counts["paused"]
    if planned:
        started = {a.trial_id for a in active}
        counts["pending"] = sum(1 for t in planned if t not in finished and t not in started)

    gpus = grid.resources.gpus if grid else 0
    seconds = 0.0
    if trials is not None:
        seconds = sum(s for t, s in zip(trials["trial_id"].to_pylist(), trials["train_seconds"].to_pylist())
                      if t in finished and s is not None and not math.isnan(s))
    seconds += sum(a.train_seconds for a in active)
    # The ETA counts epochs, or steps for a script that reports steps (every 100 steps, say).
    unit_seconds = [p["train_seconds"] / position(p) for p in progress_by_trial.values()
                    if p.get("train_seconds") and position(p)]
    per_unit = statistics.median(unit_seconds) if unit_seconds else 0.0
    result = Status({k: v for k, v in counts.items() if v}, active, len(planned) or None,
                    used_hours=seconds * (gpus or (grid.resources.cpus if grid else 1)) / 3600,
                    unit="GPU" if gpus else "CPU", finished=len(finished), others=others,
                    metric=saved_objective(run, saved).metric.name, untrusted=saved.untrusted,
                    resumes=not grid or resumes(grid.workload_ref))
    if planned and per_unit and running:
        if grid.halving and (left := halving.planned_left(grid.trials, grid.halving, grid.planned_epochs,
                                                          trained(trials), finished)) is not None:
            epochs_left = left  # at most what halving trains, less what the finished trained
        else:
            epochs_left = sum(grid.planned_epochs(t) or 0 for i, t in planned.items() if i not in finished)
        epochs_left -= sum(a.epoch for a in active)
        result.eta_seconds = max(0, epochs_left) * per_unit / len(running)
    return result


