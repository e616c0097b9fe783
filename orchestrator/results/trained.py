"""A trained trial of a run, for a workload's tools on trained trials (workloads/base.py, TrialTool).

    config, state = trained_trial(run, "3f9c0a1b2c4d", "allcnn", "visualize")
"""
from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from orchestrator.errors import AblateError
from orchestrator.plan.grid import read_saved_grid
from orchestrator.store.records import read_trials
from orchestrator.store.rundir import RunDir


def trained_trial(run: RunDir, trial: str, workload_name: str, tool: str) -> tuple[Any, dict[str, Any]]:
    """The config object and final checkpoint state of a finished trial of `workload_name`."""
    table = read_trials(run, notify=lambda message: None)  # a damaged file: its records say the same
    rows = table.filter(pc.field("trial_id") == trial).to_pylist() if table is not None else []
    if not rows:
        known = table["trial_id"].to_pylist()[:5] if table is not None else []
        raise AblateError(f"{run.display()}: unknown trial '{trial}'"
                          + (f" (for example: {', '.join(known)})" if known else " (the run has no finished trials)"))
    saved = read_saved_grid(run)
    grid, untrusted = saved.grid, saved.untrusted
    if grid is None or grid.workload.name != workload_name:
        ran = (f"workload '{grid.workload.name}'" if grid else f"workload '{untrusted}' (not registered)" if untrusted
               else "a workload that cannot be loaded here")
        raise AblateError(f"{run.display()}: {tool} is a command of workload '{workload_name}'; "
                          f"this run is of {ran}")
    saved = run.checkpoint(trial, epochs=False)
    if saved is None:
        raise AblateError(f"{run.display()}: trial '{trial}' ({rows[0]['status']}) has no checkpoint to load")
    workload = grid.workload
    config = workload.config(**{f: rows[0][f] for f in workload.config.__dataclass_fields__})
    return config, saved["state"]
