"""Build MedMNIST-style .npz benchmark files from Fashion-MNIST (offline).

Reads the idx .gz files of the Debian package `dataset-fashion-mnist`
(found with `dpkg -L dataset-fashion-mnist`, else under /usr/share/datasets/,
or given with --source) and writes train/val/test images (N, 28, 28) uint8,
labels (N, 1) and the class names.

    python benchmarks/make_fashion_npz.py --out benchmarks/data/fmnist_5k.npz --n-train 5000 --n-test 2000
    python benchmarks/make_fashion_npz.py --out benchmarks/data/fmnist_lt100.npz --n-train 5000 --imbalance-ratio 100
    python benchmarks/make_fashion_npz.py --out benchmarks/data/fmnist_colour_lt10.npz --n-train 5000 \
        --imbalance-ratio 10 --colour

Sizes: --n-train N gives the head class n = N // 10 train images; class c keeps
floor(n * R ** (-c / 9)) (at least 1) for --imbalance-ratio R (R = 1: balanced,
so about N in all).  The validation split has --val-fraction of each class's
train count (at least 1), drawn from other Fashion-MNIST training images, so it
is long-tailed like train.  The test split is balanced: --n-test // 10 per class
from the official test file.  Draws are seeded (--seed).

--colour writes RGB images (N, 28, 28, 3) instead: each image gets its own random foreground
and background tint, pixel = background + (foreground - background) * grey / 255 (Fashion-MNIST
garments are bright on black, so the garment takes the foreground tint). Tints are drawn
independently of the label (the two colours of a pair at least MIN_TINT_DISTANCE apart, so the
garment stays visible), so colour carries no class information. The tints come from their own
seeded stream: the same arguments with and without --colour select the same images.
"""
from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np

PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
         "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
IDX_UBYTE = 0x08
MIN_TINT_DISTANCE = 96.0     # Euclidean RGB distance between an image's foreground and background tints
COLOUR_STREAM = 0xC0105      # second seed word of the tint generator (independent of the image draws)
COLOUR_CHUNK = 8192          # images tinted at once (bounds the float32 scratch memory)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip-compressed, unsigned bytes) -> numpy array of its shape."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, n_dims = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != IDX_UBYTE:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims)
    if values.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, found {values.size} values")
    return values.reshape(shape)


def find_source_dir(explicit: Path | None) -> Path | None:
    """The folder holding the four idx files: --source if given, else dpkg's file list or the default location."""
    if explicit is not None:
        return explicit if all((explicit / name).is_file() for name in FILES.values()) else None
    candidates = []
    try:
        listing = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, check=False).stdout
        candidates += [Path(line).parent for line in listing.splitlines() if line.endswith(FILES["train_images"])]
    except OSError:
        pass   # no dpkg on this system
    candidates += list(DEFAULT_DIRS)
    for folder in candidates:
        if all((folder / name).is_file() for name in FILES.values()):
            return folder
    return None


def per_class_counts(n_head: int, n_classes: int, imbalance_ratio: float) -> np.ndarray:
    """Long-tailed counts: class c keeps floor(n_head * R^(-c / (K - 1))), at least 1."""
    exponents = np.arange(n_classes) / (n_classes - 1)
    return np.maximum(1, np.floor(n_head * imbalance_ratio ** (-exponents))).astype(np.int64)


