"""Trials in the experiment trackers people watch (a grid's `tracking:`, `ablate run --track`,
`ablate track`): one tracker run per trial for its whole life, each epoch logged once.

    tracking = Tracking.start(grid, run, notify)   # checks every tracker, one line if one cannot be used
    tracking.epoch(trial_id, metrics)              # a reported epoch, on the driver
    tracking.finished(trial_id, record)            # its remaining epochs, status and final metrics
    tracking.recorded(trial_id)                    # the same, with the record the trial has

Driver-side only, with each tracker's own client (trackers.py) rather than Tune's logger callbacks:
those keep their trial-to-run map in memory, so a retried or resumed trial, or a second `ablate run`,
starts a second tracker run or logs over its own steps (ray-project/ray#38894, #29916, #46897). Here what a
trial's tracker run is and the last step it logged live beside the trial in storage
(`trials/<id>/tracking.json`), so every driver continues the same run and skips what is logged.
A tracker that fails mid-run is one note; it is left out from then on and the trials go on.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

from orchestrator.errors import RunError
from orchestrator.plan.grid import Grid
from orchestrator.run.settings import environment
from orchestrator.run.trackers import NOTHING, TRACKERS, one_line
from orchestrator.store import records
from orchestrator.store.records import Record
from orchestrator.store.rundir import RunDir

STATE = "tracking.json"
# Keys Tune adds to what a trial reports (ray.tune.result.AUTO_RESULT_KEYS and a few more): not metrics.
TUNE_KEYS = frozenset({"training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip",
                       "hostname", "pid", "time_this_iter_s", "timestamp", "date", "time_since_restore",
                       "timesteps_since_restore", "iterations_since_restore", "config", "checkpoint_dir_name",
                       "trial_id", "done", "experiment_tag", "should_checkpoint"})


def step_of(epoch: dict[str, Any], index: int | None) -> int | None:
    """An epoch's step: its `step` (or `epoch`) where it reports one, else its place (from 1), or
    None without an `index`. A script's epoch printed after steps is at the last step before it."""
    for key in ("step", "epoch"):
        if isinstance(epoch.get(key), int) and not isinstance(epoch.get(key), bool):
            return epoch[key]
    return None if index is None else index + 1


def steps_of(epochs: list[dict[str, Any]]) -> list[tuple[int, dict[str, float]]]:
    """A trial's reports, each at its step in a tracker, whose steps only go forward: a count that
    starts again (fine-tuning after pretraining, both from epoch 1) goes on one past the step before.
    results/plots.py (_continued) draws curves by the same rule, over a whole epochs table at once."""
    logged, offset = [], 0
    for i, epoch in enumerate(epochs):
        step = step_of(epoch, i)
        if logged and step + offset < logged[-1][0]:
            offset = logged[-1][0] + 1 - step
        logged.append((step + offset, numbers(epoch, ("epoch", "step"))))
    return logged


