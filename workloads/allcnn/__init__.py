"""The All-CNN study (Springenberg et al. 2015, ../shared/PAPER.md) as a registered workload.

Every field of `Config` is a parameter a grid file may set; the defaults are the paper's protocol
(section 3) where the paper states one, and documented choices where it does not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from workloads.allcnn import commands
from workloads.allcnn.paper import CLASSES, MODELS, REFERENCES, VARIANTS
from workloads.base import Workload

# Kept free of torch: grids are validated and results summarized without importing it.
DATASETS = tuple(CLASSES)
PREPROCESSING = ("channel", "zca")


def choices(default, options):
    return field(default=default, metadata={"choices": tuple(options)})


@dataclass
class Config:
    model: str = choices("C", MODELS)  # paper Table 1
    variant: str = choices("all", VARIANTS)  # paper Table 2
    dataset: str = choices("cifar10", DATASETS)
    augmentation: str = choices("none", ("none", "standard"))  # standard: flips + translations
    lr: float = 0.01  # the paper picks the best of 0.25, 0.1, 0.05, 0.01 per network
    seed: int = 0
    epochs: int = 350
    lr_milestones: list[int] = field(default_factory=lambda: [200, 250, 300])  # lr x lr_gamma after these epochs
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.001  # added to the gradient as lambda * w (PyTorch/Caffe convention)
    batch_size: int = 128  # not stated in the paper; reproductions used 128-256
    init: str = choices("he", ("he", "xavier", "torch"))  # not stated in the paper
    dropout_input: float = 0.2
    dropout_hidden: float = 0.5  # after each downsampling layer
    width: float = 1.0  # channel multiplier; 1.0 is the paper's 96/192
    translate: int = 5  # pixels, for augmentation "standard"
    preprocessing: str = choices("channel", PREPROCESSING)  # "zca": the paper's GCN + ZCA whitening
    val_size: int = 5000  # held out of the training set to choose the learning rate
    split_seed: int = 0  # the validation split: the same for every trial of a study
    train_size: int = 0  # 0: the whole training set; smaller for cheap runs
    test_size: int = 0  # 0: the whole test set
    data_dir: str = field(default="", metadata={"identity": False})  # "": $ABLATE_DATA or ~/.cache/ablate/data
    no_progress_epochs: int = 20  # stop as no_progress if train accuracy stays near chance this long; 0: never
    checkpoint_every: int = field(default=1, metadata={"identity": False})  # epochs between checkpoints
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: str = choices("auto", ("auto", "bf16", "fp32"))  # auto: bf16 autocast on CUDA
    channels_last: bool = True  # faster convolutions on CUDA and on CPU
    compile: str = choices("auto", ("auto", "off", "default", "reduce-overhead"))  # auto: CUDA graphs on CUDA


@lru_cache(maxsize=None)
def _flops_per_image(model, variant, classes, width):
    from workloads.allcnn.models import train_flops_per_image

    return train_flops_per_image(model, variant, classes, width)


@lru_cache(maxsize=None)
def _params(model, variant, classes, width):
    from workloads.allcnn.models import build, count_params

    return count_params(build(model, variant, classes, width))


def params(config: Config) -> int:
    return _params(config.model, config.variant, CLASSES[config.dataset], config.width)


def cost(config: Config) -> dict:
    train_images = (config.train_size or 50_000) - config.val_size
    images = config.epochs * (train_images // config.batch_size) * config.batch_size
    flops = images * _flops_per_image(config.model, config.variant, CLASSES[config.dataset], config.width)
    return {"images": images, "flops": flops}


def prepare(configs: list[Config]) -> None:
    """Download each CIFAR dataset the trials use, once, before they start."""
    from workloads.allcnn.data import SOURCES, data_dir, load_cifar

    for dataset, root in sorted({(c.dataset, c.data_dir) for c in configs if c.dataset in SOURCES}):
        load_cifar(dataset, data_dir(root))


def models() -> list[dict]:
    """Every network of paper Tables 1 and 2, with its parameter count for 10 and 100 classes."""
    from workloads.allcnn.models import build, count_params

    return [{"model": m, "variant": v, "classes": k, "params": count_params(build(m, v, k))}
            for k in (10, 100) for m in MODELS for v in VARIANTS]


def _train(config, session):
    from workloads.allcnn.train import train

    return train(config, session)


WORKLOAD = Workload(name="allcnn", config=Config, train=_train, epochs=lambda config: config.epochs,
                    metrics=("train_loss", "val_error", "images_per_second"),
                    cost=cost, params=params, prepare=prepare, references=REFERENCES,
                    # The paper's tables: networks as rows, downsampling variants as columns.
                    layout={"rows": "model", "cols": "variant", "tables": ["dataset", "augmentation"]},
                    models=models, commands={"visualize": commands.visualize})
