"""What the phases share: the run's data as tensors, training one candidate network, the default
network and its training settings. No phase logic here."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from automl_pipeline.bohb import config_to_network_spec, config_to_train_config, fixed_hyperparameters
from automl_pipeline.delivery import Candidate
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space import DEFAULT_GENOTYPE, Genotype, NetworkSpec, build_network
from automl_pipeline.training import TensorData, TrainConfig, TrainResult, predict_proba, train_model
from automl_pipeline.training.metrics import macro_f1
from automl_pipeline.training.planning import batch_size_for, measure_epoch_seconds



TimeLeft = Callable[[], float]

# A network the run trains for fewer epochs than this gets the flattening head (search_space.network), one trained
# longer the pooling head. Measured on the default network (benchmarks/head_choice.py, RESULTS.md "The network's
# head"): flattening led at 10 epochs on the RetinaMNIST-shaped set (+0.017, 2 of 3 seeds) and in the 60 s runs
# on the Fashion sets (7-11 epochs; end to end ahead on 5 seeds of 6, level on one, +0.035 held-out macro-F1 on
# average); at 20 epochs it lost on the RetinaMNIST-shaped set on every seed (-0.057 on average; -0.060 at 40),
# while on long-tailed Fashion it still led at 40 (+0.026). 12 is the largest count at which it led on all three.
# BOHB's trials keep the pooling head.
FLATTEN_HEAD_BELOW_EPOCHS = 12


@dataclass
class RunData:
    """The splits as tensors on the training device, plus what the phases need to know about them."""

    train: TensorData
    val: TensorData
    test: TensorData
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
                    init_state: dict | None = None, keep_last: bool = False) -> tuple[Candidate, TrainResult]:
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
                         n_classes=data.n_classes, on_epoch=on_epoch, keep_last=keep_last)
    model.load_state_dict(result.state_dict)
    candidate = model_candidate(source, model, data, flip_tta=config.flip, description=description,
                                architecture=spec.to_json(), config=config.to_json())
    _note_training(candidate, result)
    return candidate, result


def _note_training(candidate: Candidate, result: TrainResult) -> None:
    """The candidate's epochs, training seconds and training images per second (validation passes included)."""
    images_seen = sum(row["batches"] * row["batch_size"] for row in result.history)
    train_s = sum(row["seconds"] for row in result.history)
    candidate.train_images_per_s = images_seen / train_s if train_s > 0 else 0.0
    candidate.epochs, candidate.train_s = result.epochs_done, result.seconds


def last_epoch_candidate(source: str, spec: NetworkSpec, config: TrainConfig, result: TrainResult, data: RunData, *,
                         description: str) -> Candidate | None:
    """The last epoch's weights of a finished training as a candidate of its own ("<description> (last epoch)"),
    or None when train_model kept none (the last epoch was the best, or was not evaluated). Free beside the best
    epoch's: no training, one prediction pass; the ensemble may mix the two. Where the validation split is small
    the best epoch by validation is often a noisy spike and the last one better on held-out (RESULTS.md "Which
    epoch's weights")."""
    if result.last_state_dict is None:
        return None
    model = build_network(spec).to(data.device)
    model.load_state_dict(result.last_state_dict)
    candidate = model_candidate(source, model, data, flip_tta=config.flip, description=f"{description} (last epoch)",
                                architecture=spec.to_json(), config=config.to_json())
    _note_training(candidate, result)
    return candidate


def model_candidate(source: str, model: torch.nn.Module, data: RunData, *, flip_tta: bool, description: str,
                    architecture: dict, config: dict) -> Candidate:
    """A trained model as a candidate: its probabilities on validation, held-out test and the predicted
    images (averaged with the horizontally flipped images' when it was trained with flips), the labels
    they give, its validation macro-F1 and its weights."""
    def probs(x: torch.Tensor) -> np.ndarray:
        p = predict_proba(model, x)
        return (p + predict_proba(model, torch.flip(x, dims=(3,)))) / 2 if flip_tta else p

    val_probs, test_probs = probs(data.val.x), probs(data.test.x)
    predict_probs = test_probs if data.predict is None else probs(data.predict.x)
    val_labels = data.val.y.cpu().numpy()
    return Candidate(
        source=source,
        description=description,
        val_macro_f1=macro_f1(val_labels, val_probs.argmax(axis=1), data.n_classes),
        predict_labels=predict_probs.argmax(axis=1).astype(np.int64),
        test_predictions=test_probs.argmax(axis=1).astype(np.int64),
        val_probs=val_probs, test_probs=test_probs, predict_probs=predict_probs,
        architecture=architecture,
        config={**config, "flip_tta": flip_tta},
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
    )


def network_spec(data: RunData, genotype: Genotype) -> NetworkSpec:
    """A stacked network for this data from a genotype, sized as BOHB's default configuration:
    3 cells from 24 channels, a pooling stem on images of 16 px and more, a linear head (at 24 channels it
    trains 0.77-0.89x the images/s of the plain 3-block CNN on 28x28x1 and 0.75x on 32x32x3: benchmarks/throughput.py,
    RESULTS.md "Throughput")."""
    spec = config_to_network_spec({"n_cells": 3, "base_channels": 24}, darts=None, in_channels=data.in_channels,
                                  n_classes=data.n_classes, image_side=data.image_side)
    return dataclasses.replace(spec, genotype=genotype)


def with_head_for(spec: NetworkSpec, epochs: int) -> NetworkSpec:
    """`spec` with the head for a training of `epochs` epochs (FLATTEN_HEAD_BELOW_EPOCHS)."""
    return dataclasses.replace(spec, head="flatten" if epochs < FLATTEN_HEAD_BELOW_EPOCHS else "pool")


def first_model_spec(data: RunData) -> NetworkSpec:
    """The fixed default network trained first, so that good predictions exist early.

    A linear head: the poster's 64-32-16 MLP head with dropout learned far slower on short budgets
    (digits, 6 epochs: val macro-F1 0.47 with it, 0.96 without).
    """
    return network_spec(data, DEFAULT_GENOTYPE)


# The loss where no search chose it: logit-adjusted cross-entropy (Balanced Softmax, tau 1), which is plain
# cross-entropy on balanced classes. Paired by seed at 60 s against the focal loss it replaced (benchmarks/
# ablation.py, RESULTS.md "The default loss", commit 14d5093): RetinaMNIST-shaped set +0.032/+0.023/+0.018
# held-out macro-F1, balanced 5k Fashion-MNIST +0.000/+0.016/+0.007, long-tailed Fashion-MNIST
# +0.002/-0.002/-0.024 (and +0.000/+0.010/+0.014 in an earlier pairing: no difference there).
DEFAULT_LOSS = "logit_adjusted"


def default_train_config(*, epochs: int, batch_size: int, seed: int,
                         options: SearchOptions = SearchOptions()) -> TrainConfig:
    """Training settings used where no search chose them: AdamW + OneCycle; DEFAULT_LOSS, or the loss
    the search options fix (plain cross-entropy for the baseline).

    Crops but no flips: flips destroy digits and characters (BOHB searches `flip` per data set).
    """
    config = {"lr": 3e-3, "flip": False, "loss": DEFAULT_LOSS, **fixed_hyperparameters(options)}
    return config_to_train_config(config, epochs, seed, batch_size=batch_size)
