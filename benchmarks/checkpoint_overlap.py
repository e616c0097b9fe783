"""Wall time per epoch of a trial whose checkpoint is large, with its epoch files written while
the next epoch trains (what `StoredSession.report` does) against written before training goes on
(`report` then `flush`, as sessions did before): the same session, the same storage, in turns.

An epoch is `--compute-ms` of matrix products (which, like CUDA kernels, leave Python's lock
free) and a checkpoint of `--checkpoint-mb` of float64; no Ray. Run from the repository root:

    python benchmarks/checkpoint_overlap.py --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.run.session import StoredSession  # noqa: E402
from orchestrator.store.rundir import RunDir  # noqa: E402

EPOCHS = 10


def epoch_ms(storage: str, state: np.ndarray, compute_s: float, overlap: bool) -> float:
    a = np.random.default_rng(0).random((600, 600))
    with tempfile.TemporaryDirectory(dir=storage) as run:
        session = StoredSession(RunDir(run), "t")
        session.start()
        start = time.perf_counter()
        for epoch in range(EPOCHS):
            end = time.perf_counter() + compute_s
            while time.perf_counter() < end:
                a @ a
            session.report({"epoch": epoch + 1}, checkpoint={"weights": state})
            if not overlap:
                session.flush()
        session.flush()
        return (time.perf_counter() - start) / EPOCHS * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compute-ms", type=float, default=100)
    p.add_argument("--checkpoint-mb", type=float, default=40)
    p.add_argument("--storage", default=tempfile.gettempdir(), help="where the runs are written")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    state = np.random.default_rng(0).random(int(a.checkpoint_mb * 1e6 / 8))
    times = {False: [], True: []}
    for _ in range(a.repeats):
        for overlap in times:
            times[overlap].append(epoch_ms(a.storage, state, a.compute_ms / 1000, overlap))
    print(f"ms per epoch ({a.compute_ms:g} ms compute, {a.checkpoint_mb:g} MB checkpoint), median of {a.repeats}:")
    for overlap, name in ((False, "written before training goes on"), (True, "written while the next epoch trains")):
        print(f"  {name:>36}: {statistics.median(times[overlap]):.0f} "
              f"({min(times[overlap]):.0f}-{max(times[overlap]):.0f})")


if __name__ == "__main__":
    main()
