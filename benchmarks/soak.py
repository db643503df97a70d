"""Soak test: back-to-back short runs killed with SIGKILL at a random moment, then resumed.

For every run: start `run.py --time-limit L` in a fresh output folder, SIGKILL it at a random time
in [0.25 L, 0.9 L] (seeded), then `--resume` it (limit L again) and let it finish. Counted:

* no_predictions: runs whose resumed attempt ended without valid predictions (goal 0);
* lost_trials: BOHB trials finished on disk at the kill that the resumed run's report does not
  keep (goal 0);
* overruns: processes (killed ones excluded) that ran past their limit (goal 0);
* bad_exit: resumed attempts with an exit code other than 0 (goal 0).

Data: the digits demo, and a small long-tailed Fashion-MNIST npz when `make_fashion_npz.py` can
build one (needs the Debian package dataset-fashion-mnist; skipped otherwise).

    python benchmarks/soak.py --runs 3 --time-limit 40
Writes benchmarks/out/soak.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
FASHION = OUT / "data" / "soak_fmnist_lt10_n1000_t500.npz"


def fashion_npz() -> Path | None:
    """A small Fashion-MNIST npz (built once), or None when the data package is missing."""
    if FASHION.exists():
        return FASHION
    FASHION.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "make_fashion_npz.py"), "--out", str(FASHION),
                           "--n-train", "1000", "--n-test", "500", "--imbalance-ratio", "10"],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0 or not FASHION.exists():
        print(f"fashion: skipped ({(proc.stderr or proc.stdout).strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return FASHION


def trial_lines(path: Path) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    n = 0
    for line in text.splitlines():
        try:
            json.loads(line)
            n += 1
        except ValueError:
            pass
    return n


def valid_predictions(out: Path) -> bool:
    try:
        report = json.loads((out / "report.json").read_text())
        predictions = np.load(out / "predictions.npy", allow_pickle=False)
    except (OSError, ValueError):
        return False
    n_classes, n_predict = report["data"]["n_classes"], report["data"]["n_predict"]
    return bool(predictions.dtype == np.int64 and predictions.ndim == 1 and len(predictions) == n_predict
            and predictions.min() >= 0 and predictions.max() < n_classes)


def one_run(data: Path | None, limit: float, kill_at: float, out: Path) -> dict:
    base = [sys.executable, str(REPO / "run.py"), "--output-dir", str(out), "--quiet", "--time-limit", f"{limit:g}"]
    if data is not None:
        base += ["--data-dir", str(data)]
    started = time.monotonic()
    first = subprocess.Popen(base, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    while first.poll() is None and time.monotonic() - started < kill_at:
        time.sleep(0.05)
    if first.poll() is None:
        os.kill(first.pid, signal.SIGKILL)
        killed = True
    first.wait()
    first_wall = time.monotonic() - started
    trials_at_kill = trial_lines(out / "bohb" / "results.json")
    started = time.monotonic()
    second = subprocess.run([*base, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=limit + 60)
    second_wall = time.monotonic() - started
    report = {}
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        pass
    kept = (report.get("resume") or {}).get("bohb_trials_kept", 0)
    return {"kill_at_s": round(kill_at, 2), "killed": killed, "first_wall_s": round(first_wall, 2),
            "first_exit": first.returncode, "trials_at_kill": trials_at_kill, "trials_kept": kept,
            "lost_trials": max(0, trials_at_kill - kept) if killed else 0,
            "resume_exit": second.returncode, "resume_wall_s": round(second_wall, 2),
            "resume_status": report.get("status"), "valid_predictions": valid_predictions(out),
            "final_source": (report.get("final") or {}).get("source"),
            "test_macro_f1": (report.get("test_metrics") or {}).get("macro_f1"),
            "overrun": second_wall > limit or (not killed and first_wall > limit),
            "error": None if second.returncode == 0 else second.stderr.strip().splitlines()[-1:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per data set")
    parser.add_argument("--time-limit", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-fashion", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT / "soak.json")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    datasets: list[tuple[str, Path | None]] = [("digits", None)]
    if not args.no_fashion:
        path = fashion_npz()
        if path is not None:
            datasets.append(("fashion-lt10", path))
    rows = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        for name, data in datasets:
            for i in range(args.runs):
                kill_at = rng.uniform(0.25, 0.9) * args.time_limit
                row = {"data": name, "run": i, **one_run(data, args.time_limit, kill_at, Path(tmp) / f"{name}-{i}")}
                rows.append(row)
                print(f"{name:13s} run {i}: killed at {row['kill_at_s']:5.1f}s ({row['trials_at_kill']} trials) -> "
                      f"resume exit {row['resume_exit']} in {row['resume_wall_s']:5.1f}s, kept {row['trials_kept']}, "
                      f"valid {row['valid_predictions']}, test F1 {row['test_macro_f1']}", flush=True)
    summary = {"runs": len(rows), "time_limit_s": args.time_limit,
               "no_predictions": sum(not r["valid_predictions"] for r in rows),
               "lost_trials": sum(r["lost_trials"] for r in rows),
               "overruns": sum(bool(r["overrun"]) for r in rows),
               "bad_exit": sum(r["resume_exit"] != 0 for r in rows),
               "trials_kept": sum(r["trials_kept"] for r in rows)}
    print("\n| data | run | kill at s | trials at kill | kept | resume exit | resume wall s | valid | test F1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        f1 = "-" if r["test_macro_f1"] is None else f"{r['test_macro_f1']:.3f}"
        print(f"| {r['data']} | {r['run']} | {r['kill_at_s']} | {r['trials_at_kill']} | {r['trials_kept']} | "
              f"{r['resume_exit']} | {r['resume_wall_s']} | {r['valid_predictions']} | {f1} |")
    print("\nsummary:", json.dumps(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")
    return 0 if summary["no_predictions"] == summary["lost_trials"] == summary["overruns"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
