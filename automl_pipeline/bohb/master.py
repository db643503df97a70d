"""hpbandster's BOHB master made stoppable at a deadline.

hpbandster's `Master.run(n_iterations)` has no wall-clock stop, so
`DeadlineBOHB.run_until` is its scheduling loop with timed waits and a stop
flag (the stock loop blocks on a condition that is only signalled when a job
finishes, so it cannot be stopped from outside). Every job carries
`phase_seconds_left` (from `trial_seconds_left()`), so a trial, local or
remote, stops training in time to report what it reached.

The brackets follow the rungs' measured agreement (hpbandster's best-practice check): once the lowest
rung's ranking disagrees with the next rung's (`results.first_ranking_rung`), later brackets start one
rung higher, so the search stops promoting on a budget that ranks noise; `raised_min_budget` says when.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np
from hpbandster.core.base_config_generator import base_config_generator
from hpbandster.core.master import Master
from hpbandster.core.result import Result
from hpbandster.optimizers.bohb import BOHB
from hpbandster.optimizers.config_generators.bohb import BOHB as BOHBConfigGenerator
from hpbandster.optimizers.iterations import SuccessiveHalving

from automl_pipeline.bohb.budgets import bracket_sizes, hpbandster_budgets, min_points_in_model, n_rungs
from automl_pipeline.bohb.results import first_ranking_rung, rank_correlations
from submission import to_jsonable


class PlainConfigGenerator(BOHBConfigGenerator):
    """hpbandster's BOHB config generator, handing out plain-Python configurations
    (ConfigSpace 1.x returns numpy strings/bools/ints, which JSON and serpent reject)."""

    def get_config(self, budget):
        config, info = super().get_config(budget)
        return to_jsonable(config), to_jsonable(info)


class RandomConfigGenerator(base_config_generator):
    """Configurations drawn uniformly from the space (ConfigSpace's own seeded sampler), never
    model-based: the random-search ablation of BOHB, with the same brackets and budgets."""

    def __init__(self, configspace, **kwargs):
        super().__init__(**kwargs)
        self.configspace = configspace

    def get_config(self, budget):
        return to_jsonable(dict(self.configspace.sample_configuration())), {"model_based_pick": False}


# optimizer name -> config generator for a space; "bohb" needs d + 1 good and as many bad results on a
# budget before its KDE is used (hpbandster's minimum, min_points_in_model)
CONFIG_GENERATORS: dict[str, Callable[[Any], base_config_generator]] = {
    "bohb": lambda space: PlainConfigGenerator(configspace=space, min_points_in_model=min_points_in_model(space)),
    "random": RandomConfigGenerator,
}
OPTIMIZERS = tuple(CONFIG_GENERATORS)


class DeadlineBOHB(BOHB):
    """hpbandster's BOHB with a stoppable scheduling loop and per-job deadlines; `optimizer`
    "random" swaps its KDE for uniform sampling (same brackets, budgets and deadlines)."""

    def __init__(self, configspace, *, eta: float, min_budget: float, max_budget: float,
                 trial_seconds_left: Callable[[], float], first_configs: int | None = None,
                 optimizer: str = "bohb", fixed: dict | None = None, **master_kwargs):
        # BOHB.__init__ with our config generator (same hyperband bookkeeping)
        if optimizer not in CONFIG_GENERATORS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        Master.__init__(self, config_generator=CONFIG_GENERATORS[optimizer](configspace), **master_kwargs)
        self.optimizer = optimizer
        self.fixed = to_jsonable(dict(fixed or {}))   # sent with every job (TrialWorker.compute)
        self.first_configs = first_configs
        self.eta, self.min_budget, self.max_budget = eta, min_budget, max_budget
        self.max_SH_iter = n_rungs(min_budget, max_budget, eta)
        self.budgets = np.asarray(hpbandster_budgets(min_budget, max_budget, eta))
        self.config.update({"eta": eta, "min_budget": min_budget, "max_budget": max_budget,
                            "budgets": self.budgets, "max_SH_iter": self.max_SH_iter})
        self.trial_seconds_left = trial_seconds_left
        self.stop_event = threading.Event()
        self.start_rung = 0                # brackets start at self.budgets[start_rung] or higher
        self.raised_min_budget: list[dict] = []   # one entry per raise: when, from which budget, on what evidence

    def get_next_iteration(self, iteration, iteration_kwargs={}):   # noqa: B006 - hpbandster's signature
        """hpbandster's HyperBand brackets, except that the first one starts `first_configs` wide, so
        that the KDE can be built from its min-budget results (see model_min_trials), and that no bracket
        starts below the lowest rung that ranks (`update_start_rung`)."""
        self.update_start_rung(iteration)
        brackets = self.max_SH_iter - self.start_rung
        s = brackets - 1 - (iteration % brackets)
        n0 = int(np.floor(brackets / (s + 1)) * self.eta ** s)
        if iteration == 0 and self.first_configs:
            n0 = max(n0, self.first_configs)
        return SuccessiveHalving(HPB_iter=iteration, num_configs=bracket_sizes(n0, s + 1, self.eta),
                                 budgets=self.budgets[(-s - 1):], config_sampler=self.config_generator.get_config,
                                 **iteration_kwargs)

    def rung_scores(self) -> dict[float, dict]:
        """budget -> {config id: -loss} over the finished trials of this search and its warm start."""
        scores: dict[float, dict] = {}
        for it in list(self.warmstart_iteration) + list(self.iterations):
            for config_id, datum in list(it.data.items()):
                for budget, result in list(datum.results.items()):
                    loss = None if result is None else result.get("loss")
                    if loss is not None and np.isfinite(loss) and (result.get("info") or {}).get("evaluated", True):
                        scores.setdefault(float(budget), {})[tuple(config_id)] = -float(loss)
        return scores

    def update_start_rung(self, iteration: int) -> None:
        """Raise `start_rung` to the lowest rung not shown to rank noise (never lower it)."""
        budgets = [float(b) for b in self.budgets]
        rows = rank_correlations(self.rung_scores(), budgets)
        rung = first_ranking_rung(rows)
        if rung > self.start_rung:
            self.raised_min_budget.append({
                "iteration": int(iteration), "from_budget": budgets[self.start_rung], "to_budget": budgets[rung],
                "evidence": [row for row in rows[self.start_rung:rung]]})
            self.start_rung = rung

    def _submit_job(self, config_id, config, budget):
        with self.thread_cond:
            self.dispatcher.submit_job(config_id, config=config, budget=budget,
                                       working_directory=self.working_directory,
                                       phase_seconds_left=max(0.0, float(self.trial_seconds_left())),
                                       fixed=self.fixed)
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
