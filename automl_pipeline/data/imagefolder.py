"""ImageFolder trees: one sub-folder per class, image files inside.

Two layouts: flat (`root/<class>/<image>`) or split (`root/train/<class>/...`
plus optional `root/val/` and `root/test/` in the same layout, whose classes
must be a subset of train's).  The split layout is recognised when root has a
`train/` folder that itself holds sub-folders.  Class names are the train
folder names, sorted.  Recognised images: png, jpg, jpeg, bmp, gif, tif, tiff,
webp (any case).  Hidden entries (".name") are ignored silently; other
non-image files and nested folders inside a class folder are skipped with a
note.  A class folder without images is an error.  Ids are paths relative to
root, e.g. "cat/001.png" or "train/cat/001.png".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl_pipeline.errors import InputError

from .checks import check_classes
from .dataset import Dataset, ImageSet
from .images import decode_groups, is_image_file

SPLIT_DIRS = ("train", "val", "test")


@dataclass(frozen=True)
class FolderListing:
    paths: tuple[Path, ...]
    class_of: tuple[str, ...]      # class folder name of each path
    notes: tuple[str, ...]


def visible_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def is_split_layout(root: Path) -> bool:
    train = root / "train"
    return train.is_dir() and any(p.is_dir() for p in visible_entries(train))


def is_imagefolder(root: Path) -> bool:
    """True when root (or its train/ folder) has sub-folders; their contents are checked on loading."""
    return any(p.is_dir() for p in visible_entries(root))


def load_imagefolder(root: Path, *, max_side: int) -> Dataset:
    split_layout = is_split_layout(root)
    if split_layout:
        listings = {s: list_class_folders(root / s, root) for s in SPLIT_DIRS if (root / s).is_dir()}
        ignored = [p.name for p in visible_entries(root) if p.name not in listings]
        extra_notes = [f"ignored {ignored} next to the train/val/test folders"] if ignored else []
    else:
        listings = {"train": list_class_folders(root, root)}
        extra_notes = []
    class_names = tuple(sorted(set(listings["train"].class_of)))
    index = {name: i for i, name in enumerate(class_names)}
    for split, listing in listings.items():
        unknown = sorted(set(listing.class_of) - set(class_names))
        if unknown:
            raise InputError(root / split, f"class folder(s) {unknown} do not exist in {root / 'train'}; "
                                           "val/test classes must be a subset of train's")
    labels = {s: np.array([index[c] for c in listing.class_of], dtype=np.int64) for s, listing in listings.items()}
    check_classes(root / "train" if split_layout else root, class_names, labels["train"])

    decoded = decode_groups({s: listing.paths for s, listing in listings.items()}, max_side=max_side)
    notes = [n for listing in listings.values() for n in listing.notes] + extra_notes + list(decoded.notes)
    sets = {s: ImageSet(decoded.arrays[s], labels[s], tuple(p.relative_to(root).as_posix() for p in listing.paths))
            for s, listing in listings.items()}
    return Dataset(format="imagefolder", source=str(root), class_names=class_names, train=sets["train"],
                   val=sets.get("val"), test=sets.get("test"), native_side=decoded.native_side,
                   notes=tuple(notes))


def list_class_folders(folder: Path, root: Path) -> FolderListing:
    """All images of one ImageFolder level, sorted by class then file name."""
    entries = visible_entries(folder)
    class_dirs = [p for p in entries if p.is_dir()]
    if not class_dirs:
        raise InputError(folder, "has no class sub-folders; expected <class name>/<image files>")
    notes = []
    loose = [p.name for p in entries if p.is_file()]
    if loose:
        where = folder.relative_to(root).as_posix()
        notes.append(f"ignored {len(loose)} file(s) outside class folders in {where}: {_preview(loose)}")
    paths, class_of = [], []
    for class_dir in class_dirs:
        images = []
        for entry in visible_entries(class_dir):
            relative = entry.relative_to(root).as_posix()
            if entry.is_file() and is_image_file(entry):
                images.append(entry)
            elif entry.is_dir():
                notes.append(f"skipped nested folder {relative} (not searched)")
            else:
                notes.append(f"skipped non-image file {relative}")
        if not images:
            raise InputError(class_dir, "class folder has no image files "
                                        "(expected .png/.jpg/.jpeg/.bmp/.gif/.tif/.tiff/.webp)")
        paths += images
        class_of += [class_dir.name] * len(images)
    return FolderListing(tuple(paths), tuple(class_of), tuple(notes))


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
