"""Grid files: a YAML study read, checked and expanded into trials with stable ids.

    grid = load_grid("grids/paper.yaml")
    for trial in grid.trials:
        print(trial.trial_id, trial.config["model"], trial.config["lr"])

Nothing in a grid file is executed: it is read with a safe, bounded YAML loader (gridfile.py),
every value is checked against the workload's typed, constrained config (params.py), and the
checked spec is expanded by a pure function (expand.py).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workloads
from orchestrator.errors import GridError
from orchestrator.plan.execution import RESOURCE_KEYS, Resources, number, resources, tracking, trial_timeout
from orchestrator.plan.expand import Spec, Trial, expand, hashable
from orchestrator.plan.gridfile import read_file, read_yaml
from orchestrator.plan.halving import Halving, halving
from orchestrator.plan.objective import INTERFACE, Objective, declared, default, objective
from orchestrator.plan.params import Parameters, fmt
from orchestrator.plan.script import load as load_script
from workloads.base import Workload

TOP_KEYS = ("name", "description", "workload", "command", "axes", "fixed", "seeds", "repeats", "exclude",
            "include", "metric", "mode", "report", "resources", "max_failures", "max_trials", "trial_timeout",
            "tracking", "halving")
GRID_FILE = "grid.yaml"  # a run's copy of its grid file, as last run
# More trials than any study runs on purpose: past it a grid is most likely a typo (`repeats: 100000000`),
# and expanding it would take minutes. A grid's own `max_trials: N` raises it.
MAX_TRIALS = 100_000


@dataclass(frozen=True)
class Grid:
    name: str
    path: Path
    content: bytes  # the file as read, saved in the run as its grid.yaml
    workload: Workload
    workload_ref: str  # as the file names it: a registered name or module:object; or a `command:` (script.ref)
    axes: dict[str, list]
    trials: list[Trial]
    resources: Resources = Resources()
    max_failures: int = 1
    trial_timeout: float | None = None  # seconds an attempt may run before it is ended as failed
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    objective: Objective | None = None  # what trials are judged by; None: the workload's
    tracking: dict[str, dict[str, str]] = field(default_factory=dict)  # tracker -> its settings (execution.py)
    halving: Halving | None = None  # successive halving inside each cell (plan/halving.py)
    # The file's rules, checked: each {parameter: [values]} (expand.py's Spec).
    exclude: list[dict[str, list]] = field(default_factory=list)
    include: list[dict[str, list]] = field(default_factory=list)

    def axis_values(self, axis: str) -> list[tuple[Any, int]]:
        """Every value of an axis that the trials have, each with its number of trials: the axis's
        own values less those every trial of which an exclude rule drops, then those only an
        include rule gives, so that the axes say what the trials are."""
        counts: dict[Any, list] = {}
        for value in [*self.axes[axis], *(t.config[axis] for t in self.trials)]:
            counts.setdefault(hashable(value), [value, 0])
        for t in self.trials:
            counts[hashable(t.config[axis])][1] += 1
        return [(value, n) for value, n in counts.values() if n]

    def __post_init__(self):
        if self.objective is None:
            object.__setattr__(self, "objective", default(self.workload))

    def planned_epochs(self, trial: Trial) -> int | None:
        """How many epochs the trial trains, where its workload says."""
        return self.workload.epochs(self.workload.config(**trial.config)) if self.workload.epochs else None

    def unseeded(self) -> str | None:
        """Where a command never sees `{seed}`: a note that its seeds run one command line again."""
        if self.workload.invocation is None or len(set(_command_lines(self.workload, self.trials))) == len(self.trials):
            return None  # (trials that differ in another parameter run different lines: _distinct_commands)
        seeds = {t.config["seed"] for t in self.trials}
        return (f"the command never sees {{seed}}: each of its {len(seeds)} seeds runs the same command line, so "
                "they differ only where the script is not deterministic (add {seed} to command.run to seed it)")

    def cost(self) -> dict[str, float | None]:
        """Training images and FLOPs of the whole grid, as far as the workload can say."""
        if self.workload.cost is None:
            return {"images": None, "flops": None}
        costs = [self.workload.cost(self.workload.config(**t.config)) for t in self.trials]
        flops = [c.get("flops") for c in costs]
        return {"images": sum(c["images"] for c in costs),
                "flops": None if None in flops else sum(flops)}


def load_grid(path: str | Path, content: bytes | None = None, check_trials: bool = True) -> Grid:
    """The grid file at `path` (or `content`, named by `path` in errors), checked and expanded.
    `check_trials=False` leaves out the workload's checks across parameters of each trial, and
    the need for a `mode` its metric's name does not say: for readers of a grid that ran, checked
    when it did."""
    path = Path(path)
    content = read_file(path) if content is None else content  # read once: what runs is what the run saves
    data = _read(path, content)
    workload, ref = _workload(path, data)
    params = Parameters(path, workload)
    spec = _spec(path, data, params)
    _check_count(spec, number(path, "max_trials", data.get("max_trials", MAX_TRIALS), integer=True, minimum=1))
    trials = expand(spec)
    if check_trials:
        for trial in trials:
            params.check_trial(trial.config, trial.cell)
    if not trials:
        raise GridError(path, "", "the grid expands to zero trials")
    if check_trials:
        _distinct_commands(path, workload, trials)
    epochs = ([workload.epochs(workload.config(**t.config)) for t in trials]
              if workload.epochs and data.get("halving") is not None else [])
    return Grid(name=data["name"], path=path, content=content, workload=workload, workload_ref=ref,
                axes=spec.axes, trials=trials,
                resources=resources(_mapping(path, "resources", data.get("resources") or {},
                                             f"a mapping with keys {', '.join(RESOURCE_KEYS)}"),
                                    "resources.{}".format, path),
                max_failures=number(path, "max_failures", data.get("max_failures", 1), integer=True),
                trial_timeout=trial_timeout(data.get("trial_timeout"), "trial_timeout", path),
                description=str(data.get("description") or ""), fixed=spec.fixed,
                objective=objective(path, data, workload, strict=check_trials), tracking=tracking(data.get("tracking") or {}, path),
                halving=halving(path, data.get("halving"), spec.axes, epochs, workload.unit),
                exclude=spec.exclude, include=spec.include)


def _command_lines(workload: Workload, trials: list[Trial]) -> list[str]:
    return [workload.invocation(workload.config(**trial.config)) for trial in trials]


def _distinct_commands(path: Path, workload: Workload, trials: list[Trial]) -> None:
    """Trials of a command that differ in a parameter must run different command lines: a format
    spec that rounds (`{lr:.0e}` of 0.1 and 0.12) would run one setting under two names."""
    if workload.invocation is None:
        return
    first: dict[str, Trial] = {}  # each command line, with the first trial to run it
    for trial, line in zip(trials, _command_lines(workload, trials)):
        earlier = first.setdefault(line, trial).config
        differ = [k for k in trial.config if k != "seed" and earlier[k] != trial.config[k]]
        if differ:
            one, other = (", ".join(f"{k}={fmt(config[k])}" for k in differ) for config in (earlier, trial.config))
            raise GridError(path, "command.run", f"trials with {one} and with {other} run the same command line "
                            f"({line}): it must tell their values apart (a format spec may round them to one)")


def _mapping(path, key, value, expected: str = "a mapping of parameter: value") -> dict:
    if not isinstance(value, dict):
        raise GridError(path, key, f"expected {expected}, got {fmt(value)}")
    return value


def _list(path, key, value) -> list:
    if not isinstance(value, list):
        raise GridError(path, key, f"expected a list, got {fmt(value)}")
    return value


def _read(path: Path, content: bytes | None) -> dict:
    """The file's mapping, its top-level keys and name checked."""
    data = read_yaml(path, content)
    if not isinstance(data, dict):
        raise GridError(path, "", f"expected a YAML mapping with keys {', '.join(TOP_KEYS)}")
    for key in data:
        if key not in TOP_KEYS:
            raise GridError(path, str(key), f"unknown key (allowed: {', '.join(TOP_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise GridError(path, "name", f"expected a name of letters, digits, '_', '.' or '-' "
                                      f"(it names the results folder), got {fmt(name)}")
    return data


