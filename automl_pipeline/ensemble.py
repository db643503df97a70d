"""Greedy ensemble selection over stored validation probabilities (Caruana et al. 2004, the method
behind AutoGluon's WeightedEnsemble and auto-sklearn's ensemble) with post-hoc logit adjustment.

Pure functions of probabilities and labels: nothing here trains or reads a file. A candidate is its
probabilities on the validation split; an ensemble is a weight per candidate plus a logit-adjustment
strength tau (probabilities divided by the class prior ** tau).

Whether the ensemble is delivered is the caller's rule (phases/ensemble.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from automl_pipeline.training.metrics import macro_f1

# Rounds of greedy selection with replacement (Caruana et al. use 20-100 on larger libraries).
SELECTION_ROUNDS = 25
# The logit-adjustment strengths tried on validation (0 = none); Menon et al. 2021 use tau = 1.
TAU_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
# Logit adjustment is tried only on training data at least this imbalanced (largest / smallest class).
IMBALANCE_FOR_ADJUSTMENT = 2.0


@dataclass(frozen=True)
class Ensemble:
    """weights: one per candidate, summing to 1 (0 for a candidate not selected); tau: logit adjustment."""

    weights: tuple[float, ...]
    tau: float = 0.0

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(i for i, weight in enumerate(self.weights) if weight > 0)


def combine(probs: Sequence[np.ndarray], ensemble: Ensemble, prior: np.ndarray | None = None) -> np.ndarray:
    """The ensemble's probabilities: the weighted mean of the members', divided by prior ** tau and renormalised."""
    mixed = sum(weight * np.asarray(p, dtype=np.float64) for weight, p in zip(ensemble.weights, probs) if weight > 0)
    if ensemble.tau > 0:
        if prior is None:
            raise ValueError("an ensemble with tau > 0 needs the class prior")
        mixed = mixed / np.power(np.maximum(prior, 1e-12), ensemble.tau)
    return mixed / np.maximum(mixed.sum(axis=1, keepdims=True), 1e-12)


def greedy_weights(probs: Sequence[np.ndarray], labels: np.ndarray, n_classes: int, *,
                   rounds: int = SELECTION_ROUNDS) -> tuple[float, ...]:
    """Caruana's selection with replacement: each round adds the candidate that most raises macro-F1 of the
    running mean (ties: the earlier candidate); the weights are the counts at the best round."""
    if not probs:
        raise ValueError("greedy_weights needs at least one candidate")
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probs])      # (M, N, K)
    counts = np.zeros(len(probs), dtype=np.int64)
    total = np.zeros_like(stack[0])
    best_score, best_counts = -1.0, None
    for _ in range(rounds):
        scores = [macro_f1(labels, (total + stack[i]).argmax(axis=1), n_classes) for i in range(len(probs))]
        pick = int(np.argmax(scores))
        counts[pick] += 1
        total += stack[pick]
        if scores[pick] > best_score:
            best_score, best_counts = scores[pick], counts.copy()
    return tuple(float(c) / float(best_counts.sum()) for c in best_counts)


def choose_tau(probs: np.ndarray, labels: np.ndarray, n_classes: int, prior: np.ndarray,
               grid: Sequence[float] = TAU_GRID) -> float:
    """The logit-adjustment strength with the best macro-F1 on (probs, labels); ties go to the smaller tau."""
    scores = [macro_f1(labels, combine([probs], Ensemble((1.0,), tau), prior).argmax(axis=1), n_classes)
              for tau in grid]
    return float(grid[int(np.argmax(scores))])


def select(probs: Sequence[np.ndarray], labels: np.ndarray, n_classes: int, prior: np.ndarray, *,
           adjust: bool) -> Ensemble:
    """Greedy weights, then (when `adjust`) the tau that suits the weighted mean."""
    weights = greedy_weights(probs, labels, n_classes)
    if not adjust:
        return Ensemble(weights)
    return Ensemble(weights, choose_tau(combine(probs, Ensemble(weights)), labels, n_classes, prior))


def best_single(probs: Sequence[np.ndarray], labels: np.ndarray, n_classes: int) -> int:
    """The index of the candidate with the best macro-F1 (ties: the earlier one)."""
    return int(np.argmax([macro_f1(labels, np.asarray(p).argmax(axis=1), n_classes) for p in probs]))


def should_adjust(train_counts: np.ndarray) -> bool:
    """Logit adjustment is tried when the training classes are imbalanced (IMBALANCE_FOR_ADJUSTMENT)."""
    counts = np.asarray(train_counts, dtype=np.float64)
    counts = counts[counts > 0]
    return counts.size > 1 and counts.max() / counts.min() >= IMBALANCE_FOR_ADJUSTMENT
