"""The trainer, without Ray: learning on synthetic and real images, exact resume, divergence,
dead starts and their restarts."""
from __future__ import annotations

import math
import re

import pytest
import torch

from workloads.allcnn import Config
from workloads.allcnn.data import prepare
from workloads.allcnn.models import build, count_params
from workloads.allcnn.train import restart_seed, train
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
    config = Config(**SMALL, model="A", variant="base", epochs=3, lr=0.01, lr_milestones=[2])
    session = MemorySession()
    result = train(config, session)
    assert [e["epoch"] for e in session.epochs] == [1, 2, 3]
    assert [e["lr"] for e in session.epochs] == pytest.approx([0.01, 0.01, 0.001])  # x0.1 after epoch 2
    for e in session.epochs:
        assert set(e) == {"epoch", "train_loss", "train_error", "val_error", "lr", "images_per_second", "seconds",
                          "restart"}
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


def test_a_network_that_does_not_learn_stops_as_no_progress(data_dir):
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

    class Pausing(Counting):  # pauses at epoch 3, a rung of halving: it goes on from there
        def pauses_at_next_report(self):
            return len(self.epochs) + 1 == 3

    session = Pausing()
    session.saved = []
    train(Config(**SMALL, model="A", variant="base", epochs=5, checkpoint_every=2), session)
    assert session.saved == [2, 3, 4, 5]


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


def test_the_networks_learn_real_photos(real_images):
    # 2,500 real CIFAR-10 photos: All-CNN-C at quarter width is well above chance after 3 CPU epochs
    # (measured 75.6% test error; chance is 90%, +-1.3% on 500 test images).
    config = Config(model="C", variant="all", dataset="cifar10-subset", width=0.25, epochs=3, lr=0.02,
                    lr_milestones=[], batch_size=32, train_size=3000, val_size=500, test_size=500,
                    dropout_input=0.0, dropout_hidden=0.0, device="cpu")
    session = MemorySession()
    result = train(config, session)
    assert result["status"] == "completed"
    assert result["test_error"] < 0.82
    assert result["synthetic_data"] is False
    assert (result["train_examples"], result["test_examples"]) == (2500, 500)


LN_10 = math.log(10)
# A-base at lr 0.02 dies in its second epoch on this data with seed 0 and with the seed of its first
# restart, and learns with the seed of its second: a real dead start, in a second of CPU.
DYING = dict(SMALL, model="A", variant="base", lr=0.02, seed=0)
DEAD = ("dead start in epoch 2: every class output was 0 in every batch (train loss 2.3026 = ln 10), "
        "so no gradient reached any weight")


def test_a_dead_start_is_stopped_at_its_first_dead_epoch(data_dir):
    session = MemorySession()
    result = train(Config(**DYING, epochs=30), session)
    assert result["status"] == "dead_start" and result["restarts"] == 0
    assert result["epochs_completed"] == 2 and len(session.epochs) == 2  # not no_progress_epochs (20) later
    assert session.epochs[1]["train_loss"] == pytest.approx(LN_10, abs=1e-6)
    assert result["test_error"] is None
    assert result["status_reason"] == DEAD and session.lines == [DEAD]


def test_a_dead_network_gets_no_gradient_and_sgd_only_decays_its_weights(data_dir):
    session = MemorySession()
    train(Config(**DYING, epochs=30), session)
    net = build("A", "base", 10, 0.125)
    net.load_state_dict(session.checkpoint["model"])
    data = prepare("synthetic", train_size=600, val_size=100, test_size=200)
    logits = net(data.x_train[:64])
    loss = torch.nn.functional.cross_entropy(logits, data.y_train[:64])
    assert torch.equal(logits, torch.zeros(64, 10)) and loss.item() == pytest.approx(LN_10, abs=1e-6)
    loss.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in net.parameters())  # 0, not small

    # What a step still does, with momentum left from live steps: every weight follows the same
    # linear map, buf <- 0.9 buf + 0.001 w, w <- w - lr buf. Nothing else moves it.
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=0.001)
    for p in net.parameters():
        optimizer.state[p]["momentum_buffer"] = torch.randn_like(p)
    before = {p: (p.detach().clone(), optimizer.state[p]["momentum_buffer"].clone()) for p in net.parameters()}
    optimizer.step()
    for p, (w, buf) in before.items():
        assert torch.allclose(p, w - 0.02 * (0.9 * buf + 0.001 * w), rtol=0, atol=1e-7)


