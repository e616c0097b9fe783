"""Synchronous successive halving inside each cell of a grid (plan/halving.py says what the grid
asks for), made from what is on storage so that any driver arrives at the same decisions.

    halver = Halver(grid, run)
    plan = halver.next(final)   # trial_id -> the epoch it trains until (None: to its end)

A cell's settings train to its next rung, where each trial pauses from its checkpoint without a
record (run/session.py, Paused). Once all of them are there (or ended: failed, diverged), the cell
ranks its settings by the mean over seeds of the grid's metric at the rung (the best report up to
it, for a metric declared `summary: best`), keeps the best `keep` of them, records the decision
in the run's halving.json, and records the others' trials as `stopped` at the rung: final, like
every result. A decision once recorded is never made again: a rerun, a driver that was killed
or one that took the run over reads it. Trials added later (a new seed of a setting) follow their
cell's decisions; a setting a decision did not rank (a new value of a halved axis) is ranked at
that rung against it and kept where it is at least as good as the worst setting the decision kept.
A cell with one setting left has nothing to compare: it trains straight through, or, while other
cells still decide, to their rungs with them, so that it holds none of them up at its own.
"""
from __future__ import annotations

import hashlib
import json
import math
import statistics
from typing import Any

from orchestrator.plan.expand import identity_fields
from orchestrator.plan.grid import Grid
from orchestrator.plan.halving import DECISIONS, cell_key, read_decisions, setting_key
from orchestrator.plan.params import fmt
from orchestrator.errors import CheckpointError
from orchestrator.run.trial import write_stopped
from orchestrator.store import records
from orchestrator.store.lines import Lines
from orchestrator.store.rundir import EPOCHS, RunDir, now, position, up_to


