"""A workload's commands: `ablate models` lists its networks, and each tool a registered workload
offers on trained trials (workloads/base.py, TrialTool) is a command of its own (All-CNN's `visualize`)."""
from __future__ import annotations

import inspect
import json
import typing
from pathlib import Path
from typing import Annotated

import typer

import workloads
from orchestrator.cli.common import RunArg, Storage, command, console, open_run, writing
from orchestrator.errors import AblateError


@command
def models(workload: Annotated[str, typer.Argument(help="A registered workload or module:object.")]
           = workloads.DEFAULT,
           json_output: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False):
    """List a workload's networks with their parameter counts (All-CNN: paper Tables 1 and 2)."""
    found = _workload(workload)
    if found.models is None:
        raise AblateError(f"workload '{found.name}' has no table of models")
    rows = found.models()
    if json_output:
        print(json.dumps(rows))
        return
    from orchestrator import terminal

    terminal.show_models(console, found.name, rows)


def _workload(name: str):
    try:
        return workloads.get(name)
    except workloads.UnknownWorkload as e:
        raise AblateError(str(e)) from None


def _tool_command(name: str, workload_name: str, tool):
    """`ablate NAME RUN --trial ID --output FILE [the tool's own options]` for a registered
    workload's tool on trained trials (workloads/base.py, TrialTool): the run, trial and checkpoint
    are found here, and the tool does the rest."""

    def tool_command(run: RunArg,
                     trial: Annotated[str, typer.Option(help="The trial_id of a trained trial.", show_default=False)],
                     output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
                     storage: Storage = "./runs", **options):
        from orchestrator.results.trained import trained_trial

        _check_options(tool, options)
        run_dir = open_run(run, storage)
        config, state = trained_trial(run_dir, trial, workload_name, name)
        try:
            with writing(output):
                shown = tool(config, state, output, **options)
            console.print(shown)
        except ValueError as e:
            raise AblateError(f"{run_dir.display()}: trial '{trial}': {e}") from None

    # Typer reads a command's options from its signature: the common ones above, then the tool's.
    common = list(inspect.signature(tool_command, eval_str=True).parameters.values())[:-1]
    own = list(inspect.signature(tool, eval_str=True).parameters.values())[3:]
    tool_command.__signature__ = inspect.Signature(common + [p.replace(kind=p.KEYWORD_ONLY) for p in own])
    tool_command.__doc__ = inspect.getdoc(tool)
    tool_command.__name__ = name
    command(tool_command, name)


def _check_options(tool, options: dict) -> None:
    """A tool's option values against the annotated-types constraints their annotations declare
    (`units: Annotated[int, Ge(1), typer.Option(...)]`), as a workload's config fields are checked."""
    from orchestrator.plan.params import CHECKED, constraints, expectation, fmt, holds

    hints = typing.get_type_hints(tool, include_extras=True)
    for name, value in options.items():
        expected, metadata = constraints(hints[name])
        checked = [c for c in metadata if isinstance(c, CHECKED)]  # not the typer.Option beside them
        if value is not None and not holds(checked, value):
            raise AblateError(f"--{name.replace('_', '-')}: expected {expectation(expected, checked)}, got {fmt(value)}")


for _name in workloads.REGISTRY:
    for _tool_name, _tool in workloads.get(_name).tools.items():
        _tool_command(_tool_name, _name, _tool)
