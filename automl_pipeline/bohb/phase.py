"""The time-bounded BOHB phase (hpbandster 0.7.4).

hpbandster's `Master.run(n_iterations)` has no wall-clock stop, so the phase
drives it like this:

* `DeadlineBOHB.run_until(stop)` is hpbandster's scheduling loop with timed
  waits and a stop flag (the stock loop blocks on a condition that is only
  signalled when a job finishes, so it cannot be stopped from outside).
* Every job carries `phase_seconds_left`: the seconds the phase has left minus
  a wrap-up reserve, so a trial (local or remote) stops training in time to
  report what it reached before the phase ends.
* At the trial deadline the phase stops scheduling, waits for running trials
  to report (until only the shutdown reserve is left), then shuts the master,
  its workers and the name server down in a helper thread joined with a
  timeout of the time left: the phase never waits past its deadline. If
  shutdown hangs it is logged and left behind (the pipeline's watchdog is the
  last resort).

Incumbent rule (documented in the report as `incumbent_rule`): among trials
that finished without error and were evaluated, prefer the ones that ran their
full budget (not cut by the deadline); among those, take the largest budget
that has any, and the best validation macro-F1 there (ties: the earlier
trial). This is hpbandster's own "largest budget" rule, made robust to a trial
at the top budget that the deadline cut after a few epochs. Cut trials count
only when no trial completed.

Files (out_dir/bohb/): hpbandster's `configs.json` and `results.json` (one JSON
line per sampled config / finished trial), `incumbent.json`, rewritten
atomically after every finished trial, and `nameserver.json` ({run_id, host,
port}) for workers started elsewhere (`remote.run_remote_worker`).
"""
from __future__ import annotations

import logging
import math
import threading
import warnings
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hpbandster.core.master import Master
from hpbandster.core.nameserver import NameServer
from hpbandster.core.result import Result, json_result_logger, logged_results_to_HBS_result
from hpbandster.optimizers.bohb import BOHB
from hpbandster.optimizers.config_generators.bohb import BOHB as BOHBConfigGenerator
from hpbandster.optimizers.iterations import SuccessiveHalving

from automl_pipeline.bohb.serialization import register_numpy_serializers, to_plain
from automl_pipeline.bohb.space import n_hyperparameters
from automl_pipeline.bohb.worker import TrialContext, TrialWorker, evaluate_config, n_epochs
from submission import write_json

POSTER_MAX_BUDGET = 20.0
# The first bracket takes this share of the phase (choose_budgets); the rest is for model-based picks.
FIRST_BRACKET_SHARE = 0.6
# Seconds a trial costs beyond its training epochs (building, validation passes, messages), for planning.
TRIAL_OVERHEAD_S = 0.3
INCUMBENT_RULE = ("best val macro-F1 at the largest budget among trials that ran their full budget without error "
                  "(deadline-cut trials only when none completed); ties: earlier trial")
_LOG = logging.getLogger("automl_pipeline.bohb")
# hpbandster's KDE (statsmodels) triggers a pandas FutureWarning about numpy's global generator on every
# model-based pick; it says nothing a user can act on.
warnings.filterwarnings("ignore", category=FutureWarning, module="pandas")


# --------------------------------------------------------------------------- budgets

def min_points_in_model(space) -> int:
    """hpbandster's minimum, d + 1; the KDE of a budget needs twice this many results there."""
    return n_hyperparameters(space) + 1


def default_first_configs(space) -> int:
    """Width of the first bracket: the 2(d + 1) results the KDE needs, plus two for failed trials."""
    return 2 * min_points_in_model(space) + 2


def bracket_sizes(first_configs: int, rungs: int, eta: float) -> list[int]:
    """Configurations per rung of a successive-halving bracket that starts `first_configs` wide."""
    return [max(1, int(first_configs * eta ** -i)) for i in range(rungs)]


