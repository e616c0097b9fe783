"""`ablate run` on an autoscaled GPU cluster shaped like cluster.yaml, on this one machine
(tests/fake_cluster.py): GPU nodes come when trials wait, four trials share each GPU, a node
lost mid-trial loses nothing, idle nodes go; and the mistakes a cluster user makes are one line."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from orchestrator.errors import RunError
from orchestrator.store.rundir import RunDir
from tests.conftest import ROOT, ablate
from tests.fake_cluster import FakeCluster, kill_tree, wait_until
from tests.runs import probe_grid, trials

pytest.importorskip("ray.autoscaler._private.fake_multi_node.node_provider")  # private API, pinned by ray 2.60


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = FakeCluster.start(tmp_path_factory.mktemp("fake-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()
    assert not cluster.pids(), "processes of the fake cluster are still running"


def _markers(tmp_path):
    """What the probe trials logged: (key, epoch started from, node, time) per start, and
    (key, epoch, time) per finished epoch."""
    def lines(name):
        log = tmp_path / "markers" / name
        return [line.split() for line in log.read_text().splitlines()] if log.exists() else []

    starts = [(k, int(e), node, float(t)) for k, e, _pid, node, t in lines("executions.log")]
    epochs = [(k, int(e), float(t)) for k, e, t in lines("epochs.log")]
    return starts, epochs


def _most_at_once(starts, epochs) -> dict[str, int]:
    """Per node, the most trials that ran on it at the same moment (a run: from its start to its
    last epoch on that node)."""
    spans = defaultdict(list)
    for i, (key, _, node, began) in enumerate(starts):
        later = [s[3] for s in starts[i + 1:] if s[0] == key]
        until = min(later) if later else float("inf")
        ended = max((t for k, _, t in epochs if k == key and began <= t < until), default=began)
        spans[node].append((began, ended))
    return {node: max(sum(b <= t <= e for b, e in runs) for t, _ in runs) for node, runs in spans.items()}


def test_an_autoscaled_gpu_cluster_runs_a_grid_and_survives_lost_nodes(tmp_path, cluster):
    # The paper grid's resources (2 CPUs, 4 trials per GPU) on g5.2xlarge-shaped nodes: 8 trials
    # fill the 2 GPU nodes the fake cluster may have.
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2, 0.3, 0.4]}, seeds=[0, 1], fixed={"epochs": 10, "sleep": 1.0},
                      resources={"cpus": 2, "trials_per_gpu": 4}, max_failures=2)
    assert cluster.worker_nodes() == []  # a CPU-only head, no GPU worker yet
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        driver = subprocess.Popen([str(Path(sys.executable).parent / "ablate"), "run", str(path), "--address",
                                   cluster.address, "--storage", str(tmp_path / "runs"), "--quiet"],
                                  stdout=out, stderr=err, cwd=ROOT)
    try:
        # Once both GPU nodes run their 4 trials, each past an epoch, and a trial has checkpointed
        # epoch 2, lose every GPU node, as when their machines crash: their trials can then only
        # go on where the autoscaler brings new nodes up. (Both full first: the second node may
        # come up later; and a trial that has not finished an epoch yet is not known to run.)
        def full_and_two_epochs_in():
            assert cluster.check() and driver.poll() is None, (tmp_path / "err").read_text()
            starts, epochs = _markers(tmp_path)
            per_node = Counter(node for _, _, node, _ in starts)
            training = {key for key, _, _, began in starts if any(k == key and t > began for k, _, t in epochs)}
            return sorted(per_node.values()) == [4, 4] and len(training) == 8 and any(e >= 2 for _, e, _ in epochs)

        wait_until(full_and_two_epochs_in, 180, "both GPU nodes to run 4 trials and a trial to reach epoch 2",
                   explain=cluster.autoscaler_log)
        lost = {n["NodeID"] for n in cluster.worker_nodes()}
        epochs_before = _markers(tmp_path)[1]
        for node in lost:
            cluster.kill_node(node)
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            kill_tree({driver.pid})
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert driver.returncode == 0, out + err

    # What the user saw: ablate's lines and its notes on what the autoscaler must add, none of Ray's.
    assert err.splitlines() == [
        "note: each trial asks for 0.25 GPU but the Ray cluster has no GPU: trials wait until such a node joins "
        "(one the cluster's autoscaler adds, if it has one)",
        "note: each trial asks for 2 CPUs but the largest Ray node has 0: trials wait until such a node joins "
        "(one the cluster's autoscaler adds, if it has one)"]
    assert "probe: 8 completed (8 run now, 0 already done)" in out
    assert f"Ray's own messages: {tmp_path / 'runs' / 'probe' / 'driver.log'}" in out

    # Two GPU nodes were added, each ran 4 trials at once, and never more.
    starts, epochs = _markers(tmp_path)
    most = _most_at_once(starts, epochs)
    assert len(lost) == 2 and {node: most[node] for node in lost} == {node: 4 for node in lost}, most
    assert all(n <= 4 for n in most.values()), most

    # Every trial resumed from its checkpoint on a node brought up after the loss: it lost at most
    # the epoch in flight; every trial has all its epochs, and its record counts two attempts.
    for key in {k for k, _, _, _ in starts}:
        done = max((e for k, e, _ in epochs_before if k == key), default=0)
        first, again = [(e, node) for k, e, node, _ in starts if k == key]
        assert first[1] in lost and again[1] not in lost and again[0] >= max(done - 1, 0), (key, first, again, done)
    assert any(e >= 1 for k, e, _, _ in starts[8:])  # at least one resumed past epoch 0
    rows = trials(tmp_path / "runs" / "probe")
    assert len(rows) == 8 and (rows["status"] == "completed").all() and (rows["epochs_completed"] == 10).all()
    assert (rows["attempts"] == 2).all()

    # Idle nodes go.
    wait_until(lambda: cluster.check() and not cluster.worker_nodes(), 120, "idle GPU nodes to be removed",
               explain=cluster.autoscaler_log)


def test_address_auto_with_several_ray_instances_is_refused(tmp_path, cluster):
    # A second Ray instance on this machine (a teammate's, a test's), with its own --temp-dir.
    other = FakeCluster.start(tmp_path, autoscaling=False, watch=False)
    try:
        result = ablate("run", probe_grid(tmp_path), "--address", "auto", "--storage", tmp_path / "runs")
    finally:
        other.stop()
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --address auto: ") and cluster.address in line and other.address in line
    assert "pass the one to join" in line


def test_storage_that_a_node_does_not_see_is_refused(tmp_path, cluster, monkeypatch):
    from ray.autoscaler.sdk import request_resources

    from orchestrator.run.cluster import check_storage_shared

    request_resources(bundles=[{"GPU": 1}])  # a GPU node, as waiting trials would bring
    try:
        node = wait_until(cluster.worker_nodes, 120, "a GPU node", explain=cluster.autoscaler_log)[0]
        run = RunDir(str(tmp_path / "runs" / "probe"))
        check_storage_shared(run)  # one machine: every node sees the path
        # A path on the head's own disk: the file the driver writes never reaches the node.
        monkeypatch.setattr(RunDir, "write_bytes", lambda self, path, data: None)
        with pytest.raises(RunError) as error:
            check_storage_shared(run)
    finally:
        request_resources(bundles=[])
    assert str(error.value) == (f"{run.display()} is not seen by Ray node(s) {node['NodeManagerAddress']} "
                                f"{node['NodeID'][:8]}: on a multi-node cluster use s3://bucket/prefix or an NFS "
                                "path mounted at the same place on every node")
