"""A grid's `command:` section, checked (a `Script`, plan/script.py reads it), as the workload its
trials run.

The grid becomes a real `Workload` (the rest of the orchestrator has no special case): its config
is a dataclass made from the parameters, and its trial ids also depend on the command, which is
a config field (`command`) that no grid can set. Workers rebuild the workload from its `ref`.

A trial runs the command (workloads/script/train.py) in `workdir`, with its trial id and own directory in
its environment, and reads its metrics from its output: a line with the prefix and a JSON
object, or a match of a pattern (named groups are the metrics). With an `epoch` it is one epoch;
without, it adds to the trial's final values (`val_error`, `test_error`, `status`...). Exit code
0 with metrics is a result; anything else a failure, retried up to `max_failures` with the same
trial directory, so a script that keeps its checkpoint there resumes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import string
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at

from orchestrator.errors import GridError
from orchestrator.store.columns import kept
from workloads.base import Workload
from workloads.script import metrics as script_metrics
from workloads.script import train as script_train

TYPES = {"int": int, "float": float, "str": str, "bool": bool,
         "list[int]": list[int], "list[float]": list[float], "list[str]": list[str]}
# annotated-types constraints by the names a grid gives them. On a list the bounds (gt...
# multiple_of) hold for every item, the lengths for the list.
BOUNDS = {"gt": at.Gt, "ge": at.Ge, "lt": at.Lt, "le": at.Le, "multiple_of": at.MultipleOf}
LENGTHS = {"min_len": at.MinLen, "max_len": at.MaxLen}
PREFIX = script_metrics.PREFIX
TRIAL_DIR = "trial_dir"  # the placeholder for the trial's own directory
SHOWN_TRIAL_DIR = "$ABLATE_TRIAL_DIR"  # how `ablate plan` shows it: the path depends on --storage


@dataclass(frozen=True)
class Script:
    """A grid's `command:` section, checked: the script to run and its parameters. Plain data: the
    workload is rebuilt from it."""

    run: tuple[str, ...]  # the arguments, with placeholders
    workdir: str  # absolute
    parameters: dict[str, dict[str, Any]]  # name -> {"type": "float", "default": ..., constraints}
    epochs: str | None = None  # the parameter that says how many epochs a trial reports
    steps: str | None = None  # or how many steps, for a script that reports every N steps
    resume: tuple[str, ...] = ()  # arguments added once an earlier attempt reported (its checkpoint is there)
    prefix: str = PREFIX
    patterns: tuple[str, ...] = ()
    show: tuple[str, ...] = ()  # the live table's columns beside the grid's metric
    files: tuple[str, ...] = ()  # JSON files of final metrics the command leaves in its trial directory

    @property
    def template(self) -> str:
        """`run` as one line, quoted only where an argument has a space or a quote (not a brace)."""
        return " ".join(arg if re.fullmatch(r"[^\s'\"\\]+", arg) else shlex.quote(arg) for arg in self.run)


def _annotation(spec: dict[str, Any]):
    kind = TYPES[spec["type"]]
    bounds = [BOUNDS[k](spec[k]) for k in BOUNDS if spec.get(k) is not None]
    lengths = [LENGTHS[k](spec[k]) for k in LENGTHS if spec.get(k) is not None]
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        kind = list[Annotated[(item, *bounds)]] if bounds else kind
        bounds = []
    constraints = bounds + lengths
    return Annotated[(kind, *constraints)] if constraints else kind


def build(script: Script, path: Path | None = None) -> Workload:
    """The workload that runs `script`: a config dataclass of its parameters, and a `train` that
    runs its command once per trial attempt. `path`: the grid file its errors before a run name."""
    fields = []
    for name, spec in script.parameters.items():
        default = spec["default"]
        metadata = {"identity": spec.get("identity", True)}
        if "choices" in spec:
            metadata["choices"] = tuple(spec["choices"])
        value = (dataclasses.field(default_factory=lambda d=default: list(d), metadata=metadata) if isinstance(default, list)
                 else dataclasses.field(default=default, metadata=metadata))
        fields.append((name, _annotation(spec), value))
    # The command is part of every trial's identity: another command line is another trial. A
    # field with its one value as the only choice: a grid that sets it gets the usual error.
    fields.append(("command", str, dataclasses.field(default=script.template,
                                                     metadata={"choices": (script.template,)})))
    config = dataclasses.make_dataclass("CommandConfig", fields)

    own = kept(f.name for f in dataclasses.fields(config))  # its metrics named like ablate's columns

    def check(c):  # every trial's command line can be written (a format spec suits its value)
        argv(script, dataclasses.asdict(c), SHOWN_TRIAL_DIR)

    length = script.epochs or script.steps

    def train(c, session):
        def args_for(trial_dir: str, resuming: bool) -> list[str]:
            return argv(script, dataclasses.asdict(c), trial_dir, resuming)

        return script_train.train(args_for, script.workdir, script.prefix, script.patterns, session, own,
                                  script.files, planned=getattr(c, length) if length else None,
                                  unit="step" if script.steps else "epoch")
    return Workload(
        name="command", config=config, train=train,
        epochs=(lambda c: getattr(c, length)) if length else None, unit="step" if script.steps else "epoch",
        metrics=script.show, check=check, prepare=lambda configs: prepare(script, configs, path),
        invocation=lambda c: command_line(script, dataclasses.asdict(c)))


def ref(script: Script) -> str:
    """What a Ray worker rebuilds the workload from (`workloads.get` reads it): the checked section."""
    return "command:" + json.dumps(dataclasses.asdict(script), separators=(",", ":"))


def from_ref(text: str) -> Workload:
    data = json.loads(text.removeprefix("command:"))
    return build(Script(**{**data, **{key: tuple(data[key]) for key in ("run", "resume", "patterns", "show", "files")}}))


def resumes(workload_ref: str) -> bool:
    """Whether a workload's interrupted trials resume from a checkpoint: a Python workload's do; a
    script's only where its grid gives `resume` arguments. Another script runs its command again
    after an interruption, resuming only where it loads its own checkpoint."""
    if not workload_ref.startswith("command:"):
        return True
    return bool(json.loads(workload_ref.removeprefix("command:")).get("resume"))


def _text(value, spec: str | None = None) -> str:
    if spec:
        return format(value, spec)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(_text, value))
    return str(value)


def argv(script: Script, values: dict[str, Any], trial_dir: str, resuming: bool = False) -> list[str]:
    """The arguments one trial runs: the placeholders of `run` (and of `resume`, once an earlier
    attempt reported: its checkpoint is there) filled in."""
    values = {**values, TRIAL_DIR: trial_dir}
    out = []
    for arg in (*script.run, *(script.resume if resuming else ())):
        parts = _fields(arg)
        if len(parts) == 1 and parts[0][0] == "" and isinstance(values.get(parts[0][1]), list) and not parts[0][2]:
            out.extend(map(_text, values[parts[0][1]]))  # `{milestones}` alone: one argument per item
            continue
        try:
            out.append("".join(literal + (_text(values[name], spec) if name is not None else "")
                               for literal, name, spec in parts))
        except (ValueError, TypeError) as e:  # a format spec that does not suit the value: {lr:d}
            raise ValueError(f"command.run: cannot write {arg!r} ({e})") from None
    return out


def command_line(script: Script, values: dict[str, Any]) -> str:
    """One trial's command line as a shell would take it, the trial directory as $ABLATE_TRIAL_DIR."""
    marker = "ABLATE_TRIAL_DIR_MARKER"
    return shlex.join(argv(script, values, marker)).replace(marker, SHOWN_TRIAL_DIR)


