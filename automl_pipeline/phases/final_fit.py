"""Phase 4, the final fit: BOHB's incumbent, else the DARTS cell, else the default network, trained for
all the time left: as a k-fold bag on small data when the time holds it (budget.plan.bag_folds,
phases/bagging.py; BOHB's next-best top-rung configurations are its contenders for the later rounds),
else as one model (retrained or fine-tuned when a round ends early)."""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from automl_pipeline.bohb import BohbResult, config_to_network_spec, config_to_train_config
from automl_pipeline.bohb.results import top_rung
from automl_pipeline.bohb.space import DEFAULT_CELL
from automl_pipeline.bohb.worker import config_cells
from automl_pipeline.darts import DartsResult
from automl_pipeline.phases.common import (RunData, TimeLeft, default_train_config, first_model_spec,
                                           last_epoch_candidate, network_spec, timed_epoch, train_candidate,
                                           with_head_for)
from automl_pipeline.phases import bagging, ensemble, evidence
from automl_pipeline.phases.context import RunContext, phase_failed
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space import TEMPLATE_OPS, NetworkSpec, build_network
from automl_pipeline.training import TrainConfig
from automl_pipeline.training.planning import epochs_that_fit
from budget.plan import FoldFacts, bag_folds, fold_epoch_seconds
from budget.reserves import ENSEMBLE_RESERVE_S

NAME = "final_fit"
# The final fit trains BOHB's incumbent only when it reached this multiple of chance macro-F1.
INCUMBENT_OVER_CHANCE = 1.5
# The final fit retrains with the measured epoch time while that at least doubles the epochs.
MAX_FINAL_ROUNDS = 3
MIN_FINE_TUNE_EPOCHS = 1
# A round's last-epoch weights become a candidate (phases.common.last_epoch_candidate) when the time left holds
# this many times the seconds its best weights' prediction pass took.
LAST_EPOCH_PREDICT_SAFETY = 2.0
# BOHB's next-best top-rung configurations that may each get a bag of their own (phases/bagging.py).
TOP_RUNG_CONTENDERS = bagging.MAX_ROUNDS - 1


def final_choice(data: RunData, darts: DartsResult | None, bohb: BohbResult | None, *, seed: int, options: SearchOptions = SearchOptions()
                 ) -> tuple[str, str, NetworkSpec, Callable[[int], TrainConfig]]:
    """What the final fit trains: BOHB's incumbent, else DARTS' genotype, else the default network.

    darts: a DARTS result whose search learned, or None. An incumbent that did not reach
    INCUMBENT_OVER_CHANCE x chance (1 / n_classes) validation macro-F1 is passed over: its trials
    learned nothing to rank by. (It is not compared with the model delivered so far: its trials
    trained for a fraction of the final fit's epochs.)
    Returns (source, description, network spec, epochs -> TrainConfig); source is one of
    "bohb_incumbent", "darts_cell", "default_network" (report.json `final.source`).
    """
    if (bohb is not None and bohb.incumbent_config is not None
            and bohb.incumbent_val_macro_f1 >= INCUMBENT_OVER_CHANCE / data.n_classes):
        return _bohb_choice(bohb.incumbent_config, data, darts, seed, "bohb_incumbent", "final fit of the BOHB incumbent")
    if darts is not None:
        source, description, spec = "darts_cell", "final fit of the DARTS genotype", network_spec(data, darts.genotype)
    else:
        source, description, spec = "default_network", "final fit of the default network", first_model_spec(data)
    return source, description, spec, lambda epochs: default_train_config(
        epochs=epochs, batch_size=data.batch_size, seed=seed, options=options)


