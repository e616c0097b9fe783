"""Training speed of ablate's trainer against the typical user script, same run, same machine.

The reference is ../shared/bench/reference_train.py (DataLoader workers with PIL transforms,
fp32, eager). Both train the same network at the same width and batch size on CIFAR-shaped
data with flips and 4-pixel translations; each is measured `--repeats` times after a warm-up
and the median images/s is reported, with the ratio.

    python benchmarks/trainer_vs_reference.py                     # CPU defaults: small and quick
    python benchmarks/trainer_vs_reference.py --width 1.0 --steps 200 --repeats 5   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workloads.allcnn import Config  # noqa: E402
from workloads.allcnn.train import train  # noqa: E402
from workloads.base import MemorySession  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "bench" / "reference_train.py"


def ours(a) -> list[float]:
    """Images/s of each epoch after the first (the warm-up: compilation, CUDA graph capture)."""
    config = Config(model=a.model, variant=a.variant, width=a.width, batch_size=a.batch, dataset="synthetic",
                    augmentation="standard", translate=4, train_size=a.steps * a.batch + 10, val_size=10,
                    test_size=10, epochs=a.repeats + 1, lr_milestones=[], no_progress_epochs=0,
                    checkpoint_every=0, device=a.device, compile=a.compile, lr=0.01)
    session = MemorySession()
    train(config, session)
    return [e["images_per_second"] for e in session.epochs[1:]]


def reference(a) -> list[float]:
    rates = []
    for _ in range(a.repeats):
        out = subprocess.run([sys.executable, str(REFERENCE), "--model", a.model, "--variant", a.variant,
                              "--width", str(a.width), "--batch", str(a.batch), "--steps", str(a.steps),
                              "--workers", str(a.workers), "--device", a.device],
                             capture_output=True, text=True, check=True)
        rates.append(json.loads(out.stdout.strip().splitlines()[-1])["images_per_second"])
    return rates


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    gpu = torch.cuda.is_available()
    p.add_argument("--model", default="C")
    p.add_argument("--variant", default="all")
    p.add_argument("--width", type=float, default=1.0 if gpu else 0.25)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=200 if gpu else 30, help="steps per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=8 if gpu else 2, help="DataLoader workers of the reference")
    p.add_argument("--compile", default="auto", help="ablate's compile mode (auto: CUDA graphs on CUDA)")
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    a = p.parse_args()
    if not REFERENCE.exists():
        sys.exit(f"error: {REFERENCE}: the reference script is missing")

    ref, mine = reference(a), ours(a)
    r, m = statistics.median(ref), statistics.median(mine)
    device = torch.cuda.get_device_name() if a.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"All-CNN-{a.model} variant={a.variant} width={a.width} batch={a.batch} on {device}, "
          f"median of {a.repeats} x {a.steps} steps")
    print(f"  reference script   {r:10.0f} images/s   runs: {', '.join(f'{x:.0f}' for x in ref)}")
    print(f"  ablate trainer     {m:10.0f} images/s   runs: {', '.join(f'{x:.0f}' for x in mine)}")
    print(f"  ratio              {m / r:10.2f} x")
    print(json.dumps({"device": device, "reference": r, "ablate": m, "ratio": m / r, "width": a.width,
                      "batch": a.batch, "steps": a.steps, "repeats": a.repeats}))


if __name__ == "__main__":
    main()
