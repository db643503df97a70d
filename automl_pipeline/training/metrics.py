"""Predictions -> classification metrics (plain Python numbers, JSON-serialisable)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score


def classification_metrics(y_true, y_pred, n_classes: int) -> dict:
    """Macro-F1 (headline), accuracy, balanced accuracy, per-class F1, confusion matrix.

    All classes 0..n_classes-1 are scored: a class absent from both y_true and y_pred
    has F1 0 and counts in the macro mean. Balanced accuracy is the mean recall over
    the classes present in y_true (sklearn's definition, without its warning).
    Confusion matrix rows are true classes, columns predicted classes.
    """
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} vs {y_pred.size}")
    labels = list(range(n_classes))
    if y_true.size == 0:
        return {"macro_f1": 0.0, "accuracy": 0.0, "balanced_accuracy": 0.0,
                "per_class_f1": [0.0] * n_classes, "confusion_matrix": [[0] * n_classes for _ in labels]}
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    support = cm.sum(axis=1)
    present = support > 0
    recall = np.diag(cm)[present] / support[present]
    return {
        "macro_f1": float(np.mean(per_class)),
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(recall.mean()),
        "per_class_f1": [float(v) for v in per_class],
        "confusion_matrix": [[int(v) for v in row] for row in cm],
    }