def choose_budgets(epoch_seconds: float, phase_seconds: float, *, first_configs: int, min_budget_floor: float,
                   eta: float = 3.0, trial_overhead_s: float = TRIAL_OVERHEAD_S,
                   max_cap: float = POSTER_MAX_BUDGET) -> tuple[float, float] | None:
    """(min_budget, max_budget) in epochs, or None when no useful plan fits.

    The first bracket (`first_configs` at the min budget, 1/eta of them at the next rung, ...) is sized
    to take FIRST_BRACKET_SHARE of the phase, each trial costing its epochs plus `trial_overhead_s`, so
    that BOHB's KDE has enough results on the min budget while time is left for model-based picks.
    Three rungs when their min budget is at least `min_budget_floor` (the smallest fraction of an
    epoch worth training), else two; max capped at the poster's 20 epochs.
    """
    if not (epoch_seconds > 0 and math.isfinite(epoch_seconds)):
        raise ValueError(f"epoch_seconds must be a positive number, got {epoch_seconds}")
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    for rungs in (3, 2):
        sizes = bracket_sizes(first_configs, rungs, eta)
        units = sum(n * eta ** -(rungs - 1 - i) for i, n in enumerate(sizes))   # in max budgets
        seconds = FIRST_BRACKET_SHARE * max(0.0, float(phase_seconds)) - sum(sizes) * trial_overhead_s
        max_budget = min(max_cap, seconds / (units * epoch_seconds))
        min_budget = max_budget / eta ** (rungs - 1)
        if min_budget >= min_budget_floor and max_budget > 0:
            return min_budget, max_budget
    return None


def n_rungs(min_budget: float, max_budget: float, eta: float) -> int:
    """Successive-halving rungs for (min, max, eta): floor(log_eta(max / min)) + 1.

    hpbandster computes this as -int(log(min / max) / log(eta)) + 1, which rounds
    (1/3, 1, 3) to a single rung when the float division lands just below 1;
    DeadlineBOHB uses this tolerant version instead.
    """
    return int(math.floor(math.log(max_budget / min_budget) / math.log(eta) + 1e-9)) + 1


def hpbandster_budgets(min_budget: float, max_budget: float, eta: float) -> list[float]:
    """The budgets BOHB runs for (min, max, eta): max * eta**-k, smallest first."""
    n = n_rungs(min_budget, max_budget, eta)
    return [float(b) for b in max_budget * np.power(float(eta), -np.linspace(n - 1, 0, n))]


# --------------------------------------------------------------------------- results

@dataclass
class TrialRecord:
    """One finished (or failed) trial as the phase saw it."""

    config_id: tuple
    config: dict
    budget: float
    loss: float
    val_macro_f1: float
    evaluated: bool
    error: str | None
    epochs_done: int
    stopped_by_deadline: bool
    seconds: float
    worker: str | None
    t_s: float                      # finish time, seconds since the phase started
    model_based_pick: bool | None

    def to_json(self) -> dict:
        return to_plain({"config_id": list(self.config_id), "config": self.config, "budget": self.budget,
                         "loss": self.loss, "val_macro_f1": self.val_macro_f1, "evaluated": self.evaluated,
                         "error": self.error, "epochs_done": self.epochs_done,
                         "stopped_by_deadline": self.stopped_by_deadline, "seconds": round(self.seconds, 3),
                         "worker": self.worker, "t_s": round(self.t_s, 3),
                         "model_based_pick": self.model_based_pick})


def select_incumbent(trials: list[TrialRecord]) -> TrialRecord | None:
    """The incumbent under INCUMBENT_RULE (see module docstring); None when no trial qualifies."""
    ok = [t for t in trials if t.evaluated and t.error is None]
    complete = [t for t in ok if not t.stopped_by_deadline]
    pool = complete or ok
    if not pool:
        return None
    top = max(t.budget for t in pool)
    at_top = [t for t in pool if t.budget == top]
    return max(at_top, key=lambda t: (t.val_macro_f1, -t.t_s))


