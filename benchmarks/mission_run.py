"""The mission's run as a benchmark: ours for T seconds on the RetinaMNIST-shaped set against what a
user could run instead in the same T.

    python benchmarks/mission_run.py [--time-limit 7200] [--seeds 0 1 2] [--lanes 2] [--data FILE.npz]
        [--contestants ours plain_cnn plain_cnn_x5 baseline] [--plain-loss ce|focal_inv] [--members 5]
        [--device auto|cpu|cuda] [--out benchmarks/out] [--slack S] [--resume]

Contestants, per seed S, each a whole process (or processes) started and timed from here, T counted
from each process's own start:
- ours: `python run.py --time-limit T --data-dir D --seed S --quiet` (report.json).
- plain_cnn: `python benchmarks/plain_cnn.py --time-limit T --data-dir D --seed S --loss L` (L =
  --plain-loss).
- plain_cnn_x5: --members (5) plain_cnn.py runs of T / members seconds each, one after another in
  the same lane, `--init-seed S + 1000 i` (i = 0 .. members - 1) with `--seed S` (the same splits and
  held-out test) and `--save-test-probs`; their held-out softmax is averaged and the argmax scored.
  Its wall_s is the members' sum.
- baseline: `python run.py --method baseline --time-limit T ...`.

Lanes: with --lanes K (default 1) K contestants run at once, each pinned with `taskset` to its own
core (common.run_in_lanes: lane i holds core i), the same for every contestant; with 1 lane runs are
not pinned. Jobs go seed-major in contestant order, so with 2 lanes ours runs beside the plain CNN
and the five-CNN average beside the baseline.

Data: --data, default benchmarks/data/retina_like.npz, built with make_retina_like.py's defaults
(seed 0) when missing.

Results: one row per (contestant, seed) with wall_s, seconds (outside), held-out test macro-F1 and
accuracy; for ours and the baseline from report.json: seconds used per phase (`phase_seconds`,
from `phases`), DARTS architecture steps, BOHB trials per budget (and model-based picks per
budget), final.source; for the plain CNNs their epochs. Mean ± std per contestant and ours / each
other contestant (mean test macro-F1). Printed as markdown and written to OUT/mission_<T>s.json
(rewritten after every run) and OUT/mission_<T>s.md; the runs' folders are
OUT/mission_<T>s/<contestant>-seed<S>/. --resume keeps the finished rows of that JSON and runs only
the missing ones. Exit code 0 also when a run fails (the failure is a row).
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import common

common.ensure_repo_on_path()
common.ensure_bench_on_path()

import make_retina_like  # noqa: E402  (benchmarks/ scripts; no torch at import)
import plain_cnn  # noqa: E402
import quality_vs_plain_cnn as quality  # noqa: E402

OURS, PLAIN, PLAIN_X, BASELINE = "ours", "plain_cnn", "plain_cnn_x5", "baseline"
CONTESTANTS = (OURS, PLAIN, PLAIN_X, BASELINE)
DEFAULT_TIME_LIMIT_S = 7200.0
DEFAULT_MEMBERS = 5
MEMBER_SEED_STRIDE = 1000      # member i of seed S trains with --init-seed S + 1000 i
DEFAULT_PLAIN_LOSS = "ce"          # tied with focal_inv on macro-F1 on the retina-like set at 300 s (RESULTS.md)
MIN_TIME_LIMIT_S = 10.0        # run.py refuses shorter limits
RUN_COLUMNS = [("contestant", "contestant", 0), ("seed", "seed", 0), ("core", "core", 0), ("status", "status", 0),
               ("macro_f1", "test macro-F1", 4), ("accuracy", "accuracy", 4), ("wall_s", "wall s", 1),
               ("seconds", "outside s", 1), ("source", "delivered from", 0), ("darts_arch_steps", "DARTS steps", 0),
               ("bohb_trials_text", "BOHB trials per budget", 0), ("phases_text", "seconds per phase", 0),
               ("epochs", "epochs", 0), ("bag_folds", "bag folds", 0),
               ("val_heldout_spearman", "val vs held-out Spearman", 2),
               ("bag_heldout_macro_f1", "bag held-out", 4), ("evidence_text", "bag's evidence", 0)]


# --------------------------------------------------------------------------- reading the runs


def _per_budget_text(per_budget: Any) -> str | None:
    if not isinstance(per_budget, dict) or not per_budget:
        return None
    ordered = sorted(per_budget.items(), key=lambda kv: common.num(kv[0]) or 0.0)
    return ", ".join(f"{budget}: {count}" for budget, count in ordered)


def pipeline_facts(report: dict | None) -> dict:
    """ours/baseline: quality_vs_plain_cnn.ours_facts (final.source, DARTS steps, BOHB trials, ...) plus
    where the time went (phase_seconds and the raw `phases`), BOHB trials and model-based picks per
    budget, and the searches' status and reasons."""
    report = report if isinstance(report, dict) else {}
    darts = report.get("darts") if isinstance(report.get("darts"), dict) else {}
    bohb = report.get("bohb") if isinstance(report.get("bohb"), dict) else {}
    final = report.get("final") if isinstance(report.get("final"), dict) else {}
    facts = quality.ours_facts(report)
    facts.update(phase_seconds=quality.phase_seconds(report), phases=report.get("phases"),
                 darts_status=darts.get("status"), darts_reason=darts.get("reason"),
                 bohb_status=bohb.get("status"), bohb_reason=bohb.get("reason"),
                 bohb_cell_choice=bohb.get("cell_choice"),
                 bohb_trials_per_budget=bohb.get("trials_per_budget"),
                 bohb_model_based_picks_per_budget=bohb.get("model_based_picks_per_budget"),
                 bohb_trials_text=_per_budget_text(bohb.get("trials_per_budget")),
                 final_val_macro_f1=final.get("val_macro_f1"))
    return facts


