"""Several Ray nodes on one machine (ray.cluster_utils.Cluster): trials spread, and a lost node
is survived by resuming its trial from the checkpoint on another node; trials no node can start
are said to wait; a head that asks for a token is named."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from orchestrator.errors import RunError
from orchestrator.plan.grid import load_grid
from orchestrator.run.runner import run_grid
from orchestrator.store.rundir import RunDir
from tests.conftest import ROOT, ablate
from tests.fake_cluster import FakeCluster, kill_tree, wait_until
from tests.runs import executions, probe_grid, quiet, trials


@pytest.fixture
def cluster():
    """A head without CPUs (like a cluster's head node) and two worker nodes of one CPU each."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def test_trials_spread_over_nodes_and_a_lost_node_is_survived(tmp_path, cluster):
    cluster, workers = cluster
    path = probe_grid(tmp_path, axes={"lr": [0.1, 0.2]}, fixed={"epochs": 6, "sleep": 0.5},
                      resources={"cpus": 1}, max_failures=2)
    epochs_log = tmp_path / "markers" / "epochs.log"
    killed = {}

    def kill_a_node_mid_trial():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = epochs_log.read_text().splitlines() if epochs_log.exists() else []
            done = [line.split()[0] for line in lines if int(line.split()[1]) >= 2]
            if done:
                key = done[0]
                node_id = next(node for k, _, node in executions(tmp_path) if k == key)
                node = next(w for w in workers if w.node_id == node_id)
                cluster.remove_node(node, allow_graceful=False)
                killed.update(key=key, node=node_id)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_node_mid_trial)
    killer.start()
    grid = load_grid(path)
    summary = run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet())
    killer.join()

    assert killed, "no trial reached epoch 2"
    assert summary.counts == {"completed": 2}
    runs = executions(tmp_path)
    first_nodes = {node for _, epoch, node in runs if epoch == 0}
    assert len(first_nodes) == 2  # the two trials started on different nodes
    again = [(epoch, node) for key, epoch, node in runs if key == killed["key"]][1:]
    assert again and again[0][0] >= 2 and again[0][1] != killed["node"]  # resumed elsewhere, from its checkpoint
    rows = trials(tmp_path / "runs" / "probe")
    assert sorted(rows["attempts"]) == [1, 2]


def test_trials_that_no_node_can_start_are_said_to_wait(tmp_path, cluster, monkeypatch):
    # A fixed cluster (no autoscaler) whose nodes have 1 CPU each, and trials that ask for 2: they
    # never start. The run says so instead of waiting in silence; the user then stops it (Ctrl-C).
    from orchestrator.run import events

    monkeypatch.setattr(events, "WAIT_NOTE_S", 2.0)
    path = probe_grid(tmp_path, resources={"cpus": 2})
    grid = load_grid(path)
    notes = []

    def notify(message):
        notes.append(message)
        if message.startswith("no trial has started"):
            signal.raise_signal(signal.SIGINT)

    give_up = threading.Timer(90, signal.raise_signal, (signal.SIGINT,))  # without the note: a failure, not a hang
    give_up.start()
    try:
        summary = run_grid(grid, RunDir.for_grid(str(tmp_path / "runs"), grid.name), quiet(),
                           address=cluster[0].address, notify=notify)
    finally:
        give_up.cancel()
    assert summary.unfinished == 2 and summary.ran == 0
    waited = re.search(r"started in (\d+) s", notes[-1])
    assert waited and notes[-1] == (
        f"no trial has started in {waited[1]} s: each asks for 2 CPUs and 0 GPUs, which no Ray node has free (3 node(s), "
        "the largest with 1 CPU and 0 GPUs); they start once a node has them, but if no autoscaler can add one (`ray "
        "status` on the head shows what waits), stop the run with Ctrl-C and ask for less (--cpus, --gpus)")


