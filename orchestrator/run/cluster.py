"""The Ray a run uses: joined or started, its messages kept out of the terminal, and what it
must offer before any trial starts (one instance to join, the storage every node sees, the
resources a trial asks for).

    with ray_messages_to(ray_log_path(run)):
        connect(address, env)
        check_storage_shared(run); notes = check_resources(resources, autoscaling=True)
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid

import ray

from orchestrator.errors import RunError, last_line
from orchestrator.plan.execution import Resources
from orchestrator.run.settings import environment
from orchestrator.store.rundir import RunDir


def ray_log_path(run: RunDir) -> str:
    """Where Ray's own messages of a driver go: beside the run's results when they are on a local
    path or NFS, else (S3) in this machine's temporary folder."""
    if run.local:
        return run.child("driver.log")
    return os.path.join(tempfile.gettempdir(), f"ablate-{run.path.rstrip('/').rsplit('/', 1)[-1]}-driver.log")


class _QuietFileHandler(logging.FileHandler):
    """A log that cannot be written (a full disk) drops its lines: logging would print a
    traceback for each on the terminal, where the run's one error line says what is wrong."""

    def handleError(self, record):
        pass


@contextlib.contextmanager
def ray_messages_to(path: str):
    """Ray's driver-side log lines ("Started a local Ray instance", its token-authentication
    notice, Tune's warnings) go to `path` instead of the terminal, where ablate's own lines are
    what a user reads. Ray logs through the "ray" logger, whose handlers it set when imported and
    keeps with ray.init's default configure_logging=True (which only reformats them).

    So do the errors Ray's nodes push to the driver ("(raylet) A worker died or was killed ..." where
    a trial's worker died), which Ray's listener thread prints straight to stdout whatever
    `log_to_driver` says: in the middle of the display's lines. Private API (pinned by ray 2.60)."""
    ray_logger = logging.getLogger("ray")
    saved = list(ray_logger.handlers)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = _QuietFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    ray_logger.handlers[:] = [handler]
    printing = ray._private.worker.print_to_stdstream

    def to_log(data, ignore_prefix):
        for line in data["lines"]:
            ray_logger.error(f"({data['pid']}) {line}")

    ray._private.worker.print_to_stdstream = to_log
    try:
        yield path
    finally:
        ray._private.worker.print_to_stdstream = printing
        ray_logger.handlers[:] = saved
        handler.close()


