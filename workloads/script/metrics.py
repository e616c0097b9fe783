"""The metrics of a training script's output (workloads/script/train.py): its lines in, its
reports (a row of epochs.parquet each) and its final values out. Knows nothing of processes.

    metrics = Metrics("ABLATE ", patterns)
    for line in output:
        for report in metrics.feed(line): ...
    last = metrics.end(); final = metrics.final
"""
from __future__ import annotations

import json
import re
from typing import Any

PREFIX = "ABLATE "  # what a line of metrics starts with, unless a grid says otherwise


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
            if place(row) <= self.resumed_at:
                self.repeats.append(row)
                return []
            self.resumed_at = None
        return [row]

    def expected(self) -> str:
        said = f"lines with {self.prefix.strip()!r} and a JSON object"
        return said + "".join(f", or matching {p.pattern!r}" for p in self.patterns)


def place(report: dict[str, Any]) -> int:
    """Where a report is in training: its step, or its epoch."""
    return report["step"] if "step" in report else report["epoch"]
