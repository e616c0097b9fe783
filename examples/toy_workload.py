"""A user's own workload in a dozen lines: fit y = w * x by gradient descent.

Run it with `ablate run examples/toy.yaml` (from the repository root, so that `examples` imports).
"""
from dataclasses import dataclass
from typing import Annotated

from annotated_types import Ge, Interval

from workloads.base import Workload


@dataclass
class Config:
    lr: Annotated[float, Interval(gt=0, lt=1)] = 0.1  # at 1 and above, w oscillates or diverges instead of settling at 3
    steps: Annotated[int, Ge(1)] = 20
    seed: int = 0


def train(config, session):
    w = float(config.seed)  # a different start per seed
    for step in range(1, config.steps + 1):
        w -= config.lr * 2 * (w - 3.0)  # gradient of (w - 3)^2
        session.report({"epoch": step, "val_error": (w - 3.0) ** 2})
    return {"status": "completed", "val_error": (w - 3.0) ** 2, "test_error": (w - 3.0) ** 2}


# `epochs`: how many reports a trial makes, for the progress display and ETAs.
WORKLOAD = Workload(name="toy", config=Config, train=train, epochs=lambda config: config.steps)
