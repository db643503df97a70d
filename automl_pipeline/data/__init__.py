"""Data layer: load and validate a dataset, resize images, split it.

    dataset = load_dataset(path_or_None, max_side=64)   # InputError on bad input
    splits = make_splits(dataset, seed=0)
"""
from .dataset import Dataset, ImageSet
from .images import working_side
from .loading import load_dataset
from .splits import HELDOUT_CARVED, HELDOUT_FROM_DATA, Splits, make_splits

__all__ = ["Dataset", "ImageSet", "load_dataset", "working_side", "Splits", "make_splits",
           "HELDOUT_CARVED", "HELDOUT_FROM_DATA"]
