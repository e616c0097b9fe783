"""Trials picked by `--where column=value` (and `--baseline`), the value written as in a grid file.

    results = where(load(RunDir("runs/paper")), ["dataset=cifar10", "lr!=0.25"])
"""
from __future__ import annotations

import dataclasses

import yaml

from orchestrator.errors import ResultsError
from orchestrator.results.tables import Results, as_written


def where(results: Results, conditions: list[str], notify=lambda message: None) -> Results:
    """Keep the trials matching every `column=value` / `column!=value` condition, the value
    written as in a grid file (matches). Trials without a value of the column (a result a failed
    one never reported) match no `=`: `notify` is told how many, and of which status."""
    trials, planned = results.trials, results.planned
    for i, condition in enumerate(conditions):
        negate = "!=" in condition
        column, sep, value = condition.partition("!=" if negate else "=")
        if not sep or not column:
            raise ResultsError(f"--where '{condition}': expected column=value or column!=value")
        if column not in trials.columns:
            raise ResultsError(f"--where '{condition}': unknown column '{column}' (columns: {', '.join(trials.columns)})")
        match = matches(trials[column], value)
        if not negate and not any(match):
            left = dataclasses.replace(results, trials=trials).values(column)
            values = ", ".join(as_written(v) for v in left if v is not None) or "none recorded"
            raise ResultsError(f"{results.run.display()}: no trial matches --where "
                               f"{' --where '.join(conditions[:i + 1])} ({column} values: {values})")
        if planned and column in planned[0]:  # the trials not run yet that it keeps
            kept = matches([t[column] for t in planned], value)
            planned = tuple(t for t, m in zip(planned, kept) if m != negate)
        elif planned:  # a column of the rows alone (a status): the grid's trials whose rows it leaves out go too
            left_out = {trial_id for trial_id, m in zip(trials["trial_id"], match) if m == negate}
            planned = tuple(t for t in planned if t["trial_id"] not in left_out)
        if not negate and (unknown := [status for status, v in zip(trials["status"], trials[column]) if v is None]):
            statuses = ", ".join(f"{unknown.count(st)} {st}" for st in dict.fromkeys(unknown))
            notify(f"--where {condition} leaves out {len(unknown)} trial{'s' * (len(unknown) > 1)} without a "
                   f"{column} ({statuses})")
        trials = trials.where([not m for m in match] if negate else match)
    return dataclasses.replace(results, trials=trials, planned=planned)


def matches(values, text: str) -> list[bool]:
    """Which of `values` are the one `text` writes as a grid file would (YAML): a number in any
    notation (1e-1 is 0.1, which YAML 1.1 reads as text), false, [20, 30]; or as the tables show
    it. A missing value matches nothing."""
    try:
        wanted = yaml.safe_load(text)
    except yaml.YAMLError:
        wanted = text
    return [v is not None and (str(v) == text or _same(v, wanted)) for v in values]


def _same(value, wanted) -> bool:
    if isinstance(value, tuple):  # a list (trials.py)
        return isinstance(wanted, list) and len(value) == len(wanted) and all(map(_same, value, wanted))
    if isinstance(value, bool) or isinstance(wanted, bool):  # a flag is no number: True is not 1
        return value is wanted
    if isinstance(value, (int, float)) and isinstance(wanted, str):
        try:
            wanted = float(wanted)
        except ValueError:
            return False
    return value == wanted
