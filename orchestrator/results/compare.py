"""Differences between the values of one axis, paired by seed, and the study's claims about them.

    results = load(RunDir("runs/paper"))
    axis, base = baseline(results, "variant=base")
    for d in compare(results, layout_for(results, workload.layout), axis, base):
        print(d.coords, d.value, d.mean, d.interval, d.verdict)

A cell is one combination of the layout's axes (e.g. dataset, augmentation, model) other than
the compared one; in each, every value of the compared axis is set against the baseline's. Each
side's value is chosen as `summarize` chooses it (the best learning rate on validation data),
then the two are paired by seed: the runs of one seed share what the seed decides (weight-init
stream, data order, augmentation and dropout draws), and what they share cancels in the
difference. The interval is the t-interval of the mean paired difference (stats.py).

A claim (a workload's `claims`, workloads/base.py) says which way such a difference goes, within
a tolerance, in named cells; `check_claims` says whether the seeds show it holds, fails, or
cannot tell yet.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.errors import ResultsError
from orchestrator.results import stats
from orchestrator.results.references import differences
from orchestrator.results.select import matches
from orchestrator.results.tables import Cell, Layout, Results, as_written, cell_of
from orchestrator.results.trials import Trials, concat

# What the seeds say about one paired difference; where a side has no value, why instead (its
# cell's status: diverged, failed, no result yet, not in the grid, ...), which more seeds would not change.
VERDICTS = ("lower", "higher", "inconclusive", "n too small", "not finite")


@dataclass
class Difference:
    coords: dict[str, Any]  # the cell, e.g. {"dataset": "cifar10", "augmentation": "none", "model": "C"}
    axis: str
    value: Any  # the compared value of the axis; the baseline is `baseline_value`
    baseline_value: Any
    metric: str
    baseline: Cell
    compared: Cell
    n: int = 0  # seeds with a value on both sides
    mean: float | None = None  # compared minus baseline, averaged over those seeds
    interval: tuple[float, float] | None = None  # 95% paired t-interval; None: n too small, or not finite

    better_when: str = "min"  # the metric's mode: whether lower or higher is better
    reduced: tuple[str, ...] = ()  # the axes each side's setting is chosen among (pooled, under select=all)

    @property
    def unvalued(self) -> dict[Any, str]:
        """The sides with no value, each its value of the axis and its cell's status (diverged, ...)."""
        sides = {self.baseline_value: self.baseline, self.value: self.compared}
        return {value: cell.status for value, cell in sides.items() if cell.status != "completed"}

    @property
    def verdict(self) -> str:
        """lower / higher: the interval excludes 0; inconclusive: it does not; n too small; not
        finite: a seed's value is inf (a loss that blew up), so is the difference: no interval.
        Where a side has no value, its status (both sides': "failed, diverged")."""
        if self.unvalued:
            return ", ".join(dict.fromkeys(self.unvalued.values()))
        if self.mean is not None and not math.isfinite(self.mean):
            return "not finite"
        if self.interval is None:
            return "n too small"
        low, high = self.interval
        return "lower" if high < 0 else "higher" if low > 0 else "inconclusive"

    @property
    def better(self) -> bool | None:
        """Whether the compared value is better than the baseline, where the seeds tell."""
        if self.verdict not in ("lower", "higher"):
            return None
        return (self.verdict == "lower") == (self.better_when == "min")


def baseline(results: Results, text: str) -> tuple[str, Any]:
    """`axis=value` (as typed on the command line) as the axis and its value in the results."""
    axis, sep, value = text.partition("=")
    if not sep or not axis:
        raise ResultsError(f"--baseline '{text}': expected axis=value, e.g. variant=base")
    axes = ", ".join(a for a in results.choosable() if a != "seed")
    if axis == "seed":
        raise ResultsError(f"--baseline '{text}': differences are paired by seed; compare another axis (axes: {axes})")
    if axis not in results.config_columns:
        raise ResultsError(f"--baseline '{text}': unknown axis '{axis}' (axes: {axes})")
    values = results.values(axis)
    for v, match in zip(values, matches(values, value)):
        if match:
            return axis, v
    raise ResultsError(f"--baseline '{text}': no trial has {axis}={value} "
                       f"(values: {', '.join(as_written(v) for v in values if v is not None)})")


