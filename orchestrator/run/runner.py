"""`ablate run`: a grid's unfinished trials as one Ray Tune experiment.

    summary = run_grid(load_grid("grids/smoke.yaml"), RunDir.for_grid("./runs", "smoke"), display_factory)

Ray Tune schedules, places and retries trials; the run's own record in storage says what is
done (store/records.py). Every `ablate run` is a new Tune experiment over the trials that have
no result yet, so a grid that grew, a driver that was killed, or `--retry-failed` all come down to the
same thing: run what is missing. Ray's own `Tuner.restore` replays a fixed spec and can lose
state after SIGKILL (../shared/RAY_NOTES.md); trials here find their checkpoints by trial id.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass

import ray
from ray import tune

from orchestrator.errors import RunError, StorageError
from orchestrator.plan.execution import Resources
from orchestrator.plan.grid import GRID_FILE, Grid
from orchestrator.plan.halving import planned_left
from orchestrator.run.cluster import (check_resources, check_storage_shared, connect, head_watched, ray_log_path,
                                      ray_messages_to, sigterm_as_ctrl_c)
from orchestrator.run.events import Events, NoTuneProgress, StopAll
from orchestrator.run.halving import Halver
from orchestrator.run.hangs import Hangs
from orchestrator.run.lock import DriverLock
from orchestrator.run.out_of_memory import out_of_memory_as_death
from orchestrator.run.processes import alive
from orchestrator.run.scheduling import GridTrials, slots, tune_config
from orchestrator.run.settings import environment, tune_environment
from orchestrator.run.tracking import Tracking, environment_for_tracking
from orchestrator.run.trial import run_trial
from orchestrator.store import records
from orchestrator.store.columns import workload_columns
from orchestrator.store.records import STATUSES, STOPPED, Publisher
from orchestrator.store.rundir import RunDir, join_uri
from workloads.base import WorkloadError


# What a driver says when a SIGTERM to the whole job ended the local Ray with it (cluster.py).
RAY_LOST = ("stopped: the signal ended this machine's Ray too, so its trials could not be ended in order; "
            "finished trials are saved in {}; trials unfinished: run the same command again to resume them")
# What it says when the head of the cluster it joined stops answering (cluster.py).
HEAD_LOST = ("the Ray cluster at {} does not answer (its head is gone?); Ray ends this driver if it is not back within "
             "a minute: finished trials are saved in {}; run the same command again once the cluster is back")


@dataclass
class RunSummary:
    run: RunDir
    counts: dict[str, int]  # status -> trials, over the whole grid
    ran: int  # trials this invocation started
    skipped: int  # trials that already had a result
    # Trials halving stopped at the rung where an earlier run paused them (a driver killed or
    # interrupted there): neither run now nor done before.
    stopped_unrun: int
    unfinished: int  # trials without a row after this invocation (interrupted, or not retried)
    failed_earlier: int  # failed trials left alone because --retry-failed was not given
    ray_log: str | None = None  # where Ray's own messages went, when Ray was used

    @property
    def exit_code(self) -> int:
        if self.counts.get("failed") or self.unfinished:
            return 1
        return 0


def run_grid(grid: Grid, run: RunDir, display_factory, *, address: str | None = None,
             resources: Resources | None = None, retry_failed: bool = False, fail_fast: bool = False,
             data_dir: str | None = None, scheduler=None, wait: bool = False, trial_timeout: float | None = None,
             resume_stopped: bool = False, notify=lambda message: None) -> RunSummary:
    """Run every trial of `grid` that has no result in `run` yet, as the run's only driver.

    The run is taken (lock.py) before anything is read or written, even when every trial turns out
    to be done: what is done is only known once no other driver is adding to it. A live driver of
    the run is a RunLocked error, or with `wait` waited for.

    `display_factory(total, skipped, planned_epochs, metrics)` makes the display. `scheduler`, a
    Tune TrialScheduler, may stop trials early: they are recorded as `stopped` with what they
    reached, and not run again. Its own end (ASHA's `max_t`) must lie beyond a trial's last
    epoch, or it stops every trial before `train` returns its final result.

    `trial_timeout` (default: the grid's) ends an attempt that runs longer, as a failure; so is
    one that stops reporting for far longer than its epochs take (hangs.py).

    A grid with `halving` runs in rounds, each up to the next rung of every cell (run/halving.py);
    `resume_stopped` trains the trials it stopped to their end instead.
    """
    # SIGTERM stops the run as Ctrl-C does from the start (waiting for the run, fetching data);
    # ray.init sets its own handler, so the runner sets this one again once Ray is up.
    with _sigterm_as_ctrl_c(run, notify), DriverLock(run).acquire(wait=wait, notify=notify) as lock:
        return _run_unfinished(grid, run, display_factory, address=address, resources=resources,
                               retry_failed=retry_failed, fail_fast=fail_fast, data_dir=data_dir,
                               scheduler=scheduler, notify=notify, lock=lock, resume_stopped=resume_stopped,
                               trial_timeout=grid.trial_timeout if trial_timeout is None else trial_timeout)


def _run_unfinished(grid, run, display_factory, *, address, resources, retry_failed, fail_fast, data_dir,
                    scheduler, notify, lock, trial_timeout, resume_stopped) -> RunSummary:
    resources = resources or grid.resources
    publisher = Publisher(run, notify)
    publisher.catch_up()  # what a killed driver left unpublished: now every record is in publisher.trials
    finished = records.statuses(publisher.trials)
    todo = [t for t in grid.trials if finished.get(t.trial_id) not in STATUSES
            or (retry_failed and finished[t.trial_id] == "failed")
            or (resume_stopped and finished[t.trial_id] == STOPPED)]
    failed_earlier = sum(1 for t in grid.trials if finished.get(t.trial_id) == "failed") if not retry_failed else 0
    skipped = len(grid.trials) - len(todo) - failed_earlier
    if not todo:
        run.write_bytes(run.child(GRID_FILE), grid.content)

    ray_log, ran = None, set()
    if todo and lock.previous is not None:
        _let_workers_end(run, todo, lock.stale_s, notify)
    # Every tracker checked before any trial starts: one that cannot be used is one line now.
    tracking = Tracking.start(grid, run, notify) if todo else None
    if lock.previous is not None and grid.tracking:  # taken over from a driver that was killed
        todo_ids = {t.trial_id for t in todo}
        _end_left_open(grid, run, tracking, [t.trial_id for t in grid.trials
                                             if t.trial_id in finished and t.trial_id not in todo_ids], notify)
    if todo:
        # The dataset cache, for workloads that have one: workers run elsewhere (in a trial's folder).
        env = {"ABLATE_DATA": os.path.abspath(data_dir)} if data_dir else {}
        if address is None:
            with environment(env):
                _prepare(grid, todo)
        with ray_messages_to(ray_log_path(run)) as ray_log:
            connect(address, env)
            if address is not None:
                check_storage_shared(run)
            for note in check_resources(resources, autoscaling=address is not None):
                notify(note)
            # Only now, once nothing refused the run (a script not found, a tracker, resources): the
            # readers show the trials of the grid as last run, not of one that never ran.
            run.write_bytes(run.child(GRID_FILE), grid.content)
            planned = {t.trial_id: grid.planned_epochs(t) for t in todo}
            try:
                if resume_stopped:  # the published rows of stopped trials would hide the results they train to
                    publisher.withdraw([t.trial_id for t in todo if finished.get(t.trial_id) == STOPPED])
                shown = tuple(dict.fromkeys([*workload_columns(grid.workload, grid.workload.metrics),
                                             grid.objective.metric.name]))
                watched = contextlib.nullcontext() if address is None else \
                    head_watched(lambda head: notify(HEAD_LOST.format(head, run.display())))
                with display_factory(len(todo), skipped, planned, shown) as display, environment_for_tracking(), \
                        _sigterm_as_ctrl_c(run, notify), watched:
                    fit = functools.partial(_fit, grid, run, resources=resources, display=display, fail_fast=fail_fast,
                                            publisher=publisher, scheduler=scheduler, tracking=tracking,
                                            local=address is None, hangs=Hangs(trial_timeout, planned),
                                            notify=notify)
                    if grid.halving and not resume_stopped:
                        display.halved(_halving_left(grid, todo, publisher.trials))
                        _halve(grid, run, fit, publisher, display, retry_failed, tracking, notify)
                    else:
                        fit(todo)
                ran = display.ran  # not all of `todo` where the run was stopped (Ctrl-C)
            finally:
                publisher.catch_up()  # every record in both files, whatever the pace left for later
                # A trial that finished as the run was stopped (Ctrl-C) was never taken by the driver:
                # a run later skips it, so its tracker run ends now, or it stays RUNNING.
                with environment_for_tracking():
                    for trial_id in tracking.left_open():
                        tracking.recorded(trial_id)

    before, finished = finished, records.statuses(publisher.trials)
    statuses = [finished.get(t.trial_id) for t in grid.trials]
    counts = {s: statuses.count(s) for s in STATUSES if statuses.count(s)}
    stopped_unrun = sum(1 for t in todo if t.trial_id not in ran and finished.get(t.trial_id) == STOPPED
                        and before.get(t.trial_id) != STOPPED)
    return RunSummary(run, counts, ran=len(ran), skipped=skipped, stopped_unrun=stopped_unrun,
                      unfinished=statuses.count(None), failed_earlier=failed_earlier, ray_log=ray_log)


def _sigterm_as_ctrl_c(run: RunDir, notify):
    return sigterm_as_ctrl_c(lambda: notify(RAY_LOST.format(run.display())))


def _end_left_open(grid: Grid, run: RunDir, tracking: Tracking | None, trial_ids: list[str], notify) -> None:
    """The tracker runs a killed driver left open of trials that have a result (Tracking.end_left_open).
    With nothing to run, a tracker that cannot be used is a note, not the run's failure."""
    try:
        tracking = tracking or Tracking.start(grid, run, notify)
    except RunError as e:
        notify(f"{e}; any tracker runs the driver before this one left open are ended by "
               f"`ablate track {run.display()}` once it can be used")
        return
    with environment_for_tracking():
        tracking.end_left_open(trial_ids)


def _let_workers_end(run: RunDir, todo, within_s: float, notify) -> None:
    """After taking the run over: wait, up to `within_s`, for the trial workers of the driver before
    that still run on this machine. Ray ends them within seconds of their driver; until then one may
    still write a checkpoint or a record, which this driver's attempt of the same trial must not meet."""
    started = set(run.names(run.child("trials")))
    workers = {t.trial_id: worker for t in todo if t.trial_id in started
               and (worker := run.progress(t.trial_id).get("worker")) and alive(worker)}
    if not workers:
        return
    notify(f"waiting for {len(workers)} trial worker(s) of the previous driver to end "
           f"(pid {', '.join(str(w['pid']) for w in workers.values())})")
    deadline = time.monotonic() + within_s
    while (left := [w for w in workers.values() if alive(w)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        notify(f"trial worker(s) pid {', '.join(str(w['pid']) for w in left)} of the previous driver still run "
               f"after {within_s:g} s; starting anyway")


def _prepare(grid: Grid, todo) -> None:
    """Fetch what the trials share once, here, so that a dataset that cannot be had is one error
    now instead of every trial failing."""
    if grid.workload.prepare is None:
        return
    try:
        grid.workload.prepare([grid.workload.config(**t.config) for t in todo])
    except WorkloadError as e:
        raise RunError(str(e)) from None


def _halving_left(grid, todo, trials) -> float | None:
    """The epochs (steps) halving trains at most over the grid, as `ablate plan` counts them, less
    those of the trials that ended before this run (`trials`: their rows); each of `todo` counts
    from its start, as the display counts a resumed trial's epochs."""
    to_run = {t.trial_id for t in todo}
    return planned_left(grid.trials, grid.halving, grid.planned_epochs, records.trained(trials),
                        [t.trial_id for t in grid.trials if t.trial_id not in to_run])


def _halve(grid, run, fit, publisher, display, retry_failed, tracking, notify) -> None:
    """Rounds of trials, each up to its cell's next rung, until every cell has decided them all
    or a round ends with a trial that neither paused nor has a result (the run was interrupted)."""
    def stopped(trial_id, rung, reason):
        publisher.publish(trial_id)
        if tracking:
            tracking.recorded(trial_id)  # its tracker run ends too (MLflow: KILLED), at the rung
        display.trial_finished(trial_id, STOPPED, reason, rung=rung)

    halver = Halver(grid, run, on_stopped=stopped, notify=notify)
    retried: set[str] = set()  # a failed trial is retried once per `ablate run`, not once per round
    failures: dict[str, int] = {}  # and has max_failures retries over all its rounds (events.py)
    by_id = {t.trial_id: t for t in grid.trials}
    statuses = records.statuses(publisher.trials)  # published whole by catch_up
    paused: set[str] = set()  # failed trials run again that paused at their rung: their records are of the failure
    while True:
        final = {i: s for i, s in statuses.items() if s in STATUSES and i not in paused
                 and not (retry_failed and s == "failed" and i not in retried)}
        plan = halver.next(final)
        if not plan:
            return
        retried.update(i for i in plan if statuses.get(i) == "failed")
        stopped = fit([by_id[i] for i in plan], until=plan, failures=failures)
        publisher.flush()  # the round's records, and those of the trials halver.next stopped
        statuses = records.statuses(publisher.trials)
        paused = {i for i, rung in plan.items() if statuses.get(i) == "failed" and rung is not None
                  and run.progress(i).get("paused_at", 0) >= rung}
        if stopped or _ended_early(run, statuses, plan, plan):  # --fail-fast, or interrupted: no next round
            return


def _fit(grid, run, todo, resources, display, fail_fast, publisher, scheduler, tracking, local, hangs, notify,
         until=None, failures=None) -> bool:
    """Run `todo` in a Tune experiment; True where --fail-fast stopped it (a trial failed)."""
    # Not tune.with_parameters, made for large objects: it fetches each from Ray's object store at
    # every trial's start, a large part of a short trial's worker time. These are names.
    bound = functools.partial(run_trial, run_uri=run.uri, workload_ref=grid.workload_ref, grid_name=grid.name,
                              report=tune.report, objective=grid.objective)
    bound.__name__ = run_trial.__name__  # Tune names the trainable after it
    trainable = tune.with_resources(bound, {"cpu": resources.cpus, "gpu": resources.gpus})
    # A trial handed a reused worker that had died while idle never began (events.py): those start
    # again, once, in a Tune experiment of their own.
    for start_again in (True, False):
        trials = GridTrials(todo, slots(resources) if local else None, until=until)  # a joined cluster may grow
        # On this machine every trial fits a node (check_resources): only a joined cluster's may wait for one.
        events = Events(grid, run, display, publisher, trials, hangs, tracking, failures, start_again, fail_fast,
                        notify=None if local else notify)
        _experiment(grid, run, trainable, trials, events, resources, scheduler)
        if events.stopping():  # --fail-fast: nothing starts again
            return True
        again = [t for t in todo if t.trial_id in events.unstarted]
        ran = [t.trial_id for t in todo if t.trial_id not in events.unstarted]
        if not again or _ended_early(run, records.statuses(publisher.trials), ran, until):
            return False  # done, or interrupted (Ctrl-C): what is left is for the next `ablate run`
        todo = again
    return False


def _experiment(grid, run, trainable, trials: GridTrials, events: Events, resources, scheduler) -> None:
    """One Tune experiment of `trials`, its events told to `events`."""
    tuner = tune.Tuner(
        trainable,
        tune_config=tune_config(trials, resources, scheduler),
        run_config=tune.RunConfig(
            # Unique: a grid with halving runs several rounds, each its own Tune experiment.
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}", storage_path=join_uri(run.uri, "ray"), verbose=0,
            # Not Tune's fail_fast, which refuses retries: a trial fails once its retries are spent (StopAll).
            failure_config=tune.FailureConfig(max_failures=grid.max_failures),
            stop=StopAll(events), callbacks=[events, NoTuneProgress()]),
    )
    # Tune logs every trial error with its traceback and warns about the result files its disabled
    # loggers did not write; the display and each trial's log say what happened instead.
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)
    # Tune's Ctrl-C handler (wrapped by Events.setup) outlives an experiment that was not stopped:
    # a Ctrl-C after it would say "stopping" and be swallowed.
    ctrl_c = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    try:
        with environment(tune_environment(len(trials.trials), ray.cluster_resources().get("CPU", 1))), \
                out_of_memory_as_death():
            tuner.fit()
    except (OSError, EOFError) as e:
        # Tune's own files (its experiment state, a trial's error) are in the run's storage too: a
        # full disk leaves them empty, and Tune reads an empty error file back as it ends.
        if events.storage_error:
            raise RunError(events.storage_error) from None
        raise StorageError.at(run.display(), e, doing="use it") from None
    finally:
        tune_logger.setLevel(level)
        if ctrl_c is not None:
            signal.signal(signal.SIGINT, ctrl_c)
    if events.storage_error:  # a trial's StorageError, as its worker said it
        raise RunError(events.storage_error)


def _ended_early(run: RunDir, statuses: dict[str, str], trial_ids, until: dict[str, int | None] | None) -> bool:
    """Whether a trial of these has no result and did not pause where it was to (`until`, halving's
    rung): its Tune experiment ended before it did (Ctrl-C, SIGTERM)."""
    return any(i not in statuses and ((until or {}).get(i) is None or run.progress(i).get("paused_at", 0) < until[i])
               for i in trial_ids)
