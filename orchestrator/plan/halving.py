"""Successive halving inside each cell of a grid: the grid's `halving:` key, checked, and what it
plans.

    halving:
      over: [lr]        # axes whose values compete inside each cell (the other axes make the cells)
      rungs: [25, 100]  # epochs (or steps) at which each cell keeps its best settings
      keep: 0.5         # the fraction kept at each rung, at least one setting

A cell is every trial that shares the values of the axes not in `over`; a setting is one
combination of the `over` values, with all its seeds. At each rung a cell keeps the best
`keep` of the settings still in it, by the mean over seeds of the grid's metric at that rung
(run/halving.py makes the decisions).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

from orchestrator.errors import GridError, ResultsError
from orchestrator.plan.expand import Trial
from orchestrator.plan.params import fmt

KEYS = ("over", "rungs", "keep")
DECISIONS = "halving.json"  # a run's decisions, in the order they were made (run/halving.py)


@dataclass(frozen=True)
class Halving:
    over: tuple[str, ...]
    rungs: tuple[int, ...]
    keep: float
    unit: str = "epoch"  # or "step": where trials report steps, rungs are steps (run/halving.py)

    def kept(self, settings: int) -> int:
        """How many of `settings` a rung keeps."""
        return max(1, math.floor(settings * self.keep + 1e-9))

    @property
    def at(self) -> str:
        """Where it decides, in words: `epochs 25, 100`, or `step 20`."""
        return f"{self.unit}{'' if len(self.rungs) == 1 else 's'} {', '.join(map(str, self.rungs))}"

    def describe(self) -> str:
        return f"halving over {', '.join(self.over)} at {self.at}, keeping {self.keep:g}"

    def chosen(self, by: str) -> str:
        """How a table's setting was chosen, in words."""
        return f"chosen by successive halving on {by} at {self.at}"


def read_decisions(run) -> list[dict]:
    """The halving decisions recorded in a run (a store.RunDir)."""
    content = run.read_bytes(run.child(DECISIONS))
    try:
        decisions = json.loads(content) if content else []
        if not isinstance(decisions, list) or not all(isinstance(d, dict) for d in decisions):
            raise ValueError("expected a list of decisions")
    except ValueError as e:  # written whole and renamed: a damaged one is a bad copy of the run
        raise ResultsError(f"{run.display(DECISIONS)}: unreadable halving decisions ({e}); restore it from where "
                           "the run was copied") from None
    return decisions


def as_decided(halving: Halving, decisions: list[dict]) -> Halving:
    """The halving with the rungs its recorded decisions were made at, where any were: a grid whose
    rungs were edited after its run decided at others still says where its settings were stopped."""
    rungs = sorted({d["rung"] for d in decisions if isinstance(d.get("rung"), int)})
    return replace(halving, rungs=tuple(rungs)) if rungs else halving


def cell_key(trial: Trial, halving: Halving) -> str:
    """The cell a trial competes in: its values of the axes that are not halved, seed left out."""
    return _key({k: v for k, v in trial.cell.items() if k not in halving.over and k != "seed"})


def setting_key(trial: Trial, halving: Halving) -> str:
    """The setting a trial belongs to: its values of the halved axes."""
    return _key({k: trial.config[k] for k in halving.over})


def _key(values: dict) -> str:
    return json.dumps(values, sort_keys=True, default=str)


def halving(path, given, axes: dict[str, list], planned_epochs: list[int | None], unit: str = "epoch") -> Halving | None:
    """A grid's `halving`, checked against its axes and its trials' epochs (`planned_epochs`, None
    where the workload cannot say), which count `unit`s (epochs, or a script's steps)."""
    if given is None:
        return None
    if not isinstance(given, dict):
        raise GridError(path, "halving", f"expected a mapping with keys {', '.join(KEYS)}, got {fmt(given)}")
    for key in given:
        if key not in KEYS:
            raise GridError(path, f"halving.{key}", f"unknown key (allowed: {', '.join(KEYS)})")
    for key in KEYS:
        if key not in given:
            raise GridError(path, f"halving.{key}", "missing")
    over = given["over"] if isinstance(given["over"], list) else [given["over"]]
    for i, name in enumerate(over):
        if not isinstance(name, str) or name not in axes:
            raise GridError(path, f"halving.over[{i}]", f"expected an axis of the grid (axes: "
                                                         f"{', '.join(axes) or 'none'}), got {fmt(name)}")
    if not over or len(set(over)) != len(over):
        raise GridError(path, "halving.over", f"expected a list of distinct axes, got {fmt(given['over'])}")
    rungs = given["rungs"] if isinstance(given["rungs"], list) else [given["rungs"]]
    if not rungs or any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in rungs) \
            or any(a >= b for a, b in zip(rungs, rungs[1:])):
        raise GridError(path, "halving.rungs", f"expected increasing whole numbers of {unit}s >= 1, got {fmt(given['rungs'])}")
    known = [e for e in planned_epochs if e is not None]
    if known and rungs[-1] >= min(known):
        raise GridError(path, "halving.rungs", f"the last rung ({rungs[-1]}) must come before the end of every trial "
                                               f"(the shortest trains {min(known)})")
    keep = given["keep"]
    if not isinstance(keep, (int, float)) or isinstance(keep, bool) or not 0 < keep < 1:
        raise GridError(path, "halving.keep", f"expected a fraction between 0 and 1, got {fmt(keep)}")
    return Halving(tuple(over), tuple(rungs), float(keep), unit)


def planned(trials: list[Trial], halving: Halving, epochs_of, per_epoch=lambda trial: 1.0) -> tuple[float, float] | None:
    """(with halving, without) of the sum over `trials` of epochs x `per_epoch(trial)` (1: epochs;
    FLOPs per epoch: compute), where every trial's epochs are known (`epochs_of(trial)`). With
    halving it is at most that: settings that end early (diverge) train less, and the settings
    kept are not known yet, so the costliest ones are counted as kept."""
    full = {t.trial_id: epochs_of(t) for t in trials}
    if None in full.values():
        return None
    cells: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for trial in trials:
        cells.setdefault(cell_key(trial, halving), {}).setdefault(setting_key(trial, halving), []).append(
            (full[trial.trial_id], per_epoch(trial)))
    halved = 0.0
    for settings in cells.values():
        alive = sorted(settings.values(), key=lambda seeds: -sum(e * w for e, w in seeds))
        reached = 0
        for rung in halving.rungs:
            halved += sum((rung - reached) * w for seeds in alive for _, w in seeds)
            reached = rung
            alive = alive[:halving.kept(len(alive))]
        halved += sum((epochs - reached) * w for seeds in alive for epochs, w in seeds)
    return halved, float(sum(full[t.trial_id] * per_epoch(t) for t in trials))


def planned_left(trials: list[Trial], halving: Halving, epochs_of, trained: dict[str, int], ended) -> float | None:
    """The epochs (steps) halving trains at most over `trials`, as `ablate plan` counts them, less
    those the `ended` trials (their ids) trained (`trained`: trial_id -> epochs, records.trained):
    the ETA of `ablate run` and of `ablate status`. None where a trial's epochs are not known."""
    most = planned(trials, halving, epochs_of)
    if most is None:
        return None
    return most[0] - sum(trained.get(trial_id) or 0 for trial_id in ended)
