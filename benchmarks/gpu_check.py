"""The GPU check in one command: does the All-CNN trainer's fast path train correctly, and how fast.

One run does all of it with ablate's own trainer (workloads/allcnn/train.py), in this order:

1. Correctness: All-CNN-C at the paper's width and batch 128 trains a few epochs on the real
   CIFAR-10 subset (../shared/data, else synthetic CIFAR-shaped data) and its loss must fall
   below chance level; the checkpoint of the middle epoch, turned into bytes and back as ablate's
   stored session does, resumes to the same weights bit for bit as training straight through;
   on CUDA an fp32 run of the same steps agrees with the bf16 one within TOLERANCE.
2. Speed: ../shared/bench/reference_train.py (the typical user script) against the trainer,
   median of timed epochs after warm-up; then 1, 2, 4 and 8 trainer processes sharing the device
   at once (what Ray's fractional GPUs do), each a process of this script (`--worker`), timed
   over one common window: images/s of all of them together, and each one's peak memory.
3. Compile: what a trial pays before its first fast step (its first epoch less a steady one),
   in a process alone with an empty compile cache, then in one with the cache the first filled.
4. Profile: after its window, the trainer process timed alone trains one more epoch under
   torch.profiler: the kernels by their time on the GPU and how busy they kept it, the operators
   by their own time on the host (`--trace` keeps the Chrome trace). Where a target is missed, it
   says why from the same run.

It prints progress on stderr, a table on stdout and, last, one JSON line.

    python benchmarks/gpu_check.py --device cpu --quick     # the small version: minutes on 2 CPU cores
    python benchmarks/gpu_check.py                          # the full check, on CUDA where there is one
    python benchmarks/gpu_check.py --record                 # ... and record its rates for `ablate plan`
    python benchmarks/gpu_check.py --record run.json        # record the rates of a saved JSON line
    python benchmarks/gpu_check.py --trace trace.json.gz    # ... and keep the profiled epoch's trace

The command for a lent GPU machine, with what it must carry, is in benchmarks/README.md.

Torch settings: the trainer's own (on CUDA bf16 autocast, channels_last, compile
"reduce-overhead", fused SGD; eager fp32 on CPU). The compile cache is torch's default on-disk
caches (Inductor's FX graph cache and AOTAutograd cache, Triton's kernel cache), moved to one
directory per run by TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR: the main process's, then one
that every trainer process shares, empty before the first (`--cache-dir` to keep it). On CPU,
where the trainer does not compile, the compile figures are of compile="default".
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.autograd import DeviceType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.store.checkpoint import deserialize, serialize  # noqa: E402 (torch alone: no Ray, no pyarrow)
from workloads.allcnn import Config  # noqa: E402
from workloads.allcnn.train import train  # noqa: E402
from workloads.base import MemorySession, cpu_cores, cpu_name  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "bench" / "reference_train.py"
DATA = ROOT.parent / "shared" / "data"
SUBSET = "cifar10-subset.npz"
# bf16 against fp32: each epoch's mean train loss within this many nats (2% of ln 10), after the
# same steps from the same weights and data order.
TOLERANCE = 0.05
PROTOCOL = "GPU_CHECK "  # the lines a worker sends its parent; anything else it prints goes to its log

# The full check is sized for the 8 minutes of an H100/H200 (benchmarks/README.md, its budget);
# --quick is for CPUs. Speed epochs are CIFAR-10's 45,000 training images / 128 (synthetic: speed
# does not depend on what the images show), so the trainer's per-epoch work weighs as in a trial.
FULL = dict(width=1.0, epochs=8, train_size=5085, val_size=1000, steps=351, warmup=2, window=10.0,
            reference_steps=200, repeats=5, processes="1,2,4,8", budget=420.0)
QUICK = dict(width=0.25, epochs=4, train_size=2816, val_size=256, steps=3, warmup=1, window=8.0,
             reference_steps=20, repeats=3, processes="1,2,4,8", budget=0.0)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class StoredSession(MemorySession):
    """A session whose checkpoints go to bytes and back as under `ablate run`, by the store's own
    serializer (orchestrator/store/checkpoint.py: torch.load with weights_only=True, CUDA tensors
    back as CPU ones); it keeps the bytes of epoch `keep`, and restores from `start`."""

    keep: int = 0
    kept: bytes | None = None
    start: bytes | None = None

    def report(self, metrics, checkpoint=None):
        self.epochs.append(dict(metrics))
        if checkpoint is not None:
            data = serialize({"state": checkpoint, "epochs": self.epochs})
            self.checkpoint = deserialize(data, "checkpoint.pt")["state"]
            if metrics["epoch"] == self.keep:
                self.kept = data

    def restore(self):
        return deserialize(self.start, "checkpoint.pt")["state"] if self.start is not None else None


def same_weights(a: dict, b: dict) -> tuple[bool, float]:
    """Whether two state dicts are equal bit for bit, and their largest difference."""
    exact = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    diff = max(((a[k].double() - b[k].double()).abs().max().item() for k in a if k in b), default=math.inf)
    return exact, diff


def correctness(a, device: str) -> dict:
    """The loss falls, a checkpoint resumes exactly, and on CUDA bf16 agrees with fp32."""
    real = (Path(a.data_dir) / SUBSET).is_file()
    config = dict(model=a.model, variant=a.variant, width=a.width, batch_size=a.batch, device=device,
                  dataset="cifar10-subset" if real else "synthetic", data_dir=str(a.data_dir) if real else "",
                  train_size=a.train_size, val_size=a.val_size, test_size=0 if real else 1000, epochs=a.epochs,
                  lr=a.lr, lr_milestones=[], augmentation="standard", translate=4, no_progress_epochs=0,
                  checkpoint_every=1)
    out = {"data": f"{'real CIFAR-10 subset' if real else 'synthetic'}, {a.train_size - a.val_size:,} "
                   f"training images"}
    straight = StoredSession(keep=a.epochs // 2)
    result = train(Config(**config), straight)
    losses = [e["train_loss"] for e in straight.epochs]
    out["losses"] = losses
    out["val_error"] = result["val_error"]
    out["status"] = result["status"]
    # Below chance level (ln K): the net has learned something, not just left a bad start.
    out["loss_falls"] = result["status"] == "completed" and losses[-1] < min(losses[0], math.log(10))
    log(f"  loss {losses[0]:.4f} -> {losses[-1]:.4f} over {a.epochs} epochs: "
        f"{'falls' if out['loss_falls'] else 'does NOT fall'} ({result['status']})")

    resumed = StoredSession(start=straight.kept)
    train(Config(**config), resumed)
    exact, diff = same_weights(straight.checkpoint["model"], resumed.checkpoint["model"])
    out.update(resume_exact=exact and [e["train_loss"] for e in resumed.epochs] == losses[a.epochs // 2:],
               resume_max_difference=diff, resume_epochs=f"{a.epochs // 2} + {a.epochs - a.epochs // 2}",
               repeat_exact=None)
    log(f"  resume from epoch {a.epochs // 2}: {'bit-exact' if out['resume_exact'] else f'differs by {diff:.3g}'}")
    if not out["resume_exact"]:
        # Is it the checkpoint, or are two straight runs already apart (kernels that are not deterministic)?
        again = StoredSession()
        train(Config(**config), again)
        out["repeat_exact"], out["repeat_max_difference"] = same_weights(straight.checkpoint["model"],
                                                                         again.checkpoint["model"])
        log(f"  a second straight run: {'bit-exact' if out['repeat_exact'] else 'differs too'}")

    out.update(bf16_fp32_agree=None, bf16_fp32_max_loss_difference=None, bf16_fp32_tolerance=TOLERANCE)
    if device == "cuda":
        fp32 = StoredSession()
        train(Config(**config, precision="fp32"), fp32)
        gap = max(abs(x - e["train_loss"]) for x, e in zip(losses, fp32.epochs))
        _, weights = same_weights(straight.checkpoint["model"], fp32.checkpoint["model"])
        out.update(bf16_fp32_agree=gap <= TOLERANCE, bf16_fp32_max_loss_difference=gap,
                   bf16_fp32_max_weight_difference=weights, fp32_losses=[e["train_loss"] for e in fp32.epochs])
        log(f"  bf16 vs fp32: largest difference of an epoch's loss {gap:.4f} (tolerance {TOLERANCE})")
    else:
        out["bf16_fp32_skipped"] = "CUDA only: bf16 autocast is the trainer's CUDA path; on a CPU it trains in fp32"
    return out


def reference(a, device: str) -> list[float]:
    """Images/s of the typical user script, one run per repeat."""
    rates = []
    for _ in range(a.repeats):
        out = subprocess.run([sys.executable, str(a.reference), "--model", a.model, "--variant", a.variant,
                              "--width", str(a.width), "--batch", str(a.batch), "--steps", str(a.reference_steps),
                              "--workers", str(a.workers), "--device", device],
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{a.reference} failed: {out.stderr.strip()[-2000:]}")
        rates.append(json.loads(out.stdout.strip().splitlines()[-1])["images_per_second"])
    return rates


# --- trainer processes sharing the device ------------------------------------------------------

class Stop(Exception):
    """The timed window is over: ends a worker's trial between two epochs."""


