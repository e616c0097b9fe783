"""The session a trial trains with under `ablate run` (workloads/base.py, Session): its epochs,
checkpoints, progress and log go to the run's storage, so that a retried or resumed trial finds
them on whatever node it lands.

    session = StoredSession(run, trial_id, on_report=tune.report)
    session.start(); result = workload.train(config, session); session.close()

Runs in the trial's Ray worker and knows nothing of Ray: the function each report is passed on
to (Tune's) is handed in.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from orchestrator.run.processes import this_process
from orchestrator.store.checkpoint import serialize
from orchestrator.store.lines import Lines
from orchestrator.store.rundir import CHECKPOINT, EPOCHS, PROGRESS, RunDir, json_line, now

# Writes a trial's epoch files while the trial goes on (StoredSession.report). One thread, so a
# trial's files are written in the order they were queued.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ablate-writer")


@dataclass
class _Files:
    """What a trial's next write puts on storage: what was reported and logged while the last was
    written (a script can report faster than an object store takes a file)."""
    epochs: bytearray = field(default_factory=bytearray)  # lines to add; with `whole`, all the file holds
    whole: bool = False
    checkpoint: bytes | None = None  # the latest, which covers every epoch before it
    progress: dict[str, Any] | None = None  # the latest
    log: bytearray = field(default_factory=bytearray)
    # The trial's own files (files()) sent after the checkpoint: a script's own checkpoint on the
    # store must not be past the epochs recorded, or its retry resumes past epochs it never reports.
    send_files: bool = False

    def __bool__(self) -> bool:
        return bool(self.epochs or self.whole or self.checkpoint is not None or self.progress is not None or self.log
                    or self.send_files)


def last_values(last: dict[str, Any], epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """The last value of each metric over `epochs`, after those in `last`: a script's epoch rows
    among its step rows hold metrics its latest report may not (what halving ranks by)."""
    return {**last, **{k: v for e in epochs for k, v in e.items() if v is not None and k not in ("epoch", "step")}}


def _plain(metrics: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """A report's metrics as its record holds them, and their line in the epochs file: a NumPy or
    torch scalar (`loss` where `loss.item()` was meant) as the Python number it is; TypeError naming
    a metric that JSON cannot hold."""
    plain = {k: v.item() if getattr(v, "shape", None) == () and hasattr(v, "item") else v  # torch.Size([]) == () too
             for k, v in metrics.items()}
    try:
        return plain, json_line(plain)
    except (TypeError, ValueError):
        name, value = next((k, v) for k, v in plain.items() if not _json_holds(v))
        raise TypeError(f"metric {name!r}: a {type(value).__module__}.{type(value).__qualname__} is not a "
                        "number, text, list or mapping") from None


def _json_holds(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _log_line(text: str) -> bytes:
    return f"{now():%Y-%m-%d %H:%M:%S} {text}\n".encode()


class Paused(BaseException):
    """Raised by `StoredSession.report` once a trial reached the epoch it was to train `until`: its
    cell decides at that rung whether it goes on (run/halving.py). Not an Exception, so that a
    workload's own `except Exception` does not take it for an error."""