@contextlib.contextmanager
def sigterm_as_ctrl_c(on_ray_lost):
    """SIGTERM (`kill`, a batch scheduler ending a job, `timeout`) stops the run as Ctrl-C does:
    Tune ends the trials where they are, the results are published, the hold is released, and
    the user reads how to resume. Ray's own handler, set by ray.init, prints a C++ stack dump and
    exits. Only the main thread can set a handler: elsewhere (a library caller's thread) Ray's stays.

    `timeout` and schedulers signal every process of the job, the local Ray's own too (they block
    only SIGINT): with them gone, Tune cannot end its trials, and each of its calls waits 60 s for
    Ray before Ray ends the driver. Then `on_ray_lost()` says so and the driver exits at once, as
    a killed one would; what finished is saved, and the next run takes the run over."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_):
        threading.Thread(target=_exit_if_ray_ends, args=(on_ray_lost,), daemon=True).start()
        if callable(signal.getsignal(signal.SIGINT)):  # Python's, or Tune's, which ends the trials in order
            signal.raise_signal(signal.SIGINT)
        else:  # Ctrl-C ignored (`nohup ablate run ... &` from a script): SIGTERM stops the run all the same
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:  # None: a handler set outside Python (Ray's), which Python cannot set back
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def head_watched(on_lost, after_s: float = 10.0, every_s: float = 1.0):
    """On a joined cluster, a head that stops answering (its machine lost, `ray down`) is told to
    `on_lost(address)` once, after `after_s`, with the head's address (the one joined, where
    `--address auto` found it): Ray itself ends the driver only once its GCS has been gone for a
    minute (it may come back), with a line of its C++ log that says nothing of the run."""
    address = ray.get_runtime_context().gcs_address
    host, port = address.rsplit(":", 1)
    stop = threading.Event()

    def watch():
        lost_since = None
        while not stop.wait(every_s):
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=every_s).close()
                lost_since = None
            except OSError:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since >= after_s:
                    on_lost(address)
                    return

    threading.Thread(target=watch, daemon=True, name="ablate-head-watch").start()
    try:
        yield
    finally:
        stop.set()


def _exit_if_ray_ends(on_ray_lost, within_s: float = 10.0) -> None:
    node = ray._private.worker._global_node  # private API (pinned by ray 2.60): the local Ray this driver started
    if node is None or not node.head:
        return  # a joined cluster's processes are not this job's
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if node.dead_processes():
            on_ray_lost()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        time.sleep(0.1)


def _check_one_instance(address: str | None) -> None:
    """`--address auto` joins the instance in /tmp/ray's address file, or any running one: with
    several Ray instances on this machine (a teammate's, a test's, another --temp-dir) that may
    be the wrong cluster. Refuse, naming them, unless RAY_ADDRESS says which."""
    if address != "auto" or os.environ.get("RAY_ADDRESS"):
        return
    try:  # private API (pinned by ray 2.60): the GCS addresses named by this machine's raylets
        from ray._private.services import find_gcs_addresses

        find_gcs_addresses.cache_clear()
        running = sorted(find_gcs_addresses())
    except Exception:  # moved in another Ray: let ray.init decide, as before
        return
    if len(running) > 1:
        raise RunError(f"--address auto: {len(running)} Ray instances run on this machine ({', '.join(running)}); "
                       "pass the one to join, e.g. --address " + running[0])


# How long a cluster's head may take to accept a connection before `--address` is called wrong.
ANSWER_S = 10.0


def _check_answers(address: str) -> None:
    """An address HOST:PORT where nothing accepts a connection is one error line within seconds:
    Ray itself retries for minutes, printing its C++ client's warnings on the terminal. `auto`
    joins RAY_ADDRESS where it is set (as ray.init does): that address is checked."""
    if address == "auto" and os.environ.get("RAY_ADDRESS", "auto") != "auto":
        try:
            _check_answers(os.environ["RAY_ADDRESS"])
        except RunError as e:
            raise RunError(f"RAY_ADDRESS, which --address auto takes: {e}") from None
        return
    if address.startswith("ray://"):  # Tune runs a Ray Client's experiment on the head, without this driver's callbacks
        raise RunError(f"cannot run through Ray Client ({address}): ablate's driver must run on the cluster; run it "
                       "on the head (`ray attach`, then --address auto) or submit it as a Ray job (`ray job submit`)")
    if re.match(r"https?://", address):  # Ray's own error names RAY_ADDRESS, which was not set
        raise RunError(f"cannot connect to Ray at {address}: that is an HTTP address (the dashboard's, which `ray job "
                       "submit` takes); pass the head's address, HOST:PORT as `ray start --head` printed (port 6379 by "
                       "default), or --address auto on the head")
    found = re.fullmatch(r"\[?([^\[\]/]+?)\]?:(\d+)", address)
    if found is None:  # auto, or a form Ray reads that this does not: Ray decides
        return
    try:
        with socket.create_connection((found[1], int(found[2])), timeout=ANSWER_S) as connection:
            http = _speaks_http(connection)
    except OSError as e:
        reason = f"no answer in {ANSWER_S:g} s" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise RunError(f"cannot connect to Ray at {address} ({reason}): is its head running, and is this the "
                       "port `ray start --head` printed (6379 by default)?") from None
    if http:
        raise RunError(f"cannot connect to Ray at {address}: it answers HTTP, as a dashboard does (8265, which `ray "
                       "dashboard` forwards), not as a Ray head; pass the port `ray start --head` printed (6379 by default)")


def _speaks_http(connection: socket.socket) -> bool:
    """Whether an HTTP server answers (a dashboard), where Ray would wait for a head for minutes. A
    head's GCS speaks gRPC: it answers a request at once with HTTP/2's binary settings frame."""
    try:
        connection.settimeout(2)
        connection.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
        return connection.recv(5) == b"HTTP/"
    except OSError:  # silent, or closed: not HTTP; Ray decides
        return False


def connect(address: str | None, env: dict[str, str] | None = None) -> None:
    """Join the cluster at `address`, or start a local Ray sized to this machine. `env` is set
    in every worker's environment.

    Token authentication is left as Ray decides it (on by default since 2.59 for a new local
    instance; RAY_AUTH_MODE of the user's environment otherwise): ablate sets nothing
    process-wide for it."""
    if ray.is_initialized():  # a caller (a test, a notebook) brought its own
        return
    _check_one_instance(address)
    if address is not None:
        _check_answers(address)
    try:
        if address is None:
            # Workers import a user's workload module from the working directory, as the driver
            # does. The new Ray's processes, and the workers they start, inherit the environment it
            # starts in: not a runtime_env, whose job cannot use the workers Ray starts ahead and
            # waits for a new one at its first trial (benchmarks/README.md).
            path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
            with environment({**(env or {}), "PYTHONPATH": path}):
                # address="local": never join a stale cluster left in /tmp/ray by accident.
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RunError(f"cannot connect to Ray at {address or 'a new local instance'}: {_why(e)}") from None
    except Exception as e:  # a local Ray whose processes could not start (a file-size limit, a full /tmp): Ray's bare Exception
        if address is not None:
            raise
        raise RunError(f"cannot start Ray on this machine: {last_line(str(e))}") from None


def _why(error: BaseException) -> str:
    """Why ray.init could not join: its own last line ("Failed to connect to Ray cluster at ...")
    where the cause, a head with token authentication (on by default for `ray start --head` where
    ~/.ray/auth_token exists), is only in the error below it."""
    causes = []
    while error is not None:
        causes.append(str(error))
        error = error.__cause__ or error.__context__
    if not any("InvalidAuthToken" in cause for cause in causes):
        return last_line(causes[0])
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":  # Ray sends a token to an explicit address only then
        return ("its head asks for Ray's authentication token and this driver sent none: run with RAY_AUTH_MODE=token "
                "and the cluster's token in ~/.ray/auth_token (or RAY_AUTH_TOKEN)")
    return "its head refused this driver's authentication token: give it the cluster's (~/.ray/auth_token or RAY_AUTH_TOKEN)"


@ray.remote(num_cpus=0)
def _sees(path: str) -> bool:
    return os.path.exists(path)


def _answer(answer, deadline: float) -> bool:
    """A node's answer to _sees; True for a node gone since it was listed (an idle node the
    autoscaler removed, a lost one): it runs no trial."""
    try:
        return ray.get(answer, timeout=max(0.0, deadline - time.monotonic()))
    except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError):
        return True


def check_storage_shared(run: RunDir, timeout_s: float = 60) -> None:
    """A run on a local path, joined to a cluster: every node that can run trials must see the
    same files, or trials there would checkpoint where no one else looks (and Tune fails them
    with a long error). Asked of each node now alive with a file written here; nodes an
    autoscaler adds later are checked by Tune's own storage check when a trial lands there."""
    if not run.local:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive") and (n["Resources"].get("CPU") or n["Resources"].get("GPU"))]
    if not nodes:
        return
    marker = run.child(f".storage-check-{uuid.uuid4().hex}")
    run.write_bytes(marker, b"")
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        answers = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: _sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(marker)
            for n in nodes}
        deadline = time.monotonic() + timeout_s
        blind = [node for node, answer in answers.items() if not _answer(answer, deadline)]
    finally:
        with contextlib.suppress(FileNotFoundError):
            run.fs.delete_file(marker)
    if blind:
        raise RunError(f"{run.display()} is not seen by Ray node(s) {', '.join(blind)}: on a multi-node cluster "
                       "use s3://bucket/prefix or an NFS path mounted at the same place on every node")


