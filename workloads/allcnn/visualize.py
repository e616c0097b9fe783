"""Guided backpropagation (Springenberg et al. 2015, section 3.3): what a unit of a trained
network responds to, reconstructed down to the image.

Backward through a ReLU, three rules decide what passes (x: the ReLU's forward input,
g: the gradient arriving from above):

    gradient    g * (x > 0)              plain backpropagation
    deconvnet   g * (g > 0)              Zeiler & Fergus: the backward signal's own sign
    guided      g * (x > 0) * (g > 0)    both: the paper's guided backpropagation

Max-pooling passes the gradient back through its argmax ("switches") under every rule.
"""
from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

METHODS = ("guided", "gradient", "deconvnet")


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rule):
        ctx.save_for_backward(x)
        ctx.rule = rule
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "gradient":
            return g * (x > 0), None
        if ctx.rule == "deconvnet":
            return g.clamp(min=0), None
        return g.clamp(min=0) * (x > 0), None  # guided


class RuleReLU(nn.Module):
    """A ReLU whose backward pass follows `rule` (one of METHODS)."""

    def __init__(self, rule: str = "gradient"):
        super().__init__()
        self.rule = rule

    def forward(self, x):
        return _RuleReLU.apply(x, self.rule)


def with_rule_relus(net: nn.Sequential) -> nn.Sequential:
    """The same network (shared weights) with every ReLU replaced by a RuleReLU."""
    return nn.Sequential(OrderedDict((name, RuleReLU() if isinstance(m, nn.ReLU) else m)
                                     for name, m in net.named_children()))


def set_rule(net: nn.Module, rule: str) -> None:
    for m in net.modules():
        if isinstance(m, RuleReLU):
            m.rule = rule


def layers(net: nn.Sequential) -> dict[str, int]:
    """Layers whose units can be visualized, by name -> index of the module whose output is the
    unit's activation: `convN` (after its ReLU) and `poolN`."""
    names = list(dict(net.named_children()))
    out = {}
    for i, name in enumerate(names):
        if name.startswith("conv"):
            out[name] = names.index(f"relu{name[4:]}")
        elif name.startswith("pool"):
            out[name] = i
    return out


