"""Tables from a run's Parquet results: the paper's layout, or any rows x columns of any grid.

    results = load(RunDir("runs/paper"))
    for table in summarize(results, layout_for(results)):
        print(table.key, table.cells[("C", "all")].mean)

Reads Parquet only, never Ray, and holds the trials in plain Python (trials.py). Each cell is
one (rows, cols) combination inside one table; the remaining axes that vary (the learning rate,
say) are reduced either by choosing the group with the best validation error (`select="best"`:
the paper reports the best learning rate per network, and choosing it on test data would
flatter every cell) or by pooling all (`"all"`).
A group is judged on all its seeds: one with a seed that diverged or failed is chosen only where
every group has one (its survivors alone would flatter it), and a cell says how many did not finish.
Seeds are what the mean, std, n and the 95% interval (stats.py) are taken over; under "all", the
pooled trials, and a published number (of one setting) gets no difference to such a pool.

A published number (a workload's `references`) gets a difference to a cell only where the cell
is like for like (references.py); `--where` picks trials (select.py).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import pyarrow as pa

from orchestrator.errors import ResultsError
from orchestrator.plan.expand import hashable
from orchestrator.plan.grid import Grid, read_saved_grid, saved_objective, saved_parameters
from orchestrator.plan.halving import Halving, as_decided, read_decisions
from orchestrator.plan.objective import INTERFACE, Metric, Objective
from orchestrator.results import stats
from orchestrator.results.references import REFERENCE_KEYS, differences, reference
from orchestrator.results.trials import Trials
from orchestrator.store import records
from orchestrator.store.columns import OLD_METRICS, RESERVED
from orchestrator.store.records import STATUSES
from orchestrator.store.rundir import RunDir
from workloads.base import Workload

@dataclass
class Results:
    trials: Trials
    run: RunDir
    grid: Grid | None  # the grid as last run, where it still loads here
    objective: Objective = INTERFACE  # what its trials are judged by
    others: int = 0  # trials of the run directory that are not the grid's as last run, left out
    untrusted: str | None = None  # the workload grid.yaml names, where it was not imported (plan/grid.py)
    parameters: list[str] | None = None  # then, the parameters its grid.yaml names (saved_parameters)
    # The grid's trials, each its config and trial_id, as the rows have them: a cell counts those with no row yet.
    planned: tuple[dict, ...] | None = None
    decisions: list[dict] = field(default_factory=list)  # its halving's, as recorded (halving.json)

    @property
    def axes(self) -> dict[str, list]:
        """The grid's axes in the file's order; empty without the grid."""
        return self.grid.axes if self.grid else {}

    @property
    def workload(self) -> Workload | None:
        return self.grid.workload if self.grid else None

    @property
    def config_columns(self) -> list[str]:
        """The columns that are parameters: the workload's; for a workload that was not imported,
        those its grid.yaml names; or where the grid does not load here, those that are neither
        every row's own columns nor a metric."""
        if self.grid:
            return [f.name for f in fields(self.grid.workload.config) if f.name in self.trials.columns]
        if self.parameters is not None:
            return [c for c in self.trials.columns if c in self.parameters]
        metrics = {*OLD_METRICS, *self.objective.names}
        return [c for c in self.trials.columns if c not in RESERVED and c not in metrics]

    def varying(self) -> list[str]:
        """Config columns with more than one value, in the grid's axis order first. Never a field
        the trial id does not depend on (a workload marks it {"identity": False}: how often to
        checkpoint, where data lives): seeds of one setting may differ there, as they ran at other times."""
        same = set()
        if self.workload:
            same = {f.name for f in fields(self.workload.config) if not f.metadata.get("identity", True)}
        # With the values the grid plans: a run partly done is laid out as the whole will be, not by seed.
        planned = self.planned or ()
        varying = [c for c in self.config_columns if c not in same
                   and len({*map(hashable, self.trials.distinct(c)), *(t[c] for t in planned if c in t)}) > 1]
        return sorted(varying, key=lambda c: list(self.axes).index(c) if c in self.axes else len(self.axes))

    def choosable(self) -> list[str]:
        """What the choice among settings may be made over: the axes that vary. Without the grid,
        every parameter that varies. A value no axis varies (a fixed value edited between runs,
        under --all-trials) is another protocol, never a choice (see layout_for)."""
        varying = self.varying()
        return [c for c in varying if c in self.axes or c == "seed"] if self.grid else varying

    def values(self, column: str) -> list:
        """The column's values in the grid's order, then the others; None last where some row
        has none (a parameter older rows lack)."""
        distinct = self.trials.distinct(column)
        present = [v for v in distinct if v is not None]
        order = [hashable(v) for v in self.axes.get(column, []) if hashable(v) in present]  # a list as a tuple
        missing = [None] if None in distinct else []
        return order + sorted((v for v in present if v not in order), key=str) + missing

    def has(self, metric: str) -> None:
        """ResultsError naming the metrics the results have, unless they have numbers of `metric`."""
        if metric not in self.trials.columns or _all_missing(self.trials[metric]):
            if metric in self.objective.names and "completed" not in self.trials["status"]:
                return  # a metric the grid declares, and no trial finished: its cells say how they ended
            have = [c for c in self.trials.columns if c not in RESERVED and c not in self.config_columns
                    and self.numeric(c) and not _all_missing(self.trials[c])]
            # A script's grid without `metric:` is read by the defaults, names its user never gave.
            default = self.grid is not None and not self.objective.declared and metric in self.objective.names
            raise ResultsError(f"{self.run.display()}: no trial has a value of {metric} "
                               f"(metrics: {', '.join(sorted(have)) or 'none'})"
                               + (f"; the grid names no metric, and {metric} is the default: give --metric "
                                  "(summarize, compare), or name the grid's (metric:, report:) and `ablate run` it "
                                  "again, which trains nothing more" if default else ""))
        if not self.numeric(metric):
            example = next(v for v in self.trials[metric] if v is not None)
            raise ResultsError(f"{self.run.display()}: {metric} is not numeric (values such as '{example}'), "
                               "so it has no mean over seeds")

    def planned_in(self, point: dict[str, Any]) -> list[dict] | None:
        """The grid's trials with these values (a cell's), run or not; None where that is not known:
        no grid, or a point on a column that is no parameter."""
        if self.grid is not None and point.get("grid") == self.grid.name and self.planned \
                and "grid" not in self.planned[0]:  # the one cell of a grid whose only varying axes are halved
            point = {name: value for name, value in point.items() if name != "grid"}
        if self.planned is None or (self.planned and any(name not in self.planned[0] for name in point)):
            return None
        return [t for t in self.planned if all(t[name] == value for name, value in point.items())]

    def numeric(self, column: str) -> bool:
        """Whether a column holds numbers, which a cell can take the mean of (a flag's is a fraction).
        A script's text ("0.4321", a checkpoint's name) is not read as one."""
        kind = self.trials.table.schema.field(column).type
        return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind) \
            or pa.types.is_null(kind)


