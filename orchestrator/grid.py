"""Grid files: load, validate and expand a YAML study into trials with stable ids.

    grid = load_grid("grids/paper.yaml")
    for trial in grid.trials:
        print(trial.trial_id, trial.config["model"], trial.config["lr"])

Nothing in a grid file is executed: it is read with a safe YAML loader and every value is
checked against the workload's typed config. Expansion is a pure function of the file's
content; a trial's id is a hash of its resolved config, so it does not depend on the order of
keys or axes, and any changed value gives a new id.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import workloads
from orchestrator.errors import GridError
from workloads.base import Workload

TOP_KEYS = ("name", "description", "workload", "axes", "fixed", "seeds", "repeats", "exclude",
            "include", "resources", "max_failures")
RESOURCE_KEYS = ("cpus", "gpus", "trials_per_gpu", "max_concurrent")
GRID_FILE = "grid.yaml"  # a run's copy of its grid file, as last run


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0  # a fraction packs several trials on one GPU
    max_concurrent: int | None = None


@dataclass(frozen=True)
class Trial:
    trial_id: str
    config: dict[str, Any]  # every parameter of the workload, resolved
    cell: dict[str, Any]  # the values that vary across the grid: axes and seed


@dataclass(frozen=True)
class Grid:
    name: str
    path: Path
    workload: Workload
    workload_ref: str  # as the file names it: a registered name or module:object
    axes: dict[str, list]
    trials: list[Trial]
    resources: Resources = Resources()
    max_failures: int = 1
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)

    def planned_epochs(self, trial: Trial) -> int | None:
        """How many epochs the trial trains, where its workload says."""
        return self.workload.epochs(self.workload.config(**trial.config)) if self.workload.epochs else None

    def cost(self) -> dict[str, float | None]:
        """Training images and FLOPs of the whole grid, as far as the workload can say."""
        if self.workload.cost is None:
            return {"images": None, "flops": None}
        costs = [self.workload.cost(self.workload.config(**t.config)) for t in self.trials]
        flops = [c.get("flops") for c in costs]
        return {"images": sum(c["images"] for c in costs),
                "flops": None if None in flops else sum(flops)}


def trial_id(workload: str, config: dict[str, Any], identity: set[str]) -> str:
    """A hash of the resolved config. Only the `identity` fields count: fields a workload marks
    {"identity": False} (where data lives, how often to checkpoint) do not change what a trial
    computes."""
    canonical = json.dumps({"workload": workload, "config": {k: config[k] for k in sorted(identity)}},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _fmt(value) -> str:
    return json.dumps(value) if isinstance(value, (bool, type(None))) else repr(value)


class _Checker:
    """Checks values against a workload's config dataclass, raising GridError with the key path."""

    def __init__(self, path: Path, workload: Workload):
        self.path, self.workload = path, workload
        self.fields = {f.name: f for f in dataclasses.fields(workload.config)}
        self.types = typing.get_type_hints(workload.config)

    def fail(self, key: str, message: str):
        raise GridError(self.path, key, message)

    def param(self, key: str, name: str) -> None:
        if name not in self.fields:
            self.fail(key, f"unknown parameter of workload '{self.workload.name}' "
                           f"(known: {', '.join(self.fields)})")
        if name == "seed":
            self.fail(key, "seeds are set by the top-level 'seeds' or 'repeats' key")

    def value(self, key: str, name: str, value):
        return self._typed(key, self.types[name], self.fields[name].metadata.get("choices"), name, value)

    def _typed(self, key, expected, choices, name, value):
        if typing.get_origin(expected) is list:
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {_fmt(value)}")
            (item,) = typing.get_args(expected)
            return [self._typed(f"{key}[{i}]", item, None, name, v) for i, v in enumerate(value)]
        ok = {bool: lambda v: isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str)}[expected](value)
        if not ok:
            hint = f" (YAML reads a bare {_fmt(value)} as a boolean: quote the word)" if expected is str and isinstance(value, bool) else ""
            self.fail(key, f"expected {expected.__name__}, got {_fmt(value)}{hint}")
        if choices is not None and value not in choices:
            self.fail(key, f"unknown {name} {value!r} (known: {', '.join(map(str, choices))})")
        return float(value) if expected is float else value


