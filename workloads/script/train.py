"""One trial of a training script (a grid's `command:`, orchestrator/plan/script.py): the process,
its output, its reports (read from the output by metrics.py).

    result = train(args_for, workdir, "ABLATE ", patterns, session)

The command runs through launch.py, the leader of its own process group, which dies with the Ray
worker running the trial and takes the group with it; the trial kills the group too when it
ends, whichever way (a failure, a stop by Tune, a script that exits leaving a helper behind).
Its environment has ABLATE_TRIAL_ID, ABLATE_TRIAL_DIR (the session's `files()`: a directory kept
in the run's storage) and the GPUs Ray gave the worker in CUDA_VISIBLE_DEVICES. Its output, stdout
and stderr, goes to the trial's log.
"""
from __future__ import annotations

import collections
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workloads.base import RESULT_STATUSES, FinalFailure, WorkloadError
from workloads.script import launch
from workloads.script.metrics import Metrics, place

LAUNCHER = str(Path(__file__).with_name("launch.py"))
TAIL = 5  # lines of output a failure's message quotes
LINE = 300  # characters of each: a long line before the error (`print(args)`) must not crowd it out
# How long a report complete one way waits, with no line after it, for its place's line the other
# way (Metrics.held): a script prints the two together.
HELD = 0.25
# How often the lines of a script that never pauses go to its log, so that `ablate log` shows them
# while it trains (on S3 each write puts the log's last segment again).
LOG_EVERY_S = 2.0
# How long the output is read after the command's end and the kill of all it started: a process
# that escaped both (it cleared its environment) may hold it open for ever.
GONE_S = 5.0


class CommandFailed(WorkloadError):
    """The command ended without a result: a non-zero exit, a signal, or no metric at all."""


