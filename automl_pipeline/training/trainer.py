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
from .losses import LOSS_KINDS, make_loss
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
    focal_gamma: float = 3.0
    class_weight_smoothing: float = 0.8
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
      epochs trained with surrogate beta 0 (see train_model for the deadline fallback);
      0.0 / 0 when nothing was evaluated (val None, or no time for any evaluation).
    history: one dict per (possibly partial) epoch: epoch, train_loss, val_macro_f1,
      val_accuracy (None when not evaluated), seconds, batches, partial, batch_size,
      beta (the surrogate beta the epoch trained with; 0.0 when off).
    state_dict: CPU copy of the best-by-val weights when any evaluation ran, else the last.
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


def surrogate_beta(beta0: float, epoch: int, zero_epoch: int) -> float:
    """The DARTS- surrogate-skip weight of 0-based `epoch`: linear from beta0 at epoch 0 to exactly 0
    at `zero_epoch` and 0 after (0 throughout when zero_epoch <= 0). The one schedule of the package:
    training decays to 0 at half its epochs (train_model), DARTS over its planned epochs (run_darts)."""
    return 0.0 if zero_epoch <= 0 else beta0 * max(0.0, 1.0 - epoch / zero_epoch)


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


def train_model(model: nn.Module, train: TensorData, val: TensorData | None, config: TrainConfig, *,
                time_left: Callable[[], float], n_classes: int,
                on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
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
      images are retried; below 2 images the error is re-raised. The LR schedule keeps
      its planned length (it advances once per `batch_size` images of the original
      size), and TrainResult.batch_size / oom_halvings / history "batch_size" record it.
    - No host-device sync per batch: the loss is summed on the device and read once per
      epoch; the NaN check between epochs ends is non-blocking (_FiniteWatch).
    - If the model has `set_surrogate_beta` and surrogate_beta0 > 0, beta is set to
      surrogate_beta(beta0, e, epochs // 2) at each epoch start (0 from half the epochs on) and to 0
      for every evaluation and at the end. Only an epoch trained with beta 0 can become the best, so the
      returned weights are judged and used in a state they trained in. If the deadline
      stops training before any beta-0 epoch was evaluated, the last evaluated epoch
      (still evaluated at beta 0) is returned instead.
    - Deadline: before every batch, stop if time_left() < 1.5 x the slowest of the last 10 batch
      times (after an epoch: its synced average) + the validation-pass estimate when val is given. An epoch cut short is still
      evaluated if time_left() covers the validation estimate.
    - Non-finite loss (checked asynchronously every 20 batches and at each epoch end) raises
      FloatingPointError("loss became nan at epoch E").
    The model ends holding the returned state_dict, in its original train/eval mode.
    """
    if train.y is None:
        raise ValueError("train_model needs labelled training data")
    if val is not None and val.y is None:
        raise ValueError("validation data must be labelled")
    n = len(train)
    if n < 2:
        raise ValueError(f"need at least 2 training images, got {n}")
    start = time.perf_counter()
    was_training = model.training
    device = train.x.device
    counts = np.bincount(train.y.cpu().numpy(), minlength=n_classes)
    if counts.size > n_classes:
        raise ValueError(f"training labels go up to {counts.size - 1} but n_classes is {n_classes}")

    configure_device(device)
    base_batch = min(max(config.batch_size, MIN_BATCH), n)
    batch_size, oom_halvings = base_batch, 0
    n_batches = _batches_per_epoch(n, base_batch)
    total_steps = config.epochs * n_batches
    loss_fn = make_loss(config.loss, counts, gamma=config.focal_gamma,
                        smoothing=config.class_weight_smoothing, tau=config.logit_adjust_tau, device=device)
    optimizer = _make_optimizer(model, config, device)
    schedule = _make_schedule(optimizer, config, total_steps)
    schedule_steps = 0
    generator = torch.Generator(device=device).manual_seed(config.seed)
    use_beta = config.surrogate_beta0 > 0 and hasattr(model, "set_surrogate_beta")
    amp = config.precision == "auto"
    channels_last = use_channels_last(device, config.channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    y_val = None if val is None else val.y.cpu().numpy()
    watch = _FiniteWatch(device)

    guard = StepGuard(time_left)               # seconds per training batch: the one deadline rule
    eval_est: float | None = None              # seconds per validation pass (measured)
    history: list[dict] = []
    best_f1, best_epoch, best_beta, best_state = 0.0, 0, 0.0, None
    epochs_done, stopped = 0, False

    def eval_reserve() -> float:
        if val is None:
            return 0.0
        if eval_est is not None:
            return eval_est
        # before the first evaluation: forward only is ~1/3 of a training step; 1.5x for safety
        return 0.0 if guard.estimate is None else guard.estimate * len(val) / batch_size * 0.5

    def train_step(idx: torch.Tensor) -> torch.Tensor:
        xb, yb = train.x[idx], train.y[idx]
        if config.augment:
            xb = augment_batch(xb, generator, flip=config.flip)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, amp):
            logits = model(xb)
        loss = loss_fn(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        return loss.detach()

    for epoch in range(1, config.epochs + 1):
        epoch_t0 = time.perf_counter()
        beta = surrogate_beta(config.surrogate_beta0, epoch - 1, config.epochs // 2) if use_beta else 0.0
        if use_beta:
            model.set_surrogate_beta(beta)
        model.train()
        perm = torch.randperm(n, generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        done = pos = 0
        while n - pos >= MIN_BATCH:                 # a last batch of one image is dropped
            if not guard.allows(eval_reserve()):
                stopped = True
                break
            t0 = time.perf_counter()
            size = min(batch_size, n - pos)
            out_of_memory = False
            try:
                loss = train_step(perm[pos:pos + size])
            except OutOfMemory:
                if batch_size // 2 < MIN_BATCH:
                    raise
                out_of_memory = True             # handled below, once the failed step's frame is gone
            if out_of_memory:
                optimizer.zero_grad(set_to_none=True)
                release_cached_memory(device)
                batch_size //= 2
                oom_halvings += 1
                continue                         # the same images again, in smaller batches
            pos += size
            loss_sum += loss
            done += 1
            if schedule is not None:             # one step per batch of the planned size
                due = min(total_steps, (epoch - 1) * n_batches + -(-pos // base_batch))
                while schedule_steps < due:
                    schedule.step()
                    schedule_steps += 1
            if done % NAN_CHECK_EVERY == 0:
                watch.poll(loss_sum, epoch)
            guard.record(time.perf_counter() - t0)
        if done == 0:
            break
        train_loss = _check_finite(loss_sum, epoch) / done     # syncs: the epoch's work is done
        guard.reset((time.perf_counter() - epoch_t0) / done)     # synced average corrects async timings
        if not stopped:
            epochs_done = epoch
        if use_beta:
            model.set_surrogate_beta(0.0)
        entry = {"epoch": epoch, "train_loss": train_loss, "val_macro_f1": None, "val_accuracy": None,
                 "seconds": 0.0, "batches": done, "partial": n - pos >= MIN_BATCH, "batch_size": batch_size,
                 "beta": beta}
        if val is not None and time_left() >= eval_reserve():
            e0 = time.perf_counter()
            metrics = _evaluate(model, val.x, y_val, n_classes, max(batch_size, 256))
            eval_est = time.perf_counter() - e0
            entry["val_macro_f1"], entry["val_accuracy"] = metrics["macro_f1"], metrics["accuracy"]
            # only a beta-0 epoch can be best; a surrogate-trained one is kept (the deadline
            # fallback) just until the next evaluated epoch replaces it
            if best_state is None or best_beta > 0 or (beta == 0 and metrics["macro_f1"] > best_f1):
                best_f1, best_epoch, best_beta, best_state = metrics["macro_f1"], epoch, beta, _cpu_state(model)
        elif val is not None:
            stopped = True
        entry["seconds"] = time.perf_counter() - epoch_t0
        history.append(entry)
        if on_epoch is not None:
            on_epoch(dict(entry))
        if stopped:
            break

    if use_beta:
        model.set_surrogate_beta(0.0)
    if best_state is None:
        best_state = _cpu_state(model)
    else:
        model.load_state_dict(best_state)
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    model.train(was_training)
    return TrainResult(epochs_done=epochs_done, best_val_macro_f1=float(best_f1), best_epoch=best_epoch,
                       history=history, seconds=time.perf_counter() - start,
                       stopped_by_deadline=stopped, state_dict=best_state,
                       batch_size=batch_size, oom_halvings=oom_halvings)


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