@dataclass
class WindowSession(MemorySession):
    """A worker's session: after `warmup` epochs it says it is ready and waits for the common
    start; the first epoch to end past start + window ends the timing and stops the trial, or,
    with `profile`, once one more epoch has run under torch.profiler."""

    warmup: int = 1
    window: float = 10.0
    channel: object = None
    go: float | None = None
    device: str = "cpu"
    peak_memory_mb: float | None = None  # when the timing ended
    profile: dict | None = None  # {"trace": path or None}, then the profiled epoch's summary
    profiler: object = None

    def report(self, metrics, checkpoint=None):
        if self.profiler is not None:
            self._profiled(metrics["seconds"])
            raise Stop
        self.epochs.append({"seconds": metrics["seconds"], "end": time.time()})
        if self.go is None and len(self.epochs) == self.warmup:
            send(self.channel, {"ready": True})
            self.go = float(sys.stdin.readline())
        elif self.go is not None and self.epochs[-1]["end"] >= self.go + self.window:
            self.peak_memory_mb = peak_memory_mb(self.device)
            if self.profile is None:
                raise Stop
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            try:
                self.profiler = torch.profiler.profile(activities=activities)
                self.profiler.start()
            except Exception as e:  # a profile is not worth the measurements before it
                self.profile = {"error": f"{type(e).__name__}: {e}"}
                raise Stop

    def _profiled(self, seconds: float) -> None:
        try:
            self.profiler.stop()
            trace = self.profile["trace"]
            if trace:
                self.profiler.export_chrome_trace(trace)  # a path ending in .gz is gzipped
            # Kineto's own writer logs a failure instead of raising: the summary names a trace that exists.
            written = trace if trace and os.path.exists(trace) else None
            self.profile = profile_summary(self.profiler.key_averages(), seconds, written)
        except Exception as e:
            self.profile = {"error": f"{type(e).__name__}: {e}"}


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        # The caching allocator's peak: what another process cannot have (the CUDA context aside).
        return torch.cuda.max_memory_reserved() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def profile_summary(ops, seconds: float, trace: str | None, rows: int = 12) -> dict:
    """One profiled epoch, from its events averaged by name: the kernels (and copies) by their time
    on the device, the operators by their own time on the host, and each side's total, as torch's
    own table sums them. How long the GPU was busy in an epoch says whether it waits for the host."""
    on_device = [op for op in ops if op.device_type != DeviceType.CPU and not op.is_user_annotation]
    out = {"epoch_seconds": seconds, "trace": trace}
    for where, chosen, time_of in (("device", on_device, lambda op: op.self_device_time_total),
                                   ("host", ops, lambda op: op.self_cpu_time_total)):
        busy = sum(map(time_of, chosen))
        out[f"{where}_seconds"] = busy / 1e6
        out[f"{where}_ops"] = [{"name": op.key, "calls": op.count, "seconds": time_of(op) / 1e6,
                                "share": time_of(op) / busy}
                               for op in sorted(chosen, key=time_of, reverse=True)[:rows] if time_of(op) > 0]
    return out


