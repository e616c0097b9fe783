"""The workload interface: what the orchestrator needs to run one trial of an experiment.

A workload is a `Workload` object. Its `config` is a dataclass whose fields are the parameters a
grid file may set (every field needs a default, a type annotation from int, float, str, bool or
list[int]/list[float]/list[str], and a `seed: int` field). A field whose values are a closed set
names them in its metadata: `field(default="C", metadata={"choices": ("A", "B", "C")})`.

What a value must be is declared on its field with `typing.Annotated` and annotated-types
constraints, and checked for every trial when a grid is loaded, so a bad value is one line from
`ablate plan` (`fixed.lr: expected a finite float > 0, got -1.0`), not a failure in every trial:

    lr: Annotated[float, Gt(0)] = 0.1
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.5
    milestones: Annotated[list[Annotated[int, Ge(1)]], Predicate(increasing)] = ...

Gt, Ge, Lt, Le, Interval, MultipleOf, MinLen, MaxLen, Len and Predicate are understood; a
predicate's docstring says what it expects ("in increasing order"). Floats must be finite and
ints fit in 64 bits whatever a field declares. Rules across parameters go in `check(config)`,
which raises `ValueError("param: what was expected, got value")` naming the parameter to blame.

`train(config, session)` runs one trial and returns its final metrics. It reports each epoch to
the session, hands it a checkpoint when it wants one, and asks it for the last checkpoint when it
starts, so a retried trial continues where it stopped. The session also has the trial's id, its
log, and `files()`, a directory of the trial's own that a retry on any node finds again. It never
imports Ray: the orchestrator passes a session backed by storage and Ray; tests pass a
`MemorySession`.

    from dataclasses import dataclass
    from typing import Annotated
    from annotated_types import Ge, Gt
    from workloads.base import Workload

    @dataclass
    class Config:
        lr: Annotated[float, Gt(0)] = 0.1
        epochs: Annotated[int, Ge(1)] = 3
        seed: int = 0

    def train(config, session):
        for epoch in range(config.epochs):
            session.report({"epoch": epoch + 1, "loss": 1.0 / (epoch + 1)})
        return {"status": "completed", "val_error": 0.5, "test_error": 0.5}

    WORKLOAD = Workload(name="toy", config=Config, train=train)

A grid file then says `workload: mypackage.toy:WORKLOAD`. (A training script needs no Python
workload: a grid's `command:` section makes one, orchestrator/plan/script.py.)

What the orchestrator reads, and nothing else:

- An epoch is one `session.report` call; its metrics dict should carry `epoch` (1, 2, ...).
  `Workload.epochs(config)` says how many a trial makes, for progress and ETAs; without it the
  display shows epochs without a total. The orchestrator times epochs itself.
- `Workload.metrics` names the reported metrics the live display and `ablate status` show.
- `train` returns `status` (one of RESULT_STATUSES) and its final metrics: every value it
  returns, and the last value of every metric it reported, becomes a column of the trial's row;
  one named like a parameter (a scheduler's current `lr`) or like a column ablate writes (`host`)
  is kept beside it as `reported_lr`, in the row and the epochs alike.
  `Workload.metric` names the metric that chooses among settings (e.g. a learning rate; measured
  on validation data, never test; `val_error` unless it says otherwise), `mode` which way is
  better, and `report` the metrics a table shows (`test_error`); a grid may declare its own. It
  may also return `params`, `epochs_completed`, `train_seconds` and `status_reason` (what showed
  a status other than completed), and what its data was: `train_examples`, `test_examples`,
  `data_fingerprint` (a hash of the data a trial saw, so that a subset or another copy shows) and
  `synthetic_data`, which `ablate summarize` compares with what a published number states.
- Optional extras: `cost`, `rates` and `prepare` for `ablate plan` and `ablate run`, `references`,
  `claims` and `layout` for `ablate summarize` and `ablate compare`, `models` for `ablate models`,
  and `tools`: further `ablate` commands on trained trials (the All-CNN study's `visualize`), see
  TrialTool.
"""
from __future__ import annotations

import contextlib
import copy
import os
import platform
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Protocol

