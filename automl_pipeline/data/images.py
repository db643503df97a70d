"""Decode image files with Pillow into one uint8 array of a single square size.

Two passes over the files: the first reads only headers (size and mode, cheap)
to choose the working side and the channel count; the second decodes, converts
and resizes each file straight into a preallocated array, so peak memory is the
final array plus one image at a time.

Resize rule (`working_side`): side = min(native_side, max_side), where
native_side is the median longest side (max(H, W)) of the *train* images.
Every image is resized to (side, side) with Pillow's bilinear filter (with
`reducing_gap`, i.e. anti-aliased downscaling); a non-square image is stretched
to the square (its aspect ratio is not kept).

Colour rule: if every image has a grey mode (1, L, LA, I, I;16*, F) the set is
grey (C=1); otherwise every image is converted to RGB (C=3). An RGB file whose
channels happen to be equal still counts as colour. Alpha channels are dropped,
palette and CMYK images are converted to RGB, and 16-bit / 32-bit grey images
are scaled to 0..255 (see `_high_depth_to_uint8`).
"""
from __future__ import annotations

import statistics
import struct
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from automl_pipeline.errors import InputError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
RESAMPLE = Image.Resampling.BILINEAR
REDUCING_GAP = 2.0
# What Pillow (and the decoders under it) raise for files it cannot decode.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error,
                 Image.DecompressionBombError)
_DECODE_THREADS = 4   # Pillow releases the GIL while decoding


@dataclass(frozen=True)
class ImageHeader:
    path: Path
    width: int
    height: int
    mode: str

    @property
    def longest_side(self) -> int:
        return max(self.width, self.height)


@dataclass(frozen=True)
class DecodedGroups:
    """Result of `decode_groups`: one array per group, plus what was done."""
    arrays: dict[str, np.ndarray]   # group name -> uint8 (N, side, side, C)
    native_side: int
    notes: tuple[str, ...]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def working_side(native_side: int, max_side: int) -> int:
    """The square side every image is resized to: min(native_side, max_side)."""
    if native_side < 1 or max_side < 1:
        raise ValueError(f"sides must be positive, got native_side={native_side}, max_side={max_side}")
    return min(int(native_side), int(max_side))


def read_header(path: Path) -> ImageHeader:
    """Size and mode without decoding the pixels; InputError if Pillow cannot identify it."""
    try:
        with Image.open(path) as img:
            return ImageHeader(path, img.width, img.height, img.mode)
    except DECODE_ERRORS as exc:
        raise InputError(path, f"cannot decode image: {exc}") from exc


def decode_image(path: Path, *, side: int, channels: int) -> np.ndarray:
    """One file -> uint8 (side, side, channels); any decode failure -> InputError naming the file."""
    target_mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as img:
            if img.width > side or img.height > side:
                img.draft(img.mode, (side, side))   # JPEG only: decode at a reduced scale, >= side
            img.load()   # force a full decode so truncated files fail here
            converted = _convert(img, target_mode)
            if converted.size != (side, side):
                converted = converted.resize((side, side), RESAMPLE, reducing_gap=REDUCING_GAP)
            array = np.asarray(converted, dtype=np.uint8)
    except DECODE_ERRORS as exc:
        raise InputError(path, f"cannot decode image: {exc}") from exc
    return array.reshape(side, side, channels)


def resize_array(images: np.ndarray, side: int) -> np.ndarray:
    """Resize uint8 (N, H, W, C) images to (N, side, side, C) with the same filter as files."""
    n, _, _, channels = images.shape
    out = np.empty((n, side, side, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
        resized = pil.resize((side, side), RESAMPLE, reducing_gap=REDUCING_GAP)
        out[i] = np.asarray(resized, dtype=np.uint8).reshape(side, side, channels)
    return out


def decode_groups(groups: dict[str, Sequence[Path]], *, max_side: int,
                  side_group: str = "train") -> DecodedGroups:
    """Decode named groups of files to one shared (side, side, C).

    The side comes from `side_group`'s headers (see `working_side`); the channel
    count from all groups (one colour image anywhere makes everything RGB).
    """
    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        headers = {name: list(pool.map(read_header, paths)) for name, paths in groups.items()}
    all_headers = [h for hs in headers.values() for h in hs]
    native_side = int(round(statistics.median(h.longest_side for h in headers[side_group])))
    side = working_side(native_side, max_side)
    channels = 1 if all(h.mode in GREY_MODES for h in all_headers) else 3
    arrays = {}
    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        for name, paths in groups.items():
            out = np.empty((len(paths), side, side, channels), dtype=np.uint8)
            for i, image in enumerate(pool.map(lambda p: decode_image(p, side=side, channels=channels), paths)):
                out[i] = image
            arrays[name] = out
    notes = conversion_notes(all_headers, channels) + resize_notes(all_headers, side, native_side, max_side)
    return DecodedGroups(arrays, native_side, tuple(notes))


def conversion_notes(headers: Sequence[ImageHeader], channels: int) -> list[str]:
    """Human-readable lines for the report on mode conversions."""
    target = "L" if channels == 1 else "RGB"
    counts = Counter(h.mode for h in headers if h.mode != target)
    notes = []
    for mode, count in sorted(counts.items()):
        how = "scaled" if mode in HIGH_DEPTH_MODES else "converted"
        what = "grey (L)" if channels == 1 else "RGB"
        notes.append(f"{how} {count} {mode} image{'s' * (count != 1)} to {what}")
    return notes


def resize_notes(headers: Sequence[ImageHeader], side: int, native_side: int, max_side: int) -> list[str]:
    resized = sum(1 for h in headers if (h.width, h.height) != (side, side))
    if not resized:
        return []
    stretched = sum(1 for h in headers if h.width != h.height)
    note = (f"resized {resized} image{'s' * (resized != 1)} to {side}x{side} "
            f"(native side {native_side} = median longest train side, max_side {max_side})")
    if stretched:
        note += f"; {stretched} non-square image{'s' * (stretched != 1)} stretched (aspect ratio not kept)"
    return [note]


def _convert(img: Image.Image, target_mode: str) -> Image.Image:
    """Any Pillow mode -> "L" or "RGB" (alpha dropped, palette expanded, deep greys scaled)."""
    if img.mode in HIGH_DEPTH_MODES:
        img = Image.fromarray(_high_depth_to_uint8(np.asarray(img), img.mode), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")   # palette with transparency converts cleanly via RGBA
    if img.mode == target_mode:
        return img
    return img.convert(target_mode)


def _high_depth_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """16-bit modes: value / 257 (65535 -> 255).  32-bit int / float modes: kept if
    already within 0..255, divided by 257 if within 0..65535, else min-max scaled."""
    values = pixels.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = values / 257.0
    else:
        low, high = float(values.min()), float(values.max())
        if low >= 0 and high <= 255:
            scaled = values
        elif low >= 0 and high <= 65535:
            scaled = values / 257.0
        else:
            scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
