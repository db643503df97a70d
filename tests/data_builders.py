"""Tiny datasets written to a directory, in every supported format, for tests.

Each class gets a learnable pattern: a bright horizontal band whose position
depends on the class (and, for colour data, a class-dependent dominant
channel), on a dim noisy background.  Every builder writes into `directory`
(created if needed) and returns it, ready for `load_dataset(directory, ...)`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def pattern_image(label: int, n_classes: int, rng: np.random.Generator, *, height: int, width: int,
                  rgb: bool = False) -> np.ndarray:
    """uint8 (height, width) or (height, width, 3) image whose band row encodes `label`."""
    image = rng.integers(0, 40, size=(height, width), dtype=np.int64)
    band = max(1, height // (2 * n_classes))
    top = min(height - band, (label * height) // n_classes)
    image[top:top + band, :] += 180
    image = np.clip(image, 0, 255).astype(np.uint8)
    if not rgb:
        return image
    colour = np.stack([image // 3] * 3, axis=-1)
    colour[..., label % 3] = image
    return colour


def pattern_batch(labels: np.ndarray, n_classes: int, rng: np.random.Generator, *, side: int,
                  rgb: bool) -> np.ndarray:
    return np.stack([pattern_image(int(c), n_classes, rng, height=side, width=side, rgb=rgb) for c in labels])


def balanced_labels(n_per_class: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(n_classes), n_per_class)).astype(np.int64)


def make_npz(directory: Path, *, n_per_class: int = 10, n_classes: int = 3, side: int = 12, rgb: bool = False,
             with_val: bool = True, with_test: bool = True, name: str = "data.npz", seed: int = 0) -> Path:
    """MedMNIST-style npz; labels shaped (N, 1); val/test hold max(2, n_per_class // 3) per class."""
    directory = _ready(directory)
    rng = np.random.default_rng(seed)
    arrays = {}
    splits = [("train", n_per_class)] + [("val", max(2, n_per_class // 3))] * with_val \
        + [("test", max(2, n_per_class // 3))] * with_test
    for split, per_class in splits:
        labels = balanced_labels(per_class, n_classes, rng)
        arrays[f"{split}_images"] = pattern_batch(labels, n_classes, rng, side=side, rgb=rgb)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(directory / name, **arrays)
    return directory


def make_competition(directory: Path, *, n_per_class: int = 10, n_classes: int = 3, side: int = 12,
                     rgb: bool = False, labelled_test: bool = False, n_test_per_class: int = 3,
                     mixed_sizes: bool = False, seed: int = 0) -> Path:
    """train.csv + images_train/, test.csv + images_test/; rows in shuffled (not sorted) order."""
    directory = _ready(directory)
    rng = np.random.default_rng(seed)
    for split, per_class, labelled in (("train", n_per_class, True), ("test", n_test_per_class, labelled_test)):
        images_dir = directory / f"images_{split}"
        images_dir.mkdir(exist_ok=True)
        labels = balanced_labels(per_class, n_classes, rng)
        rows = ["image_file_name,label"]
        for i, label in enumerate(labels):
            name = f"{split}_{i:04d}.png"
            height, width = _size(side, mixed_sizes, rng)
            write_image(images_dir / name, pattern_image(int(label), n_classes, rng, height=height, width=width,
                                                         rgb=rgb))
            rows.append(f"{name},{label if labelled else ''}")
        order = [rows[0]] + [rows[1:][j] for j in rng.permutation(len(rows) - 1)]
        (directory / f"{split}.csv").write_text("\n".join(order) + "\n")
    return directory


def make_imagefolder(directory: Path, *, n_per_class: int = 10, n_classes: int = 3, side: int = 12,
                     rgb: bool = False, nested: bool = False, mixed_sizes: bool = False, ext: str = "png",
                     seed: int = 0) -> Path:
    """<class>/<image> folders (classes "class0".."classK-1"); nested: train/, val/, test/ of those."""
    directory = _ready(directory)
    rng = np.random.default_rng(seed)
    splits = [("train", n_per_class), ("val", max(2, n_per_class // 3)), ("test", max(2, n_per_class // 3))] \
        if nested else [("", n_per_class)]
    for split, per_class in splits:
        for label in range(n_classes):
            class_dir = directory / split / f"class{label}"
            class_dir.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                height, width = _size(side, mixed_sizes, rng)
                write_image(class_dir / f"img_{i:03d}.{ext}",
                            pattern_image(label, n_classes, rng, height=height, width=width, rgb=rgb))
    return directory


def write_image(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    """Write a uint8 array with Pillow (format from the suffix); `mode` converts first (e.g. "RGBA", "P")."""
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


def _size(side: int, mixed: bool, rng: np.random.Generator) -> tuple[int, int]:
    if not mixed:
        return side, side
    return int(rng.integers(side // 2, 2 * side + 1)), int(rng.integers(side // 2, 2 * side + 1))


def _ready(directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def random_run_data(n: int = 256, side: int = 8, n_classes: int = 4):
    """A tiny phases.common.RunData of random grey images (for planning and wiring tests, not learning)."""
    import torch

    from automl_pipeline.phases.common import RunData
    from automl_pipeline.training.tensors import TensorData

    def split(size: int) -> TensorData:
        return TensorData(torch.randn(size, 1, side, side), torch.arange(size) % n_classes)

    return RunData(train=split(n), val=split(64), test=split(8), predict=None, n_classes=n_classes, in_channels=1,
                   image_side=side, train_counts=np.full(n_classes, n // n_classes), device=torch.device("cpu"))


def make_shifted_digits_npz(directory: Path, *, n_train: int = 360, n_val: int = 120, n_test: int = 200, pad: int = 1,
                            seed: int = 0) -> Path:
    """scikit-learn's digits, each placed at a random offset inside a (8 + 2 pad)-pixel square, as a
    MedMNIST-style npz: small and cheap like digits, but a linear model on the pixels no longer suffices
    (logistic regression: validation macro-F1 0.58 at pad 1 against 0.93 unshifted), so a run's best model
    has to be a network."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.images))[: n_train + n_val + n_test]
    side = 8 + 2 * pad
    images = np.zeros((len(order), side, side, 1), dtype=np.uint8)
    for i, index in enumerate(order):
        dy, dx = rng.integers(0, 2 * pad + 1, size=2)
        images[i, dy:dy + 8, dx:dx + 8, 0] = np.rint(digits.images[index] * (255.0 / 16))
    labels = digits.target[order].astype(np.int64).reshape(-1, 1)
    cuts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val),
            "test": slice(n_train + n_val, n_train + n_val + n_test)}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "shifted_digits.npz"
    np.savez(path, **{f"{name}_{kind}": array[cut] for name, cut in cuts.items()
                      for kind, array in (("images", images), ("labels", labels))})
    return path


def phase_context(tmp_path: Path, budget, data, *, settings=None, report: dict | None = None):
    """A phases.context.RunContext over `data` (a RunData) for a test that runs one phase: a real checkpoint
    store, a quiet run log on `budget`'s clock and a delivery writing into tmp_path."""
    from automl_pipeline.checkpoints import Checkpoints
    from automl_pipeline.delivery import Delivery
    from automl_pipeline.phases.context import RunContext
    from automl_pipeline.runlog import RunLog
    from automl_pipeline.settings import Settings

    store = Checkpoints(tmp_path)
    store.dir.mkdir()
    log = RunLog(None, quiet=True, elapsed=budget.elapsed, remaining=budget.remaining)
    delivery = Delivery(tmp_path, predict_ids=[str(i) for i in range(len(data.test))],
                        class_names=[str(c) for c in range(data.n_classes)], log=log)
    return RunContext(settings=settings or Settings(time_limit_s=60, output_dir=tmp_path), budget=budget, data=data,
                      log=log, store=store, report={} if report is None else report, delivery=delivery)
