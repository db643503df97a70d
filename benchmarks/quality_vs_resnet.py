"""Quality at equal budget: ours (`python run.py`) vs a torchvision ResNet-18 trained for the same wall-clock.

    python benchmarks/quality_vs_resnet.py --data digits --time-limit 60 --seeds 0 1 2
    python benchmarks/quality_vs_resnet.py --data fashion --time-limit 300 --seeds 0 1 2 [--n-train 5000]
    python benchmarks/quality_vs_resnet.py --data fashion-lt --time-limit 300 --seeds 0 1 2   # imbalance ratio 100

Per seed S:
- ours: `python run.py --time-limit T --data-dir D --output-dir OUT/ours-seedS --seed S --quiet` as a
  subprocess; its report.json gives the held-out test metrics and wall_s (process start to exit).
- ResNet-18: in this process, the same data (`load_dataset(D, max_side=default_max_side(device))`) and
  the same splits (`make_splits(dataset, seed=S)`; the held-out ids are checked against
  OUT/ours-seedS/splits.json). torchvision resnet18 with a 3x3 stride-1 conv1 and no max-pool, AdamW +
  OneCycle, plain cross-entropy, batch random crop + horizontal flip (--flip; auto: no flip on digits).
  Its T counts from the start of training (data loading, tensor set-up and a torch warm-up are not
  counted; ours pays for them inside its T). The first epoch runs at OneCycle's starting LR and is timed
  (cut after 15% of T when an epoch is that slow); the remaining time then fixes the number of OneCycle
  epochs (or steps, when not even one epoch fits), so the schedule completes. Best checkpoint by val macro-F1,
  evaluated once on the held-out test.

Results: a markdown table on stdout and benchmarks/out/quality_<data>_<T>s.json (rewritten after every run).
Exit code 0 also when a run fails (the failure is in the table) or Fashion-MNIST is not installed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable


import common

common.ensure_repo_on_path()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402

DATASETS = ("digits", "fashion", "fashion-lt")
LT_RATIO = 100.0
METHOD_OURS = "ours"
METHOD_RESNET = "resnet18"
TIMING_NOTE = ("ours: wall_s is the whole run.py process (start-up, data loading, search, final fit), limit T. "
               "resnet18: T counts from the start of its training (data loading, tensor set-up and a "
               "torch warm-up in the benchmark process are not counted: load_s); wall_s is training incl. "
               "per-epoch validation; the one held-out test evaluation comes after.")
TABLE_COLUMNS = [("dataset", "dataset", 0), ("method", "method", 0), ("seed", "seed", 0),
                 ("status", "status", 0), ("macro_f1", "test macro-F1", 4), ("accuracy", "accuracy", 4),
                 ("wall_s", "wall s", 1), ("epochs", "epochs", 0)]
SUMMARY_METRICS = [("macro_f1", "test macro-F1", 4), ("accuracy", "accuracy", 4), ("wall_s", "wall s", 1)]


# --------------------------------------------------------------------------- the baseline network


MIN_ONECYCLE_STEPS = 5   # pct_start 0.25: at least one step of warm-up

def build_resnet18(in_channels: int, n_classes: int) -> nn.Module:
    """torchvision ResNet-18 for small images: 3x3 stride-1 conv1 on `in_channels`, no max-pool."""
    model = torchvision.models.resnet18(weights=None, num_classes=n_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _state_copy(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def plan_onecycle_steps(remaining_s: float, batch_s: float, val_s: float, n_batches: int,
                        probe_was_full_epoch: bool) -> int:
    """OneCycle steps that fit in `remaining_s`: an epoch costs n_batches * batch_s + one validation.

    After a full timed first epoch the plan is whole epochs; when even one epoch did not fit in the
    probe, it is a number of steps (a fraction of an epoch or a few), so the schedule still completes.
    """
    epoch_s = n_batches * batch_s + val_s
    if remaining_s <= 0 or epoch_s <= 0:
        return 0
    if probe_was_full_epoch:
        return int(remaining_s // epoch_s) * n_batches
    return max(0, int(remaining_s / epoch_s * n_batches))


def train_resnet(train, val, n_classes: int, device: torch.device, *, time_limit_s: float, seed: int,
                 batch_size: int = 128, max_lr: float = 2e-3, weight_decay: float = 5e-2, flip: bool = True,
                 probe_fraction: float = 0.15, clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] = print) -> dict:
    """Train ResNet-18 on TensorData `train` for `time_limit_s` from now; best-by-val-macro-F1 weights.

    Epoch 1 runs at OneCycle's starting LR (max_lr / 25) and is timed; it stops early once it has
    used `probe_fraction` of the time. The rest of the time then fixes the OneCycle length
    (`plan_onecycle_steps`: whole epochs when the first epoch completed, else steps). Validation
    after every epoch and at the end of the schedule; no batch is started that is expected to
    overrun the limit.

    Returns {"model" (best weights loaded), epochs, onecycle_steps, onecycle_epochs, first_epoch_s,
    batch_s, best_epoch, best_val_macro_f1, train_s, stopped_by_deadline, history}.
    """
    from automl_pipeline.training import augment_batch, autocast_context, classification_metrics, predict

    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    model = build_resnet18(int(train.x.shape[1]), n_classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    div_factor = 25.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=max_lr / div_factor, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(train)
    batch_size = max(2, min(batch_size, n))
    n_batches = n // batch_size + (1 if n % batch_size >= 2 else 0)   # never a batch of 1 (BatchNorm)
    y_val = val.y.cpu().numpy()

    start = clock()
    deadline = start + time_limit_s
    st = {"batch_s": None, "val_s": 0.0, "stopped": False, "epoch": 1, "pos": 0, "perm": None,
          "epoch_start": start, "epoch_batches": 0}
    history: list[dict] = []
    best = {"f1": -1.0, "epoch": -1, "weights": None}

    def step(scheduler) -> bool:
        """One batch of the current epoch; False (and nothing done) when it would overrun the limit."""
        if st["batch_s"] is not None and deadline - clock() < st["batch_s"]:
            st["stopped"] = True
            return False
        if st["perm"] is None:
            st["perm"] = torch.randperm(n, generator=generator, device=device)
        t0 = clock()
        model.train()
        b = st["pos"]
        idx = st["perm"][b * batch_size:(b + 1) * batch_size]
        xb = augment_batch(train.x[idx], generator, flip=flip)
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast_context(device):
            loss = loss_fn(model(xb).float(), train.y[idx])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {st['epoch']}, batch {b}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = clock() - t0
        st["batch_s"] = dt if st["batch_s"] is None else 0.8 * st["batch_s"] + 0.2 * dt
        st["pos"] += 1
        st["epoch_batches"] += 1
        return True

    def end_epoch() -> None:
        """Validate, checkpoint, and start the next epoch (new permutation)."""
        if st["epoch_batches"] == 0:
            return
        t0 = clock()
        metrics = classification_metrics(y_val, predict(model, val.x, batch_size=512), n_classes)
        st["val_s"] = clock() - t0
        history.append({"epoch": st["epoch"], "batches": st["epoch_batches"], "val_macro_f1": metrics["macro_f1"],
                        "val_accuracy": metrics["accuracy"], "lr": optimizer.param_groups[0]["lr"],
                        "seconds": round(clock() - st["epoch_start"], 3), "t_s": round(clock() - start, 3)})
        if metrics["macro_f1"] > best["f1"]:
            best.update(f1=metrics["macro_f1"], epoch=st["epoch"], weights=_state_copy(model))
        st.update(epoch=st["epoch"] + 1, pos=0, perm=None, epoch_start=clock(), epoch_batches=0)

    # epoch 1 at the starting LR, timed; cut short after probe_fraction of the time
    probe_limit = start + probe_fraction * time_limit_s
    while st["pos"] < n_batches and (st["pos"] == 0 or clock() < probe_limit) and step(None):
        pass
    probe_batches = st["pos"]
    probe_full = probe_batches == n_batches
    probe_s = clock() - start
    batch_s = probe_s / max(probe_batches, 1)
    if probe_full:
        end_epoch()
    else:   # measure one validation pass for the plan without ending the epoch
        t0 = clock()
        predict(model, val.x, batch_size=512)
        st["val_s"] = clock() - t0
    first_epoch_s = clock() - start
    # the time left, less the validation after the last step (the one after each full epoch is in the plan)
    left = deadline - clock() - (0.0 if probe_full else st["val_s"])
    steps = 0 if st["stopped"] else plan_onecycle_steps(left, batch_s, st["val_s"], n_batches, probe_full)
    log(f"resnet18: {probe_batches}/{n_batches} batches timed in {probe_s:.2f}s ({batch_s:.3f}s/batch, "
        f"validation {st['val_s']:.2f}s); OneCycle over {steps} steps ({steps / n_batches:.2f} epochs)")
    if steps >= MIN_ONECYCLE_STEPS:   # fewer: OneCycleLR's warm-up phase has length 0 (ZeroDivisionError)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps,
                                                        div_factor=div_factor, pct_start=0.25)
        for _ in range(steps):
            if st["pos"] >= n_batches:
                end_epoch()
            if not step(scheduler):
                break
    end_epoch()
    train_s = clock() - start
    if best["weights"] is not None:
        model.load_state_dict(best["weights"])
    return {"model": model, "epochs": len(history), "onecycle_steps": steps,
            "onecycle_epochs": round(steps / n_batches, 3), "first_epoch_s": round(first_epoch_s, 3),
            "batch_s": round(batch_s, 4), "best_epoch": best["epoch"], "best_val_macro_f1": best["f1"],
            "train_s": round(train_s, 3), "stopped_by_deadline": st["stopped"], "history": history}


def resnet_run(data_dir: Path | None, *, seed: int, time_limit_s: float, device: torch.device,
               ours_dir: Path | None, flip: bool = True, log: Callable[[str], None] = print) -> dict:
    """The ResNet-18 row for one seed: same data, same splits (checked), same held-out test."""
    from automl_pipeline.data import load_dataset, make_splits
    from automl_pipeline.pipeline import default_max_side
    from automl_pipeline.training import channel_stats, classification_metrics, predict, to_tensor_data, warm_up

    t_load = time.monotonic()
    dataset = load_dataset(data_dir, max_side=default_max_side(device))
    splits = make_splits(dataset, seed=seed)
    splits_checked = False
    if ours_dir is not None:
        ours_splits = common.read_json(ours_dir / "splits.json")
        if ours_splits is not None:
            theirs = list(ours_splits.get("test", {}).get("ids", []))
            if list(splits.test.ids) != theirs:
                raise AssertionError(f"held-out ids differ from {ours_dir / 'splits.json'} "
                                     f"({len(splits.test.ids)} vs {len(theirs)} ids)")
            splits_checked = True
    mean, std = channel_stats(splits.train.images)
    tensors = {name: to_tensor_data(getattr(splits, name).images, getattr(splits, name).labels, device, mean, std)
               for name in ("train", "val", "test")}
    warm_up(device)   # one-time costs (torch._dynamo import on the first optimizer, CUDA kernels): not in T
    load_s = time.monotonic() - t_load
    result = train_resnet(tensors["train"], tensors["val"], dataset.n_classes, device,
                          time_limit_s=time_limit_s, seed=seed, flip=flip, log=log)
    test = classification_metrics(splits.test.labels, predict(result["model"], tensors["test"].x),
                                  dataset.n_classes)
    return {"status": "complete", "error": None, "macro_f1": test["macro_f1"], "accuracy": test["accuracy"],
            "balanced_accuracy": test["balanced_accuracy"], "wall_s": result["train_s"], "load_s": round(load_s, 3),
            "epochs": result["epochs"], "onecycle_steps": result["onecycle_steps"],
            "onecycle_epochs": result["onecycle_epochs"], "first_epoch_s": result["first_epoch_s"],
            "batch_s": result["batch_s"], "best_epoch": result["best_epoch"],
            "best_val_macro_f1": result["best_val_macro_f1"], "stopped_by_deadline": result["stopped_by_deadline"],
            "splits_checked": splits_checked, "image_shape": list(dataset.image_shape),
            "n_train": len(splits.train), "n_val": len(splits.val), "n_test": len(splits.test),
            "heldout_source": splits.heldout_source, "flip": flip, "history": result["history"]}


# --------------------------------------------------------------------------- the benchmark


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Quality at equal budget: ours vs a ResNet-18 baseline.")
    parser.add_argument("--data", choices=DATASETS, required=True,
                        help="digits (built-in demo), fashion (Fashion-MNIST subset), fashion-lt (ratio 100)")
    parser.add_argument("--time-limit", type=float, required=True, metavar="T", help="seconds per run and method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--n-train", type=int, default=5000, help="Fashion-MNIST train size (head class N // 10)")
    parser.add_argument("--n-test", type=int, default=2000, help="Fashion-MNIST held-out test size")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT, help="results folder (benchmarks/out)")
    parser.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                        help="ResNet-18 horizontal-flip augmentation; auto: off for digits, on otherwise")
    parser.add_argument("--slack", type=float, default=common.DEFAULT_SLACK_S,
                        help="seconds over T after which a run.py run is killed")
    args = parser.parse_args(argv)
    if args.time_limit <= 0:
        parser.error("--time-limit must be > 0")
    return args


def prepare_data(args: argparse.Namespace) -> tuple[bool, Path | None]:
    """(available?, data dir or None for digits)."""
    if args.data == "digits":
        return True, None
    ratio = LT_RATIO if args.data == "fashion-lt" else 1.0
    path = common.fashion_npz(imbalance_ratio=ratio, n_train=args.n_train, n_test=args.n_test,
                              cache_dir=args.out / "data")
    return path is not None, path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from automl_pipeline.training import configure_threads, resolve_device

    available, data_dir = prepare_data(args)
    if not available:
        print(f"skipped {args.data}: its data is not available (see above)")
        return 0
    device = resolve_device(args.device)
    configure_threads()
    flip = args.flip == "on" or (args.flip == "auto" and args.data != "digits")
    tag = f"quality_{args.data}_{args.time_limit:g}s"
    runs_dir = args.out / tag
    results_path = args.out / f"{tag}.json"
    payload = {"benchmark": "quality_vs_resnet", "date": common.now_iso(), "command": common.command_line(),
               "machine": common.machine_info(str(device)), "data": args.data,
               "data_dir": str(data_dir) if data_dir else "sklearn digits (built-in demo)",
               "time_limit_s": args.time_limit, "seeds": args.seeds, "timing_note": TIMING_NOTE,
               "resnet18": {"conv1": "3x3 stride 1", "maxpool": "identity", "optimizer": "AdamW lr 2e-3 wd 5e-2",
                            "schedule": "1 timed warm-up epoch (<= 15% of T) at max_lr/25, then OneCycle "
                                        "(pct_start 0.25) over the epochs/steps that fit",
                            "loss": "cross-entropy",
                            "batch_size": 128, "augment": "random crop (pad side//8) + flip" if flip else
                            "random crop (pad side//8), no flip"},
               "rows": [], "summary": {}}

    def record(row: dict) -> None:
        payload["rows"].append(row)
        payload["summary"] = common.summarize(payload["rows"])
        common.write_results(results_path, payload)

    for seed in args.seeds:
        ours_dir = runs_dir / f"ours-seed{seed}"
        print(f"[{args.data} seed {seed}] ours: run.py, limit {args.time_limit:g}s -> {ours_dir}", flush=True)
        ours = common.run_pipeline(time_limit_s=args.time_limit, output_dir=ours_dir, seed=seed,
                                   data_dir=data_dir, device=args.device, slack_s=args.slack)
        report = ours.pop("report") or {}
        final = report.get("final") if isinstance(report.get("final"), dict) else {}
        ours.update(dataset=args.data, method=METHOD_OURS, seed=seed, run_dir=str(ours_dir),
                    epochs=final.get("epochs"), architecture=final.get("architecture"))
        record(ours)
        print(f"  ours: {ours['status']} macro-F1 {common._cell(ours['macro_f1'], 4)} "
              f"({ours['wall_s']:.1f}s){'  ' + ours['error'] if ours['error'] else ''}", flush=True)

        print(f"[{args.data} seed {seed}] resnet18: {args.time_limit:g}s of training", flush=True)
        try:
            row = resnet_run(data_dir, seed=seed, time_limit_s=args.time_limit, device=device,
                             ours_dir=ours_dir, flip=flip, log=lambda m: print("  " + m, flush=True))
        except Exception as exc:   # noqa: BLE001 - a failed baseline is a row in the table, not a crash
            row = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "macro_f1": None,
                   "accuracy": None, "wall_s": None}
        row.update(dataset=args.data, method=METHOD_RESNET, seed=seed)
        record(row)
        print(f"  resnet18: {row['status']} macro-F1 {common._cell(row['macro_f1'], 4)}"
              f"{'  ' + row['error'] if row['error'] else ''}", flush=True)

    print()
    print(f"## Quality at equal budget: {args.data}, T = {args.time_limit:g} s, device {device}")
    print()
    print(common.markdown_table(payload["rows"], TABLE_COLUMNS))
    print()
    print(common.summary_table(payload["summary"], SUMMARY_METRICS))
    print()
    print(f"Timing: {TIMING_NOTE}")
    print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
