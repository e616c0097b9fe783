"""The All-CNN study (Springenberg et al. 2015, ../shared/PAPER.md) as a registered workload.

Every field of `Config` is a parameter a grid file may set; the defaults are the paper's protocol
(section 3) where the paper states one, and documented choices where it does not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated

from annotated_types import Ge, Gt, Interval, Predicate

from workloads.allcnn import rates, tools
from workloads.allcnn.paper import CLAIMS, CLASSES, DATASETS, MODELS, PREPROCESSING, REFERENCES, SIZES, VARIANTS
from workloads.base import Workload

def choices(default, options):
    return field(default=default, metadata={"choices": tuple(options)})


def increasing(values: list) -> bool:
    """in increasing order"""
    return all(a < b for a, b in zip(values, values[1:]))


def device_name(name: str) -> bool:
    """naming a device: auto, cpu, cuda, cuda:N or mps"""
    return re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name) is not None


Fraction = Interval(ge=0, lt=1)  # a dropout rate or momentum of 1 would stop all learning


@dataclass
class Config:
    model: str = choices("C", MODELS)  # paper Table 1
    variant: str = choices("all", VARIANTS)  # paper Table 2
    dataset: str = choices("cifar10", DATASETS)
    augmentation: str = choices("none", ("none", "standard"))  # standard: flips + translations
    lr: Annotated[float, Gt(0)] = 0.01  # the paper picks the best of 0.25, 0.1, 0.05, 0.01 per network
    seed: int = 0
    epochs: Annotated[int, Ge(1)] = 350
    # lr x lr_gamma after each of these epochs
    lr_milestones: Annotated[list[Annotated[int, Ge(1)]], Predicate(increasing)] = field(
        default_factory=lambda: [200, 250, 300])
    lr_gamma: Annotated[float, Gt(0)] = 0.1
    momentum: Annotated[float, Fraction] = 0.9
    weight_decay: Annotated[float, Ge(0)] = 0.001  # added to the gradient as lambda * w (PyTorch/Caffe convention)
    batch_size: Annotated[int, Ge(1)] = 128  # not stated in the paper; reproductions used 128-256
    init: str = choices("he", ("he", "xavier", "torch"))  # not stated in the paper
    dropout_input: Annotated[float, Fraction] = 0.2
    dropout_hidden: Annotated[float, Fraction] = 0.5  # after each downsampling layer
    # Channel multiplier; 1.0 is the paper's 96/192. The bound keeps a typo (width: 100) from asking for billions of parameters.
    width: Annotated[float, Interval(gt=0, le=16)] = 1.0
    translate: Annotated[int, Interval(ge=0, lt=32)] = 5  # pixels, for augmentation "standard"; images are 32
    preprocessing: str = choices("channel", PREPROCESSING)  # "zca": the paper's GCN + ZCA whitening
    val_size: Annotated[int, Ge(0)] = 5000  # held out of the training set to choose the learning rate
    split_seed: Annotated[int, Ge(0)] = 0  # the validation split: the same for every trial of a study (numpy wants >= 0)
    train_size: Annotated[int, Ge(0)] = 0  # 0: the whole training set; smaller for cheap runs
    test_size: Annotated[int, Ge(0)] = 0  # 0: the whole test set
    data_dir: str = field(default="", metadata={"identity": False})  # "": $ABLATE_DATA or ~/.cache/ablate/data
    no_progress_epochs: Annotated[int, Ge(0)] = 20  # stop as no_progress if train accuracy stays near chance this long; 0: never
    # A dead start (an epoch in which every class output was 0, so no gradient flowed: train.py) is
    # started over from fresh weights up to this many times, from seeds derived from `seed`; 0: stop as dead_start.
    dead_start_restarts: Annotated[int, Ge(0)] = 0
    checkpoint_every: Annotated[int, Ge(1)] = field(default=1, metadata={"identity": False})  # epochs between checkpoints
    device: Annotated[str, Predicate(device_name)] = "auto"  # auto: cuda if available, else cpu
    precision: str = choices("auto", ("auto", "bf16", "fp32"))  # auto: bf16 autocast on CUDA
    channels_last: bool = True  # faster convolutions on CUDA and on CPU
    compile: str = choices("auto", ("auto", "off", "default", "reduce-overhead"))  # auto: CUDA graphs on CUDA


def check(config: Config) -> None:
    """Rules across parameters, checked for every trial when a grid is loaded."""
    if config.lr_milestones and config.lr_milestones[-1] >= config.epochs:
        raise ValueError(f"lr_milestones: expected milestones below epochs ({config.epochs}), "
                         f"got {config.lr_milestones}")
    full_train, full_test = SIZES[config.dataset]
    if config.dataset != "synthetic":  # synthetic data is drawn at any size; CIFAR has what it has
        if config.train_size > full_train:
            raise ValueError(f"train_size: expected at most the {full_train:,} training images of "
                             f"{config.dataset}, got {config.train_size}")
        if config.test_size > full_test:
            raise ValueError(f"test_size: expected at most the {full_test:,} test images of "
                             f"{config.dataset}, got {config.test_size}")
    train = config.train_size or full_train
    if config.val_size > train // 2:  # more held out than trained on: the default 5,000 of a small dataset
        raise ValueError(f"val_size: expected at most half of the {train:,} training images "
                         f"{'of train_size' if config.train_size else 'of ' + config.dataset}, got {config.val_size}")
    if config.batch_size > train - config.val_size:
        raise ValueError(f"batch_size: expected at most the {train - config.val_size:,} training images left "
                         f"after val_size, got {config.batch_size}")


# Shapes only, on the meta device: counting must not allocate a wide network's weights.
@lru_cache(maxsize=None)
def _flops_per_image(model, variant, classes, width):
    import torch

    from workloads.allcnn.models import train_flops_per_image

    with torch.device("meta"):
        return train_flops_per_image(model, variant, classes, width)


@lru_cache(maxsize=None)
def _params(model, variant, classes, width):
    import torch

    from workloads.allcnn.models import build, count_params

    with torch.device("meta"):
        return count_params(build(model, variant, classes, width))


def params(config: Config) -> int:
    return _params(config.model, config.variant, CLASSES[config.dataset], config.width)


def cost(config: Config) -> dict:
    train_images = (config.train_size or SIZES[config.dataset][0]) - config.val_size
    images = config.epochs * (train_images // config.batch_size) * config.batch_size
    flops = images * _flops_per_image(config.model, config.variant, CLASSES[config.dataset], config.width)
    return {"images": images, "flops": flops}


def prepare(configs: list[Config]) -> None:
    """Download each CIFAR dataset the trials use, once, before they start; find the local ones."""
    from workloads.allcnn.data import load_files

    for dataset, root in sorted({(c.dataset, c.data_dir) for c in configs}):
        load_files(dataset, root)


def models() -> list[dict]:
    """Every network of paper Tables 1 and 2, with its parameter count for 10 and 100 classes."""
    from workloads.allcnn.models import build, count_params

    return [{"model": m, "variant": v, "classes": k, "params": count_params(build(m, v, k))}
            for k in (10, 100) for m in MODELS for v in VARIANTS]


def _train(config, session):
    from workloads.allcnn.train import train

    return train(config, session)


# What train() returns beside its status: the paper's error rates, speed, the device, how the trial
# ended and what its data was (workloads/base.py).
RESULTS = {"val_error": float, "test_error": float, "images_per_second": float, "trained_on": str,
           "restarts": int, "train_examples": int, "test_examples": int, "data_fingerprint": str,
           "synthetic_data": bool}

WORKLOAD = Workload(name="allcnn", config=Config, train=_train, epochs=lambda config: config.epochs,
                    metrics=("train_loss", "val_error", "images_per_second"), check=check,
                    metric="val_error", mode="min", report=("test_error",), results=RESULTS,
                    produces=(*RESULTS, "train_loss", "train_error", "lr", "seconds", "restart"),
                    cost=cost, rates=rates.rates, params=params, prepare=prepare, references=REFERENCES, claims=CLAIMS,
                    # The paper's tables: networks as rows, downsampling variants as columns.
                    layout={"rows": "model", "cols": "variant", "tables": ["dataset", "augmentation"]},
                    models=models, tools={"visualize": tools.visualize})
