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

import math
import time

import torch
import torch.nn.functional as F

from workloads.allcnn.data import augment, prepare
from workloads.allcnn.models import build, count_params, init_weights

# A trial that never beats this many times chance accuracy has not started learning (PAPER.md:
# large learning rates without batch norm often leave the loss stuck at ln K).
CHANCE_MARGIN = 1.5


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


def train(config, session) -> dict:
    device = resolve_device(config.device)
    cuda = device.type == "cuda"
    autocast = cuda and config.precision in ("auto", "bf16")
    # channels_last: 1.6x faster convolutions on these 2-core CPUs too (benchmarks/README.md).
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    compile_mode = ("reduce-overhead" if cuda else "off") if config.compile == "auto" else config.compile

    torch.manual_seed(config.seed)  # weight init and dropout
    data = prepare(config.dataset, val_size=config.val_size, train_size=config.train_size,
                   test_size=config.test_size, preprocessing=config.preprocessing,
                   split_seed=config.split_seed, root=config.data_dir).to(device)
    net = build(config.model, config.variant, data.classes, config.width,
                config.dropout_input, config.dropout_hidden)
    init_weights(net, config.init)
    net = net.to(device, memory_format=memory_format)
    data.x_train, data.x_val, data.x_test = (x.contiguous(memory_format=memory_format)
                                             for x in (data.x_train, data.x_val, data.x_test))
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, fused=cuda or None)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, config.lr_milestones, config.lr_gamma)
    generator = torch.Generator(device).manual_seed(config.seed)  # data order and augmentation
    epoch, best_train_acc, train_seconds, status = 0, 0.0, 0.0, "completed"

    if (state := session.restore()) is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"].to(generator.get_state().device))
        _set_rng_state(state["rng"], device)
        epoch, best_train_acc, train_seconds, status = (state[k] for k in
                                                        ("epoch", "best_train_acc", "train_seconds", "status"))

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
        train_loss = (loss_sum / steps).item()  # the one host sync of the epoch
        seconds = time.perf_counter() - start
        train_seconds += seconds
        lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        epoch += 1
        train_acc = correct.item() / (steps * batch)
        best_train_acc = max(best_train_acc, train_acc)
        if not math.isfinite(train_loss):
            status = "diverged"
        elif (config.no_progress_epochs and epoch >= config.no_progress_epochs
              and best_train_acc < CHANCE_MARGIN * chance):
            status = "no_progress"
        val_error = error_rate(net, data.x_val, data.y_val, autocast=autocast) if len(data.y_val) else None
        metrics = {"epoch": epoch, "train_loss": train_loss, "train_error": 1 - train_acc,
                   "val_error": val_error, "lr": lr, "images_per_second": steps * batch / seconds,
                   "seconds": seconds}
        last = epoch == config.epochs or status != "completed"
        checkpoint = None
        if last or (config.checkpoint_every and epoch % config.checkpoint_every == 0):
            checkpoint = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                          "schedule": schedule.state_dict(), "generator": generator.get_state(),
                          "rng": _rng_state(device), "epoch": epoch, "best_train_acc": best_train_acc,
                          "train_seconds": train_seconds, "status": status}
        session.report(metrics, checkpoint)

    final_val = error_rate(net, data.x_val, data.y_val, autocast=autocast) if len(data.y_val) else None
    test_error = error_rate(net, data.x_test, data.y_test, autocast=autocast) if status == "completed" else None
    return {"status": status, "val_error": final_val, "test_error": test_error,
            "params": count_params(net), "epochs_completed": epoch, "train_seconds": train_seconds,
            "images_per_second": epoch * steps * batch / train_seconds if train_seconds else None,
            "trained_on": torch.cuda.get_device_name(device) if cuda else "cpu",
            # The training set is what remains after the validation split.
            "train_examples": len(data.y_train), "test_examples": len(data.y_test),
            "data_fingerprint": data.fingerprint, "synthetic_data": data.synthetic}
