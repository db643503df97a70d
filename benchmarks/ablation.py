"""Ablation: what each part of the method buys, as held-out macro-F1 over seeds (whole runs of run.py).

    python benchmarks/ablation.py --data fashion2k fashion-lt5k --time-limit 150 --seeds 0 1 2
    python benchmarks/ablation.py ... --variants full darts_off random_search --lanes 2 [--resume]

Variants (each `python run.py --time-limit T --data-dir D --seed S --quiet` plus):
- full: the full method (no options);
- darts_off: `--search-config {"darts": "off"}` (BOHB over the default cell only);
- darts_random: `{"darts": "random"}`: a random cell from uniform alphas takes the DARTS cell's place;
- surrogate_off: `{"surrogate_skip": false}` (no DARTS- surrogate skip in DARTS nor in BOHB's trials);
- early_stop_off: `{"early_termination": false}` (DARTS never stops when skips dominate);
- random_search: `{"optimizer": "random"}` (hpbandster random sampling, same space and budgets);
- loss_ce / loss_focal / loss_logit_adjusted: `{"loss": ...}` fixed for every trial and fit;
- baseline_1x / baseline_3x: `--method baseline` with T and with 3T.
The search-config files are written to OUT/<tag>/configs/.

Lanes: with --lanes K (default 1), K runs go at once, each pinned with `taskset` to its own core
(lane i gets core i), so every run sees the same one-core machine; with 1 lane runs are not pinned.

Results: per-run rows (held-out test macro-F1, where the delivered model came from, DARTS steps,
BOHB trials and model-based picks), per (data, variant) mean ± std over seeds, and the paired
difference against `full` on the same seed (mean ± std); a difference "exceeds the spread" when its
mean is larger in size than the seed-to-seed std of `full` on that data set, and it has the "same sign
on every seed" when every paired difference points the same way (neither is a significance test). Printed, written to
OUT/<tag>.json (after every run) and OUT/<tag>.md, and one plot per data set OUT/<tag>_<data>.png.
--resume keeps the finished rows of OUT/<tag>.json and runs only the missing ones.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import common

common.ensure_repo_on_path()
common.ensure_bench_on_path()

import quality_vs_plain_cnn as quality  # noqa: E402  (benchmarks/ script; no torch at import)

DATASETS: dict[str, dict | None] = {
    **quality.DATASETS,
    "fashion2k": {"n_train": 2000, "n_test": 2000, "imbalance_ratio": 1.0},
    "fashion-lt5k": {"n_train": 5000, "n_test": 2000, "imbalance_ratio": 100.0},   # 1,236 train images
}
FULL = "full"
VARIANTS: dict[str, dict[str, Any]] = {   # name -> {"search": options} or {"method": ..., "scale": ...}
    FULL: {"search": {}},
    "darts_off": {"search": {"darts": "off"}},
    "darts_random": {"search": {"darts": "random"}},
    "surrogate_off": {"search": {"surrogate_skip": False}},
    "early_stop_off": {"search": {"early_termination": False}},
    "random_search": {"search": {"optimizer": "random"}},
    "loss_ce": {"search": {"loss": "ce"}},
    "loss_focal": {"search": {"loss": "focal"}},
    "loss_logit_adjusted": {"search": {"loss": "logit_adjusted"}},
    "baseline_1x": {"method": "baseline", "scale": 1.0},
    "baseline_3x": {"method": "baseline", "scale": 3.0},
}
RUN_COLUMNS = [("data", "data", 0), ("variant", "variant", 0), ("seed", "seed", 0), ("time_limit_s", "T s", 0),
               ("status", "status", 0), ("macro_f1", "test macro-F1", 4), ("wall_s", "wall s", 1),
               ("source", "delivered from", 0), ("darts_arch_steps", "DARTS steps", 0),
               ("darts_cell_used", "DARTS cell used", 0), ("bohb_n_trials", "BOHB trials", 0),
               ("bohb_model_based_picks", "model picks", 0)]


# --------------------------------------------------------------------------- tables


def prepare_data(name: str, cache_dir: Path) -> tuple[bool, Path | None]:
    """(available?, data path or None for digits): quality_vs_plain_cnn's sets as it builds them (the
    RetinaMNIST-shaped set included), this benchmark's own Fashion subsets with common.fashion_npz."""
    if name in quality.DATASETS:
        return quality.prepare_data(name, cache_dir)
    path = common.fashion_npz(**DATASETS[name], cache_dir=cache_dir)
    return path is not None, path


