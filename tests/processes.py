"""`python run.py` as a subprocess, for the tests that stop a run from outside."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def signal_after_first_predictions(out: Path, sig: signal.Signals, *, settle_s: float,
                                   extra_args: tuple[str, ...] = ()) -> tuple[int, str]:
    """Start a 60 s demo run into `out`, send `sig` `settle_s` after its first predictions appear
    (or after 40 s), and return (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, str(REPO / "run.py"), "--time-limit", "60", "--output-dir", str(out),
                             "--quiet", *extra_args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 40
    while not (out / "predictions.npy").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(settle_s)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    return proc.returncode, stderr
