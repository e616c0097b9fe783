"""How long a grid trains, from the training rates its workload measured on real devices.

    estimates = estimate(grid)   # a list of Estimate, one per device; or a str: why there is none

The device is a GPU when the grid's trials ask for GPUs (each GPU with rates measured for the
grid's networks: which one a cluster has is not known here), this machine's CPU otherwise.
Trials that share a device (`gpus: 0.25`; several CPU trials on one machine) train at the rate
measured with that many trials sharing it, all of them together; where that many were not
measured, the most measured below it, else the fewest measured (then the plan's line says how
many this grid puts on one).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from workloads.base import cpu_cores, cpu_name


@dataclass(frozen=True)
class Estimate:
    device: str
    kind: str  # "gpu": hours are GPU-hours; "cpu": hours of this machine
    hours: float
    trials: int  # how many of the grid's trials have a rate measured on this device
    total: int
    sharing: int  # trials sharing one device in this grid
    measured: tuple[dict[str, Any], ...]  # the rates used, each once


def sharing(grid) -> int:
    """How many of the grid's trials run on one device at once, as Ray packs them (0.35 GPU each:
    2 on a GPU; 0.5 CPU each: 4 on 2 cores) and max_concurrent allows."""
    r, n = grid.resources, len(grid.trials)
    if r.gpus > 0:
        at_once = math.floor(1 / r.gpus + 1e-9) if r.gpus < 1 else 1
    else:
        at_once = math.floor(cpu_cores() / r.cpus + 1e-9)
    if r.max_concurrent:
        at_once = min(at_once, r.max_concurrent)
    return max(1, min(at_once, n))


def _pick(rates: list[dict[str, Any]], n: int) -> dict[str, Any]:
    below = [r for r in rates if r["trials"] <= n]
    return max(below, key=lambda r: r["trials"]) if below else min(rates, key=lambda r: r["trials"])


def estimate(grid) -> list[Estimate] | str:
    workload, r = grid.workload, grid.resources
    if workload.cost is None and workload.invocation:
        return "a command says nothing of its cost before it runs; `ablate status` has an ETA once trials report"
    if workload.cost is None:
        return f"workload '{workload.name}' does not say how many images its trials train"
    if workload.rates is None:
        return f"workload '{workload.name}' has no measured training rates"
    kind, here = ("gpu", None) if r.gpus > 0 else ("cpu", cpu_name())
    n = sharing(grid)
    per_device: dict[str, list[tuple[int, dict]]] = {}  # device -> (images, rate) of each trial measured there
    for trial in grid.trials:
        config = workload.config(**trial.config)
        measured = [m for m in workload.rates(config) if m["kind"] == kind and (here is None or m["device"] == here)]
        if not measured:
            continue
        images = workload.cost(config)["images"]
        for device in sorted({m["device"] for m in measured}):
            per_device.setdefault(device, []).append(
                (images, _pick([m for m in measured if m["device"] == device], n)))
    if not per_device:
        where = "a GPU" if kind == "gpu" else f"this machine's CPU ({here})"
        return f"no training rate of these trials' networks is measured on {where} with their settings"
    scale = r.gpus if r.gpus >= 1 else 1.0  # a trial holding several GPUs uses them all its time
    out = []
    for device, rows in per_device.items():
        used = list({json.dumps(m, sort_keys=True): m for _, m in rows}.values())
        out.append(Estimate(device, kind, sum(images / m["images_per_second"] for images, m in rows) / 3600 * scale,
                            len(rows), len(grid.trials), n, tuple(used)))
    return out
