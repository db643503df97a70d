"""Helpers of the run's phases (automl_pipeline/phases.py) that the end-to-end tests only see from outside."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from automl_pipeline import phases
from automl_pipeline.training.tensors import random_subset
from automl_pipeline.data import load_dataset, make_splits
from automl_pipeline.pipeline import _to_run_data


@pytest.fixture(scope="module")
def digits() -> phases.RunData:
    dataset = load_dataset(None, max_side=8)
    return _to_run_data(dataset, make_splits(dataset, seed=0), torch.device("cpu"))


def test_batch_for_steps_halves_the_batch_until_enough_steps():
    assert phases.batch_for_steps(5000, 10, 128) == 128                 # plenty of steps: unchanged
    assert phases.batch_for_steps(361, 3, 64) == 16                      # 18 steps at 64, 69 at 16
    assert phases.batch_for_steps(1400, 3, 64) == 64                     # 66 steps at 64
    assert phases.batch_for_steps(1200, 3, 64) == 32                     # 57 at 64, 114 at 32
    assert phases.batch_for_steps(10, 1, 64) == phases.MIN_FIRST_MODEL_BATCH   # never below the floor
    for n, epochs in [(361, 3), (803, 2), (3000, 1)]:
        batch = phases.batch_for_steps(n, epochs, 128)
        steps = epochs * -(-n // batch)
        assert steps >= phases.MIN_FIRST_MODEL_STEPS or batch == phases.MIN_FIRST_MODEL_BATCH
        assert batch == 128 or epochs * -(-n // (2 * batch)) < phases.MIN_FIRST_MODEL_STEPS   # the largest such


def test_a_first_model_on_a_small_subset_learns(digits, one_torch_thread):
    """Three epochs on a 361-image subset, as a 60 s digits run's first model gets: with batch 64 (18
    steps) it stayed at chance (val macro-F1 0.02); the step rule makes it learn."""
    data = dataclasses.replace(digits, train=random_subset(digits.train, 361, 0))
    batch = phases.batch_for_steps(len(data.train), 3, data.batch_size)
    config = phases.default_train_config(epochs=3, batch_size=batch, baseline=False, seed=0)
    candidate, result = phases.train_candidate("first_model", phases.first_model_spec(data), config, data,
                                               lambda: 1e9, log=lambda s: None)
    assert result.epochs_done == 3 and batch == 16
    assert candidate.val_macro_f1 > 0.3
