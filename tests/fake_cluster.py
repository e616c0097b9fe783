"""An autoscaled GPU cluster on this one machine, shaped like cluster.yaml.

Ray's `fake_multinode` provider makes the real autoscaler start and stop worker "nodes" here: each
a real raylet with the resources its node type declares, GPUs included (logical ones; trials see
CUDA_VISIBLE_DEVICES but no card). The head is cluster.yaml's CPU-less head; the worker type is
cluster.yaml's `gpu_worker` with the CPU/GPU shape Ray's AWS provider gives its instance type
(g5.2xlarge: 8 CPUs, 1 GPU), fewer of them (2) and small object stores, so that it fits 2 cores.

    cluster = FakeCluster.start(tmp_dir)      # head only; the autoscaler adds GPU workers on demand
    cluster.address                           # for `ablate run --address`
    cluster.worker_nodes()                    # alive GPU worker nodes, as ray.nodes() rows
    cluster.kill_node(node_id)                # SIGKILL a worker node's processes, by PID
    cluster.stop()                            # end every process this cluster started

Why not Ray's own tools (../shared/RAY_NOTES.md): `ray up` with this provider needs a file the
wheel lacks, and `ray.cluster_utils.AutoscalingCluster` and `ray stop` kill every Ray process of
the user on the machine, other people's test clusters included. So the head is started with
`ray start --head --block` and an autoscaling config written here, and ended by walking the
process tree below that one PID in /proc (fake worker nodes are children of the head's autoscaler
process). Every process also carries an environment tag, which catches one that left the tree.
"""
from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HEAD_TYPE = "ray.head.default"  # the fake provider tags its head with this node type
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"  # and gives it this node id (its workers: ...00001, ...00002)
WORKER_TYPE = "gpu_worker"  # cluster.yaml's name, kept
MAX_WORKERS = 2  # cluster.yaml allows 8 g5.2xlarge; this machine has 2 cores
IDLE_TIMEOUT_MINUTES = 0.1  # 6 s instead of cluster.yaml's 10 min, so tests see idle nodes go
TAG = "ABLATE_FAKE_CLUSTER"  # environment variable every process of a fake cluster inherits


def wait_until(condition, timeout: float, what: str, every: float = 0.2, explain=None):
    """Poll `condition` until it returns something true; fail naming `what` after `timeout` s,
    with what `explain()` (a log's last lines, say) returns then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"waited {timeout:g} s for {what}" + (f"\n{explain()}" if explain else ""))


def aws_resources(cluster_config: dict) -> dict[str, dict]:
    """The resources Ray's AWS provider gives each node type of an AWS cluster config: what the
    autoscaler plans with on EC2. Ray reads instance shapes from EC2, here moto's offline copy."""
    from moto import mock_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    saved = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)  # never reach real AWS with a user's own keys
    try:
        with mock_aws():
            filled = AWSNodeProvider.fillout_available_node_types_resources(copy.deepcopy(cluster_config))
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return {name: t["resources"] for name, t in filled["available_node_types"].items()}


def fake_autoscaling_config(cluster_yaml: Path, gcs_address: str) -> dict:
    """The autoscaling config the head's autoscaler runs with: cluster.yaml's node types for the
    fake_multinode provider, scaled to this machine."""
    config = yaml.safe_load(cluster_yaml.read_text())
    head = config["available_node_types"][config["head_node_type"]]
    worker = aws_resources(config)[WORKER_TYPE]
    worker_resources = {"CPU": worker["CPU"], "GPU": worker["GPU"], "object_store_memory": 100 * 2**20}
    return {
        "cluster_name": "ablate-fake",
        "max_workers": MAX_WORKERS,
        "upscaling_speed": config["upscaling_speed"],
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        # Ray's fake_multinode provider, named as an external one: autoscaler v2 (what `ray up` starts
        # since Ray 2.50) reads a named provider's defaults file, which the 2.60 wheel lacks for
        # fake_multinode (fake_multi_node/example.yaml), and its monitor dies.
        "provider": {"type": "external", "module": "ray.autoscaler._private.fake_multi_node.node_provider."
                     "FakeMultiNodeProvider", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "launch_multiple": True, "head_node_id": FAKE_HEAD_NODE_ID,
                     # without it fake workers dial the default port 6379: someone else's Ray, or nothing
                     "gcs_address": gcs_address},
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            HEAD_TYPE: {"resources": head["resources"], "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {"resources": worker_resources, "node_config": {}, "min_workers": 0,
                          "max_workers": MAX_WORKERS},
        },
        "head_node_type": HEAD_TYPE,
        **{key: [] for key in ("cluster_synced_files", "initialization_commands", "setup_commands",
                               "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                               "worker_start_ray_commands")},
        "file_mounts": {}, "file_mounts_sync_continuously": False,
    }


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in () may hold spaces
            children.setdefault(ppid, []).append(int(entry))
    return children


def _tree(pid: int) -> set[int]:
    """`pid` and all its descendants."""
    children, found, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children.get(p, []))
    return found


def _tagged(tag: str) -> set[int]:
    """Processes of this user whose environment carries the cluster's tag."""
    needle = f"{TAG}={tag}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.add(int(entry))
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_tree(pids: set[int]) -> None:
    """SIGKILL these processes and their descendants. They are first stopped (SIGSTOP) until the
    set no longer grows, so that none spawns a process that escapes, or is reparented away from
    the tree, while the others die."""
    everything: set[int] = set()
    while True:
        grown = set().union(*(_tree(p) for p in pids | everything)) - everything
        if not grown:
            break
        for p in grown:
            with _ignoring_gone():
                os.kill(p, signal.SIGSTOP)
        everything |= grown
    for p in everything:
        with _ignoring_gone():
            os.kill(p, signal.SIGKILL)
    wait_until(lambda: not any(_alive(p) for p in everything), 30, "killed processes to exit", every=0.05)


