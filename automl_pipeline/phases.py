"""One function per phase of the run; each takes the data, a time_left callable and settings.

The pipeline (pipeline.py) decides which phases run and how much time each gets; the functions
here do the work and return plain results. None of them reads a clock directly.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from automl_pipeline.bohb import (BohbResult, TrialContext, build_config_space, choose_budgets,
                                  config_to_network_spec, config_to_train_config, fixed_hyperparameters, run_bohb,
                                  to_plain)
from automl_pipeline.bohb.phase import default_first_configs
from automl_pipeline.bohb.worker import build_trial_network, genotype_pool
from automl_pipeline.darts import (DartsConfig, DartsResult, estimate_epoch_seconds, random_cell_result, run_darts,
                                   steps_per_epoch)
from automl_pipeline.delivery import Candidate
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space import (DEFAULT_GENOTYPE, TEMPLATE_OPS, Genotype, NetworkSpec, build_network,
                                          default_stem_pool)
from automl_pipeline.search_space.ops import EXTRA_OPS
from automl_pipeline.training import TensorData, TrainConfig, TrainResult, make_loss, predict, train_model
from automl_pipeline.training.planning import batch_size_for, epochs_that_fit, measure_epoch_seconds
from automl_pipeline.training.tensors import random_subset

# DARTS: the poster's 15 epochs at most; fewer than MIN_DARTS_EPOCHS on the full training split and
# the search runs on a random subset instead, never below MIN_DARTS_IMAGES_PER_CLASS on average.
MAX_DARTS_EPOCHS = 15
MIN_DARTS_EPOCHS = 6
MIN_DARTS_IMAGES_PER_CLASS = 20
MIN_FIT_EPOCHS = 3
# The first model takes smaller batches (down to MIN_FIRST_MODEL_BATCH) until its epochs give at least this
# many optimiser steps: on digits, 3 epochs of 361 images reached val macro-F1 0.02 at batch 64 (18 steps)
# and 0.61-0.78 at batch 16 (69 steps) in about the same time on CPU.
MIN_FIRST_MODEL_STEPS = 60
MIN_FIRST_MODEL_BATCH = 16
# A search phase shorter than this is skipped without even timing it (timing costs seconds).
MIN_SEARCH_PHASE_S = 15.0
# The final fit trains BOHB's incumbent only when it reached this multiple of chance macro-F1.
INCUMBENT_OVER_CHANCE = 1.5
# The smallest BOHB budget trains on at least this many batches and images per class.
MIN_TRIAL_STEPS = 6
MIN_TRIAL_IMAGES_PER_CLASS = 10
# The final fit retrains with the measured epoch time while that at least doubles the epochs.
MAX_FINAL_ROUNDS = 3
MIN_FINE_TUNE_EPOCHS = 1

TimeLeft = Callable[[], float]


@dataclass
class RunData:
    """The splits as tensors on the training device, plus what the phases need to know about them."""

    train: TensorData
    val: TensorData
    heldout: TensorData
    predict: TensorData | None      # None when predictions are for the held-out images themselves
    n_classes: int
    in_channels: int
    image_side: int
    train_counts: np.ndarray
    device: torch.device

    @property
    def batch_size(self) -> int:
        """training.planning.batch_size_for the training split (BOHB's remote workers use the same rule)."""
        return batch_size_for(len(self.train))


def timed_epoch(model: torch.nn.Module, data: RunData, config: TrainConfig) -> float:
    """Seconds of one epoch of `config` over data.train plus a validation pass (training.planning)."""
    return measure_epoch_seconds(model, data.train, data.val, data.n_classes, config)


def train_candidate(source: str, spec: NetworkSpec, config: TrainConfig, data: RunData,
                    time_left: TimeLeft, *, log: Callable[[str], None], description: str | None = None,
                    init_state: dict | None = None) -> tuple[Candidate, TrainResult]:
    """Build `spec` (from `init_state` when given), train it with `config` until done or out of
    time, and predict with its best weights. source: the report's `final.source` name;
    description: the words for logs and report.md (default: source)."""
    description = description or source
    torch.manual_seed(config.seed)
    model = build_network(spec).to(data.device)
    if init_state is not None:
        model.load_state_dict(init_state)

    def on_epoch(row: dict) -> None:
        score = row.get("val_macro_f1")
        log(f"{description}: epoch {row['epoch']}/{config.epochs} val macro-F1 "
            + ("-" if score is None else f"{score:.4f}"))

    result = train_model(model, data.train, data.val, config, time_left=time_left,
                         n_classes=data.n_classes, on_epoch=on_epoch)
    model.load_state_dict(result.state_dict)
    heldout_predictions = predict(model, data.heldout.x)
    predict_labels = heldout_predictions if data.predict is None else predict(model, data.predict.x)
    images_seen = sum(row["batches"] * row["batch_size"] for row in result.history)
    train_s = sum(row["seconds"] for row in result.history)
    candidate = Candidate(
        source=source,
        description=description,
        train_images_per_s=images_seen / train_s if train_s > 0 else 0.0,
        val_macro_f1=float(result.best_val_macro_f1),
        predict_labels=predict_labels,
        heldout_predictions=heldout_predictions,
        architecture=spec.to_json(),
        config=config.to_json(),
        epochs=result.epochs_done,
        train_s=result.seconds,
        state_dict={k: v.detach().cpu() for k, v in result.state_dict.items()},
    )
    return candidate, result


def majority_candidate(data: RunData, val_labels: np.ndarray) -> Candidate:
    """The fallback written before any training: every image gets the most frequent training class."""
    from automl_pipeline.training import classification_metrics

    majority = int(np.argmax(data.train_counts))
    val_f1 = classification_metrics(val_labels, np.full_like(val_labels, majority), data.n_classes)["macro_f1"]
    n_predict = len(data.heldout) if data.predict is None else len(data.predict)
    return Candidate(
        source="majority_fallback",
        description="majority-class fallback",
        val_macro_f1=float(val_f1),
        predict_labels=np.full(n_predict, majority, dtype=np.int64),
        heldout_predictions=np.full(len(data.heldout), majority, dtype=np.int64),
        config={"majority_class": majority},
    )


@dataclass(frozen=True)
class DartsProxy:
    """One size of supernet to search with; `side` caps the image side it sees."""

    n_cells: int
    n_nodes: int
    base_channels: int
    side: int


# Supernets to search with, cheapest first. On 2 CPU cores a full-size supernet (3 cells of 4 nodes on
# 28 px) took ~3 s per architecture + weight step, so a 65 s phase made ~20 steps and learned nothing;
# the cheapest proxy here takes ~0.15 s (batch 32, measured with benchmarks/darts_search.py).
DARTS_PROXIES = (DartsProxy(n_cells=2, n_nodes=2, base_channels=8, side=16),
                 DartsProxy(n_cells=2, n_nodes=3, base_channels=16, side=16),
                 DartsProxy(n_cells=3, n_nodes=3, base_channels=16, side=32),
                 DartsProxy(n_cells=3, n_nodes=4, base_channels=16, side=32))
DARTS_BATCH = 32
# Weight learning rate of the proxy search (SGD, cosine to DartsConfig.w_lr_min). The poster's 0.005 is for
# 15 full epochs; in ~130 steps on digits it left the supernet at chance (val accuracy 0.16), 0.05
# reached 0.58 and moved the alphas 10x further (mean normalised entropy 0.90 instead of 0.98).
DARTS_W_LR = 0.05
# DARTS runs only when this many architecture steps fit (whether its cell is then used is decided by
# DartsResult.learned); a richer proxy is timed only while the current one fits RICHER_PROXY_STEPS
# (each probe costs a few steps).
MIN_ARCH_STEPS = 120
RICHER_PROXY_STEPS = 600
# With early termination off, the skip limit is more edges than any proxy cell has.
NO_SKIP_LIMIT = 10 ** 6


def darts_config(proxy: DartsProxy, image_side: int, *, epochs: int, seed: int,
                 options: SearchOptions = SearchOptions()) -> DartsConfig:
    """The DartsConfig of a proxy for images of `image_side` (never upsampled), with the DARTS
    switches of the search options (ops, second order, derivation, surrogate skip, early termination)."""
    side = min(image_side, proxy.side)
    return DartsConfig(epochs=epochs, batch_size=DARTS_BATCH, n_cells=proxy.n_cells, n_nodes=proxy.n_nodes,
                       base_channels=proxy.base_channels, w_lr=DARTS_W_LR, stem_pool=default_stem_pool(side),
                       proxy_side=side if side != image_side else None, seed=seed,
                       ops=TEMPLATE_OPS + (EXTRA_OPS if options.extra_ops else ()),
                       second_order=options.second_order, allow_zero=options.allow_zero, grouping=options.grouping,
                       max_skips=options.max_skips, beta0=DartsConfig.beta0 if options.surrogate_skip else 0.0,
                       skip_limit=DartsConfig.skip_limit if options.early_termination else NO_SKIP_LIMIT)


def plan_darts(step_seconds: Callable[[DartsConfig], float], seconds: float, *, n_train: int, n_classes: int,
               image_side: int, seed: int, options: SearchOptions = SearchOptions()
               ) -> tuple[DartsConfig | None, int, str]:
    """(config, training images to search on, "") or (None, 0, why not).

    step_seconds(config) measures one search step. The richest proxy that fits RICHER_PROXY_STEPS
    steps (else the cheapest, if it fits MIN_ARCH_STEPS) searches for MAX_DARTS_EPOCHS epochs at most;
    when fewer than MIN_DARTS_EPOCHS epochs of the whole training split fit, it searches a subset so
    that they do (never below MIN_DARTS_IMAGES_PER_CLASS images per class on average).
    """
    chosen, steps = None, 0
    for proxy in DARTS_PROXIES:
        config = darts_config(proxy, image_side, epochs=MAX_DARTS_EPOCHS, seed=seed, options=options)
        fit = int(0.9 * seconds / max(step_seconds(config), 1e-6))
        if chosen is not None and fit < RICHER_PROXY_STEPS:
            break
        if chosen is None and fit < MIN_ARCH_STEPS:
            return None, 0, f"{fit} architecture steps fit in {seconds:.0f}s; at least {MIN_ARCH_STEPS} are needed"
        chosen, steps = config, fit
        if fit < RICHER_PROXY_STEPS:
            break
    full_epoch_steps = steps_per_epoch(n_train, chosen)
    epochs = min(MAX_DARTS_EPOCHS, steps // full_epoch_steps)
    if epochs >= MIN_DARTS_EPOCHS:
        return dataclasses.replace(chosen, epochs=epochs), n_train, ""
    n_subset = (steps // MIN_DARTS_EPOCHS) * chosen.batch_size
    if n_subset < MIN_DARTS_IMAGES_PER_CLASS * n_classes:
        return None, 0, (f"{steps} steps leave {n_subset} images for {MIN_DARTS_EPOCHS} epochs "
                         f"(at least {MIN_DARTS_IMAGES_PER_CLASS} per class are needed)")
    return dataclasses.replace(chosen, epochs=MIN_DARTS_EPOCHS), n_subset, ""


def search_architecture(data: RunData, time_left: TimeLeft, *, seed: int, log: Callable[[str], None],
                        options: SearchOptions = SearchOptions(), progress: dict | None = None,
                        on_checkpoint: Callable[[dict, dict], None] | None = None) -> tuple[DartsResult | None, str]:
    """The DARTS phase: (result, "") or (None, why it was skipped), planned by `plan_darts`.

    progress: {"meta", "state"} of an earlier attempt's last finished epoch (checkpoints.py): the
    search continues with that attempt's config and subset, however little time is left (at worst
    it ends at once with the checkpoint's alphas).
    on_checkpoint(state, meta): after every finished epoch; meta says how to rebuild the search.
    """
    loss = make_loss("focal", data.train_counts, gamma=3.0, smoothing=0.8, device=data.device)
    if progress is not None:
        meta = progress["meta"]
        config = DartsConfig.from_json(meta["config"])
        log(f"DARTS: resuming after epoch {int(progress['state']['epoch'])}/{config.epochs}")
    else:
        if time_left() < MIN_SEARCH_PHASE_S:
            return None, f"{time_left():.0f}s is too short for a search (at least {MIN_SEARCH_PHASE_S:.0f}s)"
        measured: dict[DartsConfig, float] = {}

        def step_seconds(config: DartsConfig) -> float:
            measured[config] = (estimate_epoch_seconds(data.train, data.val, data.n_classes, config, loss,
                                                       n_batches=2) / steps_per_epoch(len(data.train), config))
            return measured[config]

        config, n_train, why_not = plan_darts(step_seconds, time_left(), n_train=len(data.train),
                                              n_classes=data.n_classes, image_side=data.image_side, seed=seed,
                                              options=options)
        if config is None:
            return None, why_not
        fraction = n_train / len(data.train)
        meta = {"config": config.to_json(), "n_train": n_train,
                "n_val": max(config.batch_size, int(len(data.val) * fraction)),
                "step_s": measured[dataclasses.replace(config, epochs=MAX_DARTS_EPOCHS)]}
    train, val = data.train, data.val
    if int(meta["n_train"]) < len(train):
        train = random_subset(train, int(meta["n_train"]), seed)
        val = random_subset(val, min(len(val), int(meta["n_val"])), seed)
    log(f"DARTS: {config.epochs} epochs of {len(train)} training images, {config.n_cells} cells of "
        f"{config.n_nodes} nodes, {config.base_channels} channels, {config.proxy_side or data.image_side} px")

    def on_epoch(row: dict) -> None:
        log(f"DARTS epoch {row['epoch']}/{config.epochs}: skips {row['skip_count']}, beta {row['beta']:.2f}, "
            f"supernet train acc {row['train_acc']:.3f}, val acc {row['val_acc']:.3f}")

    result = run_darts(train, val, data.n_classes, config, time_left=time_left, loss=loss, on_epoch=on_epoch,
                       step_seconds=meta.get("step_s"),
                       on_checkpoint=None if on_checkpoint is None else (lambda state: on_checkpoint(state, meta)),
                       resume=None if progress is None else progress["state"])
    learned, why = result.learned(data.n_classes)
    log(f"DARTS: {result.stop_reason} after {result.epochs_run} epochs, {result.steps_run} architecture steps; "
        + (f"genotype {result.genotype}" if learned else f"not used: {why}"))
    return result, ""


def random_darts_stand_in(options: SearchOptions, *, seed: int) -> DartsResult:
    """The "darts: random" ablation: a random cell (uniform alphas) over the ops DARTS would search."""
    return random_cell_result(TEMPLATE_OPS + (EXTRA_OPS if options.extra_ops else ()), seed=seed)


def search_hyperparameters(data: RunData, darts: DartsResult | None, time_left: TimeLeft, *, baseline: bool,
                           seed: int, out_dir, workers: int, nameserver_host: str, nameserver_port: int,
                           log: Callable[[str], None], options: SearchOptions = SearchOptions(), previous=None,
                           sampling_seed: int | None = None) -> tuple[BohbResult | None, str]:
    """The BOHB phase: (result, "") or (None, why it was skipped).

    darts: a DARTS result whose search learned (its cells join the pool), or None.
    Budgets (epochs, fractional ones on a subset) come from the measured epoch time of the space's
    default configuration and the phase length (bohb.phase.choose_budgets).
    previous: None, or `space -> directory | None` giving hpbandster logs of earlier trials to
    warm-start from (a resumed run; see checkpoints.Checkpoints.previous_bohb_dir).
    sampling_seed: seed of the configuration sampling (default `seed`); a resumed run uses another
    one so it does not draw the configurations it already evaluated again. Trials still train with `seed`.
    options: the search options: hyperparameters they fix (bohb.space.fixed_hyperparameters) leave the space.
    """
    sampling_seed = seed if sampling_seed is None else sampling_seed
    if time_left() < MIN_SEARCH_PHASE_S:
        return None, f"{time_left():.0f}s is too short for a search (at least {MIN_SEARCH_PHASE_S:.0f}s)"
    darts = None if baseline else darts
    ops = darts.ops if darts is not None else TEMPLATE_OPS
    ctx = TrialContext(train=data.train, val=data.val, n_classes=data.n_classes, in_channels=data.in_channels,
                       image_side=data.image_side, darts=darts, device=data.device, seed=seed, baseline=baseline,
                       darts_ops=ops, batch_size=data.batch_size,
                       fixed=fixed_hyperparameters(options, baseline=baseline))
    space = build_config_space(seed=sampling_seed, cells=tuple(genotype_pool(darts, ops)), baseline=baseline,
                               fixed=tuple(ctx.fixed))
    default = ctx.complete_config(to_plain(dict(space.get_default_configuration())))
    epoch_s = timed_epoch(build_trial_network(default, ctx), data,
                          config_to_train_config(default, 1, seed, batch_size=data.batch_size))
    floor = max(MIN_TRIAL_STEPS * data.batch_size, MIN_TRIAL_IMAGES_PER_CLASS * data.n_classes) / len(data.train)
    budgets = choose_budgets(epoch_s, time_left(), first_configs=default_first_configs(space), min_budget_floor=floor)
    if budgets is None:
        return None, (f"{time_left():.0f}s cannot hold a first bracket of {default_first_configs(space)} trials "
                      f"of at least {floor:.2f} epochs (~{epoch_s:.2f}s per epoch of the default configuration)")
    log(f"BOHB: ~{epoch_s:.2f}s per epoch of the default configuration, {workers} worker(s)")
    previous_dir = None if previous is None else previous(space)
    if previous_dir is not None:
        log(f"BOHB: warm start from the trials in {previous_dir}")
    result = run_bohb(ctx, time_left=time_left, out_dir=out_dir, config_space=space, min_budget=budgets[0],
                      max_budget=budgets[1], seed=sampling_seed, n_local_workers=workers,
                      nameserver_host=nameserver_host, nameserver_port=nameserver_port, epoch_seconds=epoch_s,
                      log=log, previous_result=previous_dir)
    if result.warning():
        log(f"BOHB: {result.warning()}")
    return result, ""


def final_choice(data: RunData, darts: DartsResult | None, bohb: BohbResult | None, *, baseline: bool,
                 seed: int, options: SearchOptions = SearchOptions()
                 ) -> tuple[str, str, NetworkSpec, Callable[[int], TrainConfig]]:
    """What the final fit trains: BOHB's incumbent, else DARTS' genotype, else the default network.

    darts: a DARTS result whose search learned, or None. An incumbent that did not reach
    INCUMBENT_OVER_CHANCE x chance (1 / n_classes) validation macro-F1 is passed over: its trials
    learned nothing to rank by. (It is not compared with the model delivered so far: its trials
    trained for a fraction of the final fit's epochs.)
    Returns (source, description, network spec, epochs -> TrainConfig); source is one of
    "bohb_incumbent", "darts_cell", "default_network" (report.json `final.source`).
    """
    darts = None if baseline else darts
    if (bohb is not None and bohb.incumbent_config is not None
            and bohb.incumbent_val_macro_f1 >= INCUMBENT_OVER_CHANCE / data.n_classes):
        config = {**bohb.incumbent_config, **fixed_hyperparameters(options, baseline=baseline)}
        spec = config_to_network_spec(config, darts=darts, in_channels=data.in_channels, n_classes=data.n_classes,
                                      image_side=data.image_side, ops=darts.ops if darts is not None else TEMPLATE_OPS)
        return ("bohb_incumbent", "final fit of the BOHB incumbent", spec,
                lambda epochs: config_to_train_config(config, epochs, seed, batch_size=data.batch_size))
    if darts is not None:
        source, description, spec = "darts_cell", "final fit of the DARTS genotype", network_spec(data, darts.genotype)
    else:
        source, description, spec = "default_network", "final fit of the default network", first_model_spec(data)
    return source, description, spec, lambda epochs: default_train_config(
        epochs=epochs, batch_size=data.batch_size, baseline=baseline, seed=seed, options=options)


def fit_for_the_time_left(source: str, description: str, spec: NetworkSpec, config_for: Callable[[int], TrainConfig],
                          data: RunData, time_left: TimeLeft, *, log: Callable[[str], None]):
    """Train `spec` with as many epochs as fit; yield each finished candidate.

    The epoch count comes from a timed probe. When a round ends early (the probe overestimated,
    e.g. on a machine whose load dropped), the time left is used, for up to MAX_FINAL_ROUNDS rounds:
    if the measured epoch time allows at least twice the epochs, training starts again from scratch
    with the longer schedule; otherwise, with at least MIN_FINE_TUNE_EPOCHS left, the best weights
    are fine-tuned at a tenth of the learning rate on a cosine schedule.
    """
    epoch_s = timed_epoch(build_network(spec), data, config_for(1))
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
        candidate, result = train_candidate(source, spec, config, data, time_left, log=log, description=name,
                                            init_state=init_state)
        yield candidate
        if best is None or candidate.val_macro_f1 > best.val_macro_f1:
            best = candidate
        if result.stopped_by_deadline or result.epochs_done == 0:
            return
        epoch_s, last_epochs = result.seconds / result.epochs_done, config.epochs


def network_spec(data: RunData, genotype: Genotype) -> NetworkSpec:
    """A stacked network for this data from a genotype, sized as BOHB's default configuration:
    3 cells from 24 channels, a pooling stem on images of 16 px and more, a linear head (at 24 channels it
    trains ~1.2x the images/s of the plain 3-block CNN on 28 px, at 32 ~0.75x: benchmarks/throughput.py)."""
    spec = config_to_network_spec({"n_cells": 3, "base_channels": 24}, darts=None, in_channels=data.in_channels,
                                  n_classes=data.n_classes, image_side=data.image_side)
    return dataclasses.replace(spec, genotype=genotype)


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


def train_first_model(data: RunData, time_left: TimeLeft, *, baseline: bool, seed: int,
                      log: Callable[[str], None], options: SearchOptions = SearchOptions()) -> Candidate:
    """The first model: the default network for the phase's time (on a subset, see shrink_to_fit)."""
    spec = first_model_spec(data)
    model = build_network(spec)
    def config(epochs: int, batch_size: int) -> TrainConfig:
        return default_train_config(epochs=epochs, batch_size=batch_size, baseline=baseline, seed=seed,
                                    options=options)

    epoch_s = timed_epoch(model, data, config(1, data.batch_size))
    data, epoch_s = shrink_to_fit(data, epoch_s, time_left(), seed=seed, what="first model", log=log)
    batch_size = batch_for_steps(len(data.train), epochs_that_fit(time_left(), epoch_s), data.batch_size)
    if batch_size != data.batch_size:   # small batches cost more per image (2x at 16 on 2 CPU cores): time them
        epoch_s = timed_epoch(model, data, config(1, batch_size))
        data, epoch_s = shrink_to_fit(data, epoch_s, time_left(), seed=seed, what="first model", log=log)
    epochs = epochs_that_fit(time_left(), epoch_s)
    log(f"first model: ~{epoch_s:.2f}s/epoch, {epochs} epochs of batch {batch_size} planned")
    candidate, _ = train_candidate("first_model", spec, config(epochs, batch_size), data, time_left, log=log, description="first model")
    return candidate


def batch_for_steps(n_train: int, epochs: int, batch_size: int) -> int:
    """`batch_size`, halved (not below MIN_FIRST_MODEL_BATCH) until `epochs` epochs of `n_train` images
    take at least MIN_FIRST_MODEL_STEPS optimiser steps."""
    while batch_size > MIN_FIRST_MODEL_BATCH and epochs * -(-n_train // batch_size) < MIN_FIRST_MODEL_STEPS:
        batch_size = max(MIN_FIRST_MODEL_BATCH, batch_size // 2)
    return batch_size


def first_model_spec(data: RunData) -> NetworkSpec:
    """The fixed default network trained first, so that good predictions exist early.

    A linear head: the poster's 64-32-16 MLP head with dropout learned far slower on short budgets
    (digits, 6 epochs: val macro-F1 0.47 with it, 0.96 without).
    """
    return network_spec(data, DEFAULT_GENOTYPE)


def default_train_config(*, epochs: int, batch_size: int, baseline: bool, seed: int,
                         options: SearchOptions = SearchOptions()) -> TrainConfig:
    """Training settings used where no search chose them: AdamW + OneCycle; focal loss for ours
    (or the loss the search options fix); plain cross-entropy for the baseline.

    Crops but no flips: flips destroy digits and characters (BOHB searches `flip` per data set).
    """
    config = {"lr": 3e-3, "flip": False} if baseline else {"lr": 3e-3, "flip": False, "loss": "focal",
                                                            **fixed_hyperparameters(options, baseline=False)}
    return config_to_train_config(config, epochs, seed, batch_size=batch_size)



__all__ = ["RunData", "timed_epoch", "epochs_that_fit", "train_candidate", "majority_candidate",
           "first_model_spec", "default_train_config", "search_architecture", "network_spec",
           "search_hyperparameters", "final_choice", "fit_for_the_time_left"]