def _workload(path: Path, data: dict) -> tuple[Workload, str]:
    """The workload the grid runs, and the ref that finds it again (Grid.workload_ref)."""
    if "command" in data:  # a training script (script.py)
        if "workload" in data:
            raise GridError(path, "command", "give either 'workload' (Python) or 'command' (a script to run), not both")
        return load_script(path, data["command"])
    ref = data.get("workload", workloads.DEFAULT)
    if not isinstance(ref, str):
        raise GridError(path, "workload", f"expected a registered name or module:object, got {fmt(ref)}")
    try:
        return workloads.get(ref), ref
    except workloads.UnknownWorkload as e:
        raise GridError(path, "workload", str(e)) from None


def _spec(path: Path, data: dict, params: Parameters) -> Spec:
    """What the file says about its trials, every value checked against the workload."""
    axes = _axes(params, _mapping(path, "axes", data.get("axes") or {}))
    fixed = {}
    for name, v in _mapping(path, "fixed", data.get("fixed") or {}).items():
        params.param(f"fixed.{name}", name)
        if name in axes:
            params.fail(f"fixed.{name}", "is also an axis; give it in one place")
        fixed[name] = params.value(f"fixed.{name}", name, v)
    seeds = _seeds(path, data, params)
    excludes = [_rule(params, f"exclude[{i}]", rule, axes, axes_only=True)
                for i, rule in enumerate(_list(path, "exclude", data.get("exclude") or []))]
    includes = [_rule(params, f"include[{i}]", rule, axes, axes_only=False)
                for i, rule in enumerate(_list(path, "include", data.get("include") or []))]
    for i, rule in enumerate(includes):
        missing = [a for a in axes if a not in rule]
        if missing:
            params.fail(f"include[{i}]", f"must give every axis; missing {', '.join(missing)}")
    return Spec(path, params.workload, axes, fixed, seeds, excludes, includes)


