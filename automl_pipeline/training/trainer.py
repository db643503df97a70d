"""The deadline-aware training loop and batched prediction.

Trains any nn.Module on TensorData that already lives on the training device.
Deadline policy (training.deadline.StepGuard, shared with DARTS): `time_left()` is asked
before every batch; the slowest recent batch time (and one validation pass) decides whether
the next batch can still finish, so no batch is started that is expected to overrun.

GPU path: no host-device synchronisation inside the batch loop. The loss is summed on
the device, the finite-loss check is an asynchronous copy to pinned memory read back
one check later (`_FiniteWatch`), shuffling and augmentation draw from a generator on
the data's device, and the optimizer step is the fused CUDA kernel. Syncs happen once
per epoch (the epoch's loss, the validation pass). Out of memory on a batch halves the
batch size and retries that batch (see train_model).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .device import (OutOfMemory, autocast_context, configure_device, optimizer_kwargs, release_cached_memory,
                     use_channels_last)
from .losses import CLASS_WEIGHT_SMOOTHING, FOCAL_GAMMA, LOSS_KINDS, make_loss
from .metrics import classification_metrics
from .deadline import StepGuard
from .tensors import TensorData, augment_batch

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "none")
PRECISIONS = ("auto", "fp32")   # auto: bf16 autocast on CUDA, fp32 on CPU
NAN_CHECK_EVERY = 20          # batches between (asynchronous, non-blocking) finite-loss checks
MIN_BATCH = 2                 # out of memory below this batch size is re-raised


@dataclass(frozen=True)
class TrainConfig:
    """How to train one network. Validated on construction.

    grad_clip <= 0 disables clipping. `flip` (an addition to the contract) turns the
    horizontal flip of the batch augmentation off, for digits/text-like images.
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU) or "fp32" (no autocast anywhere).
    channels_last: run the model in channels_last memory format; None = the device default
    (training.device.use_channels_last).
    logit_adjust_tau: the tau of loss "logit_adjusted" (see losses.LogitAdjustedLoss).
    """

    epochs: int
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    loss: str = "focal"
    focal_gamma: float = FOCAL_GAMMA
    class_weight_smoothing: float = CLASS_WEIGHT_SMOOTHING
    augment: bool = True
    surrogate_beta0: float = 0.0
    grad_clip: float = 5.0
    seed: int = 0
    flip: bool = True
    precision: str = "auto"
    channels_last: bool | None = None
    logit_adjust_tau: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {LOSS_KINDS}, got {self.loss!r}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")
        if not 0.0 <= self.class_weight_smoothing <= 1.0:
            raise ValueError(f"class_weight_smoothing must be in [0, 1], got {self.class_weight_smoothing}")
        if self.surrogate_beta0 < 0:
            raise ValueError(f"surrogate_beta0 must be >= 0, got {self.surrogate_beta0}")
        if self.logit_adjust_tau < 0:
            raise ValueError(f"logit_adjust_tau must be >= 0, got {self.logit_adjust_tau}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """What a training run produced.

    epochs_done: full epochs completed (a deadline-cut epoch is not counted, but is in history).
    best_val_macro_f1 / best_epoch: best validation macro-F1 and its 1-based epoch among the
      epochs whose last step trained with surrogate beta 0 (see train_model for the fallback);
      0.0 / 0 when nothing was evaluated (val None, or no time for any evaluation).
    history: one dict per (possibly partial) epoch: epoch, train_loss, val_macro_f1,
      val_accuracy (None when not evaluated), seconds, batches, partial, batch_size,
      beta / beta_end (the surrogate beta of the epoch's first / last step; 0.0 when off).
    state_dict: CPU copy of the best-by-val weights when any evaluation ran, else the last.
    last_state_dict: with train_model's keep_last, a CPU copy of the last epoch's weights when that epoch was
      evaluated at beta 0 and is not the best one, else None: a second candidate from the same training
      (phases/final_fit.py).
    batch_size: the batch size in use at the end (smaller than configured after out-of-memory
      halvings); oom_halvings: how many times it was halved.
    """

    epochs_done: int
    best_val_macro_f1: float
    best_epoch: int
    history: list[dict]
    seconds: float
    stopped_by_deadline: bool
    state_dict: dict = field(repr=False)
    batch_size: int = 0
    oom_halvings: int = 0
    last_state_dict: dict | None = field(default=None, repr=False)


def surrogate_beta(beta0: float, t: int, zero_at: float) -> float:
    """The DARTS- surrogate-skip weight at 0-based time `t`: linear from beta0 at t = 0 to exactly 0 at
    `zero_at` and 0 after (0 throughout when zero_at <= 0). The one schedule of the package, in the
    caller's unit: train_model counts optimiser steps (zero at half its planned steps), run_darts
    epochs (zero at its last planned epoch)."""
    return 0.0 if zero_at <= 0 else beta0 * max(0.0, 1.0 - t / zero_at)


def _cpu_state(model: nn.Module) -> dict:
    return {k: (v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v)
            for k, v in model.state_dict().items()}


def _make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    extra = optimizer_kwargs(device)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay, **extra)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **extra)


def _make_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Per-batch LR schedule over all planned steps, or None."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def _batches_per_epoch(n: int, batch_size: int) -> int:
    """Full batches plus the remainder, unless the remainder is a single image (dropped)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 else 0)