def variant_arguments(variant: str, config_dir: Path) -> tuple[list[str], float]:
    """(extra run.py arguments, time-limit scale) of a variant; writes its search-config file."""
    spec = VARIANTS[variant]
    if "method" in spec:
        return ["--method", spec["method"]], float(spec["scale"])
    if not spec["search"]:
        return [], 1.0
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / f"{variant}.json"
    path.write_text(json.dumps(spec["search"]), encoding="utf-8")
    return ["--search-config", str(path)], 1.0


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per (data, variant): mean ± std of macro-F1 over seeds; the paired difference to `full` on the
    same data and seed (mean ± std); whether its mean exceeds the std of `full` over seeds."""
    out = []
    for data in dict.fromkeys(r["data"] for r in rows):
        here = [r for r in rows if r["data"] == data]
        full = {r["seed"]: r["macro_f1"] for r in here if r["variant"] == FULL and r["macro_f1"] is not None}
        spread = statistics.stdev(full.values()) if len(full) >= 2 else None
        for variant in sorted(dict.fromkeys(r["variant"] for r in here), key=list(VARIANTS).index):
            mine = [r for r in here if r["variant"] == variant]
            scores = {r["seed"]: r["macro_f1"] for r in mine if r["macro_f1"] is not None}
            diffs = [scores[s] - full[s] for s in scores if s in full] if variant != FULL else []
            diff = common.mean_std(diffs)
            exceeds = None
            if variant != FULL and diff["mean"] is not None and spread is not None:
                exceeds = abs(diff["mean"]) > spread
            same_sign = None if len(diffs) < 2 else all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
            out.append({"data": data, "variant": variant, "runs": len(mine),
                        "failed": sum(1 for r in mine if r.get("error")),
                        "macro_f1": common.mean_std(scores.values()), "diff_vs_full": diff,
                        "n_pairs": len(diffs), "full_seed_std": spread, "exceeds_spread": exceeds,
                        "same_sign_every_seed": same_sign})
    return out


def summary_markdown(summary: Sequence[dict]) -> str:
    lines = ["| data | variant | runs | test macro-F1 (mean ± std) | paired diff vs full | pairs | "
             "exceeds seed spread of full | same sign on every seed |", "|" + " --- |" * 8]
    for s in summary:
        exceeds = {None: "-", True: "**yes**", False: "no"}[s["exceeds_spread"]]
        same_sign = {None: "-", True: "yes", False: "no"}[s.get("same_sign_every_seed")]
        lines.append("| " + " | ".join([s["data"], s["variant"], str(s["runs"]),
                                        common.fmt_mean_std(s["macro_f1"], 4),
                                        common.fmt_mean_std(s["diff_vs_full"], 4) if s["variant"] != FULL else "-",
                                        str(s["n_pairs"]), exceeds, same_sign]) + " |")
    return "\n".join(lines)


def plot(summary: Sequence[dict], data: str, path: Path) -> Path | None:
    """Bar chart of one data set: mean macro-F1 per variant with std error bars, full as a line."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # pragma: no cover - matplotlib is in requirements.txt
        return None
    here = [s for s in summary if s["data"] == data and s["macro_f1"]["mean"] is not None]
    if not here:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(here)), 4.0))
    names = [s["variant"] for s in here]
    means = [s["macro_f1"]["mean"] for s in here]
    stds = [s["macro_f1"]["std"] or 0.0 for s in here]
    colours = ["tab:green" if n == FULL else "tab:grey" if n.startswith("baseline") else "tab:blue" for n in names]
    ax.bar(range(len(here)), means, yerr=stds, color=colours, capsize=3)
    full = next((s for s in here if s["variant"] == FULL), None)
    if full is not None:
        ax.axhline(full["macro_f1"]["mean"], color="tab:green", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(here)), names, rotation=35, ha="right")
    low = min(m - s for m, s in zip(means, stds))
    ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(m + s for m, s in zip(means, stds)) + 0.03))
    ax.set_ylabel("held-out macro-F1 (mean ± std over seeds)")
    ax.set_title(f"Ablation on {data}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- running


def run_one(*, data: str, data_dir: Path | None, variant: str, seed: int, time_limit_s: float, out_dir: Path,
            device: str, slack_s: float, core: int | None) -> dict:
    """One run of a variant as a subprocess (pinned to `core` when given) -> its row."""
    extra, scale = variant_arguments(variant, out_dir / "configs")
    limit = time_limit_s * scale
    run_dir = out_dir / data / f"{variant}-seed{seed}"
    row = common.run_pipeline(time_limit_s=limit, output_dir=run_dir, seed=seed, data_dir=data_dir, device=device,
                              extra=extra, slack_s=slack_s, core=core)
    row.update(quality.ours_facts(row.pop("report")))
    row.update(data=data, variant=variant, seed=seed, time_limit_s=limit, run_dir=str(run_dir), core=core)
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Ablation of the method's parts (whole runs, paired by seed).")
    parser.add_argument("--data", nargs="+", choices=list(DATASETS), required=True)
    parser.add_argument("--time-limit", type=float, required=True, metavar="T",
                        help="seconds per run (baseline_3x gets 3T), counted from each process's start")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--lanes", type=int, default=1, help="runs at once, each pinned to its own core")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT, help="results folder (benchmarks/out)")
    parser.add_argument("--data-cache", type=Path, default=quality.DATA_CACHE, help="where built npz files are kept")
    parser.add_argument("--slack", type=float, default=common.DEFAULT_SLACK_S,
                        help="seconds over the limit after which a run is killed")
    parser.add_argument("--tag", default=None, help="results name (default ablation_<data>_<T>s)")
    parser.add_argument("--resume", action="store_true", help="keep finished rows of OUT/<tag>.json")
    args = parser.parse_args(argv)
    if args.time_limit < 10:
        parser.error("--time-limit must be >= 10 s (run.py refuses shorter limits)")
    lanes_error = common.lanes_error(args.lanes)
    if lanes_error:
        parser.error(lanes_error)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tag = args.tag or f"ablation_{'+'.join(args.data)}_{args.time_limit:g}s"
    results_path, markdown_path = args.out / f"{tag}.json", args.out / f"{tag}.md"
    old = common.read_json(results_path) if args.resume else None
    rows: list[dict] = [r for r in (old or {}).get("rows", []) if not r.get("error")]
    payload: dict[str, Any] = {
        "benchmark": "ablation", "date": common.now_iso(), "command": common.command_line(),
        "machine": common.machine_info(args.device), "time_limit_s": args.time_limit, "seeds": args.seeds,
        "variants": {v: VARIANTS[v] for v in args.variants}, "lanes": args.lanes, "data": {},
        "timing": "every run is its own process; T counts from that process's start; with lanes > 1 each "
                  "run is pinned to one core (taskset) and runs beside the other lanes",
        "rows": rows, "summary": []}
    lock = threading.Lock()

    def record(row: dict | None = None) -> str:
        with lock:
            if row is not None:
                rows.append(row)
            payload["summary"] = summarize(rows)
            ordered = sorted(rows, key=lambda r: (r["data"], list(VARIANTS).index(r["variant"]), r["seed"]))
            text = "\n\n".join(["### Runs", common.markdown_table(ordered, RUN_COLUMNS),
                                "### Per variant, paired with full on the same seed", summary_markdown(payload["summary"])])
            common.write_results(results_path, payload)
            markdown_path.write_text(f"# Ablation\n\n{text}\n", encoding="utf-8")
            return text

    done = {(r["data"], r["variant"], r["seed"]) for r in rows}
    jobs = []
    for data in args.data:
        available, data_dir = prepare_data(data, args.data_cache)
        if not available:
            print(f"skipped {data}: its data is not available (see above)", flush=True)
            continue
        payload["data"][data] = str(data_dir) if data_dir else "sklearn digits (built-in demo)"
        for seed in args.seeds:             # seed-major: an interrupted benchmark still has whole pairs
            jobs += [(data, data_dir, variant, seed) for variant in args.variants
                     if (data, variant, seed) not in done]

    def work(job, core: int | None) -> None:
        data, data_dir, variant, seed = job
        print(f"[{data} seed {seed}] {variant} (core {core})", flush=True)
        row = run_one(data=data, data_dir=data_dir, variant=variant, seed=seed, time_limit_s=args.time_limit,
                      out_dir=args.out / tag, device=args.device, slack_s=args.slack, core=core)
        record(row)
        print(f"  {data} seed {seed} {variant}: {row['status']} macro-F1 {common._cell(row['macro_f1'], 4)} "
              f"({row.get('source')}, DARTS {row.get('darts_arch_steps')} steps, BOHB {row.get('bohb_n_trials')} "
              f"trials){'  ' + row['error'] if row.get('error') else ''}", flush=True)

    common.run_in_lanes(jobs, args.lanes, work)
    if not rows:
        print("no runs")
        return 0
    text = record()
    for data in payload["data"]:
        made = plot(payload["summary"], data, args.out / f"{tag}_{data}.png")
        if made is not None:
            print(f"wrote {made}")
    print()
    print(text)
    print(f"\nwrote {results_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
