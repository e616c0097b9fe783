"""A trial's checkpoint as bytes in the run's storage: `{"state": ..., "reported": n}` (the
trial's first n epochs, in its epochs file; an older ablate's held them: `"epochs": [...]`), in a form
that loads without running code. Whoever can write a run's storage (a shared bucket, a teammate's
run directory) must not thereby run code on the workers that resume from it, or on the machine of
whoever reads it (`ablate visualize`).

    data = serialize({"state": state, "reported": len(epochs)})       # in the trial's worker
    saved = deserialize(data, "runs/x/trials/t/checkpoint.pt")        # a retry, or a tool on a trained trial

- JSON where the checkpoint holds only what JSON holds exactly (mappings with string keys, lists,
  strings, numbers, booleans, None): a script's, or a plain-Python workload's, without torch.
- Otherwise torch.save, read with torch.load(weights_only=True): tensors (CUDA ones load back as
  CPU tensors) inside dicts, lists, tuples and sets of plain values, torch sizes, dtypes and
  devices: a model's, an optimizer's and a schedule's state, RNG states. A NumPy scalar is saved
  as the Python number it is; anything else (a NumPy array, an object of a class of the workload's)
  is refused when it is reported, naming where it is, since it could not be loaded back.
- An older ablate's plain pickle is read with an unpickler that finds no class and no function
  (the pickle documentation's "restricting globals"): its plain values load, nothing else.

A file that is damaged or would need code to load is refused with one UnloadableCheckpoint line
naming it.
"""
from __future__ import annotations

import io
import json
import pickle
import re
from collections import Counter, OrderedDict
from typing import Any

from orchestrator.errors import CheckpointError, UnloadableCheckpoint

_SCALARS = (str, bytes, int, float, bool, complex, type(None))
_MAPPINGS = (dict, OrderedDict, Counter)
_SEQUENCES = (list, tuple, set, frozenset)


def serialize(checkpoint: dict[str, Any]) -> bytes:
    if _json_exact(checkpoint):
        return json.dumps(checkpoint).encode()
    import torch  # a checkpoint that JSON cannot hold is a torch process's

    buffer = io.BytesIO()
    torch.save(_loadable(checkpoint, "", torch), buffer)
    return buffer.getvalue()


def _json_exact(value) -> bool:
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    if kind is list:
        return all(map(_json_exact, value))
    return kind in (str, int, float, bool, type(None))


def _loadable(value, where: str, torch):
    """`value` as torch.load(weights_only=True) reads it back: NumPy scalars as Python numbers,
    containers rebuilt; CheckpointError naming `where` for anything it would refuse."""
    kind = type(value)
    if kind in _SCALARS or isinstance(value, (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return value
    if kind in _MAPPINGS:
        out = kind({_loadable(k, where, torch): _loadable(v, f"{where}[{k!r}]", torch) for k, v in value.items()})
        if getattr(value, "__dict__", None):  # a module's state_dict carries `_metadata` (its version)
            out.__dict__.update(_loadable(vars(value), where, torch))
        return out
    if kind in _SEQUENCES:
        return kind(_loadable(v, f"{where}[{i}]", torch) for i, v in enumerate(value))
    if kind.__module__ == "numpy" and getattr(value, "shape", None) == ():  # np.float64(0.1), np.int64(3)
        return value.item()
    raise CheckpointError(f"checkpoint{where}: a {kind.__module__}.{kind.__qualname__} would need code to load; "
                          "a checkpoint holds tensors and plain values (dict, list, tuple, str, numbers, bool, None)")


def deserialize(data: bytes, name: str) -> dict[str, Any]:
    """The checkpoint in `data`, read from the file `name` (for errors)."""
    if data[:1] == b"{":
        try:
            return json.loads(data)
        except ValueError as e:
            raise unreadable(name, str(e)) from None
    if data.startswith(b"PK"):  # torch.save's zip
        import torch

        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
            raise _refused(name, found.group(1) if found else None) from None
        except Exception as e:  # damaged: its zip reader's RuntimeError, or (a zip cut short) ValueError, EOFError, ...
            raise unreadable(name, (str(e).splitlines() or [type(e).__name__])[0]) from None
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except _Global as e:
        raise _refused(name, str(e)) from None
    except Exception as e:  # a pickle's own errors are of many kinds
        raise unreadable(name, f"{type(e).__name__}: {e}") from None


def unreadable(name: str, why: str) -> UnloadableCheckpoint:
    """A damaged checkpoint (a disk fault, a copy cut short): what to do about it."""
    return UnloadableCheckpoint(f"{name}: not a readable checkpoint ({why}); delete it to train the trial from its "
                           "start (`ablate run --retry-failed`), or put back a copy")


def _refused(name: str, found: str | None) -> UnloadableCheckpoint:
    return UnloadableCheckpoint(f"{name}: refused: it names {found or 'a class or function'}, which loading it would "
                           "run; a checkpoint holds only tensors and plain values (delete the file to train the "
                           "trial from its start)")


class _Global(pickle.UnpicklingError):
    pass


class _PlainUnpickler(pickle.Unpickler):
    """A pickle's plain values (dicts, lists, tuples, sets, strings, numbers, None), none of which
    needs a class or function found by name: every such lookup is where a pickle runs code."""

    def find_class(self, module, name):
        raise _Global(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Global("a persistent id")
