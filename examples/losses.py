"""A plain training script that knows nothing of ablate: polynomial regression by minibatch SGD,
printing its losses every 100 steps as a person would read them,

    step 500 train loss: 0.2311 val loss: 0.2498 test loss: 0.2531

and keeping a checkpoint in --out, from which it continues when given --resume.

    python losses.py --lr 0.05 --degree 3 --steps 1001 --seed 0 --out /tmp/run
"""
import argparse
import json
import os

import numpy as np


def data(seed: int, n: int, degree: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    y = np.sin(3 * x) + 0.1 * rng.normal(size=n)
    return np.stack([x ** k for k in range(degree + 1)], axis=1), y


def loss(w, x, y) -> float:
    return float(np.mean((x @ w - y) ** 2))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--degree", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=".")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    args = parser.parse_args()

    x_train, y_train = data(1000, 512, args.degree)  # the same data for every seed; the seed is the init and order
    x_val, y_val = data(2000, 256, args.degree)
    x_test, y_test = data(3000, 256, args.degree)
    checkpoint = os.path.join(args.out, "checkpoint.json")
    w, start = np.random.default_rng(args.seed).normal(scale=0.1, size=args.degree + 1), 0
    if args.resume:
        with open(checkpoint) as f:
            saved = json.load(f)
        w, start = np.array(saved["w"]), saved["step"]
    for step in range(start, args.steps):
        batch = np.random.default_rng([args.seed, step]).integers(0, len(y_train), 32)
        xb, yb = x_train[batch], y_train[batch]
        w -= args.lr * 2 * xb.T @ (xb @ w - yb) / len(yb)
        if step % 100 == 0:
            with open(checkpoint + ".tmp", "w") as f:
                json.dump({"w": w.tolist(), "step": step + 1}, f)
            os.replace(checkpoint + ".tmp", checkpoint)
            print(f"step {step} train loss: {loss(w, x_train, y_train):.4f} val loss: {loss(w, x_val, y_val):.4f} "
                  f"test loss: {loss(w, x_test, y_test):.4f}", flush=True)


if __name__ == "__main__":
    main()
