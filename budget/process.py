"""How long this process has been alive, so the deadline counts from process start."""
from __future__ import annotations

import time

import psutil


def process_elapsed_s() -> float:
    """Seconds since this process was created (wall clock), clamped to >= 0.

    Interpreter start-up and imports happen before the pipeline can create its
    Budget; pass this as ``Budget(already_elapsed_s=...)`` so they are counted.
    Returns 0.0 if the operating system will not say when the process started.
    """
    try:
        created = psutil.Process().create_time()
    except psutil.Error:
        return 0.0
    return max(0.0, time.time() - created)
