"""The one deadline rule for stepwise work (training batches, DARTS search steps).

A step is started only when the time left covers STEP_SAFETY x the slowest of the last WINDOW steps,
plus a reserve for work that must follow (a validation pass). Until a step has been timed (and without
a hint) a step starts whenever any time is left.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

from budget.reserves import STEP_SAFETY
from budget.reserves import STEP_WINDOW as WINDOW


class StepGuard:
    """time_left: seconds until the deadline; hint: an expected step time measured elsewhere."""

    def __init__(self, time_left: Callable[[], float], *, hint: float | None = None,
                 times: Iterable[float] = ()):
        self.time_left = time_left
        self._times: deque[float] = deque([hint] if hint else [], maxlen=WINDOW)
        self._times.extend(float(t) for t in times)

    @property
    def estimate(self) -> float | None:
        """Seconds of the slowest recent step (None before any)."""
        return max(self._times) if self._times else None

    @property
    def times(self) -> list[float]:
        """The recent step times (for a checkpoint; StepGuard(times=...) restores them)."""
        return list(self._times)

    def allows(self, reserve: float = 0.0) -> bool:
        """May the next step start? (time left > 0 and >= STEP_SAFETY x estimate + reserve)"""
        left = self.time_left()
        estimate = self.estimate
        return left > 0 and (estimate is None or left >= STEP_SAFETY * estimate + reserve)

    def record(self, seconds: float) -> None:
        self._times.append(float(seconds))

    def reset(self, seconds: float) -> None:
        """Replace the recent times by one measured figure (e.g. an epoch's synced average)."""
        self._times.clear()
        self._times.append(float(seconds))