def check_resources(resources: Resources, autoscaling: bool = False) -> list[str]:
    """Refuse up front what no node can give, instead of leaving trials PENDING forever.

    On a cluster that was joined (`--address`) an autoscaler may still add the nodes that are
    missing, so there the problems come back as notes to show instead of errors.
    """
    nodes = _alive_resources()
    most_cpus = _largest(nodes, "CPU")
    problems = []
    if resources.gpus and not sum(n.get("GPU", 0) for n in nodes):
        problems.append(f"each trial asks for {resources.gpus:g} GPU but the Ray cluster has no GPU; "
                        "use --gpus 0 (or resources.gpus: 0) to train on CPUs")
    elif resources.gpus > 1 and not any(n.get("GPU", 0) >= resources.gpus for n in nodes):
        problems.append(f"each trial asks for {resources.gpus:g} GPUs but no Ray node has that many")
    if resources.cpus > most_cpus:
        problems.append(f"each trial asks for {resources.cpus:g} CPUs but the largest Ray node has "
                        f"{most_cpus:g}; use --cpus {max(1, int(most_cpus))} or fewer")
    if problems and not autoscaling:
        raise RunError(problems[0])
    return [p.split(";")[0] + ": trials wait until such a node joins (one the cluster's autoscaler adds, if it has one)"
            for p in problems]


def waiting_note(asked: dict[str, float], waited_s: float) -> str:
    """What a run says where no trial has started for `waited_s` while trials wait for the CPUs
    and GPUs each asks for (`asked`, Tune's {"CPU": c, "GPU": g}): Tune only logs it, and on a
    cluster whose autoscaler cannot add such a node (or that has none) they wait forever."""
    nodes = _alive_resources()
    most = {r: _largest(nodes, r) for r in ("CPU", "GPU")}
    return (f"no trial has started in {waited_s:.0f} s: each asks for {_amount(asked.get('CPU', 0), 'CPU')} and "
            f"{_amount(asked.get('GPU', 0), 'GPU')}, which no Ray node has free ({len(nodes)} node(s), the largest with "
            f"{_amount(most['CPU'], 'CPU')} and {_amount(most['GPU'], 'GPU')}); they start once a node has them, but if no "
            "autoscaler can add one (`ray status` on the head shows what waits), stop the run with Ctrl-C and "
            "ask for less (--cpus, --gpus)")


def _alive_resources() -> list[dict[str, float]]:
    """What each Ray node now alive has in all ({"CPU": 8, "GPU": 1, ...})."""
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def _largest(nodes: list[dict[str, float]], resource: str) -> float:
    return max((n.get(resource, 0) for n in nodes), default=0)


def _amount(n: float, unit: str) -> str:
    return f"{n:g} {unit}" + ("s" if n == 0 or n > 1 else "")  # 0.25 GPU, 1 CPU, 2 CPUs, 0 GPUs
