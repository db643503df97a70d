"""Build a RetinaMNIST-shaped hard set from Fashion-MNIST (offline, deterministic).

    python benchmarks/make_retina_like.py [--out benchmarks/data/retina_like.npz] [--seed 0]
        [--purity P] [--grade-noise F] [--blur SIGMA] [--contrast C] [--pixel-noise STD]

RetinaMNIST (MedMNIST v2) is 5 ordinal grades of diabetic retinopathy, 28x28 RGB, 1,080 train /
120 val / 400 test images with train counts 486/128/206/194/66, val 54/14/21/22/9 and test
174/46/92/68/20; its reference scores are test accuracy 0.524 (ResNet-18 at 28 px) and 0.531 (Google
AutoML Vision). This script writes a MedMNIST-style .npz of exactly those shapes and counts (keys
train_images/train_labels/val_images/val_labels/test_images/test_labels, uint8 images (N, 28, 28, 3),
labels (N, 1), plus class_names "grade 0".."grade 4"), made hard the same ways:

1. Confusable content on an ordinal chain. Grade g's "source" is the g-th of five upper-body
   Fashion-MNIST classes ordered by confusability: T-shirt/top, Shirt, Pullover, Coat, Dress
   (SOURCES). An image of content grade t shows its own source with probability --purity and
   otherwise a neighbouring grade's source (t - 1 or t + 1 with equal chance; one side at the ends).
2. Grade noise between neighbouring grades: the image delivered under label g has content grade
   g with probability 1 - --grade-noise, else g - 1 or g + 1 (equal chance, one side at the ends),
   so a fraction of labels sits one grade off, in every split (RetinaMNIST's own labels are
   noisy in its test split too). The label counts above stay exact.
3. Blur: a separable Gaussian of sigma --blur px on the grey image (fine detail goes, as it does in
   a 28 px fundus photograph).
4. Low contrast and a colour tint: the grey image is squeezed to --contrast of its range around
   mid-grey, then tinted fundus-like: background dark red-brown, garment orange-red, each with a
   per-image jitter of the two tints (TINT_JITTER) that carries no grade information.
5. Pixel noise: Gaussian noise of std --pixel-noise (0-255 scale), independent per channel.

Images come from Fashion-MNIST's train file for train and val (disjoint) and its test file for
test, drawn without replacement per source class. Every random choice comes from one
numpy Generator seeded with --seed, in a fixed order: the same arguments write the same file.
The Fashion loader is make_fashion_npz.py's (`find_source_dir`, `read_idx`).

The defaults were tuned so that benchmarks/plain_cnn.py lands at a held-out test accuracy of
about 0.5-0.6 (see benchmarks/RESULTS.md, "RetinaMNIST-shaped hard set").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fashion_npz as fashion  # noqa: E402  (benchmarks/ script: the Fashion-MNIST loader)

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "retina_like.npz"
COUNTS = {"train": (486, 128, 206, 194, 66), "val": (54, 14, 21, 22, 9), "test": (174, 46, 92, 68, 20)}
ORIGIN = {"train": "train", "val": "train", "test": "test"}   # which Fashion-MNIST file each split draws from
SOURCES = (0, 6, 2, 4, 3)   # Fashion classes of grades 0-4: T-shirt/top, Shirt, Pullover, Coat, Dress
CLASS_NAMES = tuple(f"grade {g}" for g in range(len(SOURCES)))
SIDE = 28
BACKGROUND_TINT = (40.0, 14.0, 6.0)      # RGB of the dark fundus background
FOREGROUND_TINT = (215.0, 105.0, 45.0)   # RGB of the bright (garment) foreground
TINT_JITTER = 25.0                       # std of each image's per-channel tint offsets
DEFAULTS = {"purity": 0.7, "grade_noise": 0.15, "blur": 1.0, "contrast": 0.6, "pixel_noise": 12.0}


def neighbour(grades: np.ndarray, move: np.ndarray, rng: np.random.Generator, n_grades: int) -> np.ndarray:
    """grades with those where `move` is True shifted by one to a random neighbour (inward at the ends)."""
    step = np.where(rng.random(len(grades)) < 0.5, -1, 1)
    step = np.where(grades == 0, 1, np.where(grades == n_grades - 1, -1, step))
    return np.where(move, grades + step, grades)


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """(N, H, W) float images blurred by a separable Gaussian of `sigma` px (edges reflected)."""
    if sigma <= 0:
        return images
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = images
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(taps))
    return out


def tint(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, H, W) float in [0, 255] -> (N, H, W, 3) float: background + (foreground - background) * grey / 255,
    both tints jittered per image."""
    n = len(grey)
    bg = np.asarray(BACKGROUND_TINT) + rng.normal(0.0, TINT_JITTER, size=(n, 3))
    fg = np.asarray(FOREGROUND_TINT) + rng.normal(0.0, TINT_JITTER, size=(n, 3))
    alpha = grey[..., None] / 255.0
    return bg[:, None, None, :] + (fg - bg)[:, None, None, :] * alpha


