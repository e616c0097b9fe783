"""What a grid's trials are judged by: the metric that chooses among the settings of a cell, which
way is better, and the metrics the tables show, each with how a trial's value is taken from its
reports and how it is shown.

    metric: val_loss                 # or {name: val_loss, summary: best}
    mode: min                        # or max (accuracy, BLEU)
    report: [test_loss, {name: test_acc, summary: at_best, format: percent}]

A grid that declares none of them takes its workload's (workloads/base.py: `val_error`, min,
`test_error` unless the workload says otherwise); a grid that declares `metric` and no `report`
reports its metric.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from orchestrator.errors import GridError
from orchestrator.plan.params import fmt
from orchestrator.store.columns import OLD_KEPT_PREFIX, RESULT_COLUMNS, kept_as, taken, workload_columns

# Columns ablate writes in words or times for every trial (a failed one's `error`, its `host`): a
# metric of the same name would share a column with them, numbers beside text.
WRITTEN = frozenset({"trial_id", "status", *(name for name, kind in RESULT_COLUMNS if kind not in ("int64", "double"))})

MODES = ("min", "max")
# A trial's value of a metric: its last report (or what train returned), its best report, or its
# value at the report where the grid's metric was best (a report metric only).
SUMMARIES = ("last", "best", "at_best")
FORMATS = ("percent", "number")
METRIC_KEYS = ("name", "summary", "mode", "format")


@dataclass(frozen=True)
class Metric:
    name: str
    mode: str = "min"  # which way is better
    summary: str = "last"
    format: str | None = None  # None: percent for names that end in error or accuracy (results.tables
    # keeps a number where the values are no fractions), else a number

    @property
    def percent(self) -> bool:
        if self.format is not None:
            return self.format == "percent"
        return self.name.endswith(("error", "accuracy"))

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def best(self, values) -> float | None:
        """The best of `values` in this metric's mode, as the tables take it: what is not a
        number (None, NaN, text) is passed over; None if nothing is left."""
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v]
        return (min if self.mode == "min" else max)(numbers, default=None)


@dataclass(frozen=True)
class Objective:
    metric: Metric  # chooses among the settings of a cell: validation data, never test
    report: tuple[Metric, ...]  # what the tables show
    declared: bool = False  # the grid's own, not its workload's defaults: each trial must give them

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.metric.name, *(m.name for m in self.report)]))

    def reported(self, name: str) -> Metric:
        """The declared report metric of that name, or one with the grid's mode (`--metric`)."""
        for m in (*self.report, self.metric):
            if m.name == name:
                return m
        return Metric(name, mode=implied_mode(name, self.metric))


def implied_mode(name: str, judged: Metric) -> str:
    """Which way a metric without a mode of its own is better. The grid's `mode` is that of its metric,
    `judged`: a metric of another kind by its name (a loss beside an accuracy) goes the other way."""
    kind = _kind(name)
    return judged.mode if name == judged.name or kind is None or kind == _kind(judged.name) else kind


# Which way a metric is better, by the last word of its name: words that name one kind of metric
# only. A word ending in one of the first few counts too (`trainloss`, `valacc`).
LOWER, LOWER_ENDINGS = ("ppl", "perplexity", "wer", "cer", "nll", "mse", "rmse", "mae"), ("loss", "error", "err")
HIGHER, HIGHER_ENDINGS = ("f1", "auc", "auroc", "map", "bleu"), ("accuracy", "acc")
AT_K = ("top",)  # a word only with its k: top1, top-5
# Words after the one that says the kind (f1_score, error_rate, f1_macro, loss_mean), as a k or an
# IoU is (acc@1, mAP50-95).
SKIPPED = ("score", "rate", "macro", "micro", "weighted", "mean", "avg")


def _kind(name: str) -> str | None:
    """The mode a metric's name says (`val_loss`, `test/acc@1`, `top1_acc`, `bleu`, `wer`), or None
    where it says none: a loss or an error is minimized, an accuracy maximized."""
    words = re.findall(r"[a-z0-9]+", name.lower())
    k = False
    while words and (words[-1].isdigit() or words[-1] in SKIPPED):
        k |= words.pop().isdigit()
    if not words:
        return None
    word = words[-1]
    stem = word.rstrip("0123456789")  # acc1, top5, map50: at its k, or an IoU
    for w in (word, stem):
        if w in LOWER or w.endswith(LOWER_ENDINGS):
            return "min"
        if w in HIGHER or w.endswith(HIGHER_ENDINGS) or (w in AT_K and (k or stem != word)):
            return "max"
    return None


# What trials are judged by where no grid says: the workload interface's defaults (workloads/base.py).
INTERFACE = Objective(Metric("val_error"), (Metric("test_error"),))


def default(workload) -> Objective:
    return Objective(Metric(workload.metric, workload.mode),
                     tuple(Metric(name, workload.mode) for name in workload.report))


