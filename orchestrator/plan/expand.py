"""A checked grid's trials: the cartesian product of its axes, less its exclusions, plus its
inclusions, once per seed, each with a stable id.

    trials = expand(spec)        # [Trial(trial_id, config, cell), ...], in the file's order

A pure function of the spec: the same spec gives the same trials with the same ids, whatever
the order of keys or axes in the file, and any changed value gives a new id.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import GridError
from workloads.base import Workload


@dataclass(frozen=True)
class Trial:
    trial_id: str
    config: dict[str, Any]  # every parameter of the workload, resolved
    cell: dict[str, Any]  # the values that vary across the grid: axes and seed


@dataclass(frozen=True)
class Spec:
    """What a grid file says about its trials, every value checked (grid.py)."""
    path: Path  # names the file in errors
    workload: Workload
    axes: dict[str, list]
    fixed: dict[str, Any]
    seeds: Sequence[int]
    exclude: list[dict[str, list]]  # drop the cells that match every key of a rule
    include: list[dict[str, list]]  # add these cells (every axis given)


def trial_id(workload: str, config: dict[str, Any], identity: set[str]) -> str:
    """A hash of the resolved config. Only the `identity` fields count: fields a workload marks
    {"identity": False} (where data lives, how often to checkpoint) do not change what a trial
    computes."""
    canonical = json.dumps({"workload": workload, "config": {k: config[k] for k in sorted(identity)}},
                           sort_keys=True, separators=(",", ":"))
    return _hash(canonical)


def _hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode  # as trial_id's json.dumps


class _TrialIds:
    """trial_id of the trials of one grid, whose configs differ from its base config (the
    workload's defaults and the fixed values) only in a cell's values and the seed. The text
    hashed is trial_id's, built in pieces: the JSON of the base values once per set of keys a
    cell sets, a cell's values once per cell, and only the seed per trial (every reader of a
    grid's results expands it again)."""

    def __init__(self, workload: str, base: dict[str, Any], identity: set[str]):
        self.workload, self.base, self.keys = workload, base, sorted(identity)
        self.texts: dict[tuple[str, ...], tuple[list[str], str, list[str]]] = {}

    def of_cell(self, cell: dict[str, Any]) -> Callable[[int], str]:
        """The trial ids of a cell, by seed."""
        changed = (*cell, "seed")
        if changed not in self.texts:
            self.texts[changed] = self._around(changed)
        keys, before, rest = self.texts[changed]
        after = None  # the text after the seed's value
        for k, text in zip(keys, rest):
            if k == "seed":
                after = text
            elif after is None:
                before += _JSON(cell[k]) + text
            else:
                after += _JSON(cell[k]) + text
        if after is None:  # a workload whose trials do not depend on their seed
            return lambda seed: _hash(before)
        return lambda seed: _hash(before + _JSON(seed) + after)

    def _around(self, changed: tuple[str, ...]) -> tuple[list[str], str, list[str]]:
        """The changed keys in the text's order, and trial_id's canonical text of the base config
        cut where each of their values goes: the text before the first, then after each."""
        keys, texts, text = [], [], '{"config":{'
        for i, k in enumerate(self.keys):
            text += ("," if i else "") + _JSON(k) + ":"
            if k in changed:
                keys.append(k)
                texts.append(text)
                text = ""
            else:
                text += _JSON(self.base[k])
        texts.append(text + '},"workload":' + _JSON(self.workload) + "}")
        return keys, texts[0], texts[1:]


def hashable(value):
    """A value as a key of a set or a group: a list (or an array's values) as a tuple."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return tuple(value) if isinstance(value, list) else value


def cells(spec: Spec) -> list[dict[str, Any]]:
    """The grid's cells, axis values without the seed; an exclusion that matches none is a mistake."""
    out = [dict(zip(spec.axes, combo)) for combo in itertools.product(*spec.axes.values())]
    for i, rule in enumerate(spec.exclude):
        kept = [c for c in out if not all(c[k] in vs for k, vs in rule.items())]
        if len(kept) == len(out):
            raise GridError(spec.path, f"exclude[{i}]", "matches no trial of the axes")
        out = kept
    for rule in spec.include:
        out += [dict(zip(rule, combo)) for combo in itertools.product(*rule.values())]
    return out


def identity_fields(config_type) -> set[str]:
    """The parameters a trial's id is made of: all but those marked `identity: False` (a data path)."""
    return {f.name for f in dataclasses.fields(config_type) if f.metadata.get("identity", True)}


def expand(spec: Spec) -> list[Trial]:
    """Every trial of the grid: each cell once per seed, over the workload's defaults and the
    fixed values. A trial given twice (an include that repeats a cell of the axes) is one."""
    workload = spec.workload
    defaults = dataclasses.asdict(workload.config())
    base = {**defaults, **spec.fixed}
    ids = _TrialIds(workload.name, base, identity_fields(workload.config))
    trials, seen = [], set()
    for cell in cells(spec):
        cell_ids = ids.of_cell(cell)
        for seed in spec.seeds:
            config = {**base, **cell, "seed": seed}
            tid = cell_ids(seed)
            if tid not in seen:
                seen.add(tid)
                trials.append(Trial(tid, config, {**cell, "seed": seed}))
    return trials
