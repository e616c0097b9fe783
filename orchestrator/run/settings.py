"""Settings that Ray, Tune and workloads read only from the environment, set for as long as they
are needed and restored after.

    with environment(tune_environment(len(todo))):
        tuner.fit()
"""
from __future__ import annotations

import contextlib
import os

# Tune's own CSV/JSON/TensorBoard loggers and console reporter are off (the run's Parquet files and
# ablate's display replace them), and experiment snapshots, which ablate never resumes from (a run
# resumes from its own records), are rare: each one encodes every trial (benchmarks/README.md).
TUNE_ENVIRONMENT = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0",
                    "TUNE_GLOBAL_CHECKPOINT_S": "600"}


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """os.environ with `values` set, as it was again afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tune_environment(trials: int, cluster_cpus: float) -> dict[str, str]:
    """TUNE_ENVIRONMENT for a run of `trials`, where the user's environment does not set them."""
    # With a searcher of its own Tune keeps one trial pending at a time: trials would start one
    # by one, and an autoscaler would see one waiting trial, not the grid. Tune's rule for its
    # own grid search instead: at least 200, or 1.1 per CPU of the cluster.
    pending = max(200, int(cluster_cpus * 1.1))
    wanted = {**TUNE_ENVIRONMENT, "TUNE_MAX_PENDING_TRIALS_PG": str(min(trials, pending))}
    return {k: os.environ.get(k, v) for k, v in wanted.items()}