def _check_finite(loss_sum: torch.Tensor, epoch: int) -> float:
    """The loss sum as a float (one device sync); FloatingPointError when it is not finite."""
    value = float(loss_sum)
    if not math.isfinite(value):
        raise FloatingPointError(f"loss became {'nan' if math.isnan(value) else 'inf'} at epoch {epoch}")
    return value


class _FiniteWatch:
    """Finite-loss check without stalling the device.

    `poll` queues a copy of isfinite(loss_sum) into pinned host memory (non-blocking on
    CUDA, marked by an event) and reads the previous copy only once its event says it
    has landed, so a NaN is caught a check or two later, never by waiting. On CPU the copy
    is immediate and read at once. A failed check does the one synced `_check_finite` for
    the error message.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.flag = torch.ones((), dtype=torch.bool, pin_memory=self.cuda)
        self.view = self.flag.numpy()              # host view: reading it is no torch call
        self.event = torch.cuda.Event() if self.cuda else None
        self.pending = False

    def _read(self, loss_sum: torch.Tensor, epoch: int) -> None:
        self.pending = False
        if not bool(self.view):
            _check_finite(loss_sum, epoch)
            raise FloatingPointError(f"loss became nan at epoch {epoch}")   # finite again: cannot happen

    def poll(self, loss_sum: torch.Tensor, epoch: int) -> None:
        if self.pending and self.event.query():
            self._read(loss_sum, epoch)
        if not self.pending:
            self.flag.copy_(torch.isfinite(loss_sum), non_blocking=self.cuda)
            self.pending = True
            if self.cuda:
                self.event.record()
            else:
                self._read(loss_sum, epoch)


def _evaluate(model: nn.Module, x: torch.Tensor, y_true: np.ndarray, n_classes: int, batch_size: int) -> dict:
    return classification_metrics(y_true, predict(model, x, batch_size=batch_size), n_classes)


def _class_counts(train: TensorData, val: TensorData | None, n_classes: int) -> np.ndarray:
    """Training-set class counts (n_classes,), after checking the data train_model needs."""
    if train.y is None:
        raise ValueError("train_model needs labelled training data")
    if val is not None and val.y is None:
        raise ValueError("validation data must be labelled")
    if len(train) < 2:
        raise ValueError(f"need at least 2 training images, got {len(train)}")
    counts = np.bincount(train.y.cpu().numpy(), minlength=n_classes)
    if counts.size > n_classes:
        raise ValueError(f"training labels go up to {counts.size - 1} but n_classes is {n_classes}")
    return counts


class _Steps:
    """The optimiser steps of one run: loss, optimizer, LR schedule, surrogate beta, batch size.

    Steps are counted in batches of the configured size (`base_batch`): step k of epoch e (1-based)
    is (e - 1) * n_batches + k. The LR schedule and the surrogate beta follow that count, so both keep
    their planned length when out of memory halves the batch in use (`batch_size`).
    """

    def __init__(self, model: nn.Module, train: TensorData, config: TrainConfig, counts: np.ndarray):
        self.model, self.train, self.config = model, train, config
        self.device = device = train.x.device
        configure_device(device)
        self.base_batch = min(max(config.batch_size, MIN_BATCH), len(train))
        self.batch_size, self.oom_halvings = self.base_batch, 0
        self.n_batches = _batches_per_epoch(len(train), self.base_batch)
        self.total = config.epochs * self.n_batches
        self.loss_fn = make_loss(config.loss, counts, gamma=config.focal_gamma,
                                 smoothing=config.class_weight_smoothing, tau=config.logit_adjust_tau, device=device)
        self.optimizer = _make_optimizer(model, config, device)
        self.schedule = _make_schedule(self.optimizer, config, self.total)
        self.schedule_steps = 0
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.use_beta = config.surrogate_beta0 > 0 and hasattr(model, "set_surrogate_beta")
        self.beta_zero_step = max(1, self.total // 2)   # one planned step: beta0 on it (never 0 in training)
        self.beta: float | None = None                  # the beta last given to the model
        self.amp = config.precision == "auto"
        self.channels_last = use_channels_last(device, config.channels_last)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.watch = _FiniteWatch(device)

    def step_index(self, epoch: int, pos: int) -> int:
        """The planned step that trains images pos.. of 1-based `epoch`."""
        return (epoch - 1) * self.n_batches + pos // self.base_batch

    def set_beta(self, beta: float) -> None:
        """Give the model this surrogate beta (when it has one and the value changed)."""
        if self.use_beta and beta != self.beta:
            self.model.set_surrogate_beta(beta)
            self.beta = beta

    def set_step_beta(self, step: int) -> float:
        """The beta of a planned step (surrogate_beta: beta0 -> 0 at half the steps), set on the model."""
        beta = surrogate_beta(self.config.surrogate_beta0, step, self.beta_zero_step) if self.use_beta else 0.0
        self.set_beta(beta)
        return beta

    def advance_schedule(self, epoch: int, pos: int) -> None:
        """Step the LR schedule once per planned step begun so far (images 0..pos of `epoch` done)."""
        if self.schedule is None:
            return
        due = min(self.total, (epoch - 1) * self.n_batches + -(-pos // self.base_batch))
        while self.schedule_steps < due:
            self.schedule.step()
            self.schedule_steps += 1

    def run(self, idx: torch.Tensor) -> torch.Tensor | None:
        """One optimiser step on train[idx]: the loss (on the device), or None after out of memory,
        which halves the batch size (the caller retries the same images); re-raised below MIN_BATCH."""
        try:
            return self._step(idx)
        except OutOfMemory:
            if self.batch_size // 2 < MIN_BATCH:
                raise
        # handled here, once the failed step's frame is gone
        self.optimizer.zero_grad(set_to_none=True)
        release_cached_memory(self.device)
        self.batch_size //= 2
        self.oom_halvings += 1
        return None

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        config = self.config
        xb, yb = self.train.x[idx], self.train.y[idx]
        if config.augment:
            xb = augment_batch(xb, self.generator, flip=config.flip)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.amp):
            logits = self.model(xb)
        loss = self.loss_fn(logits.float(), yb)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, config.grad_clip)
        self.optimizer.step()
        return loss.detach()


@dataclass
class _EpochPass:
    """What one pass over the training data did (train_loss still on the device)."""

    loss_sum: torch.Tensor
    batches: int
    images: int
    cut: bool            # the deadline stopped it
    beta: float          # surrogate beta of its first and last step
    beta_end: float


def _train_epoch(steps: _Steps, epoch: int, guard: StepGuard, reserve: Callable[[], float]) -> _EpochPass:
    """One shuffled pass over the training data, a batch at a time while the guard allows it (with
    `reserve()` seconds kept back for the validation pass). A last batch of one image is dropped."""
    n = len(steps.train)
    perm = torch.randperm(n, generator=steps.generator, device=steps.device)
    loss_sum = torch.zeros((), device=steps.device)
    done = pos = 0
    first_beta = beta = steps.set_step_beta(steps.step_index(epoch, 0))
    while n - pos >= MIN_BATCH:
        if not guard.allows(reserve()):
            return _EpochPass(loss_sum, done, pos, True, first_beta, beta)
        t0 = time.perf_counter()
        beta = steps.set_step_beta(steps.step_index(epoch, pos))
        size = min(steps.batch_size, n - pos)
        loss = steps.run(perm[pos:pos + size])
        if loss is None:
            continue                             # out of memory: the same images, in smaller batches
        pos += size
        loss_sum += loss
        done += 1
        steps.advance_schedule(epoch, pos)
        if done % NAN_CHECK_EVERY == 0:
            steps.watch.poll(loss_sum, epoch)
        guard.record(time.perf_counter() - t0)
    return _EpochPass(loss_sum, done, pos, False, first_beta, beta)


class _Validation:
    """The validation pass and the seconds to keep for it (measured once it ran)."""

    def __init__(self, val: TensorData | None, n_classes: int):
        self.val, self.n_classes = val, n_classes
        self.y = None if val is None else val.y.cpu().numpy()
        self.seconds: float | None = None

    def reserve(self, step_seconds: float | None, batch_size: int) -> float:
        if self.val is None:
            return 0.0
        if self.seconds is not None:
            return self.seconds
        # before the first evaluation: forward only is ~1/3 of a training step; 1.5x for safety
        return 0.0 if step_seconds is None else step_seconds * len(self.val) / batch_size * 0.5

    def evaluate(self, model: nn.Module, batch_size: int) -> dict:
        t0 = time.perf_counter()
        metrics = _evaluate(model, self.val.x, self.y, self.n_classes, max(batch_size, 256))
        self.seconds = time.perf_counter() - t0
        return metrics


@dataclass
class _Best:
    """The best evaluated epoch. Only an epoch whose last step trained with beta 0 can be best; one
    trained with the surrogate skip is kept (the deadline fallback) just until the next evaluated
    epoch replaces it."""

    f1: float = 0.0
    epoch: int = 0
    beta: float = 0.0
    state: dict | None = None

    def offer(self, model: nn.Module, epoch: int, f1: float, beta_end: float) -> None:
        if self.state is None or self.beta > 0 or (beta_end == 0 and f1 > self.f1):
            self.f1, self.epoch, self.beta, self.state = f1, epoch, beta_end, _cpu_state(model)


def train_model(model: nn.Module, train: TensorData, val: TensorData | None, config: TrainConfig, *,
                time_left: Callable[[], float], n_classes: int,
                on_epoch: Callable[[dict], None] | None = None, keep_last: bool = False) -> TrainResult:
    """Train `model` in place on `train` (data and model on the same device) until
    config.epochs are done or the deadline says stop.

    - Loss from make_loss(config.loss, training-set class counts); AdamW or SGD (nesterov,
      momentum 0.9); OneCycle / cosine schedule stepped per batch; gradient clipping;
      bf16 autocast on CUDA only (precision="auto"); fused optimizer kernels on CUDA;
      channels_last per config.channels_last / the device default; seeded shuffling and
      augmentation (config.seed, a generator on the data's device).
    - batch_size is clamped to [2, N]; a last batch of one image is dropped (BatchNorm
      cannot train on it) - shuffling changes which image each epoch.
    - Out of memory (torch.OutOfMemoryError) on a batch: gradients are dropped, the CUDA
      cache is released, the batch size is halved for the rest of the run and the same
      images are retried; below 2 images the error is re-raised. The LR schedule and the
      surrogate beta keep their planned length (they advance once per `batch_size` images of
      the original size), and TrainResult.batch_size / oom_halvings / history "batch_size" record it.
    - No host-device sync per batch: the loss is summed on the device and read once per
      epoch; the NaN check between epochs ends is non-blocking (_FiniteWatch).
    - If the model has `set_surrogate_beta` and surrogate_beta0 > 0, beta is set per optimiser step:
      surrogate_beta(beta0, step, max(1, S // 2)) over the S planned steps, so it is beta0 on the first
      step of every run (a fractional-epoch BOHB trial too) and exactly 0 from half the steps on; it is
      set to 0 for every evaluation and at the end. An epoch counts as trained with beta 0 when its last
      step had beta 0, and only such an epoch can become the best, so the returned weights are judged
      and used in the state they ended training in (earlier steps of that epoch may have had beta > 0).
      If the deadline stops training before any beta-0 epoch was evaluated, the last evaluated epoch
      (still evaluated at beta 0) is returned instead; so is the one epoch of a one-step run.
    - Deadline: before every batch, stop if time_left() < 1.5 x the slowest of the last 10 batch
      times (after an epoch: its synced average) + the validation-pass estimate when val is given.
      An epoch cut short is still evaluated if time_left() covers the validation estimate.
    - Non-finite loss (checked asynchronously every 20 batches and at each epoch end) raises
      FloatingPointError("loss became nan at epoch E").
    - keep_last: also return the last epoch's weights when they are not the best (TrainResult.last_state_dict);
      off, no copy is made (BOHB trials, bag folds and timing probes never read them).
    The model ends holding the returned state_dict, in its original train/eval mode.
    """
    counts = _class_counts(train, val, n_classes)
    start, was_training = time.perf_counter(), model.training
    steps = _Steps(model, train, config, counts)
    guard = StepGuard(time_left)               # seconds per training batch: the one deadline rule
    validation = _Validation(val, n_classes)
    best, history = _Best(), []
    epochs_done, stopped = 0, False

    def reserve() -> float:
        return validation.reserve(guard.estimate, steps.batch_size)

    for epoch in range(1, config.epochs + 1):
        epoch_t0 = time.perf_counter()
        model.train()
        trained = _train_epoch(steps, epoch, guard, reserve)
        stopped = trained.cut
        if trained.batches == 0:
            break
        train_loss = _check_finite(trained.loss_sum, epoch) / trained.batches  # syncs: the epoch's work is done
        guard.reset((time.perf_counter() - epoch_t0) / trained.batches)      # synced average corrects async timings
        if not stopped:
            epochs_done = epoch
        steps.set_beta(0.0)
        entry = {"epoch": epoch, "train_loss": train_loss, "val_macro_f1": None, "val_accuracy": None,
                 "seconds": 0.0, "batches": trained.batches, "partial": len(train) - trained.images >= MIN_BATCH,
                 "batch_size": steps.batch_size, "beta": trained.beta, "beta_end": trained.beta_end}
        if val is not None and time_left() >= reserve():
            metrics = validation.evaluate(model, steps.batch_size)
            entry["val_macro_f1"], entry["val_accuracy"] = metrics["macro_f1"], metrics["accuracy"]
            best.offer(model, epoch, metrics["macro_f1"], trained.beta_end)
        elif val is not None:
            stopped = True                       # no time left to judge another epoch
        entry["seconds"] = time.perf_counter() - epoch_t0
        history.append(entry)
        if on_epoch is not None:
            on_epoch(dict(entry))
        if stopped:
            break

    last = history[-1] if history else None
    keep_last = (keep_last and best.state is not None and last is not None and last["val_macro_f1"] is not None
                 and last["beta_end"] == 0 and last["epoch"] != best.epoch)
    last_state = _cpu_state(model) if keep_last else None
    state = _finish(model, steps, best, was_training)
    return TrainResult(epochs_done=epochs_done, best_val_macro_f1=float(best.f1), best_epoch=best.epoch,
                       history=history, seconds=time.perf_counter() - start, stopped_by_deadline=stopped,
                       state_dict=state, batch_size=steps.batch_size, oom_halvings=steps.oom_halvings,
                       last_state_dict=last_state)


def _finish(model: nn.Module, steps: _Steps, best: _Best, was_training: bool) -> dict:
    """Leave the model at beta 0, holding the best state (or its last one, returned as a CPU copy when
    nothing was evaluated), in contiguous format and its original train/eval mode."""
    if steps.use_beta:
        model.set_surrogate_beta(0.0)
    if best.state is None:
        state = _cpu_state(model)
    else:
        state = best.state
        model.load_state_dict(state)
    if steps.channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.train(was_training)
    return state


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Float32 logits for all of x, in eval mode (bf16 autocast on CUDA); the model's mode
    is restored. Out of memory on a chunk halves the chunk size and retries it."""
    was_training = model.training
    model.eval()
    batch_size = max(1, batch_size)
    try:
        outs, i = [], 0
        with autocast_context(x.device):
            while i < x.shape[0]:
                out_of_memory = False
                try:
                    outs.append(model(x[i:i + batch_size]).float())
                except OutOfMemory:
                    if batch_size == 1:
                        raise
                    out_of_memory = True
                if out_of_memory:
                    release_cached_memory(x.device)
                    batch_size //= 2
                    continue
                i += batch_size
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("cannot predict on an empty tensor")
    return torch.cat(outs)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Class indices, int64 (N,)."""
    return _logits(model, x, batch_size).argmax(dim=1).cpu().numpy().astype(np.int64)


def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Softmax probabilities, float32 (N, n_classes)."""
    return torch.softmax(_logits(model, x, batch_size), dim=1).cpu().numpy().astype(np.float32)