def numbers(values: dict[str, Any], leave_out=()) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if k not in leave_out and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class Tracking:
    """The trackers a run logs to, and each trial's state in each (trials/<id>/tracking.json)."""

    def __init__(self, grid: Grid, run: RunDir, trackers: list, notify):
        self.grid, self.run, self.trackers, self.notify = grid, run, trackers, notify
        self.trials = {t.trial_id: t for t in grid.trials}
        self.states: dict[str, dict] = {}  # trial_id -> tracker name -> its state, as stored
        self.resumed: set[tuple[str, str]] = set()  # (trial_id, tracker name) this driver has found its run of
        # trial_id -> (what its attempt adds to the steps it reports, the tracker's step of its last
        # report): a step before that is a count that started again (steps_of), which goes on past it;
        # an attempt's first report is not, where it goes back (a retry from its checkpoint).
        self.heard: dict[str, tuple[int, int]] = {}
        self.again: set[str] = set()  # trials whose count started again in their attempt now

    @classmethod
    def start(cls, grid: Grid, run: RunDir, notify=lambda message: None, names=None) -> "Tracking":
        """Every tracker of the grid (or `names`) made and checked: a RunError if one cannot be used."""
        wanted = grid.tracking if names is None else {n: grid.tracking.get(n, {}) for n in names}
        trackers = [TRACKERS[name](grid, run, settings) for name, settings in wanted.items()]
        for tracker in trackers:
            notify(f"trials are tracked in {tracker.shown()}")
        return cls(grid, run, trackers, notify)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _state(self, trial_id: str) -> dict:
        if trial_id not in self.states:
            data = self.run.read_bytes(self.run.trial_file(trial_id, STATE))
            try:
                self.states[trial_id] = json.loads(data) if data else {}
            except ValueError:
                self.states[trial_id] = {}  # damaged: each tracker finds its run again by the trial's id
        return self.states[trial_id]

    def _save(self, trial_id: str) -> None:
        self.run.write_bytes(self.run.trial_file(trial_id, STATE), json.dumps(self.states[trial_id]).encode())

    def _each(self, trial_id: str, action, done=lambda state: False) -> None:
        """`action(tracker, state)` for every tracker still in use, but those whose stored state is
        `done` (not even opened); one that fails is one note and left out."""
        states = self._state(trial_id)
        changed = False
        for tracker in list(self.trackers):
            state = states.get(tracker.name)
            if state is not None and state.get("where") != tracker.where():
                state = None  # logged elsewhere before: a run of its own here
            if state is not None and done(state):
                continue
            try:
                if state is None or (trial_id, tracker.name) not in self.resumed:
                    trial, stored = self.trials[trial_id], (state or {}).get("last_step")
                    state = {"finished": False, **(state or {}), "where": tracker.where(),
                             **tracker.start_or_resume(trial_id, trial.cell, trial.config, state)}
                    if state["last_step"] != stored:  # which metrics its last step holds: none, or not known
                        state["at_last"] = [] if state["last_step"] == NOTHING else None
                    self.resumed.add((trial_id, tracker.name))
                    changed = True
                changed |= action(tracker, state)
            except Exception as e:
                self.trackers.remove(tracker)
                self.notify(f"tracking with {tracker.name} stopped ({one_line(e)}); the trials go on, their results "
                            f"are saved as always: `ablate track {self.run.display()} --to {tracker.name}` sends "
                            "them once it works again")
                continue
            states[tracker.name] = state
        if changed:
            self._save(trial_id)

    def epoch(self, trial_id: str, result: dict[str, Any]) -> None:
        """A reported epoch, live, where it is the next step after those logged; in an attempt whose
        count starts again (fine-tuning after pretraining), one past the step before, as steps_of
        puts it. Any other (one without an `epoch` or `step`, one after a gap: epochs a killed driver
        never heard of, before the trial resumed from its checkpoint; a retry of a trial whose count
        started again before it) waits for the trial's record, where every epoch is."""
        if not self.trackers or (step := step_of(result, None)) is None:
            return
        offset, before = self.heard.get(trial_id, (0, None))
        if before is not None and step + offset < before:  # the count started again: on past its last step
            offset = before + 1 - step
            self.again.add(trial_id)
        self.heard[trial_id] = (offset, step + offset)
        self._log(trial_id, [(step + offset, numbers(result, TUNE_KEYS | {"epoch", "step"}))], next_only=True,
                  again=trial_id in self.again)

    def attempt(self, trial_id: str) -> None:
        """An attempt of the trial began (its first, a retry, a resumption)."""
        self.heard.pop(trial_id, None)
        self.again.discard(trial_id)

    def _log(self, trial_id: str, epochs: list[tuple[int, dict[str, float]]], done=lambda state: False,
             next_only=False, again=False) -> None:
        def action(tracker, state) -> bool:
            last, at_last = state["last_step"], state.get("at_last")
            if next_only and state.get("restarted") and not again:
                # A count that started again in an attempt before: where this attempt's go in the
                # tracker depends on epochs before its checkpoint, which the record has (steps_of).
                return False
            restarted = again and not state.get("restarted")
            if restarted:
                state["restarted"] = True
            new: list[tuple[int, dict[str, float]]] = []
            for step, values in epochs:
                if step == last and at_last is not None:  # an epoch's row at the step just logged
                    values = {k: v for k, v in values.items() if k not in at_last}
                elif step <= last or (next_only and step != last + 1 and not (last == NOTHING and step == 1)):
                    continue
                if values:
                    at_last = [*at_last, *values] if step == last else list(values)
                    if new and step == last:  # the rows at one step as one
                        new[-1] = (step, {**new[-1][1], **values})
                    else:
                        new.append((step, values))
                    last = step
            if new:
                tracker.log_epochs(state, new)
                state.update(last_step=last, at_last=at_last, finished=False)
            return bool(new) or restarted
        self._each(trial_id, action, done)

    def left_open(self) -> list[str]:
        """The trials whose tracker run this driver has read or logged to and not ended, in a
        tracker it logs to."""
        return [trial_id for trial_id, states in self.states.items() if self._open_in(states)]

    def _open_in(self, states: dict) -> set[str]:
        """The trackers in use in which `states` (a trial's) has a run not ended."""
        return {t.name for t in self.trackers if t.name in states and not states[t.name].get("finished")
                and states[t.name].get("where") == t.where()}

    def end_left_open(self, trial_ids) -> None:
        """After a driver killed with SIGKILL: the tracker runs it left open of trials that have a
        result now (their workers wrote it as or after the driver died), ended with their records.
        A run skips those trials, so they would stay running (MLflow: RUNNING) until `ablate track`.
        Those a tracker failed to end are not said ended: its own note names `ablate track`."""
        left = {trial_id: names for trial_id in trial_ids if (names := self._open_in(self._state(trial_id)))}
        for trial_id in left:
            self.recorded(trial_id)
        ended = [trial_id for trial_id, names in left.items()
                 if all(self._state(trial_id)[name].get("finished") for name in names)]
        if ended:
            self.notify(f"the driver before this one left the tracker runs of {len(ended)} finished trial(s) "
                        "open; they are ended now")

    def recorded(self, trial_id: str) -> None:
        """`finished` with the record the trial has now, where it has one."""
        if self.trackers and (record := records.read_record(self.run, trial_id)) is not None:
            self.finished(trial_id, record)

    def finished(self, trial_id: str, record: Record) -> None:
        """The trial's epochs not logged yet, then its status and final metrics, once."""
        if not self.trackers:
            return
        epochs = steps_of(record.epochs or [])
        last = max((step for step, _ in epochs), default=NOTHING)

        def done(state) -> bool:  # all there: a trial sent before (`ablate track` again) is not even opened
            return state["finished"] and state.get("status") == record.row.get("status") and state["last_step"] >= last
        self._log(trial_id, epochs, done)

        def action(tracker, state) -> bool:
            if state["finished"] and state.get("status") == record.row.get("status"):
                return False
            final = numbers(record.row, (*self.trials[trial_id].config, "epochs_completed", "attempts"))
            tracker.finish(state, str(record.row.get("status")), final)
            state.update(finished=True, status=record.row.get("status"))
            return True
        self._each(trial_id, action, done)