# What `train` may return as `status`. Every one is a result; a trial that raises is a failure.
# dead_start: the network stopped passing any gradient early on (All-CNN: every class output 0
# after the final ReLU), a property of the network at that setting, not a bug.
RESULT_STATUSES = ("completed", "diverged", "no_progress", "dead_start")


class WorkloadError(Exception):
    """Something a user can fix outside the code (a dataset missing offline, a corrupted
    download): shown as one line, not a traceback."""


class FinalFailure(WorkloadError):
    """A failure every retry would meet again, after training to its end (a script's metrics file
    missing when it ended well): the trial fails at once, not trained again."""


class Session(Protocol):
    """What a training function talks to while it runs."""

    trial_id: str

    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None:
        """Record one epoch's metrics; `checkpoint`, if given, is the state to resume from."""

    def record(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None,
               on_pause: Callable[[], None] = lambda: None) -> bool:
        """`report` in two halves, for a workload that reads its epochs in a thread of its own (a
        script's output): `record` keeps an epoch, from any thread, as soon as it is known, while
        the training thread may wait in `announce`, which passes each on, in order. False, after
        calling `on_pause`, where the trial is to stop there (a pause at a rung of halving), and
        for each epoch recorded after it (printed before the workload could stop): kept all the same."""

    def announce(self) -> None:
        """From the training thread: the epochs recorded since the last call are reported (where
        the trial is to stop, it stops here)."""

    def pauses_at_next_report(self) -> bool:
        """Whether the trial pauses at its next epoch's report (a rung of halving), to go on later
        from its last checkpoint: a workload that checkpoints every few epochs checkpoints that
        one too, or it trains again the epochs since."""

    def restore(self) -> dict[str, Any] | None:
        """The last checkpoint handed to `report`, or None for a fresh start."""

    def log(self, text: str) -> None:
        """Add to the trial's log (trials/<trial_id>/trial.log under `ablate run`)."""

    def files(self) -> ContextManager[str]:
        """A local directory for the trial's own files (outputs, a script's own checkpoints), as
        a context manager. What one attempt leaves there, the next finds, whatever node it runs
        on: under `ablate run` it is kept in the run's storage."""


