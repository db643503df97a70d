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
while images remain, and at least one image always stays in train.  So the
minimum is 2 images per class whenever something is carved: with 2 images and
both splits carved, the class goes 1 to train and 1 to the held-out test (none
to val).  (Per-class cutting replaces sklearn's train_test_split(stratify=...),
which fails for classes with fewer than 2 images and for small test sizes.)
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


def min_images_per_class(dataset: Dataset) -> int:
    """2 when anything is carved from train (1 stays, 1 leaves), else 1."""
    return 2 if any(carves(dataset)) else 1


def check_splittable(dataset: Dataset) -> None:
    """InputError naming the first class with too few train images for `make_splits`."""
    needed = min_images_per_class(dataset)
    counts = dataset.train.class_counts(dataset.n_classes)
    for label, count in enumerate(counts):
        if count < needed:
            raise InputError(dataset.source,
                             f"class {dataset.class_names[label]!r} (label {label}) has {count} training "
                             f"image(s); at least {needed} are needed to carve the held-out test/validation "
                             "split(s) from train")


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
                                         "(every class has only 2 training images); add images or a val split")
    predict = dataset.test if dataset.test is not None else test
    return Splits(train=train, val=val, test=test, predict=predict,
                  heldout_source=HELDOUT_CARVED if carve_test else HELDOUT_FROM_DATA,
                  n_classes=dataset.n_classes)


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