def top_rung_contenders(data: RunData, darts: DartsResult | None, bohb: BohbResult | None, source: str, *,
                        seed: int, n: int = TOP_RUNG_CONTENDERS) -> list[tuple[dict, tuple]]:
    """The final choice's contenders for a bag of their own: when it is BOHB's incumbent, the next `n` best
    trials of its budget (bohb.results.top_rung) that reached INCUMBENT_OVER_CHANCE x chance, as (their
    configuration, final_choice's tuple with source "bohb_runner_up"); otherwise none."""
    if source != "bohb_incumbent" or bohb is None:
        return []
    runners_up = [t for t in top_rung(bohb.trials, n + 1)[1:]
                  if t.val_macro_f1 >= INCUMBENT_OVER_CHANCE / data.n_classes]
    return [(t.config, _bohb_choice(t.config, data, darts, seed, "bohb_runner_up", f"BOHB's top-rung runner-up {k}"))
            for k, t in enumerate(runners_up, start=1)]


def _bohb_choice(config: dict, data: RunData, darts: DartsResult | None, seed: int, source: str, description: str):
    """final_choice's tuple for a BOHB configuration (with the values fixed for its trial, TrialRecord.config)."""
    spec = config_to_network_spec(config, darts=darts, in_channels=data.in_channels, n_classes=data.n_classes,
                                  image_side=data.image_side, ops=darts.ops if darts is not None else TEMPLATE_OPS)
    return (source, description, spec,
            lambda epochs: config_to_train_config(config, epochs, seed, batch_size=data.batch_size))


def fit_for_the_time_left(source: str, description: str, spec: NetworkSpec, config_for: Callable[[int], TrainConfig],
                          data: RunData, time_left: TimeLeft, *, epoch_s: float, log: Callable[[str], None]):
    """Train `spec` with as many epochs as fit; yield each finished candidate, and after it, when its last
    epoch was not its best, that epoch's weights as another (phases.common.last_epoch_candidate).

    The epoch count comes from `epoch_s`, a timed probe (timed_epoch). When a round ends early (the probe overestimated,
    e.g. on a machine whose load dropped), the time left is used, for up to MAX_FINAL_ROUNDS rounds:
    if the measured epoch time allows at least twice the epochs, training starts again from scratch
    with the longer schedule; otherwise, with at least MIN_FINE_TUNE_EPOCHS left, the best weights
    are fine-tuned at a tenth of the learning rate on a cosine schedule.
    """
    last_epochs, best = 0, None
    for round_index in range(MAX_FINAL_ROUNDS):
        epochs = epochs_that_fit(time_left(), epoch_s, low=0)
        if round_index == 0 or epochs >= 2 * last_epochs:
            name, config, init_state = description, config_for(max(1, epochs)), None
        elif epochs >= MIN_FINE_TUNE_EPOCHS:
            base = config_for(epochs)
            name, init_state = f"{description} (fine-tuned)", best.state_dict
            config = dataclasses.replace(base, lr=base.lr / 10, schedule="cosine", surrogate_beta0=0.0)
        else:
            return
        log(f"{name}: ~{epoch_s:.2f}s/epoch, {config.epochs} epochs planned")
        started = time.perf_counter()
        candidate, result = train_candidate(source, spec, config, data, time_left, log=log, description=name,
                                            init_state=init_state, keep_last=True)
        predict_s = max(0.0, time.perf_counter() - started - result.seconds)
        yield candidate
        if time_left() >= LAST_EPOCH_PREDICT_SAFETY * predict_s:
            last = last_epoch_candidate(source, spec, config, result, data, description=name)
            if last is not None:
                yield last
        if best is None or candidate.val_macro_f1 > best.val_macro_f1:
            best = candidate
        if result.stopped_by_deadline or result.epochs_done == 0:
            return
        epoch_s, last_epochs = result.seconds / result.epochs_done, config.epochs