def _mapping(path, key, value) -> dict:
    if not isinstance(value, dict):
        raise GridError(path, key, f"expected a mapping of parameter: value, got {_fmt(value)}")
    return value


def _number(path, key, value, *, integer=False, minimum=0.0, strict=False):
    kinds = (int,) if integer else (int, float)
    bad = not isinstance(value, kinds) or isinstance(value, bool) or value < minimum or (strict and value == minimum)
    if bad:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise GridError(path, key, f"expected {'an integer' if integer else 'a number'} {bound}, got {_fmt(value)}")
    return value


def read_yaml(path: Path, data: bytes | None = None) -> dict:
    """The grid file at `path` as a mapping; `data`, where given, is its content."""
    try:
        text = path.read_text() if data is None else data.decode()
    except OSError as e:
        raise GridError(path, "", f"cannot read the grid file ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise GridError(path, "", f"not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise GridError(path, "", f"expected a YAML mapping with keys {', '.join(TOP_KEYS)}")
    return data


def load_grid(path: str | Path, content: bytes | None = None) -> Grid:
    """The grid file at `path` (or `content`, named by `path` in errors), validated and expanded."""
    path = Path(path)
    data = read_yaml(path, content)
    for key in data:
        if key not in TOP_KEYS:
            raise GridError(path, str(key), f"unknown key (allowed: {', '.join(TOP_KEYS)})")

    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise GridError(path, "name", f"expected a name of letters, digits, '_', '.' or '-' "
                                      f"(it names the results folder), got {_fmt(name)}")
    workload_name = data.get("workload", workloads.DEFAULT)
    if not isinstance(workload_name, str):
        raise GridError(path, "workload", f"expected a registered name or module:object, got {_fmt(workload_name)}")
    try:
        workload = workloads.get(workload_name)
    except workloads.UnknownWorkload as e:
        raise GridError(path, "workload", str(e)) from None
    check = _Checker(path, workload)

    axes: dict[str, list] = {}
    for name_, values in _mapping(path, "axes", data.get("axes") or {}).items():
        key = f"axes.{name_}"
        check.param(key, name_)
        if not isinstance(values, list) or not values:
            check.fail(key, f"expected a non-empty list of values, got {_fmt(values)}")
        axes[name_] = []
        for i, v in enumerate(values):
            v = check.value(f"{key}[{i}]", name_, v)
            if v in axes[name_]:
                check.fail(f"{key}[{i}]", f"duplicate value {_fmt(v)}")
            axes[name_].append(v)

    fixed = {}
    for name_, v in _mapping(path, "fixed", data.get("fixed") or {}).items():
        check.param(f"fixed.{name_}", name_)
        if name_ in axes:
            check.fail(f"fixed.{name_}", "is also an axis; give it in one place")
        fixed[name_] = check.value(f"fixed.{name_}", name_, v)

    seeds = _seeds(path, data)
    cells = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    for i, rule in enumerate(data.get("exclude") or []):
        rule = _rule(check, f"exclude[{i}]", rule, axes, axes_only=True)
        kept = [c for c in cells if not all(c[k] in vs for k, vs in rule.items())]
        if len(kept) == len(cells):
            check.fail(f"exclude[{i}]", "matches no trial of the axes")
        cells = kept
    for i, rule in enumerate(data.get("include") or []):
        rule = _rule(check, f"include[{i}]", rule, axes, axes_only=False)
        missing = [a for a in axes if a not in rule]
        if missing:
            check.fail(f"include[{i}]", f"must give every axis; missing {', '.join(missing)}")
        cells += [dict(zip(rule, combo)) for combo in itertools.product(*rule.values())]

    defaults = dataclasses.asdict(workload.config())
    identity = {f.name for f in dataclasses.fields(workload.config) if f.metadata.get("identity", True)}
    trials, seen = [], set()
    for cell in cells:
        for seed in seeds:
            config = {**defaults, **fixed, **cell, "seed": seed}
            tid = trial_id(workload.name, config, identity)
            if tid not in seen:  # an include may repeat a cell of the axes
                seen.add(tid)
                trials.append(Trial(tid, config, {**cell, "seed": seed}))
    if not trials:
        raise GridError(path, "", "the grid expands to zero trials")

    return Grid(name=name, path=path, workload=workload, workload_ref=workload_name, axes=axes, trials=trials,
                resources=_resources(path, data.get("resources") or {}),
                max_failures=_number(path, "max_failures", data.get("max_failures", 1), integer=True),
                description=str(data.get("description") or ""), fixed=fixed)


def _seeds(path, data) -> list[int]:
    if "seeds" in data and "repeats" in data:
        raise GridError(path, "repeats", "give either 'seeds' or 'repeats', not both")
    if "repeats" in data:
        return list(range(_number(path, "repeats", data["repeats"], integer=True, minimum=1)))
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise GridError(path, "seeds", f"expected a non-empty list of integers, got {_fmt(seeds)}")
    for i, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool):
            raise GridError(path, f"seeds[{i}]", f"expected an integer, got {_fmt(s)}")
        if s in seeds[:i]:
            raise GridError(path, f"seeds[{i}]", f"duplicate value {s}")
    return seeds


