"""What recording a trial's reports costs as they pile up: a script that prints a report every few
steps reports thousands in a trial, each stored with a checkpoint that says where a retry takes up
(workloads/script/train.py). The cost of the Nth report should not grow with N, and the record
should keep up with what the script prints.

A session records `--reports` reports of six metrics and a step each, with a script's checkpoint
(`{"epoch": step}`), no Ray, as fast as it can or one every `--interval-ms`: the time a report call
takes over the first and the last tenth of them, the bytes written in all (the process's `wchar`:
to disk; a socket's `send` is not counted) and on S3 the bytes of the objects put, and how long
after the last report was due everything was on storage. On a local disk, or with `--s3` on a
local S3 server (moto, a test dependency): each file in one PUT as ablate writes them, against in
parts (a multipart upload: three requests), in turns. Run from the repository root:

    python benchmarks/report_store.py --reports 1000 5000 20000 --repeats 3
    python benchmarks/report_store.py --s3 --reports 1000 --interval-ms 5 --repeats 3
    python benchmarks/report_store.py --s3 --reports 1000 5000 20000 --interval-ms 1 --repeats 3
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.run.session import StoredSession  # noqa: E402
from orchestrator.store.rundir import RunDir  # noqa: E402


PUT = [0]  # bytes of the objects the local S3 server was sent, in PUTs and upload parts


def written_bytes() -> int:
    with open(f"/proc/{os.getpid()}/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split()[1])


def record(n: int, run: RunDir, interval: float) -> tuple[float, float, float, float, float]:
    """Microseconds per report over the first and last tenth, MB written (to disk), MB put to S3,
    and how far behind its schedule (a report every `interval` seconds) the last report was on
    storage."""
    session = StoredSession(run, "t")
    session.start()
    tenth, times = max(1, n // 10), []
    wrote, put, began = written_bytes(), PUT[0], time.perf_counter()
    for step in range(1, n + 1):
        if (wait := began + step * interval - time.perf_counter()) > 0:  # as a script prints them
            time.sleep(wait)
        start = time.perf_counter()
        metrics = {"step": step * 10, "loss": 1 / step, "val_loss": 1.1 / step, "lr": 0.1, "grad_norm": 2.5,
                   "accuracy": 1 - 1 / step, "images_per_second": 1234.5}
        session.report(metrics, checkpoint={"epoch": step * 10})
        times.append(time.perf_counter() - start)
    session.close()
    behind, mb = time.perf_counter() - (began + n * interval), (written_bytes() - wrote) / 1e6
    first, last = times[:tenth], times[-tenth:]
    return sum(first) / tenth * 1e6, sum(last) / tenth * 1e6, mb, (PUT[0] - put) / 1e6, behind


def local(storage: str, interval: float):
    def run(n: int):
        with tempfile.TemporaryDirectory(dir=storage) as folder:
            return record(n, RunDir(folder), interval)
    return {"local disk": run}


def s3(interval: float):
    """A local S3 server, and a run on it for each way of writing a file."""
    from moto.s3.responses import S3Response

    from tests.test_storage_s3 import CREDENTIALS, moto_s3

    def counted(method):
        def put(self, *args, **kwargs):
            PUT[0] += len(self.body or b"")
            return method(self, *args, **kwargs)
        return put

    S3Response.put_object, S3Response.upload_part = counted(S3Response.put_object), counted(S3Response.upload_part)
    os.environ.update(CREDENTIALS)
    _, client, query = moto_s3()
    client.create_bucket(Bucket="bench")
    runs = itertools.count()
    return {way: lambda n, extra=extra: record(n, RunDir(f"s3://bench/{next(runs)}?{query}{extra}"), interval)
            for way, extra in [("S3, in parts", "&allow_delayed_open=false"), ("S3, one PUT", "")]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", type=int, nargs="+", default=[1000, 5000, 20000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--storage", default=tempfile.gettempdir(), help="where the runs are written")
    p.add_argument("--s3", action="store_true", help="on a local S3 server instead")
    p.add_argument("--interval-ms", type=float, default=0, help="a report every so many ms (0: at once)")
    a = p.parse_args()
    sides = s3(a.interval_ms / 1000) if a.s3 else local(a.storage, a.interval_ms / 1000)
    print(f"{'':<14} {'reports':>8} {'first tenth us/report':>22} {'last tenth us/report':>21} {'MB written':>11} "
          f"{'MB put':>8} {'s behind':>9}")
    for n in a.reports:
        runs = {side: [] for side in sides}
        for _ in range(a.repeats):  # in turns
            for side, run in sides.items():
                runs[side].append(run(n))
        for side, results in runs.items():
            first, last, mb, put, behind = (statistics.median(r[i] for r in results) for i in range(5))
            print(f"{side:<14} {n:>8} {first:>22.0f} {last:>21.0f} {mb:>11.1f} {f'{put:.1f}' if a.s3 else '':>8} {behind:>9.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