def _axes(params: Parameters, given: dict) -> dict[str, list]:
    axes: dict[str, list] = {}
    for name, values in given.items():
        key = f"axes.{name}"
        params.param(key, name)
        if not params.fields[name].metadata.get("identity", True):  # its trials would have one id
            params.fail(key, "does not change what a trial computes (the workload says so: identity false), "
                             "so it cannot be an axis; set it in fixed")
        if not isinstance(values, list) or not values:
            params.fail(key, f"expected a non-empty list of values, got {fmt(values)}")
        axes[name], seen = [], set()
        for i, v in enumerate(values):
            v = params.value(f"{key}[{i}]", name, v)
            if hashable(v) in seen:
                params.fail(f"{key}[{i}]", f"duplicate value {fmt(v)}")
            seen.add(hashable(v))
            axes[name].append(v)
    return axes


def _check_count(spec: Spec, limit: int) -> None:
    """Counted before anything is expanded: `repeats: 100000000` is refused at once, not after minutes."""
    planned = (math.prod(map(len, spec.axes.values()))
               + sum(math.prod(map(len, r.values())) for r in spec.include)) * len(spec.seeds)
    if planned > limit:
        raise GridError(spec.path, "", f"the grid expands to {planned:,} trials"
                                       f"{' before exclusions' if spec.exclude else ''}, more than max_trials "
                                       f"({limit:,}); set max_trials: N at the top of the grid to run that many")


def _seeds(path, data, params: Parameters) -> Sequence[int]:
    if "seeds" in data and "repeats" in data:
        raise GridError(path, "repeats", "give either 'seeds' or 'repeats', not both")
    if "repeats" in data:  # a range, not a list: counted before it is expanded
        return range(number(path, "repeats", data["repeats"], integer=True, minimum=1))
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        count = f" ({seeds} seeds from 0: repeats: {seeds})" if isinstance(seeds, int) and seeds > 0 else ""
        raise GridError(path, "seeds", f"expected a non-empty list of integers, got {fmt(seeds)}{count}")
    for i, s in enumerate(seeds):
        if not isinstance(s, int) or isinstance(s, bool):
            raise GridError(path, f"seeds[{i}]", f"expected an integer, got {fmt(s)}")
        params.value(f"seeds[{i}]", "seed", s)  # what the workload declares for its seed
    seen = set()
    for i, s in enumerate(seeds):
        if s in seen:
            raise GridError(path, f"seeds[{i}]", f"duplicate value {s}")
        seen.add(s)
    return seeds


