"""CIFAR archives, downloads, splits, preprocessing and augmentation."""
from __future__ import annotations

import dataclasses
import io
import socket
import subprocess

import numpy as np
import pytest
import torch

from tests.cifar_archives import Server, make_archive
from workloads.allcnn import data
from workloads.allcnn.data import SOURCES, DataError, augment, fit_zca, prepare


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """Official-format archives served from localhost; SOURCES point at them with their MD5s."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    with Server(folder) as server:
        for name, source in SOURCES.items():
            md5 = make_archive(folder / source.filename, name)
            monkeypatch.setitem(SOURCES, name, dataclasses.replace(source, url=f"{server.url}/{source.filename}", md5=md5))
        yield server


def test_download_checks_the_checksum_and_caches(mirror, data_dir):
    splits = prepare("cifar10", val_size=20)
    assert mirror.requests == 1
    assert (data_dir / "cifar-10-python.tar.gz").exists()
    assert splits.x_train.shape == (5 * 40 - 20, 3, 32, 32) and splits.x_val.shape == (20, 3, 32, 32)
    assert splits.x_test.shape == (30, 3, 32, 32) and splits.classes == 10
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64
    prepare("cifar10", val_size=20)
    assert mirror.requests == 1  # the second trial reads the cache


def test_a_damaged_cache_is_made_again_from_the_archive(mirror, data_dir):
    # A disk fault, or a copy cut short: the archive on disk is verified, so nothing is downloaded.
    whole = prepare("cifar10", val_size=20)
    cache = data_dir / "cifar10.npz"
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    assert torch.equal(prepare("cifar10", val_size=20).x_test, whole.x_test)
    assert mirror.requests == 1
    with np.load(cache) as f:
        assert f["x_train"].shape == (200, 3, 32, 32)  # whole again


def test_cifar100_uses_fine_labels(mirror, data_dir):
    splits = prepare("cifar100", val_size=10)
    assert splits.classes == 100 and len(splits.y_train) == 40 - 10
    assert int(splits.y_train.max()) >= 20  # fine labels, not the 20 coarse ones


def test_archive_put_in_place_by_hand_needs_no_network(tmp_path, data_dir, monkeypatch):
    data_dir.mkdir()
    md5 = make_archive(data_dir / "cifar-10-python.tar.gz")
    monkeypatch.setitem(SOURCES, "cifar10", dataclasses.replace(SOURCES["cifar10"], url="http://127.0.0.1:9/x/cifar-10-python.tar.gz", md5=md5))
    assert len(prepare("cifar10", val_size=0).y_train) == 200


def test_corrupted_download_is_a_clear_error(mirror, data_dir, tmp_path):
    served = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    served.write_bytes(served.read_bytes()[: served.stat().st_size // 2])  # a download cut in half
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: checksum mismatch \(md5 [0-9a-f]{32}, expected [0-9a-f]{32}\): "
                                        r"the archive is corrupted or incomplete; delete it and run again"):
        prepare("cifar10")
    assert mirror.requests == 1
    assert not (data_dir / "cifar10.npz").exists()  # no silently bad dataset


def test_a_download_cut_short_leaves_no_archive_and_the_next_run_gets_the_rest(mirror, data_dir, tmp_path):
    size = (tmp_path / "mirror" / "cifar-10-python.tar.gz").stat().st_size
    mirror.cut, mirror.ranges = 1, True
    with pytest.raises(DataError) as e:
        prepare("cifar10")
    assert str(e.value) == (f"cifar-10-python.tar.gz is not in {data_dir} and downloading {mirror.url}/cifar-10-python"
                            f".tar.gz failed (the transfer stopped after {size // 2:,} of {size:,} bytes; run again to "
                            f"continue it); download it by hand and put it in {data_dir}")
    assert not (data_dir / "cifar-10-python.tar.gz").exists()
    assert len(prepare("cifar10", val_size=20).y_train) == 180  # and its MD5 checked: the same file
    assert mirror.asked == [None, f"bytes={size // 2}-"]


def test_a_server_that_does_not_resume_sends_the_archive_whole_again(mirror, data_dir):
    mirror.cut = 1
    with pytest.raises(DataError, match="the transfer stopped after"):
        prepare("cifar10")
    assert len(prepare("cifar10", val_size=20).y_train) == 180
    assert mirror.requests == 2


def test_a_kept_part_that_is_whole_already_is_downloaded_again(mirror, data_dir, tmp_path):
    # A download killed between its last byte and the rename: the server has nothing after it (416).
    whole = (tmp_path / "mirror" / "cifar-10-python.tar.gz").read_bytes()
    data_dir.mkdir()
    (data_dir / "cifar-10-python.tar.part").write_bytes(whole)
    mirror.ranges = True
    assert len(prepare("cifar10", val_size=20).y_train) == 180
    assert mirror.asked == [f"bytes={len(whole)}-", None]


def test_archive_with_the_right_checksum_but_wrong_content(tmp_path, data_dir, monkeypatch):
    data_dir.mkdir()
    archive = data_dir / "cifar-10-python.tar.gz"
    archive.write_bytes(b"not a tar file at all")
    import hashlib

    monkeypatch.setitem(SOURCES, "cifar10", dataclasses.replace(SOURCES["cifar10"], md5=hashlib.md5(archive.read_bytes()).hexdigest()))
    with pytest.raises(DataError, match="not a readable cifar-10-batches-py archive"):
        prepare("cifar10")


def test_offline_with_nothing_cached_says_what_is_missing_and_where(data_dir, monkeypatch):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(SOURCES, "cifar10", dataclasses.replace(SOURCES["cifar10"], url=f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"))
    with pytest.raises(DataError) as e:
        prepare("cifar10")
    message = str(e.value)
    assert message.startswith(f"cifar-10-python.tar.gz is not in {data_dir} and downloading http://127.0.0.1:{port}/")
    assert message.endswith(f"download it by hand and put it in {data_dir}")
    assert not list(data_dir.glob("*.part"))


@pytest.mark.parametrize("dataset, preprocessing", [("cifar10", "channel"), ("synthetic", "zca")])
def test_a_data_directory_that_is_a_file_is_one_error(data_dir, dataset, preprocessing):
    data_dir.write_text("")
    with pytest.raises(DataError) as e:
        prepare(dataset, train_size=300, val_size=50, test_size=50, preprocessing=preprocessing)
    assert str(e.value) == f"{data_dir}: cannot use as the data directory ([Errno 17] File exists: '{data_dir}')"
    with pytest.raises(DataError) as e:  # --data-dir: a folder under that file
        prepare(dataset, train_size=300, val_size=50, test_size=50, preprocessing=preprocessing, root=str(data_dir / "sub"))
    assert str(e.value).startswith(f"{data_dir / 'sub'}: cannot use as the data directory ([Errno 20] Not a directory")


@pytest.mark.parametrize("dataset, preprocessing, lock", [("cifar10", "channel", "cifar10.lock"),
                                                         ("synthetic", "zca", "zca-synthetic-300-50-0.pt.lock")])
def test_a_data_directory_that_cannot_be_written_is_one_error(data_dir, dataset, preprocessing, lock):
    # Made immutable (chattr +i holds for root, where chmod does not), as a read-only disk would be.
    data_dir.mkdir()
    probe = subprocess.run(["chattr", "+i", str(data_dir)], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no immutable folders on this filesystem: {probe.stderr.decode().strip()}")
    try:
        with pytest.raises(DataError) as e:
            prepare(dataset, train_size=300, val_size=50, test_size=50, preprocessing=preprocessing)
    finally:
        subprocess.run(["chattr", "-i", str(data_dir)], check=True)
    assert str(e.value) == (f"{data_dir}: cannot use as the data directory ([Errno 1] Operation not permitted: "
                            f"'{data_dir / lock}')")


def test_the_real_cifar10_subset_loads_as_what_it_is(real_images):
    splits = prepare("cifar10-subset", val_size=1000)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (4085, 1000, 1017)
    assert splits.classes == 10 and set(splits.y_test.tolist()) == set(range(10))
    assert splits.synthetic is False
    # The fingerprint is of the file's images and labels, whatever the split: rows tell the subset apart.
    assert splits.fingerprint == prepare("cifar10-subset", val_size=0).fingerprint


def test_the_real_subset_missing_is_one_line_saying_where_to_put_it(data_dir):
    with pytest.raises(DataError) as e:
        prepare("cifar10-subset")
    assert str(e.value) == (f"cifar10-subset.npz is not in {data_dir} and is never downloaded: copy it there (the "
                            "project keeps it in shared/data/ beside the repository) or name the folder that holds "
                            "it with --data-dir or ABLATE_DATA")


def test_a_file_that_is_not_the_subset_is_refused(data_dir):
    data_dir.mkdir()
    np.savez(data_dir / "cifar10-subset.npz", x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 3, 32, 32), np.uint8), y_test=np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"cifar10-subset.npz: x_train is uint8 \(4, 32, 32, 3\), expected uint8 "
                                        r"\(N, 3, 32, 32\)"):
        prepare("cifar10-subset", val_size=0)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


def test_validation_split_is_disjoint_from_train_and_test(mirror, data_dir):
    splits = prepare("cifar10", val_size=50, preprocessing="channel")
    train, val, test = _rows(splits.x_train), _rows(splits.x_val), _rows(splits.x_test)
    assert len(val) == 50 and len(train) == 150
    assert not val & train and not val & test and not train & test


def test_validation_split_is_seeded():
    a_train, a_val = data.split(1000, 100, seed=0)
    b_train, b_val = data.split(1000, 100, seed=0)
    _, c_val = data.split(1000, 100, seed=1)
    assert np.array_equal(a_val, b_val) and not np.array_equal(a_val, c_val)
    assert sorted([*a_train, *a_val]) == list(range(1000))


def test_validation_split_must_fit():
    with pytest.raises(DataError, match="val_size 1000 must be at least 0 and below the training set size 1000"):
        data.split(1000, 1000, seed=0)


def test_synthetic_data_is_deterministic_and_class_dependent():
    a, b = data.synthetic(10, 500, 100), data.synthetic(10, 500, 100)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    x, y = a["x_train"].astype(np.float32), a["y_train"]
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    # Images of one class share a pattern: class means differ far more than noise would make them.
    assert np.abs(means[0] - means[1]).mean() > 10


def test_channel_normalization_uses_training_statistics(data_dir):
    splits = prepare("synthetic", train_size=600, val_size=100, test_size=100)
    assert splits.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (splits.x_train.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-3


def test_zca_whitens_correlated_data():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(8, 8, generator=g)
    x = torch.randn(20000, 8, generator=g) @ mix * 10
    mean, w = fit_zca(x, bias=1e-6)
    white = (x - mean) @ w
    assert torch.allclose(white.T @ white / len(x), torch.eye(8), atol=0.05)
    assert torch.allclose(w, w.T, atol=1e-4)  # ZCA: the symmetric whitening, closest to the input


def test_zca_preprocessing_is_fitted_once_and_cached(data_dir):
    splits = prepare("synthetic", train_size=300, val_size=50, test_size=50, preprocessing="zca")
    assert splits.x_train.shape == (250, 3, 32, 32) and torch.isfinite(splits.x_train).all()
    cached = list(data_dir.glob("zca-*.pt"))
    assert len(cached) == 1
    again = prepare("synthetic", train_size=300, val_size=50, test_size=50, preprocessing="zca")
    assert torch.equal(splits.x_val, again.x_val)


ZCA = {"train_size": 300, "val_size": 50, "test_size": 50, "preprocessing": "zca"}


class Killed(BaseException):
    """A SIGKILL, as far as the code that was running can tell: nothing after it runs."""


def test_a_worker_killed_while_writing_the_zca_cache_leaves_none(data_dir, monkeypatch):
    save = torch.save

    def killed_halfway(obj, f):
        buffer = io.BytesIO()
        save(obj, buffer)
        with open(f, "wb") as out:
            out.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise Killed

    monkeypatch.setattr(torch, "save", killed_halfway)
    with pytest.raises(Killed):
        prepare("synthetic", **ZCA)
    assert not list(data_dir.glob("zca-*.pt"))
    monkeypatch.setattr(torch, "save", save)
    assert torch.isfinite(prepare("synthetic", **ZCA).x_train).all()


def test_a_zca_cache_cut_short_is_fitted_again(data_dir):
    # What an older ablate, which wrote the cache in place, left of a worker killed while writing it.
    whole = prepare("synthetic", **ZCA)
    (cached,) = data_dir.glob("zca-*.pt")
    cached.write_bytes(cached.read_bytes()[: cached.stat().st_size // 2])
    assert torch.equal(prepare("synthetic", **ZCA).x_val, whole.x_val)
    assert [tuple(t.shape) for t in torch.load(cached)] == [(3072,), (3072, 3072)]  # whole again


def test_augmentation_flips_about_half_and_keeps_shapes():
    x = torch.arange(32.0).expand(1000, 3, 32, 32).clone()
    out = augment(x, flip=True, translate=0, generator=torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 31).float().mean().item()
    assert out.shape == x.shape and 0.45 < flipped < 0.55
    assert torch.equal(torch.sort(out, dim=3).values, torch.sort(x, dim=3).values)  # pixels moved, not changed


def test_augmentation_translates_by_up_to_r_pixels():
    r, x = 5, torch.ones(2000, 3, 32, 32)
    out = augment(x, flip=False, translate=r, generator=torch.Generator().manual_seed(0))
    zero_rows = (out[:, 0].sum(dim=2) == 0).sum(dim=1)
    zero_cols = (out[:, 0].sum(dim=1) == 0).sum(dim=1)
    assert out.shape == x.shape
    assert zero_rows.max() == r and zero_cols.max() == r  # never more than r pixels
    assert set(zero_rows.tolist()) == set(range(r + 1))  # every shift happens
    # Shifts are uniform over -r..r: no empty row for 1 in 2r+1 images, k empty rows for 2 in 2r+1.
    assert abs((zero_rows == 0).float().mean() - 1 / (2 * r + 1)) < 0.03
    assert abs((zero_rows == 3).float().mean() - 2 / (2 * r + 1)) < 0.03
    kept = out.sum(dim=(1, 2, 3)) / x[0].sum()
    assert kept.min() >= (32 - r) ** 2 / 32**2


def test_augmentation_is_reproducible_from_the_generator():
    x = torch.randn(16, 3, 32, 32)
    a = augment(x, True, 4, torch.Generator().manual_seed(3))
    b = augment(x, True, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
