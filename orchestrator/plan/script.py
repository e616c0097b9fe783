"""Any training script as a workload: a grid's `command:` section.

A researcher's script runs unchanged (`python train.py --lr 0.1 --seed 0`); the grid says how
to call it and what its parameters are:

    name: digits
    command:
      run: python train.py --lr {lr} --hidden {hidden} --optimizer {optimizer} --epochs {epochs} --seed {seed} --out {trial_dir}
      workdir: ../code              # where it runs, relative to the grid file (default: its folder)
      parameters:                   # typed and checked like a Python workload's config
        lr: {type: float, default: 0.1, gt: 0}
        hidden: {type: int, default: 64, ge: 1}
        optimizer: {type: str, default: sgd, choices: [sgd, adam]}
        epochs: 10                  # shorthand: the default, its type taken from it
      epochs: epochs                # the parameter that says how many epochs a trial reports
      metrics:                      # optional
        prefix: "ABLATE "           # the default: `ABLATE {"epoch": 1, "val_error": 0.3}` lines
        patterns: ['Epoch (?P<epoch>\\d+) .* val error (?P<val_error>[\\d.]+)']
        show: [train_loss, val_error]   # the live table's columns
        files: [all_results.json]   # JSON files of final metrics it leaves in its trial directory
    axes:
      lr: [0.1, 0.01]

Each argument of `run` (split as a shell would, or given as a list) may hold `{parameter}`
placeholders with an optional format spec (`{lr:.0e}`); `{{` is a literal brace. A list
parameter that is a whole argument becomes one argument per item (argparse's nargs="+"),
elsewhere its items joined by commas; booleans are `true`/`false`. `{trial_dir}` is the trial's
own directory. Every declared parameter must appear: one the command never sees would only
change trial ids. `seed` is declared by default (an int, 0).

Here the section is read and checked into a `Script`; script_workload.py makes it the workload
its trials run.
"""
from __future__ import annotations

import keyword
import math
import os
import re
import shlex
import string
from pathlib import Path
from typing import Any

from orchestrator.errors import GridError
from orchestrator.plan.params import Parameters, fmt
from orchestrator.plan.script_workload import BOUNDS, LENGTHS, PREFIX, TRIAL_DIR, TYPES, Script, build, ref
from orchestrator.store.columns import RESERVED, kept_as, taken
from workloads.base import Workload

KEYS = ("run", "workdir", "parameters", "epochs", "steps", "resume", "metrics")
METRIC_KEYS = ("prefix", "patterns", "show", "files")
PARAMETER_KEYS = ("type", "default", "choices", "identity", *BOUNDS, *LENGTHS)