def draw(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator,
         exclude: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices with counts[c] random members of each class c (skipping `exclude`)."""
    pool = np.ones(len(labels), bool)
    if exclude is not None:
        pool[exclude] = False
    chosen = []
    for label, count in enumerate(counts):
        members = np.flatnonzero((labels == label) & pool)
        if count > len(members):
            raise SystemExit(f"class {label} has only {len(members)} images left; asked for {count}")
        chosen.append(rng.choice(members, size=int(count), replace=False))
    return np.sort(np.concatenate(chosen))


def random_tints(n: int, rng: np.random.Generator, *, min_distance: float = MIN_TINT_DISTANCE
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) uint8 RGB colours, (n, 3) each, uniform over the RGB cube; pairs
    closer than `min_distance` are redrawn."""
    fg = rng.integers(0, 256, size=(n, 3))
    bg = rng.integers(0, 256, size=(n, 3))
    close = np.linalg.norm(fg - bg, axis=1) < min_distance
    while close.any():
        fg[close] = rng.integers(0, 256, size=(int(close.sum()), 3))
        bg[close] = rng.integers(0, 256, size=(int(close.sum()), 3))
        close = np.linalg.norm(fg - bg, axis=1) < min_distance
    return fg.astype(np.uint8), bg.astype(np.uint8)


def colourize(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, H, W) uint8 grey -> (N, H, W, 3) uint8: a random foreground/background tint per image."""
    fg, bg = random_tints(len(grey), rng)
    out = np.empty(grey.shape + (3,), dtype=np.uint8)
    for start in range(0, len(grey), COLOUR_CHUNK):
        part = slice(start, start + COLOUR_CHUNK)
        alpha = grey[part, :, :, None].astype(np.float32) / 255.0
        f = fg[part, None, None, :].astype(np.float32)
        b = bg[part, None, None, :].astype(np.float32)
        out[part] = np.clip(np.rint(b + (f - b) * alpha), 0, 255).astype(np.uint8)
    return out


def build(source: Path, *, n_train: int, n_test: int, imbalance_ratio: float, val_fraction: float,
          seed: int, colour: bool = False) -> dict[str, np.ndarray]:
    raw = {key: read_idx(source / name) for key, name in FILES.items()}
    n_classes = len(CLASS_NAMES)
    rng = np.random.default_rng(seed)
    train_counts = per_class_counts(n_train // n_classes, n_classes, imbalance_ratio)
    val_counts = np.maximum(1, np.floor(train_counts * val_fraction)).astype(np.int64)
    train_idx = draw(raw["train_labels"], train_counts, rng)
    val_idx = draw(raw["train_labels"], val_counts, rng, exclude=train_idx)
    test_idx = draw(raw["test_labels"], np.full(n_classes, n_test // n_classes), rng)
    out = {"class_names": np.array(CLASS_NAMES)}
    for split, idx, origin in (("train", train_idx, "train"), ("val", val_idx, "train"), ("test", test_idx, "test")):
        out[f"{split}_images"] = raw[f"{origin}_images"][idx]
        out[f"{split}_labels"] = raw[f"{origin}_labels"][idx].reshape(-1, 1)
    if colour:
        tints = np.random.default_rng([seed, COLOUR_STREAM])
        for split in ("train", "val", "test"):
            out[f"{split}_images"] = colourize(out[f"{split}_images"], tints)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write")
    parser.add_argument("--n-train", type=int, default=60000, help="balanced train size; head class gets N // 10")
    parser.add_argument("--n-test", type=int, default=10000, help="balanced test size (N // 10 per class)")
    parser.add_argument("--imbalance-ratio", type=float, default=1.0, help="head/tail train ratio R >= 1")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="val size per class, relative to train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, default=None, help="folder with the four idx .gz files")
    parser.add_argument("--colour", action="store_true",
                        help="RGB images with a random per-image foreground and background tint (no class signal)")
    args = parser.parse_args(argv)
    if args.imbalance_ratio < 1 or args.n_train < 10 or args.n_test < 10 or not 0 < args.val_fraction < 1:
        parser.error("need --imbalance-ratio >= 1, --n-train/--n-test >= 10 and 0 < --val-fraction < 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = find_source_dir(args.source)
    if source is None:
        print(f"Fashion-MNIST idx files not found. Install them with:\n"
              f"    sudo apt-get install {PACKAGE}\n"
              f"or pass --source FOLDER containing {', '.join(FILES.values())}", file=sys.stderr)
        return 1
    arrays = build(source, n_train=args.n_train, n_test=args.n_test, imbalance_ratio=args.imbalance_ratio,
                   val_fraction=args.val_fraction, seed=args.seed, colour=args.colour)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    counts = np.bincount(arrays["train_labels"][:, 0], minlength=len(CLASS_NAMES))
    print(f"wrote {args.out}: train {len(arrays['train_labels'])} (per class {counts.tolist()}), "
          f"val {len(arrays['val_labels'])}, test {len(arrays['test_labels'])}, "
          f"images {'x'.join(map(str, arrays['train_images'].shape[1:]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
