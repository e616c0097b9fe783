"""Ray's memory monitor killing a trial's worker, handed on to Tune as the worker's death: the
trial fails and is retried (events.py says why, in one line), instead of the whole run ending.

    with out_of_memory_as_death():
        tuner.fit()
"""
from __future__ import annotations

import contextlib
import inspect

from ray.exceptions import RayActorError


@contextlib.contextmanager
def out_of_memory_as_death():
    """Ray's memory monitor killing a trial's worker as it trains fails the trial's task with an
    OutOfMemoryError, which Tune's actor manager (ray 2.60, seen here) does not expect: it raises
    it, and the whole run ends with a traceback. Handed on as the worker's death, the
    trial fails and is retried as when any other death ends its worker. A Ray whose private names
    differ keeps its own behaviour: the patch is left out, not every run failed."""
    try:
        from ray.air.execution._internal.actor_manager import RayActorManager
        from ray.exceptions import OutOfMemoryError
    except ImportError:
        RayActorManager = None
    failed = getattr(RayActorManager, "_actor_task_failed", None)
    if failed is None or list(inspect.signature(failed).parameters) != ["self", "tracked_actor_task", "exception"]:
        yield
        return

    def task_failed(self, tracked_actor_task, exception):
        if isinstance(exception, OutOfMemoryError):
            exception = RayActorError(error_msg=str(exception))
        return failed(self, tracked_actor_task=tracked_actor_task, exception=exception)
    RayActorManager._actor_task_failed = task_failed
    try:
        yield
    finally:
        RayActorManager._actor_task_failed = failed
