"""Quality per second: ours (`python run.py`) vs a plain CNN, each a whole process under the same limit.

    python benchmarks/quality_vs_plain_cnn.py --data digits --time-limits 60 300 --seeds 0 1 2
    python benchmarks/quality_vs_plain_cnn.py --data fashion5k fashion-lt colour-lt --time-limits 60 300 \
        [--methods ours plain_ce plain_focal] [--out benchmarks/out] [--device auto]

Methods (every run is its own process, started and timed from here, one at a time):
- ours: `python run.py --time-limit T --data-dir D --seed S --quiet` (report.json).
- plain_ce / plain_focal: `python benchmarks/plain_cnn.py --time-limit T --data-dir D --seed S --loss
  ce|focal_inv` (result.json): 3 conv3x3-BN-ReLU-maxpool blocks (32/64/128) + Linear 256 + Linear,
  AdamW + one-cycle over the epochs that fit, crop + flip, best epoch by validation macro-F1; loss
  cross-entropy, or focal (gamma 2) with inverse-frequency class weights.
Both count T from their own process start and load and split the data with the same functions and
seed, so the held-out test is the same images (checked: plain_cnn's `heldout_ids_sha256` against
ours' splits.json when ours ran for that seed).

Data (built once with make_fashion_npz.py, cached under benchmarks/data/):
- digits: the built-in scikit-learn demo (no --data-dir).
- fashion5k: balanced, 5,000 train / 2,000 test.
- fashion-lt: long-tailed, imbalance ratio 100, head class 1,340 train images (--n-train 13400; 3,322 in all).
- colour-lt: RGB with random per-image foreground/background tints (colour carries no class
  information), imbalance ratio 10, head class 500 (--n-train 5000; 2,040 in all), 2,000 test.
- retina: the RetinaMNIST-shaped hard set (make_retina_like.py: 5 grades, 1,080 / 120 / 400, 28x28 RGB).

Results: per-run rows (held-out test macro-F1, wall_s, and for ours where the delivered model came
from, DARTS architecture steps and cell, BOHB trials and model-based picks), mean ± std per
(data, T, method), and ours / best plain CNN (the better of the plain methods by mean) per (data, T).
Printed, and written to OUT/<tag>.json (rewritten after every run) and OUT/<tag>.md; the runs' own
folders are OUT/<tag>/<data>/<T>s/<method>-seed<S>/. Exit code 0 also when a run fails (the failure
is a row) or Fashion-MNIST is not installed (that data set is skipped with a message).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import common

common.ensure_repo_on_path()
common.ensure_bench_on_path()

import plain_cnn  # noqa: E402  (benchmarks/ script; light at import: no torch)

DATA_CACHE = common.BENCH_DIR / "data"
DATASETS: dict[str, dict | None] = {   # name -> common.fashion_npz arguments (None: the digits demo)
    "digits": None,
    "fashion5k": {"n_train": 5000, "n_test": 2000, "imbalance_ratio": 1.0},
    "fashion-lt": {"n_train": 13400, "n_test": 2000, "imbalance_ratio": 100.0},
    "colour-lt": {"n_train": 5000, "n_test": 2000, "imbalance_ratio": 10.0, "colour": True},
    "retina": "retina",   # the RetinaMNIST-shaped hard set of make_retina_like.py (built when missing)
}
METHOD_OURS = "ours"
PLAIN_LOSSES = {plain_cnn.method_name(loss): loss for loss in plain_cnn.LOSSES}   # plain_ce, plain_focal
METHODS = (METHOD_OURS, *PLAIN_LOSSES)
RUN_COLUMNS = [("data", "data", 0), ("time_limit_s", "T s", 0), ("method", "method", 0), ("seed", "seed", 0),
               ("status", "status", 0), ("macro_f1", "test macro-F1", 4), ("accuracy", "accuracy", 4),
               ("wall_s", "wall s", 1), ("seconds", "outside s", 1), ("epochs", "epochs", 0),
               ("train_images_per_s", "train img/s", 0), ("source", "delivered from", 0),
               ("darts_arch_steps", "DARTS arch steps", 0), ("darts_cell_used", "DARTS cell used", 0),
               ("bohb_n_trials", "BOHB trials", 0), ("bohb_model_based_picks", "BOHB model picks", 0),
               ("bohb_rank_correlation", "BOHB rung Spearman", 0), ("phases_text", "seconds per phase", 0),
               ("ensemble_text", "ensemble members (weight)", 0), ("plan_skipped", "plan gave away", 0),
               ("bag_folds", "bag folds", 0), ("bag_oof_macro_f1", "bag out-of-fold macro-F1", 4),
               ("val_heldout_spearman", "val vs held-out Spearman", 2)]
SUMMARY_METRICS = ("macro_f1", "accuracy", "wall_s", "seconds")


# --------------------------------------------------------------------------- reading the runs


def _section(report: dict, key: str) -> dict:
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def phase_seconds(report: dict | None) -> dict[str, float | None]:
    """{phase name: seconds used (end_s - start_s), None when it never ran or did not end} from report.json's
    `phases`, in plan order."""
    phases = (report or {}).get("phases")
    out: dict[str, float | None] = {}
    for phase in phases if isinstance(phases, list) else []:
        if not isinstance(phase, dict) or not phase.get("name"):
            continue
        start, end = common.num(phase.get("start_s")), common.num(phase.get("end_s"))
        out[str(phase["name"])] = round(end - start, 1) if start is not None and end is not None else None
    return out


def ours_facts(report: dict | None) -> dict:
    """What ours did, from report.json (the schema the pipeline writes; a key it lacks is None): where the
    delivered model came from, DARTS architecture steps and whether its cell was used, BOHB trials,
    model-based picks and the Spearman correlation between adjacent rungs, seconds per phase, the
    ensemble's members and weights, the searches the plan gave away, the final fit's bagging (folds,
    out-of-fold macro-F1) and the rank correlation between the candidates' validation and held-out scores."""
    report = report if isinstance(report, dict) else {}
    final, darts, bohb = _section(report, "final"), _section(report, "darts"), _section(report, "bohb")
    steps, trials = darts.get("arch_steps"), bohb.get("n_trials")
    correlations = bohb.get("rung_rank_correlation") or []
    members = final.get("members") or []
    used = phase_seconds(report)
    return {"source": final.get("source"), "epochs": final.get("epochs"),
            "train_images_per_s": final.get("train_images_per_s"), "darts_arch_steps": steps,
            "darts_cell_used": darts.get("cell_used"), "bohb_n_trials": trials,
            "bohb_model_based_picks": bohb.get("model_based_picks"),
            "bohb_rank_correlation": ", ".join("n/a" if c.get("spearman") is None else f"{c['spearman']:.2f}"
                                               for c in correlations) or None,
            "phases_text": ", ".join(f"{name} {'-' if s is None else f'{s:.0f}'}" for name, s in used.items()) or None,
            "ensemble_text": ", ".join(f"{m.get('name')} ({m.get('weight')})" for m in members) or None,
            "plan_skipped": ", ".join(_section(report, "plan").get("skipped") or {}) or None,
            "bag_folds": _section(report, "bagging").get("folds"),
            "bag_oof_macro_f1": _section(report, "bagging").get("oof_macro_f1"),
            "val_heldout_spearman": _section(report, "candidates").get("val_heldout_spearman"),
            **evidence_facts(report)}


