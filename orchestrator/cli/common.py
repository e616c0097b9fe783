"""What every `ablate` command shares: the app, the edge where library errors become one line and
an exit code, the output file a command writes, and the arguments that name a grid or a run."""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.errors import AblateError
from workloads.base import WorkloadError

app = typer.Typer(help="Run ablation grids of deep-learning experiments: one YAML grid becomes a "
                  "reproducible study. Plan it, run it as Ray Tune trials, read the results from Parquet.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode="markdown")
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

GridPath = Annotated[Path, typer.Argument(help="A grid file (YAML), e.g. grids/paper.yaml.", show_default=False)]
Storage = Annotated[str, typer.Option(help="Where runs live: a local path, an NFS path or s3://bucket/prefix.")]
RunArg = Annotated[str, typer.Argument(
    help="A run directory (runs/paper, s3://bucket/runs/paper), or a grid file (then --storage applies).",
    show_default=False)]


@app.callback()
def main_options():
    # As `python -m` does: a workload module of the user's (`workload: mine:WORKLOAD`) imports
    # from the working directory. Done once, here, for the whole command.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def command(fn, name: str | None = None):
    """Register a command; library errors become one `error: ...` line and their exit code.

    A workload's own errors (a dataset missing offline, a corrupted download) are for the user to
    fix as much as ours, wherever they are raised: one line and exit code 1 too. A command's
    `--output` file is checked before the command does its work (a plot can take a while).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            if kwargs.get("output") is not None:
                _check_output(kwargs["output"])
            return fn(*args, **kwargs)
        except (AblateError, WorkloadError) as e:
            err.print(f"error: {e}", markup=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 1)) from None

    return app.command(name)(wrapper)


def _check_output(output: Path) -> None:
    """An output file can be written only into a folder that exists, and not over a folder."""
    if output.is_dir():
        raise AblateError(f"--output {output}: is a folder; name the file to write")
    if not output.parent.is_dir():
        why = f"{output.parent} is not a folder" if output.parent.exists() else f"there is no folder {output.parent}"
        raise AblateError(f"--output {output}: {why}")


@contextlib.contextmanager
def writing(output: Path | None):
    """Writing `output`: where it cannot be written (a read-only folder, a full disk), one line naming it.
    Only the output's own errors: one naming it, or a full disk (a read of the run is never that),
    which leaves no file cut short behind: one the command wrote to (a file it never reached stays)."""
    before = _version(output)
    try:
        yield
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        if output is None or not (e.filename == str(output) or full):
            raise
        if full and _version(output) not in (before, None):
            output.unlink()
        raise AblateError(f"--output {output}: cannot write it ({e.strerror or e})") from None


def _version(path: Path | None) -> tuple | None:
    """Which version of a file is there: None where there is none."""
    if path is None or not path.exists():
        return None
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def note(message: str) -> None:
    err.print(f"note: {message}", markup=False, soft_wrap=True)


def open_run(run: str, storage: str):
    """The run a RUN argument names: a grid file's run under `storage`, or a run directory."""
    from orchestrator.errors import ResultsError
    from orchestrator.plan.grid import load_grid
    from orchestrator.store.rundir import RunDir, resolve_storage

    if run.endswith((".yaml", ".yml")) and Path(run).is_file():
        return RunDir.for_grid(storage, load_grid(run).name)
    if "://" not in run and not Path(run).is_dir():
        raise ResultsError(f"{run}: no such run directory (expected <storage>/<grid name> or a grid file)")
    return RunDir(resolve_storage(run))