def load(path: Path, section) -> tuple[Workload, str]:
    """The workload a grid's `command:` section describes, and the ref that rebuilds it (for
    Grid.workload_ref). GridError on anything wrong, with the key."""
    def fail(key, message):
        raise GridError(path, f"command.{key}" if key else "command", message)

    if not isinstance(section, dict):
        fail("", f"expected a mapping with keys {', '.join(KEYS)}, got {fmt(section)}")
    for key in section:
        if key not in KEYS:
            fail(str(key), f"unknown key (allowed: {', '.join(KEYS)})")
    run = _run(fail, section.get("run"))
    if re.match(r"[A-Za-z_]\w*=", run[0]):  # `LR={lr} python train.py`: the program would be `LR=0.1`
        fail("run", f"'{run[0]}' sets an environment variable, as a shell would, but no shell runs the command: "
                    f"write 'env {run[0]} ...' to set it")
    workdir = section.get("workdir", ".")
    if not isinstance(workdir, str) or not workdir:
        fail("workdir", f"expected a directory, relative to the grid file, got {fmt(workdir)}")
    parameters = _parameters(fail, section.get("parameters") or {})
    metrics = section.get("metrics") or {}
    if not isinstance(metrics, dict):
        fail("metrics", f"expected a mapping with keys {', '.join(METRIC_KEYS)}, got {fmt(metrics)}")
    for key in metrics:
        if key not in METRIC_KEYS:
            fail(f"metrics.{key}", f"unknown key (allowed: {', '.join(METRIC_KEYS)})")
    prefix = metrics.get("prefix", PREFIX)
    if not isinstance(prefix, str) or (prefix and not prefix.strip()):
        fail("metrics.prefix", f"expected the text before each JSON line of metrics (\"\": a line that is a JSON "
                               f"object alone), got {fmt(prefix)}")
    patterns = _strings(fail, "metrics.patterns", metrics.get("patterns", []))
    for i, pattern in enumerate(patterns):
        try:
            groups = re.compile(pattern).groupindex
        except re.error as e:
            fail(f"metrics.patterns[{i}]", f"not a regular expression ({e})")
        if not groups:
            fail(f"metrics.patterns[{i}]", "has no named group; (?P<val_error>[0-9.]+) makes a metric val_error")
    show = _strings(fail, "metrics.show", metrics.get("show", []))
    for i, name in enumerate(show):
        if name in taken(parameters):
            what = "a parameter of the command" if name in parameters else "a column ablate writes for every trial"
            fail(f"metrics.show[{i}]", f"'{name}' is {what}; the script's own '{name}' is kept as '{kept_as(name)}': "
                                       "show that")
    files = _strings(fail, "metrics.files", metrics.get("files", []))
    for i, name in enumerate(files):
        if os.path.isabs(os.path.expanduser(name)):
            fail(f"metrics.files[{i}]", f"expected a path relative to the trial's directory ({{{TRIAL_DIR}}}), "
                                        f"got {fmt(name)}")
    if "epochs" in section and "steps" in section:
        fail("steps", "give either epochs (a script that reports every epoch) or steps (every N steps), not both")
    length = {key: section[key] for key in ("epochs", "steps") if section.get(key) is not None}
    for key, name in length.items():
        if not isinstance(name, str) or parameters.get(name, {}).get("type") != "int":
            ints = [n for n, p in parameters.items() if p["type"] == "int"]
            fail(key, f"expected the name of an int parameter (one of: {', '.join(ints) or 'none'}), got {fmt(name)}")
    resume = _run(lambda key, message: fail("resume", message), section["resume"]) if "resume" in section else ()

    _placeholders(fail, run, parameters, resume)
    script = Script(run=run, workdir=os.path.abspath(os.path.join(os.path.dirname(path), os.path.expanduser(workdir))),
                    parameters=parameters, epochs=length.get("epochs"), steps=length.get("steps"), resume=resume,
                    prefix=prefix, patterns=tuple(patterns), show=tuple(show), files=tuple(files))
    # Defaults and choices are values the grid gives: checked as such, and made the declared type
    # (a float's default `1` is 1.0, or trial ids would depend on how it was written).
    params = Parameters(path, build(script))
    for name, p in parameters.items():
        key = f"command.parameters.{name}"
        if "choices" in p:
            p["choices"] = [params.value(f"{key}.choices[{i}]", name, c) for i, c in enumerate(p["choices"])]
        p["default"] = params.value(f"{key}.default", name, p["default"])
    return build(script, path), ref(script)


# A shell's operators, outside quotes and escapes: `2>&1 | tee log`, `cd src && python ...`.
_UNQUOTED = re.compile(r"""\\.|'[^']*'|"(?:\\.|[^"\\])*"|([|&;<>]+)""")


def _run(fail, run) -> tuple[str, ...]:
    if isinstance(run, str):
        try:
            split = shlex.split(run)
        except ValueError as e:  # an unclosed quote
            fail("run", f"cannot split into arguments as a shell would ({e})")
        for found in _UNQUOTED.finditer(run):
            if found[1]:
                word = next(arg for arg in split if found[1] in arg)
                fail("run", f"'{word}' is shell syntax, but no shell runs the command: the program would get it as an "
                            "argument; put what needs a shell in a script (`workdir` says where the command runs, and "
                            "each trial's output is kept in its trial.log), or quote it to pass it as text")
        run = split
    elif isinstance(run, list):
        for i, arg in enumerate(run):
            if not isinstance(arg, (str, int, float)) or isinstance(arg, bool):
                fail(f"run[{i}]", f"expected an argument (text), got {fmt(arg)}")
        run = [str(arg) for arg in run]
    else:
        fail("run", f"expected the command line to run, e.g. 'python train.py --lr {{lr}}', got {fmt(run)}")
    if not run:
        fail("run", "expected a command line, got nothing")
    return tuple(run)


