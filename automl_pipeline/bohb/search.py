"""The time-bounded BOHB search of the BOHB phase (hpbandster 0.7.4): `run_bohb` starts the name server, local
workers and the master (`master.DeadlineBOHB`), drives it until the trial deadline, and shuts
everything down without waiting past the phase's end.

* Every job carries `phase_seconds_left`: the seconds the phase has left minus
  a wrap-up reserve, so a trial (local or remote) stops training in time to
  report what it reached before the phase ends.
* At the trial deadline the phase stops scheduling, waits for running trials
  to report (until only the shutdown reserve is left), then shuts the master,
  its workers and the name server down in a helper thread joined with a
  timeout of the time left: the phase never waits past its deadline. If
  shutdown hangs it is logged and left behind (the pipeline's watchdog is the
  last resort).

Modules: budgets (budget arithmetic), results (TrialRecord, incumbent rule,
BohbResult), trial_log (files written after every trial), master
(DeadlineBOHB), nameserver (address, workers, shared secret).

Files (out_dir/bohb/): hpbandster's `configs.json` and `results.json` (one JSON
line per sampled config / finished trial), `incumbent.json`, rewritten
atomically after every finished trial, and `nameserver.json` ({run_id, host,
port}) for workers started elsewhere (`remote.run_remote_worker`).
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hpbandster.core.nameserver import NameServer
from hpbandster.core.result import Result, logged_results_to_HBS_result

from automl_pipeline.bohb.budgets import default_first_configs, hpbandster_budgets, min_points_in_model
from automl_pipeline.bohb.master import OPTIMIZERS, DeadlineBOHB
from automl_pipeline.bohb.nameserver import NameServerOptions, pyro_hmac
from automl_pipeline.bohb.results import BohbResult, select_incumbent
from automl_pipeline.bohb.serialization import register_numpy_serializers
from automl_pipeline.bohb.trial_log import TrialLog
from automl_pipeline.bohb.worker import TrialContext, TrialWorker, evaluate_config
from budget.reserves import (BOHB_SHUTDOWN_MAX_S, BOHB_SHUTDOWN_MIN_S, BOHB_WRAPUP_MAX_S, BOHB_WRAPUP_MIN_S,
                             BOHB_WRAPUP_SHARE)
from submission import write_json

__all__ = ["BohbOptions", "run_bohb"]
_LOG = logging.getLogger("automl_pipeline.bohb")
# hpbandster's KDE (statsmodels) triggers a pandas FutureWarning about numpy's global generator on every
# model-based pick; it says nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module="pandas")


# --------------------------------------------------------------------------- the phase

def _load_previous(previous_result):
    if previous_result is None or isinstance(previous_result, Result):
        return previous_result
    return logged_results_to_HBS_result(str(previous_result))


def _in_thread(fn: Callable[[], Any], timeout: float, name: str) -> bool:
    """Run fn in a daemon thread; True when it finished within `timeout` seconds."""
    errors: list[str] = []

    def target():
        try:
            fn()
        except Exception:   # noqa: BLE001
            errors.append(traceback.format_exc())

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(max(0.0, timeout))
    if errors:
        _LOG.warning("%s failed: %s", name, errors[0])
    return not thread.is_alive() and not errors


def _quiet_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    return logger


def _search(ctx, config_space, trial_log: TrialLog, nameserver: NameServerOptions, *, master_options: dict,
            time_left, trial_seconds_left, shutdown_reserve: float, evaluate, bohb_dir: Path,
            log) -> tuple[bool, "DeadlineBOHB | None", list[str]]:
    """Name server, local workers and master, driven until the trial deadline, then shut down.
    Run inside pyro_hmac(nameserver.hmac_key). master_options: DeadlineBOHB's bracket and
    optimizer arguments (eta, min/max budget, first_configs, optimizer, previous_result).

    Returns (clean shutdown, the master or None, tracebacks of a failed master loop).
    """
    run_id, host = nameserver.run_id, nameserver.host
    name_server = NameServer(run_id=run_id, host=host, port=nameserver.port)
    ns_host, ns_port = name_server.start()
    # no key here: workers read it from their own environment
    write_json(bohb_dir / "nameserver.json", {"run_id": run_id, "host": ns_host, "port": ns_port,
                                               "hmac": nameserver.hmac_key is not None})
    workers: list[TrialWorker] = []
    master: DeadlineBOHB | None = None
    master_errors: list[str] = []
    clean = False
    try:
        for i in range(nameserver.n_local_workers):
            worker = TrialWorker(ctx, time_left=time_left, run_id=run_id, nameserver=ns_host,
                                 nameserver_port=ns_port, host=host, id=i,
                                 logger=_quiet_logger("automl_pipeline.bohb.worker"), evaluate=evaluate)
            worker.run(background=True)
            workers.append(worker)
        master = DeadlineBOHB(config_space, **master_options, trial_seconds_left=trial_seconds_left,
                              run_id=run_id, nameserver=ns_host, nameserver_port=ns_port, host=host,
                              ping_interval=10, result_logger=trial_log,
                              logger=_quiet_logger("automl_pipeline.bohb.master"),
                              working_directory=str(bohb_dir))

        def drive():
            try:
                master.run_until(min_n_workers=nameserver.n_min)
            except Exception:   # noqa: BLE001
                master_errors.append(traceback.format_exc())

        driver = threading.Thread(target=drive, name="bohb-master", daemon=True)
        driver.start()
        while driver.is_alive() and trial_seconds_left() > 0:
            driver.join(min(0.2, max(0.01, trial_seconds_left())))
        master.stop_event.set()
        if master_errors:
            log(f"bohb: master loop failed: {master_errors[0].strip().splitlines()[-1]}")
        # running trials stop at their deadline and report; wait for them, but not into the reserve
        while master.num_running_jobs > 0 and time_left() > shutdown_reserve:
            time.sleep(0.05)
        if master.num_running_jobs > 0:
            log(f"bohb: {master.num_running_jobs} trial(s) still running at the deadline; not waiting for them")
        driver.join(max(0.0, min(1.0, time_left() - shutdown_reserve)))
    finally:
        def shutdown():
            if master is not None:
                master.shutdown(shutdown_workers=True)
            for worker in workers:
                if worker.thread is not None:
                    worker.thread.join(max(0.0, time_left()))
            name_server.shutdown()

        clean = _in_thread(shutdown, max(0.05, time_left()), "bohb-shutdown")
        if not clean:
            log("bohb: shutdown of master/workers/name server did not finish by the deadline; left behind")
    return clean, master, master_errors


@dataclass(frozen=True)
class BohbOptions:
    """The settings of one BOHB search, validated once: its brackets, its sampling, what every job
    carries and where its name server listens.

    min_budget/max_budget: epochs (budgets.choose_budgets); eta: successive halving's factor.
    first_configs: width of the first bracket (None: default_first_configs(config_space)).
    seed: hpbandster's BOHB samples with numpy's global generator, seeded with this.
    optimizer: "bohb" or "random": the same brackets, budgets and deadlines, with
      configurations sampled uniformly at random (an ablation; 0 model-based picks).
    fixed: values of hyperparameters left out of the space (bohb.space.fixed_hyperparameters, a fixed
      cell); sent with every job, so local and remote workers train with them.
    wrapup_s: seconds reserved at the end for trials to report and for shutdown
      (None: 5% of the phase, clamped to [2, 10]); the last
      min(wrapup_s, max(0.75, min(2, wrapup_s / 2))) seconds are for shutdown.
    epoch_seconds: the measured epoch time the budgets were planned with (reported only).
    n_local_workers: in-process worker threads; min_n_workers (None: that, or 1)
      workers must have registered before the first job is scheduled, so
      remote workers (`remote.run_remote_worker`) join the same run_id.
    nameserver_host/port: the Pyro4 name server the search starts (127.0.0.1, a
      free port); use a reachable interface for workers on other machines. Off
      loopback the shared secret must be set (AUTOML_BOHB_HMAC_KEY or
      AUTOML_BOHB_HMAC_KEY_FILE), else run_bohb raises nameserver.HmacKeyError (an
      InputError) before anything starts; see nameserver.require_hmac_key.
    """

    min_budget: float
    max_budget: float
    eta: float = 3.0
    first_configs: int | None = None
    seed: int = 0
    optimizer: str = "bohb"
    fixed: Mapping[str, Any] = field(default_factory=dict)
    wrapup_s: float | None = None
    epoch_seconds: float | None = None
    n_local_workers: int = 1
    min_n_workers: int | None = None
    nameserver_host: str = "127.0.0.1"
    nameserver_port: int = 0
    run_id: str = "bohb"

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0 < self.min_budget < self.max_budget:
            raise ValueError(f"need 0 < min_budget < max_budget, got {self.min_budget}, {self.max_budget}")
        object.__setattr__(self, "fixed", dict(self.fixed))    # a copy: the caller's dict may change later


def run_bohb(ctx: TrialContext | None, *, config_space, options: BohbOptions, time_left: Callable[[], float],
             out_dir: Path, previous_result=None, evaluate: Callable[..., dict] = evaluate_config,
             log: Callable[[str], None] = print) -> BohbResult:
    """Run BOHB until `time_left()` (the phase's remaining seconds) runs out.

    ctx: the data for local workers (None only with options.n_local_workers=0).
    config_space: from space.build_config_space; options: the search's settings (BohbOptions).
    previous_result: an hpbandster Result or a directory with configs.json /
      results.json to warm-start from.
    evaluate: injectable for tests (default evaluate_config).
    """
    nameserver = NameServerOptions.from_environment(
        host=options.nameserver_host, port=options.nameserver_port, run_id=options.run_id,
        n_local_workers=options.n_local_workers, min_n_workers=options.min_n_workers)
    min_budget, max_budget, eta, optimizer = options.min_budget, options.max_budget, options.eta, options.optimizer
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    bohb_dir = out_dir / "bohb"
    register_numpy_serializers()
    previous = _load_previous(previous_result)
    wrapup_s = options.wrapup_s
    if wrapup_s is None:
        wrapup_s = min(BOHB_WRAPUP_MAX_S, max(BOHB_WRAPUP_MIN_S, BOHB_WRAPUP_SHARE * time_left()))
    first_configs = options.first_configs
    if first_configs is None:
        first_configs = default_first_configs(config_space)
    np.random.seed(options.seed)   # hpbandster's BOHB samples with numpy's global generator
    # master + workers + name server shut down in ~0.4 s on a loaded 2-core machine
    shutdown_reserve = min(wrapup_s, max(BOHB_SHUTDOWN_MIN_S, min(BOHB_SHUTDOWN_MAX_S, wrapup_s / 2.0)))

    def trial_seconds_left() -> float:
        return time_left() - wrapup_s

    log(f"bohb: budgets {', '.join(f'{b:g}' for b in hpbandster_budgets(min_budget, max_budget, eta))} epochs "
        f"(eta {eta:g}), {time_left():.0f}s left, {options.n_local_workers} local worker(s)"
        + (f", optimizer {optimizer}" if optimizer != "bohb" else ""))

    trial_log = TrialLog(bohb_dir, t0=t0, log=log)
    if trial_seconds_left() > 0:
        master_options = {"eta": eta, "min_budget": min_budget, "max_budget": max_budget,
                          "first_configs": first_configs, "optimizer": optimizer, "previous_result": previous,
                          "fixed": dict(options.fixed)}
        with pyro_hmac(nameserver.hmac_key):
            clean, master, master_errors = _search(
                ctx, config_space, trial_log, nameserver, master_options=master_options, time_left=time_left,
                trial_seconds_left=trial_seconds_left, shutdown_reserve=shutdown_reserve, evaluate=evaluate,
                bohb_dir=bohb_dir, log=log)
    else:   # nothing could run: no name server, no master, no workers to wait for
        clean, master, master_errors = True, None, []
    hb_result = None
    if master is not None and clean:
        try:
            hb_result = master.result()
        except Exception:   # noqa: BLE001
            _LOG.exception("could not build the hpbandster Result")
    picks, sampled = trial_log.model_based_picks()
    with trial_log.lock:
        trials = list(trial_log.trials)
        trajectory = list(trial_log.trajectory)
    incumbent = select_incumbent(trials)
    workers_seen = {t.worker for t in trials if t.worker}
    result = BohbResult(
        incumbent_config=None if incumbent is None else incumbent.config,
        incumbent_val_macro_f1=0.0 if incumbent is None else incumbent.val_macro_f1,
        incumbent_budget=0.0 if incumbent is None else incumbent.budget,
        min_budget=float(min_budget), max_budget=float(max_budget), eta=float(eta), trials=trials,
        configs_sampled=sampled, model_based_picks=picks,
        model_min_trials=2 * min_points_in_model(config_space),
        trajectory=trajectory, seconds=time.monotonic() - t0,
        n_workers=max(len(workers_seen), options.n_local_workers), clean_shutdown=clean,
        epoch_seconds=options.epoch_seconds,
        master_error=master_errors[0].strip().splitlines()[-1] if master_errors else None, optimizer=optimizer,
        raised_min_budget=list(master.raised_min_budget) if master is not None else [], hpbandster_result=hb_result)
    warning = result.warning()
    if result.raise_sentence():
        log(f"bohb: {result.raise_sentence()}")
    log(f"bohb: {len(trials)} trials in {result.seconds:.1f}s, {picks}/{sampled} model-based picks"
        + (f"; incumbent val macro-F1 {result.incumbent_val_macro_f1:.4f} at budget {result.incumbent_budget:g}"
           if incumbent else "; no trial was evaluated")
        + (f"; WARNING: {warning}" if warning else ""))
    return result
