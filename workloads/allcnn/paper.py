"""The study's facts as data (Springenberg et al. 2015, ../shared/PAPER.md): the networks of
Tables 1 and 2, the datasets, and the published test errors. No torch here: grids are validated
and results summarized without importing it."""
from __future__ import annotations

MODELS = ("A", "B", "C")
VARIANTS = ("base", "strided", "convpool", "all")
CLASSES = {"cifar10": 10, "cifar100": 100, "cifar10-subset": 10, "synthetic": 10}
# Images in the official training and test sets; synthetic data has the same by default.
# cifar10-subset: real CIFAR-10 images, about a tenth of each official batch (workloads/allcnn/data.py).
SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "cifar10-subset": (5_085, 1_017),
         "synthetic": (50_000, 10_000)}

# Table 1: each of the two stages of a base network as (kernel size, width index) convs;
# width index 0 is 96 channels, 1 is 192. Every stage is followed by a downsampling point.
STAGES = {
    "A": [[(5, 0)], [(5, 1)]],
    "B": [[(5, 0), (1, 0)], [(5, 1), (1, 1)]],
    "C": [[(3, 0), (3, 0)], [(3, 1), (3, 1)]],
}
WIDTHS = (96, 192)

# Table 2: what each variant does at a downsampling point.
#   pool:        3x3 max-pool, stride 2 (padding 1: 32 -> 16 -> 8)
#   stride_last: the stage's last conv gets stride 2 instead of the pool
#   extra_conv:  an extra 3x3 conv of the same width, stride 1 or 2, before the pool (if any)
DOWNSAMPLING = {
    "base": {"pool": True, "stride_last": False, "extra_conv": None},
    "strided": {"pool": False, "stride_last": True, "extra_conv": None},
    "convpool": {"pool": True, "stride_last": False, "extra_conv": 1},
    "all": {"pool": False, "stride_last": False, "extra_conv": 2},
}

# Published test errors: Table 3 (CIFAR-10, no augmentation), Table 4 (CIFAR-10 with
# augmentation, CIFAR-100), as fractions.
_TABLE_3 = {"A": (12.47, 13.46, 10.21, 10.30), "B": (10.20, 10.98, 9.33, 9.10), "C": (9.74, 10.19, 9.31, 9.08)}
REFERENCES = tuple(
    [{"dataset": "cifar10", "augmentation": "none", "model": m, "variant": v, "test_error": round(e / 100, 6)}
     for m, errors in _TABLE_3.items() for v, e in zip(VARIANTS, errors)]
    + [{"dataset": "cifar10", "augmentation": "standard", "model": "C", "variant": "all", "test_error": 0.0725},
       {"dataset": "cifar100", "augmentation": "none", "model": "C", "variant": "all", "test_error": 0.3371}])