def run(ctx: RunContext, darts: DartsResult | None, bohb: BohbResult | None) -> None:
    """The phase: train the final choice for the time left, delivering each finished round; then the
    ensemble of every candidate (phases/ensemble.py); then the bag's evidence against the validation split's
    choice (phases/evidence.py); then record in the report's `darts` section whether
    the delivered model's cell came from DARTS."""
    runner_up_cells: dict[str, tuple[str, ...]] = {}    # a runner-up's bag name -> its configuration's cells
    with ctx.budget.start_phase(NAME) as phase:
        try:
            source, description, spec, config_for = final_choice(ctx.data, darts, bohb,
                                                                 seed=ctx.seed, options=ctx.options)

            def time_left() -> float:
                return max(0.0, phase.remaining() - ENSEMBLE_RESERVE_S)

            epoch_s = timed_epoch(build_network(spec), ctx.data, config_for(1))
            spec = with_head_for(spec, epochs_that_fit(time_left(), epoch_s))
            facts = fold_facts(ctx, time_left(), epoch_s)
            folds, why = bag_folds(facts) if ctx.options.bagging == "auto" else (1, "bagging is off (search options)")
            ctx.report["bagging"] = {"folds": folds, "reason": why}
            ctx.log.event("bagging", why)
            if folds > 1:
                contenders = top_rung_contenders(ctx.data, darts, bohb, source, seed=ctx.seed)
                candidates, bag_facts = bagging.fit_bags(
                    bagging.BagPlan(source, description, spec, config_for, fold_epoch_seconds(facts, folds)),
                    ctx.data, time_left, folds=folds, seed=ctx.seed, log=ctx.log,
                    contenders=[_timed_plan(ctx, choice, facts, folds) for _, choice in contenders])
                ctx.report["bagging"].update(bag_facts)
                # candidates[k] is contenders[k - 1]'s bag: the contenders that ran did so in order
                runner_up_cells.update({bag.name: config_cells(config)
                                        for bag, (config, _) in zip(candidates[1:], contenders)})
                for candidate in candidates:
                    ctx.deliver(candidate)
            else:
                for candidate in fit_for_the_time_left(source, description, spec, config_for, ctx.data, time_left,
                                                       epoch_s=epoch_s, log=ctx.log):
                    ctx.deliver(candidate)
        except Exception as err:   # noqa: BLE001 - a failed phase must not end the run
            phase_failed(ctx.log, NAME, err)
        ensemble.run(ctx)
        evidence.run(ctx)
    _note_cell_use(ctx, bohb, runner_up_cells)


def _timed_plan(ctx: RunContext, choice: tuple, facts: FoldFacts, folds: int) -> Callable[[], bagging.BagPlan]:
    """A contender's BagPlan, built when its round may come: one timed epoch of its network sets its cost."""
    source, description, spec, config_for = choice

    def plan() -> bagging.BagPlan:
        epoch_s = timed_epoch(build_network(spec), ctx.data, config_for(1))
        return bagging.BagPlan(source, description, spec, config_for,
                               fold_epoch_seconds(dataclasses.replace(facts, epoch_s=epoch_s), folds))
    return plan


def fold_facts(ctx: RunContext, seconds: float, epoch_s: float) -> FoldFacts:
    """What budget.plan.bag_folds decides on, for this run's splits."""
    data = ctx.data
    counts = data.train_counts + np.bincount(data.val.y.cpu().numpy(), minlength=data.n_classes)
    present = counts[counts > 0]
    return FoldFacts(seconds=seconds, epoch_s=epoch_s, n_train=len(data.train), n_val=len(data.val),
                     rarest_class=int(present.min()) if present.size else 0)


def _note_cell_use(ctx: RunContext, bohb: BohbResult | None, runner_up_cells: dict[str, tuple[str, ...]]) -> None:
    """darts.cell_used: a cell of the delivered model came from the DARTS search (its genotype or
    one sampled from or derived from its weights, in any stage; for an ensemble, of any member).
    runner_up_cells: the cells of each BOHB runner-up's bag, by candidate name."""
    section, best = ctx.report.get("darts"), ctx.delivery.best
    if section is None or best is None:
        return
    chosen = best.members if best.members else [{"name": best.name, "source": best.source}]
    sources = {member["source"] for member in chosen}
    cells = [cell for member in chosen for cell in runner_up_cells.get(member["name"], ())]
    if "bohb_incumbent" in sources and bohb is not None and bohb.incumbent_config is not None:
        cells += config_cells(bohb.incumbent_config)
    section["cell_used"] = "darts_cell" in sources or any(cell != DEFAULT_CELL for cell in cells)
