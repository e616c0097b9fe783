"""Grid files: expansion, trial ids, and the one-line errors a user sees for a bad file."""
from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import GridError
from orchestrator.grid import load_grid
from tests.conftest import ROOT, ablate
from workloads.allcnn import Config

BASE = """\
name: t
axes:
  model: [A, C]
  lr: [0.1, 0.01]
fixed:
  dataset: synthetic
  epochs: 2
"""


def write(tmp_path, text, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def ids(path):
    return [t.trial_id for t in load_grid(path).trials]


@pytest.mark.parametrize("grid, trials", [("paper", 192), ("smoke", 12), ("seeds-and-rules", 21)])
def test_shipped_grids_expand_to_their_documented_sizes(grid, trials):
    assert len(load_grid(ROOT / "grids" / f"{grid}.yaml").trials) == trials


def test_paper_grid_is_the_full_cartesian_study():
    grid = load_grid(ROOT / "grids" / "paper.yaml")
    cells = {(t.config["model"], t.config["variant"], t.config["dataset"], t.config["augmentation"], t.config["lr"])
             for t in grid.trials}
    assert len(cells) == 3 * 4 * 2 * 2 * 4
    first = grid.trials[0].config
    assert (first["epochs"], first["lr_milestones"], first["momentum"], first["weight_decay"]) == (350, [200, 250, 300], 0.9, 0.001)
    assert (first["dropout_input"], first["dropout_hidden"]) == (0.2, 0.5)


def test_seeds_exclude_and_include(tmp_path):
    path = write(tmp_path, BASE + textwrap.dedent("""\
        seeds: [0, 1, 2]
        exclude:
          - {model: A, lr: [0.1]}
        include:
          - {model: C, lr: 0.5, augmentation: standard}
        """))
    cells = [(t.config["model"], t.config["lr"], t.config["augmentation"], t.config["seed"]) for t in load_grid(path).trials]
    assert len(cells) == (2 * 2 - 1 + 1) * 3
    assert ("A", 0.1, "none", 0) not in cells
    assert ("C", 0.5, "standard", 2) in cells


def test_repeats_means_seeds_from_zero(tmp_path):
    seeds = {t.config["seed"] for t in load_grid(write(tmp_path, BASE + "repeats: 3\n")).trials}
    assert seeds == {0, 1, 2}


def test_trial_ids_do_not_depend_on_the_order_of_keys_or_axes(tmp_path):
    a = write(tmp_path, BASE, "a.yaml")
    b = write(tmp_path, """\
        fixed:
          epochs: 2
          dataset: synthetic
        axes:
          lr: [0.01, 0.1]
          model: [C, A]
        name: t
        """, "b.yaml")
    assert len(set(ids(a))) == 4
    assert sorted(ids(a)) == sorted(ids(b))


def test_trial_ids_are_the_same_for_a_default_written_out(tmp_path):
    a = write(tmp_path, BASE, "a.yaml")
    b = write(tmp_path, BASE + "  batch_size: 128\n  lr_milestones: [200, 250, 300]\n", "b.yaml")
    assert ids(a) == ids(b)


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, list):
        return value + [999]
    return value


@pytest.mark.parametrize("field", [f for f in dataclasses.fields(Config) if f.name != "seed"], ids=lambda f: f.name)
def test_trial_id_changes_with_every_value_that_changes_the_trial(tmp_path, field):
    base = write(tmp_path, "name: t\nfixed: {}\n", "a.yaml")
    default = getattr(Config(), field.name)
    choices = field.metadata.get("choices")
    value = next(c for c in choices if c != default) if choices else _changed(default)
    if isinstance(value, str) and not choices:
        value = value + "x"
    other = write(tmp_path, f"name: t\nfixed:\n  {field.name}: {json.dumps(value)}\n", "b.yaml")
    same = field.metadata.get("identity", True) is False  # where data lives, how often to checkpoint
    assert (ids(base) == ids(other)) == same


def test_trial_id_changes_with_the_seed(tmp_path):
    assert len(set(ids(write(tmp_path, "name: t\nseeds: [0, 1]\n")))) == 2


def test_expansion_is_deterministic(tmp_path):
    path = write(tmp_path, BASE)
    assert load_grid(path).trials == load_grid(path).trials