def compare(results: Results, layout: Layout, axis: str, base: Any, values: list | None = None) -> list[Difference]:
    """For every cell and every value of `axis` other than `base` (or those `values`), the paired
    difference."""
    cell_axes = [a for a in (*layout.tables, layout.rows, layout.cols) if a is not None and a != axis]
    reduced = [c for c in results.choosable() if c not in {*cell_axes, axis, "seed"}]
    others = [v for v in results.values(axis) if v != base] if values is None else values
    out = []
    groups = results.trials.groups(cell_axes, dropna=False) if cell_axes else {(): results.trials}
    for key, part in groups.items():
        coords = dict(zip(cell_axes, key))
        cells = {v: cell_of(part.matching({axis: v}), layout, reduced, results.planned_in({**coords, axis: v}))
                 for v in [base, *others]}
        # A pair the grid plans neither side of (both removed by an exclude rule) is no comparison.
        out += [_paired(coords, axis, v, base, layout, cells[base], cells[v], reduced) for v in others
                if not cells[base].status == cells[v].status == "not in the grid"]
    order = {a: results.values(a) for a in cell_axes}
    return sorted(out, key=lambda d: [order[a].index(d.coords[a]) for a in cell_axes])


def _paired(coords, axis, value, base, layout: Layout, baseline_cell: Cell, compared: Cell, reduced) -> Difference:
    seeds = [s for s in compared.values if s in baseline_cell.values]
    diffs = [compared.values[s] - baseline_cell.values[s] for s in seeds]
    finite = all(math.isfinite(d) for d in diffs)
    return Difference(coords, axis, value, base, layout.metric, baseline_cell, compared, n=len(diffs),
                      mean=sum(diffs) / len(diffs) if diffs else None,
                      interval=stats.interval(diffs) if finite else None,
                      better_when=layout.shown.mode, reduced=tuple(reduced))


# What a claim's check can say. "not enough seeds": fewer than two paired seeds, or an interval
# that still reaches both sides of the tolerance (more seeds would narrow it); "not finite": a
# seed's value is inf (a loss that blew up), which no interval can judge; "not checked": a side
# has no value (failed, diverged, no result yet), which more seeds would not change.
CLAIM_VERDICTS = ("holds", "fails", "not enough seeds", "not finite", "not checked")


@dataclass
class ClaimCheck:
    claim: dict  # as the workload states it
    difference: Difference
    verdict: str
    reason: str  # why not enough seeds or not checked, e.g. "n=1" or "base: failed"
    differs: list[str] = field(default_factory=list)  # where the trials left the claim's protocol

    @property
    def comparable(self) -> bool | None:
        """Whether the trials checked ran the claim's protocol on its data; None: no trial ran."""
        ran = self.difference.baseline.trials is not None or self.difference.compared.trials is not None
        return not self.differs if ran else None


def check_claims(results: Results, layout: Layout, claims: tuple[dict, ...]) -> list[ClaimCheck]:
    """Each claim in each of its cells that these results have trials for, where the results
    have both of the values it compares (a study without ConvPool runs is not asked about it)."""
    out = []
    for claim in claims:
        if claim["axis"] not in results.trials.columns \
                or not {claim["baseline"], claim["compared"]} <= set(results.values(claim["axis"])):
            continue
        claim_layout = replace(layout, metric=claim["metric"], select="best")
        for where in claim["cells"]:
            trials = _matching(results.trials, where)
            if trials is None or trials.empty or claim["metric"] not in trials.columns:
                continue
            part = dataclasses.replace(results, trials=trials)
            out += [_check(claim, d) for d in compare(part, claim_layout, claim["axis"], claim["baseline"],
                                                      [claim["compared"]])]
    return out


def _matching(trials: Trials, where: dict) -> Trials | None:
    """Trials with every value of `where`; None if the results have no such column."""
    if any(name not in trials.columns for name in where):
        return None
    return trials.matching(where)


def _check(claim: dict, d: Difference) -> ClaimCheck:
    sides = [d.baseline, d.compared]
    ran = [cell.trials for cell in sides if cell.trials is not None]
    differs = differences(concat(ran), claim.get("protocol", {}), claim.get("data", {})) if ran else []
    if d.unvalued:
        return ClaimCheck(claim, d, "not checked", "; ".join(f"{v}: {s}" for v, s in d.unvalued.items()), differs)
    if d.interval is None:
        if d.verdict == "not finite":
            return ClaimCheck(claim, d, "not finite", "a seed's value is inf", differs)
        return ClaimCheck(claim, d, "not enough seeds", f"n={d.n}", differs)
    # "lower" claims compared - baseline < +tolerance (for an error: no worse), "higher" claims
    # compared - baseline > -tolerance; turned around, "higher" reads as "lower".
    sign = 1 if claim["direction"] == "lower" else -1
    low, high = sorted((sign * d.interval[0], sign * d.interval[1]))
    tolerance = claim.get("tolerance", 0.0)
    if high < tolerance:
        return ClaimCheck(claim, d, "holds", "", differs)
    if low > tolerance:
        return ClaimCheck(claim, d, "fails", "", differs)
    return ClaimCheck(claim, d, "not enough seeds", "the interval reaches both sides of the tolerance", differs)
