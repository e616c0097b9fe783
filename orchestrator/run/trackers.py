"""The experiment trackers a grid's trials can be logged to (a grid's `tracking:`): MLflow, TensorBoard
and W&B, each through its own client, one tracker run per trial. Tracking (tracking.py) drives them:

    tracker = TRACKERS[name](grid, run, settings)    # a RunError if it cannot be used
    state = tracker.start_or_resume(trial_id, cell, config, state)   # its run; state["last_step"]
    tracker.log_epochs(state, [(step, metrics), ...])
    tracker.finish(state, status, final_metrics)
"""
from __future__ import annotations

import itertools
import os
import re
from typing import Any

from orchestrator.errors import RunError
from orchestrator.plan.grid import Grid
from orchestrator.run.display import describe
from orchestrator.run.settings import environment
from orchestrator.store.rundir import RunDir

# A tracking server that does not answer is one line in seconds, not MLflow's minutes of retries.
MLFLOW_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
MLFLOW_STATUS = {"failed": "FAILED", "stopped": "KILLED"}  # any other status: FINISHED
NOTHING = -1  # the last step of a tracker run that holds none: a script's first report is often step 0


def mlflow_name(name: str, by: str = "_") -> str:
    """A metric's name as MLflow takes it: each character it refuses (`acc@1`, `loss(val)`) as `by`,
    and no empty, `.` or `..` part of a path (`val//loss`), which it refuses too; a refused name
    would fail the whole batch, and with it the trial's every metric."""
    name = re.sub(r"[^\w.\- /]", by, name)[:250]  # MLflow's alphabet, without the colon older servers refuse
    return "/".join(part if part.strip(".") else part.replace(".", by) or by for part in name.split("/"))


def mlflow_names(names, given: dict[str, str]) -> dict[str, str]:
    """`given` (each name a run has logged -> its name in MLflow) with `names` added, no two under
    one name in MLflow. A name MLflow takes as it is keeps it, and claims it before the others of
    `names`; one it refuses has `_` for each character it refuses, or where another name has that,
    `-` (`acc@1` beside `acc_1`: `acc-1`), then a space; failing those, and for a name MLflow takes
    whose own is already another's, a number is added (`acc_1-2`)."""
    used = set(given.values())
    for name in sorted(dict.fromkeys(names), key=lambda n: mlflow_name(n) != n):  # stable: as they came
        if name in given:
            continue
        forms = [mlflow_name(name, by) for by in "_- "]
        given[name] = next((f for f in forms if f not in used), None) or \
            next(f"{forms[0][:240]}-{n}" for n in itertools.count(2) if f"{forms[0][:240]}-{n}" not in used)
        used.add(given[name])
    return given


