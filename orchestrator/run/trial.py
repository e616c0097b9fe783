"""One trial as it runs in a Ray worker: the workload's training function with a session backed
by the run's storage, then the record of its result.

    run_trial(tune_config, run_uri=..., workload_ref=..., grid_name=..., report=tune.report)

Knows nothing of Ray: the runner binds the function each epoch is reported to (Tune's). It is apart
from the driver's modules so that a worker imports what a trial needs and not the display, grid
reading and lock: every Ray actor Tune starts pays those imports, also those it starts for a trial
and drops when a reused actor takes the trial instead.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import socket
import traceback
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import workloads
from orchestrator.errors import CheckpointError, StorageError, UnloadableCheckpoint
from orchestrator.plan.objective import INTERFACE, Objective
from orchestrator.run.session import Paused, StoredSession, last_values
from orchestrator.store import records
from orchestrator.store.columns import RESERVED, RETURNED, kept
from orchestrator.store.rundir import RunDir, now, up_to
from workloads.base import RESULT_STATUSES, FinalFailure, Workload, WorkloadError


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)  # each package metadata lookup reads files
def software() -> dict[str, str | None]:
    """This machine and the versions a trial ran with."""
    return {"host": socket.gethostname(), "ablate_version": _version("ablate"),
            "torch_version": _version("torch"), "ray_version": _version("ray")}


def workload_of(ref: str) -> Workload:
    """The workload a grid names (Grid.workload_ref): registered, module:object, or a grid's
    `command:` section as plan/script_workload.py hands it over."""
    if ref.startswith("command:{"):
        from orchestrator.plan.script_workload import from_ref

        return from_ref(ref)
    return workloads.get(ref)


def write_result(run: RunDir, workload: Workload, grid_name: str, trial_id: str, config: dict[str, Any],
                 result: dict[str, Any], progress: dict[str, Any], epochs: list[dict] | None = None) -> None:
    """Write a finished trial's record: `result` and what every row says about the trial's
    attempts, times, log and software, whatever its result."""
    started = progress.get("started_at")
    row = {**result, "attempts": progress.get("attempt"),
           "started_at": datetime.fromisoformat(started) if started else None, "finished_at": now(),
           "log": run.log_path(trial_id), "grid": grid_name, "workload": workload.name, **software()}
    schema = records.trial_schema(workload.config, tuple(workload.results.items()))
    records.write_record(run, schema, trial_id, config, row, epochs)


def write_stopped(run: RunDir, workload: Workload, grid_name: str, trial_id: str, config: dict[str, Any],
                  progress: dict[str, Any], rung: int | None = None, reason: str | None = None) -> None:
    """A truthful row for a trial stopped early (by a scheduler, or by halving at a rung): where
    it got to, what it reported there, and its epochs. Stopped at a rung, it got to its first report
    at or past the rung, the one it was ranked by: a script may have printed past it before it was
    killed there (its log has those reports). Stopped is final: the next `ablate run` does not run it again."""
    try:
        epochs = run.reported(trial_id)
        if epochs is None:  # an older ablate's trial: its epochs up to its checkpoint, and those after it
            saved = run.checkpoint(trial_id) or {"epochs": []}
            epochs = [*saved["epochs"], *progress.get("epochs_after_checkpoint", [])]
    except CheckpointError:  # one that would run code to load, or damaged: the row goes without its epochs
        epochs = None
    if epochs:  # as a finished trial's row: the last value of each metric
        if rung is not None:
            epochs, _ = up_to(epochs, rung)
        last, where = last_values({}, epochs), {"epochs_completed": len(epochs), **_steps(epochs[-1])}
    else:  # where they cannot be read, its progress (of an older ablate: its last report)
        last = last_values({}, [progress.get("last") or progress.get("metrics", {})])
        where = {"epochs_completed": progress.get("epoch"), **_steps(progress.get("metrics", {}))}
    row = {**last, "status": records.STOPPED, "train_seconds": progress.get("train_seconds"),
           "status_reason": reason, **where}
    write_result(run, workload, grid_name, trial_id, config, row, progress, epochs)


def write_failed(run: RunDir, workload: Workload, grid_name: str, trial_id: str, config: dict[str, Any],
                 error: str, progress: dict[str, Any]) -> None:
    """The row of a failed trial: its error and where it got to. The driver writes it for a trial that
    ran out of retries; the trial's worker, for one whose checkpoint cannot be loaded (run_trial)."""
    row = {"status": "failed", "error": error, "epochs_completed": progress.get("epoch"),
           **_steps(progress.get("metrics", {}))}
    write_result(run, workload, grid_name, trial_id, config, row, progress)


def _steps(last: dict[str, Any]) -> dict[str, int]:
    """A row's `steps_completed`, from a trial's last report, where it reports every N steps."""
    return {"steps_completed": last["step"]} if "step" in last else {}


