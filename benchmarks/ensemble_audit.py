"""What the ensemble's delivery decisions were worth on the held-out test, over finished runs of ours.

    python benchmarks/ensemble_audit.py DIR [DIR ...] [--out benchmarks/out/ensemble_audit.json]

Reads every report.json under the folders (runs of `run.py`, e.g. a quality_vs_plain_cnn or ablation
results folder) whose `ensemble.heldout_macro_f1` holds both the ensemble and the best single model
(RunReport writes the delivered model and the runner-up there). Per (data, time limit, delivered or not):
runs, the mean held-out macro-F1 of the ensemble minus the single model's, and in how many runs the
ensemble was ahead. Runs that repeat one another exactly (same data, seed, limit and both held-out
scores: a deterministic rerun) count once. The held-out test never decides anything at run time; this
audits a rule afterwards. Prints a markdown table and writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import common

COLUMNS = [("data", "data", 0), ("time_limit_s", "T s", 0), ("delivered", "ensemble delivered", 0),
           ("runs", "runs", 0), ("mean_gain", "held-out: ensemble - single (mean)", 4),
           ("ensemble_ahead", "runs with the ensemble ahead", 0)]


def audit_row(report: dict) -> dict | None:
    """(data, T, seed, delivered, held-out gain of the ensemble over the single model) of one report, or None."""
    section = report.get("ensemble") or {}
    heldout = section.get("heldout_macro_f1") or {}
    ensemble = [v for name, v in heldout.items() if name.startswith("ensemble")]
    single = [v for name, v in heldout.items() if not name.startswith("ensemble")]
    if len(ensemble) != 1 or len(single) != 1:
        return None
    source = (report.get("data") or {}).get("source") or "digits"
    return {"data": Path(str(source)).stem, "time_limit_s": report.get("time_limit_s"),
            "seed": (report.get("settings") or {}).get("seed"), "delivered": bool(section.get("delivered")),
            "ensemble": round(ensemble[0], 6), "single": round(single[0], 6),
            "gain": ensemble[0] - single[0]}


def summarize(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["data"], row["time_limit_s"], row["delivered"]), []).append(row["gain"])
    return [{"data": data, "time_limit_s": limit, "delivered": delivered, "runs": len(gains),
             "mean_gain": statistics.fmean(gains), "ensemble_ahead": sum(g > 0 for g in gains)}
            for (data, limit, delivered), gains in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT / "ensemble_audit.json")
    args = parser.parse_args(argv)
    rows, seen = [], set()
    for folder in args.dirs:
        for path in sorted(folder.rglob("report.json")):
            report = common.read_json(path)
            row = audit_row(report) if report else None
            key = row and (row["data"], row["time_limit_s"], row["seed"], row["ensemble"], row["single"])
            if row is None or key in seen:
                continue
            seen.add(key)
            rows.append({**row, "report": str(path)})
    if not rows:
        print("no report.json with both the ensemble's and the single model's held-out scores", file=sys.stderr)
        return 1
    summary = summarize(rows)
    print(common.markdown_table(summary, COLUMNS))
    common.write_results(args.out, {"command": common.command_line(), "rows": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
