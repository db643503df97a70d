"""Last-resort guards: a watchdog thread for the time limit, and SIGTERM/SIGINT handlers.

Both run a caller's "save what you have" callback and then end the process
with ``os._exit`` (no clean-up that could hang). The exit function is
injectable so tests can observe it instead of dying.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from typing import Callable

from budget.manager import Budget

ExitFunction = Callable[[int], None]

SIGTERM_EXIT_CODE = 0
SIGINT_EXIT_CODE = 130


class Watchdog:
    """Daemon thread that ends the process before the time limit, whatever the main thread does.

    Every ``poll_s`` (real seconds) it reads ``budget.hard_remaining()``; once
    that is <= ``grace_s`` it runs ``on_timeout`` (exceptions are written to
    stderr), then calls ``exit(exit_code)``. ``on_timeout`` runs in its own
    thread and is given at most ``handler_timeout_s`` real seconds (default
    0.8 * grace_s); exit is called even if it hangs.
    """

    def __init__(self, budget: Budget, on_timeout: Callable[[], None], *, grace_s: float = 1.0,
                 exit_code: int = 0, poll_s: float = 0.05, exit: ExitFunction = os._exit,
                 handler_timeout_s: float | None = None):
        if grace_s < 0 or poll_s <= 0:
            raise ValueError(f"need grace_s >= 0 and poll_s > 0, got grace_s={grace_s}, poll_s={poll_s}")
        self._budget = budget
        self._on_timeout = on_timeout
        self._grace_s = grace_s
        self._exit_code = exit_code
        self._poll_s = poll_s
        self._exit = exit
        self._handler_timeout_s = 0.8 * grace_s if handler_timeout_s is None else handler_timeout_s
        self._stop = threading.Event()
        self.fired = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching; calling it twice is an error."""
        if self._thread is not None:
            raise RuntimeError("Watchdog already started")
        self._thread = threading.Thread(target=self._watch, name="budget-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (e.g. after outputs are written); has no effect once fired."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and not self.fired.is_set():
            thread.join(timeout=max(1.0, 4 * self._poll_s))

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._budget.hard_remaining() <= self._grace_s:
                self._fire()
                return
            self._stop.wait(self._poll_s)

    def _fire(self) -> None:
        self.fired.set()
        try:
            _run_with_timeout(self._on_timeout, self._handler_timeout_s, what="watchdog on_timeout")
        finally:
            _flush_stdio()
            self._exit(self._exit_code)


def install_signal_handlers(on_signal: Callable[[int], None], *, exit: ExitFunction = os._exit) -> None:
    """SIGTERM / SIGINT: run ``on_signal(signum)``, then exit 0 (SIGTERM) or 130 (SIGINT).

    Errors in ``on_signal`` are written to stderr and the process still exits.
    A signal arriving while one is being handled is ignored. Must be called
    from the main thread (a limit of Python's ``signal`` module). Python runs
    the handler between bytecodes, so a long C call (e.g. one big torch op)
    delays it; the Watchdog covers the hard limit.
    """
    handling = threading.Event()
    codes = {signal.SIGTERM: SIGTERM_EXIT_CODE, signal.SIGINT: SIGINT_EXIT_CODE}

    def handle(signum: int, frame) -> None:
        if handling.is_set():
            return
        handling.set()
        try:
            on_signal(signum)
        except Exception:  # the process must still exit; say what went wrong
            _report_exception(f"signal {signum} handler")
        finally:
            _flush_stdio()
            exit(codes.get(signum, SIGTERM_EXIT_CODE))

    for signum in codes:
        signal.signal(signum, handle)


def _run_with_timeout(function: Callable[[], None], timeout_s: float, *, what: str) -> None:
    """Run ``function`` in a daemon thread; return when it ends or after ``timeout_s``."""
    def guarded() -> None:
        try:
            function()
        except Exception:
            _report_exception(what)

    worker = threading.Thread(target=guarded, name=what, daemon=True)
    worker.start()
    worker.join(timeout=timeout_s)
    if worker.is_alive():
        print(f"{what} still running after {timeout_s:.2f} s; exiting anyway", file=sys.stderr)


def _report_exception(what: str) -> None:
    print(f"error in {what}:", file=sys.stderr)
    traceback.print_exc(file=sys.stderr)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or missing stream
            pass
