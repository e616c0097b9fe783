"""A workload's parameters as a grid file sets them: every value is checked against the type and
the constraints its config field declares, and every trial's config against the workload's
checks across parameters (workloads/base.py shows how a workload declares both).

    params = Parameters(path, workload)
    lr = params.value("axes.lr[1]", "lr", 0.1)     # 0.1, or GridError naming the key and the rule

Constraints are annotated-types metadata read here directly (Gt, Ge, Lt, Le, Interval, MultipleOf,
MinLen, MaxLen, Len, Predicate): each is both checked and put into words, so the error says what
was expected. Whatever a field declares, a float must be finite and an int must fit in 64 bits:
NaN, inf or a 30-digit epoch count can only fail later, inside every trial or in Parquet.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at

from orchestrator.errors import GridError
from workloads.base import Workload

INT64 = 2**63
_TYPES = {bool: "a boolean", int: "an integer", float: "a finite float", str: "a string"}
# A float PyYAML reads as text: YAML 1.1 wants a dot and a signed exponent (1.0e-3), so a bare
# 1e-3, the way learning rates are mostly written, is the string '1e-3' (YAML 1.2 reads a float).
FLOAT_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def fmt(value) -> str:
    """A value as the file would show it, cut short: an error stays one readable line."""
    text = json.dumps(value) if isinstance(value, (bool, type(None))) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def constraints(hint) -> tuple[Any, list]:
    """(the bare type, its annotated-types constraints) of a field's annotation."""
    if typing.get_origin(hint) is not Annotated:
        return hint, []
    expected, *metadata = typing.get_args(hint)
    flat = []
    for m in metadata:  # Interval and Len are groups of the single-bound constraints
        flat.extend(m if isinstance(m, at.GroupedMetadata) else [m])
    return expected, flat


# The constraints understood, each checked and put into words.
CHECKED = (at.Gt, at.Ge, at.Lt, at.Le, at.MultipleOf, at.MinLen, at.MaxLen, at.Predicate)


def holds(metadata, value) -> bool:
    """Whether `value` meets every constraint in `metadata`."""
    return all(_holds(c, value) for c in metadata)


def _holds(c, value) -> bool:
    if isinstance(c, at.Gt):
        return value > c.gt
    if isinstance(c, at.Ge):
        return value >= c.ge
    if isinstance(c, at.Lt):
        return value < c.lt
    if isinstance(c, at.Le):
        return value <= c.le
    if isinstance(c, at.MultipleOf):
        return value % c.multiple_of == 0
    if isinstance(c, at.MinLen):
        return len(value) >= c.min_length
    if isinstance(c, at.MaxLen):
        return len(value) <= c.max_length
    return bool(c.func(value))  # Predicate


def _words(c, expected) -> str:
    unit = "characters" if expected is str else "items"
    for kind, op, attr in ((at.Gt, ">", "gt"), (at.Ge, ">=", "ge"), (at.Lt, "<", "lt"), (at.Le, "<=", "le")):
        if isinstance(c, kind):
            return f"{op} {getattr(c, attr)}"
    if isinstance(c, at.MultipleOf):
        return f"a multiple of {c.multiple_of}"
    if isinstance(c, at.MinLen):
        return f"with at least {c.min_length} {unit[:-1] if c.min_length == 1 else unit}"
    if isinstance(c, at.MaxLen):
        return f"with at most {c.max_length} {unit}"
    # A predicate's docstring is its description: `def increasing(xs): """in increasing order"""`.
    return (c.func.__doc__ or c.func.__name__.replace("_", " ")).strip().splitlines()[0]


def expectation(expected, metadata) -> str:
    """`a finite float >= 0 and < 1`: what a field accepts, in the words of an error message."""
    kind = "a list" if typing.get_origin(expected) is list else _TYPES.get(expected, expected.__name__)
    words = [_words(c, expected) for c in metadata]
    return " and ".join([f"{kind} {words[0]}", *words[1:]]) if words else kind


