"""Where a run lives: `<storage>/<grid name>/`, on a local path, NFS or `s3://...`.

    <run>/trials.parquet                      one row per finished trial
    <run>/epochs.parquet                      one row per epoch of every finished trial
    <run>/records/<trial_id>.json             each trial's row and epochs as it finished (see records.py)
    <run>/trials/<trial_id>/checkpoint.pt     the latest training state, to resume from
    <run>/trials/<trial_id>/progress.jsonl    attempt, start time, latest epoch and its seconds (the last line)
    <run>/trials/<trial_id>/trial.log         what each attempt did, with the traceback of a failure
    <run>/trials/<trial_id>/files/            the trial's own files (a command's outputs and checkpoints)
    <run>/grid.yaml                           the grid file as last run
    <run>/lock                                the driver that runs it now (see lock.py)
    <run>/ray/                                Ray Tune's own experiment folders

Every file is written whole under a temporary dot-name and then renamed (an S3 put is atomic by
itself), so nobody ever reads half a file; but a trial's log and progress grow by lines while it
runs (see Lines): a reader takes the lines that end in a newline.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import pickle
import shutil
import socket
import sys
import tempfile
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from orchestrator.errors import ResultsError, RunError


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


def join_uri(uri: str, *parts: str) -> str:
    """`uri` with path parts appended, keeping a query such as `?endpoint_override=...` at the end."""
    base, sep, query = uri.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + sep + query


def resolve_storage(storage: str) -> str:
    """A storage URI with local paths made absolute (Ray and workers need absolute paths)."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


class RunDir:
    """The files of one grid's run, in any storage pyarrow can open."""

    def __init__(self, uri: str):
        self.uri = join_uri(uri)
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        except (pa.ArrowInvalid, OSError) as e:
            raise RunError(f"{uri}: cannot open storage ({e})") from None
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    @classmethod
    def for_grid(cls, storage: str, grid_name: str) -> "RunDir":
        return cls(join_uri(resolve_storage(storage), grid_name))

    def child(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    def display(self, *parts: str) -> str:
        """A path to show a user: a local path, or the storage URI."""
        return self.child(*parts) if self.local else join_uri(self.uri.partition("?")[0], *parts)

    # -- files ---------------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        if not self.local:  # an object store's put is atomic, and has no folders to create
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
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

    def write_table(self, path: str, table: pa.Table) -> None:
        """A Parquet file."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(path, sink.getvalue().to_pybytes())

    def read_table(self, path: str) -> pa.Table | None:
        """One Parquet or (`.arrow`: an older ablate's record) Arrow IPC file, or None where there is none."""
        data = self.read_bytes(path)
        if data is None:
            return None
        arrow = path.endswith(".arrow")
        try:
            if arrow:
                return pa.ipc.open_file(pa.BufferReader(data)).read_all()
            return pq.ParquetFile(pa.BufferReader(data)).read()  # read_table's dataset layer costs 1 ms more
        except (pa.ArrowInvalid, OSError) as e:
            shown = path if self.local else f"{self.uri.partition('://')[0]}://{path}"
            raise ResultsError(f"{shown}: unreadable {'Arrow' if arrow else 'Parquet'} ({e})") from None

    def list_dir(self, path: str) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))

    # -- trial records -------------------------------------------------------------------------
    def trial_file(self, trial_id: str, *names: str) -> str:
        return self.child("trials", trial_id, *names)

    def log_path(self, trial_id: str) -> str:
        return self.display("trials", trial_id, "trial.log")

    def progress(self, trial_id: str) -> dict[str, Any]:
        """A trial's latest progress: the last whole line of its progress file; {} if it has none."""
        data = self.read_bytes(self.trial_file(trial_id, PROGRESS))
        if data is None:
            data = self.read_bytes(self.trial_file(trial_id, OLD_PROGRESS))
            return json.loads(data) if data else {}
        return _last_progress(data)

    def write_progress(self, trial_id: str, progress: dict[str, Any]) -> None:
        """A trial's progress file holding `progress` alone, written whole."""
        self.write_bytes(self.trial_file(trial_id, PROGRESS), _line(progress))

    def checkpoint(self, trial_id: str) -> dict[str, Any] | None:
        """A trial's last checkpoint as its session saved it: {"state": what the workload handed
        to report, "epochs": every epoch's metrics up to it}; None if it has none."""
        data = self.read_bytes(self.trial_file(trial_id, "checkpoint.pt"))
        if data is None:
            return None
        if not data.startswith(b"PK"):  # torch.save writes a zip; a checkpoint without tensors is a pickle
            return pickle.loads(data)
        import torch

        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


