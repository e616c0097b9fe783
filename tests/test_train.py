"""The trainer, without Ray: learning, exact resume, divergence and dead starts."""
from __future__ import annotations

import math

import pytest
import torch

from workloads.allcnn import Config
from workloads.allcnn.models import build, count_params
from workloads.allcnn.train import train
from workloads.base import MemorySession

SMALL = dict(dataset="synthetic", width=0.125, batch_size=32, train_size=600, val_size=100, test_size=200,
             device="cpu")


class Interrupted(Exception):
    pass


class InterruptedSession(MemorySession):
    """Dies right after the epoch-`after` checkpoint, as a killed worker would."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def report(self, metrics, checkpoint=None):
        super().report(metrics, checkpoint)
        if metrics["epoch"] == self.after:
            raise Interrupted


def test_a_small_net_learns_synthetic_data_within_a_few_cpu_epochs(data_dir):
    config = Config(**{**SMALL, "train_size": 1200, "test_size": 300}, model="A", variant="all", lr=0.01,
                    epochs=4, dropout_input=0.0, dropout_hidden=0.0)
    session = MemorySession()
    result = train(config, session)
    assert result["status"] == "completed"
    assert result["test_error"] < 0.5  # chance is 0.9
    assert session.epochs[-1]["val_error"] < session.epochs[0]["val_error"]


def test_every_epoch_is_reported_with_its_metrics(data_dir):
    config = Config(**SMALL, model="A", variant="base", epochs=3, lr=0.02, lr_milestones=[2])
    session = MemorySession()
    result = train(config, session)
    assert [e["epoch"] for e in session.epochs] == [1, 2, 3]
    assert [e["lr"] for e in session.epochs] == pytest.approx([0.02, 0.02, 0.002])  # x0.1 after epoch 2
    for e in session.epochs:
        assert set(e) == {"epoch", "train_loss", "train_error", "val_error", "lr", "images_per_second", "seconds"}
        assert 0 <= e["val_error"] <= 1 and e["images_per_second"] > 0
    assert result["params"] == count_params(build("A", "base", 10, 0.125))
    assert result["epochs_completed"] == 3 and result["trained_on"] == "cpu"
    assert 0 <= result["test_error"] <= 1


def test_resume_from_a_checkpoint_gives_identical_weights(data_dir):
    # Augmentation and dropout on: the data order, the augmentation and the dropout masks must
    # all continue exactly where they stopped.
    config = Config(**SMALL, model="C", variant="all", augmentation="standard", epochs=4, lr=0.01, lr_milestones=[3])
    straight = MemorySession()
    train(config, straight)

    first = InterruptedSession(after=2)
    with pytest.raises(Interrupted):
        train(config, first)
    resumed = MemorySession(checkpoint=first.checkpoint)
    result = train(config, resumed)

    assert [e["epoch"] for e in resumed.epochs] == [3, 4]
    assert result["epochs_completed"] == 4
    a, b = straight.checkpoint["model"], resumed.checkpoint["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["train_loss"] for e in straight.epochs[2:]] == [e["train_loss"] for e in resumed.epochs]


def test_a_finished_trial_resumed_does_not_train_again(data_dir):
    config = Config(**SMALL, model="A", variant="base", epochs=2, lr=0.01)
    session = MemorySession()
    first = train(config, session)
    again = MemorySession(checkpoint=session.checkpoint)
    second = train(config, again)
    assert again.epochs == [] and second["epochs_completed"] == 2
    assert second["test_error"] == first["test_error"]


def test_exploding_loss_stops_the_trial_as_diverged(data_dir):
    config = Config(**SMALL, model="A", variant="all", lr=1e4, epochs=10, dropout_input=0, dropout_hidden=0)
    session = MemorySession()
    result = train(config, session)
    assert result["status"] == "diverged"
    assert result["epochs_completed"] < 10 and result["test_error"] is None
    assert not math.isfinite(session.epochs[-1]["train_loss"])
    assert session.checkpoint is not None  # the curve up to the divergence is kept


def test_a_dead_start_stops_the_trial_as_no_progress(data_dir):
    config = Config(**SMALL, model="A", variant="base", lr=0.0, epochs=10, no_progress_epochs=2)
    session = MemorySession()
    result = train(config, session)
    assert result["status"] == "no_progress"
    assert result["epochs_completed"] == 2 and len(session.epochs) == 2
    assert result["test_error"] is None


def test_no_progress_check_can_be_switched_off(data_dir):
    config = Config(**SMALL, model="A", variant="base", lr=0.0, epochs=3, no_progress_epochs=0)
    assert train(config, MemorySession())["status"] == "completed"


def test_checkpoint_frequency_is_configurable(data_dir):
    class Counting(MemorySession):
        saved: list

        def report(self, metrics, checkpoint=None):
            super().report(metrics, checkpoint)
            if checkpoint is not None:
                self.saved.append(metrics["epoch"])

    session = Counting()
    session.saved = []
    train(Config(**SMALL, model="A", variant="base", epochs=5, checkpoint_every=2), session)
    assert session.saved == [2, 4, 5]  # and always the last epoch


@pytest.mark.parametrize("fast_path", [{"channels_last": False}, {"compile": "default"}], ids=["channels_last", "compile"])
def test_each_fast_path_can_be_switched_and_trains_the_same(data_dir, fast_path):
    # Dropout off: a compiled graph draws its dropout masks from another random stream.
    base = dict(SMALL, model="A", variant="all", epochs=2, lr=0.01, dropout_input=0.0, dropout_hidden=0.0)
    reference, other = MemorySession(), MemorySession()
    train(Config(**base), reference)
    train(Config(**base, **fast_path), other)
    assert [e["train_loss"] for e in other.epochs] == pytest.approx([e["train_loss"] for e in reference.epochs], rel=1e-3)
    a, b = reference.checkpoint["model"], other.checkpoint["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)
