"""Guided backpropagation: the ReLU rules, and `ablate visualize` on a trained trial."""
from __future__ import annotations

import subprocess

import matplotlib.image
import pytest
import torch
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.run.session import StoredSession
from orchestrator.store.records import Publisher, trial_schema, write_record
from orchestrator.store.rundir import RunDir
from workloads.allcnn import Config
from workloads.allcnn.models import build
from workloads.allcnn.train import train
from workloads.allcnn.visualize import RuleReLU, layers, reconstruct, top_units, with_rule_relus


@pytest.mark.parametrize("rule, expected", [
    ("gradient", [0.0, -1.0, 2.0, 0.0]),   # where the forward input was positive
    ("deconvnet", [1.0, 0.0, 2.0, 3.0]),   # where the arriving gradient is positive
    ("guided", [0.0, 0.0, 2.0, 0.0]),      # both
])
def test_relu_backward_rules_by_hand(rule, expected):
    x = torch.tensor([-1.0, 2.0, 3.0, -4.0], requires_grad=True)
    y = RuleReLU(rule)(x)
    assert y.tolist() == [0.0, 2.0, 3.0, 0.0]  # the forward pass is a ReLU under every rule
    y.backward(torch.tensor([1.0, -1.0, 2.0, 3.0]))
    assert x.grad.tolist() == expected