def test_a_dead_start_stays_dead_when_training_goes_on(data_dir):
    # The claim behind stopping at the first dead epoch: weight decay and the momentum left over
    # never bring a class output back above 0. Here: eight more epochs, as if detection were off.
    session = MemorySession()
    train(Config(**DYING, epochs=30), session)
    for epoch in range(3, 11):
        session.checkpoint["status"] = "completed"
        train(Config(**DYING, epochs=epoch), session)
    assert [e["epoch"] for e in session.epochs] == list(range(1, 11))
    assert all(e["train_loss"] == pytest.approx(LN_10, abs=1e-6) for e in session.epochs[1:])
    assert session.lines == [DEAD.replace("epoch 2", f"epoch {e}") for e in range(2, 11)]


def test_a_dead_start_restarts_from_a_derived_seed_as_that_fresh_trial(data_dir):
    config = Config(**DYING, epochs=3, lr_milestones=[2], dead_start_restarts=3)
    session = MemorySession()
    result = train(config, session)
    assert result["status"] == "completed" and result["restarts"] == 2 and result["status_reason"] is None
    # The dead epochs stay in the curve; the last start runs the whole protocol, schedule included.
    assert [(e["epoch"], e["restart"]) for e in session.epochs] == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2), (7, 2)]
    assert [e["lr"] for e in session.epochs[4:]] == pytest.approx([0.02, 0.02, 0.002])
    assert result["epochs_completed"] == 3 and result["test_error"] < 0.9
    # Each reason names the epoch as the curve shows it: the second start died in its second epoch, epoch 4.
    assert session.lines == [f"{DEAD.replace('epoch 2', f'epoch {e}')}; restart {k} of 3 from fresh weights "
                             f"(seed {restart_seed(0, k)})" for k, e in ((1, 2), (2, 4))]
    # The restart is exactly the trial its seed would have been: reproducible from the config alone.
    fresh = MemorySession()
    train(Config(**{**DYING, "seed": restart_seed(0, 2)}, epochs=3, lr_milestones=[2]), fresh)
    a, b = session.checkpoint["model"], fresh.checkpoint["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_restarts_are_counted_and_the_last_dead_one_is_the_result(data_dir):
    session = MemorySession()
    result = train(Config(**DYING, epochs=30, dead_start_restarts=1), session)
    assert result["status"] == "dead_start" and result["restarts"] == 1
    assert [(e["epoch"], e["restart"]) for e in session.epochs] == [(1, 0), (2, 0), (3, 1), (4, 1)]
    # The epoch of the reason is the curve's (epochs.parquet), not the second start's own second.
    dead = DEAD.replace("epoch 2", "epoch 4")
    assert result["status_reason"] == dead and session.lines[-1] == dead


def test_no_progress_after_a_restart_says_which_epochs(data_dir, monkeypatch):
    import workloads.allcnn.train

    monkeypatch.setattr(workloads.allcnn.train, "CHANCE_MARGIN", 10)  # no accuracy is progress enough
    session = MemorySession()
    result = train(Config(**DYING, epochs=30, dead_start_restarts=2, no_progress_epochs=2), session)
    assert result["status"] == "no_progress" and [e["epoch"] for e in session.epochs][-1] == 6
    assert re.fullmatch(r"best train accuracy \d+\.\d% in 2 epochs since restart 2 \(epochs 5-6\), below 10 x chance "
                        r"\(10%\)", result["status_reason"])


def test_a_resumed_trial_continues_its_restart(data_dir):
    config = Config(**DYING, epochs=3, dead_start_restarts=2, checkpoint_every=2)
    straight = MemorySession()
    train(config, straight)
    first = InterruptedSession(after=4)  # killed right after the second dead epoch and its restart
    with pytest.raises(Interrupted):
        train(config, first)
    resumed = MemorySession(checkpoint=first.checkpoint)
    result = train(config, resumed)
    assert result["restarts"] == 2
    assert [(e["epoch"], e["restart"]) for e in resumed.epochs] == [(5, 2), (6, 2), (7, 2)]
    a, b = straight.checkpoint["model"], resumed.checkpoint["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_restart_seeds_are_deterministic_and_no_other_trials_seed():
    assert restart_seed(7, 0) == 7
    derived = {restart_seed(s, k) for s in range(100) for k in range(1, 4)}
    assert len(derived) == 300 and not derived & set(range(10_000))
    assert all(0 <= d < 2**63 for d in derived)
