"""Trials that hang: a deadlocked data loader, a script waiting on input, a collective that never
returns. Nothing inside such a trial can be relied on to notice, so the driver watches each attempt
from outside, and events.py ends those that are overdue (their worker, and with it a script's
process group) as failures that `max_failures` retries.

    hangs = Hangs(timeout_s=grid.trial_timeout, planned={trial_id: epochs})
    hangs.started(trial_id); hangs.reported(trial_id, epoch)
    for trial_id, reason in hangs.overdue(): ...   # end it; `reason` is its error

Two rules, per attempt (a retry starts its clocks again):

- `trial_timeout` (a grid's, or `ablate run --trial-timeout`): an attempt running longer than that.
- Silence: an attempt that has reported at least two epochs and then reports nothing for more
  than SILENT_FACTOR times its longest gap between reports so far, and at least SILENT_MIN_S.
  The longest gap includes the first, from the attempt's start (start-up, data loading,
  compilation), so an attempt's own slowest step sets its bound. Judged only before its last
  planned epoch: what a trial does after it (a final evaluation) has no epoch to compare with;
  the timeout covers that. A trial whose workload does not say how many epochs it makes, or that
  reports no `epoch`, is judged by the timeout alone.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

# Far from what an epoch that is merely slow takes (an evaluation every few epochs, a checkpoint
# written to slow storage), so that silence this long means a hang. 0 turns the rule off.
SILENT_FACTOR = float(os.environ.get("ABLATE_SILENT_FACTOR", "10"))
SILENT_MIN_S = float(os.environ.get("ABLATE_SILENT_MIN_S", "600"))


@dataclass
class _Attempt:
    began: float
    last: float  # its last report, or its start
    longest: float = 0.0  # the longest gap between reports, the first from its start
    reports: int = 0
    epoch: int | None = None  # the last reported


class Hangs:
    """The attempts running now, and which of them are overdue."""

    def __init__(self, timeout_s: float | None, planned: dict[str, int | None], clock=time.monotonic,
                 silent_factor: float | None = None, silent_min_s: float | None = None):
        self.timeout_s, self.planned, self.clock = timeout_s, planned, clock
        self.silent_factor = SILENT_FACTOR if silent_factor is None else silent_factor
        self.silent_min_s = SILENT_MIN_S if silent_min_s is None else silent_min_s
        self.attempts: dict[str, _Attempt] = {}

    def started(self, trial_id: str) -> None:
        now = self.clock()
        self.attempts[trial_id] = _Attempt(began=now, last=now)

    def reported(self, trial_id: str, epoch) -> None:
        attempt = self.attempts.get(trial_id)
        if attempt is None:
            return
        now = self.clock()
        attempt.longest = max(attempt.longest, now - attempt.last)
        attempt.last, attempt.reports = now, attempt.reports + 1
        attempt.epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None

    def ended(self, trial_id: str) -> None:
        self.attempts.pop(trial_id, None)

    def overdue(self) -> list[tuple[str, str]]:
        """(trial_id, why) of each attempt to end now; each is named once, then no longer watched."""
        now, out = self.clock(), []
        for trial_id, attempt in self.attempts.items():
            if self.timeout_s is not None and now - attempt.began > self.timeout_s:
                out.append((trial_id, f"timed out after {self.timeout_s:g} s (trial_timeout)"))
            elif self._silent(trial_id, attempt, now):
                out.append((trial_id, f"reported nothing for {now - attempt.last:.0f} s after epoch {attempt.epoch}, "
                                      f"more than {self.silent_factor:g} times its slowest epoch so far "
                                      f"({attempt.longest:.1f} s): taken for hung"))
        for trial_id, _ in out:
            del self.attempts[trial_id]
        return out

    def _silent(self, trial_id: str, attempt: _Attempt, now: float) -> bool:
        planned = self.planned.get(trial_id)
        if not self.silent_factor or attempt.reports < 2 or attempt.epoch is None or not planned:
            return False
        if attempt.epoch >= planned:
            return False
        return now - attempt.last > max(self.silent_factor * attempt.longest, self.silent_min_s)
