"""Working resolution: what a larger image side costs in loading and in training time.

    python benchmarks/resolution.py [--sides 16 24 32 48 64 96] [--n-images 300] [--device auto]

Backs the resize rule of automl_pipeline/data/images.py (side = min(native side, cap); cap 32 px on
CPU, 64 px on CUDA). Two measurements per side S:
- load: an ImageFolder of `--n-images` synthetic 480x480 RGB JPEG photos (3 classes) is decoded and
  resized to S x S by the product's own loader (`load_dataset(dir, max_side=S)`); seconds per 1,000 images.
- train: the default stacked network (3 cells, base 32, DEFAULT_GENOTYPE) trained by `train_model` on
  S x S x 3 synthetic tensors, batch 64, one warm-up pass first; images/s, seconds per epoch of 10,000
  images, and how many such epochs fit in an hour.

Prints a markdown table; writes benchmarks/out/resolution_<device>.json (date, machine, command, rows).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEFAULT_OUT, command_line, ensure_repo_on_path, machine_info, markdown_table, now_iso, write_results

ensure_repo_on_path()

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from automl_pipeline.data import load_dataset  # noqa: E402
from automl_pipeline.training import configure_threads, resolve_device  # noqa: E402
from throughput import stacked_model, synthetic, train_once  # noqa: E402

PHOTO_SIDE = 480
N_PHOTO_CLASSES = 3
EPOCH_IMAGES = 10_000
COLUMNS = [("side", "side px", 0), ("load_s_per_1000", "load s / 1,000 photos", 2),
           ("images_per_s", "train images/s", 1), ("epoch_s", "s / epoch of 10k", 1),
           ("epochs_per_hour", "10k-epochs / hour", 1), ("tensor_mib_per_10k", "float32 MiB / 10k images", 1)]


def write_photos(root: Path, n: int, seed: int = 0) -> None:
    """n smooth random 480x480 RGB JPEGs in root/class_k/ (blurred noise: JPEG-typical content)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class_{i % N_PHOTO_CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (PHOTO_SIDE // 16, PHOTO_SIDE // 16, 3), dtype=np.uint8)
        photo = Image.fromarray(small).resize((PHOTO_SIDE, PHOTO_SIDE), Image.BICUBIC)
        photo.save(folder / f"img_{i:05d}.jpg", quality=90)


def time_load(root: Path, side: int, n: int) -> float:
    """Seconds per 1,000 photos for the product's loader to decode and resize to side x side."""
    t0 = time.perf_counter()
    dataset = load_dataset(root, max_side=side)
    seconds = time.perf_counter() - t0
    assert dataset.image_shape[0] == side, dataset.image_shape
    return seconds * 1000.0 / n


def time_train(side: int, device: torch.device, batch: int, steps: int) -> float:
    """Training images/s of the default stacked network at side x side x 3."""
    model = stacked_model(side, 3, 32, device)
    train_once(model, synthetic(batch, side, 3, device, 2), batch, "bf16", False)     # warm-up
    seconds = train_once(model, synthetic(batch * steps, side, 3, device, 3), batch, "bf16", False)
    return batch * steps / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[16, 24, 32, 48, 64, 96])
    parser.add_argument("--n-images", type=int, default=300, help="synthetic 480 px photos to load per side")
    parser.add_argument("--steps", type=int, default=6, help="timed training batches per side")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.n_images < N_PHOTO_CLASSES * 4 or args.steps < 1 or min(args.sides) < 4:
        parser.error("need --n-images >= 12, --steps >= 1 and sides >= 4")

    device = resolve_device(args.device)
    configure_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        write_photos(root, args.n_images)
        for side in args.sides:
            load_s = time_load(root, side, args.n_images)
            ips = time_train(side, device, args.batch, args.steps)
            rows.append({"side": side, "load_s_per_1000": round(load_s, 2), "images_per_s": round(ips, 1),
                         "epoch_s": round(EPOCH_IMAGES / ips, 1), "epochs_per_hour": round(3600 * ips / EPOCH_IMAGES, 1),
                         "tensor_mib_per_10k": round(EPOCH_IMAGES * 3 * side * side * 4 / 2**20, 1)})
            print(f"side {side}: {rows[-1]}", file=sys.stderr, flush=True)
    print(f"device: {device}, batch {args.batch}, {args.steps} timed batches, {args.n_images} photos of "
          f"{PHOTO_SIDE}x{PHOTO_SIDE}\n")
    print(markdown_table(rows, COLUMNS))
    path = write_results(args.out / f"resolution_{device.type}.json",
                         {"date": now_iso(), "machine": machine_info(str(device)), "command": command_line(),
                          "device": str(device), "rows": rows})
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
