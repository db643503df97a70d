"""How long an epoch takes and how many fit: the one timing probe every phase plans with."""
from __future__ import annotations

import copy
import dataclasses
import math
import time

import torch

from budget.reserves import PLAN_SHARE

from .tensors import TensorData
from .trainer import TrainConfig, predict, train_model

PROBE_BATCHES = 3


def measure_epoch_seconds(model: torch.nn.Module, train: TensorData, val: TensorData | None, n_classes: int,
                          config: TrainConfig, *, n_batches: int = PROBE_BATCHES) -> float:
    """Seconds for one epoch of `config` over `train` plus one validation pass, timed on a copy of `model`
    in the real loop (train_model: optimiser, augmentation, clipping and loss included): one warm-up
    batch, then `n_batches` timed batches, then one prediction pass over `val`.

    (A bare SGD step without augmentation said 0.19-0.42 s per epoch of digits where train_model's epochs
    took 0.45-1.1 s, so one-cycle schedules planned from it were cut at a third of their length.)
    """
    probe = copy.deepcopy(model)
    n = len(train)
    batch = max(2, min(config.batch_size, n))
    one_epoch = dataclasses.replace(config, epochs=1, batch_size=batch)

    def run(first: int, count: int) -> tuple[float, int]:
        part = TensorData(x=train.x[first:first + count], y=train.y[first:first + count])
        started = time.perf_counter()
        result = train_model(probe, part, None, one_epoch, time_left=lambda: math.inf, n_classes=n_classes)
        return time.perf_counter() - started, sum(h["batches"] for h in result.history)

    run(0, batch)                                        # warm-up: first-call costs
    first = batch if n >= 2 * batch else 0               # tiny sets: time the same images again
    seconds, batches = run(first, min(n - first, n_batches * batch))
    val_s = 0.0
    if val is not None and len(val):
        started = time.perf_counter()
        predict(probe, val.x, batch_size=max(batch, 256))
        val_s = time.perf_counter() - started
    return seconds / max(batches, 1) * math.ceil(n / batch) + val_s


def batch_size_for(n_train: int) -> int:
    """Batch size of every training but DARTS': 64, or 128 from 20,000 training images on. On 2 CPU
    cores 64 costs about as much per image as 128 and gives twice the steps, which short BOHB trials
    need (their smallest budget must hold a few batches)."""
    return 64 if n_train < 20_000 else 128


# The most epochs any one training is planned for.
MAX_EPOCHS = 200


def epochs_that_fit(seconds: float, epoch_seconds: float, *, low: int = 1, high: int = MAX_EPOCHS) -> int:
    """How many epochs fit into PLAN_SHARE of `seconds`, clamped to [low, high]."""
    if epoch_seconds <= 0:
        return high
    return int(max(low, min(high, (PLAN_SHARE * seconds) // epoch_seconds)))
