"""The in-memory dataset every later phase consumes: `ImageSet` and `Dataset`.

Invariants (checked on construction; a violation is a bug, hence ValueError):
images are uint8 (N, H, W, C) with C in {1, 3}; labels are int64 (N,) or None;
there is one id per image; all sets of a Dataset share H, W, C and their labels
lie in [0, n_classes).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)   # holds arrays: identity equality
class ImageSet:
    images: np.ndarray            # uint8 (N, H, W, C), C in {1, 3}
    labels: np.ndarray | None     # int64 (N,); None = unlabelled
    ids: tuple[str, ...]          # file names, or "train/17" style for npz/digits

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] not in (1, 3):
            raise ValueError(f"images must be uint8 (N, H, W, 1|3), got {self.images.dtype} {self.images.shape}")
        n = self.images.shape[0]
        if self.labels is not None and (self.labels.dtype != np.int64 or self.labels.shape != (n,)):
            raise ValueError(f"labels must be int64 ({n},), got {self.labels.dtype} {self.labels.shape}")
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def subset(self, indices: np.ndarray) -> ImageSet:
        """The images at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        labels = None if self.labels is None else self.labels[indices]
        return ImageSet(self.images[indices], labels, tuple(self.ids[i] for i in indices))

    def class_counts(self, n_classes: int) -> np.ndarray:
        """Images per class (int64, length n_classes); requires labels."""
        if self.labels is None:
            raise ValueError("an unlabelled ImageSet has no class counts")
        return np.bincount(self.labels, minlength=n_classes).astype(np.int64)


@dataclass(frozen=True, eq=False)   # holds arrays: identity equality
class Dataset:
    format: str                   # "npz" | "competition" | "imagefolder" | "digits"
    source: str                   # path, or "sklearn digits (built-in demo)"
    class_names: tuple[str, ...]
    train: ImageSet
    val: ImageSet | None          # present when the data brings a validation split
    test: ImageSet | None         # present when the data brings test images (labels may be None)
    native_side: int              # median longest side of the train images before resizing
    notes: tuple[str, ...] = ()   # what was converted/skipped, for the report

    def __post_init__(self) -> None:
        if self.train.labels is None:
            raise ValueError("the train set must be labelled")
        shape = self.train.images.shape[1:]
        for name, image_set in (("val", self.val), ("test", self.test)):
            if image_set is not None and image_set.images.shape[1:] != shape:
                raise ValueError(f"{name} images {image_set.images.shape[1:]} differ from train {shape}")
        for image_set in self.labelled_sets():
            if len(image_set) and (image_set.labels.min() < 0 or image_set.labels.max() >= self.n_classes):
                raise ValueError(f"labels outside [0, {self.n_classes})")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) shared by every set."""
        height, width, channels = self.train.images.shape[1:]
        return int(height), int(width), int(channels)

    def labelled_sets(self) -> list[ImageSet]:
        return [s for s in (self.train, self.val, self.test) if s is not None and s.labels is not None]
