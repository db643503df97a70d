"""k-fold bagging of the final choice (AutoGluon's bagging): the training and validation images are pooled
and cut into k stratified folds; fold model j trains on the other k - 1 folds and is validated (its best
epoch chosen) on fold j; the bag averages the k models' probabilities. Its out-of-fold predictions score
every pooled image, not only the ~100 of the validation split, and on the validation images they are
predictions of models that never trained on them, so the bag competes with single models (and enters the
ensemble) on the same validation images. A fold model's best epoch is chosen on its own fold (AutoGluon's
early stopping does the same): that flatters the out-of-fold score a little, as a single model's best
epoch flatters its validation score. The held-out test split is never part of any fold.

When to bag is the plan's call (budget.plan.bag_folds); this module only trains and combines.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from automl_pipeline.delivery import Candidate
from automl_pipeline.ensemble import Ensemble
from automl_pipeline.phases import ensemble
from automl_pipeline.phases.common import RunData, TimeLeft, train_candidate
from automl_pipeline.search_space import NetworkSpec
from automl_pipeline.training import TensorData, TrainConfig
from automl_pipeline.training.metrics import macro_f1
from automl_pipeline.training.planning import epochs_that_fit
from budget.plan import bag_seconds_needed

KIND = "bag"     # model.pt / report.json final.architecture.kind of a bag
# Rounds of repeated bagging at most (each a new stratified partition; AutoGluon repeats up to 20).
MAX_REPEATS = 3


def fold_holdouts(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out indices of each of `folds` stratified folds of `labels` (sorted; together all indices once)."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [np.sort(held) for _, held in splitter.split(np.zeros(len(labels)), labels)]


def _subset(data: TensorData, index: np.ndarray) -> TensorData:
    where = torch.as_tensor(index, device=data.x.device)
    return TensorData(x=data.x[where], y=data.y[where])


def fit_bag(source: str, description: str, spec: NetworkSpec, config_for: Callable[[int], TrainConfig],
            data: RunData, time_left: TimeLeft, *, folds: int, fold_epoch_s: float, seed: int,
            log: Callable[[str], None], max_repeats: int = MAX_REPEATS) -> tuple[Candidate | None, dict]:
    """Train `folds` fold models of `spec`, each in an equal share of what is left when it starts; while the
    time left holds another round (budget.plan.bag_seconds_needed at the measured epoch time), repeat
    on a new stratified partition (repeated bagging: fold models are capped at 200 epochs, so long runs would
    otherwise leave the final fit's time unused), up to `max_repeats` rounds.

    Returns (the bag as one candidate, or None when a fold model of the first round trained no epoch; the
    report's `bagging` facts: rounds, out-of-fold macro-F1 over all pooled images (probabilities averaged
    over the rounds), each fold model's epochs and score on its fold).
    fold_epoch_s: seconds of one epoch of `spec` on k - 1 folds (budget.plan.fold_epoch_seconds).
    """
    pooled = TensorData(x=torch.cat([data.train.x, data.val.x]), y=torch.cat([data.train.y, data.val.y]))
    labels = pooled.y.cpu().numpy()
    oof_sum = np.zeros((len(labels), data.n_classes), dtype=np.float64)
    members: list[Candidate] = []
    facts: dict = {"folds": folds, "repeats": 0, "fold_models": []}
    for repeat in range(max_repeats):
        if repeat > 0 and time_left() < bag_seconds_needed(fold_epoch_s, folds):
            break
        round_members, oof, seconds_per_epoch = _one_round(
            source, description, spec, config_for, data, pooled, labels, time_left, folds=folds,
            fold_epoch_s=fold_epoch_s, seed=seed + repeat, label=f"round {repeat + 1}, " if repeat else "",
            rows=facts["fold_models"], log=log)
        if oof is None:
            facts["reason"] = f"a fold model of round {repeat + 1} trained no epoch in its share of the time"
            if repeat == 0:
                return None, facts
            break
        members += round_members
        oof_sum += oof
        facts["repeats"] = repeat + 1
        fold_epoch_s = seconds_per_epoch
    oof_probs = (oof_sum / facts["repeats"]).astype(np.float32)
    n_train = len(data.train)
    facts["oof_macro_f1"] = round(macro_f1(labels, oof_probs.argmax(axis=1), data.n_classes), 4)
    val_probs = oof_probs[n_train:]
    val_f1 = macro_f1(labels[n_train:], val_probs.argmax(axis=1), data.n_classes)
    facts["val_macro_f1"] = round(val_f1, 4)
    rounds = f" x {facts['repeats']}" if facts["repeats"] > 1 else ""
    return _bag_candidate(members, source, f"{folds}-fold{rounds} bag of the {description}", val_probs, val_f1), facts


def _one_round(source, description, spec, config_for, data: RunData, pooled: TensorData, labels: np.ndarray,
               time_left: TimeLeft, *, folds: int, fold_epoch_s: float, seed: int, label: str, rows: list,
               log) -> tuple[list[Candidate], np.ndarray | None, float]:
    """One partition's fold models: (them, their out-of-fold probabilities or None when one trained no
    epoch, the measured seconds per epoch); appends one report row per fold model to `rows`."""
    oof = np.zeros((len(labels), data.n_classes), dtype=np.float32)
    members, seconds, epochs_done = [], 0.0, 0
    for j, held in enumerate(fold_holdouts(labels, folds, seed)):
        slot_end = time.monotonic() + time_left() / (folds - j)

        def fold_left() -> float:
            return max(0.0, min(time_left(), slot_end - time.monotonic()))

        fit = np.setdiff1d(np.arange(len(labels)), held)
        fold_data = dataclasses.replace(data, train=_subset(pooled, fit), val=_subset(pooled, held),
                                        train_counts=np.bincount(labels[fit], minlength=data.n_classes))
        epochs = epochs_that_fit(fold_left(), fold_epoch_s)
        name = f"{description}, {label}fold {j + 1}/{folds}"
        log(f"{name}: ~{fold_epoch_s:.2f}s/epoch, {epochs} epochs planned")
        candidate, result = train_candidate(source, spec, config_for(epochs), fold_data, fold_left, log=log,
                                            description=name)
        rows.append({"seed": seed, "fold": j + 1, "epochs": result.epochs_done, "n_train": int(fit.size),
                     "n_held": int(held.size), "held_macro_f1": round(candidate.val_macro_f1, 4)})
        if result.epochs_done == 0:
            return members, None, fold_epoch_s
        oof[held] = candidate.val_probs
        members.append(candidate)
        seconds, epochs_done = seconds + result.seconds, epochs_done + result.epochs_done
    return members, oof, seconds / max(1, epochs_done)


def _bag_candidate(members: list[Candidate], source: str, description: str, val_probs: np.ndarray,
                   val_f1: float) -> Candidate:
    """The bag as one candidate: an equal-weight mixture of its fold models, out-of-fold probabilities on
    validation, one architecture and config per member in model.pt (kind KIND)."""
    weights = tuple(1.0 / len(members) for _ in members)
    return ensemble.mixture_candidate(members, Ensemble(weights, 0.0), None, kind=KIND, source=source,
                                      description=description, val_probs=val_probs, val_f1=val_f1,
                                      config=members[0].config, architecture={"models": len(members)})
