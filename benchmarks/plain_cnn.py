"""The user's obvious alternative: a plain CNN trained for the same wall clock, as its own process.

    python benchmarks/plain_cnn.py --time-limit T [--data-dir D] [--seed S] [--loss ce|focal_inv]
                                   [--output-dir O] [--device auto|cpu|cuda] [--flip on|off]
                                   [--init-seed I] [--save-test-probs]

Network: 3 blocks of conv3x3 (no bias) - BatchNorm - ReLU - max-pool 2 with 32 / 64 / 128 channels,
then flatten -> Linear 256 -> ReLU -> Linear(n_classes): 390,634 parameters on 28x28 grey images.
A block whose input is already 1 px wide skips its pooling (8x8 digits end at 1x1).

Like `python run.py`, T counts from process start (interpreter and imports included) and the work
stops `budget.default_margin_s(T)` before it (4 % of T, at least 2 s). Everything else is the
project's own code, so only the network and the fixed recipe differ from ours:
- data and splits: `load_dataset(D, max_side=32 on CPU / 64 on CUDA)` (pipeline.default_max_side's
  rule) and `make_splits(dataset, seed=S)`; tensors normalised with the training split's
  `channel_stats`, as pipeline._to_run_data does. The held-out test is the same images as ours'
  (result.json `heldout_ids_sha256`; benchmarks/quality_vs_plain_cnn.py checks it against splits.json).
- training: `train_model` with TrainConfig(AdamW lr 3e-3, weight decay 5e-4, batch 128, one-cycle,
  augment (train_model's batch random crop, padding side // 8, + horizontal flip)); loss `ce`
  (plain cross-entropy) or `focal_inv` (focal loss, gamma 2, inverse-frequency class weights);
  best epoch by validation macro-F1.
- epochs: the pipeline's own probe (`training.planning.measure_epoch_seconds`: a few batches of the
  real loop on a copy of the network) and `epochs_that_fit` over the time left, so the one-cycle
  schedule ends before the deadline; the loop still checks the clock before every batch.
The best-by-validation weights are scored once on the held-out test (`classification_metrics`).

Writes O/result.json: method, seed, time_limit_s, wall_s (process elapsed when written), macro_f1,
accuracy, epochs, train_images_per_s, val_macro_f1, and the timing details; with --save-test-probs
also O/test_probs.npz (`probs`: the held-out softmax, float32 (N, n_classes), `labels`: int64 (N,),
in held-out order), written before result.json, so that runs can be averaged (benchmarks/mission_run.py's
five-CNN ensemble). --init-seed I sets the initialisation and shuffling (default: --seed) while
--seed still fixes the splits, so runs of different I share one held-out test. Progress lines go to
stderr. Exit codes: 0 done, 2 bad input (one message, no traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Before torch loads OpenMP, as the CLI does: idle OpenMP threads sleep instead of spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from budget import Budget, default_margin_s, process_elapsed_s  # noqa: E402 (no torch)

LOSSES = {  # --loss -> (TrainConfig.loss, focal_gamma, class_weight_smoothing)
    "ce": ("ce", 0.0, 0.0),
    "focal_inv": ("focal", 2.0, 1.0),
}
METHOD_PREFIX = "plain_"
CHANNELS = (32, 64, 128)
HIDDEN = 256
LR, WEIGHT_DECAY, BATCH_SIZE = 3e-3, 5e-4, 128
MIN_TIME_LIMIT_S = 5.0


def method_name(loss: str) -> str:
    """The benchmark's name for this baseline with `loss` ("ce" -> "plain_ce", "focal_inv" -> "plain_focal")."""
    return METHOD_PREFIX + loss.split("_")[0]


def build_plain_cnn(in_channels: int, n_classes: int, image_side: int):
    """The plain CNN for square `image_side` inputs (see the module docstring)."""
    import torch.nn as nn

    layers, channels, side = [], in_channels, image_side
    for width in CHANNELS:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if side >= 2:
            layers.append(nn.MaxPool2d(2))
            side //= 2
        channels = width
    layers += [nn.Flatten(), nn.Linear(channels * side * side, HIDDEN), nn.ReLU(inplace=True),
               nn.Linear(HIDDEN, n_classes)]
    return nn.Sequential(*layers)


