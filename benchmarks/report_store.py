"""What recording a trial's reports costs as they pile up: a script that prints a report every few
steps reports thousands in a trial, and each is stored, with a checkpoint that says where a retry
takes up, before the next (workloads/script/train.py). The cost of the Nth report should not grow
with N.

A session records `--reports` reports of six metrics and a step each, with a script's checkpoint
(`{"epoch": step}`), on a local disk, no Ray, as fast as it can: the time per report over the
first and the last tenth of them, and the bytes written in all. Run from the repository root:

    python benchmarks/report_store.py --reports 1000 5000 20000 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.run.session import StoredSession  # noqa: E402
from orchestrator.store.rundir import RunDir  # noqa: E402


def written_bytes() -> int:
    with open(f"/proc/{os.getpid()}/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split()[1])


def record(n: int, storage: str) -> tuple[float, float, float, float]:
    """Microseconds per report over the first and last tenth, MB written, seconds in all."""
    with tempfile.TemporaryDirectory(dir=storage) as run:
        session = StoredSession(RunDir(run), "t")
        session.start()
        tenth, times = max(1, n // 10), []
        wrote, began = written_bytes(), time.perf_counter()
        for step in range(1, n + 1):
            start = time.perf_counter()
            metrics = {"step": step * 10, "loss": 1 / step, "val_loss": 1.1 / step, "lr": 0.1, "grad_norm": 2.5,
                       "accuracy": 1 - 1 / step, "images_per_second": 1234.5}
            session.report(metrics, checkpoint={"epoch": step * 10})
            times.append(time.perf_counter() - start)
        session.close()
        seconds, mb = time.perf_counter() - began, (written_bytes() - wrote) / 1e6
    first, last = times[:tenth], times[-tenth:]
    return sum(first) / tenth * 1e6, sum(last) / tenth * 1e6, mb, seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", type=int, nargs="+", default=[1000, 5000, 20000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--storage", default=tempfile.gettempdir(), help="where the runs are written")
    a = p.parse_args()
    print(f"{'reports':>8} {'first tenth us/report':>22} {'last tenth us/report':>21} {'MB written':>11} {'total s':>8}")
    for n in a.reports:
        runs = [record(n, a.storage) for _ in range(a.repeats)]
        first, last, mb, total = (statistics.median(r[i] for r in runs) for i in range(4))
        print(f"{n:>8} {first:>22.0f} {last:>21.0f} {mb:>11.1f} {total:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