class Halver:
    """The halving of one run's grid: its cells, their settings and the decisions made so far."""

    def __init__(self, grid: Grid, run: RunDir, on_stopped=lambda trial_id, rung, reason: None,
                 notify=lambda message: None):
        self.grid, self.run, self.halving, self.metric = grid, run, grid.halving, grid.objective.metric
        self.on_stopped = on_stopped  # each trial recorded as stopped (at a rung), once its record is written
        self.notify = notify  # told of a paused trial whose epochs file is damaged
        self.cells: dict[str, dict[str, list]] = {}  # cell -> setting -> its trials, in the grid's order
        self.basis: dict[str, str] = {}  # cell -> what its trials share beyond the axes (_basis)
        for trial in grid.trials:
            cell = cell_key(trial, self.halving)
            self.cells.setdefault(cell, {}).setdefault(setting_key(trial, self.halving), []).append(trial)
            if cell not in self.basis:
                self.basis[cell] = self._basis(trial)
        self.decisions = read_decisions(run)

    def _basis(self, trial) -> str:
        """A hash of what a cell's trials share beyond its axes' values: the workload, and the fixed
        values and defaults that count for a trial's id. A decision holds for those only: the grid
        run again with another fixed value (new trials) decides anew."""
        identity = identity_fields(self.grid.workload.config)
        shared = {k: v for k, v in trial.config.items() if k in identity and k not in trial.cell}
        text = json.dumps({"workload": self.grid.workload.name, "config": shared}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def next(self, final: dict[str, str]) -> dict[str, int | None]:
        """Make every decision that can be made now, given `final` (trial_id -> status of each
        trial that has a result), and say which trials to run next and until where."""
        plan: dict[str, int | None] = {}
        along: set[str] = set()  # trials of cells with one setting left: nothing to compare
        for cell, settings in self.cells.items():
            plan.update(self._cell(cell, settings, final, along))
        # Those go with the round, to the furthest rung its other trials train to, or to their end
        # where none stops at a rung: they wait for no decision, and hold up none at its rung.
        bounds = [until for trial_id, until in plan.items() if trial_id not in along]
        reach = None if not bounds or None in bounds else max(bounds)
        for trial_id in along:
            if reach is not None and position(self.run.progress(trial_id)) >= reach:
                del plan[trial_id]  # there already: it goes on with a later round
            else:
                plan[trial_id] = reach
        return plan

    def _cell(self, cell: str, settings: dict[str, list], final: dict[str, str], along: set[str]) -> dict[str, int | None]:
        plan: dict[str, int | None] = {}
        alive = list(settings)
        for rung in self.halving.rungs:
            if len(alive) < 2:  # nothing to compare: it goes with the round (next())
                left = [t.trial_id for s in alive for t in settings[s] if t.trial_id not in final]
                along.update(left)
                return {**plan, **dict.fromkeys(left)}
            made = [d for d in self.decisions if d["cell_key"] == cell and d["rung"] == rung
                    and d.get("basis", self.basis[cell]) == self.basis[cell]]  # one of an older ablate holds
            ranked = {entry["setting"] for d in made for entry in d["ranking"]}
            new = [s for s in alive if s not in ranked]
            if any(not self._reached(t, rung, final) for s in new for t in settings[s]):
                # Not decidable yet: every setting of the cell trains to this rung first.
                return {t.trial_id: rung for s in alive for t in settings[s] if not self._reached(t, rung, final)}
            if new:
                made.append(self._decide(cell, rung, {s: settings[s] for s in new}, made, final))
            kept = {s for d in made for s in d["kept"]}
            for s in alive:
                if s in kept:
                    continue
                for t in settings[s]:
                    if t.trial_id in final:
                        continue
                    if self._reached(t, rung, final):
                        self._stop(t, rung, s, made)
                    else:  # a trial added since the decision: it trains to the rung its setting reached
                        plan[t.trial_id] = rung
            alive = [s for s in alive if s in kept]
        plan.update({t.trial_id: None for s in alive for t in settings[s] if t.trial_id not in final})
        return plan

    def _reached(self, trial, rung: int, final: dict[str, str]) -> bool:
        return trial.trial_id in final or position(self.run.progress(trial.trial_id)) >= rung

    def _score(self, trial, rung: int, final: dict[str, str]) -> tuple[float | None, str]:
        """The trial's metric at the rung: its last value up to its first report at or past the
        rung, where a trial that trained to the rung paused (a script that reports every N steps may
        have no report at the rung itself; a script's epoch rows among its step rows: the last
        epoch's), or its best up to it for a metric summarized by its best; or None and why it has none."""
        if trial.trial_id in final:
            status = final[trial.trial_id]
            if status not in ("completed", "stopped"):
                return None, status
            epochs = records.read_epochs(self.run, [trial.trial_id], ["trial_id", "epoch", "step", self.metric.name])
            # One that completed before the rung (its own early stopping) ended at its last report.
            value = self._at_rung(epochs.to_pylist() if epochs is not None else [], rung, ended=status == "completed")
        else:  # paused at this rung, or past it where its script printed on before it was stopped
            try:
                reported = self.run.reported(trial.trial_id)
            except CheckpointError:  # a disk fault, a copy cut short: as one that failed before the rung
                self.notify(f"{self.run.display('trials', trial.trial_id, EPOCHS)}: unreadable, so trial "
                            f"{trial.trial_id} has no {self.metric.name} at {rung}: its setting ranks after "
                            "those that have one there")
                return None, "an unreadable epochs file"
            if reported is not None:
                value = self._at_rung(reported, rung)
            else:  # paused by an older ablate, which kept the epochs in the checkpoint: its progress
                progress = self.run.progress(trial.trial_id)
                held = (self.metric.summary == "best" and progress.get("best")) or progress.get("last") \
                    or progress.get("metrics")
                value = self.metric.best([(held or {}).get(self.metric.name)])
        if not isinstance(value, (int, float)) or isinstance(value, bool):  # None, or text
            return None, f"no {self.metric.name}"
        # A loss that blew up before the rung (nan, or inf either way) would sort first, or anywhere.
        return (value, "") if math.isfinite(value) else (None, "diverged")

    def _at_rung(self, epochs: list[dict], rung: int, ended: bool = False) -> float | None:
        """The metric at the trial's first report at or past the rung (or its best up to there), or
        at its last where it `ended` before the rung."""
        reached, there = up_to(epochs, rung)
        values = [v for e in reached if (v := e.get(self.metric.name)) is not None]
        if self.metric.summary == "best":
            return self.metric.best(values)
        return values[-1] if (there or ended) and values else None

    def _decide(self, cell: str, rung: int, candidates: dict[str, list], earlier: list[dict],
                final: dict[str, str]) -> dict[str, Any]:
        ranking = []
        for setting, trials in candidates.items():
            scores = [self._score(t, rung, final) for t in trials]
            missing = [why for value, why in scores if value is None]
            ranking.append({"setting": setting, "values": json.loads(setting),
                            "score": statistics.fmean(v for v, _ in scores) if not missing else None,
                            "seeds": len(trials), "why": ", ".join(sorted(set(missing))) or None})
        ranking = self._ranked(ranking)
        scored = [e for e in ranking if e["score"] is not None]
        note = None
        if earlier:  # settings new to a decided rung join those it kept where they are as good
            bar = [e["score"] for d in earlier for e in d["ranking"] if e["setting"] in d["kept"] and e["score"] is not None]
            worst = (max if self.metric.mode == "min" else min)(bar) if bar else None
            kept = [e for e in scored if worst is None or not self.metric.better(worst, e["score"])]
        else:
            kept = scored[:self.halving.kept(len(ranking))]
            if not kept:
                kept = ranking[:1]
                note = (f"no setting has a {self.metric.name} at {rung} (every one has a seed that "
                        f"{' or '.join(sorted({e['why'] for e in ranking}))}): the first is kept")
        decision = {"cell": json.loads(cell), "cell_key": cell, "basis": self.basis[cell], "rung": rung,
                    "metric": self.metric.name, "mode": self.metric.mode, "summary": self.metric.summary,
                    "ranking": ranking, "kept": [e["setting"] for e in kept], "note": note,
                    "decided_at": now().isoformat()}
        self.decisions.append(decision)
        # Written before any trial is stopped by it: a driver killed in between makes no other.
        self.run.write_bytes(self.run.child(DECISIONS), json.dumps(self.decisions, indent=1).encode())
        return decision

    def _stopped_at(self, trial, rung: int) -> int | None:
        """The step of the trial's first report at or past the rung, where it reports steps (None
        where its epochs cannot be read: its row goes without them, write_stopped)."""
        try:
            reported = self.run.reported(trial.trial_id)
        except CheckpointError:
            return None
        reached, there = up_to(reported or [], rung)
        return reached[-1].get("step") if there else None

    def _ranked(self, entries: list[dict]) -> list[dict]:
        """Ranking entries best first by score, in the metric's mode; those without one last, as they were."""
        scored = sorted((e for e in entries if e["score"] is not None),
                        key=lambda e: e["score"] if self.metric.mode == "min" else -e["score"])
        return scored + [e for e in entries if e["score"] is None]

    def _stop(self, trial, rung: int, setting: str, made: list[dict]) -> None:
        # In one order over the rung's decisions: a setting new to a decided rung among those it beat.
        entries = self._ranked([e for d in made for e in d["ranking"]])
        place = next(i for i, e in enumerate(entries) if e["setting"] == setting)
        score = entries[place]["score"]
        values = ", ".join(f"{k}={fmt(v)}" for k, v in json.loads(setting).items())
        by = f"best {self.metric.name} up to it" if self.metric.summary == "best" else self.metric.name
        # A script that reports every N steps stops at its first report past the rung, as its row says.
        past = self._stopped_at(trial, rung)
        at = f"{rung}, at step {past} (its first report past it)" if past not in (None, rung) else f"{rung}"
        reason = (f"stopped by halving at {at}: {values} ranked {place + 1} of {len(entries)} by {by}"
                  + (f" ({score:.4g})" if score is not None else f" ({entries[place]['why']})"))
        # Its log ends at its pause otherwise; said before the record, so that a driver killed between says it again.
        log = Lines(self.run, self.run.trial_file(trial.trial_id, "trial.log"))
        try:
            log.add(f"{now():%Y-%m-%d %H:%M:%S} {reason}\n".encode())
        finally:
            log.close()
        write_stopped(self.run, self.grid.workload, self.grid.name, trial.trial_id, trial.config,
                      self.run.progress(trial.trial_id), rung, reason)
        self.on_stopped(trial.trial_id, rung, reason)
