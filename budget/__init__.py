"""Time budget for the run: clock, deadline, phase plan, watchdog, signal handling. No torch."""
from budget.clock import Clock, FakeClock
from budget.manager import Budget, Phase, default_margin_s
from budget.process import process_elapsed_s
from budget.watchdog import Watchdog, install_signal_handlers

__all__ = [
    "Budget",
    "Clock",
    "FakeClock",
    "Phase",
    "Watchdog",
    "default_margin_s",
    "install_signal_handlers",
    "process_elapsed_s",
]
