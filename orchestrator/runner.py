"""`ablate run`: a grid's unfinished trials as one Ray Tune experiment. The only module that imports Ray.

Ray Tune schedules, places and retries trials; the run's own record in storage (store.py) says
what is done. Every `ablate run` is a new Tune experiment over the trials that have no result
yet, so a grid that grew, a driver that was killed, or `--retry-failed` all come down to the
same thing: run what is missing. Ray's own `Tuner.restore` replays a fixed spec and can lose
state after SIGKILL (../shared/RAY_NOTES.md); trials here find their checkpoints by trial id.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass

import ray
from ray import tune
from ray.tune.search import Searcher

from orchestrator import records
from orchestrator.display import Display, describe
from orchestrator.errors import RunError
from orchestrator.grid import GRID_FILE, Grid, Resources
from orchestrator.lock import DriverLock
from orchestrator.records import STATUSES, STOPPED, Publisher, trial_schema
from orchestrator.store import RunDir, join_uri
from orchestrator.trial import provenance, run_trial
from workloads.base import WorkloadError

# Settings Tune reads only from the environment, set while `fit` runs and restored after: Tune's
# own CSV/JSON/TensorBoard loggers and console reporter are off (the run's Parquet files and our
# display replace them), and experiment snapshots, which ablate never resumes from (a run resumes
# from its own records), are rare: each one encodes every trial, 10% of the driver's time at 300
# short trials.
TUNE_ENVIRONMENT = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0",
                    "TUNE_GLOBAL_CHECKPOINT_S": "600"}


@dataclass
class RunSummary:
    run: RunDir
    counts: dict[str, int]  # status -> trials, over the whole grid
    ran: int  # trials this invocation started
    skipped: int  # trials that already had a result
    unfinished: int  # trials without a row after this invocation (interrupted, or not retried)
    failed_earlier: int  # failed trials left alone because --retry-failed was not given
    ray_log: str | None = None  # where Ray's own messages went, when Ray was used

    @property
    def exit_code(self) -> int:
        if self.counts.get("failed") or self.unfinished:
            return 1
        return 0


class _Events(tune.Callback):
    """Driver-side: feeds the display, and records trials that ran out of retries or that a
    scheduler stopped early (their workers never return a result)."""

    def __init__(self, grid: Grid, run: RunDir, display: Display, publisher: Publisher, trials: _GridTrials):
        self.grid, self.run, self.display, self.publisher, self.trials = grid, run, display, publisher, trials
        self.cells = {t.trial_id: t.cell for t in grid.trials}
        self.schema = trial_schema(grid.workload.config)

    def __getstate__(self):
        # Tune pickles its callbacks with the experiment for Tuner.restore, which ablate does not
        # use (runs resume from the run's own record); the live display cannot be pickled.
        return {}

    @staticmethod
    def _id(trial) -> str:
        return trial.config["trial"]["trial_id"]

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials.started(trial.trial_id)
        self.display.trial_started(self._id(trial), self.cells[self._id(trial)])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.display.trial_result(self._id(trial), result)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.display.trial_retrying(self._id(trial))

    def on_trial_complete(self, iteration, trials, trial, **info):
        trial_id = self._id(trial)
        row = self.publisher.publish(trial_id)
        if row is None:  # its worker wrote no result: a scheduler (or a stopper) ended it before `train` returned
            self._record_stopped(trial_id, trial.config["trial"]["config"], trial.last_result or {})
            row = self.publisher.publish(trial_id)
        score = row["test_error"] if row["test_error"] is not None else row["val_error"]
        detail = describe(self.cells[trial_id]) + ("" if score is None else f" -> {score:.4f}")
        self.display.trial_finished(trial_id, row["status"], detail)

    def _record_stopped(self, trial_id: str, config: dict, last: dict) -> None:
        """A truthful row for a trial stopped early: where it got to, and its epochs up to its
        last checkpoint. Stopped is final: the next `ablate run` does not run it again."""
        epoch = last.get("epoch")
        progress = _progress_after(self.run, trial_id, last.get("training_iteration", 0))
        saved = self.run.checkpoint(trial_id)
        epochs = [e for e in saved["epochs"] if epoch is None or e.get("epoch", 0) <= epoch] if saved else None
        records.record(self.run, self.schema, trial_id, config, {
            "status": STOPPED, "val_error": last.get("val_error"), "epochs_completed": epoch,
            "train_seconds": progress.get("train_seconds"),
            **provenance(self.run, trial_id, progress, self.grid.name, self.grid.workload.name)}, epochs)

    def on_trial_error(self, iteration, trials, trial, **info):
        trial_id = self._id(trial)
        message = _last_line(_error_text(trial)) or "the trial failed"
        progress = self.run.progress(trial_id)
        records.record(self.run, self.schema, trial_id, trial.config["trial"]["config"], {
            "status": "failed", "error": message, "epochs_completed": progress.get("epoch"),
            **provenance(self.run, trial_id, progress, self.grid.name, self.grid.workload.name)})
        self.publisher.publish(trial_id)
        self.display.trial_finished(trial_id, "failed", f"{message} (log: {self.run.log_path(trial_id)})")


def _progress_after(run: RunDir, trial_id: str, reports: int, timeout_s: float = 30.0) -> dict:
    """A trial's progress once its worker has written the files of its `reports`-th report of
    this attempt: it writes them while Tune carries the result to the driver (store.py), so they
    can land a little after it. Waits `timeout_s` at most (a worker that died writes no more)."""
    deadline = time.monotonic() + timeout_s
    progress = run.progress(trial_id)
    while progress.get("reports", 0) < reports and time.monotonic() < deadline:
        time.sleep(0.01)
        progress = run.progress(trial_id)
    return progress


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """os.environ with `values` set, as it was again afterwards: for settings that Ray and
    workloads read only from the environment."""
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


def _error_text(trial) -> str:
    """The errors of a trial's attempts, as Tune wrote them on this machine just before calling
    back. Not `Trial.get_error`: it reads the copy in the run's storage, which Tune makes at its
    next experiment snapshot, so a trial that failed once had no error yet."""
    if not trial.error_file or not os.path.exists(trial.error_file):
        return ""
    with open(trial.error_file, encoding="utf-8", errors="replace") as f:
        return f.read()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def ray_log_path(run: RunDir) -> str:
    """Where Ray's own messages of a driver go: beside the run's results when they are on a local
    path or NFS, else (S3) in this machine's temporary folder."""
    if run.local:
        return run.child("driver.log")
    return os.path.join(tempfile.gettempdir(), f"ablate-{run.path.rstrip('/').rsplit('/', 1)[-1]}-driver.log")


