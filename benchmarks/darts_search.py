"""Benchmark the DARTS search: seconds per supernet epoch, images/s, peak memory,
skip counts per epoch and the derived genotype.

    python benchmarks/darts_search.py                       # sklearn digits (8x8 grey), CPU
    python benchmarks/darts_search.py --data retina.npz --device cuda --epochs 5

--data takes a MedMNIST-style .npz (train_images, train_labels, val_images, val_labels).
Prints a table and writes benchmarks/out/darts_search.json (or --out).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automl_pipeline.darts import DartsConfig, estimate_epoch_seconds, run_darts  # noqa: E402
from automl_pipeline.training.tensors import channel_stats, to_tensor_data  # noqa: E402


def load(path: str | None, n_train: int, n_val: int) -> tuple[dict, str]:
    if path is None:
        from sklearn.datasets import load_digits
        d = load_digits()
        images = (d.images * 255 / 16).round().astype(np.uint8)[..., None]
        rng = np.random.default_rng(0)
        order = rng.permutation(len(images))
        tr, va = order[:n_train], order[n_train:n_train + n_val]
        return {"train": (images[tr], d.target[tr]), "val": (images[va], d.target[va])}, "sklearn digits"
    with np.load(path) as z:
        def part(split: str, n: int):
            x = z[f"{split}_images"][:n]
            return (x if x.ndim == 4 else x[..., None]), z[f"{split}_labels"].reshape(-1)[:n].astype(np.int64)
        return {"train": part("train", n_train), "val": part("val", n_val)}, path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="MedMNIST-style .npz (default: sklearn digits)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-cells", type=int, default=3)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-val", type=int, default=512)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (oversubscription is very slow)")
    p.add_argument("--second-order", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "darts_search.json"))
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    splits, source = load(args.data, args.n_train, args.n_val)
    mean, std = channel_stats(splits["train"][0])
    train = to_tensor_data(*splits["train"], device, mean, std)
    val = to_tensor_data(*splits["val"], device, mean, std)
    n_classes = int(max(train.y.max(), val.y.max()).item()) + 1
    cfg = DartsConfig(epochs=args.epochs, batch_size=args.batch_size, n_cells=args.n_cells,
                      base_channels=args.base_channels, second_order=args.second_order)
    loss = torch.nn.CrossEntropyLoss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    estimate = estimate_epoch_seconds(train, val, n_classes, cfg, loss)
    t0 = time.perf_counter()
    res = run_darts(train, val, n_classes, cfg, time_left=lambda: 1e9, loss=loss)
    wall = time.perf_counter() - t0
    images = res.steps_run * min(cfg.batch_size, len(train))
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result = {
        "source": source, "device": str(device), "threads": args.threads, "image_shape": list(train.x.shape[1:]),
        "n_train": len(train), "n_val": len(val), "config": cfg.to_json(),
        "estimated_epoch_s": estimate, "epoch_seconds": res.epoch_seconds, "wall_s": wall,
        "train_images_per_s": images / max(sum(res.epoch_seconds), 1e-9),
        "peak_memory_mib": peak, "peak_memory_kind": "cuda allocated" if device.type == "cuda" else "process max RSS",
        "skip_count_per_epoch": res.skip_count_per_epoch, "stop_reason": res.stop_reason,
        "val_acc_per_epoch": [h["val_acc"] for h in res.history], "genotype": res.genotype.to_json(),
    }
    print(f"DARTS search on {source} ({len(train)} train / {len(val)} val, {tuple(train.x.shape[1:])}), "
          f"{device}, {args.threads} thread(s)")
    print(f"{'epoch':>5} {'seconds':>8} {'skips':>5} {'beta':>5} {'train acc':>9} {'val acc':>7}")
    for h in res.history:
        print(f"{h['epoch']:>5} {h['seconds']:>8.2f} {h['skip_count']:>5} {h['beta']:>5.2f} "
              f"{h['train_acc']:>9.3f} {h['val_acc']:>7.3f}")
    print(f"estimated epoch {estimate:.2f} s; {result['train_images_per_s']:.0f} train images/s; "
          f"peak memory {peak:.0f} MiB ({result['peak_memory_kind']}); stop: {res.stop_reason}")
    print("genotype:", res.genotype)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