@dataclass
class Layout:
    rows: str
    cols: str | None = None
    tables: list[str] = field(default_factory=list)
    metric: str = "test_error"  # what each cell shows
    select: str = "best"  # best | all
    by: str = "val_error"  # what "best" chooses by: validation data, never test
    mode: str = "min"  # which way `by` is better
    shown: Metric | None = None  # how `metric` is shown and which way it is better; None: Metric(metric)
    halving: Halving | None = None  # how the run chose its settings, where it halved them

    def __post_init__(self):
        if self.shown is None or self.shown.name != self.metric:
            self.shown = Metric(self.metric, self.mode)


@dataclass
class Cell:
    # completed (has a value), failed, diverged, dead_start, no_progress, pending; with no trial: no result
    # yet (the grid plans some), not in the grid (it plans none: an exclude rule, a value only an include
    # gives elsewhere), missing (not known: no grid)
    status: str
    mean: float | None = None
    std: float | None = None
    n: int = 0
    interval: tuple[float, float] | None = None  # 95% t-interval of the mean; None: n too small
    chosen: dict[str, Any] = field(default_factory=dict)  # values of the reduced axes picked by `best`
    params: int | None = None
    reference: float | None = None
    # Whether the trials behind the value ran the reference's protocol on its data; None
    # without a reference or a value. `differs` names what did not, e.g. ["width 0.25"].
    comparable: bool | None = None
    differs: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # statuses of every trial in the cell
    # What else the value rests on, in words: seeds behind it that did not finish, a choice that
    # could not be made as the table's title says.
    notes: list[str] = field(default_factory=list)
    # The metric of each trial behind the value, by seed (and the pooled axes under select=all):
    # what a difference between two cells is paired on.
    values: dict[tuple, float] = field(default_factory=dict)
    trials: Trials | None = field(default=None, repr=False, compare=False)  # those trials

    @property
    def difference(self) -> float | None:
        """Our mean minus the published number: only for a like-for-like comparison."""
        if self.mean is None or self.reference is None or not self.comparable:
            return None
        return self.mean - self.reference


