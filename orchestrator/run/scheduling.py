"""How Tune is handed a grid's trials: one Tune trial per grid trial, named by its trial id, in
the grid's order, and on a Ray of fixed size only as many at once as fit.

    trials = GridTrials(todo, slots(resources))
    tune.Tuner(trainable, tune_config=tune_config(trials, resources, scheduler), ...)
"""
from __future__ import annotations

import time

import ray
from ray import tune
from ray.tune.search import Searcher

from orchestrator.plan.execution import Resources


class GridTrials(Searcher):
    """Hands Tune the grid's unfinished trials one at a time, in the grid's order. Not Tune's
    `grid_search`: it deep-copies its whole list of values for every trial it creates, which
    makes a grid of N trials cost N^2 (benchmarks/README.md).

    With `slots`, the trials that fit at once on a Ray instance whose size does not change (the
    local one), it also keeps Tune from starting actors it then drops. Tune starts an actor for
    each trial that waits to run, but when a trial ends it gives the next one the actor just freed
    over the one still starting for it, and stops that one once it is up. Trials shorter than an
    actor's start then all run on the first actor up while others are started and stopped in turn,
    and a run can end waiting for the last to start. So no more trials are handed out than fit, and once a trial ended while
    another waited for its actor, only as many as there are actors up, until a trial runs for
    longer than any waited for its actor (then a new actor would be up before it ends)."""

    def __init__(self, todo, slots: int | None = None, clock=time.monotonic, until: dict | None = None):
        super().__init__()
        # `until`: trial_id -> the epoch a trial pauses at, for halving (run/halving.py)
        self.trials = [{"trial_id": t.trial_id, "config": t.config, **({"until": until[t.trial_id]}
                        if until and until.get(t.trial_id) is not None else {})} for t in todo]
        self.given = 0
        self.clock = clock
        self.slots = self.limit = slots  # the most trials handed out and not ended (None: no limit)
        self.waiting: dict[str, float] = {}  # Tune's trial id -> when handed out, until it starts
        self.running: dict[str, float] = {}  # Tune's trial id -> when it started
        self.actor_start = 0.0  # the longest a trial waited for its actor

    def suggest(self, trial_id):
        if self.given == len(self.trials):
            return Searcher.FINISHED
        if self.limit is not None and len(self.waiting) + len(self.running) >= self.limit:
            if self.limit == self.slots or not self._outlasting_an_actor_start():
                return None  # Tune asks again at its next step
            self.limit = self.slots
        self.waiting[trial_id] = self.clock()
        self.given += 1
        return {"trial": self.trials[self.given - 1]}

    def _outlasting_an_actor_start(self) -> bool:
        return any(self.clock() - started > self.actor_start for started in self.running.values())

    def started(self, trial_id: str) -> None:
        """Tune started the trial on an actor."""
        handed = self.waiting.pop(trial_id, None)
        if handed is not None:
            self.actor_start = max(self.actor_start, self.clock() - handed)
        self.running[trial_id] = self.clock()

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.running.pop(trial_id, None)
        self.waiting.pop(trial_id, None)
        if self.slots is not None and self.waiting:  # a waiting trial takes this one's actor
            self.limit = len(self.running) + 1


def _trial_name(trial) -> str:
    # A module's function, not a lambda: Tune saves it with every trial's state, and pickles a
    # lambda whole each time.
    return trial.config["trial"]["trial_id"]


def tune_config(trials: GridTrials, resources: Resources, scheduler=None) -> tune.TuneConfig:
    """How Tune schedules the trials: one Tune trial per grid trial, named by its trial id."""
    return tune.TuneConfig(search_alg=trials, num_samples=len(trials.trials),
                           max_concurrent_trials=resources.max_concurrent, reuse_actors=True, scheduler=scheduler,
                           trial_dirname_creator=_trial_name, trial_name_creator=_trial_name)


def slots(resources: Resources) -> int | None:
    """How many trials fit at once on the Ray cluster as it is (None: no resource bounds them)."""
    total = ray.cluster_resources()
    fits = [total.get("CPU", 0) // resources.cpus] if resources.cpus else []
    if resources.gpus:
        fits.append(total.get("GPU", 0) // resources.gpus)
    if resources.max_concurrent:
        fits.append(resources.max_concurrent)
    return max(1, int(min(fits))) if fits else None
