"""Which epoch's weights to keep: what each rule for choosing the epoch delivers on the held-out test.

    python benchmarks/epoch_choice.py --data fashion-lt retina --seeds 0 1 2 --epochs 40 [--out benchmarks/out]

The default network is trained as a run's final fit trains it (phases.common.default_train_config:
AdamW + one-cycle, balanced softmax, crops; the run's splits for the seed) for `--epochs` epochs, with
its validation macro-F1 (what the run sees) and its held-out test macro-F1 (what the run never sees)
recorded after every epoch. Each rule then picks an epoch from the validation scores alone:

- first_best: the first epoch with the best validation score (train_model's rule);
- last_best: the best validation score, ties to the later epoch;
- second_half: the best validation score among the schedule's second half, ties to the later epoch;
- last: the last epoch.

Per (data, seed) the held-out macro-F1 of each rule's epoch; per data the mean. One core, one thread.
Prints markdown and writes OUT/epoch_choice.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import common

common.ensure_repo_on_path()
common.ensure_bench_on_path()

import quality_vs_plain_cnn as quality  # noqa: E402  (benchmarks/ script; no torch at import)

RULES = ("first_best", "last_best", "second_half", "last")


def choose_epoch(rule: str, val_scores: list[float]) -> int:
    """The 0-based index of the epoch `rule` keeps, from the validation scores alone."""
    n = len(val_scores)
    if rule == "first_best":
        return max(range(n), key=lambda i: (val_scores[i], -i))
    if rule == "last_best":
        return max(range(n), key=lambda i: (val_scores[i], i))
    if rule == "second_half":
        return max(range(n // 2, n), key=lambda i: (val_scores[i], i))
    if rule == "last":
        return n - 1
    raise ValueError(f"unknown rule {rule!r}")


def curves(data_path: Path | None, seed: int, epochs: int) -> tuple[list[float], list[float]]:
    """(validation macro-F1, held-out macro-F1) after each epoch of the default network's final fit."""
    from automl_pipeline.phases.common import default_train_config, first_model_spec
    from automl_pipeline.search_space import build_network
    from automl_pipeline.training import predict_proba, train_model
    from automl_pipeline.training.metrics import macro_f1

    data = common.run_data_on_one_thread(data_path, seed)
    model = build_network(first_model_spec(data))
    test_labels = data.test.y.numpy()
    val_scores, test_scores = [], []

    def on_epoch(row: dict) -> None:
        val_scores.append(row["val_macro_f1"])
        test_scores.append(macro_f1(test_labels, predict_proba(model, data.test.x).argmax(axis=1), data.n_classes))

    config = default_train_config(epochs=epochs, batch_size=data.batch_size, seed=seed)
    train_model(model, data.train, data.val, config, time_left=lambda: 1e9, n_classes=data.n_classes,
                on_epoch=on_epoch)
    return val_scores, test_scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=list(quality.DATASETS), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    parser.add_argument("--data-cache", type=Path, default=quality.DATA_CACHE)
    args = parser.parse_args(argv)
    rows = []
    for name, path in quality.available_data(args.data, args.data_cache):
        for seed in args.seeds:
            val_scores, test_scores = curves(path, seed, args.epochs)
            row = {"data": name, "seed": seed, "epochs": args.epochs, "val": val_scores, "test": test_scores}
            for rule in RULES:
                epoch = choose_epoch(rule, val_scores)
                row[rule] = test_scores[epoch]
                row[f"{rule}_epoch"] = epoch + 1
            rows.append(row)
            print(f"{name} seed {seed}: " + ", ".join(f"{r} {row[r]:.4f} (epoch {row[f'{r}_epoch']})" for r in RULES),
                  flush=True)
    summary = [{"data": name, "runs": len(here), **{rule: statistics.fmean(r[rule] for r in here) for rule in RULES}}
               for name in dict.fromkeys(r["data"] for r in rows) for here in [[r for r in rows if r["data"] == name]]]
    print(common.markdown_table(summary, [("data", "data", 0), ("runs", "runs", 0)] + [(r, r, 4) for r in RULES]))
    common.write_results(args.out / "epoch_choice.json", {"command": common.command_line(), "rows": rows,
                                                          "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