def send(channel, message: dict) -> None:
    channel.write(PROTOCOL + json.dumps(message) + "\n")
    channel.flush()


def worker(spec: dict) -> None:
    """One trainer process: train until its parent's window is over, then send its epochs."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever else prints (torch's warnings) goes to the worker's log, not the protocol
    try:
        torch.set_num_threads(spec["threads"])  # as Ray gives each trial its CPUs
        config = Config(**spec["config"])
        session = WindowSession(warmup=spec["warmup"], window=spec["window"], channel=channel,
                                device=config.device, profile=spec["profile"])
        try:
            result = train(config, session)
        except Stop:
            pass
        else:
            raise RuntimeError(f"the trial ended before the window did: {result['status']} "
                               f"({result['status_reason']})")
        send(channel, {"result": {"epochs": session.epochs, "go": session.go, "started": spec["started"],
                                  "peak_memory_mb": session.peak_memory_mb, "profile": session.profile}})
    except Exception as e:
        traceback.print_exc()
        send(channel, {"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)


def _receive(proc, log_path: Path, key: str) -> dict:
    for line in proc.stdout:
        if line.startswith(PROTOCOL):
            message = json.loads(line[len(PROTOCOL):])
            if "error" in message:
                break
            return message[key]
    proc.wait()
    tail = log_path.read_text()[-3000:]
    raise RuntimeError(f"a trainer process failed (exit code {proc.returncode}); the end of its log "
                       f"{log_path}:\n{tail}")


def window_images(epochs: list[dict], start: float, end: float, images: int) -> float:
    """Images a worker trained between `start` and `end`, each epoch's spread evenly over its time."""
    total = 0.0
    for e in epochs:
        t0, t1 = e["end"] - e["seconds"], e["end"]
        total += images * max(0.0, min(t1, end) - max(t0, start)) / (t1 - t0)
    return total


