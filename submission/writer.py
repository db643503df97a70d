"""The competition outputs: predictions (.npy + .csv) and the model file, each written atomically."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from submission.atomic import atomic_write_bytes, to_jsonable, write_json

PREDICTIONS_NPY = "predictions.npy"
PREDICTIONS_CSV = "predictions.csv"
MODEL_FILE = "model.pt"
CSV_HEADER = ("image_file_name", "label")
MODEL_KEYS = ("state_dict", "spec", "config")

__all__ = ["atomic_write_bytes", "write_json", "write_predictions", "write_model", "load_model_file"]


def write_predictions(out_dir: Path | str, predictions: np.ndarray, ids: Sequence[str],
                      class_names: Sequence[str]) -> None:
    """Write ``predictions.npy`` (int64 class indices, in order) and ``predictions.csv``.

    The CSV has the header ``image_file_name,label``, one row per id in order,
    with the class *name* as the label. Raises ValueError when predictions are
    not 1-D integers, their count differs from ``ids``, or an index is outside
    ``[0, len(class_names))``. Each file is replaced atomically (npy first).
    """
    labels = _validated_predictions(predictions, ids, class_names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    npy = io.BytesIO()
    np.save(npy, labels, allow_pickle=False)
    atomic_write_bytes(out_dir / PREDICTIONS_NPY, npy.getvalue())

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows((str(image_id), str(class_names[label])) for image_id, label in zip(ids, labels))
    atomic_write_bytes(out_dir / PREDICTIONS_CSV, text.getvalue().encode("utf-8"))


def write_model(out_dir: Path | str, state_dict: Mapping[str, Any], spec_json: dict, config: dict) -> None:
    """Write ``model.pt``: ``{"state_dict", "spec", "config"}``, loadable with ``weights_only=True``.

    Tensors are detached and moved to CPU; ``spec_json`` and ``config`` are
    reduced to plain JSON types (numpy scalars become Python numbers).
    """
    import torch  # here, not at import: reporting and compare use submission without torch

    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is {type(value).__name__}, expected a tensor")
        tensors[str(key)] = value.detach().cpu()
    payload = {"state_dict": tensors, "spec": to_jsonable(spec_json), "config": to_jsonable(config)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(out_dir / MODEL_FILE, buffer.getvalue())


def load_model_file(path: Path | str) -> dict:
    """Read a ``model.pt`` written by ``write_model`` (``weights_only=True``, tensors on CPU)."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or any(key not in payload for key in MODEL_KEYS):
        raise ValueError(f"{path}: not a model file (expected a dict with keys {MODEL_KEYS})")
    return payload


def _validated_predictions(predictions: np.ndarray, ids: Sequence[str], class_names: Sequence[str]) -> np.ndarray:
    labels = np.asarray(predictions)
    if labels.ndim != 1:
        raise ValueError(f"predictions must be 1-D, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"predictions must be integer class indices, got dtype {labels.dtype}")
    if len(labels) != len(ids):
        raise ValueError(f"{len(labels)} predictions but {len(ids)} ids")
    if len(class_names) == 0:
        raise ValueError("class_names is empty")
    labels = labels.astype(np.int64)
    out_of_range = (labels < 0) | (labels >= len(class_names))
    if out_of_range.any():
        first = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(f"{int(out_of_range.sum())} predictions outside [0, {len(class_names)}), "
                         f"first at position {first}: {int(labels[first])}")
    return labels