@contextlib.contextmanager
def ray_messages_to(path: str):
    """Ray's driver-side log lines ("Started a local Ray instance", its token-authentication
    notice, Tune's warnings) go to `path` instead of the terminal, where ablate's own lines are
    what a user reads. Ray logs through the "ray" logger, whose handlers it set when imported and
    keeps with ray.init's default configure_logging=True (which only reformats them)."""
    ray_logger = logging.getLogger("ray")
    saved = list(ray_logger.handlers)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    ray_logger.handlers[:] = [handler]
    try:
        yield path
    finally:
        ray_logger.handlers[:] = saved
        handler.close()


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


def connect(address: str | None, env: dict[str, str] | None = None) -> None:
    """Join the cluster at `address`, or start a local Ray sized to this machine. `env` is set
    in every worker's environment.

    Token authentication is left as Ray decides it (on by default since 2.59 for a new local
    instance; RAY_AUTH_MODE of the user's environment otherwise): ablate sets nothing
    process-wide for it."""
    if ray.is_initialized():  # a caller (a test, a notebook) brought its own
        return
    _check_one_instance(address)
    try:
        if address is None:
            # Workers import a user's workload module from the working directory, as the driver
            # does. The new Ray's processes, and the workers they start, inherit the environment it
            # starts in: not a runtime_env, whose job cannot use the workers Ray starts ahead and
            # waits for a new one at its first trial (2 s on 2 cores, measured).
            path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))
            with _environment({**(env or {}), "PYTHONPATH": path}):
                # address="local": never join a stale cluster left in /tmp/ray by accident.
                ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RunError(f"cannot connect to Ray at {address or 'a new local instance'}: {_last_line(str(e))}") from None


@ray.remote(num_cpus=0)
def _sees(path: str) -> bool:
    return os.path.exists(path)


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
        blind = [node for node, seen in zip(answers, ray.get(list(answers.values()), timeout=timeout_s)) if not seen]
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
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
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
    return [p.split(";")[0] + ": trials wait until the cluster's autoscaler adds such a node" for p in problems]


