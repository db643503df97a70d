"""Run a command as a logged child process under a timeout: the one runner of `run.py compare` and
the benchmarks (no torch here)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence


def kill_process_group(proc: subprocess.Popen) -> None:
    """Kill the run and everything it started (it leads its own session)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - non-POSIX
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass


def run_logged(argv: Sequence[str], run_dir: Path, timeout_s: float, *,
               cwd: Path | None = None) -> tuple[int | None, str, float]:
    """Run argv in its own session with stdout/stderr in run_dir/{stdout,stderr}.log; on timeout or
    Ctrl-C its whole process group is killed. Returns (exit code or None, outcome, seconds).

    outcome: "exited" | "timeout" | "not_started: <why>".
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(run_dir / "stdout.log", "wb") as out, open(run_dir / "stderr.log", "wb") as err:
        try:
            proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=None if cwd is None else str(cwd), start_new_session=hasattr(os, "killpg"))
        except OSError as exc:
            return None, f"not_started: {type(exc).__name__}: {exc}", time.monotonic() - start
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_process_group(proc)
            return proc.returncode, "timeout", time.monotonic() - start
        except BaseException:  # Ctrl-C of the comparison: the run is in its own session, end it too
            kill_process_group(proc)
            raise
    return code, "exited", time.monotonic() - start
