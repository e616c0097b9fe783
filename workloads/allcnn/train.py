"""One trial of the All-CNN study: train a network with the paper's protocol, report each epoch.

    from workloads.allcnn import Config
    from workloads.allcnn.train import train
    from workloads.base import MemorySession
    result = train(Config(dataset="synthetic", width=0.25, epochs=3, train_size=2000), MemorySession())

The whole dataset lives on the training device and is augmented there a batch at a time: no
DataLoader, no worker processes, no per-image Python. On CUDA the step runs in bf16 autocast with
channels_last and is compiled with CUDA graphs (`compile="reduce-overhead"`), because at the
paper's batch of 128 one trial is bound by kernel launches, not by the GPU (benchmarks/README.md).
"""
from __future__ import annotations

import hashlib
import math
import time

import torch
import torch.nn.functional as F

from workloads.allcnn.data import augment, prepare
from workloads.allcnn.models import build, count_params, init_weights

# A trial that never beats this many times chance accuracy has not started learning (PAPER.md:
# large learning rates without batch norm often leave the loss stuck at ln K).
CHANCE_MARGIN = 1.5

# Why an epoch in which every class output was 0 ends a start for good (a dead start):
# - The paper's head ends in a ReLU before the global average (models.py), so a class output is 0
#   exactly when that ReLU is 0 at every position, and ReLU passes no gradient where its output
#   is 0. The loss is then ln K whatever the label, and every weight's loss gradient is exactly 0:
#   not small, 0, in every step of the epoch (tests/test_train.py checks it).
# - What SGD still does is weight decay and the momentum left from earlier steps: with a zero
#   gradient, buf <- 0.9 buf + lambda w and w <- w - lr buf, the same linear map for every
#   weight. The momentum of the last live step has decayed by 0.9^steps (1e-3 after 64 steps), and
#   decay shrinks every weight alike, by 0.05% a step at lr 0.05; nothing moves a weight towards
#   making a class output positive again.
# - Shrinking weights and biases alike is not exactly a rescaling of a ReLU network with biases,
#   and another epoch draws other dropout masks and translations, so "never" is measured rather
#   than proved: both dead starts of Model C at lr 0.05 on real CIFAR-10 photos, trained 12 epochs
#   further, stayed at exactly ln 10 (grids/paper.yaml), as does A-base on synthetic data for 8
#   (tests/test_train.py). Waiting no_progress_epochs (20) for them is compute thrown away.
# - A loss that only rounds to ln K (some output still above 0 somewhere) is not a dead start: its
#   gradient is not 0, and no_progress judges it.


def restart_seed(seed: int, restart: int) -> int:
    """The seed of a trial's `restart`-th fresh start: its own seed first, then a hash of both.
    Not seed * 1000 + restart: that gives seed 0's first restart the weights of the trial with
    seed 1, and two seeds of one cell would be one network twice."""
    if restart == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/restart {restart}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: what torch.manual_seed and a Generator take


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@torch.no_grad()
def error_rate(net, x, y, batch_size=1000, autocast=False) -> float:
    net.eval()
    wrong = torch.zeros((), device=x.device)
    for i in range(0, len(y), batch_size):
        with torch.autocast(x.device.type, torch.bfloat16, enabled=autocast):
            logits = net(x[i:i + batch_size])
        wrong += (logits.argmax(1) != y[i:i + batch_size]).sum()
    net.train()
    return wrong.item() / max(1, len(y))


def _start(config, classes: int, device: torch.device, memory_format, restart: int):
    """Fresh weights, optimizer, schedule and data order for the trial's `restart`-th start."""
    seed = restart_seed(config.seed, restart)
    torch.manual_seed(seed)  # weight init and dropout
    net = build(config.model, config.variant, classes, config.width, config.dropout_input, config.dropout_hidden)
    init_weights(net, config.init)
    net = net.to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, fused=device.type == "cuda" or None)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.lr_milestones, config.lr_gamma)
    generator = torch.Generator(device).manual_seed(seed)  # data order and augmentation
    return net, optimizer, schedule, generator