@dataclass
class BohbResult:
    """What the BOHB phase found. `incumbent_config` is None when no trial was evaluated."""

    incumbent_config: dict | None
    incumbent_val_macro_f1: float
    incumbent_budget: float
    min_budget: float
    max_budget: float
    eta: float
    trials: list[TrialRecord]
    configs_sampled: int
    model_based_picks: int
    model_min_trials: int            # finished trials one budget needs before BOHB's KDE can be built
    trajectory: list[tuple[float, float]]
    seconds: float
    n_workers: int
    clean_shutdown: bool
    epoch_seconds: float | None = None
    master_error: str | None = None
    hpbandster_result: Result | None = field(default=None, repr=False)

    @property
    def budgets(self) -> list[float]:
        return hpbandster_budgets(self.min_budget, self.max_budget, self.eta)

    def warning(self) -> str | None:
        if self.configs_sampled and self.model_based_picks == 0:
            return (f"BOHB was effectively random search: 0 of {self.configs_sampled} configurations were "
                    f"model-based picks (its KDE needs {self.model_min_trials} finished trials on one budget)")
        return None

    def report(self) -> dict:
        """The report.json "bohb" section."""
        per_budget: dict[str, int] = {}
        picks_per_budget: dict[str, int] = {}      # model-based configurations by the budget they started on
        started: set[tuple] = set()
        workers: dict[str, int] = {}
        for t in self.trials:
            key = f"{t.budget:g}"
            per_budget[key] = per_budget.get(key, 0) + 1
            if t.config_id not in started:
                started.add(t.config_id)
                picks_per_budget[key] = picks_per_budget.get(key, 0) + int(bool(t.model_based_pick))
            if t.worker:
                workers[t.worker] = workers.get(t.worker, 0) + 1
        errors = sorted({t.error for t in self.trials if t.error})
        incumbent = None
        if self.incumbent_config is not None:
            incumbent = {"config": self.incumbent_config, "val_macro_f1": self.incumbent_val_macro_f1,
                         "budget": self.incumbent_budget, "epochs": n_epochs(self.incumbent_budget)}
        return to_plain({
            "n_trials": len(self.trials),
            "trials_per_budget": per_budget,
            "min_budget": self.min_budget, "max_budget": self.max_budget, "eta": self.eta,
            "budgets": self.budgets, "epochs_per_budget": [n_epochs(b) for b in self.budgets],
            "epoch_seconds": self.epoch_seconds,
            "failed_trials": sum(1 for t in self.trials if t.error),
            "errors": errors[:10],
            "deadline_cut_trials": sum(1 for t in self.trials if t.stopped_by_deadline),
            "configs_sampled": self.configs_sampled,
            "model_based_picks": self.model_based_picks,
            "model_based_picks_per_budget": picks_per_budget,
            "model_min_trials": self.model_min_trials,
            "n_hyperparameters": self.model_min_trials // 2 - 1,
            "warning": self.warning(),
            "incumbent": incumbent,
            "incumbent_rule": INCUMBENT_RULE,
            "trajectory": [[round(t, 3), f1] for t, f1 in self.trajectory],
            "seconds": round(self.seconds, 3),
            "n_workers": self.n_workers,
            "trials_per_worker": workers,
            "clean_shutdown": self.clean_shutdown,
            "master_error": self.master_error,
        })


