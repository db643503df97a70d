"""Competition layout: train.csv + images_train/, and optionally test.csv + images_test/.

CSV columns: `image_file_name,label` (extra columns are ignored, with a note).
train.csv needs both columns and an integer label on every row.  test.csv needs
`image_file_name`; its labels must be all present (a labelled test) or all empty
/ absent (an unlabelled test) -- a mix is an error.  Class names are "0".."K-1"
(K = max label + 1 over train and test), or the lines of an optional
classes.txt, in which case every label must be < the number of names.
File names are relative to images_train/ (images_test/); ids are the names as
written in the CSV, in CSV order.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl_pipeline.errors import InputError

from .checks import check_classes, default_class_names
from .dataset import Dataset, ImageSet
from .images import decode_groups

FILE_COLUMN = "image_file_name"
LABEL_COLUMN = "label"
MISSING_LABELS = frozenset({"", "nan", "none", "null", "na"})


@dataclass(frozen=True)
class CsvTable:
    names: tuple[str, ...]
    labels: tuple[int | None, ...]
    lines: tuple[int, ...]     # CSV line number of each row, for messages
    notes: tuple[str, ...]


def is_competition_dir(data_dir: Path) -> bool:
    return (data_dir / "train.csv").is_file()


def load_competition(data_dir: Path, *, max_side: int) -> Dataset:
    train = read_csv(data_dir / "train.csv", require_label=True)
    notes = list(train.notes)
    groups = {"train": _image_paths(data_dir / "images_train", data_dir / "train.csv", train)}
    test = None
    if (data_dir / "test.csv").is_file():
        test = read_csv(data_dir / "test.csv", require_label=False)
        notes += test.notes
        groups["test"] = _image_paths(data_dir / "images_test", data_dir / "test.csv", test)
    else:
        notes.append("no test.csv: predictions are made for the carved held-out split")

    train_labels = np.array(train.labels, dtype=np.int64)
    test_labels = None
    if test is not None and test.labels[0] is not None:
        test_labels = np.array(test.labels, dtype=np.int64)
    class_names = _class_names(data_dir, train, test)
    check_classes(data_dir / "train.csv", class_names, train_labels)

    decoded = decode_groups(groups, max_side=max_side)
    notes += decoded.notes
    train_set = ImageSet(decoded.arrays["train"], train_labels, train.names)
    test_set = None if test is None else ImageSet(decoded.arrays["test"], test_labels, test.names)
    return Dataset(format="competition", source=str(data_dir), class_names=class_names, train=train_set,
                   val=None, test=test_set, native_side=decoded.native_side, notes=tuple(notes))


def read_csv(path: Path, *, require_label: bool) -> CsvTable:
    """Parse and validate one CSV (see the module docstring for the rules)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot read CSV: {exc}") from exc
    if not rows:
        raise InputError(path, "is empty; expected a header line 'image_file_name,label'")
    header = [column.strip() for column in rows[0]]
    required = [FILE_COLUMN, LABEL_COLUMN] if require_label else [FILE_COLUMN]
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(path, f"missing required column(s) {missing}; found columns {header}")
    notes = []
    extra = [c for c in header if c not in (FILE_COLUMN, LABEL_COLUMN)]
    if extra:
        notes.append(f"{path.name}: ignored extra column(s) {extra}")
    file_col = header.index(FILE_COLUMN)
    label_col = header.index(LABEL_COLUMN) if LABEL_COLUMN in header else None

    names, labels, lines, seen = [], [], [], {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue   # blank line
        if len(row) > len(header):
            raise InputError(path, f"line {line}: {len(row)} fields, the header has {len(header)}")
        row = row + [""] * (len(header) - len(row))   # missing trailing fields read as empty
        name = row[file_col].strip()
        if not name:
            raise InputError(path, f"line {line}: empty {FILE_COLUMN}")
        if name in seen:
            raise InputError(path, f"line {line}: duplicate file name {name!r} (first on line {seen[name]})")
        seen[name] = line
        names.append(name)
        labels.append(None if label_col is None else _parse_label(path, line, row[label_col]))
        lines.append(line)
    if not names:
        raise InputError(path, "has a header but no rows")
    _check_label_presence(path, labels, lines, require_label)
    return CsvTable(tuple(names), tuple(labels), tuple(lines), tuple(notes))


def _parse_label(path: Path, line: int, text: str) -> int | None:
    text = text.strip()
    if text.lower() in MISSING_LABELS:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"line {line}: label {text!r} is not an integer") from None
    if not math.isfinite(value) or value != int(value):
        raise InputError(path, f"line {line}: label {text!r} is not an integer")
    if value < 0:
        raise InputError(path, f"line {line}: label {text!r} is negative")
    return int(value)


def _check_label_presence(path: Path, labels: list[int | None], lines: list[int], require_label: bool) -> None:
    missing = [line for line, label in zip(lines, labels) if label is None]
    if not missing or (not require_label and len(missing) == len(labels)):
        return
    if require_label:
        raise InputError(path, f"line {missing[0]}: missing (empty or NaN) label; "
                               f"{len(missing)} of {len(labels)} rows have no label")
    raise InputError(path, f"labels are missing on {len(missing)} of {len(labels)} rows (first: line "
                           f"{missing[0]}); give a label on every row or on none")


def _image_paths(images_dir: Path, csv_path: Path, table: CsvTable) -> list[Path]:
    if not images_dir.is_dir():
        raise InputError(images_dir, f"image folder not found (needed by {csv_path.name})")
    paths = []
    for name, line in zip(table.names, table.lines):
        path = images_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(csv_path, f"line {line}: file name {name!r} must be relative to {images_dir.name}/")
        if not path.is_file():
            raise InputError(csv_path, f"line {line}: image file {name!r} not found in {images_dir}")
        paths.append(path)
    return paths


def _class_names(data_dir: Path, train: CsvTable, test: CsvTable | None) -> tuple[str, ...]:
    tables = [("train.csv", train)] + ([("test.csv", test)] if test is not None else [])
    classes_file = data_dir / "classes.txt"
    if not classes_file.is_file():
        top = max(label for _, t in tables for label in t.labels if label is not None)
        return default_class_names(top + 1)
    try:
        lines = classes_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(classes_file, f"cannot read: {exc}") from exc
    names = tuple(line.strip() for line in lines if line.strip())
    if len(set(names)) != len(names):
        raise InputError(classes_file, "has duplicate class names")
    for csv_name, table in tables:
        for label, line in zip(table.labels, table.lines):
            if label is not None and label >= len(names):
                raise InputError(data_dir / csv_name, f"line {line}: label {label} is out of range; "
                                                      f"classes.txt names {len(names)} classes (0..{len(names) - 1})")
    return names
