"""Registered workloads: the experiments a grid file can name.

Builtin ones are listed by import path so that `ablate --help` does not import torch.
A grid may also name any `module:object` that is a `workloads.base.Workload`, importable from
`sys.path` (the `ablate` command puts the working directory there, as `python -m` does).
"""
from __future__ import annotations

import importlib
import os
import traceback

from workloads.base import Workload

REGISTRY = {
    "allcnn": "workloads.allcnn:WORKLOAD",
}
DEFAULT = "allcnn"  # what a grid file without a `workload` key runs


class UnknownWorkload(LookupError):
    pass


def get(name: str) -> Workload:
    """The workload registered as `name`, or the one at import path `module:object`."""
    path = REGISTRY.get(name, name)
    if ":" not in path:
        raise UnknownWorkload(f"unknown workload '{name}' (known: {', '.join(REGISTRY)}; "
                              "or an import path module:object)")
    module_name, _, attr = path.partition(":")
    if not all(part.isidentifier() for part in (*module_name.split("."), attr)):
        raise UnknownWorkload(f"'{name}' is not an import path module:object (e.g. mypackage.models:WORKLOAD)")
    try:
        workload = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UnknownWorkload(f"cannot import workload '{name}': {e}") from None
    except Exception as e:  # the module's own code failed (a typo in it): where, in one line
        frames = traceback.extract_tb(e.__traceback__)
        # The module's own line: the first frame of a module's code, not the library call it made.
        frame = next((f for f in frames if f.name == "<module>"), frames[-1])
        where = "" if isinstance(e, SyntaxError) else f" ({os.path.basename(frame.filename)}, line {frame.lineno})"
        raise UnknownWorkload(f"cannot import workload '{name}': {type(e).__name__}: {e}{where}") from None
    if not isinstance(workload, Workload):
        raise UnknownWorkload(f"'{name}' is not a workloads.base.Workload (it is of type {type(workload).__name__})")
    return workload
