"""The metrics of a training script's output (workloads/script/train.py): its lines in, its
reports (a row of epochs.parquet each) and its final values out. Knows nothing of processes.

    metrics = Metrics("ABLATE ", patterns)
    for line in output:
        for report in metrics.feed(line): ...
    last = metrics.end(); final = metrics.final
"""
from __future__ import annotations

import decimal
import json
import math
import re
from typing import Any

PREFIX = "ABLATE "  # what a line of metrics starts with, unless a grid says otherwise
PROBLEMS = 3  # how many of its output's problems a trial's log says in full
UP = "\x1b[A"  # the terminal's cursor up a line: a progress bar below another returns to the line above


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
    line is complete at once, but see below), or when a later epoch begins, or at the end. It is
    recorded when complete: a script saves its checkpoint before it prints, and an attempt that
    ends (killed, paused at a rung) is resumed past what it printed. Patterns that capture nothing but `epoch` are
    headers (Keras' `Epoch 3/10`): the epoch they begin is complete only when a later one begins,
    or at the end. A pattern's match without an `epoch` joins the epoch a header began (the
    metrics under it); otherwise, and a JSON line without an `epoch` always, it adds to the final
    values (`test error 0.08` after training). An epoch printed after steps is at the last step
    printed before it: its row holds that `step`, which places it in training.

    An epoch printed in several JSON lines (training's metrics, then validation's) is two reports
    the first time, as that is seen only then; from then on each is complete at its last line (as
    many as the last had), or when a later epoch begins, or at the end.

    An epoch (a step) printed both ways, by patterns and in a JSON line (a line for people and one
    for ablate, in either order), is one report with the metrics of both; where both give a
    metric, the JSON line's value is kept (a line for people rounds it), and `problems` says where
    they differ by more. A report complete one way is `held` while the other may still print its
    place (it printed that kind of place before, or none is reported yet: the first waits to
    see), until the next line is not for it, the output pauses (`idle`), or it ends.

    A report on a part of a line that is drawn again after a "\r" (a progress bar's) is held
    until a part or line follows that is not for its place, not ended by a pause: one for its place
    draws it again (a bar may show the last validation's metrics at every batch, the epoch
    before's until this one's ends), and its last values are the report. Where that line then ends,
    the report is held until a pause too, and through the parts of a bar drawn below it that
    return to its line (`UP`: PyTorch Lightning's validation bar, under its training bar); and
    where the bar is cleared (a blank part), through the lines written in its place until it is
    drawn again (tqdm.write, Lightning's `print`).

    An attempt resumed from a checkpoint at `resumed_at` (an epoch, or a step) repeats what its
    script's own checkpoint is behind: reports at or before it are `repeats`, not reported, until
    one passes it. After that a count may start again (a second phase of training).
    """

    def __init__(self, prefix: str = PREFIX, patterns=(), resumed_at: int | None = None,
                 taken: dict[str, str] | None = None):
        self.prefix, self.patterns = prefix, [re.compile(p) for p in patterns]
        # Columns ablate writes for every trial (its `params`, `epochs_completed`, `error`), each with
        # the column a metric of the script's so named is kept in beside it, as `renamed` says.
        self.taken, self.renamed = taken or {}, {}
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
        self.matched: set[int | None] = set()  # the patterns that matched for the pending epoch (None: a JSON line)
        self.held = False  # whether the pending epoch is complete but for a line of its place the other way
        self.redrawn = False  # or for the part of a line drawn again after it (held until its place changes)
        self.line_ended = False  # and that line ended since (held until a pause, but for a bar below it)
        self.cleared = False  # or its bar was cleared (held until a pause, but for lines written where it was)
        self.kind = "epoch"  # what the pending report belongs to: an epoch, or a step
        self.ways: dict[str, set[str]] = {"epoch": set(), "step": set()}  # "json", "patterns": how each kind is printed
        self.reported: set[str] = set()  # the kinds of place reported so far
        # How many JSON lines a place of each kind is printed in (training's metrics, then
        # validation's), as seen; how many the pending one has had; and the last place reported, with its.
        self.json_lines = {"epoch": 1, "step": 1}
        self.pending_json = 0
        self.last: tuple[str, int] | None = None
        self.last_json = 0
        self.from_json: set[str] = set()  # the pending epoch's metrics a JSON line gave
        self.texts: dict[str, str] = {}  # and those patterns gave, as printed
        self.final: dict[str, Any] = {}
        self.seen = False
        # For the trial's log: lines with the prefix and no JSON object, ...; the first few, and how many more.
        self.problems: list[str] = []
        self.more_problems = 0

    def feed(self, line: str, redrawn: bool = False) -> list[dict[str, Any]]:
        """The epochs this line completes (`redrawn`: a part of a line that a "\r" follows)."""
        found = []  # (metrics, the pattern or None for JSON, the pattern's text of each)
        # No prefix: a line that is a JSON object alone (`print(json.dumps(metrics))`).
        at = line.find(self.prefix) if self.prefix else (0 if line.lstrip().startswith("{") else -1)
        if at >= 0:
            try:
                metrics = json.loads(line[at + len(self.prefix):])
            except ValueError:
                metrics = None
            if "\\ud" in line.lower():  # an escaped lone surrogate: no file can hold it
                metrics = _replace_surrogates(metrics)
            if isinstance(metrics, dict):
                found.append((metrics, None, {}))
            else:
                self._problem(f"not metrics: {line}")
        for i in self.order:
            if match := self.patterns[i].search(line):
                texts = {k: v for k, v in match.groupdict().items() if v is not None}
                found.append(({k: _value(v) for k, v in texts.items()}, i, texts))
        below = self.redrawn and UP in line  # the pending report's line is drawn again after this part
        if below:
            self.line_ended = False
        # tqdm.write clears a bar ("\r" + spaces + "\r"), writes its lines where it was, draws it again.
        self.cleared = self.redrawn and (self.cleared or (redrawn and not line.strip())) and not found
        done = (self.end() if self.held and not below and not self.cleared
                and not any(self._at_pending(metrics) for metrics, _, _ in found) else [])
        for metrics, pattern, texts in found:
            done += self._add(self._own(metrics), pattern, self._own(texts), redrawn)
        return done

    def _own(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """`metrics` with each name ablate has taken made the script's own (`reported_params`)."""
        for name in metrics:
            if name in self.taken:
                self.renamed.setdefault(name, self.taken[name])
        return {self.renamed.get(k, k): v for k, v in metrics.items()}

    def add_final(self, values: dict[str, Any]) -> None:
        """Final values from elsewhere (a file the script wrote): its epoch or step is no report."""
        self.seen = True
        self.final.update({k: v for k, v in self._own(values).items() if k not in ("epoch", "step")})

    def _problem(self, text: str) -> None:
        """Kept where it is among the first few: a Hugging Face script has one at every logging step."""
        if len(self.problems) < PROBLEMS:
            self.problems.append(text)
        else:
            self.more_problems += 1

    def idle(self) -> list[dict[str, Any]]:
        """The epoch held for a line of its place the other way, once the output pauses without it."""
        return self.end() if self.held and (not self.redrawn or self.line_ended or self.cleared) else []

    def _at_pending(self, metrics: dict[str, Any]) -> bool:
        key = next((k for k in ("epoch", "step") if k in metrics), None)
        return key is not None and self.pending.get(key) == metrics[key]

    def _add(self, metrics: dict[str, Any], pattern=None, texts=None, redrawn=False) -> list[dict[str, Any]]:
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
                self._problem(f"not a report: {key} {at!r} is not a whole number; its values count "
                                     "only as the trial's last values")
                return self._add({k: v for k, v in metrics.items() if k not in places}, pattern=pattern)
        metrics = {**metrics, **{k: int(v) for k, v in places.items()}}
        key = next(iter(places))  # what it belongs to: its epoch, or its step
        done = self.end() if self.pending and self.pending.get(key) != metrics[key] else []
        if pattern is None and not self.pending and self.last == (key, metrics[key]):
            # Another JSON line of the place just reported (validation's, after training's): this
            # one is a report of its own, but each place from now on is one, of all its lines.
            self.json_lines[key] = self.last_json + 1
            self.pending_json = self.last_json
        if not self.pending:
            self.kind = key
        self.ways[key].add("patterns" if pattern is not None else "json")
        self.step = metrics.get("step", self.step)
        self._merge(metrics, pattern, texts or {})
        self.matched.add(pattern)
        self.pending_json += pattern is None
        by_json, patterns = None in self.matched, self.completing[key]
        by_patterns = bool(patterns) and patterns <= self.matched
        if not (by_json or by_patterns):  # its patterns' other lines, or the next place, are still to come
            return done
        if redrawn or self.redrawn:  # its place may be drawn again, with its latest values
            self.line_ended = not redrawn
            self.held = self.redrawn = True
            return done
        if by_json and (by_patterns or not patterns):
            if self.pending_json < self.json_lines[key]:  # its other JSON lines, or the next place, are to come
                return done
            return done + self.end()
        # Complete one way. The other way may still print its place where it printed this kind
        # before, or none is reported yet (the first waits to see), or it printed a part of it.
        other = "patterns" if by_json else "json"
        if self.kind not in self.reported or other in self.ways[self.kind] or (by_json and patterns & self.matched):
            self.held = True
            return done
        return done + self.end()

    def _merge(self, metrics: dict[str, Any], pattern, texts: dict[str, str]) -> None:
        """The metrics of a line for the pending epoch added to it, a JSON line's value kept over a
        pattern's (later patterns' over earlier ones')."""
        names = metrics.keys() - {"epoch", "step"}
        if pattern is None:
            for name in names & self.texts.keys():
                self._compare(name, self.texts.pop(name), metrics[name])
            self.from_json |= names
        else:
            for name in names & self.from_json:
                self._compare(name, texts[name], self.pending[name])
            metrics = {k: v for k, v in metrics.items() if k not in self.from_json}
            self.texts.update({k: v for k, v in texts.items() if k in metrics})
        self.pending = {**self.pending, **metrics}

    def _compare(self, name: str, text: str, value) -> None:
        if not _rounds_to(text, value):
            self._problem(f"{self.kind} {self.pending[self.kind]}: {name} is {text} on a line its pattern "
                                 f"matched and {json.dumps(value)} in its JSON line; the JSON line's value is kept")

    def end(self) -> list[dict[str, Any]]:
        """The pending epoch, unless it repeats what the checkpoint this attempt resumed from has."""
        row, self.pending, self.matched = self.pending, {}, set()
        self.held, self.redrawn, self.line_ended, self.cleared = False, False, False, False
        self.from_json, self.texts = set(), {}
        if not row:
            return []
        self.last, self.last_json, self.pending_json = (self.kind, row.get(self.kind)), self.pending_json, 0
        self.reported.add(self.kind)
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
        said = f"lines with {self.prefix.strip()!r} and a JSON object" if self.prefix else "lines of a JSON object"
        return said + "".join(f", or matching {p.pattern!r}" for p in self.patterns)


def _replace_surrogates(value):
    """`value` with each lone surrogate (JSON's `\\udcff`, as json.dumps writes the byte 0xff of a
    file name that is not UTF-8) made U+FFFD, as output that is not UTF-8 is read."""
    if isinstance(value, str):
        return re.sub("[\ud800-\udfff]", "\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value


def _rounds_to(text: str, value) -> bool:
    """Whether `text`, a number as a line for people prints it (`0.50`), is `value` rounded."""
    if _value(text) == value:
        return True
    try:
        printed = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return False
    exponent = printed.as_tuple().exponent  # of its last digit: -2 for 0.50 and 5.0e-1
    if not (isinstance(exponent, int) and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)):
        return False
    return abs(printed - decimal.Decimal(value)) <= decimal.Decimal(5).scaleb(exponent - 1)


def place(report: dict[str, Any]) -> int:
    """Where a report is in training: its step, or its epoch."""
    return report["step"] if "step" in report else report["epoch"]
