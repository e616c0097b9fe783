"""One trial as it runs in a Ray worker: the workload's training function with a session backed
by the run's storage, then the record of its result.

Knows nothing of Ray: the runner binds the function each epoch is reported to (Tune's). It is apart
from runner.py so that a worker imports what a trial needs and not the driver's display, grid
reading and lock: every Ray actor Tune starts pays those imports, also those it starts for a trial
and drops when a reused actor takes the trial instead.
"""
from __future__ import annotations

import traceback
from datetime import datetime

import workloads
from orchestrator import records
from orchestrator.store import RunDir, StoredSession, environment, now
from workloads.base import RESULT_STATUSES


def provenance(run: RunDir, trial_id: str, progress: dict, grid_name: str, workload_name: str) -> dict:
    """What a trial's row says about its attempts, times, log and software, whatever its result."""
    started = progress.get("started_at")
    return {"attempts": progress.get("attempt"), "started_at": datetime.fromisoformat(started) if started else None,
            "finished_at": now(), "log": run.log_path(trial_id), "grid": grid_name, "workload": workload_name,
            **environment()}


def run_trial(tune_config, run_uri: str, workload_name: str, grid_name: str, report) -> None:
    """The trial `tune_config["trial"]` names; writes its own record when it has a result."""
    run, workload = RunDir(run_uri), workloads.get(workload_name)
    trial_id, config = tune_config["trial"]["trial_id"], tune_config["trial"]["config"]
    trial_config = workload.config(**config)
    session = StoredSession(run, trial_id, on_report=report)
    session.start()
    try:
        result = workload.train(trial_config, session)
        session.flush()  # the last epoch's files, before the record that says the trial is done
        if result.get("status", "completed") not in RESULT_STATUSES:
            raise ValueError(f"workload returned status {result.get('status')!r} "
                             f"(expected one of {', '.join(RESULT_STATUSES)})")
        # What the session saw, unless the workload says better.
        row = {"status": "completed", "params": workload.params(trial_config) if workload.params else None,
               "epochs_completed": len(session.epochs), "train_seconds": session.progress.get("train_seconds"),
               **result, **provenance(run, trial_id, session.progress, grid_name, workload.name)}
        records.record(run, records.trial_schema(workload.config), trial_id, config, row, session.epochs)
        session.log(f"finished: {row['status']}")
    except SystemExit:  # how Tune ends the training thread of a trial its scheduler stopped
        session.log("stopped early by the scheduler")
        raise
    except BaseException:
        session.log("failed:\n" + traceback.format_exc())
        raise
    finally:
        session.close()