def run_trial(tune_config, run_uri: str, workload_ref: str, grid_name: str, report,
              objective: Objective = INTERFACE) -> None:
    """The trial `tune_config["trial"]` names; writes its own record when it has a result, judged
    by its grid's `objective`. A completed trial must have reported or returned each metric the
    grid declares, if only as None: one it never named is a mistake, not a result. One whose
    metric is nan or inf diverged. A trial given `until` pauses there, without a record, for its
    cell's decision (run/halving.py), which judges it by its reports up to the rung. One whose checkpoint cannot be loaded,
    or that completed without a metric of its grid, is recorded `failed` by the attempt that met
    it, which ends without raising: every retry would fail the same way."""
    run, workload = RunDir(run_uri), workload_of(workload_ref)
    trial_id, config = tune_config["trial"]["trial_id"], tune_config["trial"]["config"]
    trial_config = workload.config(**config)
    # A Python workload's metrics named like ablate's columns (its parameters too) are kept apart,
    # as a script's are (plan/script.py); but for those its `train` may return as the row's own.
    own = {} if workload.invocation else kept(f.name for f in dataclasses.fields(workload.config))
    session = StoredSession(run, trial_id, on_report=report, until=tune_config["trial"].get("until"), kept=own)
    session.start()
    try:
        result = workload.train(trial_config, session)
        result = {**session.own({k: v for k, v in result.items() if k not in RETURNED}),
                  **{k: v for k, v in result.items() if k in RETURNED}}
        session.flush()  # the last epoch's files, before the record that says the trial is done
        if result.get("status", "completed") not in RESULT_STATUSES:
            raise ValueError(f"workload returned status {result.get('status')!r} "
                             f"(expected one of {', '.join(RESULT_STATUSES)})")
        # What the session saw, unless the workload says better: the last value of each metric.
        row = {**{k: v for epoch in session.epochs for k, v in epoch.items() if k not in ("epoch", "step")},
               "status": "completed", "params": workload.params(trial_config) if workload.params else None,
               "epochs_completed": len(session.epochs), "train_seconds": session.progress.get("train_seconds"),
               **result, **_steps(session.epochs[-1] if session.epochs else {})}
        required = objective.names if objective.declared else ()
        if row["status"] == "completed" and (missing := [m for m in required if m not in row]):
            # A name the grid got wrong (`report: [test_acc]` for test_accuracy), said in one line:
            # each retry would train the trial again to end the same way.
            error = (f"no value of {', '.join(missing)} in its output "
                     f"(it gave: {', '.join(sorted(set(row) - RESERVED)) or 'nothing'})")
            write_failed(run, workload, grid_name, trial_id, config, error, session.progress)
            session.log(f"failed: {error} (not retried: each retry would end the same way)")
            return
        if row["status"] == "completed" and (blown := [m for m in objective.names if _not_finite(row.get(m))]):
            # A script knows nothing of `status`: its loss printed as nan or inf is a diverged
            # trial, as All-CNN's is, not a completed one that the tables show as "- (n=0)".
            row = {**row, "status": "diverged", "status_reason": ", ".join(f"{m} is {row[m]}" for m in blown)}
        write_result(run, workload, grid_name, trial_id, config, row, session.progress, session.epochs)
        session.log(f"finished: {row['status']}")
    except UnloadableCheckpoint as e:
        # Each retry, a fresh worker, would read the same file and fail the same way: the trial
        # fails now, and ends without an error for Tune to retry (the driver shows its record).
        write_failed(run, workload, grid_name, trial_id, config, str(e), session.progress)
        session.log(f"failed: {e} (not retried: each retry would read the same file)")
    except Paused as paused:
        session.log(f"paused after {paused.args[0]} until its round of halving ends")
    except SystemExit:  # how Tune ends the training thread of a trial it stops, whatever the reason
        # A scheduler's decision, or the run stopping (Ctrl-C, --fail-fast): the worker cannot tell which.
        _log_if_possible(session, "stopped by the driver (a scheduler's decision, or the run stopping: "
                                  "Ctrl-C, --fail-fast)")
        raise
    except FinalFailure as e:  # a script's metrics file missing when it ended well
        write_failed(run, workload, grid_name, trial_id, config, str(e), session.progress)
        session.log(f"failed: {e} (not retried: each retry would end the same way)")
    except WorkloadError as e:  # what the user can fix, said in one line (a script's exit and last output)
        _log_if_possible(session, f"failed: {e}")
        raise
    except BaseException:
        _log_if_possible(session, "failed:\n" + traceback.format_exc())
        raise
    finally:
        session.close()


def _not_finite(value) -> bool:
    return isinstance(value, numbers.Real) and not math.isfinite(value)


def _log_if_possible(session: StoredSession, text: str) -> None:
    """A trial's last words; a storage that cannot take them must not hide why the trial ended."""
    try:
        session.log(text)
    except StorageError:
        pass
