"""Trials that hang (orchestrator/run/hangs.py): which attempts are overdue, on a clock the test moves."""
from __future__ import annotations

from orchestrator.run.hangs import Hangs


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_an_attempt_past_its_trial_timeout_is_overdue_once_and_a_retry_starts_its_clock_again():
    clock = Clock()
    hangs = Hangs(timeout_s=60, planned={"t": 10}, clock=clock)
    hangs.started("t")
    clock.now = 59
    assert hangs.overdue() == []
    clock.now = 61
    assert hangs.overdue() == [("t", "timed out after 60 s (trial_timeout)")]
    assert hangs.overdue() == []  # named once: it is being ended
    hangs.started("t")  # the retry: the timeout is per attempt
    clock.now = 120
    assert hangs.overdue() == []


def test_silence_far_longer_than_the_slowest_epoch_is_a_hang():
    clock = Clock()
    hangs = Hangs(timeout_s=None, planned={"t": 10}, clock=clock, silent_factor=10, silent_min_s=60)
    hangs.started("t")
    for epoch in (1, 2, 3):  # the first epoch includes start-up: 30 s, then 5 s each
        clock.now += 30 if epoch == 1 else 5
        hangs.reported("t", epoch)
    clock.now += 300  # 10 x the slowest gap so far (30 s)
    assert hangs.overdue() == []
    clock.now += 1
    assert hangs.overdue() == [("t", "reported nothing for 301 s after epoch 3, more than 10 times its slowest "
                                     "epoch so far (30.0 s): taken for hung")]


def test_silence_is_not_judged_where_it_could_be_honest_work():
    clock = Clock()
    hangs = Hangs(timeout_s=None, planned={"first": 10, "last": 2, "short": 10, "unknown": None}, clock=clock,
                  silent_factor=10, silent_min_s=60)
    for trial in ("first", "last", "short", "unknown"):
        hangs.started(trial)
    clock.now = 1
    for trial in ("last", "short", "unknown"):
        hangs.reported(trial, 1)
    clock.now = 2
    for trial in ("last", "short", "unknown"):
        hangs.reported(trial, 2)
    # "first" has reported nothing (start-up, data loading); "last" reported its last planned epoch
    # (a final evaluation follows); "unknown" does not say how many epochs it makes; "short" has
    # 1 s epochs, and 10 x 1 s is below the floor of 60 s.
    clock.now = 50
    assert hangs.overdue() == []
    clock.now = 63
    assert hangs.overdue() == [("short", "reported nothing for 61 s after epoch 2, more than 10 times its slowest "
                                         "epoch so far (1.0 s): taken for hung")]
