"""The built-in demo: scikit-learn's digits (1797 grey 8x8 images, 10 classes)."""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as sklearn_load_digits

from .dataset import Dataset, ImageSet
from .images import resize_array, working_side

DIGITS_SOURCE = "sklearn digits (built-in demo)"
DIGITS_MAX_VALUE = 16


def load_digits(*, max_side: int) -> Dataset:
    """Values 0..16 scaled to uint8 0..255; ids "digits/{i}"; no val or test (carved later)."""
    bunch = sklearn_load_digits()
    images = np.rint(bunch.images * (255.0 / DIGITS_MAX_VALUE)).astype(np.uint8)[..., np.newaxis]
    native_side = images.shape[1]
    side = working_side(native_side, max_side)
    notes = ["scaled digit intensities 0..16 to 0..255"]
    if side != native_side:
        images = resize_array(images, side)
        notes.append(f"resized images from {native_side}x{native_side} to {side}x{side} (max_side {max_side})")
    train = ImageSet(images, bunch.target.astype(np.int64), tuple(f"digits/{i}" for i in range(len(images))))
    return Dataset(format="digits", source=DIGITS_SOURCE, class_names=tuple(str(n) for n in bunch.target_names),
                   train=train, val=None, test=None, native_side=native_side, notes=tuple(notes))
