"""Datasets for the All-CNN study: CIFAR-10/100 from the official archives, a subset of real
CIFAR-10 images, and synthetic data.

CIFAR is downloaded once into the data directory (`ABLATE_DATA`, default ~/.cache/ablate/data),
checked against the archive's published MD5, decoded from the official python-format batches and
cached as one .npz. `cifar10-subset` is 5,085 training and 1,017 test images of the real CIFAR-10
(`cifar10-subset.npz`, ../shared/data/README.md), read from the data directory and never
downloaded: real photos for tests, demos and `visualize` on a CPU, not the paper's dataset.
`synthetic` is CIFAR-shaped, deterministic and learnable: for smoke runs, benchmarks and
machines without internet.

Splits: a seeded validation split is held out of the training set to choose the learning rate;
the test set is only for the final number. Preprocessing (per-channel normalization, or the
paper's GCN + ZCA whitening) is fitted on the training split alone.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zipfile
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from workloads.allcnn.paper import CLASSES, DATASETS, PREPROCESSING, SIZES
from workloads.base import WorkloadError


class DataError(WorkloadError):
    """A dataset that cannot be had: missing offline, corrupted, unreadable."""


@dataclass(frozen=True)
class Source:
    url: str
    md5: str
    folder: str  # top folder inside the archive
    train: tuple[str, ...]
    test: str
    label_key: bytes
    classes: int

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# The official archives (https://www.cs.toronto.edu/~kriz/cifar.html) and their published MD5s.
SOURCES = {
    "cifar10": Source("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                      "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", b"labels", 10),
    "cifar100": Source("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                       "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python",
                       ("train",), "test", b"fine_labels", 100),
}


# Datasets that exist only as a file a user puts in the data directory: name -> file name.
LOCAL = {"cifar10-subset": "cifar10-subset.npz"}
_LOCAL_ARRAYS = {"x_train": (np.uint8, (3, 32, 32)), "y_train": (np.int64, ()),
                 "x_test": (np.uint8, (3, 32, 32)), "y_test": (np.int64, ())}


def data_dir(override: str = "") -> Path:
    return Path(override or os.environ.get("ABLATE_DATA") or Path.home() / ".cache" / "ablate" / "data")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(source: Source, root: Path) -> Path:
    """The archive in `root`, downloaded first if it is not there, checked against its MD5.

    A download that fails midway keeps what it received in `cifar-10-python.tar.part` (the
    archive's name with `.part` for its last suffix), never under the archive's name, and the
    next call asks the server for the rest (an HTTP Range request).
    """
    archive = root / source.filename
    if not archive.exists():
        partial = archive.with_suffix(".part")
        try:
            _fetch(source.url, partial)
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"{source.filename} is not in {root} and downloading {source.url} failed "
                            f"({e}); download it by hand and put it in {root}") from None
        partial.rename(archive)
    digest = _md5(archive)
    if digest != source.md5:
        raise DataError(f"{archive}: checksum mismatch (md5 {digest}, expected {source.md5}): the archive "
                        "is corrupted or incomplete; delete it and run again")
    return archive


def _fetch(url: str, partial: Path) -> None:
    """`url` into `partial`, after the bytes it holds where the server resumes (206), else whole."""
    have = partial.stat().st_size if partial.exists() else 0
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have
                                                                 else {}), timeout=60)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:
            raise
        partial.unlink()  # 416: what is kept is no prefix of the file (whole already, or the file changed)
        return _fetch(url, partial)
    start = have if response.status == 206 else 0
    with response, open(partial, "ab" if start else "wb") as f:
        announced, received = response.headers.get("Content-Length"), 0
        while block := response.read(1 << 20):
            f.write(block)
            received += len(block)
    # A server that closes the connection early ends urllib's reads as if the file had ended.
    if announced is not None and received < int(announced):
        raise ConnectionError(f"the transfer stopped after {start + received:,} of {start + int(announced):,} "
                              "bytes; run again to continue it")


def _read_archive(archive: Path, source: Source) -> dict[str, np.ndarray]:
    def batch(tar, name):
        member = tar.extractfile(f"{source.folder}/{name}")
        d = pickle.load(member, encoding="bytes")
        return d[b"data"].reshape(-1, 3, 32, 32), np.asarray(d[source.label_key], dtype=np.int64)

    try:
        with tarfile.open(archive, "r:gz") as tar:
            train = [batch(tar, name) for name in source.train]
            x_test, y_test = batch(tar, source.test)
    except (tarfile.TarError, KeyError, pickle.UnpicklingError, EOFError, ValueError, OSError) as e:
        raise DataError(f"{archive}: not a readable {source.folder} archive ({e})") from None
    return {"x_train": np.concatenate([x for x, _ in train]), "y_train": np.concatenate([y for _, y in train]),
            "x_test": x_test, "y_test": y_test}


@contextlib.contextmanager
def _usable(root: Path):
    """The data directory's own errors (a file of that name, a folder not writable) as one line."""
    try:
        yield
    except OSError as e:
        raise DataError(f"{root}: cannot use as the data directory ({e})") from None


def load_cifar(name: str, root: Path) -> dict[str, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and int64 labels of the official train and test sets."""
    source = SOURCES[name]
    cache = root / f"{name}.npz"
    with _usable(root):
        root.mkdir(parents=True, exist_ok=True)
        arrays = _read_cache(cache)  # written aside and renamed: whole wherever it is
        if arrays is None:
            # Several trials on one machine may start together: one downloads, the others wait.
            with FileLock(str(root / f"{name}.lock")):
                arrays = _read_cache(cache)  # made while this one waited
                if arrays is None:
                    arrays = _read_archive(download(source, root), source)
                    tmp = root / f".{name}.tmp.npz"
                    np.savez(tmp, **arrays)
                    tmp.rename(cache)
        return arrays


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays cached at `path`; None where there is no cache, or a damaged one (a disk fault, a
    copy cut short), which is made again from the verified archive."""
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        return None


def load_local(name: str, root: Path) -> dict[str, np.ndarray]:
    """The arrays of a dataset that is only ever a local file (LOCAL), checked for the layout
    of the official batches: uint8 images (N, 3, 32, 32) and int64 labels."""
    path = root / LOCAL[name]
    if not path.is_file():
        raise DataError(f"{LOCAL[name]} is not in {root} and is never downloaded: copy it there (the project "
                        "keeps it in shared/data/ beside the repository) or name the folder that holds it with --data-dir or ABLATE_DATA")
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in _LOCAL_ARRAYS}
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: not a readable {name} file ({e})") from None
    for key, (dtype, shape) in _LOCAL_ARRAYS.items():
        if arrays[key].dtype != dtype or arrays[key].shape[1:] != shape:
            raise DataError(f"{path}: {key} is {arrays[key].dtype} {arrays[key].shape}, expected {np.dtype(dtype)} "
                            f"(N{''.join(f', {d}' for d in shape)})")
    return arrays


def load_files(dataset: str, root: str = "") -> dict[str, np.ndarray] | None:
    """The arrays of a dataset kept as files in the data directory (downloaded first where it
    can be); None for one that is generated (synthetic)."""
    if dataset in SOURCES:
        return load_cifar(dataset, data_dir(root))
    if dataset in LOCAL:
        return load_local(dataset, data_dir(root))
    return None


def synthetic(classes: int, train_size: int, test_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """CIFAR-shaped images whose class is a smooth colour pattern under heavy noise: learnable,
    but not in one step. The same arguments always give the same images."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.nn.functional.interpolate(torch.randn(classes, 3, 4, 4, generator=g), size=32,
                                               mode="bilinear", align_corners=False)

    def draw(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = 128 + 60 * patterns[y] + 25 * torch.randn(n, 3, 32, 32, generator=g)
        return x.clamp(0, 255).to(torch.uint8).numpy(), y.numpy()

    x_train, y_train = draw(train_size)
    x_test, y_test = draw(test_size)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def split(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation) within the official training set, a seeded permutation."""
    if not 0 <= val_size < n:
        raise DataError(f"val_size {val_size} must be at least 0 and below the training set size {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def gcn(x: torch.Tensor, scale: float = 55.0) -> torch.Tensor:
    """Global contrast normalization per image (Goodfellow et al. 2013: subtract the mean,
    scale the L2 norm to `scale`)."""
    x = x.flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    return scale * x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


def fit_zca(x: torch.Tensor, bias: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA whitening (mean, matrix) of flattened images, eigenvalues regularized by `bias`
    (pylearn2's filter_bias, as used for maxout and All-CNN)."""
    x = x.double()
    mean = x.mean(dim=0)
    xc = x - mean
    eigvals, eigvecs = torch.linalg.eigh(xc.T @ xc / len(x))
    w = eigvecs @ torch.diag((eigvals.clamp_min(0) + bias).rsqrt()) @ eigvecs.T
    return mean.float(), w.float()


def _cached_zca(x_train: torch.Tensor, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    # Fitting is an eigendecomposition of a 3072x3072 covariance: done once per split, not per trial.
    with _usable(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                try:
                    return torch.load(path)
                except (RuntimeError, EOFError, pickle.UnpicklingError):
                    pass  # cut short (an older ablate wrote it in place): fitted again below
            mean, w = fit_zca(gcn(x_train))
            # Written aside and renamed, as the CIFAR cache is: a worker killed while writing leaves no cache.
            tmp = path.with_name(f".{path.name}.tmp")
            torch.save((mean, w), tmp)
            tmp.rename(path)
    return mean, w


@dataclass
class Splits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    fingerprint: str = ""  # of the images and labels these splits were made from
    synthetic: bool = False

    def to(self, device) -> "Splits":
        return dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in
                                            ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")})


def load_arrays(dataset: str, *, train_size: int = 0, test_size: int = 0, split_seed: int = 0,
                root: str = "") -> dict[str, np.ndarray]:
    """The uint8 images and labels a trial's splits are made from, as `prepare` takes them.

    `train_size` / `test_size` of 0 mean the whole official set (50,000 / 10,000; the same sizes
    for synthetic data); a smaller number takes a seeded subset, for cheap runs.
    """
    if dataset == "synthetic":
        arrays = synthetic(10, train_size or SIZES[dataset][0], test_size or SIZES[dataset][1])
    elif (arrays := load_files(dataset, root)) is None:
        raise DataError(f"unknown dataset '{dataset}' (known: {', '.join(DATASETS)})")
    rng = np.random.default_rng(split_seed)
    if train_size and train_size < len(arrays["y_train"]):
        keep = np.sort(rng.permutation(len(arrays["y_train"]))[:train_size])
        arrays["x_train"], arrays["y_train"] = arrays["x_train"][keep], arrays["y_train"][keep]
    if test_size and test_size < len(arrays["y_test"]):
        keep = np.sort(rng.permutation(len(arrays["y_test"]))[:test_size])
        arrays["x_test"], arrays["y_test"] = arrays["x_test"][keep], arrays["y_test"][keep]
    return arrays


def prepare(dataset: str, *, val_size: int = 5000, train_size: int = 0, test_size: int = 0,
            preprocessing: str = "channel", split_seed: int = 0, root: str = "",
            arrays: dict[str, np.ndarray] | None = None) -> Splits:
    """Float32 splits of `load_arrays`'s images, preprocessed with statistics of the training split only.
    `arrays`: those images, where the caller has loaded them already (they are left as they are)."""
    if arrays is None:
        arrays = load_arrays(dataset, train_size=train_size, test_size=test_size, split_seed=split_seed, root=root)
    train_idx, val_idx = split(len(arrays["y_train"]), val_size, split_seed)
    x_all = torch.from_numpy(arrays["x_train"]).float() / 255
    x_train, x_val = x_all[train_idx], x_all[val_idx]
    x_test = torch.from_numpy(arrays["x_test"]).float() / 255
    if preprocessing == "channel":
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True)
        x_train, x_val, x_test = ((x - mean) / std for x in (x_train, x_val, x_test))
    elif preprocessing == "zca":
        mean, w = _cached_zca(x_train, data_dir(root) / f"zca-{dataset}-{train_size}-{val_size}-{split_seed}.pt")
        x_train, x_val, x_test = (((gcn(x) - mean) @ w).view(-1, 3, 32, 32) for x in (x_train, x_val, x_test))
    else:
        raise DataError(f"unknown preprocessing '{preprocessing}' (known: {', '.join(PREPROCESSING)})")
    y_all = torch.from_numpy(arrays["y_train"])
    return Splits(x_train.contiguous(), y_all[train_idx], x_val.contiguous(), y_all[val_idx],
                  x_test.contiguous(), torch.from_numpy(arrays["y_test"]),
                  CLASSES[dataset], fingerprint(arrays), synthetic=dataset == "synthetic")


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """A short hash of the images and labels a trial trains and tests on: equal for the same
    data, different for a subset or another copy."""
    h = hashlib.blake2b(digest_size=8)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        h.update(np.ascontiguousarray(arrays[key]).data)
    return h.hexdigest()


def augment(x: torch.Tensor, flip: bool, translate: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and random translations of up to `translate` pixels (zero fill,
    i.e. the mean colour after normalization), for a whole batch at once where it lives."""
    n, _, h, w = x.shape
    if flip:
        mask = torch.rand(n, generator=generator, device=generator.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if translate:
        r = translate
        padded = torch.nn.functional.pad(x, (r, r, r, r))
        dy, dx = torch.randint(0, 2 * r + 1, (2, n, 1), generator=generator, device=generator.device)
        rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    return x
