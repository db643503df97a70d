"""Stratified, seeded train / val / held-out test splits.

Policy:
- held-out test: the data's labelled test set if it has one ("data test split");
  otherwise carved from the train set ("carved from labelled data").
- val: the data's validation set if it has one; otherwise carved from train.
  (When the data brings val but no test, the test is carved from train only;
  the given val is kept whole.)
- predict: the data's test images (labelled or not) in their original order;
  otherwise the held-out test.

Carving is stratified by construction: each class is shuffled with the seed
and cut separately.  Per class of n train images, the test gets
round(n * test_fraction) and val round(n * val_fraction) images, each at least 1
while images remain, and at least one image always stays in train.  So a class
of 2 images, with both splits carved, goes 1 to train and 1 to the held-out test
(none to val); a class of 1 image is kept in training only ("train-only": it has
no image in the carved splits, so its held-out score is absent, and a note says
so).  Something must be left to carve: when anything is carved, at least one
class needs 2 training images, else the data is refused.  (Per-class cutting
replaces sklearn's train_test_split(stratify=...), which fails for classes with
fewer than 2 images and for small test sizes.)
Every split keeps the dataset's order; the same seed gives the same splits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from automl_pipeline.errors import InputError

from .dataset import Dataset, ImageSet

HELDOUT_FROM_DATA = "data test split"
HELDOUT_CARVED = "carved from labelled data"


@dataclass(frozen=True, eq=False)   # holds arrays: identity equality
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet            # held-out, labelled, used once by the final model
    predict: ImageSet         # what predictions are written for, in order
    heldout_source: str       # HELDOUT_FROM_DATA | HELDOUT_CARVED
    n_classes: int
    train_only: tuple[int, ...] = ()   # labels kept in training only (1 image, nothing carved from them)
    notes: tuple[str, ...] = ()        # what the split did that the user should know, for run.log and the report

    def to_json(self, seed: int) -> dict:
        """Ids and per-class counts of every split, for OUT/splits.json."""
        def describe(image_set: ImageSet) -> dict:
            per_class = image_set.class_counts(self.n_classes).tolist() if image_set.labelled else None
            return {"count": len(image_set), "per_class": per_class, "ids": list(image_set.ids)}
        predict = describe(self.predict)
        predict["labelled"] = self.predict.labelled
        predict["is_heldout_test"] = self.predict is self.test
        return {"seed": int(seed), "heldout_source": self.heldout_source, "train": describe(self.train),
                "val": describe(self.val), "test": describe(self.test), "predict": predict}


def carves(dataset: Dataset) -> tuple[bool, bool]:
    """(carve the held-out test?, carve val?) from what the data brings."""
    has_labelled_test = dataset.test is not None and dataset.test.labelled
    return not has_labelled_test, dataset.val is None


def train_only_classes(dataset: Dataset) -> tuple[int, ...]:
    """Labels with a single training image while something is carved: they stay in train only."""
    if not any(carves(dataset)):
        return ()
    counts = dataset.train.class_counts(dataset.n_classes)
    return tuple(int(label) for label in np.flatnonzero(counts == 1))


def check_splittable(dataset: Dataset) -> None:
    """InputError when `make_splits` has nothing to carve: every class has 1 training image.

    (Classes with no training image at all are refused by the loaders, `checks.check_classes`.)
    """
    if not any(carves(dataset)):
        return
    counts = dataset.train.class_counts(dataset.n_classes)
    if counts.max(initial=0) < 2:
        raise InputError(dataset.source,
                         f"every class has only 1 training image ({_names(dataset, range(dataset.n_classes))}); "
                         "at least one class needs 2 to carve the held-out test/validation split(s) from train "
                         "(a class with 1 image is kept in training only)")


def train_only_note(dataset: Dataset, labels: tuple[int, ...]) -> str:
    """One note for all train-only classes: which ones, where they are missing, what that means."""
    carve_test, carve_val = carves(dataset)
    missing = "held-out test and validation splits" if carve_test and carve_val else \
        "held-out test split" if carve_test else "validation split"
    who = (f"class {_names(dataset, labels)} has 1 training image: it is" if len(labels) == 1 else
           f"{len(labels)} classes have 1 training image each ({_names(dataset, labels)}): they are")
    consequence = "; its held-out test score is absent" if carve_test and len(labels) == 1 else \
        "; their held-out test scores are absent" if carve_test else ""
    return f"{who} kept in training only (none carved for the {missing}){consequence}"


def _names(dataset: Dataset, labels, shown: int = 10) -> str:
    labels = list(labels)
    text = ", ".join(repr(dataset.class_names[label]) for label in labels[:shown])
    return text + (f", ... ({len(labels)} in all)" if len(labels) > shown else "")


def make_splits(dataset: Dataset, *, seed: int, val_fraction: float = 0.15,
                test_fraction: float = 0.2) -> Splits:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"bad fractions val={val_fraction} test={test_fraction}")
    check_splittable(dataset)
    carve_test, carve_val = carves(dataset)
    test_idx, val_idx, train_idx = _stratified_cut(
        dataset.train.labels, dataset.n_classes, seed,
        test_fraction if carve_test else 0.0, val_fraction if carve_val else 0.0)
    train = dataset.train.subset(train_idx)
    val = dataset.train.subset(val_idx) if carve_val else dataset.val
    test = dataset.train.subset(test_idx) if carve_test else dataset.test
    if len(val) == 0:
        raise InputError(dataset.source, "too few images to carve a validation split "
                                         "(no class has more than 2 training images); add images or a val split")
    predict = dataset.test if dataset.test is not None else test
    train_only = train_only_classes(dataset)
    return Splits(train=train, val=val, test=test, predict=predict,
                  heldout_source=HELDOUT_CARVED if carve_test else HELDOUT_FROM_DATA,
                  n_classes=dataset.n_classes, train_only=train_only,
                  notes=(train_only_note(dataset, train_only),) if train_only else ())


def _stratified_cut(labels: np.ndarray, n_classes: int, seed: int, test_fraction: float,
                    val_fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class shuffled cut into (test, val, train) index arrays, each sorted."""
    rng = np.random.default_rng(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for label in range(n_classes):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = _share(len(members), test_fraction, available=len(members) - 1)
        n_val = _share(len(members), val_fraction, available=len(members) - 1 - n_test)
        parts[0].append(members[:n_test])
        parts[1].append(members[n_test:n_test + n_val])
        parts[2].append(members[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def _share(n: int, fraction: float, *, available: int) -> int:
    """round(n * fraction), at least 1 when fraction > 0, at most `available`."""
    if fraction <= 0 or available <= 0:
        return 0
    return min(max(int(np.floor(n * fraction + 0.5)), 1), available)
