"""Shared test setup: a quiet, self-contained Ray, and helpers to run the real `ablate` command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# ../shared/RAY_NOTES.md: settings that keep Ray quiet and fast on a 2-core machine. Set before Ray
# is imported, and inherited by every `ablate` subprocess and Ray worker.
os.environ.update({
    "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0",
    "RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "RAY_memory_monitor_refresh_ms": "0",
    # Ray workers import the test workloads (tests.probe) from the repository root.
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
})
os.environ.pop("RAY_ADDRESS", None)


def ablate(*args, cwd=ROOT, timeout=300, env=None) -> subprocess.CompletedProcess:
    """Run the installed `ablate` console script as a user would."""
    exe = Path(sys.executable).parent / "ablate"
    return subprocess.run([str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty dataset cache: nothing from the user's own cache leaks into a test."""
    path = tmp_path / "data"
    monkeypatch.setenv("ABLATE_DATA", str(path))
    return path


# Real CIFAR-10 images (../shared/data/README.md): beside the repository checkout here and in CI.
REAL_IMAGES = ROOT.parent / "shared" / "data" / "cifar10-subset.npz"


@pytest.fixture
def real_images(data_dir):
    """A dataset cache holding only cifar10-subset.npz (a link to the shared copy)."""
    if not REAL_IMAGES.is_file():
        pytest.fail(f"{REAL_IMAGES} is missing: the tests on real images need it beside the repository")
    data_dir.mkdir(exist_ok=True)
    (data_dir / REAL_IMAGES.name).symlink_to(REAL_IMAGES)
    return data_dir


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray: 2 CPUs and one logical GPU, so fractional-GPU packing can be tested."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
             object_store_memory=200 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