PROGRESS = "progress.jsonl"
OLD_PROGRESS = "progress.json"  # older ablates rewrote one JSON object: still read
PROGRESS_LIMIT = 64 * 1024  # a progress file grown past this starts over with its latest line


def _line(progress: dict[str, Any]) -> bytes:
    return json.dumps(progress).encode() + b"\n"


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


class Lines:
    """A file that a trial adds lines to while it runs: its log, its progress.

    On a local path or NFS the file stays open and a line is one append: rewriting the file
    instead costs the filesystem a truncate or a replace (0.4 ms against 2 us on the 2-core ext4
    VMs this was measured on, most of it freeing the old blocks), several times an epoch. An
    object store cannot append: there the object is put again, with every line (`latest_only`
    false, a log) or with the latest alone (a progress file, of which only the last line is read).
    A local file of latest-only lines starts over, written whole, once it passes `limit` bytes."""

    def __init__(self, run: RunDir, path: str, latest_only: bool = False, limit: int = PROGRESS_LIMIT):
        self.run, self.path, self.latest_only, self.limit = run, path, latest_only, limit
        self.file = None  # the open file, on a local path
        self.held: bytes | None = None  # what the object holds, on an object store

    def add(self, data: bytes) -> None:
        if not self.run.local:
            if not self.latest_only:
                if self.held is None:  # an earlier attempt's lines
                    self.held = self.run.read_bytes(self.path) or b""
                self.held += data
            self.run.write_bytes(self.path, data if self.latest_only else self.held)
            return
        if self.file is not None and self.latest_only and self.file.tell() + len(data) > self.limit:
            self.close()
            self.run.write_bytes(self.path, data)
            return
        if self.file is None:
            self.run.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
            self.file = open(self.path, "a+b")
            if self._ends_mid_line():  # a crash cut the last line short: this one starts a line of its own
                data = b"\n" + data
        self.file.write(data)
        self.file.flush()

    def _ends_mid_line(self) -> bool:
        if self.file.seek(0, os.SEEK_END) == 0:
            return False
        self.file.seek(-1, os.SEEK_END)
        return self.file.read(1) != b"\n"

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _serialize(checkpoint: dict) -> bytes:
    """torch.save where the workload uses torch (tensors, CUDA ones too, load back on any device);
    a plain pickle where it does not, so that a trial of a script or of plain Python does not
    pay torch's import (about 2 s per Ray worker process on these CPUs)."""
    if "torch" not in sys.modules:  # no tensor can be in a checkpoint of a process without torch
        return pickle.dumps(checkpoint)
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


# Writes a trial's epoch files while the trial goes on (StoredSession.report). One thread, so a
# trial's files are written in the order they were queued.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ablate-writer")