def test_the_three_methods_differ_on_a_network():
    torch.manual_seed(0)
    net = with_rule_relus(build("C", "all", width=0.25)).eval()
    index = layers(net)["conv4"]
    images = torch.randn(8, 3, 32, 32)
    (unit,) = top_units(net, index, images, 1)
    maps = {rule: reconstruct(net, index, images[unit[1]], unit, rule) for rule in ("guided", "gradient", "deconvnet")}
    assert not torch.allclose(maps["guided"], maps["gradient"])
    assert not torch.allclose(maps["guided"], maps["deconvnet"])
    assert not torch.allclose(maps["gradient"], maps["deconvnet"])
    # The plain gradient is the true derivative: it matches autograd through ordinary ReLUs.
    plain = build("C", "all", width=0.25).eval()
    plain.load_state_dict(net.state_dict())
    image = images[unit[1]][None].clone().requires_grad_(True)
    channel, _, y, x, _ = unit
    plain[: index + 1](image)[0, channel, y, x].backward()
    assert torch.allclose(image.grad[0], maps["gradient"], atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with one trained All-CNN-C trial, stored as `ablate run` stores it."""
    import os

    root = tmp_path_factory.mktemp("vis")
    saved_data = os.environ.get("ABLATE_DATA")
    os.environ["ABLATE_DATA"] = str(root / "data")
    run = RunDir(str(root / "run"))
    run.write_bytes(run.child("grid.yaml"), b"name: run\nworkload: allcnn\n")
    config = Config(model="C", variant="all", dataset="synthetic", width=0.125, epochs=1, batch_size=32,
                    train_size=300, val_size=50, test_size=100, device="cpu")
    session = StoredSession(run, "t1")
    session.start()
    result = train(config, session)
    session.flush()  # as the runner does: the last epoch's checkpoint is written
    write_record(run, trial_schema(Config), "t1", vars(config), result, session.epochs)
    Publisher(run).catch_up()
    yield root / "run"
    if saved_data is None:
        os.environ.pop("ABLATE_DATA", None)
    else:
        os.environ["ABLATE_DATA"] = saved_data


@pytest.fixture
def trained_on_photos(real_images, tmp_path):
    """A run with one All-CNN-C trial trained for a few CPU epochs on real CIFAR-10 images."""
    run = RunDir(str(tmp_path / "photos"))
    run.write_bytes(run.child("grid.yaml"), b"name: photos\nworkload: allcnn\n")
    config = Config(model="C", variant="all", dataset="cifar10-subset", width=0.25, epochs=2, lr=0.02,
                    lr_milestones=[], batch_size=32, train_size=1200, val_size=200, test_size=200,
                    dropout_input=0.0, dropout_hidden=0.0, device="cpu")
    session = StoredSession(run, "photo")
    session.start()
    result = train(config, session)
    session.flush()
    write_record(run, trial_schema(Config), "photo", vars(config), result, session.epochs)
    Publisher(run).catch_up()
    return tmp_path / "photos", result


def test_visualize_shows_what_units_respond_to_in_real_photos(trained_on_photos, tmp_path):
    from workloads.allcnn.data import prepare

    run, result = trained_on_photos
    assert result["status"] == "completed" and result["synthetic_data"] is False
    out = tmp_path / "photos.png"
    shown = invoke(run, "--trial", "photo", "--output", out, "--units", 4, "--images", 200)
    assert shown.exit_code == 0, shown.stderr
    assert " ".join(shown.stdout.split()).startswith(f"wrote {out}: layer conv6, units ")
    assert matplotlib.image.imread(out).shape[:2] == (4 * 120 + 40, 4 * 120)

    # Each unit is drawn on the real test photo where it peaks, and guided backpropagation
    # reconstructs a pattern within the unit's receptive field: 19 x 19 pixels for conv6 of
    # All-CNN-C (three 3x3 convs per stride-2 step), not the whole 32 x 32 photo.
    state = RunDir(str(run)).checkpoint("photo")["state"]
    net = build("C", "all", 10, 0.25)
    net.load_state_dict(state["model"])
    photos = prepare("cifar10-subset", val_size=200, train_size=1200, test_size=200).x_test
    guided = with_rule_relus(net).eval()
    index = layers(guided)["conv6"]
    for unit in top_units(guided, index, photos, 4):
        grad = reconstruct(guided, index, photos[unit[1]], unit, "guided").abs().sum(0)
        assert unit[4] > 0 and grad.max() > 0
        assert (grad > 0).sum() <= 19 * 19


def test_the_input_patch_is_the_photo_itself_after_zca_whitening(data_dir, monkeypatch):
    # The network sees ZCA-whitened images (edges and stripes); the figure shows the test photo.
    from workloads.allcnn import data
    from workloads.allcnn import visualize as vis
    from workloads.allcnn.data import synthetic
    from workloads.base import MemorySession

    config = Config(model="C", variant="all", dataset="synthetic", width=0.125, epochs=1, batch_size=32,
                    train_size=300, val_size=50, test_size=40, preprocessing="zca", device="cpu")
    session = MemorySession()
    train(config, session)
    drawn, loads = [], []
    monkeypatch.setattr(vis, "figure", lambda rows, columns, labels, output: drawn.extend(rows))
    load_arrays = data.load_arrays
    monkeypatch.setattr(data, "load_arrays", lambda *args, **kwargs: (loads.append(args), load_arrays(*args, **kwargs))[1])
    vis.visualize_state(config, session.checkpoint, data_dir / "x.png", units=3, images=40, methods=("guided",))
    assert len(loads) == 1  # the dataset's arrays, loaded once for the network's input and the photos (were twice)

    photos = torch.from_numpy(synthetic(10, 300, 40)["x_test"]).float() / 255
    for tile, _ in drawn:
        _, h, w = tile.shape
        assert any(torch.allclose(photo[:, y:y + h, x:x + w], tile) for photo in photos
                   for y in range(33 - h) for x in range(33 - w))


def invoke(*args):
    return CliRunner().invoke(app, ["visualize", *map(str, args)])


@pytest.mark.parametrize("units, methods, size", [(6, "guided,gradient,deconvnet", (480, 760)), (2, "guided", (240, 280))])
def test_visualize_writes_one_row_per_unit_and_a_column_per_method(trained, tmp_path, units, methods, size):
    out = tmp_path / "units.png"
    result = invoke(trained, "--trial", "t1", "--output", out, "--units", units, "--methods", methods)
    assert result.exit_code == 0, result.stderr
    assert "layer conv6" in result.stdout  # All-CNN-C: the strided conv that replaced the second pool
    height, width, _ = matplotlib.image.imread(out).shape
    assert (width, height) == size


def test_the_file_written_is_the_one_named_and_said(trained, tmp_path):
    # Without a suffix matplotlib would add ".png" and write units.png while saying "wrote units".
    out = tmp_path / "units"
    result = invoke(trained, "--trial", "t1", "--output", out, "--units", 2, "--methods", "guided")
    assert result.exit_code == 0, result.stderr
    assert " ".join(result.stdout.split()).startswith(f"wrote {out}: ")
    assert matplotlib.image.imread(out, format="png").shape[:2] == (2 * 120 + 40, 2 * 120)
    assert not (tmp_path / "units.png").exists()


def test_an_output_that_is_a_folder_is_one_line(trained, tmp_path):
    result = invoke(trained, "--trial", "t1", "--output", tmp_path)
    assert result.exit_code == 1
    assert result.stderr == f"error: --output {tmp_path}: is a folder; name the file to write\n"


@pytest.mark.parametrize("args, message", [
    (["--trial", "nope"], "unknown trial 'nope' (for example: t1)"),
    (["--trial", "t1", "--layer", "conv99"], "trial 't1': unknown layer 'conv99' (layers: conv1, conv2, conv3, conv4, "
                                             "conv5, conv6, conv7, conv8, conv9)"),
    (["--trial", "t1", "--methods", "guided,magic"], "trial 't1': unknown method 'magic' (methods: guided, gradient, deconvnet)"),
])
def test_visualize_errors(trained, tmp_path, args, message):
    result = invoke(trained, *args, "--output", tmp_path / "x.png")
    assert result.exit_code == 1
    assert result.stderr == f"error: {trained}: {message}\n"


@pytest.mark.parametrize("args, message", [
    (["--units", "-3"], "--units: expected an integer >= 1, got -3"),
    (["--units", "0"], "--units: expected an integer >= 1, got 0"),
    (["--images", "0"], "--images: expected an integer >= 1, got 0"),
    (["--images", "-5"], "--images: expected an integer >= 1, got -5"),
    (["--methods", ","], "--methods: expected a string that names at least one method, got ','"),
])
def test_option_values_out_of_range_are_one_line(trained, tmp_path, args, message):
    result = invoke(trained, "--trial", "t1", "--output", tmp_path / "x.png", *args)
    assert result.exit_code == 1
    assert result.stderr == f"error: {message}\n"
    assert not (tmp_path / "x.png").exists()


def test_a_trial_without_checkpoint(trained, tmp_path):
    checkpoint = trained / "trials" / "t1" / "checkpoint.pt"
    saved = checkpoint.read_bytes()
    checkpoint.unlink()
    try:
        result = invoke(trained, "--trial", "t1", "--output", tmp_path / "x.png")
        assert result.exit_code == 1
        assert result.stderr == f"error: {trained}: trial 't1' (completed) has no checkpoint to load\n"
    finally:
        checkpoint.write_bytes(saved)


@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_a_trained_trial_whose_epochs_file_is_gone_still_loads_its_checkpoint(trained, tmp_path, damage):
    # Its epochs are in the run's tables; visualize needs only the training state, which is whole.
    epochs = trained / "trials" / "t1" / "epochs.jsonl"
    saved = epochs.read_bytes()
    epochs.unlink() if damage == "deleted" else epochs.write_bytes(b"")
    try:
        result = invoke(trained, "--trial", "t1", "--output", tmp_path / "x.png", "--units", 2, "--methods", "guided")
        assert result.exit_code == 0, result.stderr
        assert (tmp_path / "x.png").exists()
    finally:
        epochs.write_bytes(saved)


def test_visualize_refuses_a_run_of_another_workload(tmp_path):
    from tests.probe import Config as ProbeConfig

    run = RunDir(str(tmp_path / "probe"))
    run.write_bytes(run.child("grid.yaml"), b"name: probe\nworkload: tests.probe:WORKLOAD\n")
    write_record(run, trial_schema(ProbeConfig), "p1", vars(ProbeConfig()), {"status": "completed"})
    result = invoke(tmp_path / "probe", "--trial", "p1", "--output", tmp_path / "x.png")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path / 'probe'}: visualize is a command of workload 'allcnn'; "
                             "this run is of workload 'tests.probe:WORKLOAD' (not registered)\n")


def on_cifar10(trained, run):
    """A copy of the trained run whose trial says it trained on CIFAR-10: visualize loads that."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copytree(trained, run)
    table = pq.read_table(run / "trials.parquet")
    column = table.schema.get_field_index("dataset")
    pq.write_table(table.set_column(column, "dataset", pa.array(["cifar10"] * len(table))), run / "trials.parquet")
    return run


@pytest.mark.parametrize("named_by", ["ABLATE_DATA", "--data-dir"])
def test_a_dataset_that_cannot_be_loaded_is_one_line(trained, tmp_path, monkeypatch, named_by):
    """A workload's own error (here a corrupted CIFAR-10 archive, as after an interrupted download)
    is one `error:` line, not a traceback; the data directory is the one named, by either means."""
    import hashlib

    from workloads.allcnn.data import SOURCES

    run = on_cifar10(trained, tmp_path / "run")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"half a download")
    if named_by == "ABLATE_DATA":
        monkeypatch.setenv("ABLATE_DATA", str(archive.parent))
        result = invoke(run, "--trial", "t1", "--output", tmp_path / "x.png")
    else:
        monkeypatch.setenv("ABLATE_DATA", str(tmp_path / "elsewhere"))
        result = invoke(run, "--trial", "t1", "--output", tmp_path / "x.png", "--data-dir", archive.parent)
    assert result.exit_code == 1
    assert result.stderr == (f"error: {archive}: checksum mismatch (md5 {hashlib.md5(b'half a download').hexdigest()}, "
                             f"expected {SOURCES['cifar10'].md5}): the archive is corrupted or incomplete; "
                             "delete it and run again\n")


