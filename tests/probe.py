"""A tiny workload for the runner's tests: trains nothing, but behaves like a trial.

It sleeps per epoch, checkpoints (every `checkpoint_every` epochs), and can fail on purpose (`fail`): `once` raises at its second
epoch the first time only, `twice` at its second and its fourth, the first time each, `always` raises every time, `kill_once` kills its own worker process,
`kill_after_record` kills it once the trial's record is written (a node lost before the trial returns),
`kill_driver_after_record` kills the driver whose pid a test wrote to `<marker_dir>/driver.pid` then, once
(a driver killed between a record and its publication),
`hang_once` stops reporting at its third epoch the first time (a deadlocked data loader).
Every start is appended to `<marker_dir>/executions.log` as `key start_epoch pid node time`, and
every finished epoch to `<marker_dir>/epochs.log`, so tests can see what ran, where and when.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from annotated_types import Ge

from workloads.base import Workload


@dataclass
class Config:
    lr: float = 0.1
    seed: int = 0
    epochs: Annotated[int, Ge(1)] = 3
    sleep: Annotated[float, Ge(0)] = 0.0
    fail: str = field(default="never", metadata={
        "choices": ("never", "once", "twice", "always", "kill_once", "kill_after_record", "kill_driver_after_record",
                    "hang_once")})
    marker_dir: str = field(default="", metadata={"identity": False})
    ballast: Annotated[int, Ge(0)] = 0  # kB of filler in each checkpoint: a trial that fills a disk
    target: float = 0.0  # the best lr: val_error grows with the distance to it
    spike_lr: float = -1.0  # the lr whose val_error at epoch 2 is 1 worse: one noisy evaluation
    checkpoint_every: Annotated[int, Ge(1)] = 1  # epochs between checkpoints


def _node() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "-"
    except Exception:
        return "-"


def train(config: Config, session) -> dict:
    key = f"lr{config.lr}-seed{config.seed}-{config.fail}" + (f"-target{config.target}" if config.target else "")
    markers = Path(config.marker_dir)
    state = session.restore() or {"epoch": 0}
    with open(markers / "executions.log", "a") as f:
        f.write(f"{key} {state['epoch']} {os.getpid()} {_node()} {time.time()}\n")
    for epoch in range(state["epoch"], config.epochs):
        time.sleep(config.sleep)
        first_time = not (markers / f"{key}.failed").exists()
        if epoch == 1 and config.fail in ("once", "kill_once") and first_time:
            (markers / f"{key}.failed").touch()
            if config.fail == "kill_once":
                # The last epoch's checkpoint is written in the background: on storage first, so that the
                # retry resumes after it whatever the machine's load (a kill before then loses that epoch).
                getattr(session, "flush", lambda: None)()
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure")
        if epoch in (1, 3) and config.fail == "twice" and not (markers / f"{key}.failed{epoch + 1}").exists():
            (markers / f"{key}.failed{epoch + 1}").touch()
            raise RuntimeError(f"injected failure at epoch {epoch + 1}")
        if epoch == 2 and config.fail == "hang_once" and first_time:
            (markers / f"{key}.failed").touch()
            time.sleep(3600)
        if epoch == 1 and config.fail == "always":
            raise RuntimeError("this trial always fails")
        state = {"epoch": epoch + 1, "ballast": "x" * (1024 * config.ballast)}
        with open(markers / "epochs.log", "a") as f:
            f.write(f"{key} {epoch + 1} {time.time()}\n")
        # Better with more epochs and with an lr nearer the target: something for a scheduler to compare.
        spike = 1.0 if config.lr == config.spike_lr and epoch + 1 == 2 else 0.0
        session.report({"epoch": epoch + 1, "val_error": abs(config.lr - config.target) + 1 / (epoch + 2) + spike},
                       checkpoint=state if (epoch + 1) % config.checkpoint_every == 0 or session.pauses_at_next_report()
                       else None)
    if config.fail in ("kill_after_record", "kill_driver_after_record"):
        log = session.log

        def dying(line):  # run_trial logs "finished: ..." right after writing the record
            driver = markers / "driver.pid"
            if line.startswith("finished:") and config.fail == "kill_after_record":
                os.kill(os.getpid(), signal.SIGKILL)
            if line.startswith("finished:") and config.fail == "kill_driver_after_record" and driver.exists():
                pid = int(driver.read_text())
                driver.unlink()
                os.kill(pid, signal.SIGKILL)
            log(line)

        session.log = dying
    # top5_error: a metric no column of ablate's is named for, as a workload of a user's returns.
    return {"status": "completed", "val_error": 1 / (config.epochs + 1), "test_error": config.lr,
            "top5_error": config.lr / 2}


WORKLOAD = Workload(name="probe", config=Config, train=train, epochs=lambda c: c.epochs)


class KilledAsItStarts:
    """Stands in for run_trial in the runner (monkeypatched): the first Ray worker that loads the trial's
    trainable, as its actor is created and before the trial begins, is killed with SIGKILL, as the
    kernel's OOM killer does to a worker whose imports take the node's last memory. `marker`: once."""

    __name__ = "run_trial"

    def __init__(self, marker: str, driver: int | None = None):
        self.marker, self.driver = marker, driver or os.getpid()

    def __call__(self, *args, **kwargs):
        from orchestrator.run.trial import run_trial

        return run_trial(*args, **kwargs)

    def __reduce__(self):  # Tune loads the trainable in the driver too, and sends workers what it loaded
        return _loaded, (self.marker, self.driver)


def _loaded(marker: str, driver: int) -> KilledAsItStarts:
    if os.getpid() != driver and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return KilledAsItStarts(marker, driver)