def evidence_facts(report: dict) -> dict:
    """The bag against the validation split's choice (report.json `evidence`): the win rate, whether the bag
    was delivered by it, and the held-out macro-F1 of the bag and of the model passed over (`ensemble`'s
    side-by-side `heldout_macro_f1`), as one text column."""
    evidence = _section(report, "evidence")
    heldout = _section(report, "ensemble").get("heldout_macro_f1") or {}
    bag = next((m for m in _section(report, "candidates").get("models") or []
                if "-fold" in str(m.get("name")) and "bag of" in str(m.get("name"))), {})
    rate, challenger = evidence.get("win_rate"), evidence.get("challenger")
    bag_delivered = evidence.get("status") == "completed" and evidence.get("delivered") == evidence.get("bag")
    passed_over = heldout.get(challenger) if bag_delivered and challenger else None
    text = None
    if evidence.get("status") == "completed":
        text = "bag delivered" if bag_delivered else "validation choice kept"
        if rate is not None:
            passed = f"; passed over: {passed_over:.4f} held-out" if passed_over is not None else ""
            text += f" (win rate {rate:.2f}{passed})"
        elif bag_delivered:
            text += " (also the validation choice)"
    return {"evidence_win_rate": rate, "evidence_bag_delivered": bag_delivered if evidence else None,
            "bag_heldout_macro_f1": bag.get("heldout_macro_f1"), "passed_over_heldout_macro_f1": passed_over,
            "evidence_text": text}


def ours_heldout_fingerprint(run_dir: Path) -> str | None:
    """plain_cnn.heldout_fingerprint of the test ids in ours' splits.json, or None."""
    splits = common.read_json(Path(run_dir) / "splits.json")
    ids = ((splits or {}).get("test") or {}).get("ids")
    return plain_cnn.heldout_fingerprint(ids) if isinstance(ids, list) else None


# --------------------------------------------------------------------------- tables


