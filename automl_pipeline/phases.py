"""One function per phase of the run; each takes the data, a time_left callable and settings.

The pipeline (pipeline.py) decides which phases run and how much time each gets; the functions
here do the work and return plain results. None of them reads a clock directly.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from automl_pipeline.bohb import (BohbResult, TrialContext, build_config_space, config_to_network_spec,
                                  config_to_train_config, run_bohb, to_plain)
from automl_pipeline.bohb.worker import build_trial_network
from automl_pipeline.darts import DartsConfig, DartsResult, estimate_epoch_seconds, run_darts, steps_per_epoch
from automl_pipeline.delivery import Candidate
from automl_pipeline.search_space import DEFAULT_GENOTYPE, TEMPLATE_OPS, Genotype, NetworkSpec, build_network
from automl_pipeline.training import TensorData, TrainConfig, TrainResult, make_loss, predict, train_model

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
MIN_SEARCH_PHASE_S = 20.0
# BOHB runs only when this many epochs of its default configuration fit, plus start-up: trials of
# 1-3 epochs of random configurations told nothing on digits (all near chance) and wasted the time.
MIN_BOHB_EPOCHS = 30
BOHB_STARTUP_S = 5.0
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
        """Default batch size: smaller for small sets so an epoch still has several steps."""
        return 64 if len(self.train) < 5000 else 128


def measure_epoch_seconds(model: torch.nn.Module, data: RunData, batch_size: int, *, n_batches: int = 3) -> float:
    """Seconds for one training epoch plus one validation pass of `model`, timed on a copy.

    One warm-up step, then `n_batches` timed steps; validation is costed at a third of a
    training step per image (forward only).
    """
    probe = copy.deepcopy(model).to(data.device).train()
    optimiser = torch.optim.SGD(probe.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = min(batch_size, len(data.train))
    x, y = data.train.x[:batch], data.train.y[:batch]
    timings = []
    for step in range(n_batches + 1):
        started = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss_fn(probe(x), y).backward()
        optimiser.step()
        if data.device.type == "cuda":
            torch.cuda.synchronize(data.device)
        if step > 0:
            timings.append(time.perf_counter() - started)
    per_image = float(np.median(timings)) / batch
    return per_image * (len(data.train) + len(data.val) / 3.0)


def epochs_that_fit(seconds: float, epoch_seconds: float, *, low: int = 1, high: int = 200) -> int:
    """How many epochs fit into `seconds` (90 % of it, leaving room for noise), clamped to [low, high]."""
    if epoch_seconds <= 0:
        return high
    return int(max(low, min(high, (0.9 * seconds) // epoch_seconds)))


def train_candidate(source: str, spec: NetworkSpec, config: TrainConfig, data: RunData,
                    time_left: TimeLeft, *, log: Callable[[str], None],
                    init_state: dict | None = None) -> tuple[Candidate, TrainResult]:
    """Build `spec` (from `init_state` when given), train it with `config` until done or out of
    time, and predict with its best weights."""
    torch.manual_seed(config.seed)
    model = build_network(spec).to(data.device)
    if init_state is not None:
        model.load_state_dict(init_state)

    def on_epoch(row: dict) -> None:
        score = row.get("val_macro_f1")
        log(f"{source}: epoch {row['epoch']}/{config.epochs} val macro-F1 "
            + ("-" if score is None else f"{score:.4f}"))

    result = train_model(model, data.train, data.val, config, time_left=time_left,
                         n_classes=data.n_classes, on_epoch=on_epoch)
    model.load_state_dict(result.state_dict)
    heldout_predictions = predict(model, data.heldout.x)
    predict_labels = heldout_predictions if data.predict is None else predict(model, data.predict.x)
    candidate = Candidate(
        source=source,
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
        source="majority-class fallback",
        val_macro_f1=float(val_f1),
        predict_labels=np.full(n_predict, majority, dtype=np.int64),
        heldout_predictions=np.full(len(data.heldout), majority, dtype=np.int64),
        config={"majority_class": majority},
    )


def search_architecture(data: RunData, time_left: TimeLeft, *, seed: int, log: Callable[[str], None],
                        progress: dict | None = None,
                        on_checkpoint: Callable[[dict, dict], None] | None = None) -> tuple[DartsResult | None, str]:
    """The DARTS phase: (result, "") or (None, why it was skipped).

    Epochs are planned from a timed supernet step; when fewer than MIN_DARTS_EPOCHS fit, the
    search runs on a seeded random subset of train and val sized so that they do.
    progress: {"meta", "state"} of an earlier attempt's last finished epoch (checkpoints.py): the
    search continues with that attempt's config and subset, however little time is left (at worst
    it ends at once with the checkpoint's alphas).
    on_checkpoint(state, meta): after every finished epoch; meta says how to rebuild the search.
    """
    loss = make_loss("focal", data.train_counts, gamma=3.0, smoothing=0.8, device=data.device)
    if progress is not None:
        meta = progress["meta"]
        config = _darts_config_from_json(meta["config"])
        train, val = data.train, data.val
        if int(meta["n_train"]) < len(train):
            train, val = _random_subset(train, int(meta["n_train"]), seed), _random_subset(val, int(meta["n_val"]), seed)
        epoch_s = float(meta["epoch_s"])
        log(f"DARTS: resuming after epoch {int(progress['state']['epoch'])}/{config.epochs} "
            f"on {len(train)} training images")
    else:
        if time_left() < MIN_SEARCH_PHASE_S:
            return None, f"{time_left():.0f}s is too short for a search (at least {MIN_SEARCH_PHASE_S:.0f}s)"
        config = DartsConfig(epochs=MAX_DARTS_EPOCHS, batch_size=64, n_cells=3, base_channels=16, seed=seed)
        epoch_s = estimate_epoch_seconds(data.train, data.val, data.n_classes, config, loss, n_batches=2)
        available = time_left()
        train, val = data.train, data.val
        fraction = min(1.0, available / (MIN_DARTS_EPOCHS * epoch_s))
        if fraction < 1.0:
            n_train = int(len(train) * fraction)
            if n_train < MIN_DARTS_IMAGES_PER_CLASS * data.n_classes or n_train < 2 * config.batch_size:
                return None, (f"a supernet epoch takes ~{epoch_s:.1f}s; {available:.0f}s leaves too few images "
                              f"for {MIN_DARTS_EPOCHS} epochs")
            train, val = _random_subset(train, n_train, seed), _random_subset(val, int(len(val) * fraction), seed)
            log(f"DARTS: searching on {len(train)} of {len(data.train)} training images to fit "
                f"{MIN_DARTS_EPOCHS}+ epochs")
            epoch_s *= fraction
        epochs = epochs_that_fit(available, epoch_s, high=MAX_DARTS_EPOCHS)
        config = dataclasses.replace(config, epochs=epochs)
        log(f"DARTS: ~{epoch_s:.1f}s per supernet epoch, {epochs} epochs planned")
        meta = {"config": config.to_json(), "n_train": len(train), "n_val": len(val), "epoch_s": float(epoch_s)}

    def on_epoch(row: dict) -> None:
        log(f"DARTS epoch {row['epoch']}/{config.epochs}: skips {row['skip_count']}, beta {row['beta']:.2f}, "
            f"val acc {row['val_acc']:.3f}")

    result = run_darts(train, val, data.n_classes, config, time_left=time_left, loss=loss, on_epoch=on_epoch,
                       step_seconds=epoch_s / steps_per_epoch(len(train), config),
                       on_checkpoint=None if on_checkpoint is None else (lambda state: on_checkpoint(state, meta)),
                       resume=None if progress is None else progress["state"])
    log(f"DARTS: {result.stop_reason} after {result.epochs_run} epochs; genotype {result.genotype}")
    return result, ""


def _darts_config_from_json(d: dict) -> DartsConfig:
    d = dict(d)
    d["ops"], d["a_betas"] = tuple(d["ops"]), tuple(d["a_betas"])
    return DartsConfig(**d)


def search_hyperparameters(data: RunData, darts: DartsResult | None, time_left: TimeLeft, *, baseline: bool,
                           seed: int, out_dir, workers: int, nameserver_host: str, nameserver_port: int,
                           log: Callable[[str], None], previous=None,
                           sampling_seed: int | None = None) -> tuple[BohbResult | None, str]:
    """The BOHB phase: (result, "") or (None, why it was skipped).

    previous: None, or `space -> directory | None` giving hpbandster logs of earlier trials to
    warm-start from (a resumed run; see checkpoints.Checkpoints.previous_bohb_dir).
    sampling_seed: seed of the configuration sampling (default `seed`); a resumed run uses another
    one so it does not draw the configurations it already evaluated again. Trials still train with `seed`.
    """
    sampling_seed = seed if sampling_seed is None else sampling_seed
    if time_left() < MIN_SEARCH_PHASE_S:
        return None, f"{time_left():.0f}s is too short for a search (at least {MIN_SEARCH_PHASE_S:.0f}s)"
    ctx = TrialContext(train=data.train, val=data.val, n_classes=data.n_classes, in_channels=data.in_channels,
                       image_side=data.image_side, darts=None if baseline else darts, device=data.device,
                       seed=seed, baseline=baseline, darts_ops=darts.ops if darts is not None else TEMPLATE_OPS)
    space = build_config_space(seed=sampling_seed, darts_available=ctx.darts is not None, baseline=baseline)
    default = to_plain(dict(space.get_default_configuration()))
    epoch_s = measure_epoch_seconds(build_trial_network(default, ctx), data, int(default["batch_size"]))
    needed = MIN_BOHB_EPOCHS * epoch_s + BOHB_STARTUP_S
    if time_left() < needed:
        return None, (f"{time_left():.0f}s left, {needed:.0f}s needed ({MIN_BOHB_EPOCHS} epochs of the default "
                      f"configuration at ~{epoch_s:.2f}s)")
    log(f"BOHB: ~{epoch_s:.2f}s per epoch of the default configuration, {workers} worker(s)")
    previous_dir = None if previous is None else previous(space)
    if previous_dir is not None:
        log(f"BOHB: warm start from the trials in {previous_dir}")
    result = run_bohb(ctx, time_left=time_left, out_dir=out_dir, seed=sampling_seed, n_local_workers=workers,
                      nameserver_host=nameserver_host, nameserver_port=nameserver_port, epoch_seconds=epoch_s,
                      config_space=space, log=log, previous_result=previous_dir)
    if result.warning():
        log(f"BOHB: {result.warning()}")
    return result, ""


def final_choice(data: RunData, darts: DartsResult | None, bohb: BohbResult | None, *, baseline: bool,
                 seed: int, val_macro_f1_to_beat: float = 0.0) -> tuple[str, NetworkSpec, Callable[[int], TrainConfig]]:
    """What the final fit trains: BOHB's incumbent, else DARTS' genotype, else the default network.

    An incumbent whose validation macro-F1 is below `val_macro_f1_to_beat` (the model delivered so
    far) is passed over: on short phases BOHB can end with nothing better than near-chance trials.
    Returns (source name, network spec, epochs -> TrainConfig).
    """
    if (bohb is not None and bohb.incumbent_config is not None
            and bohb.incumbent_val_macro_f1 >= val_macro_f1_to_beat):
        config = bohb.incumbent_config
        spec = config_to_network_spec(config, darts=None if baseline else darts, in_channels=data.in_channels,
                                      n_classes=data.n_classes, image_side=data.image_side,
                                      ops=darts.ops if darts is not None else TEMPLATE_OPS)
        return "final fit of the BOHB incumbent", spec, lambda epochs: config_to_train_config(config, epochs, seed)
    genotype = darts.genotype if darts is not None and not baseline else DEFAULT_GENOTYPE
    source = "final fit of the DARTS genotype" if genotype is not DEFAULT_GENOTYPE else "final fit of the default network"
    spec = network_spec(data, genotype)
    return source, spec, lambda epochs: default_train_config(epochs=epochs, batch_size=data.batch_size,
                                                             baseline=baseline, seed=seed)


def fit_for_the_time_left(source: str, spec: NetworkSpec, config_for: Callable[[int], TrainConfig], data: RunData,
                          time_left: TimeLeft, *, log: Callable[[str], None]):
    """Train `spec` with as many epochs as fit; yield each finished candidate.

    The epoch count comes from a timed probe. When a round ends early (the probe overestimated,
    e.g. on a machine whose load dropped), the time left is used, for up to MAX_FINAL_ROUNDS rounds:
    if the measured epoch time allows at least twice the epochs, training starts again from scratch
    with the longer schedule; otherwise, with at least MIN_FINE_TUNE_EPOCHS left, the best weights
    are fine-tuned at a tenth of the learning rate on a cosine schedule.
    """
    batch_size = config_for(1).batch_size
    epoch_s = measure_epoch_seconds(build_network(spec), data, batch_size)
    last_epochs, best = 0, None
    for round_index in range(MAX_FINAL_ROUNDS):
        epochs = epochs_that_fit(time_left(), epoch_s, low=0)
        if round_index == 0 or epochs >= 2 * last_epochs:
            name, config, init_state = source, config_for(max(1, epochs)), None
        elif epochs >= MIN_FINE_TUNE_EPOCHS:
            base = config_for(epochs)
            name, init_state = f"{source} (fine-tuned)", best.state_dict
            config = dataclasses.replace(base, lr=base.lr / 10, schedule="cosine", surrogate_beta0=0.0)
        else:
            return
        log(f"{name}: ~{epoch_s:.2f}s/epoch, {config.epochs} epochs planned")
        candidate, result = train_candidate(name, spec, config, data, time_left, log=log, init_state=init_state)
        yield candidate
        if best is None or candidate.val_macro_f1 > best.val_macro_f1:
            best = candidate
        if result.stopped_by_deadline or result.epochs_done == 0:
            return
        epoch_s, last_epochs = result.seconds / result.epochs_done, config.epochs


def _random_subset(data: TensorData, n: int, seed: int) -> TensorData:
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(data), generator=generator)[:max(1, n)].to(data.x.device)
    return TensorData(x=data.x[keep], y=None if data.y is None else data.y[keep])


def network_spec(data: RunData, genotype: Genotype, *, n_cells: int = 3, base_channels: int = 16) -> NetworkSpec:
    """A stacked network for this data from a genotype, with a linear head (see first_model_spec)."""
    return NetworkSpec(genotype=genotype, in_channels=data.in_channels, n_classes=data.n_classes,
                       image_side=data.image_side, n_cells=n_cells, base_channels=base_channels,
                       head_hidden=(), dropout=0.0)


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
    return dataclasses.replace(data, train=_random_subset(data.train, n_train, seed)), scaled


def train_first_model(data: RunData, time_left: TimeLeft, *, baseline: bool, seed: int,
                      log: Callable[[str], None]) -> Candidate:
    """The first model: the default network for the phase's time (on a subset, see shrink_to_fit)."""
    spec = first_model_spec(data)
    model = build_network(spec)
    epoch_s = measure_epoch_seconds(model, data, data.batch_size)
    data, epoch_s = shrink_to_fit(data, epoch_s, time_left(), seed=seed, what="first model", log=log)
    batch_size = batch_for_steps(len(data.train), epochs_that_fit(time_left(), epoch_s), data.batch_size)
    if batch_size != data.batch_size:   # small batches cost more per image (2x at 16 on 2 CPU cores): time them
        epoch_s = measure_epoch_seconds(model, data, batch_size)
        data, epoch_s = shrink_to_fit(data, epoch_s, time_left(), seed=seed, what="first model", log=log)
    epochs = epochs_that_fit(time_left(), epoch_s)
    log(f"first model: ~{epoch_s:.2f}s/epoch, {epochs} epochs of batch {batch_size} planned")
    config = default_train_config(epochs=epochs, batch_size=batch_size, baseline=baseline, seed=seed)
    candidate, _ = train_candidate("first model", spec, config, data, time_left, log=log)
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


def default_train_config(*, epochs: int, batch_size: int, baseline: bool, seed: int) -> TrainConfig:
    """Training settings used where no search chose them: AdamW + OneCycle; focal loss for ours.

    Crops but no flips: flips destroy digits and characters (BOHB searches `flip` per data set).
    """
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=3e-3, weight_decay=5e-4,
                       optimizer="adamw", schedule="onecycle",
                       loss="ce" if baseline else "focal", focal_gamma=3.0, class_weight_smoothing=0.8,
                       augment=True, flip=False, seed=seed)



__all__ = ["RunData", "measure_epoch_seconds", "epochs_that_fit", "train_candidate", "majority_candidate",
           "first_model_spec", "default_train_config", "search_architecture", "network_spec",
           "search_hyperparameters", "final_choice", "fit_for_the_time_left"]
