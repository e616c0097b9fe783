"""Helpers for tests that run grids: probe grid files, a quiet display, reading results."""
from __future__ import annotations

import functools
import io
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml
from rich.console import Console

from orchestrator.run.display import PlainDisplay


def probe_grid(tmp_path: Path, name="probe", axes=None, fixed=None, **top) -> Path:
    """A grid over tests/probe.py; its executions are logged under tmp_path/markers."""
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    spec = {"name": name, "workload": "tests.probe:WORKLOAD", "axes": axes or {"lr": [0.1, 0.2]},
            "fixed": {"marker_dir": str(markers), **(fixed or {})}, **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def quiet(output: io.StringIO | None = None):
    """A display factory that writes plain lines into `output`."""
    console = Console(file=output or io.StringIO(), width=200)
    return functools.partial(PlainDisplay, console)


def executions(tmp_path: Path) -> list[tuple[str, int, str]]:
    """(key, epoch it started from, node) for every start of a probe trial."""
    log = tmp_path / "markers" / "executions.log"
    if not log.exists():
        return []
    return [(key, int(epoch), node) for key, epoch, _pid, node, _t in
            (line.split() for line in log.read_text().splitlines())]


def starts(tmp_path: Path) -> Counter:
    return Counter(key for key, _, _ in executions(tmp_path))


def trials(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "trials.parquet")
