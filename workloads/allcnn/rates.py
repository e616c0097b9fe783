"""Training rates of the All-CNN networks measured on real devices, for `ablate plan`'s hours.

`rates.json` beside this file holds what `benchmarks/gpu_check.py --record` wrote: one entry per
device, network (model, variant, width, batch size) and number of trials sharing the device,
with the images/s of all of them together, the date, and what measured it where.

    python benchmarks/gpu_check.py --record                      # measure here, then record
    python benchmarks/gpu_check.py --record gpu_check.json       # record a run's saved JSON line
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

RATES = Path(__file__).with_name("rates.json")
NETWORK = ("model", "variant", "width", "batch_size")  # what a rate is of: a rate holds for these alone
KEY = ("device", *NETWORK, "trials")  # one entry per key; a later measurement replaces it


def load(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or RATES
    if not path.is_file():
        return []
    return _read(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=4)  # `ablate plan` asks once per trial; read again once the file changes
def _read(path: Path, mtime_ns: int) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["rates"]


# gpu_check.py's trainer processes train with the trainer's defaults, which on each kind of device
# mean these (train.py): a rate says nothing of a trial set to train otherwise (eager fp32 on a GPU
# is less than half as fast: ../shared/PERFORMANCE.md).
AS_MEASURED = {"gpu": {"precision": ("auto", "bf16"), "compile": ("auto", "reduce-overhead"), "channels_last": (True,)},
               "cpu": {"compile": ("auto", "off"), "channels_last": (True,)}}  # precision: bf16 is for CUDA only


def rates(config) -> list[dict[str, Any]]:
    """The rates measured for this config's network on the kinds of device it can train on,
    training as it would there (Workload.rates)."""
    kinds = ("gpu", "cpu") if config.device == "auto" else ("cpu",) if config.device == "cpu" else \
        ("gpu",) if config.device.startswith("cuda") else ()
    return [r for r in load() if all(r[k] == getattr(config, k) for k in NETWORK) and r["kind"] in kinds
            and all(getattr(config, k) in values for k, values in AS_MEASURED[r["kind"]].items())]


def record(check: dict[str, Any], where: str, path: Path | None = None) -> list[dict[str, Any]]:
    """Add the rates of one gpu_check run (its JSON line) to rates.json, replacing earlier
    measurements of the same device, network and trials; returns the entries added."""
    path = path or RATES
    network = {k: check[k] for k in NETWORK}
    added = [{"device": check["device_name"], "kind": "gpu" if check["device"] == "cuda" else "cpu", **network,
              "trials": p["n"], "images_per_second": round(p["images_per_second"], 1), "date": check["date"],
              "where": where, "torch_version": check["torch_version"]} for p in check["processes"]]
    keys = {tuple(r[k] for k in KEY) for r in added}
    kept = [r for r in load(path) if tuple(r[k] for k in KEY) not in keys]
    entries = sorted(kept + added, key=lambda r: tuple(str(r[k]) for k in KEY[:-1]) + (r["trials"],))
    path.write_text('{"rates": [\n' + ",\n".join(json.dumps(r) for r in entries) + "\n]}\n")  # a line each
    return added