def group_summary(rows: Sequence[dict]) -> list[dict]:
    """One entry per (data, T, method), first-seen order: runs, failed, mean_std of each metric."""
    keys = dict.fromkeys((r["data"], r["time_limit_s"], r["method"]) for r in rows)
    out = []
    for data, limit, method in keys:
        mine = [r for r in rows if (r["data"], r["time_limit_s"], r["method"]) == (data, limit, method)]
        entry = {"data": data, "time_limit_s": limit, "method": method, "runs": len(mine),
                 "failed": sum(1 for r in mine if r.get("error"))}
        entry.update({m: common.mean_std(r.get(m) for r in mine) for m in SUMMARY_METRICS})
        out.append(entry)
    return out


def ratios(summary: Sequence[dict]) -> list[dict]:
    """Per (data, T): ours' mean test macro-F1 / the best plain CNN's (the plain method with the
    highest mean). None where either side has no finished run."""
    out = []
    for data, limit in dict.fromkeys((s["data"], s["time_limit_s"]) for s in summary):
        here = [s for s in summary if (s["data"], s["time_limit_s"]) == (data, limit)]
        ours = next((s["macro_f1"]["mean"] for s in here if s["method"] == METHOD_OURS), None)
        plain = [s for s in here if s["method"] != METHOD_OURS and s["macro_f1"]["mean"] is not None]
        best = max(plain, key=lambda s: s["macro_f1"]["mean"], default=None)
        best_f1 = best["macro_f1"]["mean"] if best is not None else None
        out.append({"data": data, "time_limit_s": limit, "ours_macro_f1": ours,
                    "best_plain": best["method"] if best is not None else None, "best_plain_macro_f1": best_f1,
                    "ratio": ours / best_f1 if ours is not None and best_f1 else None})
    return out