def average_members(paths: Sequence[Path]) -> dict:
    """Mean softmax of the members' test_probs.npz -> {macro_f1, accuracy, balanced_accuracy, n_members},
    or {"error": why} when a file is missing or the members' held-out labels differ."""
    import numpy as np

    from automl_pipeline.training.metrics import classification_metrics

    probs, labels = [], None
    for path in paths:
        try:
            with np.load(path, allow_pickle=False) as saved:
                member_probs, member_labels = saved["probs"], saved["labels"]
        except (OSError, KeyError, ValueError) as err:
            return {"error": f"{path}: {type(err).__name__}: {err}"}
        if labels is not None and (member_labels.shape != labels.shape or (member_labels != labels).any()):
            return {"error": f"{path}: held-out labels differ from the first member's"}
        labels = member_labels
        probs.append(member_probs.astype(np.float64))
    if not probs:
        return {"error": "no member finished"}
    mean = np.mean(probs, axis=0)
    metrics = classification_metrics(labels, mean.argmax(axis=1), mean.shape[1])
    return {key: metrics[key] for key in ("macro_f1", "accuracy", "balanced_accuracy")} | {"n_members": len(probs)}


# --------------------------------------------------------------------------- running


def run_contestant(contestant: str, *, seed: int, data_dir: Path, time_limit_s: float, run_dir: Path, device: str,
                   slack_s: float, core: int | None, plain_loss: str, members: int) -> dict:
    """One contestant on one seed (pinned to `core` when given) -> its row; never raises for a failed run."""
    if contestant in (OURS, BASELINE):
        extra = ["--method", "baseline"] if contestant == BASELINE else []
        row = common.run_pipeline(time_limit_s=time_limit_s, output_dir=run_dir, seed=seed, data_dir=data_dir,
                                  device=device, extra=extra, slack_s=slack_s, core=core)
        row.update(pipeline_facts(row.pop("report")))
    elif contestant == PLAIN:
        row = common.run_plain_cnn(time_limit_s=time_limit_s, output_dir=run_dir, seed=seed, data_dir=data_dir,
                                   loss=plain_loss, device=device, slack_s=slack_s, core=core)
        result = row.pop("result") or {}
        row.update(epochs=result.get("epochs"), val_macro_f1=result.get("val_macro_f1"),
                   heldout_ids_sha256=result.get("heldout_ids_sha256"))
    elif contestant == PLAIN_X:
        row = run_plain_members(seed=seed, data_dir=data_dir, time_limit_s=time_limit_s, run_dir=run_dir,
                                device=device, slack_s=slack_s, core=core, plain_loss=plain_loss, members=members)
    else:
        raise ValueError(f"unknown contestant {contestant!r}")
    row.update(contestant=contestant, seed=seed, time_limit_s=time_limit_s, core=core, run_dir=str(run_dir))
    return row


