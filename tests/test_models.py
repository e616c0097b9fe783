"""The paper's twelve networks: exact parameter counts, shapes, dropout, FLOPs."""
from __future__ import annotations

import pytest
import torch

from workloads.allcnn.models import MODELS, VARIANTS, build, count_params, train_flops_per_image

# ../shared/PAPER.md: exact counts, biases included, 10 classes.
PARAMS_10 = {
    "A": (839_242, 839_242, 1_254_250, 1_254_250),
    "B": (885_610, 885_610, 1_300_618, 1_300_618),
    "C": (954_730, 954_730, 1_369_738, 1_369_738),
}
# With 100 classes the last 1x1 conv grows by 90 x (192 + 1) parameters.
PARAMS_100 = {m: tuple(p + 90 * 193 for p in counts) for m, counts in PARAMS_10.items()}
NETWORKS = [(m, v) for m in MODELS for v in VARIANTS]


@pytest.mark.parametrize("model, variant", NETWORKS)
def test_parameter_counts_match_the_paper(model, variant):
    i = VARIANTS.index(variant)
    assert count_params(build(model, variant, classes=10)) == PARAMS_10[model][i]
    assert count_params(build(model, variant, classes=100)) == PARAMS_100[model][i]


def test_all_cnn_c_for_cifar100():
    assert count_params(build("C", "all", classes=100)) == 1_387_108


@pytest.mark.parametrize("model, variant", NETWORKS)
def test_output_is_one_score_per_class(model, variant):
    net = build(model, variant, classes=100, width=0.25)
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 100)


@pytest.mark.parametrize("model, variant", NETWORKS)
def test_spatial_size_goes_32_16_8_6(model, variant):
    net, x, sizes = build(model, variant, width=0.25), torch.randn(1, 3, 32, 32), []
    for layer in net:
        x = layer(x)
        if x.dim() == 4 and x.shape[-1] not in sizes:
            sizes.append(x.shape[-1])
    assert sizes == [32, 16, 8, 6, 1]


def test_variants_downsample_as_table_2_says():
    layers = {v: [type(m).__name__ for m in build("C", v, width=0.25)] for v in VARIANTS}
    assert layers["base"].count("MaxPool2d") == 2 and layers["convpool"].count("MaxPool2d") == 2
    assert "MaxPool2d" not in layers["strided"] and "MaxPool2d" not in layers["all"]
    strided = [m.stride for m in build("C", "all", width=0.25) if isinstance(m, torch.nn.Conv2d)]
    assert strided.count((2, 2)) == 2


def test_width_scales_channels():
    assert count_params(build("C", "all", width=0.5)) < count_params(build("C", "all")) / 3


def test_dropout_is_off_in_eval_and_on_in_training():
    net = build("A", "base", width=0.25)
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))


def test_training_flops_match_the_measured_count():
    # ../shared/PERFORMANCE.md, counted with torch.utils.flop_counter: All-CNN-C 1.62 GFLOP per image.
    assert train_flops_per_image("C", "all") == pytest.approx(1.62e9, rel=0.01)
    assert train_flops_per_image("A", "base") == pytest.approx(0.82e9, rel=0.01)
