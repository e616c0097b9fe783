"""The All-CNN study's tools on trained trials, each an `ablate` command (workloads/base.py,
TrialTool). Kept free of torch so that `ablate --help` lists them without importing it."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer
from annotated_types import Ge, Predicate


def names_a_method(text: str) -> bool:
    """that names at least one method"""
    return any(name.strip() for name in text.split(","))


def visualize(config, state: dict, output: Path, *,
              layer: Annotated[Optional[str], typer.Option(
                  help="convN or poolN; default: the last downsampling layer.")] = None,
              units: Annotated[int, Ge(1), typer.Option(help="How many of the layer's most active units.")] = 6,
              images: Annotated[int, Ge(1), typer.Option(help="Test images searched for the top activations.")] = 500,
              methods: Annotated[str, Predicate(names_a_method), typer.Option(
                  help="Comma-separated: guided, gradient, deconvnet.")] = "guided,gradient,deconvnet",
              data_dir: Annotated[Optional[Path], typer.Option(
                  help="Dataset cache (default: $ABLATE_DATA or ~/.cache/ablate/data).")] = None) -> str:
    """Guided backpropagation (paper section 3.3): what the units of a trained All-CNN network respond to.

    For the layer's most active units over a sample of test images, shows the input patch each
    responds to and its reconstruction by guided backpropagation, beside the plain gradient and
    the deconvnet rule.
    """
    from workloads.allcnn.visualize import visualize_state

    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=str(data_dir))
    drawn = visualize_state(config, state, output, layer, units, images,
                            tuple(m.strip() for m in methods.split(",") if m.strip()))
    return f"wrote {output}: layer {drawn['layer']}, units {', '.join(map(str, drawn['units']))}"