class StoredSession:
    """The session a trial trains with under `ablate run`: checkpoints, epochs and progress go to
    the run's storage, so a retried or resumed trial finds them whatever node it lands on.

    An epoch's files are written in the background while its result goes to Tune and the next
    epoch trains: the checkpoint is serialized when reported (later changes to the model do not
    reach it), and the files are on storage before the next report, a log line, `flush()` or the
    end of the trial, each of which waits for them and raises what failed in writing them. The
    driver, which can see a result before its files, waits for them too (runner.py)."""

    def __init__(self, run: RunDir, trial_id: str, on_report=None):
        self.run, self.trial_id, self.on_report = run, trial_id, on_report
        self.epochs: list[dict[str, Any]] = []
        self.checkpoint_path = run.trial_file(trial_id, "checkpoint.pt")
        self.progress = run.progress(trial_id)
        self.progress_lines = Lines(run, run.trial_file(trial_id, PROGRESS), latest_only=True)
        self.log_lines = Lines(run, run.trial_file(trial_id, "trial.log"))
        self.epoch_began = time.monotonic()
        self.writing: Future | None = None  # the last epoch's files, while they are written
        self.local_files: str | None = None  # a local copy of files/ while `files()` is open, on an object store
        self.sent: dict[str, tuple[int, int]] = {}  # file -> (size, mtime) as last sent to the store

    def start(self) -> int:
        """Count this attempt; returns its number (1 for the first)."""
        started = self.progress.get("started_at") or now().isoformat()
        self.progress = {**self.progress, "attempt": self.progress.get("attempt", 0) + 1, "started_at": started,
                         "reports": 0}
        self.progress_lines.add(_line(self.progress))
        self.log(f"attempt {self.progress['attempt']} on {socket.gethostname()}")
        self.epoch_began = time.monotonic()
        return self.progress["attempt"]

    def log(self, line: str) -> None:
        self.flush()  # after the lines of the epochs before it
        self._append_log(line)

    def _append_log(self, line: str) -> None:
        self.log_lines.add(f"{now():%Y-%m-%d %H:%M:%S} {line}\n".encode())

    def flush(self) -> None:
        """Wait until the last epoch's files are written; raise what failed in writing them."""
        writing, self.writing = self.writing, None
        if writing is not None:
            writing.result()

    def close(self) -> None:
        """The end of the attempt: its files written and closed."""
        try:
            self.flush()
        finally:
            self.progress_lines.close()
            self.log_lines.close()

    def restore(self):
        saved = self.run.checkpoint(self.trial_id)
        if saved is None:
            return None
        self.epochs = saved["epochs"]
        self.log(f"resumed from the checkpoint after epoch {len(self.epochs)}")
        return saved["state"]

    def report(self, metrics, checkpoint=None):
        self.flush()
        # Epochs are timed here, not by the workload: `ablate status` needs their length for
        # compute used and ETAs whatever the workload reports.
        seconds, self.epoch_began = time.monotonic() - self.epoch_began, time.monotonic()
        self.epochs.append(dict(metrics))
        saved = _serialize({"state": checkpoint, "epochs": self.epochs}) if checkpoint is not None else None
        self.progress = {**self.progress, "epoch": len(self.epochs), "metrics": dict(metrics), "seconds": seconds,
                         "train_seconds": self.progress.get("train_seconds", 0.0) + seconds,
                         "reports": self.progress.get("reports", 0) + 1,  # in this attempt: Tune's training_iteration
                         "updated_at": now().isoformat()}
        self.writing = _WRITER.submit(self._write_epoch, saved, self.progress, " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        if self.local_files is not None:
            self._send_files()
        if self.on_report is not None:
            self.on_report(metrics)

    def _write_epoch(self, checkpoint: bytes | None, progress: dict[str, Any], line: str) -> None:
        if checkpoint is not None:  # first: progress that names an epoch means its checkpoint is there
            self.run.write_bytes(self.checkpoint_path, checkpoint)
        self.progress_lines.add(_line(progress))
        self._append_log(line)

    @contextlib.contextmanager
    def files(self):
        """The trial's own directory, `trials/<trial_id>/files/`. On a local or NFS path that is
        the directory itself. On an object store it is a local copy: fetched first, and sent back
        after each epoch reported and at the end, so that a retry on another node, even after
        this node is lost, finds what the last reported epoch left (a script saves its checkpoint
        before it prints the epoch)."""
        stored = self.run.trial_file(self.trial_id, "files")
        if self.run.local:
            os.makedirs(stored, exist_ok=True)
            yield stored
            return
        self.local_files = tempfile.mkdtemp(prefix=f"ablate-{self.trial_id}-")
        try:
            if self.run.fs.get_file_info(stored).type == pafs.FileType.Directory:
                pafs.copy_files(stored, self.local_files, source_filesystem=self.run.fs,
                                destination_filesystem=pafs.LocalFileSystem())
            self.sent = self._local_signatures()
            yield self.local_files
        finally:
            try:
                self._send_files()
            finally:
                shutil.rmtree(self.local_files, ignore_errors=True)
                self.local_files = None

    def _local_signatures(self) -> dict[str, tuple[int, int]]:
        out = {}
        for folder, _, names in os.walk(self.local_files):
            for name in names:
                stat = os.stat(os.path.join(folder, name))
                out[os.path.relpath(os.path.join(folder, name), self.local_files)] = (stat.st_size, stat.st_mtime_ns)
        return out

    def _send_files(self) -> None:
        """Send what changed since it was last sent (a checkpoint can be large)."""
        for relative, signature in self._local_signatures().items():
            if self.sent.get(relative) != signature:
                pafs.copy_files(os.path.join(self.local_files, relative),
                                self.run.trial_file(self.trial_id, "files", *relative.split(os.sep)),
                                source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.run.fs)
                self.sent[relative] = signature