def default_layer(net: nn.Sequential) -> str:
    """The last downsampling layer: the second pool, or the conv that downsamples in its place."""
    if "pool2" in dict(net.named_children()):
        return "pool2"
    strided = [name for name, m in net.named_children() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    return strided[-1]


def top_units(net: nn.Sequential, index: int, images: torch.Tensor, units: int):
    """The `units` channels with the highest activation over `images`, each with the image and the
    position where it peaks: [(channel, image, y, x, activation)]."""
    with torch.no_grad():
        acts = net[: index + 1](images)  # (N, C, H, W)
    n, c, h, w = acts.shape
    peak, where = acts.permute(1, 0, 2, 3).reshape(c, -1).max(dim=1)
    best = peak.argsort(descending=True)[:units]
    return [(int(ch), int(where[ch]) // (h * w), int(where[ch]) % (h * w) // w, int(where[ch]) % w, float(peak[ch]))
            for ch in best]


def reconstruct(net: nn.Sequential, index: int, image: torch.Tensor, unit, rule: str) -> torch.Tensor:
    """The gradient of one unit's activation at one position with respect to the image, under `rule`."""
    channel, _, y, x, _ = unit
    set_rule(net, rule)
    image = image[None].clone().requires_grad_(True)
    net[: index + 1](image)[0, channel, y, x].backward()
    return image.grad[0]


def figure(image_rows: list[list[torch.Tensor]], columns: list[str], row_labels: list[str], output: Path) -> None:
    from matplotlib.figure import Figure  # not pyplot: no display backend, no global figure state

    rows = len(image_rows)
    # 120 x 120 pixels a tile at 100 dpi: the output is (columns x 120) x (rows x 120 + 40) pixels.
    fig = Figure(figsize=(1.2 * len(columns), 1.2 * rows + 0.4), dpi=100)
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for r, tiles in enumerate(image_rows):
        for c, tile in enumerate(tiles):
            ax = axes[r, c]
            ax.imshow(tile.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7)
    fig.subplots_adjust(left=0.08, right=0.99, bottom=0.01, top=1 - 0.4 / (1.2 * rows + 0.4), wspace=0.05, hspace=0.1)
    # The format named: with none, matplotlib would add ".png" and write a file other than `output`.
    # Drawn in memory, then written: matplotlib's PDF writer meeting a full disk raises an
    # AttributeError of its own instead of the OSError the CLI names the file by.
    drawn = io.BytesIO()
    fig.savefig(drawn, dpi=100, format=Path(output).suffix[1:] or "png")
    Path(output).write_bytes(drawn.getvalue())


def _show_image(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)


def _show_gradient(g: torch.Tensor) -> torch.Tensor:
    return (0.5 + 0.5 * g / g.abs().max().clamp_min(1e-12)).clamp(0, 1)


def _crop(tensors: list[torch.Tensor], support: torch.Tensor) -> list[torch.Tensor]:
    """The receptive field actually used: the bounding box of the pixels any method reached."""
    ys, xs = torch.nonzero(support, as_tuple=True)
    if len(ys) == 0:
        return tensors
    return [t[:, ys.min():ys.max() + 1, xs.min():xs.max() + 1] for t in tensors]


def visualize(net: nn.Sequential, images: torch.Tensor, output: Path, layer: str | None = None, units: int = 6,
              methods: tuple[str, ...] = METHODS, photos: torch.Tensor | None = None) -> dict:
    """Write the figure: one row per top unit of `layer`, its input patch then one reconstruction
    per method. `photos`: `images` as a person sees them (RGB in [0, 1]) for the input patch;
    without them the network's input is shown, rescaled. Returns what was drawn."""
    net = with_rule_relus(net).eval()
    available = layers(net)
    layer = layer or default_layer(net)
    if layer not in available:
        raise ValueError(f"unknown layer '{layer}' (layers: {', '.join(available)})")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method '{unknown[0]}' (methods: {', '.join(METHODS)})")
    index = available[layer]
    chosen = top_units(net, index, images, units)
    rows, labels = [], []
    for unit in chosen:
        image = images[unit[1]]
        maps = [reconstruct(net, index, image, unit, m) for m in methods]
        support = sum(m.abs().sum(0) for m in maps) > 0
        shown = _show_image(image) if photos is None else photos[unit[1]]
        tiles = _crop([shown] + [_show_gradient(m) for m in maps], support)
        rows.append(tiles)
        labels.append(f"unit {unit[0]}")
    figure(rows, ["input", *methods], labels, output)
    return {"layer": layer, "units": [u[0] for u in chosen], "methods": list(methods)}


def visualize_state(config, state: dict, output: Path, layer: str | None = None, units: int = 6,
                    images: int = 500, methods: tuple[str, ...] = METHODS) -> dict:
    """Load a trial's final weights (its checkpoint `state`) and visualize its units on `images`
    test images."""
    from workloads.allcnn.data import load_arrays, prepare
    from workloads.allcnn.models import build

    arrays = load_arrays(config.dataset, train_size=config.train_size, test_size=config.test_size,
                         split_seed=config.split_seed, root=config.data_dir)
    data = prepare(config.dataset, val_size=config.val_size, train_size=config.train_size,
                   test_size=config.test_size, preprocessing=config.preprocessing, split_seed=config.split_seed,
                   root=config.data_dir, arrays=arrays)
    net = build(config.model, config.variant, data.classes, config.width)
    net.load_state_dict(state["model"])
    # The paper shows the image patches themselves: after ZCA whitening the network's input is
    # edges and stripes, not the photo.
    photos = torch.from_numpy(arrays["x_test"][:images]).float() / 255
    return visualize(net, data.x_test[:images], output, layer, units, methods, photos)
