"""The columns of a trial's row in trials.parquet, by name and Arrow type name, without pyarrow:
`ablate plan` refuses a parameter named like one of them without importing it.

A row is `trial_id`, `status`, every parameter of the workload's config, then these.
"""
from __future__ import annotations

RESULT_COLUMNS = (
    ("val_error", "double"), ("test_error", "double"), ("params", "int64"),
    ("epochs_completed", "int64"), ("train_seconds", "double"), ("images_per_second", "double"),
    # What the trial's data was (workloads/base.py): sizes, a hash of its content, whether it was real.
    ("train_examples", "int64"), ("test_examples", "int64"), ("data_fingerprint", "string"),
    ("synthetic_data", "bool"),
    # Why a result is not `completed`, in words, and how often the workload started the trial over.
    ("status_reason", "string"), ("restarts", "int64"),
    ("attempts", "int64"), ("error", "string"), ("log", "string"),
    ("started_at", "timestamp[ms, tz=UTC]"), ("finished_at", "timestamp[ms, tz=UTC]"),
    ("grid", "string"), ("workload", "string"), ("trained_on", "string"), ("host", "string"),
    ("ablate_version", "string"), ("torch_version", "string"), ("ray_version", "string"),
)
# Names no parameter may have: every column that is not a parameter.
RESERVED = frozenset({"trial_id", "status", *(name for name, _ in RESULT_COLUMNS)})