def run_plain_members(*, seed: int, data_dir: Path, time_limit_s: float, run_dir: Path, device: str, slack_s: float,
                      core: int | None, plain_loss: str, members: int) -> dict:
    """`members` plain CNNs of time_limit_s / members each, one after another, softmax averaged."""
    each = time_limit_s / members
    member_rows, paths = [], []
    for i in range(members):
        member_dir = run_dir / f"member{i}"
        init_seed = seed + MEMBER_SEED_STRIDE * i
        got = common.run_plain_cnn(time_limit_s=each, output_dir=member_dir, seed=seed, data_dir=data_dir,
                                   loss=plain_loss, device=device, slack_s=slack_s, core=core,
                                   extra=["--init-seed", str(init_seed), "--save-test-probs"])
        result = got.pop("result") or {}
        member_rows.append({"init_seed": init_seed, "status": got["status"], "error": got["error"],
                            "macro_f1": got["macro_f1"], "accuracy": got["accuracy"], "wall_s": got["wall_s"],
                            "seconds": got["seconds"], "epochs": result.get("epochs"),
                            "heldout_ids_sha256": result.get("heldout_ids_sha256")})
        if not got["error"]:
            paths.append(member_dir / "test_probs.npz")
    failed = [m for m in member_rows if m["error"]]
    averaged = average_members(paths) if paths else {"error": "no member finished"}
    fingerprints = {m["heldout_ids_sha256"] for m in member_rows if m["heldout_ids_sha256"]}
    error = averaged.get("error")
    if error is None and len(fingerprints) > 1:
        error = "members' held-out ids differ"
    if error is None and failed:
        error = f"{len(failed)} of {members} members failed: {failed[0]['error']}"
    return {"status": "complete" if error is None else ("partial" if paths else "failed"), "error": error,
            "macro_f1": averaged.get("macro_f1"), "accuracy": averaged.get("accuracy"),
            "balanced_accuracy": averaged.get("balanced_accuracy"), "n_members": averaged.get("n_members", 0),
            "member_time_limit_s": each, "wall_s": round(sum(m["wall_s"] or 0.0 for m in member_rows), 3),
            "seconds": round(sum(m["seconds"] or 0.0 for m in member_rows), 3),
            "epochs": sum(m["epochs"] or 0 for m in member_rows),
            "heldout_ids_sha256": next(iter(fingerprints)) if len(fingerprints) == 1 else None,
            "members": member_rows}


def check_heldout(rows: list[dict], base: Path) -> None:
    """Flag a plain row whose held-out ids differ from ours' splits.json on the same seed."""
    for row in rows:
        theirs = row.get("heldout_ids_sha256")
        if row["contestant"] not in (PLAIN, PLAIN_X) or theirs is None:
            continue
        ours = quality.ours_heldout_fingerprint(base / f"{OURS}-seed{row['seed']}")
        row["heldout_same_as_ours"] = None if ours is None else theirs == ours
        if row["heldout_same_as_ours"] is False and not row.get("error"):
            row["error"] = "held-out ids differ from ours' splits.json"


# --------------------------------------------------------------------------- tables


def ratios(summary: dict) -> list[dict]:
    """ours' mean test macro-F1 / each other contestant's."""
    ours = (summary.get(OURS) or {}).get("macro_f1", {}).get("mean")
    out = []
    for contestant, stats in summary.items():
        if contestant == OURS:
            continue
        theirs = stats["macro_f1"]["mean"]
        out.append({"against": contestant, "ours_macro_f1": ours, "their_macro_f1": theirs,
                    "ratio": ours / theirs if ours is not None and theirs else None})
    return out


def build_tables(rows: Sequence[dict]) -> tuple[str, dict, list[dict]]:
    ordered = sorted(rows, key=lambda r: (r["seed"], CONTESTANTS.index(r["contestant"])))
    summary = common.summarize(ordered, metrics=("macro_f1", "accuracy", "wall_s"), key="contestant")
    ratio_rows = ratios(summary)
    ratio_lines = ["| against | ours macro-F1 | its macro-F1 | ours / it |", "|" + " --- |" * 4]
    ratio_lines += [f"| {r['against']} | {common._cell(r['ours_macro_f1'], 4)} | {common._cell(r['their_macro_f1'], 4)} "
                    f"| {common._cell(r['ratio'], 3)} |" for r in ratio_rows]
    text = "\n\n".join([
        "### Runs", common.markdown_table(ordered, RUN_COLUMNS),
        "### Mean ± std over seeds",
        common.summary_table(summary, [("macro_f1", "test macro-F1", 4), ("accuracy", "accuracy", 4),
                                       ("wall_s", "wall s", 1)]),
        "### Ours / each contestant (mean test macro-F1)", "\n".join(ratio_lines)])
    return text, summary, ratio_rows


# --------------------------------------------------------------------------- main


