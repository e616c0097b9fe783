"""What `ablate run` shows: counts, ETA, the live table and plain lines."""
from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from orchestrator.run.display import LiveDisplay, PlainDisplay, duration


def console(terminal=False):
    return Console(file=io.StringIO(), width=160, force_terminal=terminal)


def test_plain_display_prints_one_line_per_event():
    out = console()
    p = PlainDisplay(out, total=2, skipped=1, planned_epochs={"a": 10, "b": 10})
    p.trial_started("a", {"model": "C", "lr": 0.1})
    p.trial_result("a", {"epoch": 1, "val_error": 0.5})
    p.trial_retrying("a")
    p.trial_finished("a", "completed", "model=C lr=0.1 -> test_error 0.1")
    text = out.file.getvalue().splitlines()
    assert text == ["[0/2] a started: model=C lr=0.1", "[0/2] a retrying: after a failure, from its last checkpoint",
                    "[1/2] a completed: model=C lr=0.1 -> test_error 0.1"]
    assert p.counts_line().startswith("1/2 done, 0 running, 1 pending, 1 already done | elapsed 0:00, ETA ")


def test_plain_display_says_how_far_running_trials_are_every_few_minutes():
    p = PlainDisplay(console(), total=6, skipped=0, planned_epochs={t: 10 for t in "abcdef"})
    for t in "abcdef":
        p.trial_started(t, {})
    p.trial_result("a", {"epoch": 1})
    assert "progress" not in p.console.file.getvalue()  # not before its interval
    p.progress_every_s = 0
    p.trial_result("b", {"epoch": 2})
    last = p.console.file.getvalue().splitlines()[-1]
    assert last.startswith("[0/6] progress: 0/6 done, 6 running, 0 pending | elapsed 0:00, ETA ")
    assert last.endswith(" | at a 1/10, b 2/10, c 0/10, d 0/10, 2 more")


def test_eta_counts_the_epochs_left():
    p = PlainDisplay(console(), total=2, skipped=0, planned_epochs={"a": 10, "b": 10})
    p.started -= 100  # 100 s ago
    p.trial_started("a", {})
    for epoch in range(1, 6):
        p.trial_result("a", {"epoch": epoch})
    assert p.eta() == pytest.approx(100 * 15 / 5, rel=1e-3)  # 5 epochs took 100 s; 15 are left
    p.trial_finished("a", "diverged", "")  # stopped early: its last 5 epochs will never run
    assert p.eta() == pytest.approx(100 * 10 / 5, rel=1e-3)
    assert "1 diverged" in p.counts_line()


def test_the_eta_of_a_run_with_halving_counts_the_epochs_halving_trains():
    # 4 trials of 8 epochs, at most 16 with halving (ablate plan): the run's ETA counted 32, so it
    # said three times the time left once every trial had reached the rung at 2, where 8 are left.
    p = PlainDisplay(console(), total=4, skipped=0, planned_epochs={t: 8 for t in "abcd"})
    p.halved(16)
    p.started -= 80
    for t in "abcd":
        p.trial_started(t, {})
        p.trial_result(t, {"epoch": 1})
        p.trial_result(t, {"epoch": 2})
    assert p.eta() == pytest.approx(80 * 8 / 8, rel=1e-3)
    p.trial_finished("c", "stopped", "stopped by halving at 2: ...", rung=2)  # those 8 never counted its last 6
    p.trial_finished("d", "stopped", "stopped by halving at 2: ...", rung=2)
    assert p.eta() == pytest.approx(80 * 8 / 8, rel=1e-3)
    p.trial_finished("b", "diverged", "")  # ended early itself: its last 6 never come
    assert p.eta() == pytest.approx(80 * 2 / 8, rel=1e-3)