def objective(path, data: dict, workload, strict: bool = True) -> Objective:
    """The grid's `metric`, `mode` and `report`, each checked (`strict`: see declared); the
    workload's where not given."""
    if not any(key in data for key in ("metric", "mode", "report")):
        return default(workload)
    # A parameter given as the metric (`metric: lr`) is said first: its name says no mode either.
    parameters = {f.name for f in dataclasses.fields(workload.config)}
    kept_apart = taken(parameters)  # a trial's own metrics of these names are kept as reported_<name>
    report = data.get("report", [])
    for key, given in [("metric", data.get("metric")),
                       *((f"report[{i}]", m) for i, m in enumerate(report if isinstance(report, list) else [report]))]:
        name = given.get("name") if isinstance(given, dict) else given
        own = f" (a trial's own '{name}' is kept as '{kept_as(name)}')" if isinstance(name, str) and name in kept_apart \
            else ""
        if isinstance(name, str) and name in parameters:
            owner = "the command" if workload.invocation else f"workload '{workload.name}'"
            raise GridError(path, key, f"'{name}' is a parameter of {owner}; name a metric its trials report{own}")
        if not (strict and isinstance(name, str)):  # (a run an older ablate let be is read as it ran)
            continue
        if name in WRITTEN:
            raise GridError(path, key, f"'{name}' is a column ablate writes for every trial, in words; name a metric "
                                       f"its trials report{own}")
        if name == "params" and workload.invocation:  # a Python workload's parameter count: none for a script
            raise GridError(path, key, f"'params' is the column of a Python workload's parameter count, empty for "
                                       f"a command's trials; name a metric its trials report{own}")
        if workload.invocation and (old := name.removeprefix(OLD_KEPT_PREFIX)) != name and old in kept_apart:
            raise GridError(path, key, f"'{name}' is where an older ablate kept a script's own '{old}'; it is kept "
                                       f"as '{kept_as(old)}' now: name that")
    metric, report = declared(path, data, default(workload), strict)
    # What a workload says it produces, under the columns its trials' rows keep them in (run/trial.py).
    produced = None if workload.produces is None else workload_columns(workload, workload.produces)
    for key, m in [("metric", metric), *((f"report[{i}]", m) for i, m in enumerate(report))]:
        if produced is not None and m.name not in produced:
            raise GridError(path, key, f"workload '{workload.name}' reports no metric '{m.name}' "
                                       f"(it reports: {', '.join(produced)})")
    return Objective(metric, report, declared=True)


def declared(path, data: dict, defaults: Objective, strict: bool = True) -> tuple[Metric, tuple[Metric, ...]]:
    """The metric and report a grid file's mapping declares, each checked on its own, with
    `defaults` for what it leaves out; nothing is checked against a workload. Not `strict`, for a
    grid that ran: a metric without a mode whose name does not say one is minimized, as it ran."""
    mode = data["mode"] if "mode" in data else \
        defaults.metric.mode if "metric" not in data else _mode_of(path, data["metric"], strict, defaults.metric)
    if mode not in MODES:
        raise GridError(path, "mode", f"expected min or max, got {fmt(mode)}")
    metric = _metric(path, "metric", data.get("metric", defaults.metric.name), mode, summaries=("last", "best"))
    given = data.get("report", [metric.name] if "metric" in data else [m.name for m in defaults.report])
    given = given if isinstance(given, list) else [given]
    if not given:
        raise GridError(path, "report", "expected a metric or a list of metrics, got []")
    return metric, tuple(_metric(path, f"report[{i}]", m, mode, summaries=SUMMARIES, judged=metric)
                         for i, m in enumerate(given))


def _mode_of(path, metric, strict: bool, default: Metric) -> str:
    """Which way the grid's metric, declared without a `mode`, is better: as its mapping says, or
    its name (`val_loss`, `val_acc`), or, for the metric its workload judges by (`default`), as the
    workload says; a name that says neither is no reason to assume one."""
    if isinstance(metric, dict) and metric.get("mode") is not None:
        return metric["mode"]
    name = metric.get("name") if isinstance(metric, dict) else metric
    if not isinstance(name, str):
        return "min"  # not a name: _metric says what is wrong with it
    mode = _kind(name) or (default.mode if name == default.name else None)
    if mode is not None or not strict:
        return mode or "min"
    raise GridError(path, "mode", f"missing: expected min or max (the name {fmt(name)} does not say which way "
                                  "is better)")


def _metric(path, key: str, given, mode: str, summaries, judged: Metric | None = None) -> Metric:
    """`judged`: the grid's metric, where this one is reported beside it (its mode, by name)."""
    if isinstance(given, str):
        given = {"name": given}
    if not isinstance(given, dict) or not isinstance(given.get("name"), str) or not given["name"].strip():
        raise GridError(path, key, f"expected a metric name or {{name, summary, mode, format}}, got {fmt(given)}")
    for k in given:
        if k not in METRIC_KEYS:
            raise GridError(path, f"{key}.{k}", f"unknown key (allowed: {', '.join(METRIC_KEYS)})")
    if given.get("summary", "last") not in summaries:
        raise GridError(path, f"{key}.summary", f"expected {' or '.join(summaries)}, got {fmt(given['summary'])}")
    if given.get("mode", mode) not in MODES:
        raise GridError(path, f"{key}.mode", f"expected min or max, got {fmt(given['mode'])}")
    if given.get("format", "percent") not in FORMATS:
        raise GridError(path, f"{key}.format", f"expected percent or number, got {fmt(given['format'])}")
    if judged is not None:
        mode = implied_mode(given["name"], judged)
    return Metric(given["name"], given.get("mode", mode), given.get("summary", "last"), given.get("format"))