def split_images(pool_images: np.ndarray, pool_labels: np.ndarray, counts, used: np.ndarray, *, purity: float,
                 grade_noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(grey uint8 images (N, 28, 28), labels (N,)) of one split; marks the drawn pool indices in `used`."""
    n_grades = len(SOURCES)
    labels = np.repeat(np.arange(n_grades), counts)
    labels = labels[rng.permutation(len(labels))]
    content = neighbour(labels, rng.random(len(labels)) < grade_noise, rng, n_grades)
    shown = neighbour(content, rng.random(len(labels)) >= purity, rng, n_grades)
    chosen = np.empty(len(labels), dtype=np.int64)
    for grade, fashion_class in enumerate(SOURCES):
        slots = np.flatnonzero(shown == grade)
        members = np.flatnonzero((pool_labels == fashion_class) & ~used)
        if len(slots) > len(members):
            raise SystemExit(f"Fashion class {fashion_class} has only {len(members)} images left; asked for {len(slots)}")
        picks = rng.choice(members, size=len(slots), replace=False)
        used[picks] = True
        chosen[slots] = picks
    return pool_images[chosen], labels


def build(source: Path, *, seed: int = 0, purity: float = DEFAULTS["purity"],
          grade_noise: float = DEFAULTS["grade_noise"], blur: float = DEFAULTS["blur"],
          contrast: float = DEFAULTS["contrast"], pixel_noise: float = DEFAULTS["pixel_noise"]) -> dict[str, np.ndarray]:
    """The arrays of the .npz (see the module docstring)."""
    raw = {key: fashion.read_idx(source / name) for key, name in fashion.FILES.items()}
    rng = np.random.default_rng(seed)
    used = {origin: np.zeros(len(raw[f"{origin}_labels"]), bool) for origin in ("train", "test")}
    out: dict[str, np.ndarray] = {"class_names": np.array(CLASS_NAMES)}
    for split, counts in COUNTS.items():
        origin = ORIGIN[split]
        grey, labels = split_images(raw[f"{origin}_images"], raw[f"{origin}_labels"], counts, used[origin],
                                    purity=purity, grade_noise=grade_noise, rng=rng)
        image = gaussian_blur(grey.astype(np.float64), blur)
        image = 127.5 + (image - 127.5) * contrast
        image = tint(image, rng) + rng.normal(0.0, pixel_noise, size=image.shape + (3,))
        out[f"{split}_images"] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        out[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the .npz to write (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", type=Path, default=None, help="folder with the four Fashion-MNIST idx .gz files")
    parser.add_argument("--purity", type=float, default=DEFAULTS["purity"],
                        help="chance an image shows its content grade's own Fashion class (else a neighbour's)")
    parser.add_argument("--grade-noise", type=float, default=DEFAULTS["grade_noise"],
                        help="fraction of labels one grade off their content")
    parser.add_argument("--blur", type=float, default=DEFAULTS["blur"], help="Gaussian blur sigma, px (0: none)")
    parser.add_argument("--contrast", type=float, default=DEFAULTS["contrast"],
                        help="grey range kept around mid-grey before tinting (1: all)")
    parser.add_argument("--pixel-noise", type=float, default=DEFAULTS["pixel_noise"],
                        help="std of the per-channel Gaussian pixel noise (0-255 scale)")
    args = parser.parse_args(argv)
    if not (0 <= args.purity <= 1 and 0 <= args.grade_noise <= 1 and 0 < args.contrast <= 1
            and args.blur >= 0 and args.pixel_noise >= 0):
        parser.error("need 0 <= --purity, --grade-noise <= 1, 0 < --contrast <= 1, --blur >= 0, --pixel-noise >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = fashion.find_source_dir(args.source)
    if source is None:
        print(f"Fashion-MNIST idx files not found. Install them with:\n"
              f"    sudo apt-get install {fashion.PACKAGE}\n"
              f"or pass --source FOLDER containing {', '.join(fashion.FILES.values())}", file=sys.stderr)
        return 1
    arrays = build(source, seed=args.seed, purity=args.purity, grade_noise=args.grade_noise, blur=args.blur,
                   contrast=args.contrast, pixel_noise=args.pixel_noise)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    sizes = ", ".join(f"{split} {len(arrays[f'{split}_labels'])} "
                      f"{np.bincount(arrays[f'{split}_labels'][:, 0], minlength=len(SOURCES)).tolist()}"
                      for split in COUNTS)
    print(f"wrote {args.out}: {sizes}; images {'x'.join(map(str, arrays['train_images'].shape[1:]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
