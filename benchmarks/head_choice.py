"""Which head for the default network: flattening or pooling, by the number of epochs it trains.

    python benchmarks/head_choice.py --data fashion-lt fashion5k retina --seeds 0 1 2 --epochs 8 40 [--out benchmarks/out]

For each (data, seed, epochs) the default network is trained twice as a run's final fit trains it
(phases.common.default_train_config: AdamW + one-cycle over `epochs`, balanced softmax, crops; the run's splits
for the seed; best weights by validation macro-F1), once with each head (search_space.network: "pool" averages
the last cell's map, "flatten" reads every position), and scored once on the held-out test. Per (data, epochs):
the mean held-out macro-F1 of each head and the paired difference flatten - pool, with how many seeds flatten
led. The run's rule (phases.common.with_head_for: flatten below FLATTEN_HEAD_BELOW_EPOCHS epochs) stands on this
table. One core, one thread. Prints markdown and writes OUT/head_choice.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import common

common.ensure_repo_on_path()
common.ensure_bench_on_path()

import quality_vs_plain_cnn as quality  # noqa: E402  (benchmarks/ script; no torch at import)

HEADS = ("pool", "flatten")


def train_and_score(data_path: Path | None, seed: int, epochs: int, head: str) -> dict:
    """{macro_f1 (held-out, best-by-validation weights), val_macro_f1, seconds} of one training."""
    import dataclasses

    from automl_pipeline.phases.common import default_train_config, first_model_spec
    from automl_pipeline.search_space import build_network
    from automl_pipeline.training import predict_proba, train_model
    from automl_pipeline.training.metrics import macro_f1

    data = common.run_data_on_one_thread(data_path, seed)
    model = build_network(dataclasses.replace(first_model_spec(data), head=head))
    config = default_train_config(epochs=epochs, batch_size=data.batch_size, seed=seed)
    start = time.perf_counter()
    result = train_model(model, data.train, data.val, config, time_left=lambda: 1e9, n_classes=data.n_classes)
    seconds = time.perf_counter() - start
    model.load_state_dict(result.state_dict)
    predicted = predict_proba(model, data.test.x).argmax(axis=1)
    return {"macro_f1": macro_f1(data.test.y.numpy(), predicted, data.n_classes),
            "val_macro_f1": result.best_val_macro_f1, "seconds": seconds}


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per (data, epochs), in first-seen order: each head's mean held-out macro-F1 over seeds, the mean paired
    difference flatten - pool over the seeds that have both, and on how many of them flatten led."""
    out = []
    for data, epochs in dict.fromkeys((r["data"], r["epochs"]) for r in rows):
        here = [r for r in rows if r["data"] == data and r["epochs"] == epochs]
        by_head = {head: {r["seed"]: r["macro_f1"] for r in here if r["head"] == head} for head in HEADS}
        paired = sorted(set(by_head["pool"]) & set(by_head["flatten"]))
        diffs = [by_head["flatten"][s] - by_head["pool"][s] for s in paired]
        out.append({"data": data, "epochs": epochs, "seeds": len(paired),
                    **{head: statistics.fmean(v.values()) if v else None for head, v in by_head.items()},
                    "flatten_minus_pool": statistics.fmean(diffs) if diffs else None,
                    "flatten_led": sum(d > 0 for d in diffs)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=list(quality.DATASETS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[8, 40])
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    parser.add_argument("--data-cache", type=Path, default=quality.DATA_CACHE)
    args = parser.parse_args(argv)
    if min(args.epochs) < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    rows = []
    for name, path in quality.available_data(args.data, args.data_cache):
        for epochs in args.epochs:
            for seed in args.seeds:
                for head in HEADS:
                    row = {"data": name, "seed": seed, "epochs": epochs, "head": head,
                           **train_and_score(path, seed, epochs, head)}
                    rows.append(row)
                    print(f"{name} {epochs} epochs seed {seed} {head}: held-out macro-F1 {row['macro_f1']:.4f} "
                          f"({row['seconds']:.0f} s)", flush=True)
    summary = summarize(rows)
    print(common.markdown_table(summary, [("data", "data", 0), ("epochs", "epochs", 0), ("seeds", "seeds", 0),
                                          ("pool", "pool head", 4), ("flatten", "flatten head", 4),
                                          ("flatten_minus_pool", "flatten - pool", 4),
                                          ("flatten_led", "seeds flatten led", 0)]))
    common.write_results(args.out / "head_choice.json", {"command": common.command_line(), "rows": rows,
                                                         "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