ERRORS = [
    ("name: [unclosed\n", "not valid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ("- a\n- b\n", "expected a YAML mapping with keys name, description, workload, axes, fixed, seeds, repeats, "
                   "exclude, include, resources, max_failures"),
    (BASE + "colour: red\n", "colour: unknown key (allowed: name, description, workload, axes, fixed, seeds, "
                             "repeats, exclude, include, resources, max_failures)"),
    ("axes: {model: [A]}\n", "name: expected a name of letters, digits, '_', '.' or '-' (it names the results folder), got null"),
    ("name: t\nworkload: nope\n", "workload: unknown workload 'nope' (known: allcnn; or an import path module:object)"),
    ("name: t\naxes:\n  model: [A, B, D]\n", "axes.model[2]: unknown model 'D' (known: A, B, C)"),
    ("name: t\nfixed:\n  dataset: cifar11\n", "fixed.dataset: unknown dataset 'cifar11' (known: cifar10, cifar100, synthetic)"),
    ("name: t\nfixed:\n  epochs: ten\n", "fixed.epochs: expected int, got 'ten'"),
    ("name: t\nfixed:\n  compile: off\n", "fixed.compile: expected str, got false (YAML reads a bare false as a boolean: quote the word)"),
    ("name: t\naxes:\n  lr: []\n", "axes.lr: expected a non-empty list of values, got []"),
    ("name: t\naxes:\n  lr: 0.1\n", "axes.lr: expected a non-empty list of values, got 0.1"),
    ("name: t\naxes:\n  lr: [0.1, 0.01, 0.1]\n", "axes.lr[2]: duplicate value 0.1"),
    ("name: t\naxes:\n  colour: [red]\n", "axes.colour: unknown parameter of workload 'allcnn' (known: model, variant, "
                                          "dataset, augmentation, lr, seed, epochs, lr_milestones, lr_gamma, momentum, "
                                          "weight_decay, batch_size, init, dropout_input, dropout_hidden, width, translate, "
                                          "preprocessing, val_size, split_seed, train_size, test_size, data_dir, "
                                          "no_progress_epochs, checkpoint_every, device, precision, channels_last, compile)"),
    ("name: t\naxes:\n  seed: [1, 2]\n", "axes.seed: seeds are set by the top-level 'seeds' or 'repeats' key"),
    ("name: t\naxes:\n  lr: [0.1]\nfixed:\n  lr: 0.2\n", "fixed.lr: is also an axis; give it in one place"),
    (BASE + "exclude:\n  - {model: B}\n", "exclude[0]: matches no trial of the axes"),
    (BASE + "exclude:\n  - {epochs: 2}\n", "exclude[0].epochs: not an axis (axes: model, lr)"),
    (BASE + "exclude:\n  - {model: [A, C]}\n", "the grid expands to zero trials"),
    (BASE + "include:\n  - {model: C}\n", "include[0]: must give every axis; missing lr"),
    (BASE + "seeds: [0, 0]\n", "seeds[1]: duplicate value 0"),
    (BASE + "seeds: [0]\nrepeats: 2\n", "repeats: give either 'seeds' or 'repeats', not both"),
    (BASE + "resources:\n  gpus: -1\n", "resources.gpus: expected a number >= 0, got -1"),
    (BASE + "resources:\n  gpu: 1\n", "resources.gpu: unknown key (allowed: cpus, gpus, trials_per_gpu, max_concurrent)"),
    (BASE + "resources:\n  trials_per_gpu: 0\n", "resources.trials_per_gpu: expected an integer >= 1, got 0"),
    (BASE + "max_failures: -1\n", "max_failures: expected an integer >= 0, got -1"),
]


@pytest.mark.parametrize("text, message", ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_bad_grid_gives_one_line_naming_file_key_and_expectation(tmp_path, text, message):
    path = write(tmp_path, text)
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: {message}\n"


def test_missing_grid_file(tmp_path):
    result = CliRunner().invoke(app, ["plan", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.yaml'}: cannot read the grid file (No such file or directory)\n"


def test_bad_grid_in_a_real_process_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, "name: t\naxes:\n  model: [A, B, D]\n")
    for command in ("plan", "run"):
        result = ablate(command, path)
        assert result.returncode == 2
        assert result.stderr == f"error: {path}: axes.model[2]: unknown model 'D' (known: A, B, C)\n"


def test_errors_are_typed_for_library_users(tmp_path):
    with pytest.raises(GridError) as e:
        load_grid(write(tmp_path, "name: t\naxes:\n  model: [D]\n"))
    assert e.value.key == "axes.model[0]"
