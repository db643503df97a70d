"""What the runs of an ablation did inside: how much BOHB's trials learned per rung, and which cell BOHB
put at each stage (the poster's "more skips with depth").

    python benchmarks/ablation_facts.py benchmarks/out/ablation_fashion-lt5k_240s.json [--variants full ...]

Reads the run folders an ablation results file lists (`benchmarks/ablation.py` rows, `run_dir`):
- per run with a BOHB phase: the validation macro-F1 of its trials at the smallest budget and at the
  larger ones (hpbandster's OUT/bohb/results.json), and the budgets' range (report.json `bohb`);
- for every run whose BOHB searched a cell per stage (`bohb.cell_choice` = "per_stage"): how often each
  cell of the pool was the incumbent's choice at each stage, and the skip connections per cell of the
  delivered network's stack (`final.architecture.cell_stack`) by stage and kind (normal / reduction),
  for runs that delivered the BOHB incumbent.
Prints markdown tables and writes them to OUT/<results name>_facts.md. Reads only; runs nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

import common
from automl_pipeline.bohb.space import STAGE_CELL_KEYS as STAGE_KEYS  # noqa: E402  (common puts the repo on sys.path)

PER_STAGE = "per_stage"


def trial_scores(run_dirs: list[Path]) -> dict[str, list[float]]:
    """{"smallest", "larger"}: validation macro-F1 of the finished trials at the run's smallest budget
    and at its larger budgets, over runs whose BOHB phase completed; plus the budgets ("min_budget",
    "max_budget") of those runs."""
    out: dict[str, list[float]] = {"smallest": [], "larger": [], "min_budget": [], "max_budget": []}
    for run_dir in run_dirs:
        bohb = (common.read_json(run_dir / "report.json") or {}).get("bohb") or {}
        if bohb.get("status") != "completed":
            continue
        out["min_budget"].append(float(bohb["min_budget"]))
        out["max_budget"].append(float(bohb["max_budget"]))
        for line in _lines(run_dir / "bohb" / "results.json"):
            budget, result = line[1], line[3]
            if not isinstance(result, dict):
                continue
            rung = "smallest" if abs(float(budget) - float(bohb["min_budget"])) < 1e-6 else "larger"
            out[rung].append(float((result.get("info") or {}).get("val_macro_f1") or 0.0))
    return out


def trials_markdown(scores: dict[str, list[float]]) -> str:
    if not scores["min_budget"]:
        return "No run with a completed BOHB phase."
    lines = ["| trials at | trials | val macro-F1 median | 90th percentile | max | share below 0.4 |",
             "|" + " --- |" * 6]
    for rung in ("smallest", "larger"):
        values = sorted(scores[rung])
        if not values:
            continue
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        lines.append(f"| {rung} budget | {len(values)} | {statistics.median(values):.3f} | {p90:.3f} | "
                     f"{max(values):.3f} | {sum(v < 0.4 for v in values) / len(values):.2f} |")
    return (f"BOHB trials ({len(scores['min_budget'])} runs; smallest budget {min(scores['min_budget']):.2f}-"
            f"{max(scores['min_budget']):.2f} epochs, largest {min(scores['max_budget']):.2f}-"
            f"{max(scores['max_budget']):.2f}):\n\n" + "\n".join(lines))


def _lines(path: Path) -> list[list]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, list) and len(value) == 5:
            out.append(value)
    return out


def stage_choices(reports: list[dict]) -> list[Counter]:
    """Per stage: how often each cell name was the incumbent's choice (per-stage searches only)."""
    counts = [Counter() for _ in STAGE_KEYS]
    for report in reports:
        config = ((report.get("bohb") or {}).get("incumbent") or {}).get("config") or {}
        for stage, key in enumerate(STAGE_KEYS):
            if key in config:
                counts[stage][config[key]] += 1
    return counts


def delivered_skips(reports: list[dict]) -> dict[tuple[int, str], list[int]]:
    """(stage, "normal" | "reduction") -> skip counts of the delivered BOHB incumbents' cells there."""
    skips: dict[tuple[int, str], list[int]] = {}
    for report in reports:
        final = report.get("final") or {}
        if final.get("source") != "bohb_incumbent":
            continue
        for cell in (final.get("architecture") or {}).get("cell_stack") or []:
            kind = "reduction" if cell["reduction"] else "normal"
            skips.setdefault((int(cell["stage"]), kind), []).append(int(cell["skips"]))
    return skips


def choices_markdown(counts: list[Counter], n_runs: int) -> str:
    names = sorted({name for c in counts for name in c})
    lines = [f"| stage | {' | '.join(names)} |", "|" + " --- |" * (len(names) + 1)]
    for stage, c in enumerate(counts):
        lines.append(f"| {stage} | " + " | ".join(str(c.get(name, 0)) for name in names) + " |")
    return f"BOHB incumbents' cell per stage ({n_runs} runs with a per-stage search):\n\n" + "\n".join(lines)


def skips_markdown(skips: dict[tuple[int, str], list[int]]) -> str:
    lines = ["| stage | cell kind | cells | skips per cell (mean) | min | max |", "|" + " --- |" * 6]
    for stage, kind in sorted(skips):
        values = skips[stage, kind]
        lines.append(f"| {stage} | {kind} | {len(values)} | {statistics.mean(values):.2f} | {min(values)} | "
                     f"{max(values)} |")
    return "Skip connections per cell of the delivered stack (runs that delivered the incumbent):\n\n" \
        + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="an ablation results file (benchmarks/out/ablation_*.json)")
    parser.add_argument("--variants", nargs="+", default=None, help="only these variants (default: all)")
    args = parser.parse_args(argv)
    results = common.read_json(args.results)
    if results is None or not isinstance(results.get("rows"), list):
        print(f"error: {args.results}: not an ablation results file (no rows)", file=sys.stderr)
        return 2
    run_dirs = [Path(row.get("run_dir", "")) for row in results["rows"]
                if not args.variants or row.get("variant") in args.variants]
    reports = [report for report in (common.read_json(d / "report.json") for d in run_dirs)
               if report is not None and (report.get("bohb") or {}).get("cell_choice") == PER_STAGE]
    text = "\n\n".join([f"Source: `{args.results}`" + (f", variants {', '.join(args.variants)}" if args.variants else ""),
                        trials_markdown(trial_scores(run_dirs)),
                        choices_markdown(stage_choices(reports), len(reports)), skips_markdown(delivered_skips(reports))])
    print(text)
    out = args.results.with_name(args.results.stem + "_facts.md")
    out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
