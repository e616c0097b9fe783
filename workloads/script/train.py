"""One trial of a training script (a grid's `command:`, orchestrator/plan/script.py): the process,
its output, its metrics.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workloads.base import RESULT_STATUSES, WorkloadError

PREFIX = "ABLATE "  # what a line of metrics starts with, unless a grid says otherwise
LAUNCHER = str(Path(__file__).with_name("launch.py"))
TAIL = 5  # lines of output a failure's message quotes


class CommandFailed(WorkloadError):
    """The command ended without a result: a non-zero exit, a signal, or no metric at all."""


class _Process:
    """The command in its own process group, read as it prints, killed with everything it
    started when the trial ends, whichever way it ends."""

    def __init__(self, args: list[str], cwd: str, env: dict[str, str]):
        self.popen = subprocess.Popen([sys.executable, "-I", "-S", LAUNCHER, str(os.getpid()), *args], cwd=cwd,
                                      env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        # A thread drains the output: `session.report` blocks until Ray asks for the result, and a
        # script blocked on a full pipe meanwhile would stop training.
        self.lines: queue.Queue[tuple[str, str | None] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

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

    def output(self, idle: float = 1.0):
        """(text, line) as the command prints: each text between "\r" and "\n", with the line it
        ends as a terminal shows it, or None; None after `idle` seconds without any; ends with the
        output."""
        while True:
            try:
                line = self.lines.get(timeout=idle)
            except queue.Empty:
                if self.popen.poll() is not None:  # it exited, and what it started still holds the output open
                    self.kill()
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self.popen.wait()
        self.popen.stdout.close()


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class Metrics:
    """Epochs and final values from a command's output lines.

    A line with the prefix and a JSON object, or a match of a pattern, is a set of metrics. With
    an `epoch` (or a `step`, for a script that reports every N steps), it belongs to that epoch:
    patterns that print one epoch over several lines are merged, and an epoch is complete when
    every pattern that captures `epoch` (a step: `step`) with metrics has matched for it (a JSON
    line is complete at once), or when a later epoch begins, or at the end. It is recorded when
    complete: a script saves its checkpoint before it prints, and an attempt that ends (killed,
    paused at a rung) is resumed past what it printed. Patterns that capture nothing but `epoch` are
    headers (Keras' `Epoch 3/10`): the epoch they begin is complete only when a later one begins,
    or at the end. A pattern's match without an `epoch` joins the epoch a header began (the
    metrics under it); otherwise, and a JSON line without an `epoch` always, it adds to the final
    values (`test error 0.08` after training). An epoch printed after steps is at the last step
    printed before it: its row holds that `step`, which places it in training.

    An attempt resumed from a checkpoint at `resumed_at` (an epoch, or a step) repeats what its
    script's own checkpoint is behind: reports at or before it are `repeats`, not reported, until
    one passes it. After that a count may start again (a second phase of training).
    """

    def __init__(self, prefix: str = PREFIX, patterns=(), resumed_at: int | None = None):
        self.prefix, self.patterns = prefix, [re.compile(p) for p in patterns]
        groups = [set(p.groupindex) for p in self.patterns]
        # Headers alone never complete an epoch: its metrics are on the lines that follow.
        self.headers = {i for i, names in enumerate(groups) if names == {"epoch"}}
        self.completing = {key: {i for i, names in enumerate(groups) if key in names and names != {key}}
                           for key in ("epoch", "step")}
        # A line's epoch first, whatever the order of the patterns: its other metrics belong to it.
        self.order = sorted(range(len(groups)), key=lambda i: not {"epoch", "step"} & groups[i])
        self.resumed_at = resumed_at  # None: not resumed, or passed
        self.repeats: list[dict[str, Any]] = []
        self.step: int | None = None  # the last step printed
        self.pending: dict[str, Any] = {}
        self.matched: set[int] = set()  # the patterns that matched for the pending epoch
        self.final: dict[str, Any] = {}
        self.seen = False
        self.problems: list[str] = []  # for the trial's log: lines with the prefix and no JSON object, ...

    def feed(self, line: str) -> list[dict[str, Any]]:
        """The epochs this line completes."""
        done = []
        at = line.find(self.prefix)
        if at >= 0:
            try:
                metrics = json.loads(line[at + len(self.prefix):])
            except ValueError:
                metrics = None
            if isinstance(metrics, dict):
                done += self._add(metrics, complete=True)
            else:
                self.problems.append(f"not metrics: {line}")
        for i in self.order:
            if match := self.patterns[i].search(line):
                groups = {k: _value(v) for k, v in match.groupdict().items() if v is not None}
                done += self._add(groups, pattern=i)
        return done

    def _add(self, metrics: dict[str, Any], complete=False, pattern=None) -> list[dict[str, Any]]:
        if not metrics:
            return []
        self.seen = True
        places = {k: metrics[k] for k in ("epoch", "step") if k in metrics}
        if not places:
            under_header = pattern is not None and self.matched & self.headers
            (self.pending if under_header else self.final).update(metrics)
            return []
        for key, at in places.items():
            if not (isinstance(at, (int, float)) and not isinstance(at, bool) and float(at).is_integer()):
                # Hugging Face's Trainer logs at a fraction of an epoch (`'epoch': 0.37`): no place in
                # training a row can have, but its values are the trial's latest all the same.
                self.problems.append(f"not a report: {key} {at!r} is not a whole number; its values count "
                                     "only as the trial's last values")
                return self._add({k: v for k, v in metrics.items() if k not in places}, pattern=pattern)
        metrics = {**metrics, **{k: int(v) for k, v in places.items()}}
        key = next(iter(places))  # what it belongs to: its epoch, or its step
        done = self.end() if self.pending and self.pending.get(key) != metrics[key] else []
        self.step = metrics.get("step", self.step)
        self.pending = {**self.pending, **metrics}
        self.matched.add(pattern)
        if complete or (self.completing[key] and self.completing[key] <= self.matched):
            done += self.end()
        return done

    def end(self) -> list[dict[str, Any]]:
        """The pending epoch, unless it repeats what the checkpoint this attempt resumed from has."""
        row, self.pending, self.matched = self.pending, {}, set()
        if not row:
            return []
        if "step" not in row and self.step is not None:
            row["step"] = self.step
        self.final.update({k: v for k, v in row.items() if k not in ("epoch", "step")})
        if self.resumed_at is not None:
            if _at(row) <= self.resumed_at:
                self.repeats.append(row)
                return []
            self.resumed_at = None
        return [row]

    def expected(self) -> str:
        said = f"lines with {self.prefix.strip()!r} and a JSON object"
        return said + "".join(f", or matching {p.pattern!r}" for p in self.patterns)


def _at(report: dict[str, Any]) -> int:
    """Where a report is in training: its step, or its epoch."""
    return report["step"] if "step" in report else report["epoch"]


def _exit(code: int) -> str:
    if code < 0:
        return f"the command was killed by {signal.Signals(-code).name}"
    return f"the command exited with code {code}"


def _result(final: dict[str, Any]) -> dict[str, Any]:
    """A trial's row from the command's last values: every metric (a list or a mapping too: its
    record keeps it as text), a status where it gave one."""
    row = {k: v for k, v in final.items() if k != "status"}
    row["status"] = final["status"] if final.get("status") in RESULT_STATUSES else "completed"
    return row


def train(args_for: Callable[[str, bool], list[str]], workdir: str, prefix: str, patterns, session) -> dict[str, Any]:
    """One attempt of a trial: run the command `args_for(trial_dir, resuming)` in `workdir`
    (resuming: an earlier attempt left files in the trial directory), report its epochs, return
    its last values; CommandFailed if it ends without a result.

    Its output is read, and its epochs recorded, in a thread of their own: the session's report
    to Tune waits for the driver, and the script trains on meanwhile. A script saves its own
    checkpoint before it prints the epoch, so an epoch printed must be on storage at once: an
    attempt that ends (a killed worker or driver) with printed epochs unrecorded is resumed from
    a checkpoint past them, and they would never be printed again."""
    state = session.restore()
    metrics = Metrics(prefix, patterns, resumed_at=state["epoch"] if state else None)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL)
    with session.files() as trial_dir:
        args = args_for(trial_dir, resuming=bool(os.listdir(trial_dir)))
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
    for problem in metrics.problems[:3]:
        session.log(problem)
    said = f"; its last output: {' | '.join(tail)}" if tail else "; it printed nothing"
    if code != 0:
        raise CommandFailed(f"{_exit(code)}{said[:600]}")
    if not metrics.seen and not state:
        raise CommandFailed(f"the command printed no metric (expected {metrics.expected()}){said[:400]}")
    return _result(metrics.final)


class _Recorder(threading.Thread):
    """Reads the command's output as it prints: logs its lines, records its epochs in the session
    (`recorded` is set after each), and kills the command where the trial pauses at a rung: what it
    printed before it died, past the rung, is read to its end and recorded too."""

    def __init__(self, process: _Process, metrics: Metrics, session, tail, state):
        super().__init__(daemon=True)
        self.process, self.metrics, self.session, self.tail, self.state = process, metrics, session, tail, state
        self.recorded, self.stop = threading.Event(), threading.Event()
        self.log: list[str] = []
        self.failure: BaseException | None = None
        self.paused = False  # at a rung, before the session says so: its training thread waits for what is left

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
        for printed in self.process.output():
            if self.stop.is_set():
                return
            if printed is None:
                self._flush()
                if self.paused and self.process.popen.poll() is not None:
                    break  # what it started outside its process group holds the output open
                continue
            text, line = printed
            if line is not None:
                self.log.append(f"| {line}")
                if len(self.log) >= 1000:  # a chatty script between epochs: on S3 each write is the whole log
                    self._flush()
                if line.strip():
                    self.tail.append(line.strip())
            if text:
                self._report(self.metrics.feed(text))
        self._report(self.metrics.end())
        self._flush()

    def _flush(self):
        if self.log:
            self.session.log("\n".join(self.log))
            self.log.clear()

    def _pause(self):
        self.paused = True
        self.process.kill()

    def _report(self, epochs) -> None:
        for repeat in self.metrics.repeats:
            self._flush()
            place = ", ".join(f"{k} {repeat[k]}" for k in ("epoch", "step") if k in repeat)
            self.session.log(f"not reported again: {place} (the checkpoint this attempt resumed from is at "
                             f"{self.state['epoch']})")
        self.metrics.repeats.clear()
        for epoch in epochs:
            self._flush()
            # The checkpoint: where a retry takes up its output.
            self.session.record(epoch, checkpoint={"epoch": _at(epoch)}, on_pause=self._pause)
            self.recorded.set()