@dataclass
class Table:
    key: dict[str, Any]  # the table's coordinates, e.g. {"dataset": "cifar10", "augmentation": "none"}
    rows: list
    cols: list
    cells: dict[tuple, Cell]
    layout: Layout
    reduced: list[str]
    synthetic: bool = False


def load(run: RunDir, all_trials: bool = False, notify=None, trust_workload: bool = False) -> Results:
    """A run's results: the trials of its grid as last run (`all_trials`: every trial the run
    directory holds), each metric's value as the grid declares it taken from its reports. The grid
    is its saved one where it loads (plan/grid.py, read_saved_grid: a workload module that is not
    registered is imported only with `trust_workload`); without it the tables still show, laid out
    by the axes that vary, without published numbers or claims. With `notify`, a damaged results
    file or record is noted and read past (store/records.py)."""
    table = records.read_trials(run, notify)
    if table is None:
        damaged = run.fs.get_file_info(run.child("trials.parquet")).is_file  # and no record to read instead
        raise ResultsError(f"{run.display()}: no results yet (" + (
            "no readable trials.parquet, no record" if damaged else f"no {run.display('trials.parquet')}") + ")")
    saved = read_saved_grid(run, trust_workload, notify)
    grid, objective = saved.grid, saved_objective(run, saved)
    ids = table["trial_id"].to_pylist()
    planned = {t.trial_id for t in grid.trials} if grid else set(ids)
    mine = [i in planned for i in ids]
    shown = [True] * len(ids) if all_trials else mine
    table = _summarized(run, table, [i for i, show in zip(ids, shown) if show], objective, notify)
    for name in objective.names:  # a column, if empty: where no trial finished, cells say how they ended
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.float64()))
    trials = Trials(table).where(shown).sorted("trial_id")
    objective = _shown_as_recorded(objective, table)
    planned_trials = tuple({**{k: hashable(v) for k, v in t.config.items()}, "trial_id": t.trial_id}
                           for t in grid.trials) if grid else None
    return Results(trials, run, grid, objective, others=0 if all_trials else mine.count(False),
                   untrusted=saved.untrusted, parameters=saved_parameters(saved), planned=planned_trials,
                   decisions=_decisions(run, grid, notify))


def _decisions(run: RunDir, grid: Grid | None, notify=None) -> list[dict]:
    """The run's halving decisions, which say where its settings were stopped. Damaged, with
    `notify`: a note, and the table says the grid's rungs."""
    if grid is None or grid.halving is None:
        return []
    try:
        return read_decisions(run)
    except ResultsError as e:
        if notify is None:
            raise
        notify(str(e))
        return []


def _shown_as_recorded(objective: Objective, table: pa.Table) -> Objective:
    return replace(objective, metric=_as_recorded(objective.metric, table),
                   report=tuple(_as_recorded(m, table) for m in objective.report))


def _as_recorded(m: Metric, table: pa.Table) -> Metric:
    """A rate shown as a percentage by its name (val_accuracy) whose values are no fractions (a
    script that prints 91.3 for 91.3 %, a count of errors) is shown as the number recorded, not
    multiplied by 100."""
    column = table[m.name] if m.format is None and m.percent and m.name in table.column_names else None
    if column is None or not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        return m
    # As Python numbers: pyarrow.compute is not imported for this (see records.read_trials).
    finite = [v for v in column.to_pylist() if v is not None and math.isfinite(v)]
    return m if all(0 <= v <= 1 for v in finite) else replace(m, format="number")


