"""A BOHB worker in its own process (or on another machine) joining a running phase.

The master's phase (`run_bohb`) starts the Pyro4 name server and writes its
address to OUT/bohb/nameserver.json; a worker started with the same run_id and
that address registers with the dispatcher and evaluates trials on its own
TrialContext (its own copy of the data, on its own device) until the master
shuts it down or its own `time_left()` runs out.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import Pyro4
import Pyro4.errors

from automl_pipeline.bohb.serialization import register_numpy_serializers
from automl_pipeline.bohb.worker import TrialContext, TrialWorker, evaluate_config

_LOG = logging.getLogger("automl_pipeline.bohb.remote")


def wait_for_nameserver(host: str, port: int, time_left: Callable[[], float], poll_s: float = 0.5) -> bool:
    """True once a Pyro4 name server answers at host:port; False when time runs out first."""
    while time_left() > 0:
        try:
            with Pyro4.locateNS(host=host, port=port) as ns:
                ns.ping()
            return True
        except Pyro4.errors.PyroError:
            time.sleep(min(poll_s, max(0.0, time_left())))
    return False


def run_remote_worker(run_id: str, nameserver: str, nameserver_port: int, ctx: TrialContext,
                      time_left: Callable[[], float], *, host: str | None = None, worker_id: str | None = None,
                      evaluate: Callable[..., dict] = evaluate_config,
                      log: Callable[[str], None] = print) -> dict:
    """Serve trials for the BOHB run `run_id` until the master shuts this worker down or
    `time_left()` (this process's budget) runs out. Blocks; returns {"worker", "trials", "reason"}.

    host: the address of this machine's interface the master can reach (None: Pyro's
    default, localhost - enough when master and workers share a machine).
    Each trial's deadline is the earlier of the master's phase deadline (sent with
    the job) and this worker's time_left().
    """
    register_numpy_serializers()
    if not wait_for_nameserver(nameserver, nameserver_port, time_left):
        log(f"bohb worker: no name server at {nameserver}:{nameserver_port} before the deadline")
        return {"worker": None, "trials": 0, "reason": "no name server"}
    count = [0]

    def counting_evaluate(*args, **kwargs):
        count[0] += 1
        return evaluate(*args, **kwargs)

    worker = TrialWorker(ctx, time_left=time_left, run_id=run_id, nameserver=nameserver,
                         nameserver_port=nameserver_port, host=host, id=worker_id,
                         logger=logging.getLogger("automl_pipeline.bohb.worker"), evaluate=counting_evaluate)
    errors: list[str] = []

    def serve():
        try:
            worker._run()
        except Exception as exc:   # noqa: BLE001 - e.g. the name server went away before we unregistered
            errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=serve, name="bohb-remote-worker", daemon=True)
    thread.start()
    log(f"bohb worker {worker.worker_id}: serving run {run_id!r} via {nameserver}:{nameserver_port}")
    reason = "shut down by the master"
    while thread.is_alive():
        if time_left() <= 0:
            reason = "own deadline"
            try:
                worker.pyro_daemon.shutdown()
            except Exception:   # noqa: BLE001
                _LOG.exception("could not stop the worker's Pyro daemon")
            thread.join(1.0)
            break
        thread.join(0.2)
    if errors and reason != "own deadline":
        _LOG.info("worker exit: %s", errors[0])
    log(f"bohb worker {worker.worker_id}: {count[0]} trial(s), stopped ({reason})")
    return {"worker": worker.worker_id, "trials": count[0], "reason": reason}