def prepare_data(path: Path | None) -> Path | None:
    """--data, or the default retina-like set (built when missing); None when it cannot be had."""
    if path is not None:
        return path if path.exists() else None
    default = make_retina_like.DEFAULT_OUT
    if not default.is_file() and make_retina_like.main(["--out", str(default)]) != 0:
        return None
    return default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The mission's run: ours vs a plain CNN, five averaged plain CNNs "
                                                 "and the baseline, at the same wall clock.")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S, metavar="T",
                        help=f"seconds per contestant (default {DEFAULT_TIME_LIMIT_S:g})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--contestants", nargs="+", choices=CONTESTANTS, default=list(CONTESTANTS))
    parser.add_argument("--data", type=Path, default=None,
                        help=f"the data (default {make_retina_like.DEFAULT_OUT}, built when missing)")
    parser.add_argument("--plain-loss", choices=sorted(plain_cnn.LOSSES), default=DEFAULT_PLAIN_LOSS,
                        help=f"the plain CNNs' loss (default {DEFAULT_PLAIN_LOSS})")
    parser.add_argument("--members", type=int, default=DEFAULT_MEMBERS,
                        help=f"plain CNNs averaged by {PLAIN_X}, T / members seconds each (default {DEFAULT_MEMBERS})")
    parser.add_argument("--lanes", type=int, default=1, help="contestants at once, each pinned to its own core")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT, help="results folder (benchmarks/out)")
    parser.add_argument("--slack", type=float, default=common.DEFAULT_SLACK_S,
                        help="seconds over the limit after which a run is killed")
    parser.add_argument("--resume", action="store_true", help="keep the finished rows of OUT/mission_<T>s.json")
    args = parser.parse_args(argv)
    if args.time_limit < MIN_TIME_LIMIT_S:
        parser.error(f"--time-limit must be >= {MIN_TIME_LIMIT_S:g} s (run.py refuses shorter limits)")
    if args.members < 1 or args.time_limit / args.members < plain_cnn.MIN_TIME_LIMIT_S:
        parser.error(f"--members must be >= 1 with T / members >= {plain_cnn.MIN_TIME_LIMIT_S:g} s")
    lanes_error = common.lanes_error(args.lanes)
    if lanes_error:
        parser.error(lanes_error)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tag = f"mission_{args.time_limit:g}s"
    results_path, markdown_path, base = args.out / f"{tag}.json", args.out / f"{tag}.md", args.out / tag
    data_dir = prepare_data(args.data)
    if data_dir is None:
        print(f"no data: {args.data or make_retina_like.DEFAULT_OUT} is missing and could not be built (see above)")
        return 0
    old = common.read_json(results_path) if args.resume else None
    rows: list[dict] = [r for r in (old or {}).get("rows", []) if not r.get("error")]
    payload: dict[str, Any] = {
        "benchmark": "mission_run", "date": common.now_iso(), "command": common.command_line(),
        "machine": common.machine_info(args.device), "time_limit_s": args.time_limit, "seeds": args.seeds,
        "contestants": args.contestants, "data": str(data_dir), "plain_loss": args.plain_loss,
        "members": args.members, "lanes": args.lanes,
        "timing": "every run is its own process; T counts from that process's start (interpreter, imports, data "
                  "loading included); with lanes > 1 each contestant is pinned to one core (taskset) and runs "
                  f"beside the other lanes; {PLAIN_X} runs its members one after another in its lane, "
                  "T / members each",
        "rows": rows, "summary": {}, "ratios": []}
    lock = threading.Lock()

    def record(row: dict | None = None) -> str:
        with lock:
            if row is not None:
                rows.append(row)
            check_heldout(rows, base)
            text, payload["summary"], payload["ratios"] = build_tables(rows)
            common.write_results(results_path, payload)
            markdown_path.write_text(f"# The mission's run at {args.time_limit:g} s\n\n{text}\n", encoding="utf-8")
            return text

    done = {(r["contestant"], r["seed"]) for r in rows}
    jobs = [(contestant, seed) for seed in args.seeds for contestant in args.contestants
            if (contestant, seed) not in done]

    def work(job, core: int | None) -> None:
        contestant, seed = job
        print(f"[seed {seed}] {contestant} (core {core}) -> {base / f'{contestant}-seed{seed}'}", flush=True)
        row = run_contestant(contestant, seed=seed, data_dir=data_dir, time_limit_s=args.time_limit,
                             run_dir=base / f"{contestant}-seed{seed}", device=args.device, slack_s=args.slack,
                             core=core, plain_loss=args.plain_loss, members=args.members)
        record(row)
        print(f"  seed {seed} {contestant}: {row['status']} macro-F1 {common._cell(row['macro_f1'], 4)}, wall "
              f"{common._cell(row['wall_s'], 1)}s{'  ' + row['error'] if row.get('error') else ''}", flush=True)

    common.run_in_lanes(jobs, args.lanes, work)
    if not rows:
        print("no runs")
        return 0
    text = record()
    print()
    print(f"## The mission's run at {args.time_limit:g} s ({args.lanes} lane(s), device {args.device})")
    print()
    print(text)
    print(f"\nwrote {results_path} and {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