def run_grid(grid: Grid, run: RunDir, display_factory, *, address: str | None = None,
             resources: Resources | None = None, retry_failed: bool = False, fail_fast: bool = False,
             data_dir: str | None = None, scheduler=None, wait: bool = False,
             notify=lambda message: None) -> RunSummary:
    """Run every trial of `grid` that has no result in `run` yet, as the run's only driver.

    The run is taken (lock.py) before anything is read or written, even when every trial turns out
    to be done: what is done is only known once no other driver is adding to it. A live driver of
    the run is a RunLocked error, or with `wait` waited for.

    `display_factory(total, skipped, planned_epochs, metrics)` makes the display. `scheduler`, a
    Tune TrialScheduler, may stop trials early: they are recorded as `stopped` with what they
    reached, and not run again. Its own end (ASHA's `max_t`) must lie beyond a trial's last
    epoch, or it stops every trial before `train` returns its final result.
    """
    with DriverLock(run).acquire(wait=wait, notify=notify):
        return _run_unfinished(grid, run, display_factory, address=address, resources=resources,
                               retry_failed=retry_failed, fail_fast=fail_fast, data_dir=data_dir,
                               scheduler=scheduler, notify=notify)


def _run_unfinished(grid, run, display_factory, *, address, resources, retry_failed, fail_fast, data_dir,
                    scheduler, notify) -> RunSummary:
    resources = resources or grid.resources
    publisher = Publisher(run)
    publisher.catch_up()  # what a killed driver left unpublished: now every record is in publisher.trials
    finished = records.statuses(publisher.trials)
    todo = [t for t in grid.trials if finished.get(t.trial_id) not in STATUSES
            or (retry_failed and finished[t.trial_id] == "failed")]
    failed_earlier = sum(1 for t in grid.trials if finished.get(t.trial_id) == "failed") if not retry_failed else 0
    skipped = len(grid.trials) - len(todo) - failed_earlier
    run.write_bytes(run.child(GRID_FILE), grid.path.read_bytes())

    ray_log = None
    if todo:
        # The dataset cache, for workloads that have one: workers run elsewhere (in a trial's folder).
        env = {"ABLATE_DATA": os.path.abspath(data_dir)} if data_dir else {}
        if address is None:
            with _environment(env):
                _prepare(grid, todo)
        with ray_messages_to(ray_log_path(run)) as ray_log:
            connect(address, env)
            if address is not None:
                check_storage_shared(run)
            for note in check_resources(resources, autoscaling=address is not None):
                notify(note)
            planned = {t.trial_id: grid.planned_epochs(t) for t in todo}
            try:
                with display_factory(len(todo), skipped, planned, grid.workload.metrics) as display:
                    _fit(grid, run, todo, resources, display, fail_fast, publisher, scheduler, local=address is None)
            finally:
                publisher.catch_up()  # every record in both files, whatever the pace left for later

    finished = records.statuses(publisher.trials)
    statuses = [finished.get(t.trial_id) for t in grid.trials]
    counts = {s: statuses.count(s) for s in STATUSES if statuses.count(s)}
    return RunSummary(run, counts, ran=len(todo), skipped=skipped, unfinished=statuses.count(None),
                      failed_earlier=failed_earlier, ray_log=ray_log)


def _prepare(grid: Grid, todo) -> None:
    """Fetch what the trials share once, here, so that a dataset that cannot be had is one error
    now instead of every trial failing."""
    if grid.workload.prepare is None:
        return
    try:
        grid.workload.prepare([grid.workload.config(**t.config) for t in todo])
    except WorkloadError as e:
        raise RunError(str(e)) from None