def heldout_fingerprint(ids) -> str:
    """sha256 of the held-out ids in order (compare with splits.json's test ids)."""
    return hashlib.sha256("\n".join(map(str, ids)).encode("utf-8")).hexdigest()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A plain CNN trained for T seconds from process start.")
    parser.add_argument("--time-limit", type=float, required=True, metavar="SECONDS",
                        help="wall-clock limit counted from process start")
    parser.add_argument("--data-dir", type=Path, default=None, help="the data, as for run.py; default: digits demo")
    parser.add_argument("--output-dir", type=Path, default=Path("output/plain_cnn"),
                        help="where result.json goes (default ./output/plain_cnn)")
    parser.add_argument("--seed", type=int, default=0, help="splits, initialisation and shuffling")
    parser.add_argument("--loss", choices=sorted(LOSSES), default="ce",
                        help="ce: cross-entropy; focal_inv: focal loss gamma 2 with inverse-frequency class weights")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--flip", choices=("on", "off"), default="on", help="horizontal flips in the augmentation")
    parser.add_argument("--init-seed", type=int, default=None,
                        help="initialisation and shuffling (default: --seed); --seed still fixes the splits")
    parser.add_argument("--save-test-probs", action="store_true",
                        help="also write O/test_probs.npz (held-out softmax and labels), for averaging runs")
    args = parser.parse_args(argv)
    if not args.time_limit >= MIN_TIME_LIMIT_S:
        parser.error(f"--time-limit must be at least {MIN_TIME_LIMIT_S:g} s, got {args.time_limit:g}")
    return args


def train_for_the_time_left(model, train, val, n_classes: int, *, loss: str, flip: bool, seed: int, time_left,
                            log) -> dict:
    """Plan the one-cycle epochs from a timed probe (training.planning.measure_epoch_seconds, then
    epochs_that_fit over the time left), then train `model` (in place, ending with its
    best-by-validation weights) on TensorData `train`, choosing by `val`. With no time left at all, nothing is
    probed or trained. Returns {result (TrainResult or None), epochs_planned, probe_epoch_s, config}."""
    from automl_pipeline.training import TrainConfig, planning, train_model

    kind, gamma, smoothing = LOSSES[loss]
    config = TrainConfig(epochs=1, batch_size=BATCH_SIZE, lr=LR, weight_decay=WEIGHT_DECAY, optimizer="adamw",
                         schedule="onecycle", loss=kind, focal_gamma=gamma, class_weight_smoothing=smoothing,
                         augment=True, flip=flip, seed=seed)
    if time_left() > 0:
        epoch_s = planning.measure_epoch_seconds(model, train, val, n_classes, config)
        epochs = planning.epochs_that_fit(time_left(), epoch_s)
    else:   # start-up used the whole budget (a very loaded machine): the untrained network is scored, on time
        epoch_s, epochs = math.inf, 0
    config = dataclasses.replace(config, epochs=max(1, epochs))
    log(f"plain CNN, loss {loss}: ~{epoch_s:.2f}s/epoch of {len(train)} images, "
        f"{epochs} one-cycle epochs planned")

    def on_epoch(row: dict) -> None:
        score = row.get("val_macro_f1")
        log(f"epoch {row['epoch']}/{epochs} val macro-F1 {'-' if score is None else f'{score:.4f}'}")

    result = None
    if epochs > 0 and time_left() > 0:
        result = train_model(model, train, val, config, time_left=time_left, n_classes=n_classes, on_epoch=on_epoch)
        model.load_state_dict(result.state_dict)
    return {"result": result, "epochs_planned": epochs, "config": config,
            "probe_epoch_s": round(epoch_s, 4) if math.isfinite(epoch_s) else None}


def training_facts(fit: dict) -> dict:
    """The result.json fields about training, from train_for_the_time_left's dict."""
    result = fit["result"]
    history = result.history if result is not None else []
    result_s = result.seconds if result is not None else 0.0
    # as ours' final.train_images_per_s (phases.common.train_candidate): images / seconds of the epochs, validation included
    images = sum(h["batches"] * h.get("batch_size", BATCH_SIZE) for h in history)
    seconds = sum(h["seconds"] for h in history)
    return {"epochs": result.epochs_done if result is not None else 0, "epochs_planned": fit["epochs_planned"],
            "best_epoch": result.best_epoch if result is not None else 0,
            "stopped_by_deadline": result.stopped_by_deadline if result is not None else True,
            "train_images_per_s": round(images / seconds, 1) if seconds > 0 else None,
            "val_macro_f1": result.best_val_macro_f1 if result is not None else None,
            "train_s": round(result_s, 3), "probe_epoch_s": fit["probe_epoch_s"],
            "train_config": fit["config"].to_json(),
            "history": [{k: h.get(k) for k in ("epoch", "val_macro_f1", "seconds", "batches", "partial")}
                        for h in history]}