class TrialLog(json_result_logger):
    """hpbandster's json_result_logger (configs.json, results.json) plus our trial
    records, the trajectory and incumbent.json after every finished trial.

    Called by the master inside its job callback: it must never raise (an
    exception there would leave the trial unregistered), so errors are logged.
    """

    def __init__(self, directory: Path, *, t0: float, log: Callable[[str], None]):
        super().__init__(directory=str(directory), overwrite=True)
        self.directory = Path(directory)
        self.t0 = t0
        self.log = log
        self.lock = threading.Lock()
        self.config_info: dict[tuple, dict] = {}
        self.trials: list[TrialRecord] = []
        self.trajectory: list[tuple[float, float]] = []
        self.incumbent: TrialRecord | None = None

    def new_config(self, config_id, config, config_info):
        config, config_info = to_plain(config), to_plain(config_info)
        with self.lock:
            self.config_info[tuple(config_id)] = config_info
        try:
            super().new_config(config_id, config, config_info)
        except Exception:   # noqa: BLE001 - logging must not kill the search
            _LOG.exception("could not log config %s", config_id)

    def __call__(self, job) -> None:
        try:
            super().__call__(job)
        except Exception:   # noqa: BLE001
            _LOG.exception("could not log result of %s", job.id)
        try:
            self._record(job)
        except Exception:   # noqa: BLE001
            _LOG.exception("could not record trial %s", job.id)

    def _record(self, job) -> None:
        result = job.result if isinstance(job.result, dict) else None
        info = dict(result.get("info") or {}) if result else {}
        if result is None:
            text = (job.exception or "no result").strip().splitlines()
            error = f"WorkerError: {text[-1] if text else 'no result'}"[:500]
        else:
            error = info.get("error")
        loss = float(result["loss"]) if result and result.get("loss") is not None else 1.0
        config_id = tuple(job.id)
        with self.lock:
            rec = TrialRecord(
                config_id=config_id, config=to_plain(job.kwargs["config"]), budget=float(job.kwargs["budget"]),
                loss=loss if math.isfinite(loss) else 1.0, val_macro_f1=float(info.get("val_macro_f1", 0.0)),
                evaluated=bool(info.get("evaluated", False)) and error is None, error=error,
                epochs_done=int(info.get("epochs_done", 0)),
                stopped_by_deadline=bool(info.get("stopped_by_deadline", False)),
                seconds=float(info.get("seconds", 0.0)), worker=info.get("worker") or job.worker_name,
                t_s=time.monotonic() - self.t0,
                model_based_pick=self.config_info.get(config_id, {}).get("model_based_pick"))
            self.trials.append(rec)
            if rec.evaluated and (not self.trajectory or rec.val_macro_f1 > self.trajectory[-1][1]):
                self.trajectory.append((rec.t_s, rec.val_macro_f1))
            self.incumbent = select_incumbent(self.trials)
            incumbent = self.incumbent
        status = f"error {error}" if error else f"val macro-F1 {rec.val_macro_f1:.4f}"
        self.log(f"bohb: trial {list(config_id)} budget {rec.budget:g} ({rec.epochs_done} epochs, "
                 f"{rec.seconds:.1f}s{', cut by deadline' if rec.stopped_by_deadline else ''}): {status}")
        if incumbent is not None:
            write_json(self.directory / "incumbent.json", {
                "config": incumbent.config, "val_macro_f1": incumbent.val_macro_f1, "budget": incumbent.budget,
                "epochs": n_epochs(incumbent.budget), "config_id": list(incumbent.config_id),
                "t_s": round(incumbent.t_s, 3), "n_trials": len(self.trials), "rule": INCUMBENT_RULE})

    def model_based_picks(self) -> tuple[int, int]:
        with self.lock:
            infos = list(self.config_info.values())
        return sum(1 for i in infos if i.get("model_based_pick")), len(infos)


# --------------------------------------------------------------------------- the master

class PlainConfigGenerator(BOHBConfigGenerator):
    """hpbandster's BOHB config generator, handing out plain-Python configurations
    (ConfigSpace 1.x returns numpy strings/bools/ints, which JSON and serpent reject)."""

    def get_config(self, budget):
        config, info = super().get_config(budget)
        return to_plain(config), to_plain(info)


