"""Where a run lives: `<storage>/<grid name>/`, on a local path, NFS or `s3://...`.

    <run>/trials.parquet/<trial_id>.parquet   one row per finished trial (the record of what is done)
    <run>/epochs.parquet/<trial_id>.parquet   one row per epoch of that trial
    <run>/trials/<trial_id>/checkpoint.pt     the latest training state, to resume from
    <run>/trials/<trial_id>/progress.json     attempt, start time and latest epoch of a running trial
    <run>/trials/<trial_id>/trial.log         what each attempt did, with the traceback of a failure
    <run>/ray/                                Ray Tune's own experiment folders

One file per trial, named by trial id, makes the record idempotent: a trial that runs again
replaces its row instead of adding one, so no trial is ever recorded twice. Files are written
under a temporary dot-name and then renamed (an S3 put is atomic by itself), and readers skip
dot-names, so nobody reads a half-written file. `pandas.read_parquet(<run>/trials.parquet)`,
polars and duckdb read the folders as datasets.
"""
from __future__ import annotations

import functools
import io
import json
import socket
import typing
import uuid
from dataclasses import fields
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.errors import ResultsError, RunError


RESULT_COLUMNS = [
    ("val_error", pa.float64()), ("test_error", pa.float64()), ("params", pa.int64()),
    ("epochs_completed", pa.int64()), ("train_seconds", pa.float64()), ("images_per_second", pa.float64()),
    ("attempts", pa.int64()), ("error", pa.string()), ("log", pa.string()),
    ("started_at", pa.timestamp("ms", tz="UTC")), ("finished_at", pa.timestamp("ms", tz="UTC")),
    ("grid", pa.string()), ("workload", pa.string()), ("trained_on", pa.string()), ("host", pa.string()),
    ("ablate_version", pa.string()), ("torch_version", pa.string()), ("ray_version", pa.string()),
]
_ARROW = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


def _arrow_type(t) -> pa.DataType:
    if typing.get_origin(t) is list:
        return pa.list_(_arrow_type(typing.get_args(t)[0]))
    return _ARROW.get(t, pa.string())


@functools.lru_cache(maxsize=None)
def trial_schema(config_type: type) -> pa.Schema:
    """Columns of trials.parquet: id, status, every config parameter, then the result."""
    hints = typing.get_type_hints(config_type)
    config = [(f.name, _arrow_type(hints[f.name])) for f in fields(config_type)]
    reserved = {"trial_id", "status", *(name for name, _ in RESULT_COLUMNS)}
    if clash := reserved.intersection(hints):
        raise ValueError(f"{config_type.__name__}: parameter names {sorted(clash)} are taken by result columns")
    return pa.schema([("trial_id", pa.string()), ("status", pa.string()), *config, *RESULT_COLUMNS])


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)  # package metadata lookups cost ~10 ms each
def environment() -> dict[str, str | None]:
    return {"host": socket.gethostname(), "ablate_version": _version("ablate"),
            "torch_version": _version("torch"), "ray_version": _version("ray")}


def now() -> datetime:
    return datetime.now(timezone.utc)