def main(argv: list[str] | None = None, *, log=None) -> int:
    """The whole run (see the module docstring); returns the exit code (0, or 2 for bad input)."""
    args = parse_args(argv)
    limit = args.time_limit
    budget = Budget(limit, already_elapsed_s=process_elapsed_s(), margin_s=default_margin_s(limit))
    if log is None:
        def log(message: str) -> None:
            print(f"[{budget.elapsed():6.1f}s | {budget.remaining():6.1f}s left] {message}", file=sys.stderr,
                  flush=True)

    from submission import OutputDirError, check_output_dir, write_json

    try:
        out_dir = check_output_dir(args.output_dir)
    except OutputDirError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    import torch

    from automl_pipeline.data import load_dataset, make_splits
    from automl_pipeline.errors import InputError
    from automl_pipeline.training import (channel_stats, classification_metrics, configure_threads, predict_proba,
                                          resolve_device, to_tensor_data, warm_up)

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    threads = configure_threads()
    max_side = 64 if device.type == "cuda" else 32      # pipeline.default_max_side's rule
    warming = threading.Thread(target=warm_up, args=(device,), name="warm-up", daemon=True)
    warming.start()                                     # torch's one-time costs, while the data loads
    log(f"loading {args.data_dir or 'the built-in digits demo'} on {device}")
    try:
        dataset = load_dataset(args.data_dir, max_side=max_side)
        splits = make_splits(dataset, seed=args.seed)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    mean, std = channel_stats(splits.train.images)      # as pipeline._to_run_data
    tensors = {name: to_tensor_data(getattr(splits, name).images, getattr(splits, name).labels, device, mean, std)
               for name in ("train", "val", "test")}
    height, _, in_channels = dataset.image_shape
    warming.join(timeout=max(0.0, budget.remaining()))

    init_seed = args.seed if args.init_seed is None else args.init_seed
    torch.manual_seed(init_seed)
    model = build_plain_cnn(in_channels, dataset.n_classes, height).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"plain CNN: {n_params:,} parameters on {height}x{height}x{in_channels} images")
    train_start_s = budget.elapsed()
    fit = train_for_the_time_left(model, tensors["train"], tensors["val"], dataset.n_classes, loss=args.loss,
                                  flip=args.flip == "on", seed=init_seed, time_left=budget.remaining, log=log)
    probs = predict_proba(model, tensors["test"].x)
    test = classification_metrics(splits.test.labels, probs.argmax(axis=1), dataset.n_classes)
    if args.save_test_probs:
        import numpy as np

        with open(out_dir / "test_probs.npz", "wb") as handle:
            np.savez(handle, probs=probs, labels=np.asarray(splits.test.labels, dtype=np.int64))
    row = {"method": method_name(args.loss), "seed": args.seed, "init_seed": init_seed, "time_limit_s": limit,
           "wall_s": None,   # set last
           "macro_f1": test["macro_f1"], "accuracy": test["accuracy"], "balanced_accuracy": test["balanced_accuracy"],
           **training_facts(fit),
           "train_start_s": round(train_start_s, 3), 
           "loss": args.loss, "n_params": n_params,
           "data": {"source": dataset.source, "image_size": list(dataset.image_shape),
                    "n_classes": dataset.n_classes, "n_train": len(splits.train), "n_val": len(splits.val),
                    "n_test": len(splits.test), "heldout_source": splits.heldout_source},
           "heldout_ids_sha256": heldout_fingerprint(splits.test.ids),
           "device": str(device), "threads": threads, "torch": torch.__version__,
           "per_class_f1": test["per_class_f1"]}
    row["wall_s"] = round(budget.elapsed(), 3)
    write_json(out_dir / "result.json", row)
    log(f"held-out macro-F1 {test['macro_f1']:.4f}, accuracy {test['accuracy']:.4f}; "
        f"{row['epochs']} epochs; result.json written")
    return 0


if __name__ == "__main__":
    from automl_pipeline.cli import exit_at_once   # no interpreter teardown: it counts against the limit

    exit_at_once(main(sys.argv[1:]))
