"""The paper's twelve networks (Springenberg et al. 2015, Tables 1 and 2), built from one table.

    from workloads.allcnn.models import build
    net = build("C", "all", classes=10)          # All-CNN-C, 1,369,738 parameters

Layers are named (`conv1`, `down1`, `drop1`, ...) so that a layer can be chosen by name later,
for example to visualize what its units respond to.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from workloads.allcnn.paper import DOWNSAMPLING, MODELS, STAGES, VARIANTS, WIDTHS


def channels(width: float) -> tuple[int, int]:
    """Channel counts of the two stages for a width multiplier (1.0 = the paper's 96/192)."""
    return tuple(max(1, round(w * width)) for w in WIDTHS)


def build(model: str, variant: str, classes: int = 10, width: float = 1.0,
          dropout_input: float = 0.2, dropout_hidden: float = 0.5) -> nn.Sequential:
    if model not in STAGES:
        raise ValueError(f"unknown model '{model}' (known: {', '.join(MODELS)})")
    if variant not in DOWNSAMPLING:
        raise ValueError(f"unknown variant '{variant}' (known: {', '.join(VARIANTS)})")
    widths, rule = channels(width), DOWNSAMPLING[variant]
    layers: OrderedDict[str, nn.Module] = OrderedDict(drop0=nn.Dropout(dropout_input))
    c_in, n = 3, 0

    def conv(c_out, kernel, stride=1, padding=None):
        nonlocal c_in, n
        n += 1
        layers[f"conv{n}"] = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2 if padding is None else padding)
        layers[f"relu{n}"] = nn.ReLU(inplace=True)
        c_in = c_out

    for stage, convs in enumerate(STAGES[model], start=1):
        for i, (kernel, w) in enumerate(convs):
            last = i == len(convs) - 1
            conv(widths[w], kernel, stride=2 if rule["stride_last"] and last else 1)
        if rule["extra_conv"]:
            conv(c_in, 3, stride=rule["extra_conv"])
        if rule["pool"]:
            layers[f"pool{stage}"] = nn.MaxPool2d(3, stride=2, padding=1)
        # The downsampling layer (pool, strided conv) is what dropout 0.5 follows (paper section 3).
        layers[f"drop{stage}"] = nn.Dropout(dropout_hidden)

    # Paper Table 1, head: 3x3 conv without padding (8x8 -> 6x6), 1x1, 1x1 to K classes, ReLU,
    # global average. The ReLU before the average is the paper's, kept on purpose.
    conv(widths[1], 3, padding=0)
    conv(widths[1], 1)
    conv(classes, 1)
    layers["avg"] = nn.AdaptiveAvgPool2d(1)
    layers["flatten"] = nn.Flatten()
    return nn.Sequential(layers)


def init_weights(net: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """`he` (Kaiming normal, fan-in, for ReLU), `xavier` (Glorot uniform) or `torch` (PyTorch's default).

    The paper does not state its init; reproductions used He or Xavier.
    """
    if scheme == "torch":
        return
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(m.weight, generator=generator)
            else:
                raise ValueError(f"unknown init '{scheme}' (known: he, xavier, torch)")
            nn.init.zeros_(m.bias)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def train_flops_per_image(model: str, variant: str, classes: int = 10, width: float = 1.0) -> float:
    """FLOPs of one training step per image, as torch.utils.flop_counter counts them: 2 per
    multiply-add, forward, input gradient and weight gradient; the first conv has no input gradient."""
    net, macs = build(model, variant, classes, width), []

    def count(module, inputs, output):
        macs.append(output.numel() * module.weight[0].numel())  # weight[0]: c_in * kh * kw

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(count)
    with torch.no_grad():
        net(torch.zeros(1, 3, 32, 32))
    return 6.0 * sum(macs) - 2.0 * macs[0]
