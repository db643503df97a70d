"""The anytime output: the best model so far, its predictions on disk, replaced atomically."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from automl_pipeline.training.metrics import classification_metrics
from submission import write_model, write_predictions


@dataclass
class Candidate:
    """A finished model offered for delivery.

    predict_labels: class indices for the images predictions.npy is written for.
    test_predictions: class indices for the held-out test images. Only predictions are kept
    here; the held-out labels are compared with them once, by `Candidate.test_metrics`.
    val_probs / test_probs / predict_probs: the softmax probabilities behind those labels (float32
    (N, n_classes); None for the fallback and for a candidate restored by --resume): what the
    final ensemble (automl_pipeline.ensemble) selects on and mixes.
    members: for an ensemble, one {"name", "source", "weight", "val_macro_f1"} per member.
    oof_macro_f1: for a k-fold bag, its out-of-fold macro-F1 over every pooled training and validation image.
    """

    source: str                     # report.json final.source: first_model, bohb_incumbent, ...
    val_macro_f1: float
    predict_labels: np.ndarray
    test_predictions: np.ndarray
    architecture: dict | None = None
    config: dict | None = None
    epochs: int = 0
    train_s: float = 0.0
    state_dict: dict | None = None
    description: str = ""           # for people: "final fit of the BOHB incumbent (fine-tuned)"
    train_images_per_s: float = 0.0
    val_probs: np.ndarray | None = None
    test_probs: np.ndarray | None = None
    predict_probs: np.ndarray | None = None
    members: list[dict] | None = None
    oof_macro_f1: float | None = None

    @property
    def name(self) -> str:
        return self.description or self.source

    def summary(self) -> dict:
        """The report.json `final` section."""
        return {
            "source": self.source,
            "description": self.name,
            "train_images_per_s": round(self.train_images_per_s, 1),
            "architecture": self.architecture,
            "config": self.config,
            "epochs": self.epochs,
            "train_s": round(self.train_s, 3),
            "val_macro_f1": self.val_macro_f1,
            **({"members": self.members} if self.members is not None else {}),
        }

    def test_metrics(self, test_labels: np.ndarray, n_classes: int) -> dict:
        """Metrics on the held-out test. Called only when the report is written, never for a choice."""
        return classification_metrics(test_labels, self.test_predictions, n_classes)


def majority_fallback(train_counts: np.ndarray, val_labels: np.ndarray, *, n_predict: int, n_test: int) -> Candidate:
    """The fallback written before any tensor is made: every image gets the most frequent training class."""
    majority = int(np.argmax(train_counts))
    val_f1 = classification_metrics(val_labels, np.full_like(val_labels, majority), len(train_counts))["macro_f1"]
    return Candidate(
        source="majority_fallback",
        description="majority-class fallback",
        val_macro_f1=float(val_f1),
        predict_labels=np.full(n_predict, majority, dtype=np.int64),
        test_predictions=np.full(n_test, majority, dtype=np.int64),
        config={"majority_class": majority},
    )


def validation_vs_heldout(pool: list[Candidate], test_labels: np.ndarray, n_classes: int) -> dict:
    """What the validation split can tell (report.json `candidates`): every pooled candidate's validation
    and held-out macro-F1 and the Spearman rank correlation between the two (None with fewer than 3
    candidates or constant scores). For the report only: written after every choice was made."""
    from scipy.stats import spearmanr

    rows = [{"name": c.name, "source": c.source, "val_macro_f1": round(c.val_macro_f1, 4),
             "heldout_macro_f1": round(c.test_metrics(test_labels, n_classes)["macro_f1"], 4)} for c in pool]
    val, heldout = [r["val_macro_f1"] for r in rows], [r["heldout_macro_f1"] for r in rows]
    rho = None
    if len(rows) >= 3 and len(set(val)) > 1 and len(set(heldout)) > 1:
        rho = round(float(spearmanr(val, heldout).statistic), 3)
    return {"val_heldout_spearman": rho, "models": rows}


class Delivery:
    """Keeps the best candidate by validation macro-F1 and its files in OUT/.

    Thread-safe: the watchdog and signal handlers read `settled_best` while the main thread offers.
    `best` changes as soon as its predictions are on disk (model.pt follows), so a report built from
    it describes the predictions a harness finds.
    """

    def __init__(self, out_dir: Path, *, predict_ids, class_names, log: Callable[[str], None]):
        self._out_dir = out_dir
        self._predict_ids = tuple(predict_ids)
        self._class_names = tuple(class_names)
        self._log = log
        self._lock = threading.RLock()   # RLock: a signal handler may run on the offering thread
        self.best: Candidate | None = None
        self.pool: list[Candidate] = []   # every offered candidate with probabilities: the ensemble's library
        self.runner_up: Candidate | None = None   # scored on the held-out test beside the delivered model

    def offer(self, candidate: Candidate) -> bool:
        """Deliver `candidate` if it beats the current best on validation macro-F1."""
        with self._lock:
            if candidate.val_probs is not None and candidate.members is None:
                self.pool.append(candidate)
            if self.best is not None and not candidate.val_macro_f1 > self.best.val_macro_f1:
                self._log(f"kept {self.best.name} (val macro-F1 {self.best.val_macro_f1:.4f}) over "
                          f"{candidate.name} ({candidate.val_macro_f1:.4f})")
                return False
            self._write(candidate)
        self._log(f"predictions written from {candidate.name} (val macro-F1 {candidate.val_macro_f1:.4f})")
        return True

    def overrule(self, candidate: Candidate) -> None:
        """Deliver `candidate` whatever its validation score: for a choice made on more evidence than the
        validation split (phases/evidence.py). It must be a candidate already offered."""
        with self._lock:
            self._write(candidate)
        self._log(f"predictions written from {candidate.name} (on more evidence than the validation split)")

    def _write(self, candidate: Candidate) -> None:
        """predictions.npy first (then `best` moves to it), model.pt after; the caller holds the lock."""
        write_predictions(self._out_dir, candidate.predict_labels, self._predict_ids, self._class_names)
        self.best = candidate
        if candidate.state_dict is not None:
            write_model(self._out_dir, candidate.state_dict, candidate.architecture or {}, candidate.config or {})

    def settled_best(self, timeout_s: float) -> Candidate | None:
        """The delivered candidate, after waiting up to `timeout_s` for a delivery in progress to
        finish writing its files (for the watchdog and signal handlers, which cannot wait long)."""
        acquired = self._lock.acquire(timeout=max(0.0, timeout_s))
        try:
            return self.best
        finally:
            if acquired:
                self._lock.release()