class _GridTrials(Searcher):
    """Hands Tune the grid's unfinished trials one at a time, in the grid's order. Not Tune's
    `grid_search`: it deep-copies its whole list of values for every trial it creates, which
    makes a grid of N trials cost N^2 (seconds at 300 trials, minutes at 3,000).

    With `slots`, the trials that fit at once on a Ray instance whose size does not change (the
    local one), it also keeps Tune from starting actors it then drops. Tune starts an actor for
    each trial that waits to run, but when a trial ends it gives the next one the actor just freed
    over the one still starting for it, and stops that one once it is up. Trials shorter than an
    actor's start (3-4 s on 2 cores) then all run on the first actor up while others are started
    and stopped in turn, and the run ends waiting for the last (2-3 s, in half the runs of 30 such
    trials, measured). So no more trials are handed out than fit, and once a trial ended while
    another waited for its actor, only as many as there are actors up, until a trial runs for
    longer than any waited for its actor (then a new actor would be up before it ends)."""

    def __init__(self, todo, slots: int | None = None, clock=time.monotonic):
        super().__init__()
        self.trials = [{"trial_id": t.trial_id, "config": t.config} for t in todo]
        self.given = 0
        self.clock = clock
        self.slots = self.limit = slots  # the most trials handed out and not ended (None: no limit)
        self.waiting: dict[str, float] = {}  # Tune's trial id -> when handed out, until it starts
        self.running: dict[str, float] = {}  # Tune's trial id -> when it started
        self.actor_start = 0.0  # the longest a trial waited for its actor

    def suggest(self, trial_id):
        if self.given == len(self.trials):
            return Searcher.FINISHED
        if self.limit is not None and len(self.waiting) + len(self.running) >= self.limit:
            if self.limit == self.slots or not self._outlasting_an_actor_start():
                return None  # Tune asks again at its next step
            self.limit = self.slots
        self.waiting[trial_id] = self.clock()
        self.given += 1
        return {"trial": self.trials[self.given - 1]}

    def _outlasting_an_actor_start(self) -> bool:
        return any(self.clock() - started > self.actor_start for started in self.running.values())

    def started(self, trial_id: str) -> None:
        """Tune started the trial on an actor."""
        handed = self.waiting.pop(trial_id, None)
        if handed is not None:
            self.actor_start = max(self.actor_start, self.clock() - handed)
        self.running[trial_id] = self.clock()

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.running.pop(trial_id, None)
        self.waiting.pop(trial_id, None)
        if self.slots is not None and self.waiting:  # a waiting trial takes this one's actor
            self.limit = len(self.running) + 1


def _trial_name(trial) -> str:
    # A module's function, not a lambda: Tune saves it with every trial's state, and pickles a
    # lambda whole each time: a trial's saved state is 5.7 kB with lambdas here, 3.4 kB without.
    return trial.config["trial"]["trial_id"]


def tune_config(trials: _GridTrials, resources: Resources, scheduler=None) -> tune.TuneConfig:
    """How Tune schedules the trials: one Tune trial per grid trial, named by its trial id."""
    return tune.TuneConfig(search_alg=trials, num_samples=len(trials.trials),
                           max_concurrent_trials=resources.max_concurrent, reuse_actors=True, scheduler=scheduler,
                           trial_dirname_creator=_trial_name, trial_name_creator=_trial_name)


def _tune_environment(trials: int) -> dict[str, str]:
    # With a searcher of its own Tune keeps one trial pending at a time: trials would start one
    # by one, and an autoscaler would see one waiting trial, not the grid. Tune's rule for its
    # own grid search instead: at least 200, or 1.1 per CPU of the cluster.
    pending = max(200, int(ray.cluster_resources().get("CPU", 1) * 1.1))
    return {**TUNE_ENVIRONMENT, "TUNE_MAX_PENDING_TRIALS_PG": str(min(trials, pending))}


def _slots(resources: Resources) -> int | None:
    """How many trials fit at once on the Ray cluster as it is (None: no resource bounds them)."""
    total = ray.cluster_resources()
    fits = [total.get("CPU", 0) // resources.cpus] if resources.cpus else []
    if resources.gpus:
        fits.append(total.get("GPU", 0) // resources.gpus)
    if resources.max_concurrent:
        fits.append(resources.max_concurrent)
    return max(1, int(min(fits))) if fits else None


def _fit(grid, run, todo, resources, display, fail_fast, publisher, scheduler, local) -> None:
    # Not tune.with_parameters, made for large objects: it fetches each from Ray's object store at
    # every trial's start (three round trips, 10% of a short trial's worker time). These are names.
    bound = functools.partial(run_trial, run_uri=run.uri, workload_name=grid.workload_ref, grid_name=grid.name,
                              report=tune.report)
    bound.__name__ = run_trial.__name__  # Tune names the trainable after it
    trainable = tune.with_resources(bound, {"cpu": resources.cpus, "gpu": resources.gpus})
    trials = _GridTrials(todo, _slots(resources) if local else None)  # a joined cluster may grow
    tuner = tune.Tuner(
        trainable,
        tune_config=tune_config(trials, resources, scheduler),
        run_config=tune.RunConfig(
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=join_uri(run.uri, "ray"), verbose=0,
            failure_config=tune.FailureConfig(max_failures=grid.max_failures, fail_fast=fail_fast),
            callbacks=[_Events(grid, run, display, publisher, trials)]),
    )
    # Tune logs every trial error with its traceback and warns about the result files its disabled
    # loggers did not write; the display and each trial's log say what happened instead.
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.CRITICAL)
    try:
        with _environment({k: os.environ.get(k, v) for k, v in _tune_environment(len(todo)).items()}):  # a user's own win
            tuner.fit()
    finally:
        tune_logger.setLevel(level)