class Parameters:
    """Checks values against a workload's config dataclass, raising GridError with the key path."""

    def __init__(self, path: Path, workload: Workload):
        self.path, self.workload = path, workload
        self.fields = {f.name: f for f in dataclasses.fields(workload.config)}
        self.types = typing.get_type_hints(workload.config, include_extras=True)
        if "seed" not in self.fields:  # every trial sets one (`seeds`, `repeats`)
            self.fail("workload", f"the config of workload '{workload.name}' ({workload.config.__name__}) "
                                  "has no `seed: int` parameter")
        for name, hint in self.types.items():
            item = self.item_type(name)
            for c in constraints(hint)[1] + (constraints(item)[1] if item is not None else []):
                if not isinstance(c, CHECKED):
                    self.fail("workload", f"parameter {name} of workload '{workload.name}' declares {c!r}, "
                                          f"which ablate cannot check (it checks: {', '.join(s.__name__ for s in CHECKED)})")

    def fail(self, key: str, message: str):
        raise GridError(self.path, key, message)

    def param(self, key: str, name) -> None:
        if name not in self.fields:
            if self.workload.invocation is None:
                self.fail(key, f"unknown parameter of workload '{self.workload.name}' (known: {', '.join(self.fields)})")
            declared = [f for f in self.fields if f != "command"]  # its command line, a field of every trial's
            self.fail(key, f"unknown parameter of the command (known: {', '.join(declared)}; "
                           "declare another under command.parameters)")
        if name == "seed":
            self.fail(key, "seeds are set by the top-level 'seeds' or 'repeats' key")

    def item_type(self, name: str):
        """The annotation of a list parameter's items, or None for a parameter that is not a list."""
        expected = constraints(self.types[name])[0]
        return typing.get_args(expected)[0] if typing.get_origin(expected) is list else None

    def value(self, key: str, name: str, value):
        return self._typed(key, self.types[name], self.fields[name].metadata.get("choices"), name, value)

    def _typed(self, key, hint, choices, name, value):
        expected, metadata = constraints(hint)
        if typing.get_origin(expected) is list:
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {fmt(value)}")
            (item,) = typing.get_args(expected)
            value = [self._typed(f"{key}[{i}]", item, None, name, v) for i, v in enumerate(value)]
        else:
            value = self._scalar(key, expected, choices, name, value)
        finite = expected is not float or math.isfinite(value)
        if not (finite and holds(metadata, value)):
            self.fail(key, f"expected {expectation(expected, metadata)}, got {fmt(value)}")
        return value

    def _scalar(self, key, expected, choices, name, value):
        ok = {bool: lambda v: isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str)}[expected](value)
        if expected is float and isinstance(value, str) and FLOAT_TEXT.fullmatch(value):
            ok, value = True, float(value)
        if not ok:
            self.fail(key, f"expected {expected.__name__}, got {fmt(value)}{self._hint(expected, name, value)}")
        if expected is float:
            try:
                value = float(value)
            except OverflowError:  # an int too large for a float is as unusable as inf
                value = math.inf
        if expected is int and not -INT64 <= value < INT64:
            self.fail(key, f"expected an integer that fits in 64 bits, got {fmt(value)}")
        if choices is not None and value not in choices:
            self.fail(key, f"unknown {name} {value!r} (known: {', '.join(map(str, choices))})")
        return value

    def _hint(self, expected, name, value) -> str:
        """Why a value YAML read otherwise than the user meant has the wrong type."""
        if expected is str and isinstance(value, bool):
            return f" (YAML reads a bare {fmt(value)} as a boolean: quote the word)"
        default = self.fields[name].default
        if expected is str and isinstance(value, (int, float)) and isinstance(default, str) \
                and FLOAT_TEXT.fullmatch(default):
            return (f" (the default {default} made {name} a text parameter: YAML reads a bare {default} as "
                    f"text; write {float(default)!r} for a number)")
        return ""

    def check_trial(self, config: dict[str, Any], cell: dict[str, Any]) -> None:
        """The workload's checks across parameters, on one trial's resolved config."""
        if self.workload.check is None:
            return
        try:
            self.workload.check(self.workload.config(**config))
        except ValueError as e:
            key, _, message = str(e).partition(": ")
            trial = ", ".join(f"{k}={fmt(v)}" for k, v in cell.items())
            self.fail(key if message else "", f"{message or key} (in the trial {trial})")