class MLflow:
    """One MLflow run per trial in the grid's experiment, found again by its `ablate.trial_id` tag."""
    name = "mlflow"

    def __init__(self, grid: Grid, run: RunDir, settings: dict[str, str]):
        try:
            import mlflow
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise RunError("tracking with mlflow: mlflow is not installed (pip install 'ablate[mlflow]')") from None
        self.uri = settings.get("tracking_uri") or mlflow.get_tracking_uri()
        try:
            self.client = MlflowClient(self.uri)
        except Exception as e:  # a URI MLflow refuses: a scheme it has no store for, its file store switched off
            raise RunError(f"tracking with mlflow: {self.uri}: {one_line(e)}") from None
        self.experiment_name = settings.get("experiment") or grid.name
        with environment(MLFLOW_QUICK):
            try:
                found = self.client.get_experiment_by_name(self.experiment_name)
                self.experiment = found.experiment_id if found else self.client.create_experiment(self.experiment_name)
            except Exception as e:
                raise RunError(f"tracking with mlflow: {self.uri} does not answer ({one_line(e)})") from None

    def where(self) -> str:
        return f"{self.uri} experiment {self.experiment_name}"

    def shown(self) -> str:
        """Where a user finds the trials: the experiment's page, said once for the run (MLflow's
        own links, two lines per trial among the run's, are switched off: environment_for_tracking)."""
        if self.uri.startswith(("http://", "https://")):
            return f"MLflow: {self.uri.rstrip('/')}/#/experiments/{self.experiment}"
        return f"MLflow: {self.uri}, experiment {self.experiment_name}"

    def start_or_resume(self, trial_id: str, cell: dict, config: dict, state: dict | None) -> dict:
        run_id = (state or {}).get("run_id")
        if run_id is None:  # a driver killed before it stored the run's id: the run is found by its tag
            found = self.client.search_runs([self.experiment], f"tags.`ablate.trial_id` = '{trial_id}'", max_results=1)
            run_id = found[0].info.run_id if found else None
        if run_id is None:
            tags = {"ablate.trial_id": trial_id, "ablate.cell": describe({k: v for k, v in cell.items() if k != "seed"}),
                    **{f"ablate.{k}": str(v) for k, v in cell.items()}}
            run = self.client.create_run(self.experiment, run_name=f"{trial_id} {describe(cell)}", tags=tags)
            run_id = run.info.run_id
            from mlflow.entities import Param
            self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in config.items()])
        return {"run_id": run_id, "last_step": max((state or {}).get("last_step", NOTHING), self._last_step(run_id))}

    def _last_step(self, run_id: str) -> int:
        """The last step the run holds, whatever this storage says: a driver killed between logging
        and storing its step logs that step once still."""
        metrics = self.client.get_run(run_id).data.metrics
        steps = [m.step for key in metrics if not key.startswith("final/") for m in self.client.get_metric_history(run_id, key)]
        return max(steps, default=NOTHING)

    def log_epochs(self, state: dict, epochs: list[tuple[int, dict[str, float]]]) -> None:
        from mlflow.entities import Metric
        import time
        if state.get("finished"):  # a failed trial run again (--retry-failed)
            self.client.update_run(state["run_id"], status="RUNNING")
        now = int(time.time() * 1000)
        # The names stay with the trial's state: a name takes the same metric in every batch, every driver.
        names = mlflow_names((k for _, values in epochs for k in values), state.setdefault("names", {}))
        metrics = [Metric(names[k], v, now, step) for step, values in epochs for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(state["run_id"], metrics=metrics[i:i + 1000])

    def finish(self, state: dict, status: str, final: dict[str, float]) -> None:
        from mlflow.entities import Metric, RunTag
        import time
        now = int(time.time() * 1000)
        names = mlflow_names((f"final/{k}" for k in final), state.setdefault("names", {}))
        metrics = [Metric(names[f"final/{k}"], v, now, max(state["last_step"], 0)) for k, v in final.items()]
        self.client.log_batch(state["run_id"], metrics=metrics, tags=[RunTag("ablate.status", status)])
        self.client.set_terminated(state["run_id"], MLFLOW_STATUS.get(status, "FINISHED"))


class TensorBoard:
    """One log directory per trial (`<log_dir>/<trial_id>`, by default `<run>/tensorboard/`), written
    with torch's SummaryWriter: torch is there already, and it needs only the tensorboard package."""
    name = "tensorboard"

    def __init__(self, grid: Grid, run: RunDir, settings: dict[str, str]):
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401 (imports tensorboard)
        except ImportError:
            raise RunError("tracking with tensorboard: tensorboard is not installed "
                           "(pip install 'ablate[tensorboard]')") from None
        if "log_dir" not in settings and not run.local:
            raise RunError(f"tracking with tensorboard: {run.display()} is not a local directory; "
                           f"give tracking: {{tensorboard: {{log_dir: ...}}}} in the grid")
        self.log_dir = os.path.abspath(settings.get("log_dir") or os.path.join(run.path, "tensorboard"))
        try:
            os.makedirs(self.log_dir, exist_ok=True)
        except OSError as e:
            raise RunError(f"tracking with tensorboard: {self.log_dir}: cannot write there ({e.strerror})") from None
        self.writers: dict[str, Any] = {}

    def where(self) -> str:
        return self.log_dir

    def shown(self) -> str:
        return f"TensorBoard: tensorboard --logdir {self.log_dir}"

    def _writer(self, state: dict):
        from torch.utils.tensorboard import SummaryWriter
        if state["dir"] not in self.writers:
            self.writers[state["dir"]] = SummaryWriter(state["dir"])
        return self.writers[state["dir"]]

    def start_or_resume(self, trial_id: str, cell: dict, config: dict, state: dict | None) -> dict:
        path = os.path.join(self.log_dir, trial_id)
        logged = _tensorboard_last_step(path)  # what event files there hold, whatever this storage says
        state = {"dir": path, "last_step": max((state or {}).get("last_step", NOTHING), logged)}
        if not os.path.isdir(path):
            text = "\n".join(f"| {k} | {v} |" for k, v in config.items())
            self._writer(state).add_text("config", f"{describe(cell)}\n\n| parameter | value |\n|---|---|\n{text}")
            self._writer(state).flush()
        return state

    def log_epochs(self, state: dict, epochs: list[tuple[int, dict[str, float]]]) -> None:
        writer = self._writer(state)
        for step, values in epochs:
            for k, v in values.items():
                writer.add_scalar(k, v, step)
        writer.flush()

    def finish(self, state: dict, status: str, final: dict[str, float]) -> None:
        writer = self._writer(state)
        for k, v in final.items():
            writer.add_scalar(f"final/{k}", v, max(state["last_step"], 0))
        writer.add_text("status", status, max(state["last_step"], 0))
        writer.close()
        del self.writers[state["dir"]]


def _tensorboard_last_step(path: str) -> int:
    if not os.path.isdir(path):
        return NOTHING
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(path, size_guidance={"scalars": 0})
    events.Reload()
    return max((e.step for tag in events.Tags()["scalars"] if not tag.startswith("final/")
                for e in events.Scalars(tag)), default=NOTHING)


class WandB:
    """One W&B run per trial in the grid's project (WANDB_PROJECT, else the grid's name), grouped by
    its cell; its id is made from the grid and trial ids, so every driver resumes the same run."""
    name = "wandb"

    def __init__(self, grid: Grid, run: RunDir, settings: dict[str, str]):
        try:
            import wandb
        except ImportError:
            raise RunError("tracking with wandb: wandb is not installed (pip install 'ablate[wandb]')") from None
        self.wandb, self.grid = wandb, grid
        self.project = settings.get("project") or os.environ.get("WANDB_PROJECT") or grid.name
        self.entity = settings.get("entity") or os.environ.get("WANDB_ENTITY")
        self.mode = settings.get("mode") or os.environ.get("WANDB_MODE") or "online"
        if self.mode not in ("online", "offline", "disabled"):
            raise RunError(f"tracking with wandb: mode {self.mode!r} is not one of online, offline, disabled")
        if self.mode == "online" and not (os.environ.get("WANDB_API_KEY") or _wandb_logged_in(wandb)):
            raise RunError("tracking with wandb: no W&B credentials (run `wandb login`, set WANDB_API_KEY, "
                           "or WANDB_MODE=offline)")
        self.dir = settings.get("dir") or os.environ.get("WANDB_DIR") or (run.path if run.local else None)
        self.runs: dict[str, Any] = {}

    def where(self) -> str:
        return f"{self.mode} {self.entity or ''}/{self.project}"

    def shown(self) -> str:
        if self.mode == "offline":
            return f"W&B, offline in {os.path.join(self.dir or '.', 'wandb')} (`wandb sync` uploads them)"
        return f"W&B project {self.entity + '/' if self.entity else ''}{self.project} ({self.mode})"

    def start_or_resume(self, trial_id: str, cell: dict, config: dict, state: dict | None) -> dict:
        import hashlib
        run_id = (state or {}).get("run_id") or hashlib.sha1(f"{self.grid.name}/{trial_id}".encode()).hexdigest()[:16]
        self.runs[run_id] = self.wandb.init(
            id=run_id, resume="allow", project=self.project, entity=self.entity, mode=self.mode, dir=self.dir,
            name=f"{trial_id} {describe(cell)}", group=describe({k: v for k, v in cell.items() if k != "seed"}) or None,
            config=config, reinit="create_new", settings=self.wandb.Settings(silent=True, console="off"))
        return {"run_id": run_id, "last_step": (state or {}).get("last_step", NOTHING)}

    def _run(self, state: dict):
        return self.runs[state["run_id"]]

    def log_epochs(self, state: dict, epochs: list[tuple[int, dict[str, float]]]) -> None:
        for step, values in epochs:
            self._run(state).log(values, step=step)

    def finish(self, state: dict, status: str, final: dict[str, float]) -> None:
        run = self.runs.pop(state["run_id"])
        run.summary.update({**{f"final/{k}": v for k, v in final.items()}, "status": status})
        run.finish(exit_code=1 if status == "failed" else 0)


def _wandb_logged_in(wandb) -> bool:
    """Whether `wandb login` saved a key for the host (its netrc), without asking the server."""
    try:
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth
        return bool(read_netrc_auth(host=os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")))
    except Exception:  # another wandb's layout: the server says at the first run
        return True


# The client of each tracker a grid may name, by the name plan/execution.py's TRACKER_SETTINGS gives it
# with the settings the client reads.
TRACKERS = {"mlflow": MLflow, "tensorboard": TensorBoard, "wandb": WandB}


def one_line(e: Exception) -> str:
    """An error as one line: its first, at most 200 characters."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
