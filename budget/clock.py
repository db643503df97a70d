"""Clocks: monotonic seconds as a plain callable, and a fake one for tests."""
from __future__ import annotations

from typing import Callable

Clock = Callable[[], float]
"""Any ``() -> float`` of monotonic seconds; ``time.monotonic`` in production."""


class FakeClock:
    """A clock that only moves when told to, so time logic is tested in milliseconds."""

    def __init__(self, start: float = 0.0):
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward; a clock never runs backwards."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance needs seconds >= 0, got {seconds}")
        self._now += float(seconds)