class DeadlineBOHB(BOHB):
    """hpbandster's BOHB with a stoppable scheduling loop and per-job deadlines."""

    def __init__(self, configspace, *, eta: float, min_budget: float, max_budget: float,
                 trial_seconds_left: Callable[[], float], first_configs: int | None = None, **master_kwargs):
        # BOHB.__init__ with our config generator (same hyperband bookkeeping); the KDE needs
        # min_points_in_model = d + 1 good and as many bad results on a budget (hpbandster's minimum)
        generator = PlainConfigGenerator(configspace=configspace, min_points_in_model=min_points_in_model(configspace))
        Master.__init__(self, config_generator=generator, **master_kwargs)
        self.first_configs = first_configs
        self.eta, self.min_budget, self.max_budget = eta, min_budget, max_budget
        self.max_SH_iter = n_rungs(min_budget, max_budget, eta)
        self.budgets = np.asarray(hpbandster_budgets(min_budget, max_budget, eta))
        self.config.update({"eta": eta, "min_budget": min_budget, "max_budget": max_budget,
                            "budgets": self.budgets, "max_SH_iter": self.max_SH_iter})
        self.trial_seconds_left = trial_seconds_left
        self.stop_event = threading.Event()

    def get_next_iteration(self, iteration, iteration_kwargs={}):   # noqa: B006 - hpbandster's signature
        """hpbandster's HyperBand brackets, except that the first one starts `first_configs` wide, so
        that the KDE can be built from its min-budget results (see model_min_trials)."""
        s = self.max_SH_iter - 1 - (iteration % self.max_SH_iter)
        n0 = int(np.floor(self.max_SH_iter / (s + 1)) * self.eta ** s)
        if iteration == 0 and self.first_configs:
            n0 = max(n0, self.first_configs)
        return SuccessiveHalving(HPB_iter=iteration, num_configs=bracket_sizes(n0, s + 1, self.eta),
                                 budgets=self.budgets[(-s - 1):], config_sampler=self.config_generator.get_config,
                                 **iteration_kwargs)

    def _submit_job(self, config_id, config, budget):
        with self.thread_cond:
            self.dispatcher.submit_job(config_id, config=config, budget=budget,
                                       working_directory=self.working_directory,
                                       phase_seconds_left=max(0.0, float(self.trial_seconds_left())))
            self.num_running_jobs += 1

    def run_until(self, *, n_iterations: int = 10 ** 6, min_n_workers: int = 1, poll_s: float = 0.25) -> None:
        """Master.run's loop with timed waits; returns when stop_event is set or n_iterations are done."""
        stop = self.stop_event
        with self.thread_cond:
            while self.dispatcher.number_of_workers() < min_n_workers and not stop.is_set():
                self.thread_cond.wait(min(1.0, poll_s * 4))
                self.dispatcher.trigger_discover_worker()
        if self.time_ref is None:
            self.time_ref = time.time()
            self.config["time_ref"] = self.time_ref
        iteration_kwargs = {"result_logger": self.result_logger}
        with self.thread_cond:
            while not stop.is_set() and self.trial_seconds_left() > 0:
                if self.num_running_jobs >= self.job_queue_sizes[1] and \
                        self.num_running_jobs > self.job_queue_sizes[0]:
                    self.thread_cond.wait(poll_s)          # queue full: wait for a result
                    continue
                next_run = None
                for i in self.active_iterations():
                    next_run = self.iterations[i].get_next_run()
                    if next_run is not None:
                        break
                if next_run is not None:
                    self._submit_job(*next_run)
                    continue
                if n_iterations > 0:
                    self.iterations.append(self.get_next_iteration(len(self.iterations), iteration_kwargs))
                    n_iterations -= 1
                    continue
                if not self.active_iterations():
                    break
                self.thread_cond.wait(poll_s)

    def result(self) -> Result:
        with self.thread_cond:
            data = [dict(it.data) for it in self.iterations]
        for it in self.warmstart_iteration:
            it.fix_timestamps(self.time_ref)
        return Result(data + [it.data for it in self.warmstart_iteration], self.config)


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


def _search(ctx, config_space, trial_log: TrialLog, *, time_left, trial_seconds_left, shutdown_reserve: float,
            eta: float, min_budget: float, max_budget: float, first_configs: int, n_local_workers: int, n_min: int,
            run_id: str,
            nameserver_host: str, nameserver_port: int, previous, evaluate, bohb_dir: Path,
            log) -> tuple[bool, "DeadlineBOHB | None", list[str]]:
    """Name server, local workers and master, driven until the trial deadline, then shut down.

    Returns (clean shutdown, the master or None, tracebacks of a failed master loop).
    """
    name_server = NameServer(run_id=run_id, host=nameserver_host, port=nameserver_port)
    ns_host, ns_port = name_server.start()
    write_json(bohb_dir / "nameserver.json", {"run_id": run_id, "host": ns_host, "port": ns_port})
    workers: list[TrialWorker] = []
    master: DeadlineBOHB | None = None
    master_errors: list[str] = []
    clean = False
    try:
        for i in range(n_local_workers):
            worker = TrialWorker(ctx, time_left=time_left, run_id=run_id, nameserver=ns_host,
                                 nameserver_port=ns_port, host=nameserver_host, id=i,
                                 logger=_quiet_logger("automl_pipeline.bohb.worker"), evaluate=evaluate)
            worker.run(background=True)
            workers.append(worker)
        master = DeadlineBOHB(config_space, eta=eta, min_budget=min_budget, max_budget=max_budget,
                              trial_seconds_left=trial_seconds_left, first_configs=first_configs, run_id=run_id, nameserver=ns_host,
                              nameserver_port=ns_port, host=nameserver_host, ping_interval=10,
                              result_logger=trial_log, previous_result=previous,
                              logger=_quiet_logger("automl_pipeline.bohb.master"),
                              working_directory=str(bohb_dir))

        def drive():
            try:
                master.run_until(min_n_workers=n_min)
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