@dataclass
class MemorySession:
    """A session that keeps everything in memory: for tests and for running without Ray."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    trial_id: str = "trial"
    lines: list[str] = field(default_factory=list)
    directory: str | None = None  # made on first use, kept for the session's life (a retry finds it)

    def report(self, metrics, checkpoint=None):
        self.record(metrics, checkpoint)
        self.announce()

    def record(self, metrics, checkpoint=None, on_pause=None) -> bool:
        self.epochs.append(dict(metrics))
        if checkpoint is not None:
            # A deep copy, as if it went to disk: later steps must not change a saved checkpoint.
            self.checkpoint = copy.deepcopy(checkpoint)
        return True

    def announce(self):
        pass

    def pauses_at_next_report(self):
        return False

    def restore(self):
        return copy.deepcopy(self.checkpoint)

    def log(self, text):
        self.lines.extend(text.splitlines())

    @contextlib.contextmanager
    def files(self):
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix=f"ablate-{self.trial_id}-")
        yield self.directory


# A tool on a trained trial, which the CLI offers as `ablate NAME RUN --trial ID --output FILE
# [options]`: it calls `tool(config, state, output, **options)` with the trial's config object,
# the state of its last checkpoint (what `train` handed to `session.report`) and the output path,
# and prints the line it returns. Its docstring is the command's help; its keyword-only
# parameters are the options, typed as Typer reads them, with the constraints a config field may
# declare checked before the tool runs (`units: Annotated[int, Ge(1), typer.Option(help=...)] = 6`).
# A ValueError is a mistake the user can fix: shown as one line.
TrialTool = Callable[..., str]


@dataclass(frozen=True)
class Workload:
    name: str
    config: type  # a dataclass: the parameters a grid may set, with their defaults
    train: Callable[[Any, Session], dict[str, Any]]
    # Optional: how many epochs (`session.report` calls) a trial of this config makes.
    epochs: Callable[[Any], int] | None = None
    # What `epochs` counts, and halving's rungs with it: "epoch", or "step" for a script that
    # reports every N steps.
    unit: str = "epoch"
    # The reported metrics to show while trials run, in order.
    metrics: tuple[str, ...] = ("val_error",)
    # What a trial is judged by, unless its grid says otherwise (`metric`, `mode`, `report`): the
    # metric that chooses among settings of a cell (measured on validation data, never test), which
    # way is better, and the metrics the tables show.
    metric: str = "val_error"
    mode: str = "min"
    report: tuple[str, ...] = ("test_error",)
    # Optional: the types of the result columns `train` returns, e.g. {"images_per_second": float};
    # any other value it returns or reports gets a column typed by its value.
    results: dict[str, type] = field(default_factory=dict)
    # Optional: every metric the workload reports or returns; where given, a grid's `metric` or
    # `report` naming another is one error when the grid is loaded.
    produces: tuple[str, ...] | None = None
    # Optional: {"images": training images seen, "flops": training FLOPs or None}, for `ablate plan`.
    cost: Callable[[Any], dict[str, Any]] | None = None
    # Optional: training rates measured for a config's network as it trains, for `ablate plan` to estimate hours:
    # a list of {"device": a GPU's name (torch.cuda.get_device_name) or cpu_name(), "kind": "gpu" or
    # "cpu", "trials": how many trials shared the device, "images_per_second": all of them together,
    # "date", "where": what measured it, on which host}. Without one, a plan has FLOPs only.
    rates: Callable[[Any], list[dict[str, Any]]] | None = None
    # Optional: model parameter count for a config, recorded with each result.
    params: Callable[[Any], int] | None = None
    # Optional: called once on the driver before a local run with every trial's config, to fetch
    # what trials share (datasets) once, and to fail once, up front, if it cannot be had.
    prepare: Callable[[list[Any]], None] | None = None
    # Optional: checks across parameters on one trial's config, run when a grid is loaded; raises
    # ValueError("param: what was expected, got value"), e.g. a milestone past the last epoch.
    check: Callable[[Any], None] | None = None
    # Optional: published numbers to compare with, each a dict of the cell's parameter values plus
    # the metric, e.g. {"model": "C", "variant": "all", "dataset": "cifar10", "test_error": 0.0908},
    # and what the number was measured under: "protocol" ({parameter: value}) and "data" ({result
    # column: value}, e.g. {"synthetic_data": False, "test_examples": 10000}). `ablate summarize`
    # shows a difference only for cells whose trials all match both; otherwise it names what differs.
    references: tuple[dict[str, Any], ...] = ()
    # Optional: the study's qualitative claims, checked by `ablate summarize` on paired seeds, e.g.
    # {"claim": "All-CNN no worse than base", "metric": "test_error", "axis": "variant",
    #  "baseline": "base", "compared": "all", "direction": "lower", "tolerance": 0.005,
    #  "cells": [{"model": "C"}], "protocol": {...}, "data": {...}}: in each cell, compared minus
    # baseline is below +tolerance ("lower"; "higher": above -tolerance). protocol and data as above.
    claims: tuple[dict[str, Any], ...] = ()
    # Optional: how `ablate summarize` lays out its tables by default, e.g.
    # {"rows": "model", "cols": "variant", "tables": ["dataset", "augmentation"]}.
    layout: dict[str, Any] | None = None
    # Optional: the rows `ablate models` prints, one dict per network, e.g. with its parameter count.
    models: Callable[[], list[dict[str, Any]]] | None = None
    # Optional: tools on trained trials, each an `ablate` command of that name (see TrialTool).
    tools: dict[str, TrialTool] = field(default_factory=dict)
    # Optional: the command line a trial of this config runs, shown by `ablate plan` (a grid's
    # `command:`, orchestrator/plan/script.py).
    invocation: Callable[[Any], str] | None = None


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_name() -> str:
    """This machine's processor as measured training rates name it, 'cpu: <model> x<cores>': a
    rate measured on a CPU holds for machines of the same kind, cores included."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"cpu: {model or platform.processor() or platform.machine() or 'unknown'} x{cpu_cores()}"