def test_a_head_that_asks_for_a_token_is_named(tmp_path, monkeypatch):
    # `ray start --head` turns token authentication on where ~/.ray/auth_token exists (any local
    # `ablate run` writes it); Ray sends no token to an explicit --address unless RAY_AUTH_MODE=token.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0123456789abcdef0123456789abcdef")
    head = FakeCluster.start(tmp_path, autoscaling=False, watch=False)
    try:
        command = ("run", probe_grid(tmp_path), "--address", head.address, "--storage", tmp_path / "runs")
        tries = {"RAY_gcs_server_port_wait_time_s": "2"}  # Ray's 20 tries a second apart, each refused alike
        none = ablate(*command, env={"RAY_AUTH_MODE": "disabled", **tries})
        wrong = ablate(*command, env={"RAY_AUTH_TOKEN": "fedcba9876543210fedcba9876543210", **tries})
    finally:
        head.stop()
    assert none.returncode == 1 and wrong.returncode == 1
    assert none.stderr.splitlines()[-1] == (
        f"error: cannot connect to Ray at {head.address}: its head asks for Ray's authentication token and this "
        "driver sent none: run with RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN)")
    assert wrong.stderr.splitlines()[-1] == (
        f"error: cannot connect to Ray at {head.address}: its head refused this driver's authentication token: give "
        "it the cluster's (~/.ray/auth_token or RAY_AUTH_TOKEN)")


@pytest.mark.parametrize("given", ["HOST:PORT", "auto"])
def test_a_head_that_is_lost_is_said_in_ablates_words(tmp_path, given):
    # Trials that wait (a CPU-less head, no autoscaler) keep the driver joined; then the cluster goes.
    # Ray ends the driver a minute later with a line of its C++ log that says nothing of the run.
    # Joined by `auto` (here from RAY_ADDRESS), the note named "the Ray cluster at auto".
    head = FakeCluster.start(tmp_path, autoscaling=False, watch=False)
    path = probe_grid(tmp_path)
    storage = tmp_path / "runs"
    err = tmp_path / "err"
    env = {**os.environ, "RAY_ADDRESS": head.address} if given == "auto" else None
    try:
        with open(err, "w") as out:
            driver = subprocess.Popen([str(Path(sys.executable).parent / "ablate"), "run", str(path), "--address",
                                       head.address if given == "HOST:PORT" else "auto", "--storage", str(storage),
                                       "--quiet"], stdout=subprocess.DEVNULL, stderr=out, cwd=ROOT, env=env)
        try:
            wait_until(lambda: "trials wait until" in err.read_text(), 120, "the driver to join")
            head.stop()
            wait_until(lambda: "does not answer" in err.read_text(), 40, "the driver to say the head is lost",
                       explain=err.read_text)
        finally:
            kill_tree({driver.pid})
    finally:
        head.stop()
    assert err.read_text().splitlines()[-1] == (
        f"note: the Ray cluster at {head.address} does not answer (its head is gone?); Ray ends this driver if it is "
        f"not back within a minute: finished trials are saved in {storage / 'probe'}; run the same command again once "
        "the cluster is back")


def test_a_node_that_goes_during_the_storage_check_is_not_asked(tmp_path, cluster, monkeypatch):
    # An idle node the autoscaler removes (or a lost one) just after the run listed the nodes: its
    # question could not be scheduled, and the run ended in TaskUnschedulableError's traceback.
    from orchestrator.run.cluster import check_storage_shared

    cluster, workers = cluster
    listed = ray.nodes()
    cluster.remove_node(workers[0], allow_graceful=False)
    monkeypatch.setattr(ray, "nodes", lambda: listed)
    run = RunDir(str(tmp_path / "runs" / "probe"))
    check_storage_shared(run)  # the other node sees the run: nothing to say
    # A path the other node cannot see is still named, with that node alone.
    monkeypatch.setattr(RunDir, "write_bytes", lambda self, path, data: None)
    with pytest.raises(RunError) as error:
        check_storage_shared(run)
    assert str(error.value).startswith(f"{run.display()} is not seen by Ray node(s) {workers[1].node_ip_address} "
                                       f"{workers[1].node_id[:8]}: ")
