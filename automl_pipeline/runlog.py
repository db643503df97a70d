"""Progress lines (stderr, unless quiet), the run.log file, and the report's event list."""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Callable, TextIO


class RunLog:
    """Writes `[elapsed | left] message` lines to stderr and to OUT/run.log.

    elapsed/left come from two callables (the budget's), so this module knows no clock.
    Events (resumes, failed trials, watchdog actions, skipped inputs) are kept for report.json.
    """

    def __init__(self, path: Path | None, *, quiet: bool, elapsed: Callable[[], float],
                 remaining: Callable[[], float], stream: TextIO | None = None, append: bool = False):
        """append: keep an earlier run's lines (a resumed run); otherwise the file starts empty."""
        self._file = None if path is None else open(path, "a" if append else "w", encoding="utf-8")
        self._quiet = quiet
        self._elapsed = elapsed
        self._remaining = remaining
        self._stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self.events: list[dict] = []

    def __call__(self, message: str) -> None:
        """A progress line."""
        line = f"[{self._elapsed():7.1f}s | {self._remaining():7.1f}s left] {message}"
        with self._lock:
            if not self._quiet:
                print(line, file=self._stream, flush=True)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def event(self, kind: str, message: str) -> None:
        """A progress line that is also recorded in report.json's `events`."""
        self.events.append({"t_s": round(self._elapsed(), 3), "kind": kind, "message": message})
        self(f"{kind}: {message}")

    def error(self, message: str) -> None:
        """An error line: always printed, even when quiet."""
        with self._lock:
            print(f"error: {message}", file=self._stream, flush=True)
            if self._file is not None:
                self._file.write(f"error: {message}\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
