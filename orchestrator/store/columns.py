"""The columns of a trial's row in trials.parquet that every workload's rows have, by name and
Arrow type name, without pyarrow: `ablate plan` refuses a parameter named like one of them
without importing it.

A row is `trial_id`, `status`, every parameter of the workload's config, these, and the trial's
metrics: the result columns its workload declares (workloads/base.py, `Workload.results`) and
every other value it returned or reported last, typed by its value (records.py).
"""
from __future__ import annotations

import dataclasses

RESULT_COLUMNS = (
    ("params", "int64"), ("epochs_completed", "int64"), ("train_seconds", "double"),
    # Why a result is not `completed`, in words.
    ("status_reason", "string"),
    ("attempts", "int64"), ("error", "string"), ("log", "string"),
    ("started_at", "timestamp[ms, tz=UTC]"), ("finished_at", "timestamp[ms, tz=UTC]"),
    ("grid", "string"), ("workload", "string"), ("host", "string"),
    ("ablate_version", "string"), ("torch_version", "string"), ("ray_version", "string"),
)
# Names no parameter may have: every column that is not a parameter or a metric.
RESERVED = frozenset({"trial_id", "status", *(name for name, _ in RESULT_COLUMNS)})
# Those a trial's own metrics of the same names would take, kept as `reported_<name>` instead
# (kept_as): not `status` and `status_reason`, a workload's or a script's to give (a status of
# RESULT_STATUSES, and why).
TAKEN = frozenset(RESERVED - {"status", "status_reason"} | {"steps_completed"})
# Those of them a Python workload's `train` may return as the row's own (workloads/base.py).
RETURNED = frozenset({"params", "epochs_completed", "train_seconds"})
KEPT_PREFIX = "reported_"
OLD_KEPT_PREFIX = "script_"  # a script's, in an older ablate's runs

# Columns that rows of older ablates had for every workload: metrics, where no saved grid says so.
OLD_METRICS = frozenset({"val_error", "test_error", "images_per_second", "train_examples", "test_examples",
                         "data_fingerprint", "synthetic_data", "restarts", "trained_on"})


def taken(parameters) -> frozenset[str]:
    """The names a trial's metrics are kept as `reported_<name>` under: ablate's columns, and the
    workload's `parameters` (a scheduler's current `lr` would lose to the parameter in the row, and
    mean another thing under its name in epochs.parquet); not `epoch` and `step`, which place a report."""
    return TAKEN | (set(parameters) - {"epoch", "step"})


def kept_as(name: str) -> str:
    """The column a trial's own metric named like a taken column is kept in."""
    return KEPT_PREFIX + name


def kept(parameters) -> dict[str, str]:
    """Each name taken from a trial whose config has `parameters`, with the column its own metric
    of that name is kept in: {"lr": "reported_lr", "host": "reported_host", ...}."""
    return {name: kept_as(name) for name in taken(parameters)}


def workload_columns(workload, names) -> tuple[str, ...]:
    """The columns a Python workload's metrics `names` (its `metrics`, `produces`) are kept in
    (run/trial.py): `reported_lr` for its `lr`; but the columns its `train` may return as its own."""
    if workload.invocation:  # a script's names are the columns already (plan/script.py refuses taken ones)
        return tuple(names)
    own = taken(f.name for f in dataclasses.fields(workload.config)) - RETURNED
    return tuple(kept_as(name) if name in own else name for name in names)