def processes(a, n: int, device: str, compile_mode: str, cache: Path, logs: Path, profile: bool = False) -> dict:
    """`n` trainer processes at once, timed over one window that starts when all are warm; with
    `profile` (one process), it then trains one more epoch under the profiler."""
    images = a.steps * a.batch
    spec = {"config": dict(model=a.model, variant=a.variant, width=a.width, batch_size=a.batch, device=device,
                           dataset="synthetic", train_size=images, val_size=0, test_size=10, epochs=10**9,
                           lr=0.01, lr_milestones=[], augmentation="standard", translate=4,
                           no_progress_epochs=0, checkpoint_every=10**9, compile=compile_mode),
            "threads": max(1, cpu_cores() // n), "warmup": a.warmup, "window": a.window,
            "profile": {"trace": str(a.trace) if a.trace else None} if profile else None}
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton"),
           "PYTHONUNBUFFERED": "1"}
    procs = []
    for i in range(n):
        log_path = logs / f"worker-{compile_mode}-{n}-{i}.log"
        with open(log_path, "w") as f:
            procs.append((subprocess.Popen([sys.executable, __file__, "--worker",
                                            json.dumps({**spec, "started": time.time()})],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=f, text=True,
                                           env=env), log_path))
    try:
        for proc, log_path in procs:
            _receive(proc, log_path, "ready")
        go = time.time()
        for proc, _ in procs:
            proc.stdin.write(f"{go!r}\n")
            proc.stdin.flush()
        results = [_receive(proc, log_path, "result") for proc, log_path in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    per_process = [window_images(r["epochs"], go, go + a.window, images) / a.window for r in results]
    first = results[0]["epochs"]
    steady = [e["seconds"] for e in first[a.warmup:]]
    return {"n": n, "images_per_second": sum(per_process), "per_process": per_process,
            "peak_memory_mb": max(r["peak_memory_mb"] for r in results),
            # Of the first process; meaningful where it ran alone.
            "epoch_rates": [images / s for s in steady],
            "compile_seconds": first[0]["seconds"] - statistics.median(steady),
            "start_seconds": first[0]["end"] - first[0]["seconds"] - results[0]["started"],
            "profile": results[0]["profile"]}


# --- the check ---------------------------------------------------------------------------------

def run_check(a) -> dict:
    """Every part in turn; a part that fails is recorded in `errors` and the others still run, and
    one that would start past `--budget` seconds is skipped: a GPU's minutes are not spent twice."""
    began = time.perf_counter()
    device = a.device
    name = torch.cuda.get_device_name() if device == "cuda" else cpu_name()
    out = {"device": device, "device_name": name, "torch_version": torch.__version__, "host": socket.gethostname(),
           "date": time.strftime("%Y-%m-%d"), "quick": a.quick, "model": a.model, "variant": a.variant,
           "width": a.width, "batch_size": a.batch, "steps_per_epoch": a.steps, "window_seconds": a.window,
           "loss_falls": None, "resume_exact": None, "bf16_fp32_agree": None, "reference_images_per_second": None,
           "images_per_second": None, "speedup": None, "processes": [], "compile_mode": None,
           "compile_seconds": None, "compile_seconds_cached": None, "trial_start_seconds": None, "profile": None,
           "phase_seconds": {}, "errors": {}, "skipped": []}
    log(f"All-CNN-{a.model} ({a.variant}) width {a.width}, batch {a.batch} on {name}, torch {torch.__version__}")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    main_cache = work / "main-cache"
    os.environ.update(TORCHINDUCTOR_CACHE_DIR=str(main_cache), TRITON_CACHE_DIR=str(main_cache / "triton"))
    shared = Path(a.cache_dir) if a.cache_dir else work / "shared-cache"

    @contextlib.contextmanager
    def part(label):
        elapsed = time.perf_counter() - began
        if a.budget and elapsed > a.budget:
            out["skipped"].append(label)
            log(f"{label}: skipped, {elapsed:.0f} s are past the budget of {a.budget:.0f} s")
            yield False
            return
        t = time.perf_counter()
        log(label)
        try:
            yield True
        except Exception as e:
            traceback.print_exc()
            out["errors"][label] = f"{type(e).__name__}: {e}"[-4000:]
        out["phase_seconds"][label] = out["phase_seconds"].get(label, 0) + time.perf_counter() - t
        if a.json:  # what a run cut short leaves behind
            a.json.write_text(json.dumps(out) + "\n")

    try:
        with part("correctness") as go:
            if go:
                out.update(correctness(a, device))
        torch._dynamo.reset()  # the main process's compiled graphs and CUDA graph memory, before timing others
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

        with part("reference") as go:
            if go and not a.reference.is_file():
                raise FileNotFoundError(f"{a.reference}: the reference script is missing (--reference)")
            if go:
                out["reference_runs"] = reference(a, device)
                out["reference_images_per_second"] = statistics.median(out["reference_runs"])
                log(f"  {out['reference_images_per_second']:.0f} images/s, median of {a.repeats} runs")

        default_mode = "reduce-overhead" if device == "cuda" else "off"  # what the trainer's compile=auto does
        mode = out["compile_mode"] = a.compile or ("reduce-overhead" if device == "cuda" else "default")
        warm = None
        # The one process profiled after its window: the later compile trial where it is also the trainer's
        # 1-process rate, else the 1-process group. Never both: a profile that broke one process is not retried.
        profile_warm = a.profile and mode == default_mode != "off"
        if mode == "off":
            out["skipped"].append("compile (--compile off)")
        else:
            with part("compile") as go:
                if go:
                    cold = processes(a, 1, device, mode, shared, work)
                    log(f"  first trial, empty cache: {cold['compile_seconds']:.1f} s")
                    out.update(compile_seconds=cold["compile_seconds"], trial_start_seconds=cold["start_seconds"])
                    warm = processes(a, 1, device, mode, shared, work, profile=profile_warm)
                    log(f"  a later trial, the cache the first filled: {warm['compile_seconds']:.1f} s")
                    out["compile_seconds_cached"] = warm["compile_seconds"]

        groups = []
        for n in a.processes:
            if n == 1 and warm is not None and mode == default_mode:
                groups.append(warm)  # the later compile trial ran alone, as the trainer runs by default
            else:
                with part(f"{n} trainer process{'es' if n > 1 else ''}") as go:
                    if go:
                        groups.append(processes(a, n, device, "auto", shared, work,
                                                profile=a.profile and n == 1 and not profile_warm))
                        log(f"  {groups[-1]['images_per_second']:.0f} images/s in all")
            out["processes"] = [{k: g[k] for k in ("n", "images_per_second", "per_process", "peak_memory_mb")}
                                for g in groups]
            alone = next((g for g in groups if g["n"] == 1), None)
            if alone:
                out["trainer_epoch_rates"] = alone["epoch_rates"]
                out["images_per_second"] = statistics.median(alone["epoch_rates"])
                ref = out["reference_images_per_second"]
                out["speedup"] = out["images_per_second"] / ref if ref else None
                out["profile"] = alone["profile"]
        if not a.profile:
            out["skipped"].append("profile (--no-profile)")
        elif out["profile"] and "error" not in out["profile"]:
            prof = out["profile"]
            # Of an epoch as long as the unprofiled ones: the kernels take as long, the host less.
            epoch = a.steps * a.batch / out["images_per_second"]
            prof["device_busy_fraction"] = prof["device_seconds"] / epoch if device == "cuda" else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["seconds"] = time.perf_counter() - began
    return out


def _rates(values) -> str:
    return ", ".join(f"{x:.0f}" for x in values)


def table(r: dict) -> str:
    yes = {True: "yes", False: "NO", None: "-"}
    lines = [f"GPU check: All-CNN-{r['model']} ({r['variant']}) width {r['width']}, batch {r['batch_size']} on "
             f"{r['device_name']}, torch {r['torch_version']}, {r['date']}{' (--quick)' if r['quick'] else ''}",
             "", "correctness"]
    if "losses" in r:
        losses = r["losses"]
        lines.append(f"  loss falls      {yes[r['loss_falls']]:4}  train loss {losses[0]:.4f} -> {losses[-1]:.4f} "
                     f"in {len(losses)} epochs ({r['data']})")
    if "resume_max_difference" in r:
        resume = (f"{r['resume_epochs']} epochs, a checkpoint as bytes between = {len(r['losses'])} straight, "
                  "bit for bit" if r["resume_exact"] else f"weights differ by up to {r['resume_max_difference']:.3g}")
        if r.get("repeat_exact") is not None:
            resume += f"; two straight runs {'agree' if r['repeat_exact'] else 'differ too'}"
        lines.append(f"  resume exact    {yes[r['resume_exact']]:4}  {resume}")
    if "bf16_fp32_tolerance" in r:
        bf16 = (r.get("bf16_fp32_skipped") if r["bf16_fp32_agree"] is None else
                f"largest difference of an epoch's loss {r['bf16_fp32_max_loss_difference']:.4f}, "
                f"tolerance {r['bf16_fp32_tolerance']}")
        lines.append(f"  bf16 = fp32     {yes[r['bf16_fp32_agree']]:4}  {bf16}")
    lines += ["", f"speed, images/s (speed epochs of {r['steps_per_epoch']} steps; median after warm-up)"]
    if r["reference_images_per_second"]:
        lines.append(f"  reference script  {r['reference_images_per_second']:9.0f}  runs: {_rates(r['reference_runs'])}")
    if r["images_per_second"]:
        lines.append(f"  ablate trainer    {r['images_per_second']:9.0f}  epochs: {_rates(r['trainer_epoch_rates'])}"
                     + (f"   ({r['speedup']:.2f}x the reference)" if r["speedup"] else ""))
    if r["processes"]:
        lines += ["", f"  processes at once   images/s in all   peak memory per process   each process, over "
                      f"{r['window_seconds']:g} s"]
        lines += [f"  {p['n']:>17}   {p['images_per_second']:15.0f}   {p['peak_memory_mb']:17.0f} MB   "
                  f"{_rates(p['per_process'])}" for p in r["processes"]]
    lines += ["", f"compile ({r['compile_mode']}), before a trial's first fast step"]
    if r["compile_seconds"] is not None:
        lines.append(f"  first trial, empty cache        {r['compile_seconds']:6.1f} s   "
                     f"(after {r['trial_start_seconds']:.1f} s from its process's start to its first step)")
    if r["compile_seconds_cached"] is not None:
        lines.append(f"  later trials, the cache shared  {r['compile_seconds_cached']:6.1f} s")
    if r["profile"]:
        lines += profile_table(r["profile"])
    lines += [""] + [f"skipped: {label}" for label in r["skipped"]]
    lines += [f"FAILED: {label}: {error}" for label, error in r["errors"].items()]
    lines.append(f"took {r['seconds']:.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in r["phase_seconds"].items()))
    return "\n".join(lines)


def profile_table(prof: dict) -> list[str]:
    if "error" in prof:
        return ["", f"profile of one epoch: failed ({prof['error']})"]
    lines = ["", f"profile of one epoch of a trainer process alone ({prof['epoch_seconds']:.2f} s under the "
                 f"profiler), by each operator's or kernel's own time"]
    if prof["device_busy_fraction"] is not None:
        lines.append(f"  the GPU: busy {prof['device_seconds']:.3f} s, {prof['device_busy_fraction']:.0%} of the "
                     "trainer's epoch")
        lines += _profile_rows(prof["device_ops"])
    lines.append(f"  the host: {prof['host_seconds']:.3f} s in operators")
    lines += _profile_rows(prof["host_ops"])
    if prof["trace"]:
        lines.append(f"  its trace: {prof['trace']} (chrome://tracing, Perfetto)")
    return lines


def _profile_rows(rows: list[dict]) -> list[str]:
    return [f"    {op['share']:4.0%} {op['seconds']:8.4f} s {op['calls']:6} calls  {op['name'][:90]}" for op in rows]


def record(r: dict, quick: bool) -> None:
    from workloads.allcnn import rates

    where = f"benchmarks/gpu_check.py{' --quick' if quick else ''} on {r['host']}"
    added = rates.record(r, where)
    print(f"recorded {len(added)} rates of {r['device_name']} in {rates.RATES.relative_to(ROOT)}")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cuda = torch.cuda.is_available()
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if cuda else "cpu")
    p.add_argument("--quick", action="store_true", help="the small version, for CPUs")
    p.add_argument("--model", default="C")
    p.add_argument("--variant", default="all")
    p.add_argument("--width", type=float)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, help="of the correctness runs")
    p.add_argument("--lr", type=float, default=0.01, help="of the correctness runs")
    p.add_argument("--train-size", type=int, help="images of the correctness runs, validation included")
    p.add_argument("--val-size", type=int)
    p.add_argument("--steps", type=int, help="steps per epoch of the speed runs")
    p.add_argument("--warmup", type=int, help="epochs before the timed window")
    p.add_argument("--window", type=float, help="seconds every speed run is timed over")
    p.add_argument("--processes", help="comma-separated: how many trainer processes share the device")
    p.add_argument("--compile", choices=("off", "default", "reduce-overhead"),
                   help="the mode whose compile time is measured (default: the trainer's on CUDA, default on CPU)")
    p.add_argument("--cache-dir", help="the compile cache the trainer processes share (default: a new one)")
    p.add_argument("--reference", type=Path, default=REFERENCE)
    p.add_argument("--reference-steps", type=int)
    p.add_argument("--repeats", type=int, help="runs of the reference script")
    p.add_argument("--workers", type=int, help="DataLoader workers of the reference script")
    p.add_argument("--data-dir", type=Path, default=DATA, help=f"where {SUBSET} is")
    p.add_argument("--budget", type=float, help="seconds after which no further part starts (default: 420; "
                   "--quick: none)")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="no profiled epoch after the window of the trainer process timed alone")
    p.add_argument("--trace", type=Path, help="write the profiled epoch's Chrome trace here (.json or .json.gz)")
    p.add_argument("--json", type=Path, help="also write the JSON line to this file (after each part, too)")
    p.add_argument("--record", nargs="?", const="", metavar="JSON",
                   help="record the rates in workloads/allcnn/rates.json: of this run, or of a saved JSON line")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    for key, value in (QUICK if a.quick else FULL).items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.processes = [int(n) for n in str(a.processes).split(",")]
    if a.workers is None:
        a.workers = 8 if a.device == "cuda" else 2
    if a.device == "cuda" and not cuda:
        p.error("--device cuda: torch sees no CUDA device here")
    if a.trace and not a.trace.parent.is_dir():
        p.error(f"--trace {a.trace}: no folder {a.trace.parent} to write it in")
    return a


def main(argv=None):
    a = parse(argv)
    if a.worker:
        return worker(json.loads(a.worker))
    if a.record:
        lines = [line for line in Path(a.record).read_text().splitlines() if line.startswith("{")]
        return record(json.loads(lines[-1]), json.loads(lines[-1])["quick"])
    r = run_check(a)
    print(table(r))
    line = json.dumps(r)
    if a.json:
        a.json.write_text(line + "\n")
    if a.record is not None and not r["errors"]:
        record(r, a.quick)
    print(line, flush=True)
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
