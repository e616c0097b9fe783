"""Train a small MLP on handwritten digits: a plain training script that knows nothing of ablate.

    python digits.py --lr 0.1 --hidden 64 --epochs 10 --seed 0 --out /tmp/digits

The data is scikit-learn's bundled 8x8 digits (1,797 images, no download), split once into
train / validation / test. Each epoch prints one line, `ABLATE {"epoch": 1, "train_loss": ...,
"val_error": ...}`, and the end one more with the test error. Every epoch's state (model,
optimizer, RNG) is saved to OUT/checkpoint.pt; started again with the same OUT, the script
continues after the last saved epoch, so a retried run loses at most one epoch.

`examples/script.yaml` runs a grid over it with ablate, unchanged.
"""
import argparse
import json
import os
import signal
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn


def report(**metrics):
    print("ABLATE " + json.dumps(metrics), flush=True)


def data():
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))  # the same split for every run
    x, y = x[order], y[order]
    return (x[:1197], y[:1197]), (x[1197:1497], y[1197:1497]), (x[1497:], y[1497:])


def error(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) != y).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.environ.get("ABLATE_TRIAL_DIR", "."), help="checkpoints go here")
    parser.add_argument("--crash-once-at-epoch", type=int, default=0,
                        help="kill this process (SIGKILL) when it reaches this epoch the first time: "
                             "to see a retried run resume from its checkpoint")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    (x, y), (x_val, y_val), (x_test, y_test) = data()
    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    start = 0
    if checkpoint.exists():
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["epoch"]
        print(f"resuming after epoch {start} from {checkpoint}", flush=True)

    for epoch in range(start + 1, args.epochs + 1):
        if epoch == args.crash_once_at_epoch and not (out / "crashed-once").exists():
            (out / "crashed-once").touch()
            os.kill(os.getpid(), signal.SIGKILL)
        model.train()
        losses = []
        for batch in torch.randperm(len(x)).split(args.batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        # Saved before the epoch is reported: whoever reads the report can count on the checkpoint.
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                    "epoch": epoch}, checkpoint.with_suffix(".tmp"))
        checkpoint.with_suffix(".tmp").replace(checkpoint)
        report(epoch=epoch, train_loss=sum(losses) / len(losses), val_error=error(model, x_val, y_val))
    report(test_error=error(model, x_test, y_test))


if __name__ == "__main__":
    main()