def prepare(script: Script, configs: list, path: Path | None = None) -> None:
    """Before a local run: one error now rather than every trial failing (a GridError naming the
    grid file `path`)."""
    if not os.path.isdir(script.workdir):
        raise GridError(path, "command.workdir", f"{script.workdir}: the command's working directory does not exist")
    program = argv(script, dataclasses.asdict(configs[0]), "")[0]
    found = (os.access(os.path.join(script.workdir, program), os.X_OK) if os.sep in program
             else shutil.which(program) is not None)
    if not found:
        raise GridError(path, "command.run",
                        f"{program}: the command's program is not found (in {script.workdir} or on PATH)")
    # The script the program runs (`python train.py`, `python -u train.py`): a typo would fail every
    # trial. Not one in the trial's directory, which the command itself may write.
    for config in configs:
        first = next((arg for arg in argv(script, dataclasses.asdict(config), "\0")[1:] if not arg.startswith("-")), "")
        if first.endswith(".py") and "\0" not in first and not os.path.isfile(os.path.join(script.workdir, first)):
            raise GridError(path, "command.run", f"{first}: the command's script is not found (in {script.workdir})")


def _fields(arg: str) -> list[tuple[str, str | None, str | None]]:
    """(literal text, placeholder, format spec) parts of one argument."""
    return [(literal, name, spec) for literal, name, spec, _ in string.Formatter().parse(arg)]