def _summarized(run: RunDir, trials: pa.Table, ids: list[str], objective: Objective, notify=None) -> pa.Table:
    """The trials with each metric declared `best` or `at_best` taken from the reports of the
    trials `ids` (a row holds every metric's last value)."""
    wanted = [m for m in (objective.metric, *objective.report) if m.summary != "last"]
    if not wanted or not ids:
        return trials
    import pyarrow.compute as pc  # only here: see records.read_trials

    names = list(dict.fromkeys(name for m in wanted for name in (m.name, objective.metric.name)))
    epochs = records.read_epochs(run, ids, ["trial_id", *names], notify)
    if epochs is None:
        return trials
    for m in wanted:
        source = m if m.summary == "best" else objective.metric  # at_best: where the grid's metric was best
        if source.name not in epochs.column_names or m.name not in epochs.column_names:
            continue
        # Each trial's first report with the best value of `source`: a stable sort keeps the reports' order.
        ranked = epochs.filter(pc.invert(pc.is_null(epochs[source.name], nan_is_null=True)))
        ranked = ranked.sort_by([("trial_id", "ascending"),
                                 (source.name, "ascending" if source.mode == "min" else "descending")])
        best = ranked.group_by("trial_id", use_threads=False).aggregate(
            [(m.name, "first", pc.ScalarAggregateOptions(skip_nulls=False))])
        at_best = dict(zip(best["trial_id"].to_pylist(), best[f"{m.name}_first"].to_pylist()))
        own = trials[m.name].to_pylist() if m.name in trials.column_names else [None] * trials.num_rows
        # A trial with reports takes the value at its best one, even where that is missing.
        column = pa.array([at_best.get(i, value) for i, value in zip(trials["trial_id"].to_pylist(), own)])
        trials = (trials.set_column(trials.column_names.index(m.name), m.name, column) if m.name in trials.column_names
                  else trials.append_column(m.name, column))
    return trials


def layout_for(results: Results, workload_layout: dict | None = None, **overrides) -> Layout:
    """The workload's own layout where it has one, else the first two varying axes; the grid's
    objective says what is shown and what chooses. Parameters that vary but are no axis (a fixed
    value edited between runs) split the results into tables of their own: never pooled."""
    halved = results.grid.halving.over if results.grid and results.grid.halving else ()
    varying = [c for c in results.choosable() if c != "seed" and c not in halved]  # halved axes are chosen
    base = dict(workload_layout or {})
    if not base:
        base = {"rows": varying[0] if varying else "seed", "cols": varying[1] if len(varying) > 1 else None}
        if not varying and halved:  # one cell, its setting chosen by halving: one row, its mean over seeds
            base["rows"] = next((axis for axis in results.axes if axis not in halved),
                                "grid" if "grid" in results.trials.columns else "seed")
    base["tables"] = [t for t in base.get("tables", []) if t in results.trials.columns]
    objective = results.objective
    halving = as_decided(results.grid.halving, results.decisions) if results.grid and results.grid.halving else None
    if halving and "steps_completed" in results.trials.columns \
            and not _all_missing(results.trials["steps_completed"]):  # its rungs were steps
        halving = replace(halving, unit="step")
    base.update({"metric": objective.report[0].name, "by": objective.metric.name, "mode": objective.metric.mode,
                 "halving": halving})
    base.update({k: v for k, v in overrides.items() if v is not None})
    if overrides.get("tables") is None:  # the workload's tables give up a column asked for as rows or columns
        base["tables"] = [t for t in base["tables"] if t not in (base.get("rows"), base.get("cols"))]
    base["tables"] += [c for c in results.varying() if c not in results.choosable()
                       and c not in (*base["tables"], base.get("rows"), base.get("cols"))]
    # A metric the grid does not declare (--metric) is a percentage only where its values are fractions too.
    layout = Layout(**base, shown=_as_recorded(objective.reported(base["metric"]), results.trials.table))
    columns = list(results.trials.columns)
    for option, names in (("--rows", [layout.rows]), ("--cols", [layout.cols]), ("--tables", layout.tables)):
        for name in names:
            if name is not None and name not in columns:
                given = f"{option}: " if overrides.get(option[2:]) is not None else ""  # else the workload's layout
                raise ResultsError(f"{given}unknown column '{name}' (columns: {', '.join(columns)})")
    placed: dict[str, str] = {}
    for place, name in [("rows", layout.rows), ("columns", layout.cols), *(("tables", t) for t in layout.tables)]:
        if name is not None and placed.setdefault(name, place) != place:  # a table of it would be its diagonal
            raise ResultsError(f"{name} is both the {placed[name]} and the {place}: give --rows, --cols and "
                               "--tables a column each")
    results.has(layout.metric)
    if layout.by in columns and not _all_missing(results.trials[layout.by]):
        results.has(layout.by)  # what chooses among settings is a mean too
    if layout.select not in ("best", "all"):
        raise ResultsError(f"--select must be best or all, got '{layout.select}'")
    return layout


def as_written(value) -> str:
    """A parameter's value as the grid file gives it: a list as [a, b]."""
    return "[" + ", ".join(map(as_written, value)) + "]" if isinstance(value, tuple) else str(value)


