"""Numbers between Arrow and NumPy through their buffers.

pyarrow imports pandas the first time it converts between Arrow and anything else (`pa.array`,
`to_numpy`, a Python scalar given to a compute function, `group_by`): 0.3-0.5 s, more than a
reader's own work on 10,000 trials (benchmarks/README.md). These two go through the buffers,
which pyarrow hands over as they are.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def from_numpy(values: np.ndarray) -> pa.Array:
    """A 1-d NumPy array of numbers (not bools: Arrow packs those in bits) as an Arrow array."""
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric Arrow column as float64 NumPy, a null as NaN."""
    import pyarrow.compute as pc

    column = pc.cast(column, pa.float64())
    parts = []
    for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
        validity, data = chunk.buffers()
        values = np.frombuffer(data, np.float64, len(chunk), chunk.offset * 8) if len(chunk) else np.empty(0)
        if chunk.null_count:
            bits = np.unpackbits(np.frombuffer(validity, np.uint8), count=chunk.offset + len(chunk), bitorder="little")
            values = np.where(bits[chunk.offset:].astype(bool), values, np.nan)
        parts.append(values)
    return np.concatenate(parts) if parts else np.empty(0)
