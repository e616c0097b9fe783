"""Where a run lives: `<storage>/<grid name>/`, on a local path, NFS or `s3://...`.

    run = RunDir.for_grid("./runs", "smoke")
    run.read_table(run.child("trials.parquet")); run.progress(trial_id); run.checkpoint(trial_id)

    <run>/trials.parquet                      one row per finished trial
    <run>/epochs.parquet                      one row per epoch of every finished trial
    <run>/records/<trial_id>.json             each trial's row and epochs as it finished (records.py)
    <run>/trials/<trial_id>/checkpoint.pt     the latest training state, to resume from (checkpoint.py)
    <run>/trials/<trial_id>/epochs.jsonl      its reports, a line each: its checkpoint covers the first N
    <run>/trials/<trial_id>/progress.jsonl    attempt, start time, latest epoch and its seconds (the last line)
    <run>/trials/<trial_id>/trial.log         what each attempt did, a failure's traceback (a WorkloadError's line)
    <run>/trials/<trial_id>/*.segments/       on an object store, a log's or epochs' lines while written (lines.py)
    <run>/trials/<trial_id>/files/            the trial's own files (a script's outputs and checkpoints)
    <run>/grid.yaml                           the grid file as last run
    <run>/lock                                the driver that runs it now (run/lock.py)
    <run>/halving.json                        halving's decisions (run/halving.py)
    <run>/driver.log                          Ray's own messages, for local storage (run/cluster.py)
    <run>/ray/                                Ray Tune's own experiment folders

Every file is written whole under a temporary dot-name and then renamed (an S3 put is atomic by
itself), so nobody ever reads half a file; but a trial's log, epochs and progress grow by lines
while it runs (store/lines.py: on an object store, in segments beside the file until the attempt
ends): a reader takes the lines that end in a newline.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.errors import DamagedFile, ResultsError, RunError, StorageError
from orchestrator.store.checkpoint import deserialize, unreadable
from orchestrator.store.lines import read_lines
from orchestrator.store.s3 import Bucket

CHECKPOINT = "checkpoint.pt"
EPOCHS = "epochs.jsonl"
PROGRESS = "progress.jsonl"
OLD_PROGRESS = "progress.json"  # older ablates rewrote one JSON object: still read


def now() -> datetime:
    return datetime.now(timezone.utc)


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with path parts appended, keeping a query such as `?endpoint_override=...` at the end (a
    local path has none: a `?` there is part of a folder's name)."""
    base, sep, query = uri.partition("?") if "://" in uri else (uri, "", "")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def resolve_storage(storage: str) -> str:
    """A storage URI with local paths made absolute (Ray and workers need absolute paths)."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def _single_puts(uri: str) -> str:
    """An S3 URI whose small files are written in one PUT (`allow_delayed_open`: an upload in parts
    begins only when there is more than a part to send; a failure still comes at the latest when
    the file is closed), not in the three requests of a multipart upload: a trial writes several
    files at each report."""
    if not uri.startswith("s3://") or "allow_delayed_open=" in uri:
        return uri
    base, _, query = uri.partition("?")
    return f"{base}?{query}{'&' if query else ''}allow_delayed_open=true"


class RunDir:
    """The files of one grid's run, in any storage pyarrow can open."""

    def __init__(self, uri: str):
        self.uri = join_uri(uri)
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(_single_puts(self.uri))
        except (pa.ArrowInvalid, OSError) as e:
            raise RunError(f"{uri}: cannot open storage ({e})") from None
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.s3: Bucket | None = None  # made at the first read, on S3

    @classmethod
    def for_grid(cls, storage: str, grid_name: str) -> "RunDir":
        if not storage.strip():  # `--storage "$RESULTS"` with RESULTS unset: not the current folder by accident
            raise RunError("--storage: expected a local path, an NFS path or s3://bucket/prefix, got ''")
        return cls(join_uri(resolve_storage(storage), grid_name))

    def child(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def display(self, *parts: str) -> str:
        """A path to show a user: a local path, or the storage URI."""
        return self.child(*parts) if self.local else join_uri(self.uri.partition("?")[0], *parts)

    # -- files ---------------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a file whole, or raise StorageError (a full or read-only disk, an object store that
        does not answer after pyarrow's retries) leaving the file as it was and nothing beside it."""
        if not self.local:  # an object store's put is atomic, and has no folders to create
            try:
                with self.fs.open_output_stream(path) as f:
                    f.write(data)
            except OSError as e:
                raise StorageError.at(self.display(), e) from None
            return
        parent = path.rsplit("/", 1)[0]
        tmp = f"{parent}/.{uuid.uuid4().hex}.tmp"
        try:
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StorageError.at(self.display(), e) from None

    def read_bytes(self, path: str) -> bytes | None:
        if not self.local:  # one GET: one version of an object that the driver may be replacing
            response = self._bucket().call("get_object", self._bucket().key(path))
            return None if response is None else response["Body"].read()
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def remove(self, paths: list[str]) -> None:
        """Remove the files of these paths that exist, in this order (on an object store, a
        request for each thousand, those of one request in no order)."""
        if not self.local:
            self._bucket().delete([self._bucket().key(path) for path in paths])
            return
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _bucket(self) -> Bucket:
        if self.s3 is None:
            self.s3 = Bucket(self)
        return self.s3

    def write_table(self, path: str, table: pa.Table) -> None:
        """A Parquet file."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(path, sink.getvalue().to_pybytes())

    def read_table(self, path: str, columns: list[str] | None = None, dictionary: list[str] | None = None
                   ) -> pa.Table | None:
        """One Parquet or (`.arrow`: an older ablate's record) Arrow IPC file, or None where there is none.
        Of a Parquet file, `columns`: only those of them it has (the file is read in one piece all the
        same); `dictionary`: columns read as dictionary arrays (few distinct values, many rows)."""
        arrow = path.endswith(".arrow")
        shown = path if self.local else f"{self.uri.partition('://')[0]}://{path}"
        unreadable = f"{shown}: unreadable {'Arrow' if arrow else 'Parquet'}"
        try:
            data = self._read_buffer(path)
        except OSError as e:  # the disk's fault (EIO), or a folder in the file's place: no damaged file
            raise ResultsError(f"{unreadable} ({e})") from None
        if data is None:
            return None
        try:
            if arrow:
                return pa.ipc.open_file(pa.BufferReader(data)).read_all()
            # Not read_table: its dataset layer costs more than the read.
            file = pq.ParquetFile(pa.BufferReader(data), read_dictionary=dictionary)
            return file.read([c for c in columns if c in file.schema_arrow.names] if columns is not None else None)
        except (pa.ArrowInvalid, OSError) as e:
            raise DamagedFile(f"{unreadable} ({e})") from None

    def _read_buffer(self, path: str) -> pa.Buffer | bytes | None:
        """A file's bytes for pyarrow. On a local disk, mapped into memory: the reader then touches
        only the pages of the columns it reads, not a copy of the whole file (85 MB of epochs:
        0.05 s instead of 0.08-0.4 s), and a mapped file stays the version it was when a writer
        renames a new one into its place, as ablate always does."""
        if not self.local:
            return self.read_bytes(path)
        try:
            with pa.memory_map(path) as f:  # the mapping outlives the file's closing, as long as its buffer
                return f.read_buffer()
        except FileNotFoundError:
            return None

    def names(self, path: str) -> list[str]:
        """The names in a folder; none where there is no such folder. On a local disk without
        asking the size and time of each file, as pyarrow would: records/ holds one per trial."""
        try:
            if self.local:
                try:
                    return os.listdir(path)
                except FileNotFoundError:
                    return []
            return [info.base_name for info in self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))]
        except OSError as e:
            raise StorageError.at(self.display(), e, doing="reach it") from None

    # -- trial records -------------------------------------------------------------------------
    def trial_file(self, trial_id: str, *names: str) -> str:
        return self.child("trials", trial_id, *names)

    def log_path(self, trial_id: str) -> str:
        return self.display("trials", trial_id, "trial.log")

    def progress(self, trial_id: str) -> dict[str, Any]:
        """A trial's latest progress: the last whole line of its progress file; {} if it has none.
        ResultsError, one line naming it, for a file the disk cannot read (EIO) or an older
        ablate's damaged one."""
        data = self._read_progress(trial_id, PROGRESS)
        if data is not None:
            return _last_progress(data)
        data = self._read_progress(trial_id, OLD_PROGRESS)
        if not data:
            return {}
        try:  # a disk fault or a copy cut short makes it unreadable
            progress = json.loads(data)
            why = "not a JSON object"
        except ValueError as e:
            progress, why = None, str(e)
        if not isinstance(progress, dict):
            raise ResultsError(f"{self.display('trials', trial_id, OLD_PROGRESS)}: an older ablate's progress file, "
                               f"unreadable ({why}); delete it to count the trial's attempts and time afresh")
        return progress

    def _read_progress(self, trial_id: str, name: str) -> bytes | None:
        try:
            return self.read_bytes(self.trial_file(trial_id, name))
        except OSError as e:  # the disk's fault (EIO), or a folder in the file's place
            raise ResultsError(f"{self.display('trials', trial_id, name)}: unreadable progress file ({e})") from None

    def write_progress(self, trial_id: str, progress: dict[str, Any]) -> None:
        """A trial's progress file holding `progress` alone, written whole."""
        self.write_bytes(self.trial_file(trial_id, PROGRESS), json_line(progress))

    def checkpoint(self, trial_id: str, epochs: bool = True) -> dict[str, Any] | None:
        """A trial's last checkpoint: {"state": what the workload handed to report, "epochs": every
        epoch's metrics up to it}; None if it has none. The session saves the state with how many
        epochs it covers, the first lines of the trial's epochs file (an older ablate saved the
        epochs in it). Without `epochs`, the state alone: a tool on a trained trial needs no more,
        and a damaged epochs file must not keep it from a whole checkpoint."""
        data = self.read_bytes(self.trial_file(trial_id, CHECKPOINT))
        if data is None:
            return None
        name = self.display("trials", trial_id, CHECKPOINT)
        saved = deserialize(data, name)
        if not epochs:
            return {"state": saved["state"]}
        if "reported" not in saved:
            return saved
        covered = saved["reported"]
        lines = self._epoch_lines(trial_id) or []
        if len(lines) < covered:
            raise unreadable(name, f"{EPOCHS} beside it holds {len(lines)} of the {covered} epochs it covers")
        return {"state": saved["state"], "epochs": self._epochs(trial_id, lines[:covered])}

    def reported(self, trial_id: str) -> list[dict[str, Any]] | None:
        """Every report in a trial's epochs file: those of the attempt that reported last, from
        the checkpoint it resumed from (those after its own checkpoint included); None if it has
        no such file (it never reported, or an older ablate kept its epochs in the checkpoint)."""
        lines = self._epoch_lines(trial_id)
        return None if lines is None else self._epochs(trial_id, lines)

    def _epoch_lines(self, trial_id: str) -> list[bytes] | None:
        data = read_lines(self, self.trial_file(trial_id, EPOCHS))
        return None if data is None else data.split(b"\n")[:-1]  # whole lines

    def _epochs(self, trial_id: str, lines: list[bytes]) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in lines]
        except ValueError as e:  # a disk fault: the checkpoint that covers them is no use without them
            raise unreadable(self.display("trials", trial_id, CHECKPOINT), f"{EPOCHS} beside it: {e}") from None


def position(progress: dict[str, Any]) -> int:
    """How far a trial's progress says it got: its last step, for a script that reports steps,
    else its epochs."""
    return progress.get("metrics", {}).get("step", progress.get("epoch", 0))


def places(epochs: list[dict[str, Any]]) -> list[int]:
    """Where each report is in training, as position() says of a trial's progress: its step, for a
    script that reports steps (an epoch it printed before any step is at the start), else its count."""
    if any(e.get("step") is not None for e in epochs):
        return [e.get("step") or 0 for e in epochs]
    return list(range(1, len(epochs) + 1))


def up_to(epochs: list[dict[str, Any]], rung: int) -> tuple[list[dict[str, Any]], bool]:
    """A trial's reports up to its first at or past a rung of halving (places()), where it paused
    and is ranked, and whether it has one (else all of them)."""
    at = next((i for i, place in enumerate(places(epochs)) if place >= rung), None)
    return (epochs, False) if at is None else (epochs[:at + 1], True)


def json_line(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode() + b"\n"


def _last_progress(data: bytes) -> dict[str, Any]:
    """The latest progress in a progress file: its last whole line, one that a newline ends (a
    line being written has none yet) and that reads as JSON (a line a crash cut short and the next
    attempt wrote on does not); {} if it has none."""
    for line in reversed(data.split(b"\n")[:-1]):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}