def summarize(results: Results, layout: Layout, references: tuple[dict, ...] = ()) -> list[Table]:
    trials = results.trials
    shape = [layout.rows, layout.cols, *layout.tables, "seed"]
    reduced = [c for c in results.choosable() if c not in shape]
    rows = results.values(layout.rows)
    cols = results.values(layout.cols) if layout.cols else [None]
    keys = [()]
    for name in layout.tables:
        keys = [(*k, v) for k in keys for v in results.values(name)]
    # The columns that place a published number: its cell's coordinates (dataset, model, ...).
    placed = {k for ref in references for k in ref if k != layout.metric and k not in REFERENCE_KEYS}

    out = []
    for key in keys:
        coords = dict(zip(layout.tables, key))
        part = trials.matching(coords)
        if part.empty:
            continue
        # What every trial of this table shares (e.g. dataset=cifar10) places it against references.
        shared = {k: part[k][0] for k in results.config_columns if k in placed and len(part.distinct(k)) == 1}
        # A trial whose row or column value is missing (a parameter older rows lack) has a cell too.
        by_cell = part.groups([layout.rows, layout.cols] if layout.cols else [layout.rows], dropna=False)
        cells = {}
        for r in rows:
            for c in cols:
                cell_trials = by_cell.get((r, c) if layout.cols else (r,), part.where([]))
                point = {**shared, **coords, layout.rows: r, **({layout.cols: c} if layout.cols else {})}
                planned = results.planned_in({**coords, layout.rows: r, **({layout.cols: c} if layout.cols else {})})
                cell = cell_of(cell_trials, layout, reduced, planned)
                # What was not chosen is pooled: under select=all, or with no validation value to choose by.
                pooled = [name for name in reduced if name not in cell.chosen]
                cells[(r, c)] = _compared(cell, reference(references, point, layout.metric), layout.metric, pooled)
        synthetic = "synthetic_data" in part.columns and True in part["synthetic_data"]
        out.append(Table(coords, rows, cols, cells, layout, reduced, synthetic))
    return out


def _compared(cell: Cell, reference: dict | None, metric: str, pooled: list[str]) -> Cell:
    """`pooled`: the axes whose settings a value pools (not chosen); a published number is of one."""
    if reference is None:
        return cell
    cell.reference = reference[metric]
    if cell.trials is not None:
        cell.differs = differences(cell.trials, reference.get("protocol", {}), reference.get("data", {})) \
            + [f"{name} pooled" for name in pooled if len(cell.trials.distinct(name)) > 1]
        cell.comparable = not cell.differs
    return cell