def run_bohb(ctx: TrialContext | None, *, time_left: Callable[[], float], out_dir: Path, config_space,
             min_budget: float, max_budget: float, eta: float = 3.0, seed: int = 0,
             first_configs: int | None = None, n_local_workers: int = 1, min_n_workers: int | None = None,
             nameserver_host: str = "127.0.0.1", nameserver_port: int = 0, run_id: str = "bohb",
             previous_result=None, epoch_seconds: float | None = None, wrapup_s: float | None = None,
             evaluate: Callable[..., dict] = evaluate_config, log: Callable[[str], None] = print) -> BohbResult:
    """Run BOHB until `time_left()` (the phase's remaining seconds) runs out.

    ctx: the data for local workers (None only with n_local_workers=0).
    config_space: from space.build_config_space; min_budget/max_budget: epochs (choose_budgets).
    first_configs: width of the first bracket (default: default_first_configs(config_space)).
    n_local_workers: in-process worker threads; min_n_workers (default: that, or 1)
      workers must have registered before the first job is scheduled, so
      remote workers (`remote.run_remote_worker`) join the same run_id.
    nameserver_host/port: the Pyro4 name server this phase starts (127.0.0.1, a
      free port); use a reachable interface for workers on other machines.
    previous_result: an hpbandster Result or a directory with configs.json /
      results.json to warm-start from.
    epoch_seconds: the measured epoch time the budgets were planned with (reported only).
    wrapup_s: seconds reserved at the end for trials to report and for shutdown
      (default 5% of the phase, clamped to [2, 10]); the last
      min(wrapup_s, max(0.75, min(2, wrapup_s / 2))) seconds are for shutdown.
    evaluate: injectable for tests (default evaluate_config).
    """
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    bohb_dir = out_dir / "bohb"
    register_numpy_serializers()
    previous = _load_previous(previous_result)
    if wrapup_s is None:
        wrapup_s = min(10.0, max(2.0, 0.05 * time_left()))
    if not 0 < min_budget < max_budget:
        raise ValueError(f"need 0 < min_budget < max_budget, got {min_budget}, {max_budget}")
    if first_configs is None:
        first_configs = default_first_configs(config_space)
    np.random.seed(seed)   # hpbandster's BOHB samples with numpy's global generator
    n_min = max(1, n_local_workers) if min_n_workers is None else max(1, int(min_n_workers))
    # master + workers + name server shut down in ~0.4 s on a loaded 2-core machine
    shutdown_reserve = min(wrapup_s, max(0.75, min(2.0, wrapup_s / 2.0)))

    def trial_seconds_left() -> float:
        return time_left() - wrapup_s

    log(f"bohb: budgets {', '.join(f'{b:g}' for b in hpbandster_budgets(min_budget, max_budget, eta))} epochs "
        f"(eta {eta:g}), {time_left():.0f}s left, {n_local_workers} local worker(s)")

    trial_log = TrialLog(bohb_dir, t0=t0, log=log)
    if trial_seconds_left() > 0:
        clean, master, master_errors = _search(
            ctx, config_space, trial_log, time_left=time_left, trial_seconds_left=trial_seconds_left,
            shutdown_reserve=shutdown_reserve, eta=eta, min_budget=min_budget, max_budget=max_budget,
            first_configs=first_configs, n_local_workers=n_local_workers, n_min=n_min, run_id=run_id,
            nameserver_host=nameserver_host,
            nameserver_port=nameserver_port, previous=previous, evaluate=evaluate, bohb_dir=bohb_dir, log=log)
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
        trajectory=trajectory, seconds=time.monotonic() - t0, n_workers=max(len(workers_seen), n_local_workers),
        clean_shutdown=clean, epoch_seconds=epoch_seconds,
        master_error=master_errors[0].strip().splitlines()[-1] if master_errors else None,
        hpbandster_result=hb_result)
    warning = result.warning()
    log(f"bohb: {len(trials)} trials in {result.seconds:.1f}s, {picks}/{sampled} model-based picks"
        + (f"; incumbent val macro-F1 {result.incumbent_val_macro_f1:.4f} at budget {result.incumbent_budget:g}"
           if incumbent else "; no trial was evaluated")
        + (f"; WARNING: {warning}" if warning else ""))
    return result
