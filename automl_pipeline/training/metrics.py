"""Predictions -> classification metrics (plain Python numbers, JSON-serialisable)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    """The macro-F1 of `classification_metrics` (mean over the classes present in y_true), in numpy
    alone: the ensemble search scores thousands of weightings with it."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.size == 0:
        return 0.0
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support, predicted, hits = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    present = support > 0
    denominator = support + predicted
    f1 = np.divide(2.0 * hits, denominator, out=np.zeros(n_classes), where=denominator > 0)
    return float(f1[present].mean())


def classification_metrics(y_true, y_pred, n_classes: int) -> dict:
    """Macro-F1 (headline), accuracy, balanced accuracy, per-class F1, confusion matrix.

    A class is scored only where it occurs in y_true: its per-class F1 is None (JSON null,
    "absent") otherwise, and the macro-F1 is the mean over the classes present in y_true
    (sklearn's f1_score with labels=the present classes). Predicting a class absent from
    y_true still costs the recall of the true class. One rule for the held-out test and
    for validation (the search objective), so a class kept out of a split (train-only)
    neither drags a score down nor lifts it. Balanced accuracy is the mean recall over the
    same present classes (sklearn's definition, without its warning). With no labels at
    all every score is 0 and every per-class F1 None.
    Confusion matrix rows are true classes, columns predicted classes (all n_classes).
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} vs {y_pred.size}")
    labels = list(range(n_classes))
    if y_true.size == 0:
        return {"macro_f1": 0.0, "accuracy": 0.0, "balanced_accuracy": 0.0,
                "per_class_f1": [None] * n_classes, "confusion_matrix": [[0] * n_classes for _ in labels]}
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    present = np.flatnonzero(support > 0)
    scored = f1_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    per_class: list[float | None] = [None] * n_classes
    for label, value in zip(present, scored):
        per_class[int(label)] = float(value)
    recall = np.diag(cm)[present] / support[present]
    return {
        "macro_f1": float(np.mean(scored)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(recall.mean()),
        "per_class_f1": per_class,
        "confusion_matrix": [[int(v) for v in row] for row in cm],
    }


def paired_bootstrap_win_rate(y_true, pred_a, pred_b, n_classes: int, *, resamples: int, seed: int,
                              chunk: int = 250) -> float:
    """How often `pred_a` scores a higher macro-F1 than `pred_b` on bootstrap resamples of the same images
    (ties count half): 0.5 when the two are indistinguishable on these images, near 1 when a is better on
    almost any draw of them. Both are scored on each resample (paired), with `macro_f1`'s rule (the mean over
    the classes present in that resample). Vectorised: `chunk` resamples at a time, each a row of counts."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    if y_true.size == 0 or resamples < 1:
        return 0.5
    truth = np.eye(n_classes)[y_true]                                           # (N, K) one-hot
    scores = {}
    rng = np.random.default_rng(seed)
    wins = 0.0
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(y_true.size, np.full(y_true.size, 1.0 / y_true.size),
                                 size=min(chunk, resamples - start)).astype(np.float64)   # (R, N)
        support = counts @ truth
        for name, pred in (("a", pred_a), ("b", pred_b)):
            guessed = np.eye(n_classes)[np.asarray(pred, dtype=np.int64).ravel()]
            hits, predicted = counts @ (truth * guessed), counts @ guessed
            denominator = support + predicted
            f1 = np.divide(2.0 * hits, denominator, out=np.zeros_like(hits), where=denominator > 0)
            present = support > 0
            scores[name] = (f1 * present).sum(axis=1) / present.sum(axis=1)
        wins += float(np.sum(scores["a"] > scores["b"]) + 0.5 * np.sum(scores["a"] == scores["b"]))
    return wins / resamples