def environment_for_tracking():
    """Bounds MLflow's retries for the whole run: a server that stops answering mid-run costs one
    warning after seconds, not the driver's minutes. And no links from MLflow as each trial ends,
    where the run's own lines are: Tracking.start says where the trials are, once."""
    return environment({k: os.environ.get(k, v) for k, v in {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                                                              "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                                                              "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}.items()})


def track_run(grid: Grid, run: RunDir, names: list[str], notify=lambda message: None) -> int:
    """`ablate track`: a run's finished trials sent to the trackers `names`, as `ablate run` would
    have; what a tracker holds already is not sent again. Returns the trials sent."""
    from orchestrator.run.lock import DriverLock
    from orchestrator.store.records import read_trials

    with DriverLock(run).acquire(wait=False, notify=notify):  # no driver adds to the trials meanwhile
        tracking = Tracking.start(grid, run, notify, names)
        table = read_trials(run, notify)
        ids = [i for i in (table["trial_id"].to_pylist() if table is not None else []) if i in tracking.trials]
        with environment_for_tracking():
            for trial_id in ids:
                record = records.read_record(run, trial_id, notify)
                if record is not None:
                    tracking.finished(trial_id, record)
        if len(tracking.trackers) < len(names):
            raise RunError("tracking stopped before every trial was sent; run `ablate track` again to send the rest")
        return len(ids)
