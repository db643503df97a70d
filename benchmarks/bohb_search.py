"""BOHB phase throughput: trials per minute and best val macro-F1 over time, 1 vs 2 workers.

    python benchmarks/bohb_search.py [--seconds 60] [--workers 1 2] [--n-train 800] [--device cpu]

Data: scikit-learn digits (8x8 grey, 10 classes), a seeded train/val subset.
Space: ours without DARTS (build_config_space: default cell; loss and surrogate skip searchable).
Budgets are planned as the pipeline plans them: choose_budgets() over a timed epoch of the
space's default configuration (the probe counts inside the phase).
Local workers are threads in this process (hpbandster workers over Pyro4).
Prints a table and writes benchmarks/out/bohb_search.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from automl_pipeline.bohb import (BohbOptions, TrialContext, build_config_space, choose_budgets,  # noqa: E402
                                  config_to_train_config, run_bohb)
from automl_pipeline.bohb.budgets import default_first_configs  # noqa: E402
from automl_pipeline.bohb.worker import build_trial_network  # noqa: E402
from submission import to_jsonable  # noqa: E402
from automl_pipeline.phases.hyperparameters import MIN_TRIAL_IMAGES_PER_CLASS, MIN_TRIAL_STEPS  # noqa: E402
from automl_pipeline.training import channel_stats, configure_threads, resolve_device, to_tensor_data  # noqa: E402
from automl_pipeline.training.planning import measure_epoch_seconds  # noqa: E402


def digits_context(n_train: int, n_val: int, seed: int, device: torch.device) -> TrialContext:
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16)).astype(np.uint8)[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    tr, va = order[:n_train], order[n_train:n_train + n_val]
    mean, std = channel_stats(images[tr])
    return TrialContext(train=to_tensor_data(images[tr], digits.target[tr], device, mean, std),
                        val=to_tensor_data(images[va], digits.target[va], device, mean, std),
                        n_classes=10, in_channels=1, image_side=8, device=device, seed=seed)


def plan_budgets(ctx: TrialContext, space, time_left) -> tuple[float, tuple[float, float] | None, float]:
    """(epoch seconds, (min, max) budgets or None, min-budget floor) as the pipeline's BOHB phase plans them
    (hyperparameters.search_hyperparameters): one timed epoch of the space's default configuration, then
    choose_budgets over the time left."""
    default = to_jsonable(dict(space.get_default_configuration()))
    epoch_s = measure_epoch_seconds(build_trial_network(default, ctx), ctx.train, ctx.val, ctx.n_classes,
                                    config_to_train_config(default, 1, ctx.seed, batch_size=ctx.batch_size))
    floor = max(MIN_TRIAL_STEPS * ctx.batch_size, MIN_TRIAL_IMAGES_PER_CLASS * ctx.n_classes) / len(ctx.train)
    budgets = choose_budgets(epoch_s, time_left(), first_configs=default_first_configs(space), min_budget_floor=floor)
    return epoch_s, budgets, floor


def best_at(trajectory: list, t: float) -> float:
    best = 0.0
    for t_s, f1 in trajectory:
        if t_s <= t:
            best = f1
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="phase length per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "bohb_search.json")
    args = parser.parse_args(argv)

    threads = configure_threads()
    device = resolve_device(args.device)
    ctx = digits_context(args.n_train, args.n_val, args.seed, device)
    rows = []
    for n_workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.monotonic()

            def time_left() -> float:
                return max(0.0, args.seconds - (time.monotonic() - start))

            space = build_config_space(seed=args.seed)
            epoch_s, budgets, floor = plan_budgets(ctx, space, time_left)
            if budgets is None:
                print(f"{n_workers} worker(s): {args.seconds:g}s cannot hold a first bracket of "
                      f"{default_first_configs(space)} trials of at least {floor:.2f} epochs "
                      f"(~{epoch_s:.2f}s per epoch); not run")
                rows.append({"workers": n_workers, "phase_s": args.seconds, "epoch_s": epoch_s, "skipped": True})
                continue
            options = BohbOptions(min_budget=budgets[0], max_budget=budgets[1], seed=args.seed,
                                  n_local_workers=n_workers, run_id=f"bench{n_workers}", epoch_seconds=epoch_s)
            result = run_bohb(ctx, config_space=space, options=options, time_left=time_left, out_dir=Path(tmp),
                              log=lambda s: None)
            wall = time.monotonic() - start
        report = result.report()
        marks = [args.seconds * f for f in (0.25, 0.5, 0.75, 1.0)]
        rows.append({
            "workers": n_workers, "phase_s": args.seconds, "wall_s": round(wall, 2),
            "overrun_s": round(max(0.0, wall - args.seconds), 3),
            "epoch_s": result.epoch_seconds, "budgets": report["budgets"],
            "trials": report["n_trials"], "trials_per_min": round(60.0 * report["n_trials"] / wall, 2),
            "trials_per_budget": report["trials_per_budget"], "failed": report["failed_trials"],
            "deadline_cut": report["deadline_cut_trials"], "model_based_picks": report["model_based_picks"],
            "best_val_macro_f1": round(max([f for _, f in report["trajectory"]], default=0.0), 4),
            "incumbent_val_macro_f1": round(result.incumbent_val_macro_f1, 4),
            "incumbent_budget": result.incumbent_budget,
            "best_f1_at": {f"{m:g}s": round(best_at(report["trajectory"], m), 4) for m in marks},
            "trajectory": report["trajectory"], "clean_shutdown": report["clean_shutdown"],
        })

    head = f"{'workers':>7} {'wall s':>7} {'trials':>6} {'/min':>6} {'budgets':>14} {'best F1':>8} " \
           f"{'inc F1':>7} {'inc b':>5} {'cut':>4} {'fail':>4}  best F1 at 25/50/75/100%"
    print(f"BOHB on digits ({args.n_train} train / {args.n_val} val, 8x8), {args.seconds:g}s phases, "
          f"{device}, torch threads {threads}")
    print(head)
    for r in rows:
        if r.get("skipped"):
            print(f"{r['workers']:>7}  not run: no budget plan fits {r['phase_s']:g}s")
            continue
        budgets = "/".join(f"{b:.3g}" for b in r["budgets"])
        at = " ".join(f"{v:.3f}" for v in r["best_f1_at"].values())
        print(f"{r['workers']:>7} {r['wall_s']:>7.1f} {r['trials']:>6} {r['trials_per_min']:>6.1f} {budgets:>14} "
              f"{r['best_val_macro_f1']:>8.4f} {r['incumbent_val_macro_f1']:>7.4f} {r['incumbent_budget']:>5.3g} "
              f"{r['deadline_cut']:>4} {r['failed']:>4}  {at}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": "sklearn digits", "n_train": args.n_train, "n_val": args.n_val,
                                    "seed": args.seed, "device": str(device), "torch_threads": threads,
                                    "python": platform.python_version(), "torch": torch.__version__,
                                    "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