def summary_markdown(summary: Sequence[dict]) -> str:
    lines = ["| data | T s | method | runs | failed | test macro-F1 | accuracy | wall s | outside s |",
             "|" + " --- |" * 9]
    for s in summary:
        cells = [s["data"], f"{s['time_limit_s']:g}", s["method"], str(s["runs"]), str(s["failed"]),
                 common.fmt_mean_std(s["macro_f1"], 4), common.fmt_mean_std(s["accuracy"], 4),
                 common.fmt_mean_std(s["wall_s"], 1), common.fmt_mean_std(s["seconds"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_markdown(rows: Sequence[dict]) -> str:
    lines = ["| data | T s | ours macro-F1 | best plain CNN | its macro-F1 | ours / best plain |",
             "|" + " --- |" * 6]
    for r in rows:
        lines.append("| " + " | ".join([r["data"], f"{r['time_limit_s']:g}", common._cell(r["ours_macro_f1"], 4),
                                        r["best_plain"] or "-", common._cell(r["best_plain_macro_f1"], 4),
                                        common._cell(r["ratio"], 3)]) + " |")
    return "\n".join(lines)


def build_tables(rows: Sequence[dict]) -> tuple[str, list[dict], list[dict]]:
    """(markdown of the per-run, summary and ratio tables; summary; ratios) from result rows."""
    summary = group_summary(rows)
    ratio_rows = ratios(summary)
    text = "\n\n".join(["### Runs", common.markdown_table(rows, RUN_COLUMNS),
                        "### Mean ± std over seeds", summary_markdown(summary),
                        "### Ours / best plain CNN (mean test macro-F1)", ratio_markdown(ratio_rows)])
    return text, summary, ratio_rows


# --------------------------------------------------------------------------- running


def run_method(method: str, *, data: str, data_dir: Path | None, time_limit_s: float, seed: int, run_dir: Path,
               ours_dir: Path, device: str, slack_s: float) -> dict:
    """One run as a subprocess -> its table row (never raises for a failed run)."""
    if method == METHOD_OURS:
        row = common.run_pipeline(time_limit_s=time_limit_s, output_dir=run_dir, seed=seed, data_dir=data_dir,
                                  device=device, slack_s=slack_s)
        row.update(ours_facts(row.pop("report")))
    else:
        row = common.run_plain_cnn(time_limit_s=time_limit_s, output_dir=run_dir, seed=seed, data_dir=data_dir,
                                   loss=PLAIN_LOSSES[method], device=device, slack_s=slack_s)
        result = row.pop("result") or {}
        row.update(epochs=result.get("epochs"), train_images_per_s=result.get("train_images_per_s"),
                   val_macro_f1=result.get("val_macro_f1"),
                   train_start_s=result.get("train_start_s"))
        theirs, ours = result.get("heldout_ids_sha256"), ours_heldout_fingerprint(ours_dir)
        row["heldout_same_as_ours"] = None if theirs is None or ours is None else theirs == ours
        if row["heldout_same_as_ours"] is False and not row.get("error"):
            row["error"] = f"held-out ids differ from {ours_dir / 'splits.json'}"
    row.update(data=data, time_limit_s=time_limit_s, method=method, seed=seed, run_dir=str(run_dir))
    return row


def prepare_data(name: str, cache_dir: Path) -> tuple[bool, Path | None]:
    """(available?, data path or None for digits)."""
    spec = DATASETS[name]
    if spec is None:
        return True, None
    if spec == "retina":
        import make_retina_like   # noqa: PLC0415 (benchmarks/ script)

        path = cache_dir / make_retina_like.DEFAULT_OUT.name
        ok = path.is_file() or make_retina_like.main(["--out", str(path)]) == 0
        return ok, path if ok else None
    path = common.fashion_npz(**spec, cache_dir=cache_dir)
    return path is not None, path


def available_data(names: Sequence[str], cache_dir: Path):
    """(name, data path or None for digits) of each named data set that prepare_data can give; a message on
    stderr for each it cannot."""
    for name in names:
        available, path = prepare_data(name, cache_dir)
        if available:
            yield name, path
        else:
            print(f"{name}: data not available, skipped", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Quality per second: ours vs a plain CNN at equal wall clock.")
    parser.add_argument("--data", nargs="+", choices=list(DATASETS), required=True)
    parser.add_argument("--time-limits", type=float, nargs="+", required=True, metavar="T",
                        help="seconds per run, counted from each process's start")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT, help="results folder (benchmarks/out)")
    parser.add_argument("--data-cache", type=Path, default=DATA_CACHE, help="where built npz files are kept")
    parser.add_argument("--slack", type=float, default=common.DEFAULT_SLACK_S,
                        help="seconds over T after which a run is killed")
    args = parser.parse_args(argv)
    if min(args.time_limits) < 10:
        parser.error("--time-limits must be >= 10 s (run.py refuses shorter limits)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limits = "-".join(f"{t:g}" for t in args.time_limits)
    tag = f"plain_cnn_{'+'.join(args.data)}_{limits}s"
    results_path, markdown_path = args.out / f"{tag}.json", args.out / f"{tag}.md"
    payload: dict[str, Any] = {
        "benchmark": "quality_vs_plain_cnn", "date": common.now_iso(), "command": common.command_line(),
        "machine": common.machine_info(args.device), "time_limits_s": args.time_limits, "seeds": args.seeds,
        "methods": args.methods, "data": {},
        "timing": "every run is its own process; T counts from that process's start (interpreter, imports, "
                  "data loading included) for ours and the plain CNN alike; wall_s is the process's own "
                  "figure, seconds is measured from outside (process start to exit)",
        "plain_cnn": {"network": "3 x (conv3x3 no bias - BN - ReLU - maxpool2), 32/64/128 channels; flatten - "
                                 "Linear 256 - ReLU - Linear(n_classes)",
                      "training": "train_model: AdamW lr 3e-3 wd 5e-4, batch 128, one-cycle over the epochs "
                                  "that fit (training.planning.measure_epoch_seconds / epochs_that_fit), crop (pad side//8) "
                                  "+ flip, best epoch by val macro-F1",
                      "losses": {"plain_ce": "cross-entropy",
                                 "plain_focal": "focal gamma 2, inverse-frequency class weights"}},
        "rows": [], "summary": [], "ratios": []}

    def record(row: dict | None = None) -> str:
        if row is not None:
            payload["rows"].append(row)
        text, payload["summary"], payload["ratios"] = build_tables(payload["rows"])
        common.write_results(results_path, payload)
        markdown_path.write_text(f"# Ours vs a plain CNN at equal wall clock\n\n{text}\n", encoding="utf-8")
        return text

    for data in args.data:
        available, data_dir = prepare_data(data, args.data_cache)
        if not available:
            print(f"skipped {data}: its data is not available (see above)", flush=True)
            continue
        payload["data"][data] = str(data_dir) if data_dir else "sklearn digits (built-in demo)"
        for limit in args.time_limits:
            for seed in args.seeds:
                base = args.out / tag / data / f"{limit:g}s"
                for method in args.methods:
                    run_dir = base / f"{method}-seed{seed}"
                    print(f"[{data} T={limit:g}s seed {seed}] {method} -> {run_dir}", flush=True)
                    row = run_method(method, data=data, data_dir=data_dir, time_limit_s=limit, seed=seed,
                                     run_dir=run_dir, ours_dir=base / f"{METHOD_OURS}-seed{seed}",
                                     device=args.device, slack_s=args.slack)
                    record(row)
                    print(f"  {method}: {row['status']} macro-F1 {common._cell(row['macro_f1'], 4)}, "
                          f"wall {common._cell(row['wall_s'], 1)}s (outside {row['seconds']:.1f}s)"
                          f"{'  ' + row['error'] if row.get('error') else ''}", flush=True)
    if not payload["rows"]:
        print("no runs")
        return 0
    text = record()
    print()
    print(f"## Ours vs a plain CNN at equal wall clock (device {args.device})")
    print()
    print(text)
    print()
    print(f"wrote {results_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