def _strings(fail, key, value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        fail(key, f"expected a list of strings, got {fmt(value)}")
    return value


def _inferred(value) -> str | None:
    """The type of a shorthand parameter (`epochs: 10`), from its default."""
    for name in ("bool", "int", "float", "str"):
        if type(value) is TYPES[name]:
            return name
    if isinstance(value, list) and value:
        kinds = {_inferred(v) for v in value}
        kinds = {"float"} if kinds == {"int", "float"} else kinds
        if len(kinds) == 1 and (kind := kinds.pop()) in ("int", "float", "str"):
            return f"list[{kind}]"
    return None


def _parameters(fail, given) -> dict[str, dict[str, Any]]:
    if not isinstance(given, dict):
        fail("parameters", f"expected a mapping of name: {{type, default, ...}} or name: default, got {fmt(given)}")
    reserved = {*RESERVED, "command", TRIAL_DIR}
    out = {}
    for name, spec in given.items():
        key = f"parameters.{name}"
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
            fail(key, "expected a name of letters, digits and '_' (it is a placeholder and a column)")
        if name in reserved:
            fail(key, f"'{name}' is taken (by a result column or the command itself); name it otherwise")
        if not isinstance(spec, dict):  # the shorthand: the default alone
            kind = _inferred(spec)
            if kind is None:
                fail(key, f"expected a default (a number, text, a boolean or a list of one kind) or "
                          f"{{type, default, ...}}, got {fmt(spec)}")
            spec = {"type": kind, "default": spec}
        for k in spec:
            if k not in PARAMETER_KEYS:
                fail(f"{key}.{k}", f"unknown key (allowed: {', '.join(PARAMETER_KEYS)})")
        if not isinstance(spec.get("type"), str) or spec["type"] not in TYPES:
            fail(f"{key}.type", f"expected one of {', '.join(TYPES)}, got {fmt(spec.get('type'))}")
        if "default" not in spec:
            fail(key, "needs a default (the value of trials that do not set it)")
        list_type = spec["type"].startswith("list")
        for k in (*BOUNDS, *LENGTHS):
            v = spec.get(k)
            if v is None:
                continue
            if k in LENGTHS and spec["type"] not in ("str", "list[int]", "list[float]", "list[str]"):
                fail(f"{key}.{k}", f"applies to a str or a list, not {spec['type']}")
            if k in BOUNDS and spec["type"] in ("str", "bool", "list[str]"):
                fail(f"{key}.{k}", f"applies to numbers, not {spec['type']}")
            number = (int,) if k in LENGTHS else (int, float)
            if not isinstance(v, number) or isinstance(v, bool) or not math.isfinite(v) or (k == "multiple_of" and v <= 0):
                fail(f"{key}.{k}", f"expected {'an integer' if k in LENGTHS else 'a finite number'}"
                                   f"{' > 0' if k == 'multiple_of' else ''}, got {fmt(v)}")
        if "choices" in spec:
            if list_type or spec["type"] == "bool":
                fail(f"{key}.choices", f"applies to int, float and str parameters, not {spec['type']}")
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                fail(f"{key}.choices", f"expected a non-empty list of values, got {fmt(spec['choices'])}")
        if not isinstance(spec.get("identity", True), bool):
            fail(f"{key}.identity", f"expected true or false (false: the value does not change what a trial "
                                    f"computes, e.g. a data path), got {fmt(spec['identity'])}")
        out[name] = dict(spec)
    if "seed" not in out:
        out["seed"] = {"type": "int", "default": 0, "implicit": True}
    elif out["seed"]["type"] != "int":
        fail("parameters.seed.type", f"expected int (seeds are integers), got {fmt(out['seed']['type'])}")
    return out


def _placeholders(fail, run, parameters, resume=()) -> None:
    used = set()
    for key, args in (("run", run), ("resume", resume)):
        for arg in args:
            used |= _used(lambda message: fail(key, message), arg, parameters)
    for name, p in parameters.items():
        if name not in used and not p.get("implicit"):
            effect = "only change trial ids" if p.get("identity", True) else "do nothing"
            fail(f"parameters.{name}", f"not used in command.run; a parameter the command never sees would {effect} "
                                       f"(add {{{name}}} to the command line)")


def _used(fail, arg: str, parameters) -> set[str]:
    """The placeholders of one argument, each checked."""
    try:
        parsed = list(string.Formatter().parse(arg))
    except ValueError as e:  # a lone brace
        fail(f"{e} in {arg!r} (a literal brace is written {{{{ or }}}})")
    if any(conversion for *_, conversion in parsed):
        fail(f"{arg!r}: conversions (!r, !s) are not supported; give a format spec ({{lr:.0e}})")
    used = set()
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if name not in parameters and name != TRIAL_DIR:
            fail(f"unknown placeholder {{{name}}} (parameters: {', '.join(parameters)}; or {{{TRIAL_DIR}}})")
        if spec and "{" in spec:
            fail(f"{arg!r}: a format spec cannot hold a placeholder")
        used.add(name)
    return used


