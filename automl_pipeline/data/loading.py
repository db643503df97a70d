"""`load_dataset`: detect the format of a data path and load it.

Detection, in order, for a directory:
  1. `train.csv` present                 -> competition layout
  2. exactly one `*.npz` file at the top  -> MedMNIST-style npz (several -> error)
  3. class sub-folders holding images, or train/[val/][test/] of them -> ImageFolder
A path to an `.npz` file is loaded directly; None loads the digits demo.
Anything else is an InputError naming the path and what was expected.
"""
from __future__ import annotations

from pathlib import Path

from automl_pipeline.errors import InputError

from .competition import is_competition_dir, load_competition
from .dataset import Dataset
from .digits import load_digits
from .imagefolder import is_imagefolder, load_imagefolder, visible_entries
from .npz import load_npz
from .splits import check_splittable

EXPECTED_LAYOUTS = ("one .npz file (train_images, train_labels, ...); or train.csv + images_train/ "
                    "[+ test.csv + images_test/]; or class sub-folders of images (optionally under "
                    "train/, val/, test/)")


def load_dataset(data_dir: Path | None, *, max_side: int) -> Dataset:
    """Load and validate a dataset; raises InputError naming the file and the problem.

    The result is also checked to be splittable by `make_splits` (enough images
    per class), so bad input fails here, before any time is spent.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    if data_dir is None:
        dataset = load_digits(max_side=max_side)
    else:
        dataset = _load_path(Path(data_dir), max_side=max_side)
    check_splittable(dataset)
    return dataset


def _load_path(path: Path, *, max_side: int) -> Dataset:
    if not path.exists():
        raise InputError(path, "data path does not exist")
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return load_npz(path, max_side=max_side)
        raise InputError(path, f"is a file but not an .npz; expected a data directory with {EXPECTED_LAYOUTS}")
    if not path.is_dir():
        raise InputError(path, "is neither a directory nor an .npz file")
    try:
        entries = visible_entries(path)
    except OSError as exc:
        raise InputError(path, f"cannot list directory: {exc}") from exc
    if not entries:
        raise InputError(path, f"data directory is empty; expected {EXPECTED_LAYOUTS}")
    if is_competition_dir(path):
        return load_competition(path, max_side=max_side)
    npz_files = sorted(p for p in entries if p.is_file() and p.suffix.lower() == ".npz")
    if len(npz_files) > 1:
        raise InputError(path, f"holds {len(npz_files)} .npz files {[p.name for p in npz_files]}; "
                               "expected exactly one (or pass the file itself)")
    if npz_files:
        return load_npz(npz_files[0], max_side=max_side)
    if is_imagefolder(path):
        return load_imagefolder(path, max_side=max_side)
    raise InputError(path, f"no recognised dataset layout; expected {EXPECTED_LAYOUTS}")
