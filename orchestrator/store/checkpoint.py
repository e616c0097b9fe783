"""A trial's checkpoint as bytes in the run's storage: `{"state": ..., "epochs": [...]}`.

    data = serialize({"state": state, "epochs": epochs})   # in the trial's worker
    saved = deserialize(data)                              # a retry, or a tool on a trained trial

torch.save where the trial's process uses torch (tensors, CUDA ones too, load back on any device
as CPU tensors); a plain pickle where it does not, so that a trial of a script or of plain Python
does not pay for importing torch.
"""
from __future__ import annotations

import io
import pickle
import sys
from typing import Any


def serialize(checkpoint: dict[str, Any]) -> bytes:
    if "torch" not in sys.modules:  # no tensor can be in a checkpoint of a process without torch
        return pickle.dumps(checkpoint)
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def deserialize(data: bytes) -> dict[str, Any]:
    if not data.startswith(b"PK"):  # torch.save writes a zip; a checkpoint without tensors is a pickle
        return pickle.loads(data)
    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
