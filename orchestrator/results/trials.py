"""Finished trials as the readers hold them: the rows of trials.parquet, in plain Python.

    trials = Trials(records.read_trials(run))
    done = trials.where([status == "completed" for status in trials["status"]])
    for (model, lr), part in done.groups(["model", "lr"]).items():
        print(model, lr, len(part), part["test_error"])

`trials[column]` is a tuple of the column's values, a missing one (null or NaN) as None and a
list as a tuple, so that values can be compared, counted and grouped on. A column is converted
from Arrow the first time it is asked for, and every subset of the rows shares that: a table of
many trials is converted once, not once per cell, and the columns nobody asks for (the times,
the logs) never are. Rows are chosen here, in Python, never by building Arrow arrays: pyarrow
imports pandas the first time it converts a Python value, and that import would take longer
than reading the results. `to_pandas()` gives a DataFrame, for scripts.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from orchestrator.plan.expand import hashable


class Trials:
    """Some rows of a trials table, in its order or another."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.columns: list[str] = table.column_names
        self.rows: Sequence[int] = range(table.num_rows)
        self._converted: dict[str, list] = {}  # column -> the values of every row of the table; shared by subsets
        self._taken: dict[str, tuple] = {}  # column -> the values of these rows
        self._distinct: dict[str, tuple] = {}

    def _subset(self, rows: Sequence[int]) -> Trials:
        subset = copy.copy(self)
        subset.rows, subset._taken, subset._distinct = rows, {}, {}
        return subset

    @property
    def empty(self) -> bool:
        return not self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, column: str) -> tuple:
        if column not in self._taken:
            values = self._table_values(column)
            self._taken[column] = tuple(map(values.__getitem__, self.rows))
        return self._taken[column]

    def _table_values(self, column: str) -> list:
        if column not in self._converted:
            self._converted[column] = _python(self.table[column])
        return self._converted[column]

    def distinct(self, column: str) -> tuple:
        """The column's values, each once, in the order they first appear (None among them)."""
        if column not in self._distinct:
            self._distinct[column] = tuple(dict.fromkeys(self[column]))
        return self._distinct[column]

    def where(self, keep: Iterable[bool]) -> Trials:
        """The rows for which `keep` says True, in order."""
        return self._subset([i for i, k in zip(self.rows, keep) if k])

    def matching(self, values: dict[str, Any]) -> Trials:
        """The rows with every value of `values` (None: a missing one)."""
        trials = self
        for column, value in values.items():
            trials = trials.where([v == value for v in trials[column]])
        return trials

    def sorted(self, column: str) -> Trials:
        """The rows in the order of a column that has a value in every row (trial_id)."""
        return self._subset(sorted(self.rows, key=self._table_values(column).__getitem__))

    def groups(self, columns: list[str], dropna: bool = True) -> dict[tuple, Trials]:
        """The rows by their values of `columns`, in the order each group first appears; without the
        rows missing one of them unless `dropna` is False (as pandas' groupby)."""
        rows: dict[tuple, list[int]] = {}
        for i, key in zip(self.rows, zip(*(self[c] for c in columns))):
            if dropna and None in key:
                continue
            rows.setdefault(key, []).append(i)
        return {key: self._subset(group) for key, group in rows.items()}

    def to_pandas(self):
        """These rows as a pandas DataFrame, a list as a tuple."""
        frame = self.table.take(pa.array(self.rows, pa.int64())).to_pandas()
        for column in frame.columns:
            if frame[column].dtype == object:
                frame[column] = frame[column].map(hashable)
        return frame


def concat(parts: list[Trials]) -> Trials:
    """The rows of several subsets of one table, one after the other."""
    return parts[0]._subset([i for part in parts for i in part.rows])


def _python(column: pa.ChunkedArray) -> list[Any]:
    values = column.to_pylist()
    if pa.types.is_floating(column.type):
        return [None if v != v else v for v in values]  # NaN: missing, as a null is
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return [hashable(v) for v in values]
    return values
