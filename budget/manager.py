"""The time budget: the deadline counted from process start and a rolling phase plan.

A ``Budget`` knows two deadlines: the *limit* itself and the *work deadline*
(limit minus a safety margin kept for writing outputs and exiting). Work is
divided into named phases with relative weights. A phase's time is fixed when
it starts, from what is left then::

    allotment = remaining() * weight / (sum of weights of phases not yet started, incl. this one)

so time an earlier phase does not use rolls over to the later ones, and the
last phase of the plan gets everything that remains.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from budget import reserves
from budget.clock import Clock

_PENDING = "pending"
_RUNNING = "running"
_DONE = "done"
_SKIPPED = "skipped"


def default_margin_s(time_limit_s: float) -> float:
    """Seconds kept back from the limit for writing outputs and process exit.

    Rule (budget/reserves.py): 4 % of the limit, at least 2 s and at most 60 s. For limits
    under 10 s a fixed 2 s would eat a large share of the run, so the floor shrinks to 20 % of
    the limit there (at 10 s both give 2 s, so the rule is continuous):
    ``min(60, max(0.04 * L, min(2, 0.2 * L)))``.
    """
    if time_limit_s <= 0:
        raise ValueError(f"time limit must be > 0 s, got {time_limit_s}")
    floor = min(reserves.OUTPUT_MARGIN_MIN_S, reserves.OUTPUT_MARGIN_SMALL_SHARE * time_limit_s)
    return min(reserves.OUTPUT_MARGIN_MAX_S, max(reserves.OUTPUT_MARGIN_SHARE * time_limit_s, floor))


@dataclass
class _PhaseRecord:
    name: str
    weight: float
    state: str = _PENDING
    planned_s: float | None = None
    start_s: float | None = None
    end_s: float | None = None
    skip_reason: str | None = None


class Budget:
    """The run's clock, deadlines and phase plan.

    ``clock`` is monotonic seconds (injectable for tests). ``already_elapsed_s``
    is how long the process ran before this object existed (see
    ``process_elapsed_s``), so ``elapsed()`` counts from process start.
    """

    def __init__(self, time_limit_s: float, *, clock: Clock = time.monotonic,
                 already_elapsed_s: float = 0.0, margin_s: float | None = None):
        if time_limit_s <= 0:
            raise ValueError(f"time limit must be > 0 s, got {time_limit_s}")
        if already_elapsed_s < 0:
            raise ValueError(f"already_elapsed_s must be >= 0, got {already_elapsed_s}")
        margin = default_margin_s(time_limit_s) if margin_s is None else float(margin_s)
        if not 0 <= margin < time_limit_s:
            raise ValueError(f"margin must be in [0, {time_limit_s}) s, got {margin}")
        self.time_limit_s = float(time_limit_s)
        self.margin_s = margin
        self._clock = clock
        self._origin = clock() - float(already_elapsed_s)
        self._records: dict[str, _PhaseRecord] = {}
        self._lock = threading.RLock()  # reports may be read from the watchdog or a signal handler

    # -- the clock -----------------------------------------------------------------
    def now(self) -> float:
        """The injected clock's current reading."""
        return self._clock()

    def elapsed(self) -> float:
        """Seconds since process start."""
        return self._clock() - self._origin

    @property
    def work_deadline(self) -> float:
        """Clock reading at which work must stop (limit minus margin)."""
        return self._origin + self.time_limit_s - self.margin_s

    def remaining(self) -> float:
        """Seconds until the work deadline (limit - margin), >= 0."""
        return max(0.0, self.work_deadline - self._clock())

    def hard_remaining(self) -> float:
        """Seconds until the limit itself, >= 0."""
        return max(0.0, self.time_limit_s - self.elapsed())

    # -- the plan ------------------------------------------------------------------
    def plan(self, weights: Sequence[tuple[str, float]]) -> None:
        """Set the relative weights of the phases still to run, in order.

        Replaces every phase not yet started; phases already started, finished
        or skipped keep their records and may not appear again.
        """
        names = [name for name, _ in weights]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names in a plan must be unique, got {names}")
        with self._lock:
            for name, weight in weights:
                _check_weight(name, weight)
                record = self._records.get(name)
                if record is not None and record.state != _PENDING:
                    raise ValueError(f"phase {name!r} is already {record.state}; it cannot be planned again")
            kept = {n: r for n, r in self._records.items() if r.state != _PENDING}
            kept.update((name, _PhaseRecord(name, float(weight))) for name, weight in weights)
            self._records = kept

    def skip_phase(self, name: str, reason: str) -> None:
        """Mark a phase as skipped with a reason; its weight goes to the others.

        A name that was never planned is recorded as skipped too, so the
        report shows every phase the run decided against.
        """
        with self._lock:
            record = self._records.get(name)
            if record is None:
                record = self._records[name] = _PhaseRecord(name, 0.0)
            elif record.state != _PENDING:
                raise ValueError(f"cannot skip phase {name!r}: it is already {record.state}")
            record.state = _SKIPPED
            record.planned_s = 0.0
            record.skip_reason = reason

    def mark_skipped(self, name: str, reason: str) -> None:
        """Record that a phase did not do its work, with the reason, whatever its state.

        For a phase that started and then decided not to run (a search that found its time too short
        to plan, a phase that failed): its status becomes "skipped", its start and end times stay (the
        time it took to decide was spent); a running one ends now. A pending or unplanned phase is
        skipped as by `skip_phase`. A phase already skipped keeps its first reason.
        """
        with self._lock:
            record = self._records.get(name)
            if record is None or record.state == _PENDING:
                self.skip_phase(name, reason)
                return
            if record.state == _SKIPPED:
                return
            if record.state == _RUNNING:
                record.end_s = self.elapsed()
            record.state = _SKIPPED
            record.skip_reason = reason

    def is_skipped(self, name: str) -> bool:
        """Whether the phase was skipped (by the plan or by itself)."""
        with self._lock:
            record = self._records.get(name)
            return record is not None and record.state == _SKIPPED

    def start_phase(self, name: str) -> "Phase":
        """Start a planned phase and fix its allotment from the time left now.

        Raises ValueError for a phase not in the plan (or already started or
        skipped) and RuntimeError while another phase is still running.
        """
        with self._lock:
            record = self._pending_record(name, "start")
            running = [r.name for r in self._records.values() if r.state == _RUNNING]
            if running:
                raise RuntimeError(f"cannot start phase {name!r}: phase {running[0]!r} is still running")
            pending = [r for r in self._records.values() if r.state == _PENDING]
            remaining = self.remaining()
            if len(pending) == 1:
                planned = remaining
            else:
                total = sum(r.weight for r in pending)
                planned = remaining * record.weight / total if total > 0 else 0.0
            now = self._clock()
            record.state = _RUNNING
            record.planned_s = planned
            record.start_s = now - self._origin
            return Phase(self, name, planned, deadline=min(now + planned, self.work_deadline))

    def phases_report(self) -> list[dict]:
        """One dict per phase in plan order: name, status, planned_s, start_s, end_s.

        Times are seconds since process start (``elapsed()``); ``planned_s`` is
        None for a phase not yet started, ``end_s`` None while it runs. Skipped
        phases carry ``skipped: reason`` (one that started before it was skipped,
        ``mark_skipped``, keeps its planned, start and end times).
        """
        with self._lock:
            rows = []
            for r in self._records.values():
                row = {"name": r.name, "status": r.state, "planned_s": _round(r.planned_s),
                       "start_s": _round(r.start_s), "end_s": _round(r.end_s)}
                if r.state == _SKIPPED:
                    row["skipped"] = r.skip_reason
                rows.append(row)
            return rows

    # -- used by Phase -------------------------------------------------------------
    def _finish_phase(self, name: str) -> None:
        with self._lock:
            record = self._records[name]
            if record.state == _RUNNING:
                record.state = _DONE
                record.end_s = self.elapsed()

    def _pending_record(self, name: str, action: str) -> _PhaseRecord:
        record = self._records.get(name)
        if record is None:
            planned = [r.name for r in self._records.values() if r.state == _PENDING]
            raise ValueError(f"cannot {action} phase {name!r}: it is not in the plan (phases not yet started: {planned})")
        if record.state != _PENDING:
            raise ValueError(f"cannot {action} phase {name!r}: it is already {record.state}")
        return record


class Phase:
    """A running phase: its own deadline, never beyond the budget's work deadline.

    ``deadline`` is a reading of the budget's clock. Use as a context manager
    (``__exit__`` calls ``finish()``); a finished phase has no time left.
    """

    def __init__(self, budget: Budget, name: str, planned_s: float, *, deadline: float):
        self._budget = budget
        self.name = name
        self.planned_s = planned_s
        self.deadline = deadline
        self._finished = False

    def remaining(self) -> float:
        """Seconds until min(phase deadline, work deadline), >= 0; 0 once finished."""
        if self._finished:
            return 0.0
        end = min(self.deadline, self._budget.work_deadline)
        return max(0.0, end - self._budget.now())

    def finish(self) -> None:
        """Record the end time; idempotent."""
        if not self._finished:
            self._finished = True
            self._budget._finish_phase(self.name)

    def __enter__(self) -> "Phase":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"Phase({self.name!r}, planned_s={self.planned_s:.1f}, remaining={self.remaining():.1f})"


def _check_weight(name: str, weight: float) -> None:
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"phase {name!r}: weight must be finite and >= 0, got {weight}")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
