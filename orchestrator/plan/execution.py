"""How a grid's trials are to be run, as its file and `ablate run`'s options say it: the resources
each trial takes (`resources:`, --cpus, --gpus, ...), how long an attempt may run (`trial_timeout:`,
--trial-timeout) and the trackers it logs to (`tracking:`, --track). A grid file's key and its
option are checked by the same function here, and name the source they were given in.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import GridError
from orchestrator.plan.params import INT64, fmt

RESOURCE_KEYS = ("cpus", "gpus", "trials_per_gpu", "max_concurrent")
# The trackers a grid can log its trials to, and what each may say of where it writes; unsaid, each
# follows its own conventions (MLFLOW_TRACKING_URI; TensorBoard: <run>/tensorboard; WANDB_PROJECT,
# WANDB_ENTITY, WANDB_MODE). Each has a client that reads these settings, under the same name, in
# run/trackers.py's TRACKERS (tests/test_trackers.py holds the two to the same names).
TRACKER_SETTINGS = {"mlflow": ("tracking_uri", "experiment"), "tensorboard": ("log_dir",),
                    "wandb": ("project", "entity", "mode", "dir")}
TRACKER_CHOICES = {("wandb", "mode"): ("online", "offline", "disabled")}  # settings with a few values


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0  # a fraction packs several trials on one GPU
    max_concurrent: int | None = None


def number(path, key, value, *, integer=False, minimum=0.0, strict=False):
    """A number a grid file or an option gives, checked: finite, in 64 bits, at least `minimum`
    (more, where `strict`)."""
    kinds = (int,) if integer else (int, float)
    bad = (not isinstance(value, kinds) or isinstance(value, bool) or not -INT64 < value < INT64
           or value < minimum or (strict and value == minimum))  # the bounds also refuse NaN and inf
    if bad:
        bound = f"{'>' if strict else '>='} {minimum:g}"
        raise GridError(path, key, f"expected {'an integer' if integer else 'a number'} {bound}, got {fmt(value)}")
    return value


def trial_timeout(value, key: str, path: Path | None = None) -> float | None:
    """A grid's `trial_timeout` or `ablate run --trial-timeout` (key), checked: seconds > 0, or None."""
    return None if value is None else number(path, key, value, strict=True)


def resources(given: dict, key: Callable[[str], str], path: Path | None = None,
              base: Resources = Resources()) -> Resources:
    """`base` with the requests in `given` applied, each checked. The one owner of these rules:
    a grid's `resources` mapping and `ablate run --cpus/--gpus/...` both come through here, and
    `key` names a request as its source does (`resources.gpus`, `--gpus`)."""
    for name in given:
        if name not in RESOURCE_KEYS:
            raise GridError(path, key(name), f"unknown key (allowed: {', '.join(RESOURCE_KEYS)})")
    if "gpus" in given and "trials_per_gpu" in given:
        raise GridError(path, key("trials_per_gpu"), f"give either {key('gpus')} or {key('trials_per_gpu')}, not both")
    changes = {}
    if "cpus" in given:
        changes["cpus"] = number(path, key("cpus"), given["cpus"], strict=True)
    if "gpus" in given:
        gpus = changes["gpus"] = number(path, key("gpus"), given["gpus"])
        if gpus > 1 and gpus != int(gpus):  # Ray packs fractions onto one GPU, but cannot split 1.5
            raise GridError(path, key("gpus"), f"expected a fraction up to 1 or a whole number, got {fmt(gpus)}")
    if "trials_per_gpu" in given:
        changes["gpus"] = 1 / number(path, key("trials_per_gpu"), given["trials_per_gpu"], integer=True, minimum=1)
    if given.get("max_concurrent") is not None:
        changes["max_concurrent"] = number(path, key("max_concurrent"), given["max_concurrent"], integer=True, minimum=1)
    return dataclasses.replace(base, **changes)


def tracking(given, path: Path | None = None, key: str = "tracking") -> dict[str, dict[str, str]]:
    """A grid's `tracking`: a list of tracker names, or a mapping of each to its settings."""
    if isinstance(given, list):
        for i, name in enumerate(given):
            if not isinstance(name, str):
                raise GridError(path, f"{key}[{i}]",
                                f"expected a tracker's name ({', '.join(TRACKER_SETTINGS)}), got {fmt(name)}")
        given = {name: {} for name in given}
    if not isinstance(given, dict):
        raise GridError(path, key, f"expected a list of trackers or a mapping of tracker: settings, got {fmt(given)}")
    out = {}
    for name, settings in given.items():
        if name not in TRACKER_SETTINGS:
            raise GridError(path, f"{key}.{name}" if isinstance(name, str) and not key.startswith("--") else key,
                            f"unknown tracker {fmt(name)} (known: {', '.join(TRACKER_SETTINGS)})")
        settings = settings or {}
        if not isinstance(settings, dict):
            raise GridError(path, f"{key}.{name}", f"expected a mapping of setting: value, got {fmt(settings)}")
        for setting, value in settings.items():
            if setting not in TRACKER_SETTINGS[name]:
                raise GridError(path, f"{key}.{name}.{setting}",
                                f"unknown key (allowed: {', '.join(TRACKER_SETTINGS[name])})")
            if not isinstance(value, str) or not value:
                raise GridError(path, f"{key}.{name}.{setting}", f"expected a text, got {fmt(value)}")
            if value not in TRACKER_CHOICES.get((name, setting), (value,)):
                raise GridError(path, f"{key}.{name}.{setting}",
                                f"expected one of {', '.join(TRACKER_CHOICES[name, setting])}, got {fmt(value)}")
        out[name] = dict(settings)
    return out
