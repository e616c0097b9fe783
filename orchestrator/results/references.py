"""A cell against a published number: like for like, or what differs.

A published number (a workload's `references`) states the protocol and data it was measured
under; a cell gets a difference to it only when every trial behind its value ran that protocol
on that data (`comparable`), else the cell names what differs.
"""
from __future__ import annotations

from orchestrator.plan.expand import hashable
from orchestrator.results.trials import Trials

# Keys of a reference that are not coordinates of its cell (workloads/base.py).
REFERENCE_KEYS = ("protocol", "data")


def reference(references, point: dict, metric: str) -> dict | None:
    """The published number of `metric` at `point` (a cell's coordinates), if any."""
    for ref in references:
        where = {k: v for k, v in ref.items() if k != metric and k not in REFERENCE_KEYS}
        if metric in ref and all(k in point and point[k] == hashable(v) for k, v in where.items()):
            return ref
    return None


def differences(trials: Trials, protocol: dict, data: dict) -> list[str]:
    """What these trials ran that differs from the protocol and data a published number states,
    e.g. ["width 0.25", "epochs 40", "3,000 training examples"]; empty when like for like.

    `protocol` holds parameter values, `data` result columns on what the data was (store/columns.py).
    Synthetic data is never like for like, whatever the reference states."""
    out = []
    for name, expected in {**protocol, **data}.items():
        seen = _seen(trials, name)
        if seen != [hashable(expected)]:
            out.append(_what_differs(name, seen))
    if "synthetic_data" not in data and True in (_seen(trials, "synthetic_data") or []):
        out.append("synthetic data")
    return out


# How the columns that say what a trial's data was (store/columns.py) read in a sentence.
_DATA_NAMES = {"train_examples": "training examples", "test_examples": "test examples"}


def _what_differs(name: str, seen: list | None) -> str:
    if name == "synthetic_data" and seen and True in seen:
        return "synthetic data"
    if seen is None or None in seen:
        return ("real data" if name == "synthetic_data" else _DATA_NAMES.get(name, name)) + " not recorded"
    shown = " / ".join(map(_shown, seen))
    return f"{shown} {_DATA_NAMES[name]}" if name in _DATA_NAMES else f"{name} {shown}"


def _seen(trials: Trials, column: str) -> list | None:
    """The distinct values of a column over trials (a missing value as None); None if no column."""
    if column not in trials.columns:
        return None
    return list(trials.distinct(column))


def _shown(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(_shown, value)) + "]"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer() \
            and abs(value) >= 1000:
        return f"{int(value):,}"  # counts: 4,000 images
    return str(value)
