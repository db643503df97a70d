"""Phase 1, the first models: a logistic regression on the pixels (a second or two), then the default
network trained for the phase's short time (on a subset when needed), so that good predictions exist
early. Both join the final ensemble's library."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from automl_pipeline.delivery import Candidate
from automl_pipeline.phases.common import (RunData, TimeLeft, default_train_config, first_model_spec, model_candidate,
                                           timed_epoch, train_candidate, with_head_for)
from automl_pipeline.phases.context import RunContext, phase_failed
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space import build_network
from automl_pipeline.training import TrainConfig
from automl_pipeline.training.linear import fit_logistic
from automl_pipeline.training.planning import epochs_that_fit
from automl_pipeline.training.tensors import random_subset
from budget.plan import first_network_pays

NAME = "first_model"
# The first model trains at least MIN_FIT_EPOCHS epochs (on a subset when the whole split does not fit).
MIN_FIT_EPOCHS = 3
# The first model takes smaller batches (down to MIN_FIRST_MODEL_BATCH) until its epochs give at least this
# many optimiser steps: on digits, 3 epochs of 361 images reached val macro-F1 0.02 at batch 64 (18 steps)
# and 0.61-0.78 at batch 16 (69 steps) in about the same time on CPU.
MIN_FIRST_MODEL_STEPS = 60
MIN_FIRST_MODEL_BATCH = 16
# The logistic regression gets at most this share of the phase; the rest is the default network's.
LINEAR_SHARE = 0.3


def shrink_to_fit(data: RunData, epoch_s: float, seconds: float, *, seed: int, what: str,
                  log: Callable[[str], None]) -> tuple[RunData, float]:
    """(data, epoch seconds), the training split cut to a seeded random subset when fewer than
    MIN_FIT_EPOCHS epochs of it fit into `seconds`, so that the first model finishes inside its
    short phase with a complete schedule and a validation score (its job is early predictions; the
    final fit always trains on the whole training split)."""
    fraction = min(1.0, seconds / (MIN_FIT_EPOCHS * epoch_s / 0.9))
    n_train = max(int(len(data.train) * fraction), 2 * data.n_classes, 2)
    if n_train >= len(data.train):
        return data, epoch_s
    log(f"{what}: training on {n_train} of {len(data.train)} images so that {MIN_FIT_EPOCHS} epochs fit")
    scaled = epoch_s * n_train / len(data.train)
    return dataclasses.replace(data, train=random_subset(data.train, n_train, seed)), scaled


def probe_epoch_seconds(data: RunData, *, seed: int, options: SearchOptions = SearchOptions()) -> float:
    """Seconds of one epoch of the default network on the whole training split (with its validation pass),
    from a cold timing probe (training.planning.measure_epoch_seconds)."""
    config = default_train_config(epochs=1, batch_size=data.batch_size, seed=seed, options=options)
    return timed_epoch(build_network(first_model_spec(data)), data, config)


def train_first_model(data: RunData, time_left: TimeLeft, *, seed: int, log: Callable[[str], None],
                      probe_epoch_s: float, options: SearchOptions = SearchOptions()) -> tuple[Candidate, float]:
    """The first model: the default network for the phase's time (on a subset, see shrink_to_fit), and
    the seconds of one epoch of it on the whole training split (the run's plan needs them): the median of
    the epochs it trained, scaled to the whole split, when it trained at the split's batch size; else
    `probe_epoch_s` (probe_epoch_seconds)."""
    spec = first_model_spec(data)
    model = build_network(spec)
    def config(epochs: int, batch_size: int) -> TrainConfig:
        return default_train_config(epochs=epochs, batch_size=batch_size, seed=seed,
                                    options=options)

    full_epoch_s = epoch_s = probe_epoch_s
    n_full, full_batch = len(data.train), data.batch_size
    data, epoch_s = shrink_to_fit(data, epoch_s, time_left(), seed=seed, what="first model", log=log)
    batch_size = batch_for_steps(len(data.train), epochs_that_fit(time_left(), epoch_s), data.batch_size)
    if batch_size != data.batch_size:   # small batches cost more per image (2x at 16 on 2 CPU cores): time them
        epoch_s = timed_epoch(model, data, config(1, batch_size))
        data, epoch_s = shrink_to_fit(data, epoch_s, time_left(), seed=seed, what="first model", log=log)
    epochs = epochs_that_fit(time_left(), epoch_s)
    spec = with_head_for(spec, epochs)
    log(f"first model: ~{epoch_s:.2f}s/epoch, {epochs} epochs of batch {batch_size} planned, {spec.head} head")
    candidate, result = train_candidate("first_model", spec, config(epochs, batch_size), data, time_left, log=log,
                                        description="first model")
    trained = [row["seconds"] for row in result.history if not row["partial"]]
    if trained and batch_size == full_batch:   # the epochs it trained measure better than the one cold probe
        full_epoch_s = float(np.median(trained)) * n_full / len(data.train)   # (which ran ~2x slow on shifted digits)
    return candidate, full_epoch_s


def batch_for_steps(n_train: int, epochs: int, batch_size: int) -> int:
    """`batch_size`, halved (not below MIN_FIRST_MODEL_BATCH) until `epochs` epochs of `n_train` images
    take at least MIN_FIRST_MODEL_STEPS optimiser steps."""
    while batch_size > MIN_FIRST_MODEL_BATCH and epochs * -(-n_train // batch_size) < MIN_FIRST_MODEL_STEPS:
        batch_size = max(MIN_FIRST_MODEL_BATCH, batch_size // 2)
    return batch_size


def train_linear_model(data: RunData, time_left: TimeLeft, *, seed: int,
                       options: SearchOptions = SearchOptions()) -> Candidate:
    """The logistic regression on the pixels, as a candidate: cross-entropy, class-weighted unless the
    search options fix plain cross-entropy (as the baseline does)."""
    weighted = options.fixed_loss != "ce"
    model = fit_logistic(data.train, data.n_classes, time_left=time_left,
                         train_counts=data.train_counts if weighted else None, seed=seed)
    return model_candidate("linear", model, data, flip_tta=False, description="logistic regression on the pixels",
                           architecture={"kind": "logistic_regression", "in_features": int(model[1].in_features),
                                         "n_classes": data.n_classes},
                           config={"loss": "ce", "class_weights": weighted, "optimizer": "lbfgs"})


def run(ctx: RunContext) -> float | None:
    """The phase: train and deliver the logistic regression, then the first network (the phase is skipped
    when a resumed run kept a trained model; the network when budget.plan.first_network_pays says no search
    can run, report.json `first_network` says why). Returns the seconds of one epoch of the default network
    on the whole training split (from the trained epochs, else the probe), None when no probe ran."""
    if ctx.resumed is not None and ctx.resumed["trained_model_kept"]:
        ctx.budget.skip_phase(NAME, "resumed: the delivered trained model is kept")
        return None
    epoch_s = None
    with ctx.budget.start_phase(NAME) as phase:
        try:
            share_end = phase.remaining() * (1 - LINEAR_SHARE)
            ctx.deliver(train_linear_model(ctx.data, lambda: phase.remaining() - share_end, seed=ctx.seed,
                                           options=ctx.options))
        except Exception as err:   # noqa: BLE001 - a failed model must not end the phase
            phase_failed(ctx.log, "linear model", err)
        try:
            epoch_s = probe_epoch_seconds(ctx.data, seed=ctx.seed, options=ctx.options)
            pays, why_not = first_network_pays(ctx.budget.remaining(), epoch_s)
            if not pays:
                ctx.log.event("first_network_skipped", why_not)
                ctx.report["first_network"] = {"trained": False, "reason": why_not}
                return epoch_s
            candidate, epoch_s = train_first_model(ctx.data, phase.remaining, seed=ctx.seed, log=ctx.log,
                                                   probe_epoch_s=epoch_s, options=ctx.options)
            ctx.deliver(candidate)
        except Exception as err:   # noqa: BLE001 - a failed phase must not end the run
            phase_failed(ctx.log, NAME, err)
    return epoch_s
