"""MedMNIST-style .npz: train_images/train_labels (+ optional val_*, test_*, class_names).

Images are (N, H, W) grey or (N, H, W, 3) colour ((N, H, W, 1) also accepted),
uint8 or any integer/float dtype whose values lie in 0..255 (floats entirely in
0..1 are taken as 0..1 intensities and scaled by 255, with a note).  Labels are
(N,) or (N, 1) non-negative integers.  `test_images` without `test_labels` is an
unlabelled test set.  Class names are "0".."K-1" with K = max label + 1 over all
splits, unless a unicode `class_names` array is present.  The file is read with
allow_pickle=False: object arrays are refused, never unpickled.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from automl_pipeline.errors import InputError

from .checks import check_classes, default_class_names
from .dataset import Dataset, ImageSet
from .images import resize_array, working_side

SPLITS = ("train", "val", "test")
KNOWN_KEYS = frozenset({f"{s}_{k}" for s in SPLITS for k in ("images", "labels")} | {"class_names"})


def load_npz(path: Path, *, max_side: int) -> Dataset:
    arrays = _read_arrays(path)
    notes = []
    unknown = sorted(set(arrays) - KNOWN_KEYS)
    if unknown:
        notes.append(f"ignored npz keys {unknown}")
    _check_keys(path, arrays)

    images, labels = {}, {}
    for split in SPLITS:
        if f"{split}_images" not in arrays:
            continue
        split_images = _validate_images(path, split, arrays[f"{split}_images"], notes)
        if split != "train" and len(split_images) == 0:
            notes.append(f"{split}_images is empty: treated as absent")
            continue
        images[split] = split_images
        if f"{split}_labels" in arrays:
            labels[split] = _validate_labels(path, split, arrays[f"{split}_labels"], len(images[split]))
        else:
            notes.append(f"{split}_images has no {split}_labels: unlabelled {split} set")
    if len(images["train"]) == 0:
        raise InputError(path, "train_images is empty")

    class_names = _class_names(path, arrays, labels)
    check_classes(path, class_names, labels["train"])

    native_side = max(images["train"].shape[1:3])
    side = working_side(native_side, max_side)
    channels = max(a.shape[3] for a in images.values())
    sets = {}
    for split, split_images in images.items():
        if split_images.shape[3] != channels:
            split_images = np.repeat(split_images, channels, axis=3)
            notes.append(f"converted {split} images from grey to RGB to match the other splits")
        if split_images.shape[1:3] != (side, side):
            notes.append(f"resized {split} images from {split_images.shape[1]}x{split_images.shape[2]} "
                         f"to {side}x{side} (max_side {max_side}; aspect ratio not kept)")
            split_images = resize_array(split_images, side)
        ids = tuple(f"{split}/{i}" for i in range(len(split_images)))
        sets[split] = ImageSet(split_images, labels.get(split), ids)
    return Dataset(format="npz", source=str(path), class_names=class_names, train=sets["train"],
                   val=sets.get("val"), test=sets.get("test"), native_side=int(native_side),
                   notes=tuple(notes))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"cannot read npz file: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(path, "is a single .npy array, not an .npz archive of named arrays")
    arrays = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                    raise InputError(path, f"key {key!r} contains object arrays; refusing to unpickle") from exc
                raise InputError(path, f"cannot read key {key!r}: {exc}") from exc
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise InputError(path, f"cannot read key {key!r}: {exc}") from exc
    return arrays


def _check_keys(path: Path, arrays: dict[str, np.ndarray]) -> None:
    expected = "train_images, train_labels (optional: val_images, val_labels, test_images, test_labels, class_names)"
    missing = [k for k in ("train_images", "train_labels") if k not in arrays]
    if missing:
        raise InputError(path, f"missing keys {missing}; found {sorted(arrays)}; expected {expected}")
    for split in ("val", "test"):
        if f"{split}_labels" in arrays and f"{split}_images" not in arrays:
            raise InputError(path, f"has {split}_labels but no {split}_images")
    if "val_images" in arrays and "val_labels" not in arrays:
        raise InputError(path, "has val_images but no val_labels; a validation split must be labelled")


def _validate_images(path: Path, split: str, images: np.ndarray, notes: list[str]) -> np.ndarray:
    key = f"{split}_images"
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise InputError(path, f"{key} has shape {images.shape}; expected (N, H, W) or (N, H, W, 3)")
    if images.shape[0] and min(images.shape[1:3]) < 1:
        raise InputError(path, f"{key} has empty images, shape {images.shape}")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "iuf":
        raise InputError(path, f"{key} has dtype {images.dtype}; expected uint8 (or numbers in 0..255)")
    if images.size == 0:
        return images.astype(np.uint8)
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        raise InputError(path, f"{key} contains NaN or infinite values")
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise InputError(path, f"{key} values span {low}..{high}; expected 0..255")
    if images.dtype.kind == "f" and high <= 1.0:
        notes.append(f"{key}: float values in 0..1 scaled to 0..255")
        images = images * 255.0
    return np.rint(images).astype(np.uint8)


def _validate_labels(path: Path, split: str, labels: np.ndarray, n_images: int) -> np.ndarray:
    key = f"{split}_labels"
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(path, f"{key} has shape {labels.shape}; expected (N,) or (N, 1) "
                               "(multi-label data is not supported)")
    if len(labels) != n_images:
        raise InputError(path, f"{split}_images has {n_images} images but {key} has {len(labels)} labels")
    if labels.dtype.kind not in "iuf" or (labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels))):
        raise InputError(path, f"{key} must hold integers, got dtype {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise InputError(path, f"{key} has a negative label {labels.min()}")
    return labels.astype(np.int64)


def _class_names(path: Path, arrays: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> tuple[str, ...]:
    n_from_labels = int(max(l.max() for l in labels.values() if len(l))) + 1
    if "class_names" not in arrays:
        return default_class_names(n_from_labels)
    names = arrays["class_names"]
    if names.dtype.kind not in "US" or names.ndim != 1:
        raise InputError(path, f"class_names must be a 1-D string array, got {names.dtype} {names.shape}")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
    if n_from_labels > len(names):
        raise InputError(path, f"label {n_from_labels - 1} is out of range for {len(names)} class_names")
    return names