class _Process:
    """The command in its own process group, read as it prints, killed with everything it
    started when the trial ends, whichever way it ends."""

    def __init__(self, args: list[str], cwd: str, env: dict[str, str]):
        self.token = uuid.uuid4().hex  # in the environment of all it starts, in any session (launch.py)
        self.popen = subprocess.Popen([sys.executable, "-I", "-S", LAUNCHER, str(os.getpid()), *args], cwd=cwd,
                                      env={**env, launch.TOKEN: self.token}, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        # A thread drains the output: `session.report` blocks until Ray asks for the result, and a
        # script blocked on a full pipe meanwhile would stop training.
        self.lines: queue.Queue[tuple[str, str | None] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        # A line redrawn after each "\r" (a progress bar, an epoch printed in place) ends only at
        # "\n", maybe after training: each part is read as it is printed, not when the line ends.
        rest, shown = bytearray(), ""  # rest: the part not ended yet
        while chunk := self.popen.stdout.read1(1 << 16):
            *ended, last = re.split(rb"(\r|\n)", chunk)
            if ended:
                ended[0], rest = bytes(rest) + ended[0], bytearray()
            rest += last
            for raw, end in zip(ended[::2], ended[1::2]):  # "\r" and "\n" are never inside a UTF-8 character
                part = raw.decode(errors="replace")
                shown = part or shown  # what a terminal shows of the line ("...\r\n" included)
                if end == b"\r":
                    self.lines.put((part, None))
                else:
                    self.lines.put((part, shown))
                    shown = ""
        if rest or shown:
            part = rest.decode(errors="replace")
            self.lines.put((part, part or shown))
        self.lines.put(None)

    def output(self, idle=lambda: 1.0):
        """(text, line) as the command prints: each text between "\r" and "\n", with the line it
        ends as a terminal shows it, or None; None after `idle()` seconds without any; ends with the
        output."""
        exited_at = None
        while True:
            try:
                line = self.lines.get(timeout=idle())
            except queue.Empty:
                if self.popen.poll() is not None:  # it exited, and what it started still holds the output open
                    self.kill()
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > GONE_S:  # a process it started that no kill reaches
                        return
                yield None
                continue
            if line is None:
                return
            yield line

    def kill(self):
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group has ended
            pass
        launch.end_processes(self.token)  # and what it started in a session of its own

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self.popen.wait()
        # Not while the reader waits on it (close would wait too): a process that no kill reaches,
        # outside the command's group and without its token, may hold the output open.
        self.reader.join(timeout=GONE_S)
        if not self.reader.is_alive():
            self.popen.stdout.close()


def _exit(code: int) -> str:
    if code < 0:
        return f"the command was killed by {signal.Signals(-code).name}"
    return f"the command exited with code {code}"


def _last_output(tail, limit: int) -> str:
    """The end of a failure's message: the last lines of output that fit in `limit` characters,
    the last (where an error is) kept first."""
    lines = list(tail)
    while len(" | ".join(lines)) > limit and len(lines) > 1:
        lines.pop(0)
    return f"; its last output: {' | '.join(lines)}" if lines else "; it printed nothing"


def _result(final: dict[str, Any]) -> dict[str, Any]:
    """A trial's row from the command's last values: every metric (a list or a mapping too: its
    record keeps it as text), a status where it gave one."""
    row = {k: v for k, v in final.items() if k != "status"}
    row["status"] = final["status"] if final.get("status") in RESULT_STATUSES else "completed"
    return row


def train(args_for: Callable[[str, bool], list[str]], workdir: str, prefix: str, patterns, session,
          taken: dict[str, str] | None = None, files=(), planned: int | None = None,
          unit: str = "epoch") -> dict[str, Any]:
    """One attempt of a trial: run the command `args_for(trial_dir, resuming)` in `workdir`
    (resuming: an earlier attempt reported, so its checkpoint is there), report its epochs, return
    its last values; CommandFailed if it ends without a result. Its metrics named like the columns
    ablate writes are kept in the columns `taken` maps their names to (`reported_<name>`). The JSON objects it leaves in its trial
    directory at `files` are its final values too, read once it ended well (FinalFailure if one is not there).

    A command that exits non-zero after reporting the `planned` epochs (or steps: `unit`) of its
    grid ended well all the same, its exit in the row's `status_reason` and its log: a crash in its
    teardown (a process group's destruction, a logger's last upload) says nothing of what it
    reported, and a retry would train it all again.

    Its output is read, and its epochs recorded, in a thread of their own: the session's report
    to Tune waits for the driver, and the script trains on meanwhile. A script saves its own
    checkpoint before it prints the epoch, so an epoch printed must be on storage at once: an
    attempt that ends (a killed worker or driver) with printed epochs unrecorded is resumed from
    a checkpoint past them, and they would never be printed again."""
    state = session.restore()
    metrics = Metrics(prefix, patterns, resumed_at=state["epoch"] if state else None, taken=taken)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL)
    with session.files() as trial_dir:
        # Told to resume once an attempt has reported: its script saved the checkpoint before printing.
        # Files alone may be all that a script writes before it (its arguments, a log).
        args = args_for(trial_dir, resuming=state is not None)
        if not os.path.isdir(workdir):
            raise WorkloadError(f"{workdir}: the command's working directory does not exist on this node")
        # CUDA_VISIBLE_DEVICES is already the GPUs Ray assigned to this trial's worker.
        env = {**os.environ, "ABLATE_TRIAL_ID": session.trial_id, "ABLATE_TRIAL_DIR": trial_dir,
               "PYTHONUNBUFFERED": "1"}  # a Python script's epochs arrive as it prints them, not at exit
        session.log(f"running {shlex.join(args)} (in {workdir})")
        with _Process(args, workdir, env) as process:
            recorder = _Recorder(process, metrics, session, tail, state)
            recorder.start()
            try:
                while recorder.is_alive():
                    if recorder.recorded.wait(timeout=1.0):
                        recorder.recorded.clear()
                        session.announce()
                recorder.raise_failure()
                session.announce()  # the last epochs, or the pause at a rung
            except BaseException:
                if recorder.paused:  # killed at a rung: what it printed before it died is recorded too
                    recorder.join()
                raise
            finally:  # the trial ends here however it ends (Tune stops it): nothing records after
                recorder.stop.set()
                recorder.join()
            code = process.popen.wait()
        # Where it got to, with what earlier attempts reported (the checkpoint it resumed from).
        trained = (f"{_exit(code)} after its last report ({unit} {recorder.reached} of {planned})"
                   if code != 0 and planned is not None and recorder.reached >= planned else None)
        try:
            if code == 0 or trained:
                for name in files:
                    metrics.add_final(_read_json(os.path.join(trial_dir, name), name, trained))
        finally:  # a file missing or damaged fails the trial: what its output showed is logged first
            _log_problems(metrics, session)
    if code != 0 and not trained:
        raise CommandFailed(f"{_exit(code)}{_last_output(tail, 600)}")
    if not metrics.seen and not state:
        raise CommandFailed(f"the command printed no metric (expected {metrics.expected()}){_last_output(tail, 400)}")
    result = _result(metrics.final)
    if trained:
        session.log(f"{trained}: its reports are kept, and it is not trained again{_last_output(tail, 600)}")
        result["status_reason"] = "; ".join(filter(None, [result.get("status_reason"), trained]))
    return result


def _log_problems(metrics: Metrics, session) -> None:
    for problem in metrics.problems:
        session.log(problem)
    if metrics.more_problems:
        session.log(f"(and {metrics.more_problems} more like these)")
    if metrics.renamed:
        session.log(f"ablate writes columns named {', '.join(metrics.renamed)}: the script's own are kept as "
                    f"{', '.join(metrics.renamed.values())}")


def _read_json(path: str, name: str, exited: str | None = None) -> dict[str, Any]:
    """The metrics a script wrote to the file at `path` (Hugging Face's all_results.json); `exited`:
    how the script ended, where it did not end well but after its training."""
    def fail(problem):
        raise FinalFailure(f"{exited + '; ' if exited else ''}command.metrics.files: {name}: {problem}")

    try:
        with open(path, "rb") as f:
            values = json.loads(f.read())
    except FileNotFoundError:
        fail("not in the trial's directory after the command ended")
    except (OSError, ValueError) as e:
        fail(f"not a JSON object ({e})")
    if not isinstance(values, dict):
        fail(f"not a JSON object (a {type(values).__name__})")
    return values


class _Recorder(threading.Thread):
    """Reads the command's output as it prints: logs its lines, records its epochs in the session
    (`recorded` is set after each), and kills the command where the trial pauses at a rung: what it
    printed before it died, past the rung, is read to its end and recorded too."""

    def __init__(self, process: _Process, metrics: Metrics, session, tail, state):
        super().__init__(daemon=True)
        self.process, self.metrics, self.session, self.tail, self.state = process, metrics, session, tail, state
        self.recorded, self.stop = threading.Event(), threading.Event()
        self.log: list[str] = []
        self.logged_at = time.monotonic()
        self.failure: BaseException | None = None
        self.paused = False  # at a rung, before the session says so: its training thread waits for what is left
        self.reached = state["epoch"] if state else 0  # the place of its last report (an epoch, or a step)

    def run(self):
        try:
            self._read()
        except BaseException as e:  # a storage error: the training thread raises it
            self.failure = e
        finally:
            self.recorded.set()

    def raise_failure(self):
        if self.failure is not None:
            raise self.failure

    def _read(self):
        for printed in self.process.output(idle=lambda: HELD if self.metrics.held else 1.0):
            if self.stop.is_set():
                return
            if printed is None:
                self._report(self.metrics.idle())
                self._flush()
                if self.paused and self.process.popen.poll() is not None:
                    break  # what it started outside its process group holds the output open
                continue
            text, line = printed
            if line is not None:
                self.log.append(f"| {line}")
                if len(self.log) >= 1000 or time.monotonic() - self.logged_at >= LOG_EVERY_S:
                    self._flush()
                if shown := line.strip():
                    self.tail.append(shown if len(shown) <= LINE else shown[:LINE] + "...")
            if text:
                self._report(self.metrics.feed(text, redrawn=line is None))
        self._report(self.metrics.end())
        self._flush()

    def _flush(self):
        self.logged_at = time.monotonic()
        if self.log:
            self.session.log("\n".join(self.log))
            self.log.clear()

    def _pause(self):
        self.paused = True
        self.process.kill()

    def _report(self, epochs) -> None:
        for repeat in self.metrics.repeats:
            self._flush()
            where = ", ".join(f"{k} {repeat[k]}" for k in ("epoch", "step") if k in repeat)
            self.session.log(f"not reported again: {where} (the checkpoint this attempt resumed from is at "
                             f"{self.state['epoch']})")
        self.metrics.repeats.clear()
        for epoch in epochs:
            self._flush()
            # The checkpoint: where a retry takes up its output.
            self.session.record(epoch, checkpoint={"epoch": place(epoch)}, on_pause=self._pause)
            self.reached = place(epoch)  # not the most: a count may start again (fine-tuning after pretraining)
            self.recorded.set()
