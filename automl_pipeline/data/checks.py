"""Validation shared by the loaders: class names and class presence."""
from __future__ import annotations

from os import PathLike
from typing import Sequence

import numpy as np

from automl_pipeline.errors import InputError

MIN_CLASSES = 2
# An error names at most this many classes (labels up to 10**6 would otherwise make a message of megabytes).
MAX_NAMED = 10


def default_class_names(n_classes: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n_classes))


def check_classes(source: str | PathLike, class_names: Sequence[str], train_labels: np.ndarray) -> None:
    """At least two classes, and every class 0..K-1 has at least one training image."""
    if len(class_names) < MIN_CLASSES:
        raise InputError(source, f"found {len(class_names)} class(es) {list(class_names)}; "
                                 f"need at least {MIN_CLASSES}")
    counts = np.bincount(train_labels, minlength=len(class_names))
    missing = [i for i in range(len(class_names)) if counts[i] == 0]
    if missing:
        names = ", ".join(f"{class_names[i]!r} (label {i})" for i in missing[:MAX_NAMED])
        if len(missing) > MAX_NAMED:
            names += f" and {len(missing) - MAX_NAMED} more of the {len(class_names)} classes"
        raise InputError(source, f"class {names} has no training images; every class needs some")
