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
from collections.abc import Sequence
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
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


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


def expand(spec: Spec) -> list[Trial]:
    """Every trial of the grid: each cell once per seed, over the workload's defaults and the
    fixed values. A trial given twice (an include that repeats a cell of the axes) is one."""
    workload = spec.workload
    defaults = dataclasses.asdict(workload.config())
    identity = {f.name for f in dataclasses.fields(workload.config) if f.metadata.get("identity", True)}
    trials, seen = [], set()
    for cell in cells(spec):
        for seed in spec.seeds:
            config = {**defaults, **spec.fixed, **cell, "seed": seed}
            tid = trial_id(workload.name, config, identity)
            if tid not in seen:
                seen.add(tid)
                trials.append(Trial(tid, config, {**cell, "seed": seed}))
    return trials