def test_a_data_directory_that_is_a_file_is_one_line(trained, tmp_path, monkeypatch):
    run = on_cifar10(trained, tmp_path / "run")
    (tmp_path / "data").write_text("")
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path / "data"))
    result = invoke(run, "--trial", "t1", "--output", tmp_path / "x.png")
    assert result.exit_code == 1
    assert result.stderr == (f"error: {tmp_path / 'data'}: cannot use as the data directory ([Errno 17] File exists: "
                             f"'{tmp_path / 'data'}')\n")


class CreatesAFile:
    """What a tampered checkpoint holds: an object whose unpickling calls open(path, "w")."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("form", ["a plain pickle", "a torch.save zip"])
def test_a_checkpoint_that_would_run_code_is_refused_in_one_line(trained, tmp_path, form):
    """A teammate's run directory, opened here: its checkpoint must not run code on this machine."""
    import pickle
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    checkpoint, marker = run / "trials" / "t1" / "checkpoint.pt", tmp_path / "created-by-the-checkpoint"
    payload = {"state": CreatesAFile(marker), "epochs": []}
    if form == "a plain pickle":
        checkpoint.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, checkpoint)
    result = invoke(run, "--trial", "t1", "--output", tmp_path / "x.png")
    assert result.exit_code == 1 and not marker.exists()
    assert result.stderr == (f"error: {checkpoint}: refused: it names io.open, which loading it would run; a checkpoint "
                             "holds only tensors and plain values (delete the file to train the trial from its start)\n")
    shutil.copy(trained / "trials" / "t1" / "checkpoint.pt", checkpoint)  # the trial's own: drawn again
    assert invoke(run, "--trial", "t1", "--output", tmp_path / "x.png", "--units", 2).exit_code == 0


@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_a_figure_on_a_full_disk_is_one_line(trained, tmp_path, suffix):
    # matplotlib's PDF writer met the full disk with an AttributeError of its own: a traceback.
    folder = tmp_path / "out"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (folder / "filler").write_bytes(b"x" * 64 * 1024)
        output = folder / f"units{suffix}"
        result = invoke(trained, "--trial", "t1", "--output", output, "--units", 2, "--images", 50)
        left = output.exists()
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
    assert result.exit_code == 1
    assert result.stderr == f"error: --output {output}: cannot write it (No space left on device)\n"
    assert not left  # no file cut short
