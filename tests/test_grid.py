"""Grid files: expansion, trial ids, and the one-line errors a user sees for a bad file."""
from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import GridError
from orchestrator.plan.expand import trial_id
from orchestrator.plan.grid import load_grid
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
  lr_milestones: [1]
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
          lr_milestones: [1]
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
    b = write(tmp_path, BASE + "  batch_size: 128\n  momentum: 0.9\n", "b.yaml")
    assert ids(a) == ids(b)


def _changed(value):
    """Another value the parameter's constraints allow."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value * 2 or 10_000
    if isinstance(value, float):
        return value / 2
    if isinstance(value, list):
        return value[:-1]
    return value


@pytest.mark.parametrize("field", [f for f in dataclasses.fields(Config) if f.name != "seed"], ids=lambda f: f.name)
def test_trial_id_changes_with_every_value_that_changes_the_trial(tmp_path, field):
    base = write(tmp_path, "name: t\nfixed: {}\n", "a.yaml")
    default = getattr(Config(), field.name)
    choices = field.metadata.get("choices")
    value = next(c for c in choices if c != default) if choices else _changed(default)
    if isinstance(value, str) and not choices:
        value = "cpu" if field.name == "device" else value + "x"  # device names are a closed form
    other = write(tmp_path, f"name: t\nfixed:\n  {field.name}: {json.dumps(value)}\n", "b.yaml")
    same = field.metadata.get("identity", True) is False  # where data lives, how often to checkpoint
    assert (ids(base) == ids(other)) == same


def test_trial_id_changes_with_the_seed(tmp_path):
    assert len(set(ids(write(tmp_path, "name: t\nseeds: [0, 1]\n")))) == 2


def test_expansion_is_deterministic(tmp_path):
    path = write(tmp_path, BASE)
    assert load_grid(path).trials == load_grid(path).trials


def test_expanded_trial_ids_are_the_ids_of_their_configs(tmp_path):
    # expand() builds the hashed text in pieces; it must be trial_id's text, whatever a cell sets:
    # a list, a flag, a parameter only an include gives, one the id does not depend on.
    path = write(tmp_path, """\
        name: t
        axes:
          model: [A, C]
          lr: [0.1, 0.01]
          lr_milestones: [[1], [1, 2]]
        fixed:
          dataset: synthetic
          epochs: 3
          channels_last: false
        seeds: [0, 7]
        include:
          - {model: C, lr: 0.5, lr_milestones: [1], augmentation: standard, checkpoint_every: 3, width: 0.5}
        """)
    grid = load_grid(path)
    identity = {f.name for f in dataclasses.fields(Config) if f.metadata.get("identity", True)}
    assert len(grid.trials) == (2 * 2 * 2 + 1) * 2
    assert [t.trial_id for t in grid.trials] == [trial_id("allcnn", t.config, identity) for t in grid.trials]


def test_readers_of_a_grid_that_ran_skip_the_per_trial_checks(tmp_path):
    # A grid checked when it ran stays readable where the workload's rules across parameters
    # have since changed: its trials and their ids are the same, checked or not.
    path = write(tmp_path, BASE)
    assert load_grid(path, check_trials=False).trials == load_grid(path).trials
    bad = write(tmp_path, BASE.replace("epochs: 2", "epochs: 1"), "bad.yaml")  # lr_milestones [1] not below 1
    with pytest.raises(GridError, match="lr_milestones: expected milestones below epochs"):
        load_grid(bad)
    assert len(load_grid(bad, check_trials=False).trials) == 4


def test_a_metric_without_a_mode_goes_the_way_its_name_says_and_a_grid_that_ran_reads_as_it_ran(tmp_path):
    # An accuracy was minimized: every cell chose its worst setting.
    script = "command:\n  run: python t.py --lr {lr}\n  parameters:\n    lr: 0.1\n"
    assert load_grid(write(tmp_path, f"name: t\n{script}metric: val_acc\n")).objective.metric.mode == "max"
    assert load_grid(write(tmp_path, f"name: t\n{script}metric: val/loss\n")).objective.metric.mode == "min"
    ran = write(tmp_path, f"name: t\n{script}metric: reward\n")  # refused now; an older ablate minimized it
    with pytest.raises(GridError, match="mode: missing"):
        load_grid(ran)
    assert load_grid(ran, check_trials=False).objective.metric.mode == "min"


ERRORS = [
    ("name: [unclosed\n", "not valid YAML at line 2, column 1: did not find expected ',' or ']'"),
    ("- a\n- b\n", "expected a YAML mapping with keys name, description, workload, command, axes, fixed, seeds, repeats, "
                   "exclude, include, metric, mode, report, resources, max_failures, max_trials, trial_timeout, tracking, halving"),
    (BASE + "colour: red\n", "colour: unknown key (allowed: name, description, workload, command, axes, fixed, seeds, "
                             "repeats, exclude, include, metric, mode, report, resources, max_failures, max_trials, trial_timeout, tracking, halving)"),
    ("axes: {model: [A]}\n", "name: expected a name of letters, digits, '_', '.' or '-' (it names the results folder), got null"),
    ("name: t\nworkload: nope\n", "workload: unknown workload 'nope' (known: allcnn; or an import path module:object)"),
    ("name: t\naxes:\n  model: [A, B, D]\n", "axes.model[2]: unknown model 'D' (known: A, B, C)"),
    ("name: t\nfixed:\n  dataset: cifar11\n", "fixed.dataset: unknown dataset 'cifar11' (known: cifar10, cifar100, cifar10-subset, synthetic)"),
    ("name: t\nfixed:\n  epochs: ten\n", "fixed.epochs: expected int, got 'ten'"),
    ("name: t\nfixed:\n  compile: off\n", "fixed.compile: expected str, got false (YAML reads a bare false as a boolean: quote the word)"),
    ("name: t\naxes:\n  lr: []\n", "axes.lr: expected a non-empty list of values, got []"),
    ("name: t\nmode: best\n", "mode: expected min or max, got 'best'"),
    ("name: t\nmetric: 5\n", "metric: expected a metric name or {name, summary, mode, format}, got 5"),
    ("name: t\nmetric: reward\n", "mode: missing: expected min or max (the name 'reward' does not say which way is "
                                   "better)"),
    ("name: t\nmetric: lr\n", "metric: 'lr' is a parameter of workload 'allcnn'; name a metric its trials report (a "
                              "trial's own 'lr' is kept as 'reported_lr')"),
    ("name: t\nmetric: val_error\nreport: [{name: width}]\n",
     "report[0]: 'width' is a parameter of workload 'allcnn'; name a metric its trials report (a trial's own 'width' "
     "is kept as 'reported_width')"),
    ("name: t\nmetric: val_loss\n", "metric: workload 'allcnn' reports no metric 'val_loss' (it reports: val_error, "
                                     "test_error, images_per_second, trained_on, restarts, train_examples, test_examples, "
                                     "data_fingerprint, synthetic_data, train_loss, train_error, reported_lr, seconds, restart)"),
    ("name: t\nreport: [{name: test_error, summary: first}]\n",
     "report[0].summary: expected last or best or at_best, got 'first'"),
    ("name: t\nmetric: {name: val_error, summary: at_best}\n", "metric.summary: expected last or best, got 'at_best'"),
    ("name: t\nreport: [{name: test_error, format: percentage}]\n",
     "report[0].format: expected percent or number, got 'percentage'"),
    ("name: t\naxes:\n  lr: 0.1\n", "axes.lr: expected a non-empty list of values, got 0.1"),
    ("name: t\naxes:\n  lr: [0.1, 0.01, 0.1]\n", "axes.lr[2]: duplicate value 0.1"),
    ("name: t\naxes:\n  colour: [red]\n", "axes.colour: unknown parameter of workload 'allcnn' (known: model, variant, "
                                          "dataset, augmentation, lr, seed, epochs, lr_milestones, lr_gamma, momentum, "
                                          "weight_decay, batch_size, init, dropout_input, dropout_hidden, width, translate, "
                                          "preprocessing, val_size, split_seed, train_size, test_size, data_dir, "
                                          "no_progress_epochs, dead_start_restarts, checkpoint_every, device, precision, "
                                          "channels_last, compile)"),
    ("name: t\naxes:\n  seed: [1, 2]\n", "axes.seed: seeds are set by the top-level 'seeds' or 'repeats' key"),
    ("name: t\naxes:\n  lr: [0.1]\nfixed:\n  lr: 0.2\n", "fixed.lr: is also an axis; give it in one place"),
    (BASE + "exclude:\n  - {model: B}\n", "exclude[0]: matches no trial of the axes"),
    (BASE + "exclude:\n  - {epochs: 2}\n", "exclude[0].epochs: not an axis (axes: model, lr)"),
    (BASE + "exclude:\n  - {model: [A, C]}\n", "the grid expands to zero trials"),
    (BASE + "include:\n  - {model: C}\n", "include[0]: must give every axis; missing lr"),
    (BASE + "seeds: [0, 0]\n", "seeds[1]: duplicate value 0"),
    (BASE + "seeds: [0]\nrepeats: 2\n", "repeats: give either 'seeds' or 'repeats', not both"),
    # How many seeds, written where the seeds go: said how.
    (BASE + "seeds: 3\n", "seeds: expected a non-empty list of integers, got 3 (3 seeds from 0: repeats: 3)"),
    (BASE + "resources:\n  gpus: -1\n", "resources.gpus: expected a number >= 0, got -1"),
    (BASE + "resources:\n  gpu: 1\n", "resources.gpu: unknown key (allowed: cpus, gpus, trials_per_gpu, max_concurrent)"),
    (BASE + "resources:\n  trials_per_gpu: 0\n", "resources.trials_per_gpu: expected an integer >= 1, got 0"),
    (BASE + "resources: 2\n", "resources: expected a mapping with keys cpus, gpus, trials_per_gpu, max_concurrent, got 2"),
    (BASE + "max_failures: -1\n", "max_failures: expected an integer >= 0, got -1"),
    (BASE + "trial_timeout: 0\n", "trial_timeout: expected a number > 0, got 0"),
    (BASE + "trial_timeout: 1 hour\n", "trial_timeout: expected a number > 0, got '1 hour'"),
    (BASE + "exclude: 5\n", "exclude: expected a list, got 5"),
    ("name: t\naxes:\n  checkpoint_every: [1, 5]\n", "axes.checkpoint_every: does not change what a trial computes "
     "(the workload says so: identity false), so it cannot be an axis; set it in fixed"),
    (BASE + "tracking: [[mlflow]]\n", "tracking[0]: expected a tracker's name (mlflow, tensorboard, wandb), got ['mlflow']"),
    (BASE + "halving: {over: [[lr]], rungs: [1], keep: 0.5}\n",
     "halving.over[0]: expected an axis of the grid (axes: model, lr), got ['lr']"),
    ("name: t\nworkload: ':W'\n", "workload: ':W' is not an import path module:object (e.g. mypackage.models:WORKLOAD)"),
    ("name: t\nworkload: '..x:W'\n", "workload: '..x:W' is not an import path module:object (e.g. mypackage.models:WORKLOAD)"),
    # The file itself: duplicate keys, nesting, aliases that multiply.
    (BASE + "  lr_gamma: 0.5\n  lr_gamma: 0.2\n", "refused at line 10, column 3: duplicate key 'lr_gamma' (first given at line 9)"),
    ("name: t\nname: u\n", "refused at line 2, column 1: duplicate key 'name' (first given at line 1)"),
    ("name: t\nfixed: {lr_milestones: " + "[" * 30 + "]" * 30 + "}\n",
     "refused at line 2, column 42: lists and mappings nested deeper than 20 levels"),
    ("name: t\nfixed: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
     "refused at line 2, column 81: lists and mappings nested deeper than 20 levels"),
    ("name: t\nfixed: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML at line 2, column 1007: exceeded maximum nesting depth"),
    ("name: t\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"{b}: &{b} [{', '.join(['*' + a] * 10)}]\n" for a, b in zip("abcdef", "bcdefg")),
     "refused at line 6, column 4: more than 100,000 values (an alias counts its anchor's values each time it is used)"),
    ("name: t\nfixed: {lr: 2024-13-01}\n", "not valid YAML at line 2, column 13: month must be in 1..12"),
    # Values the workload's constraints refuse (workloads/allcnn/__init__.py), with the grid key they came from.
    ("name: t\naxes:\n  lr: [0.1, .nan]\n", "axes.lr[1]: expected a finite float > 0, got nan"),
    ("name: t\nfixed:\n  lr: .inf\n", "fixed.lr: expected a finite float > 0, got inf"),
    ("name: t\nfixed:\n  lr: -0.1\n", "fixed.lr: expected a finite float > 0, got -0.1"),
    ("name: t\nfixed:\n  epochs: -5\n", "fixed.epochs: expected an integer >= 1, got -5"),
    ("name: t\nfixed:\n  epochs: 100000000000000000000\n", "fixed.epochs: expected an integer that fits in 64 bits, got 100000000000000000000"),
    ("name: t\nfixed:\n  batch_size: 0\n", "fixed.batch_size: expected an integer >= 1, got 0"),
    ("name: t\nfixed:\n  width: -1.0\n", "fixed.width: expected a finite float > 0 and <= 16, got -1.0"),
    ("name: t\nfixed:\n  dropout_hidden: 2.0\n", "fixed.dropout_hidden: expected a finite float >= 0 and < 1, got 2.0"),
    ("name: t\nfixed:\n  device: quantum\n",
     "fixed.device: expected a string naming a device: auto, cpu, cuda, cuda:N or mps, got 'quantum'"),
    ("name: t\nfixed:\n  split_seed: -1\n", "fixed.split_seed: expected an integer >= 0, got -1"),
    ("name: t\nfixed:\n  lr_milestones: [300, 200]\n", "fixed.lr_milestones: expected a list in increasing order, got [300, 200]"),
    ("name: t\nfixed:\n  lr_milestones: [0, 200]\n", "fixed.lr_milestones[0]: expected an integer >= 1, got 0"),
    (BASE + "include:\n  - {model: C, lr: -0.5}\n", "include[0].lr: expected a finite float > 0, got -0.5"),
    (BASE + "exclude:\n  - {model: A, lr: [0.1, .nan]}\n", "exclude[0].lr[1]: expected a finite float > 0, got nan"),
    # Rules across parameters: the parameter to blame, and the trial it failed in.
    ("name: t\naxes:\n  dataset: [cifar10]\nfixed:\n  val_size: 60000\n",
     "val_size: expected at most half of the 50,000 training images of cifar10, got 60000 (in the trial dataset='cifar10', seed=0)"),
    # The default val_size of 5,000, for the full CIFAR, would leave 85 of the subset's 5,085 to train on.
    ("name: t\naxes:\n  dataset: [cifar10-subset]\n",
     "val_size: expected at most half of the 5,085 training images of cifar10-subset, got 5000 (in the trial "
     "dataset='cifar10-subset', seed=0)"),
    ("name: t\nfixed:\n  train_size: 60000\n",
     "train_size: expected at most the 50,000 training images of cifar10, got 60000 (in the trial seed=0)"),
    ("name: t\naxes:\n  epochs: [400, 250]\n",
     "lr_milestones: expected milestones below epochs (250), got [200, 250, 300] (in the trial epochs=250, seed=0)"),
    (BASE.replace("  epochs: 2\n", "  epochs: 2\n  train_size: 1000\n  val_size: 200\n  batch_size: 900\n"),
     "batch_size: expected at most the 800 training images left after val_size, got 900 (in the trial model='A', lr=0.1, seed=0)"),
    # Trials are counted before they are expanded.
    (BASE + "repeats: 100000000\n", "the grid expands to 400,000,000 trials, more than max_trials (100,000); "
                                    "set max_trials: N at the top of the grid to run that many"),
    (BASE + "max_trials: 3\nexclude:\n  - {model: A, lr: 0.1}\n", "the grid expands to 4 trials before exclusions, "
     "more than max_trials (3); set max_trials: N at the top of the grid to run that many"),
    (BASE + "max_trials: 0\n", "max_trials: expected an integer >= 1, got 0"),
    # Whatever a file holds, the error stays one line.
    (BASE + "\"col\\nour\": red\n", "col\\nour: unknown key (allowed: name, description, workload, command, axes, fixed, seeds, "
                                     "repeats, exclude, include, metric, mode, report, resources, max_failures, max_trials, trial_timeout, tracking, halving)"),
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


@pytest.mark.parametrize("raw, message", [
    ("name: café\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 9); save the grid file as UTF-8"),
    ("name: t\n".encode("utf-16"), "not UTF-8 text (byte 0xff at offset 0); save the grid file as UTF-8"),
    (bytes(range(256)), "not UTF-8 text (byte 0x80 at offset 128); save the grid file as UTF-8"),
    (b"name: t\x00\n", "not valid YAML at offset 7: control characters are not allowed"),
    (b"# " + b"x" * (1 << 20) + b"\nname: t\n", "larger than 1 MiB; a grid file is a few kilobytes of YAML"),
], ids=["latin-1", "utf-16", "binary", "nul", "too large"])
def test_a_file_that_is_not_a_grid_is_one_line(tmp_path, raw, message):
    path = tmp_path / "grid.yaml"
    path.write_bytes(raw)
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}: {message}\n"


def test_a_float_written_1e_3_is_the_float_yaml_1_1_reads_as_text(tmp_path):
    # PyYAML (YAML 1.1) reads a bare 1e-3 as the string '1e-3'; where the parameter is a float it is 0.001.
    grid = load_grid(write(tmp_path, "name: t\naxes:\n  lr: [1e-3, 5E-4]\nfixed:\n  weight_decay: 1e-4\n"))
    assert [(t.config["lr"], t.config["weight_decay"]) for t in grid.trials] == [(0.001, 0.0001), (0.0005, 0.0001)]
    written = load_grid(write(tmp_path, "name: t\naxes:\n  lr: [0.001, 0.0005]\nfixed:\n  weight_decay: 0.0001\n",
                              name="decimal.yaml"))
    assert [t.trial_id for t in grid.trials] == [t.trial_id for t in written.trials]


def test_max_trials_lets_a_large_grid_through_on_purpose(tmp_path):
    assert len(load_grid(write(tmp_path, BASE + "repeats: 30000\nmax_trials: 120000\n")).trials) == 120_000


def test_anchors_and_merge_keys_still_work(tmp_path):
    grid = load_grid(write(tmp_path, BASE + "include:\n  - &c {model: C, lr: 0.5}\n  - {<<: *c, lr: 0.25}\n"))
    assert {(t.config["model"], t.config["lr"]) for t in grid.trials} >= {("C", 0.5), ("C", 0.25)}


RESOURCE_ERRORS = [  # (option, value, message): the grid's `resources` and `ablate run`'s options share them
    ("gpus", "1.5", "expected a fraction up to 1 or a whole number, got 1.5"),
    ("gpus", "-0.5", "expected a number >= 0, got -0.5"),
    ("cpus", "-0.5", "expected a number > 0, got -0.5"),
    ("trials_per_gpu", "0", "expected an integer >= 1, got 0"),
    ("max_concurrent", "0", "expected an integer >= 1, got 0"),
]


@pytest.mark.parametrize("option, value, message", RESOURCE_ERRORS, ids=[r[0] + "=" + r[1] for r in RESOURCE_ERRORS])
def test_run_options_are_checked_by_the_grid_rules(tmp_path, option, value, message):
    in_file = write(tmp_path, BASE + f"resources:\n  {option}: {value}\n", "in-file.yaml")
    result = CliRunner().invoke(app, ["plan", str(in_file)])
    assert (result.exit_code, result.stderr) == (2, f"error: {in_file}: resources.{option}: {message}\n")

    flag = "--" + option.replace("_", "-")
    result = CliRunner().invoke(app, ["run", str(write(tmp_path, BASE)), "--storage", str(tmp_path / "runs"), flag, value])
    assert (result.exit_code, result.stderr) == (2, f"error: {flag}: {message}\n")
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_trial_timeout_is_a_grid_key_and_an_option_of_run(tmp_path):
    assert load_grid(write(tmp_path, BASE + "trial_timeout: 3600\n")).trial_timeout == 3600
    assert load_grid(write(tmp_path, BASE)).trial_timeout is None
    result = CliRunner().invoke(app, ["run", str(write(tmp_path, BASE)), "--storage", str(tmp_path / "runs"),
                                      "--trial-timeout", "-5"])
    assert (result.exit_code, result.stderr) == (2, "error: --trial-timeout: expected a number > 0, got -5.0\n")
    assert not (tmp_path / "runs").exists()  # refused before anything ran


def test_run_options_gpus_and_trials_per_gpu_exclude_each_other(tmp_path):
    result = CliRunner().invoke(app, ["run", str(write(tmp_path, BASE)), "--gpus", "0.5", "--trials-per-gpu", "2"])
    assert (result.exit_code, result.stderr) == (2, "error: --trials-per-gpu: give either --gpus or --trials-per-gpu, not both\n")


def test_a_users_workload_declares_its_own_constraints(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples.toy_workload imports from the repository root
    path = write(tmp_path, "name: toy\nworkload: examples.toy_workload:WORKLOAD\naxes:\n  lr: [0.5, 1.5]\n")
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert (result.exit_code, result.stderr) == (2, f"error: {path}: axes.lr[1]: expected a finite float > 0 and < 1, got 1.5\n")


def test_a_workload_without_a_seed_parameter_is_one_error(tmp_path, monkeypatch):
    (tmp_path / "seedless.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from workloads.base import Workload

        @dataclass
        class Config:
            lr: float = 0.1

        WORKLOAD = Workload(name="seedless", config=Config, train=lambda config, session: {})
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, "name: s\nworkload: seedless:WORKLOAD\naxes:\n  lr: [0.1, 0.2]\n")
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert (result.exit_code, result.stderr) == (
        2, f"error: {path}: workload: the config of workload 'seedless' (Config) has no `seed: int` parameter\n")


def test_a_workload_path_to_something_else_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "other.py").write_text("WORKLOAD = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, "name: o\nworkload: other:WORKLOAD\n")
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert (result.exit_code, result.stderr) == (
        2, f"error: {path}: workload: 'other:WORKLOAD' is not a workloads.base.Workload (it is of type int)\n")


@pytest.mark.parametrize("code, message", [
    ("import os\nraise RuntimeError('no GPU found')\n", "RuntimeError: no GPU found (broken.py, line 2)"),
    ("WORKLOAD = (\n", "SyntaxError: '(' was never closed (broken.py, line 1)"),
    # Where in the module, not in the library whose call failed (json/decoder.py).
    ("import json\n\nSETTINGS = json.loads('{')\n",
     "JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 2 (char 1) (broken.py, line 3)"),
], ids=["raises", "syntax-error", "in-a-library"])
def test_a_workload_module_that_fails_to_import_is_one_line(tmp_path, monkeypatch, code, message):
    # A mistake in the user's own module is reported where it is, as a grid's mistakes are: no traceback.
    (tmp_path / "broken.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write(tmp_path, "name: b\nworkload: broken:WORKLOAD\n")
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert (result.exit_code, result.stderr) == (
        2, f"error: {path}: workload: cannot import workload 'broken:WORKLOAD': {message}\n")


def test_plan_shows_the_values_the_rules_leave_and_add_and_the_rules(tmp_path):
    # The axes give width 16, 32, 64; exclude drops 64 with depth 18; include adds width 128.
    path = write(tmp_path, "name: rules\ncommand:\n  run: python t.py --width {width} --depth {depth}\n"
                           "  parameters:\n    width: 16\n    depth: 18\n"
                           "axes:\n  width: [16, 32, 64]\n  depth: [18, 34]\nseeds: [0, 1]\n"
                           "exclude:\n  - {width: 64, depth: 18}\ninclude:\n  - {width: 128, depth: 34}\n")
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 0
    assert result.stdout.startswith("rules: 12 trials")
    rows = [[part.strip() for part in line.split("│")[1:-1]] for line in result.stdout.splitlines() if "│" in line]
    assert rows == [["width", "16 (4 trials), 32 (4 trials), 64 (2 trials), 128 (2 trials)", "4"],
                    ["depth", "18 (4 trials), 34 (8 trials)", "2"], ["seed", "0, 1", "2"]]
    assert "\nexclude: width=64, depth=18\ninclude: width=128, depth=34\n" in result.stdout
    # Where no rule changes an axis, its values are as the file gives them.
    plain = CliRunner().invoke(app, ["plan", str(write(tmp_path, BASE, "plain.yaml"))]).stdout
    assert "│ model │ A, C      │     2 │" in plain