def resolve_storage(storage: str) -> str:
    """A storage URI with local paths made absolute (Ray and workers need absolute paths)."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


class RunDir:
    """The files of one grid's run, in any storage pyarrow can open."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        except (pa.ArrowInvalid, OSError) as e:
            raise RunError(f"{uri}: cannot open storage ({e})") from None
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    @classmethod
    def for_grid(cls, storage: str, grid_name: str) -> "RunDir":
        return cls(f"{resolve_storage(storage).rstrip('/')}/{grid_name}")

    def child(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def display(self, *parts: str) -> str:
        """A path to show a user: a local path, or the storage URI."""
        return "/".join([self.uri, *parts]) if not self.local else self.child(*parts)

    # -- files ---------------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.local:  # an object store's put is atomic
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def append_text(self, path: str, text: str) -> None:
        if self.local:
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with self.fs.open_append_stream(path) as f:
                f.write(text.encode())
        else:  # object stores cannot append: rewrite the (small) log
            self.write_bytes(path, (self.read_bytes(path) or b"") + text.encode())

    def write_table(self, path: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(path, sink.getvalue().to_pybytes())

    def read_dataset(self, name: str) -> pa.Table | None:
        """All parts of `trials.parquet` or `epochs.parquet`, or None where there are none."""
        path = self.child(name)
        try:
            info = self.fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                return None
            parts = ds.dataset(path, filesystem=self.fs, format="parquet",
                               exclude_invalid_files=False)
            return parts.to_table() if parts.files else None
        except (pa.ArrowInvalid, OSError) as e:
            raise ResultsError(f"{self.display(name)}: unreadable Parquet ({e})") from None

    # -- trial records -------------------------------------------------------------------------
    def trial_file(self, trial_id: str, name: str) -> str:
        return self.child("trials", trial_id, name)

    def log_path(self, trial_id: str) -> str:
        return self.display("trials", trial_id, "trial.log")

    def progress(self, trial_id: str) -> dict[str, Any]:
        data = self.read_bytes(self.trial_file(trial_id, "progress.json"))
        return json.loads(data) if data else {}

    def write_progress(self, trial_id: str, progress: dict[str, Any]) -> None:
        self.write_bytes(self.trial_file(trial_id, "progress.json"), json.dumps(progress).encode())

    def finished(self) -> dict[str, str]:
        """trial_id -> status of every trial with a row."""
        table = self.read_dataset("trials.parquet")
        if table is None:
            return {}
        return dict(zip(table["trial_id"].to_pylist(), table["status"].to_pylist()))

    def record(self, schema: pa.Schema, trial_id: str, config: dict[str, Any], result: dict[str, Any],
               epochs: list[dict[str, Any]] | None = None) -> None:
        """Write a finished trial: its epochs first, then its row, which marks it done."""
        if epochs is not None:
            self.write_table(self.child("epochs.parquet", f"{trial_id}.parquet"), epoch_table(trial_id, epochs))
        row = {**config, **result, "trial_id": trial_id}
        self.write_table(self.child("trials.parquet", f"{trial_id}.parquet"),
                         pa.Table.from_pylist([{k: row.get(k) for k in schema.names}], schema=schema))


def epoch_table(trial_id: str, epochs: list[dict[str, Any]]) -> pa.Table:
    """One row per epoch: `epoch` as an integer, numeric metrics as float64, anything else as text,
    so that the parts of every trial share one schema."""
    keys = list(dict.fromkeys(k for row in epochs for k in row))
    columns = {"trial_id": pa.array([trial_id] * len(epochs), pa.string())}
    for key in keys:
        values = [row.get(key) for row in epochs]
        numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
        if key == "epoch":
            columns[key] = pa.array(values, pa.int64())
        elif numeric:
            columns[key] = pa.array([None if v is None else float(v) for v in values], pa.float64())
        else:
            columns[key] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return pa.table(columns)


class StoredSession:
    """The session a trial trains with under `ablate run`: checkpoints, epochs and progress go to
    the run's storage, so a retried or resumed trial finds them whatever node it lands on."""

    def __init__(self, run: RunDir, trial_id: str, on_report=None):
        self.run, self.trial_id, self.on_report = run, trial_id, on_report
        self.epochs: list[dict[str, Any]] = []
        self.checkpoint_path = run.trial_file(trial_id, "checkpoint.pt")
        self.progress = run.progress(trial_id)

    def start(self) -> int:
        """Count this attempt; returns its number (1 for the first)."""
        started = self.progress.get("started_at") or now().isoformat()
        self.progress = {**self.progress, "attempt": self.progress.get("attempt", 0) + 1, "started_at": started}
        self.run.write_progress(self.trial_id, self.progress)
        self.log(f"attempt {self.progress['attempt']} on {socket.gethostname()}")
        return self.progress["attempt"]

    def log(self, line: str) -> None:
        self.run.append_text(self.run.trial_file(self.trial_id, "trial.log"), f"{now():%Y-%m-%d %H:%M:%S} {line}\n")

    def restore(self):
        import torch

        data = self.run.read_bytes(self.checkpoint_path)
        if data is None:
            return None
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        self.epochs = saved["epochs"]
        self.log(f"resumed from the checkpoint after epoch {len(self.epochs)}")
        return saved["state"]

    def report(self, metrics, checkpoint=None):
        self.epochs.append(dict(metrics))
        if checkpoint is not None:
            import torch

            buffer = io.BytesIO()
            torch.save({"state": checkpoint, "epochs": self.epochs}, buffer)
            self.run.write_bytes(self.checkpoint_path, buffer.getvalue())
        self.progress = {**self.progress, "epoch": len(self.epochs), "metrics": dict(metrics),
                         "updated_at": now().isoformat()}
        self.run.write_progress(self.trial_id, self.progress)
        self.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        if self.on_report is not None:
            self.on_report(metrics)