def test_a_trial_left_unfinished_before_it_started_counts_no_epochs_left_and_is_not_pending():
    # Its reused worker died while idle: it never runs in this run (the next `ablate run` runs it).
    p = PlainDisplay(console(), total=3, skipped=0, planned_epochs={"a": 10, "b": 10, "c": 10})
    p.started -= 100
    p.trial_started("a", {})
    for epoch in range(1, 6):
        p.trial_result("a", {"epoch": epoch})
    p.trial_unfinished("b", "its worker died before it could start; the next `ablate run` runs it")
    assert p.eta() == pytest.approx(100 * 15 / 5, rel=1e-3)  # a's last 5 and c's 10, not b's
    assert p.counts_line().startswith("0/3 done, 1 running, 1 pending, 1 unfinished | ")


def test_a_resumed_trial_counts_one_epoch_of_work_not_its_whole_history():
    p = PlainDisplay(console(), total=1, skipped=0, planned_epochs={"a": 10})
    p.started -= 10
    p.trial_started("a", {})
    p.trial_result("a", {"epoch": 6})  # resumed after epoch 5
    assert p.epochs_trained == 1 and p.epochs_left == 4


def test_a_retried_trial_is_shown_where_its_checkpoint_is_as_a_retry():
    # Its next attempt showed it at 0/10 without "(retry 1)", and took its first report (epoch 5)
    # for 5 epochs trained: the ETA counted its first 4 twice.
    live = LiveDisplay(console(terminal=True), total=1, skipped=0, planned_epochs={"a": 10})
    live.trial_started("a", {"lr": 0.1})
    for epoch in range(1, 5):
        live.trial_result("a", {"epoch": epoch})
    live.trial_retrying("a")
    live.trial_started("a", {"lr": 0.1})  # its next attempt, from its checkpoint after epoch 4
    render = console()
    render.print(live.render())
    assert re.search(r"lr=0\.1 \(retry 1\) +4/10 ", render.file.getvalue())
    live.trial_result("a", {"epoch": 5})
    assert (live.epochs_trained, live.epochs_left) == (5, 5)


def test_live_table_shows_running_trials_with_epoch_and_metrics():
    out = console(terminal=True)
    p = LiveDisplay(out, total=3, skipped=0, planned_epochs={"a": 350, "b": 350, "c": 350},
                    metrics=("train_loss", "val_error", "images_per_second"))
    p.trial_started("a", {"model": "C", "variant": "all"})
    p.trial_result("a", {"epoch": 12, "train_loss": 1.25, "val_error": 0.4321, "images_per_second": 61234.0})
    render = console()
    render.print(p.render())
    text = render.file.getvalue()
    assert "0/3 done, 1 running, 2 pending" in text
    assert "model=C variant=all" in text and "12/350" in text and "0.4321" in text and "61234" in text
    assert "images_per_second" in text  # the columns are the workload's metrics


def test_live_table_shows_only_the_metrics_the_workload_names():
    p = LiveDisplay(console(terminal=True), total=1, skipped=0, planned_epochs={"a": None}, metrics=("accuracy",))
    p.trial_started("a", {"lr": 0.1})
    p.trial_result("a", {"epoch": 3, "accuracy": 0.875, "train_loss": 9.5})
    render = console()
    render.print(p.render())
    text = render.file.getvalue()
    assert "accuracy" in text and "0.8750" in text and "3/?" in text
    assert "train_loss" not in text and "9.5" not in text


def test_duration_format():
    assert [duration(s) for s in (None, 59, 61, 3600 * 26 + 5)] == ["-", "0:59", "1:01", "26:00:05"]


def test_a_script_that_reports_steps_shows_its_progress_in_steps():
    live = LiveDisplay(console(terminal=True), total=1, skipped=0, planned_epochs={"a": 1001}, metrics=("val_loss",),
                       unit="step")
    live.trial_started("a", {"lr": 0.1})
    live.trial_result("a", {"step": 400, "loss": 0.3})
    live.trial_result("a", {"epoch": 1, "step": 500, "val_loss": 0.2498})  # an epoch among steps is at its step
    out = console()
    out.print(live.render())
    assert "500/1001" in out.file.getvalue() and "0.2498" in out.file.getvalue()
    assert re.search(r"trial +cell +step +val_loss", out.file.getvalue())  # headed as `ablate status` heads it