def _rule(params: Parameters, key: str, rule, axes: dict, axes_only: bool) -> dict[str, list]:
    """An exclude/include rule as {parameter: [values]}; a single value stands for a list of one."""
    if not isinstance(rule, dict) or not rule:
        params.fail(key, f"expected a mapping of parameter: value or [values], got {fmt(rule)}")
    out = {}
    for name, values in rule.items():
        k = f"{key}.{name}"
        if axes_only and name not in axes:
            params.fail(k, f"not an axis (axes: {', '.join(axes) or 'none'})")
        params.param(k, name)
        if params.item_type(name) is not None:  # [200, 250] is one value; [[200], [250]] two
            values = values if isinstance(values, list) and all(isinstance(v, list) for v in values) else [values]
        elif not isinstance(values, list):
            values = [values]
        if not values:
            params.fail(k, "expected a value or a non-empty list of values, got []")
        out[name] = [params.value(k if len(values) == 1 else f"{k}[{i}]", name, v) for i, v in enumerate(values)]
    return out


@dataclass(frozen=True)
class SavedGrid:
    """What a run's grid.yaml says, read once (read_saved_grid)."""
    grid: Grid | None  # where it loads here
    untrusted: str | None = None  # the workload it names, where that was not imported
    data: dict | None = None  # then, the file as data (a readable mapping), read without the workload


def read_saved_grid(run, trust_workload: bool = False, notify=None) -> SavedGrid:
    """The grid a run (store.RunDir) was last run with, from its grid.yaml (None where there is
    none, or it no longer loads here: with `notify`, said in a note), and the workload it names
    where that was not imported: a module that is not a registered workload, which only
    `trust_workload` imports. Whoever can write a run directory (a shared bucket, a teammate's
    folder) writes its grid.yaml, and reading the run's results must not run a module it names. A
    registered workload is part of this installation, and a `command:` grid runs nothing here."""
    content = run.read_bytes(run.child(GRID_FILE))
    if content is None:
        return SavedGrid(None)
    path = run.display(GRID_FILE)
    try:
        if not trust_workload:
            data = read_yaml(Path(path), content)
            ref = data.get("workload", workloads.DEFAULT) if isinstance(data, dict) else None
            if (isinstance(ref, str) and "command" not in data
                    and ref not in workloads.REGISTRY and ref not in workloads.REGISTRY.values()):
                return SavedGrid(None, ref, data)
        return SavedGrid(load_grid(path, content, check_trials=False))
    except GridError as e:  # a damaged copy, or a grid this installation no longer takes
        if notify is not None:
            notify(f"{e}; the run is shown without its grid")
        return SavedGrid(None)


def saved_objective(run, saved: SavedGrid) -> Objective:
    """What a run's trials are judged by, from read_saved_grid's answer: its grid's objective; for
    a run whose workload was not imported, what its grid.yaml declares, read without the workload
    (the interface's defaults for what it leaves out, or where it says nothing that can be read);
    else the interface's defaults."""
    if saved.grid:
        return saved.grid.objective
    data = saved.data
    if data is None or not any(key in data for key in ("metric", "mode", "report")):
        return INTERFACE
    try:
        return Objective(*declared(Path(run.display(GRID_FILE)), data, INTERFACE, strict=False), declared=True)
    except GridError:
        return INTERFACE


def saved_parameters(saved: SavedGrid) -> list[str] | None:
    """For a run whose workload was not imported (read_saved_grid), the parameters its grid.yaml
    names, read as data: axes, fixed values, include rules and the seed. Without the workload's
    config they tell a parameter from a metric its trials returned (a train_loss taken for a
    parameter would split every setting into single seeds). None otherwise."""
    data = saved.data
    if data is None:
        return None
    include = data.get("include")
    named = [data.get("axes"), data.get("fixed"), *(include if isinstance(include, list) else [])]
    return list(dict.fromkeys([name for part in named if isinstance(part, dict) for name in part] + ["seed"]))
