"""Budget adherence: does `run.py` finish inside its limit, and does it use the time?

    python benchmarks/budget_adherence.py [--limits 30 120 600] [--data digits fashion] [--seed 0]

For each data set and limit it runs `python run.py --time-limit L` as a subprocess, measures the
wall clock from outside, and reads the run's report.json and run.log. Columns: limit, wall used
(outside), used fraction, time to the first predictions on disk and to the first trained model's
predictions (from run.log), held-out macro-F1 and accuracy, status.
Goals: wall < limit always; used fraction >= 0.9.

`fashion` is a 5,000-image Fashion-MNIST subset built from the Debian package
`dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`); without it that data set is
skipped with a message. Results go to benchmarks/out/budget_adherence.json.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ script)

PREDICTIONS_LINE = re.compile(r"^\[\s*([\d.]+)s \|.*\] predictions written from (.+?) \(")


def first_predictions(run_log: Path) -> tuple[float | None, float | None]:
    """(seconds to the first predictions, seconds to the first trained model's predictions)."""
    first = first_trained = None
    if not run_log.is_file():
        return None, None
    for line in run_log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = PREDICTIONS_LINE.match(line)
        if not match:
            continue
        seconds, source = float(match.group(1)), match.group(2)
        first = seconds if first is None else first
        if first_trained is None and "fallback" not in source:
            first_trained = seconds
    return first, first_trained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", type=float, nargs="+", default=[30, 120, 600])
    parser.add_argument("--data", nargs="+", choices=["digits", "fashion"], default=["digits", "fashion"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    args = parser.parse_args(argv)

    rows = []
    for data in args.data:
        data_dir = None if data == "digits" else common.fashion_npz(n_train=5000, n_test=2000, seed=args.seed)
        if data != "digits" and data_dir is None:
            continue
        for limit in args.limits:
            run_dir = args.out / "budget_adherence" / f"{data}-{limit:g}s"
            print(f"running {data} with --time-limit {limit:g} ...", file=sys.stderr, flush=True)
            result = common.run_pipeline(time_limit_s=limit, output_dir=run_dir, seed=args.seed,
                                         data_dir=data_dir, device=args.device)
            first, first_trained = first_predictions(run_dir / "run.log")
            rows.append({"data": data, "limit_s": limit, "wall_s": result["seconds"],
                         "used": result["seconds"] / limit, "inside": result["seconds"] < limit,
                         "first_predictions_s": first, "first_model_s": first_trained,
                         "macro_f1": result["macro_f1"], "accuracy": result["accuracy"],
                         "status": result["status"], "error": result["error"]})
    columns = [("data", "data", 0), ("limit_s", "limit s", 0), ("wall_s", "wall s", 1), ("used", "used", 3),
               ("first_predictions_s", "first preds s", 1), ("first_model_s", "first model s", 1),
               ("macro_f1", "test macro-F1", 4), ("accuracy", "accuracy", 4), ("status", "status", 0)]
    print(common.markdown_table(rows, columns))
    overruns = sum(not row["inside"] for row in rows)
    print(f"\noverruns: {overruns} of {len(rows)} runs")
    path = common.write_results(args.out / "budget_adherence.json", {
        "date": common.now_iso(), "machine": common.machine_info(args.device),
        "command": common.command_line(), "rows": rows})
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
