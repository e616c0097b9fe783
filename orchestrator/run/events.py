"""What the driver hears from Tune as trials run: it feeds the display, records the trials
whose workers write no record themselves (those that ran out of retries, and those a scheduler
stopped early), and ends attempts that hang (hangs.py). A trial whose checkpoint cannot be loaded
is failed by its worker, which raises nothing for Tune to retry (trial.py): its record says so.

    callbacks=[Events(grid, run, display, publisher, trials, hangs, tracking)]

It also feeds the run's trackers (tracking.py), here on the driver: workers need no access to them.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time

import ray
from ray import tune
from ray.exceptions import RayActorError
from ray.tune.progress_reporter import TrialProgressCallback

from orchestrator.errors import ResultsError, StorageError, last_line
from orchestrator.plan.grid import Grid
from orchestrator.run.cluster import waiting_note
from orchestrator.run.display import Display, describe
from orchestrator.run.hangs import Hangs
from orchestrator.run.scheduling import GridTrials
from orchestrator.run.trial import write_failed, write_stopped
from orchestrator.run.tracking import Tracking
from orchestrator.store.records import Publisher
from orchestrator.store.lines import Lines
from orchestrator.store.rundir import RunDir, now
from workloads.base import WorkloadError


# How long trials may all wait for resources, none running, before the run says so.
WAIT_NOTE_S = 60.0
# What stops the run, met by a trial's worker or a callback here: its storage cannot be written or
# reached, or a file of it cannot be read (the disk's EIO, an older ablate's damaged progress.json).
STORAGE_FAULTS = (StorageError, ResultsError)


class Events(tune.Callback):
    """Driver-side: feeds the display, and records trials that ran out of retries or that a
    scheduler stopped early (their workers never return a result)."""

    def __init__(self, grid: Grid, run: RunDir, display: Display, publisher: Publisher, trials: GridTrials,
                 hangs: Hangs | None = None, tracking: Tracking | None = None, failures: dict[str, int] | None = None,
                 start_again: bool = False, fail_fast: bool = False, notify=None):
        self.grid, self.run, self.display, self.publisher, self.trials = grid, run, display, publisher, trials
        # trial_id -> its failures so far in this `ablate run`, counted on here. A grid with halving
        # runs a Tune experiment per round, each with a fresh FailureConfig: a trial gets only the
        # retries its earlier rounds left, so that max_failures means what it does without halving.
        self.failures = {} if failures is None else failures
        self.retries = {i: max(0, grid.max_failures - n) for i, n in self.failures.items()}
        self.tracking = tracking
        self.cells = {t.trial_id: t.cell for t in grid.trials}
        self.hangs = hangs or Hangs(None, {})
        self.ended: dict[str, str] = {}  # trial_id -> why the driver ended its attempt
        self.began: set[str] = set()  # trials whose current attempt Tune started (on_trial_start)
        self.workers: set[str] = set()  # the Ray actors (ids) that began a trial: Tune may reuse them
        # Trials handed a worker that had died before they began, for the runner to start again
        # (`start_again`); else they are left unfinished, to the next `ablate run`.
        self.start_again, self.unstarted = start_again, []
        # A finished trial's line shows its first reported metric, or else the grid's metric.
        self.shown = (grid.objective.report[0].name, grid.objective.metric.name)
        # The first error of the run's storage a trial or the driver met (a full disk, an object store
        # that does not answer, a file it cannot read): the run stops (StopAll), no trial is recorded
        # for it, and the next `ablate run` goes on once the storage can be used.
        self.storage_error: str | None = None
        # Whether a trial was recorded failed, for --fail-fast: Tune's own refuses retries, and sees
        # no error of a trial whose worker recorded its failure.
        self.fail_fast, self.failed = fail_fast, False
        # Since when no trial runs while some wait for a node (None: not so), and whether it was said
        # to `notify` (None: not watched, on this machine).
        self.notify, self.waiting_since, self.wait_noted = notify, None, False

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment for Tuner.restore, which ablate does not
        # use (runs resume from the run's own record); the live display cannot be pickled.
        return {}

    def setup(self, **info):
        # Inside Tuner.fit, once Tune has set its Ctrl-C handler (it stops the trials and restores
        # the handler before it): the user hears at once that the run stops, not after Tune's wait.
        tune_handler = signal.getsignal(signal.SIGINT)
        if callable(tune_handler) and threading.current_thread() is threading.main_thread():
            def stopping(*args):
                self.display.stop_asked()
                tune_handler(*args)
            signal.signal(signal.SIGINT, stopping)

    @staticmethod
    def _id(trial) -> str:
        return trial.config["trial"]["trial_id"]

    @contextlib.contextmanager
    def _storage_kept(self):
        """The run's storage failing the driver's own writes and reads here (a failed trial's record,
        a log line, the trackers' file; a record or progress file it cannot read) stops the run as a
        trial's does (_storage_failed), with its one line: raised in a Tune callback, it would end
        the run with Tune's traceback."""
        try:
            yield
        except STORAGE_FAULTS as e:
            self.storage_error = self.storage_error or str(e)

    def on_trial_start(self, iteration, trials, trial, **info):  # each attempt
        if self._id(trial) in self.retries:  # Tune's per-trial count, which it checks at each failure
            trial.max_failures = self.retries[self._id(trial)]
        self.trials.started(trial.trial_id)
        self.began.add(self._id(trial))
        if (actor_id := getattr(trial.temporary_state.ray_actor, "_actor_id", None)) is not None:
            self.workers.add(actor_id.hex())
        self.hangs.started(self._id(trial))
        if self.tracking:
            self.tracking.attempt(self._id(trial))
        self.display.trial_started(self._id(trial), self.cells[self._id(trial)])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.hangs.reported(self._id(trial), result.get("epoch"))
        self.display.trial_result(self._id(trial), result)
        if self.tracking:
            with self._storage_kept():
                self.tracking.epoch(self._id(trial), result)

    def on_step_begin(self, iteration, trials, **info):
        self._note_waiting(trials)
        overdue = self.hangs.overdue()
        if not overdue:
            return
        by_id = {self._id(t): t for t in trials if t.status == t.RUNNING}
        for trial_id, reason in overdue:
            actor = by_id[trial_id].temporary_state.ray_actor if trial_id in by_id else None
            if actor is not None:
                # Its worker process, whatever its training thread is stuck in; a script's process
                # group dies with it (workloads/script/launch.py). Tune sees a failed attempt.
                self.ended[trial_id] = reason
                ray.kill(actor, no_restart=True)

    def _note_waiting(self, trials) -> None:
        """Say once, after WAIT_NOTE_S, that trials wait for resources no node gives while none runs."""
        pending = [t for t in trials if t.status == t.PENDING]
        if self.notify is None or not pending or any(t.status == t.RUNNING for t in trials):
            self.waiting_since = None
            return
        if self.waiting_since is None:
            self.waiting_since, self.wait_noted = time.monotonic(), False
        elif not self.wait_noted and time.monotonic() - self.waiting_since > WAIT_NOTE_S:
            self.wait_noted = True
            self.notify(waiting_note(pending[0].placement_group_factory.required_resources,
                                     time.monotonic() - self.waiting_since))

    def _why(self, trial) -> str | None:
        """Why the trial's attempt failed where its worker could not say so itself: the driver ended
        it (hangs.py), or its worker process died (_death). Written to its log in one line; None
        for any other failure, which its worker logged with its traceback."""
        trial_id = self._id(trial)
        reason = self.ended.pop(trial_id, None)
        lines = [f"failed: {reason}; its worker was ended"] if reason else []
        if reason is None and (reason := _death(trial)) is not None:
            said = "\n".join(f"    {line}" for line in _last_error(trial).splitlines()[1:] if line.strip())
            lines = [f"failed: {reason}; Ray said:\n{said}"]
        if lines:
            log = Lines(self.run, self.run.trial_file(trial_id, "trial.log"))
            try:
                log.add("".join(f"{now():%Y-%m-%d %H:%M:%S} {line}\n" for line in lines).encode())
            finally:
                log.close()
        return reason

    def _handed_dead(self, trial) -> bool:
        """Whether the trial failed before it began because Tune handed it a reused worker, one that
        began a trial before, that had died while idle: Tune then errors it whatever its retries (see
        _error). A new worker dying as it starts (the OOM killer, Ray's memory monitor as its imports
        take the node's memory) is an attempt like any other, retried and counted."""
        death = self._id(trial) not in self.began and _worker_died(trial)
        return bool(death) and death.actor_id in self.workers

    def on_trial_recover(self, iteration, trials, trial, **info):
        tried = not self._handed_dead(trial)
        self.began.discard(self._id(trial))
        why = None
        if tried:
            self.display.tried(self._id(trial))
            with self._storage_kept():
                why = self._why(trial) or _as_said(last_line(_error_text(trial)))
        self.hangs.ended(self._id(trial))
        if self._storage_failed(trial):
            return
        self.failures[self._id(trial)] = self.failures.get(self._id(trial), 0) + 1
        if tried:
            with self._storage_kept():  # a progress file it cannot read stops the run: no retry to show
                # A trial that failed before its first report (a script's startup) has no checkpoint.
                reported = self.run.progress(self._id(trial)).get("epoch")
                self.display.trial_retrying(self._id(trial), f"{why or 'after a failure'}, from "
                                                             f"{'its last checkpoint' if reported else 'its start'}")

    def _storage_failed(self, trial) -> bool:
        """Whether the trial failed because the run's storage could not be written or read (a
        StorageError, a ResultsError of a file its worker read): the storage's fault, not the
        trial's, so it neither counts as a failure nor uses up a retry."""
        kind, message = _said_by(last_line(_error_text(trial)))
        if kind is None or not issubclass(kind, STORAGE_FAULTS):
            return False
        self.storage_error = self.storage_error or message
        return True

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.began.discard(self._id(trial))
        self.hangs.ended(self._id(trial))
        with self._storage_kept():
            self._complete(trial)

    def stopping(self) -> bool:
        """Whether the run stops every trial: its storage failed, or --fail-fast and a trial failed."""
        return self.storage_error is not None or (self.fail_fast and self.failed)

    def _publish(self, trial_id: str) -> dict | None:
        """The trial's record published: its status and what its line shows; None if it has none."""
        return self.publisher.publish(trial_id, (*self.shown, "error", "status_reason"))

    def _complete(self, trial) -> None:
        trial_id = self._id(trial)
        row = self._publish(trial_id)
        if row is None and self.stopping():  # stopped with the run: it resumes at the next `ablate run`
            return
        until = trial.config["trial"].get("until")
        # At a rung, until its round ends (halving.py). A failed trial that --retry-failed runs
        # again keeps its record of the earlier failure until it has a result.
        if (row is None or row["status"] == "failed") and until is not None \
                and self.run.progress(trial_id).get("paused_at", 0) >= until:
            self.display.trial_paused(trial_id, until)
            return
        if row is None:  # its worker wrote no result: a scheduler (or a stopper) ended it before `train` returned
            self._record_stopped(trial_id, trial.config["trial"]["config"], trial.last_result or {})
            row = self._publish(trial_id)
        self._finished(trial_id, row)

    def _finished(self, trial_id: str, row: dict) -> None:
        self._track(trial_id)
        if row["status"] == "failed":
            self.failed = True
            detail = f"{row['error']} (log: {self.run.log_path(trial_id)})"
        else:
            name = next((name for name in self.shown if isinstance(row.get(name), (int, float))), None)
            detail = describe(self.cells[trial_id]) + ("" if name is None else f" -> {name} {row[name]:.4g}") \
                + (f"; {row['status_reason']}" if row.get("status_reason") else "")
        self.display.trial_finished(trial_id, row["status"], detail)

    def _record_stopped(self, trial_id: str, config: dict, last: dict) -> None:
        progress = progress_after(self.run, trial_id, last.get("training_iteration", 0))
        # Up to where its progress got, which its row says, not to the result Tune stopped it on: a
        # script's epochs are recorded as it prints them, while Tune decides.
        write_stopped(self.run, self.grid.workload, self.grid.name, trial_id, config, progress)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.hangs.ended(self._id(trial))
        with self._storage_kept():
            self._error(trial)
        self.began.discard(self._id(trial))

    def _error(self, trial) -> None:
        trial_id = self._id(trial)
        # A worker lost after writing its result (a node gone before the trial returned) is an
        # error to Tune, but the trial finished: a record that holds a result is never replaced.
        row = self._publish(trial_id)
        if row is not None and row["status"] != "failed":
            self.ended.pop(trial_id, None)
            self._finished(trial_id, row)
            return
        if self._storage_failed(trial):
            return
        if self._handed_dead(trial):
            # Tune hands a trial the worker a finished one left; one that died meanwhile (the OOM
            # killer, a user's kill) errors the trial whatever its max_failures (its death and its
            # failed reset both count). The trial did not run: it is started again.
            if self.start_again:
                self.unstarted.append(trial_id)
                self.display.trial_retrying(trial_id, "its worker died before it could start; it starts again")
            else:
                self.display.trial_unfinished(trial_id, "its worker died before it could start; "
                                                        "the next `ablate run` runs it")
            return
        self.display.tried(trial_id)  # also one whose every worker died as it started
        message = self._why(trial) or _as_said(last_line(_error_text(trial))) or "the trial failed"
        write_failed(self.run, self.grid.workload, self.grid.name, trial_id, trial.config["trial"]["config"], message,
                     self.run.progress(trial_id))
        self._finished(trial_id, self._publish(trial_id))

    def _track(self, trial_id: str) -> None:
        if self.tracking:
            self.tracking.recorded(trial_id)


def progress_after(run: RunDir, trial_id: str, reports: int, timeout_s: float = 30.0) -> dict:
    """A trial's progress once its worker has written the files of its `reports`-th report of
    this attempt: it writes them while Tune carries the result to the driver (session.py), so they
    can land a little after it. Waits `timeout_s` at most (a worker that died writes no more)."""
    deadline = time.monotonic() + timeout_s
    progress = run.progress(trial_id)
    while progress.get("reports", 0) < reports and time.monotonic() < deadline:
        time.sleep(0.01)
        progress = run.progress(trial_id)
    return progress


def _said_by(error: str) -> tuple[type | None, str]:
    """The class of a trial's error as its last line names it (`module.Class: message`) and its
    message; None where it names none this driver has imported."""
    kind, sep, message = error.partition(": ")
    module, _, name = kind.rpartition(".")
    cls = getattr(sys.modules.get(module), name, None) if sep else None
    return (cls if isinstance(cls, type) else None), message


def _as_said(error: str) -> str:
    """A trial's error as a user reads it: a WorkloadError's message alone (something to fix outside
    the code, `the command exited with code 3; ...`: its class adds nothing), any other error as
    Python names it (`RuntimeError: ...`)."""
    kind, message = _said_by(error)
    return message if kind is not None and issubclass(kind, WorkloadError) else error


def _error_text(trial) -> str:
    """The errors of a trial's attempts, as Tune wrote them on this machine just before calling
    back. Not `Trial.get_error`: it reads the copy in the run's storage, which Tune makes at its
    next experiment snapshot, so a trial that failed once had no error yet."""
    if not trial.error_file or not os.path.exists(trial.error_file):
        return ""
    with open(trial.error_file, encoding="utf-8", errors="replace") as f:
        return f.read()


def _last_error(trial) -> str:
    """The error of the trial's last attempt, under its `Failure # N (occurred at ...)` line."""
    return "Failure # " + _error_text(trial).rpartition("Failure # ")[2]


def _worker_died(trial) -> RayActorError | None:
    """The trial's last error where it is its Ray worker's death, as Tune pickled it on this machine;
    None where it is not. Not one of the worker's creation task: code that cannot be loaded there fails again."""
    if not trial.pickled_error_file or not os.path.exists(trial.pickled_error_file):
        return None
    try:
        with open(trial.pickled_error_file, "rb") as f:
            error = pickle.load(f)
    except Exception:  # a trial's own exception this driver cannot import: not a worker's death
        return None
    if not isinstance(error, RayActorError) or error.actor_init_failed:
        return None
    # Tune pickles only Ray's own errors: one of an earlier attempt stays where the last is another
    # (an OutOfMemoryError as its worker was created).
    return error if str(error).strip() in _last_error(trial) else None


def _death(trial) -> str | None:
    """The trial's last error in one line where it is its worker's death, which Ray says in a
    paragraph of possible causes; None where it is not. Ray knows an out-of-memory death only where
    its own memory monitor killed the worker; the kernel's OOM killer is a death like any other."""
    said = _last_error(trial)
    if "killed due to the node running low on memory" in said or "NODE_OUT_OF_MEMORY" in said:
        return "its worker process was killed for running out of memory (Ray's memory monitor)"
    if not _worker_died(trial):
        return None
    if "because its node has died" in said:
        return "its node died, and its worker process with it"
    return "its worker process died (the kernel's OOM killer, a kill or a crash: dmesg on its node says which)"


class StopAll(tune.Stopper):
    """Stops every trial once one met an error of the run's storage (Events.storage_error), or with
    --fail-fast once one was recorded failed (Events.failed)."""

    def __init__(self, events: Events):
        self.events = events

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.events.stopping()


class NoTuneProgress(TrialProgressCallback):
    """Stands in for Tune's own progress lines, which the display replaces: even with verbose=0 Tune
    prints `Trial X completed. Last result: ` for a trial that reported nothing (a script that prints
    only final values), unless a callback of this type is given."""

    def on_trial_result(self, *args, **kwargs):
        pass

    def on_trial_error(self, *args, **kwargs):
        pass

    def on_trial_complete(self, *args, **kwargs):
        pass