def _rule(check: _Checker, key: str, rule, axes: dict, axes_only: bool) -> dict[str, list]:
    """An exclude/include rule as {parameter: [values]}; a single value stands for a list of one."""
    if not isinstance(rule, dict) or not rule:
        check.fail(key, f"expected a mapping of parameter: value or [values], got {_fmt(rule)}")
    out = {}
    for name, values in rule.items():
        k = f"{key}.{name}"
        if axes_only and name not in axes:
            check.fail(k, f"not an axis (axes: {', '.join(axes) or 'none'})")
        check.param(k, name)
        if typing.get_origin(check.types[name]) is list:  # [200, 250] is one value; [[200], [250]] two
            values = values if isinstance(values, list) and all(isinstance(v, list) for v in values) else [values]
        elif not isinstance(values, list):
            values = [values]
        if not values:
            check.fail(k, "expected a value or a non-empty list of values, got []")
        out[name] = [check.value(k if len(values) == 1 else f"{k}[{i}]", name, v) for i, v in enumerate(values)]
    return out


def _resources(path, data) -> Resources:
    data = _mapping(path, "resources", data)
    for key in data:
        if key not in RESOURCE_KEYS:
            raise GridError(path, f"resources.{key}", f"unknown key (allowed: {', '.join(RESOURCE_KEYS)})")
    if "gpus" in data and "trials_per_gpu" in data:
        raise GridError(path, "resources.trials_per_gpu", "give either 'gpus' or 'trials_per_gpu', not both")
    gpus = _number(path, "resources.gpus", data.get("gpus", 0))
    if "trials_per_gpu" in data:
        gpus = 1 / _number(path, "resources.trials_per_gpu", data["trials_per_gpu"], integer=True, minimum=1)
    if gpus > 1 and gpus != int(gpus):
        raise GridError(path, "resources.gpus", f"expected a fraction up to 1 or a whole number, got {_fmt(gpus)}")
    max_concurrent = data.get("max_concurrent")
    if max_concurrent is not None:
        _number(path, "resources.max_concurrent", max_concurrent, integer=True, minimum=1)
    return Resources(cpus=_number(path, "resources.cpus", data.get("cpus", 1), strict=True),
                     gpus=gpus, max_concurrent=max_concurrent)


def saved_grid(run) -> Grid | None:
    """The grid a run (store.RunDir) was last run with, from its grid.yaml; None where there is
    none or it no longer loads here (its workload cannot be imported, say)."""
    content = run.read_bytes(run.child(GRID_FILE))
    if content is None:
        return None
    try:
        return load_grid(run.display(GRID_FILE), content)
    except GridError:
        return None