class _ignoring_gone:
    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError))


@dataclass
class FakeCluster:
    address: str
    temp_dir: str
    head: subprocess.Popen
    tag: str
    log: Path
    watching: bool  # this test process is connected, to see the nodes

    @classmethod
    def start(cls, work_dir: Path, cluster_yaml: Path = ROOT / "cluster.yaml", autoscaling: bool = True,
              watch: bool = True, timeout: float = 90) -> "FakeCluster":
        """Start the head (with `autoscaling`, its autoscaler too) and, with `watch`, connect this
        process to it."""
        import ray._private.services

        # Short and private: Ray's socket paths must fit 107 bytes, and /tmp/ray is everyone's.
        temp_dir = tempfile.mkdtemp(prefix="abl-ray-", dir="/tmp")
        ip = ray._private.services.get_node_ip_address()
        gcs, node_manager, object_manager, agent, agent_grpc, metrics, runtime_env = _free_ports(7)
        address = f"{ip}:{gcs}"
        config = work_dir / "autoscaling.yaml"
        config.write_text(yaml.safe_dump(fake_autoscaling_config(cluster_yaml, address)))
        head_resources = yaml.safe_load(cluster_yaml.read_text())["available_node_types"]["head"]["resources"]
        tag = uuid.uuid4().hex
        log = work_dir / "head.log"
        command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                   f"--port={gcs}", f"--temp-dir={temp_dir}", f"--num-cpus={head_resources.get('CPU', 0)}",
                   "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                   f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
                   f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                   f"--object-store-memory={100 * 2**20}"] + ([f"--autoscaling-config={config}"] if autoscaling else [])
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", TAG: tag,
               # Autoscaler v2, as `ray up` starts it on a head (autoscaler/_private/commands.py). v1 with
               # this provider never replaces a lost node: it stays "uninitialized" in its count.
               "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
               "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID, "RAY_NODE_TYPE_NAME": HEAD_TYPE,
               # A lost node is declared dead after 3 missed 1 s health checks instead of 5 of 3 s.
               "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
        with open(log, "wb") as out:
            head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        cluster = cls(address, temp_dir, head, tag, log, watch)
        try:
            import ray

            wait_until(lambda: cluster.check() and "Ray runtime started" in log.read_text(), timeout,
                       "the head node to start")
            if watch:
                ray.init(address=address, log_to_driver=False)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def check(self) -> bool:
        """True while the head runs; its log's end as an error once it does not (`ray start
        --block` ends the whole cluster when one of its processes dies, the autoscaler included)."""
        if self.head.poll() is not None:
            raise RuntimeError(f"the fake cluster's head exited ({self.head.returncode}): "
                               f"{self.log.read_text()[-3000:]}")
        return True

    def nodes(self) -> list[dict]:
        import ray

        return [n for n in ray.nodes() if n["Alive"]]

    def worker_nodes(self) -> list[dict]:
        return [n for n in self.nodes() if n["Resources"].get("GPU")]

    def autoscaler_log(self, lines: int = 30) -> str:
        """The last lines of the head's autoscaler log: why nodes did or did not come or go."""
        path = Path(self.temp_dir, "session_latest", "logs", "monitor.log")
        text = path.read_text(errors="replace") if path.exists() else f"(no {path})"
        return "\n".join([f"last lines of {path}:", *text.splitlines()[-lines:]])

    def kill_node(self, node_id: str) -> None:
        """Lose a worker node as a crashed machine would: SIGKILL its raylet and everything below it
        (its trials' worker processes, its agents). Found by the node id on the raylet's command line."""
        raylets = [p for p in self.pids() if _is_raylet_of(p, node_id)]
        assert raylets, f"no raylet for node {node_id}"
        kill_tree(set(raylets))

    def pids(self) -> set[int]:
        """This cluster's live processes."""
        return {p for p in _tree(self.head.pid) | _tagged(self.tag) if _alive(p)}

    def stop(self) -> None:
        """End every process this cluster started: its tree below `ray start`, and any that carry
        its tag. Never `ray stop`, which ends every Ray of this user on the machine."""
        import ray

        if self.watching:
            ray.shutdown()
        kill_tree(self.pids())
        self.head.wait(timeout=10)


def _is_raylet_of(pid: int, node_id: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"/raylet") and f"--node_id={node_id}".encode() in argv


def main() -> None:  # pragma: no cover - for people, see README "Try it on one machine"
    """`python -m tests.fake_cluster`: start the cluster, print its address, end it on Ctrl-C."""
    work_dir = Path(tempfile.mkdtemp(prefix="ablate-fake-cluster-"))
    cluster = FakeCluster.start(work_dir, watch=False)
    # The head asks for Ray's token where one exists here (any local `ablate run` writes
    # ~/.ray/auth_token), and Ray sends it to an explicit --address only with RAY_AUTH_MODE=token.
    from ray._raylet import AuthenticationTokenLoader  # private API (pinned by ray 2.60), as `ray start` decides

    mode = os.environ.get("RAY_AUTH_MODE") or (
        "token" if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True) else "disabled")
    join = "RAY_AUTH_MODE=token " if mode.lower() == "token" else ""
    print(f"fake cluster up: {join}ablate run GRID --address {cluster.address}\n"
          f"autoscaler log: {cluster.temp_dir}/session_latest/logs/monitor.log; Ctrl-C ends it", flush=True)
    try:
        while cluster.check():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