class StoredSession:
    """The session a trial trains with under `ablate run`: checkpoints, epochs and progress go to
    the run's storage, so a retried or resumed trial finds them whatever node it lands on.

    An epoch's files are written in the background while its result goes to Tune and the next
    epoch trains: the checkpoint is serialized when reported (later changes to the model do not
    reach it). Epochs and log lines that come while a write is under way go together in the next,
    in order, each checkpoint after the epochs it covers; `flush()` and the end of the trial wait
    for them all. What failed in writing them is raised by the next report, log line or `flush()`.
    The driver, which can see a result before its files, waits for them (events.py)."""

    def __init__(self, run: RunDir, trial_id: str, on_report=None, until: int | None = None,
                 kept: dict[str, str] | None = None):
        self.run, self.trial_id, self.on_report = run, trial_id, on_report
        self.until = until  # the epoch (or step) after which the trial pauses (Paused); None: to its end
        # Names ablate writes (a parameter, `host`), each with the column a metric reported under it
        # is kept in (`reported_lr`), and those renamed so far, for the log.
        self.kept, self.renamed = kept or {}, set()
        self.epochs: list[dict[str, Any]] = []
        self.checkpoint_path = run.trial_file(trial_id, CHECKPOINT)
        self.progress = run.progress(trial_id)
        self.progress_lines = Lines(run, run.trial_file(trial_id, PROGRESS), latest_only=True)
        # Every epoch, a line each, so that a checkpoint need only say how many it covers: a script
        # reporting every few steps reports thousands, each with its checkpoint.
        self.epoch_lines = Lines(run, run.trial_file(trial_id, EPOCHS))
        self.epoch_lines_whole = False  # whether the file holds this attempt's `epochs`: from its first report
        self.log_lines = Lines(run, run.trial_file(trial_id, "trial.log"))
        self.epoch_began = time.monotonic()
        self.queued = _Files()  # what the writer takes next, under `queue_lock`
        self.queue_lock = threading.Lock()
        self.writing = False  # whether the writer is at work on this session's files
        self.written = threading.Event()  # set while it is not
        self.written.set()
        self.failed: BaseException | None = None  # what the writer met, for the next call to raise
        self.local_files: str | None = None  # a local copy of files/ while `files()` is open, on an object store
        self.sent: dict[str, tuple[int, int]] = {}  # file -> (size, mtime) as last sent to the store
        # record() may run in a thread of the workload's (a script's output) while the training
        # thread waits in announce() or logs.
        self.lock = threading.RLock()
        # The epochs recorded and not announced: each goes to Tune, one result per epoch, as a
        # scheduler counts them (ASHA's training_iteration) and trackers log them.
        self.unannounced: list[dict[str, Any]] = []
        self.paused_at: int | None = None  # where it reached `until`

    def start(self) -> int:
        """Count this attempt; returns its number (1 for the first). A trial resumed after a pause
        at a rung of halving goes on with the attempt that paused: a round is not a retry."""
        started = self.progress.get("started_at") or now().isoformat()
        paused_at = self.progress.get("paused_at")
        # worker: so that a driver taking over from a dead one can wait for this process to end (runner.py).
        # best: of the epochs this attempt trains or restores (restore), not of an earlier attempt's.
        earlier = {k: v for k, v in self.progress.items()
                   if k not in ("paused_at", "best", "last", "epochs_after_checkpoint")}
        self.progress = {**earlier, "attempt": self.progress.get("attempt", 0) + (1 if paused_at is None else 0),
                         "started_at": started, "reports": 0, "worker": this_process()}
        self.progress_lines.add(json_line(self.progress))
        resumed = "" if paused_at is None else f" resumed after its pause at {paused_at}"
        self.log(f"attempt {self.progress['attempt']}{resumed} on {socket.gethostname()}")
        self.epoch_began = time.monotonic()
        return self.progress["attempt"]

    def log(self, line: str) -> None:
        self._queue(log=_log_line(line))  # after the lines of the epochs before it

    def flush(self) -> None:
        """Wait until everything reported and logged is written; raise what failed in writing it."""
        self.written.wait()
        self._raise_failed()

    def _raise_failed(self) -> None:
        with self.queue_lock:
            failed, self.failed = self.failed, None
        if failed is not None:
            raise failed

    def _queue(self, epochs: bytes = b"", whole: bool = False, checkpoint: bytes | None = None,
               progress: dict[str, Any] | None = None, log: bytes = b"", send_files: bool = False) -> None:
        """Files for the writer: started where it is not at work already."""
        self._raise_failed()
        with self.queue_lock:
            queued = self.queued
            if whole:
                queued.epochs, queued.whole = bytearray(epochs), True
            else:
                queued.epochs += epochs
            if checkpoint is not None:
                queued.checkpoint = checkpoint
            if progress is not None:
                queued.progress = progress
            queued.log += log
            queued.send_files |= send_files
            if not self.writing:
                # RuntimeError in a worker whose interpreter is shutting down: flush() must not then wait.
                _WRITER.submit(self._write_queued)
                self.writing = True
                self.written.clear()

    def _write_queued(self) -> None:
        """The writer: what was queued, until nothing is, or until a write fails."""
        while True:
            with self.queue_lock:
                files, self.queued = self.queued, _Files()
                if not files:
                    self.writing = False
                    self.written.set()
                    return
            try:
                self._write(files)
            except BaseException as e:  # the next report, log line or flush raises it
                with self.queue_lock:
                    self.failed, self.queued, self.writing = e, _Files(), False
                    self.written.set()
                return

    def close(self) -> None:
        """The end of the attempt: its files written and closed."""
        with contextlib.ExitStack() as files:  # each closed, whichever fails (a full disk fails them all)
            for lines in (self.log_lines, self.epoch_lines, self.progress_lines):
                files.callback(lines.close)
            self.flush()

    def restore(self):
        saved = self.run.checkpoint(self.trial_id)
        if saved is None:
            return None
        self.epochs = saved["epochs"]
        self.progress["last"] = last_values({}, self.epochs)
        last = self.epochs[-1] if self.epochs else {}
        # A script reporting every N steps resumes at a step, as its own log says.
        where = f"step {last['step']}" if "step" in last else f"epoch {len(self.epochs)}"
        self.log(f"resumed from the checkpoint after {where}")
        return saved["state"]

    def report(self, metrics, checkpoint=None):
        self.record(metrics, checkpoint)
        self.announce()

    def record(self, metrics, checkpoint=None, on_pause=lambda: None) -> bool:
        """The epoch's files, written in the background (see the class), and its progress; False,
        after calling `on_pause` first (a script is stopped before it trains further), where the
        trial reached the epoch it trains `until`: it pauses there. False again for each epoch
        recorded after that (a script printed it before it could be stopped)."""
        with self.lock:
            metrics = self.own(metrics)
            if self.paused_at is not None:
                # What a script printed past the rung before it was killed there: recorded, as all
                # it printed is, but the trial is ranked (and, if stopped, recorded) at the rung (halving.py),
                # and the driver is not told: a trial it stops there must not go on in its trackers.
                self._record(metrics, checkpoint, announce=False)
                return False
            at = metrics.get("step", len(self.epochs) + 1)
            pausing = self.until is not None and at >= self.until
            if pausing:
                on_pause()
            self._record(metrics, checkpoint)
            if pausing:
                self.progress = {**self.progress, "paused_at": at}
                self._queue(progress=self.progress)  # after its checkpoint
                self.flush()
                self.paused_at = at
            return not pausing

    def own(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """`metrics` with each name ablate has taken made the trial's own (`reported_lr`), said in its
        log the first time."""
        if new := [name for name in metrics if name in self.kept and name not in self.renamed]:
            self.renamed.update(new)
            self.log(f"ablate writes columns named {', '.join(new)}: the trial's own are kept as "
                     f"{', '.join(map(self.kept.get, new))}")
        return {self.kept.get(k, k): v for k, v in metrics.items()}

    def pauses_at_next_report(self) -> bool:
        return self.until is not None and len(self.epochs) + 1 >= self.until  # as record() counts an epoch

    def announce(self) -> None:
        """The epochs recorded since the last call go on to the driver, in order (`on_report`:
        Tune's, which waits for the driver to take each); Paused once the trial reached `until`."""
        with self.lock:  # paused as of the epochs taken: one that pauses meanwhile goes on at the next call
            epochs, self.unannounced, paused_at = self.unannounced, [], self.paused_at
        if self.on_report is not None:
            for metrics in epochs:
                self.on_report(metrics)
        if paused_at is not None:
            raise Paused(paused_at)

    def _record(self, metrics, checkpoint, announce=True) -> None:
        self._raise_failed()
        # Epochs are timed here, not by the workload: `ablate status` needs their length for
        # compute used and ETAs whatever the workload reports.
        seconds, self.epoch_began = time.monotonic() - self.epoch_began, time.monotonic()
        metrics, line = _plain(metrics)
        self.epochs.append(metrics)
        # The attempt's first report writes its epochs whole (from its checkpoint: those an earlier
        # attempt reported past it are trained again), the next add a line each.
        whole, self.epoch_lines_whole = not self.epoch_lines_whole, True
        epochs = b"".join(map(json_line, self.epochs)) if whole else line
        saved = serialize({"state": checkpoint, "reported": len(self.epochs)}) if checkpoint is not None else None
        self.progress = {**self.progress, "epoch": len(self.epochs), "metrics": dict(metrics), "seconds": seconds,
                         "last": last_values(self.progress.get("last", {}), [metrics]),
                         "train_seconds": self.progress.get("train_seconds", 0.0) + seconds,
                         "reports": self.progress.get("reports", 0) + 1,  # in this attempt: Tune's training_iteration
                         "updated_at": now().isoformat()}
        said = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        self._queue(epochs, whole, saved, self.progress, _log_line(said), send_files=self.local_files is not None)
        if announce:
            self.unannounced.append(dict(metrics))

    def _write(self, files: _Files) -> None:
        # In this order: a checkpoint means the epochs it covers are there, progress that names an
        # epoch means its checkpoint is.
        if files.whole:
            self.epoch_lines.replace(files.epochs)
        elif files.epochs:
            self.epoch_lines.add(files.epochs)
        if files.checkpoint is not None:
            self.run.write_bytes(self.checkpoint_path, files.checkpoint)
        if files.send_files and self.local_files is not None:
            self._send_files()
        if files.progress is not None:
            self.progress_lines.add(json_line(files.progress))
        if files.log:
            self.log_lines.add(files.log)

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
                self.written.wait()  # the writer's last send of them, before this one and their removal
                self._send_files()
            finally:
                shutil.rmtree(self.local_files, ignore_errors=True)
                self.local_files = None

    def _local_signatures(self) -> dict[str, tuple[int, int]]:
        out = {}
        for folder, _, names in os.walk(self.local_files):
            for name in names:
                try:
                    stat = os.stat(os.path.join(folder, name))
                except FileNotFoundError:  # the script, running on, replaced it (`os.replace` of a .tmp)
                    continue
                out[os.path.relpath(os.path.join(folder, name), self.local_files)] = (stat.st_size, stat.st_mtime_ns)
        return out

    def _send_files(self) -> None:
        """Send what changed since it was last sent (a checkpoint can be large)."""
        for relative, signature in self._local_signatures().items():
            if self.sent.get(relative) != signature:
                try:
                    pafs.copy_files(os.path.join(self.local_files, relative),
                                    self.run.trial_file(self.trial_id, "files", *relative.split(os.sep)),
                                    source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.run.fs)
                except FileNotFoundError:  # gone since it was listed, as above: the next send has what replaced it
                    continue
                self.sent[relative] = signature