def train(config, session) -> dict:
    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    autocast = cuda and config.precision in ("auto", "bf16")
    # channels_last: faster convolutions on CPUs too (benchmarks/README.md).
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    compile_mode = ("reduce-overhead" if cuda else "off") if config.compile == "auto" else config.compile

    data = prepare(config.dataset, val_size=config.val_size, train_size=config.train_size,
                   test_size=config.test_size, preprocessing=config.preprocessing,
                   split_seed=config.split_seed, root=config.data_dir).to(device)
    data.x_train, data.x_val, data.x_test = (x.contiguous(memory_format=memory_format)
                                             for x in (data.x_train, data.x_val, data.x_test))
    net, optimizer, schedule, generator = _start(config, data.classes, device, memory_format, restart=0)
    # epoch counts the epochs of the current start (the schedule's clock); epochs trained by
    # earlier, dead starts come before it in what is reported.
    epoch, best_train_acc, train_seconds, status, reason = 0, 0.0, 0.0, "completed", None
    restart, dead_epochs = 0, 0

    if (state := session.restore()) is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"].to(generator.get_state().device))
        _set_rng_state(state["rng"], device)
        epoch, best_train_acc, train_seconds, status = (state[k] for k in
                                                        ("epoch", "best_train_acc", "train_seconds", "status"))
        restart, dead_epochs, reason = state.get("restart", 0), state.get("dead_epochs", 0), state.get("reason")

    forward = net if compile_mode == "off" else torch.compile(net, mode=compile_mode)
    flip, translate = config.augmentation == "standard", config.translate if config.augmentation == "standard" else 0
    n, batch = len(data.y_train), min(config.batch_size, len(data.y_train))
    steps = n // batch  # whole batches only: one static shape for CUDA graphs
    chance = 1.0 / data.classes

    while epoch < config.epochs and status == "completed":
        start = time.perf_counter()
        order = torch.randperm(n, device=device, generator=generator)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        peak = torch.zeros((), device=device)  # the largest class output of the epoch: 0 means dead
        for i in range(steps):
            idx = order[i * batch:(i + 1) * batch]
            x = augment(data.x_train[idx], flip, translate, generator).contiguous(memory_format=memory_format)
            y = data.y_train[idx]
            if compile_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                logits = forward(x)
                loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
            peak = torch.maximum(peak, logits.detach().abs().amax().float())
        # The one host sync of the epoch.
        train_loss, correct_count, peak_output = torch.stack([loss_sum / steps, correct, peak]).tolist()
        seconds = time.perf_counter() - start
        train_seconds += seconds
        lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        epoch += 1
        train_acc = correct_count / (steps * batch)
        best_train_acc = max(best_train_acc, train_acc)
        val_error = error_rate(net, data.x_val, data.y_val, autocast=autocast) if len(data.y_val) else None
        metrics = {"epoch": dead_epochs + epoch, "train_loss": train_loss, "train_error": 1 - train_acc,
                   "val_error": val_error, "lr": lr, "images_per_second": steps * batch / seconds,
                   "seconds": seconds, "restart": restart}
        dead = peak_output == 0.0
        # Reasons name the epoch as the curve shows it, counting the epochs of dead starts before.
        if not math.isfinite(train_loss):
            status, reason = "diverged", f"train loss {train_loss} in epoch {dead_epochs + epoch}"
        elif dead:
            reason = (f"dead start in epoch {dead_epochs + epoch}: every class output was 0 in every batch (train loss "
                      f"{train_loss:.4f} = ln {data.classes}), so no gradient reached any weight")
            if restart < config.dead_start_restarts:
                restart += 1
                session.log(f"{reason}; restart {restart} of {config.dead_start_restarts} from fresh weights "
                            f"(seed {restart_seed(config.seed, restart)})")
                net, optimizer, schedule, generator = _start(config, data.classes, device, memory_format, restart)
                forward = net if compile_mode == "off" else torch.compile(net, mode=compile_mode)
                dead_epochs, epoch, best_train_acc, reason = dead_epochs + epoch, 0, 0.0, None
            else:
                status = "dead_start"
        elif (config.no_progress_epochs and epoch >= config.no_progress_epochs
              and best_train_acc < CHANCE_MARGIN * chance):
            since = f" since restart {restart} (epochs {dead_epochs + 1}-{dead_epochs + epoch})" if restart else ""
            status, reason = "no_progress", (f"best train accuracy {best_train_acc:.1%} in {epoch} epochs{since}, "
                                             f"below {CHANCE_MARGIN} x chance ({chance:.0%})")
        if status != "completed":
            session.log(reason)
        last = epoch == config.epochs or status != "completed"
        checkpoint = None
        # A restart is always checkpointed: a resumed trial continues the new start, not the dead one.
        # So is the epoch a trial pauses at (halving): it goes on from there, training no epoch twice.
        if last or epoch == 0 or (config.checkpoint_every and epoch % config.checkpoint_every == 0) \
                or session.pauses_at_next_report():
            checkpoint = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                          "schedule": schedule.state_dict(), "generator": generator.get_state(),
                          "rng": _rng_state(device), "epoch": epoch, "best_train_acc": best_train_acc,
                          "train_seconds": train_seconds, "status": status, "reason": reason,
                          "restart": restart, "dead_epochs": dead_epochs}
        session.report(metrics, checkpoint)

    final_val = error_rate(net, data.x_val, data.y_val, autocast=autocast) if len(data.y_val) else None
    test_error = error_rate(net, data.x_test, data.y_test, autocast=autocast) if status == "completed" else None
    trained = (dead_epochs + epoch) * steps * batch
    return {"status": status, "status_reason": reason, "restarts": restart, "val_error": final_val,
            "test_error": test_error, "params": count_params(net),
            # The epochs of the network the result is from; a restart's dead epochs are in train_seconds.
            "epochs_completed": epoch, "train_seconds": train_seconds,
            "images_per_second": trained / train_seconds if train_seconds else None,
            "trained_on": torch.cuda.get_device_name(device) if cuda else "cpu",
            # The training set is what remains after the validation split.
            "train_examples": len(data.y_train), "test_examples": len(data.y_test),
            "data_fingerprint": data.fingerprint, "synthetic_data": data.synthetic}