def cell_of(trials: Trials, layout: Layout, reduced: list[str], planned: list[dict] | None = None) -> Cell:
    """`planned`: the grid's trials of this cell, run or not, so that seeds not run in any of its
    settings (an interrupted run) are counted as those that did not finish."""
    if trials.empty:
        return Cell("missing" if planned is None else "no result yet" if planned else "not in the grid")
    counts = dict(Counter(trials["status"]).most_common())
    chosen: dict[str, Any] = {}
    notes: list[str] = []
    shown = trials  # the trials of what the cell shows: the chosen setting's, or all of them
    seeds = set(trials["seed"])
    if layout.select == "best" and reduced and any(_has_value(trials, layout.metric)):
        # A setting is judged on all its seeds: one with a seed that did not finish (diverged,
        # failed, ...) is chosen only where every setting has one. A missing parameter is a key too.
        # Judged by the grid's metric alone, so that every table of a run shows the same setting,
        # whichever metric it shows (one that only some trials report, too).
        groups = trials.groups(reduced, dropna=False)
        settings = [groups[key] for key in sorted(groups, key=lambda key: [(v is None, v) for v in key])]
        # A seed another setting of the cell has a row of, and this one not yet, did not finish either.
        eligible = [part for part in settings if all(_has_value(part, layout.by)) and set(part["seed"]) == seeds]
        scored = [(score, part) for part in eligible or settings if (score := _score(part, layout)) is not None]
        if scored:
            best = (min if layout.mode == "min" else max)(score for score, _ in scored)
            # Means equal but for rounding (0.15 and 0.18 against 0.165 twice) are a tie, not a choice.
            tied = [part for score, part in scored if math.isclose(score, best, rel_tol=1e-9, abs_tol=1e-12)]
            shown = tied[0]
            chosen = {name: shown[name][0] for name in reduced}
            if len(tied) > 1:
                which = " and ".join(", ".join(as_written(part[name][0]) for name in reduced) for part in tied)
                notes.append(f"{', '.join(reduced)} {which} tie on {layout.by}: the first taken")
            if not eligible:
                notes.append(f"no {', '.join(reduced)} had every seed finish")
        else:  # no validation data (val_size 0): nothing to choose by
            notes.append(f"no {layout.by}: {', '.join(reduced)} pooled")
    if reduced and "stopped" in counts:
        notes.append(_stopped(trials, reduced))
    finished = _has_value(shown, layout.metric)
    ok = shown.where(finished)
    if ok.empty:
        # No value to show: say why, the most telling status first. Settings stopped early are not
        # the cell's end while the grid plans trials of it that have no row (those kept train on).
        waiting = planned is not None and bool({t["trial_id"] for t in planned} - set(trials["trial_id"]))
        for status in ("failed", "diverged", "dead_start", "no_progress", *STATUSES):
            if counts.get(status) and not (status == "stopped" and waiting):
                return Cell(status, counts=counts)
        return Cell("no result yet" if waiting else "pending", counts=counts, notes=notes)
    values = [float(v) for v in ok[layout.metric]]
    params = [p for p in ok["params"] if p is not None] if "params" in ok.columns else []
    # Under select=all a seed has one trial per pooled value (each lr): those are paired too.
    pooled = [name for name in reduced if name not in chosen]
    if chosen:  # seeds the chosen setting has no row of, that another setting has or the grid plans
        wanted = seeds | {t["seed"] for t in planned or () if all(t[k] == v for k, v in chosen.items())}
        unrun = len(wanted - set(shown["seed"]))
    else:  # the cell's planned trials with no row
        unrun = len({t["trial_id"] for t in planned or ()} - set(trials["trial_id"]))
    if not all(finished) or unrun:
        why = [s if s != "completed" else "completed without it" for s, f in zip(shown["status"], finished) if not f]
        why += ["no result yet"] * unrun
        kinds = sorted(Counter(why).items(), key=lambda kind: (-kind[1], kind[0]))
        said = kinds[0][0] if len(kinds) == 1 else ", ".join(f"{n} {kind}" for kind, n in kinds)
        # A seed that completed without the metric (a script that did not print it) did finish.
        verb = f"gave no {layout.metric}" if "completed without it" in why else "did not finish"
        notes.insert(0, f"{len(why)} of {len(shown) + unrun} {'trials' if pooled else 'seeds'} {verb} ({said})")
    by_seed = dict(zip(zip(*(ok[name] for name in ["seed", *pooled])), values))
    with np.errstate(invalid="ignore"):  # a loss that went to inf: its std is NaN, shown as "-"
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return Cell("completed", mean=_mean(values), std=std,
                n=len(values), interval=stats.interval(values), chosen=chosen,
                params=int(params[0]) if params else None, counts=counts, values=by_seed, trials=ok,
                notes=notes)


def _stopped(trials: Trials, reduced: list[str]) -> str:
    """Which settings were stopped early, and where: `stopped early: lr 0.3, 0.4 at 2; lr 0.2 at 4`
    (the epoch, or the step of a script that reports steps)."""
    where: dict[Any, set[str]] = {}
    stopped = trials.where([s == "stopped" for s in trials["status"]])
    steps = stopped["steps_completed"] if "steps_completed" in stopped.columns else [None] * len(stopped)
    for *values, epochs, step in zip(*(stopped[name] for name in reduced), stopped["epochs_completed"], steps):
        where.setdefault(epochs if step is None else step, set()).add(", ".join(map(as_written, values)))
    name = ", ".join(reduced)
    return "stopped early: " + "; ".join(f"{name} {', '.join(sorted(v))} at {at}" for at, v in
                                         sorted(where.items(), key=lambda item: (item[0] is None, item[0] or 0)))


def _has_value(trials: Trials, metric: str) -> list[bool]:
    """Which trials finished with a value of `metric`."""
    return [status == "completed" and value is not None for status, value in zip(trials["status"], trials[metric])]


def _score(setting: Trials, layout: Layout) -> float | None:
    """What a setting is chosen by: the mean of `by` over its trials that finished with one."""
    values = [v for v, ok in zip(setting[layout.by], _has_value(setting, layout.by)) if ok]
    return _mean(values) if values else None


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def _all_missing(values) -> bool:
    return all(v is None for v in values)
