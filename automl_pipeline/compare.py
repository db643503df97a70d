"""Baseline vs ours over several seeds (``python run.py compare ...``).

Each (seed, method) is one ordinary run of the pipeline, started as a
subprocess so that a crash, a hang or a leak in one run cannot take the
comparison down. The command line for a run comes from an injectable
``run_command(spec) -> argv`` (tests pass a fake one). Layout::

    OUT/runs/{method}-seed{seed}/   the run's own OUT (report.json, predictions, ...)
                                    + stdout.log, stderr.log, compare_run.json (exit code, outcome)
    OUT/comparison.json             one row per seed and method, summary, paired test
    OUT/comparison.md               the same in words
    OUT/comparison.png              test macro-F1 and accuracy per method: a point per seed + the mean

Resumable: a run whose folder already holds a finished report.json (status
"complete", or any report with test metrics) is read back, not rerun, unless
this module recorded it as failed or timed out. comparison.json is rewritten
after every run.

Both methods get the same seeds, hence the same data splits; the baseline may
get a multiple of our time limit (the poster gave it 3x: 6 h vs 2 h).
No torch here; matplotlib and scipy are imported only when needed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from automl_pipeline.processes import run_logged
from automl_pipeline.reporting.numbers import finite
from budget.reserves import MIN_TIME_LIMIT_S
from submission import atomic_write_bytes, write_json

METHODS = ("ours", "baseline")
REPO_ROOT = Path(__file__).resolve().parents[1]
METRICS = ("macro_f1", "accuracy", "balanced_accuracy")
STDERR_TAIL_LINES = 15
DEFAULT_TIMEOUT_SLACK_S = 60.0


@dataclass(frozen=True)
class RunSpec:
    """One run of the comparison: what the command builder is given."""

    method: str                 # "ours" | "baseline"
    seed: int
    time_limit_s: float         # T for ours, T * factor for the baseline
    output_dir: Path            # OUT/runs/{method}-seed{seed}
    data_dir: Path | None       # None -> the pipeline's built-in demo data


RunCommand = Callable[[RunSpec], Sequence[str]]


def default_run_command(spec: RunSpec) -> list[str]:
    """``python run.py`` with the run's limit, folder, seed and method, quiet."""
    argv = [sys.executable, str(REPO_ROOT / "run.py"), "--time-limit", f"{spec.time_limit_s:g}",
            "--output-dir", str(spec.output_dir), "--seed", str(spec.seed), "--method", spec.method, "--quiet"]
    if spec.data_dir is not None:
        argv += ["--data-dir", str(spec.data_dir)]
    return argv


# --------------------------------------------------------------------------- one run


def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _is_finished(report: dict | None) -> bool:
    return report is not None and (report.get("status") == "complete" or isinstance(report.get("test_metrics"), dict))


def _tail(path: Path, n: int = STDERR_TAIL_LINES) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _with_tail(what: str, tail: str) -> str:
    """'what: <last stderr line>' on the first line (the exception, usually), then the last lines."""
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return what
    return f"{what}: {lines[-1].strip()}\n--- last stderr lines ---\n{tail}"


def _row(spec: RunSpec, report: dict | None, *, status: str, exit_code: int | None, error: str | None,
         seconds: float | None, resumed: bool) -> dict:
    metrics = (report or {}).get("test_metrics") or {}
    wall = finite((report or {}).get("wall_s"))
    row = {"seed": spec.seed, "method": spec.method, "status": status}
    row.update({k: finite(metrics.get(k)) if isinstance(metrics, dict) else None for k in METRICS})
    row.update({"wall_s": wall if wall is not None else (round(seconds, 3) if seconds is not None else None),
                "limit_s": spec.time_limit_s, "exit_code": exit_code, "error": error, "resumed": resumed,
                "run_dir": str(spec.output_dir)})
    return row


def run_one(spec: RunSpec, run_command: RunCommand, *, timeout_slack_s: float = DEFAULT_TIMEOUT_SLACK_S,
            log: Callable[[str], Any] = print) -> dict:
    """Run (or read back) one (seed, method); returns its comparison row. Never raises for a bad run."""
    run_dir = spec.output_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    report_path, record_path = run_dir / "report.json", run_dir / "compare_run.json"
    record = _read_json(record_path) or {}
    report = _read_json(report_path)
    if _is_finished(report) and record.get("outcome") in (None, "ok"):
        log(f"{spec.method} seed {spec.seed}: finished earlier, read back from {report_path}")
        return _row(spec, report, status=str(report.get("status", "complete")), exit_code=record.get("exit_code"),
                    error=None, seconds=record.get("seconds"), resumed=True)
    if report_path.exists():  # a stale or unfinished report must not be mistaken for this attempt's
        os.replace(report_path, run_dir / "report.previous.json")

    argv = [str(a) for a in run_command(spec)]
    timeout_s = spec.time_limit_s + timeout_slack_s
    log(f"{spec.method} seed {spec.seed}: running, limit {spec.time_limit_s:g} s (killed after {timeout_s:g} s)")
    code, outcome, seconds = run_logged(argv, run_dir, timeout_s)
    report = _read_json(report_path)
    stderr_tail = _tail(run_dir / "stderr.log")

    if outcome == "timeout":
        status, error = "timeout", f"killed after {seconds:.0f} s (limit {spec.time_limit_s:g} s + {timeout_slack_s:g} s)"
    elif outcome.startswith("not_started"):
        status, error = "failed", outcome
    elif code != 0:
        status, error = "failed", _with_tail(f"exit code {code}", stderr_tail)
    elif report is None:
        status, error = "failed", _with_tail("no readable report.json", stderr_tail)
    elif not isinstance(report.get("test_metrics"), dict) or finite(report["test_metrics"].get("macro_f1")) is None:
        status, error = "failed", "report.json has no held-out test metrics"
    else:
        status, error = str(report.get("status", "complete")), None
    write_json(record_path, {"outcome": "ok" if error is None else status, "exit_code": code,
                              "seconds": round(seconds, 3), "error": error, "command": argv})
    log(f"{spec.method} seed {spec.seed}: {status}" + (f" ({error.splitlines()[0]})" if error else
                                                        f", test macro-F1 {report['test_metrics']['macro_f1']:.3f}"))
    return _row(spec, report, status=status, exit_code=code, error=error, seconds=seconds, resumed=False)


def succeeded(row: dict) -> bool:
    return row.get("status") not in ("failed", "timeout") and finite(row.get("macro_f1")) is not None


# --------------------------------------------------------------------------- statistics


def _mean_std(values: list[float]) -> dict:
    return {"n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) >= 2 else None}


def summarise(rows: list[dict]) -> dict:
    """Per method: mean / sample std of each metric over its successful seeds."""
    out = {}
    for method in METHODS:
        ok = [r for r in rows if r["method"] == method and succeeded(r)]
        out[method] = {"n_runs": sum(1 for r in rows if r["method"] == method), "n_ok": len(ok)}
        for key in METRICS + ("wall_s",):
            out[method][key] = _mean_std([r[key] for r in ok if finite(r.get(key)) is not None])
    return out


def paired(rows: list[dict]) -> dict:
    """ours - baseline test macro-F1 over seeds where both succeeded; tests only when n >= 3."""
    by = {(r["method"], r["seed"]): r for r in rows}
    seeds = sorted(s for (m, s), r in by.items() if m == "ours" and succeeded(r)
                   and ("baseline", s) in by and succeeded(by[("baseline", s)]))
    diffs = [by[("ours", s)]["macro_f1"] - by[("baseline", s)]["macro_f1"] for s in seeds]
    result = {"seeds": seeds, "n": len(diffs), "differences": diffs,
              "mean_difference": statistics.fmean(diffs) if diffs else None,
              "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs),
              "ties": sum(d == 0 for d in diffs), "wilcoxon_p": None, "ttest_p": None, "note": None}
    if len(diffs) < 3:
        result["note"] = f"too few paired seeds (n = {len(diffs)}) for a significance test; it needs at least 3"
        return result
    try:
        from scipy import stats
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        result["note"] = "scipy is not available: no significance test"
        return result
    notes = []
    if all(d == 0 for d in diffs):
        notes.append("all differences are zero: the Wilcoxon test is undefined")
    else:
        try:
            result["wilcoxon_p"] = float(stats.wilcoxon(diffs).pvalue)
        except ValueError as exc:
            notes.append(f"Wilcoxon test not computed: {exc}")
    if len(set(diffs)) > 1:
        p = float(stats.ttest_rel([by[("ours", s)]["macro_f1"] for s in seeds],
                                  [by[("baseline", s)]["macro_f1"] for s in seeds]).pvalue)
        result["ttest_p"] = p if math.isfinite(p) else None
    else:
        notes.append("the differences have no spread: the paired t-test is undefined")
    result["note"] = "; ".join(notes) or None
    return result


# --------------------------------------------------------------------------- outputs


def _fmt(x: Any, digits: int = 3) -> str:
    v = finite(x)
    return "n/a" if v is None else f"{v:.{digits}f}"


def _pm(stat: dict, digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    return _fmt(stat["mean"], digits) + (f" ± {_fmt(stat['std'], digits)}" if stat["std"] is not None else " (n = 1)")


def render_markdown(result: dict) -> str:
    s, p, rows = result["summary"], result["paired"], result["rows"]
    factor = result["baseline_time_factor"]
    lines = ["# Baseline vs ours", "",
             f"Data: `{result['data_dir'] or 'built-in demo (sklearn digits)'}`. Seeds: "
             f"{', '.join(str(x) for x in result['seeds'])}. Time limit: ours {result['time_limit_s']:g} s, "
             f"baseline {result['time_limit_s'] * factor:g} s ({factor:g}× ours). "
             "Both methods use the same seeds, hence the same splits; metrics are on the held-out test split.", "",
             "## Mean ± std over successful seeds", "",
             "| method | runs ok | test macro-F1 | accuracy | balanced accuracy | wall (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m in METHODS:
        lines.append(f"| {m} | {s[m]['n_ok']}/{s[m]['n_runs']} | {_pm(s[m]['macro_f1'])} | {_pm(s[m]['accuracy'])} | "
                     f"{_pm(s[m]['balanced_accuracy'])} | {_pm(s[m]['wall_s'], 0)} |")
    lines += ["", "## Per seed", "",
              "| seed | method | status | test macro-F1 | accuracy | balanced accuracy | wall (s) | limit (s) | exit | error |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        err = (r.get("error") or "").splitlines()[0][:120].replace("|", "\\|") if r.get("error") else ""
        lines.append(f"| {r['seed']} | {r['method']} | {r['status']}{' (resumed)' if r.get('resumed') else ''} | "
                     f"{_fmt(r['macro_f1'])} | {_fmt(r['accuracy'])} | {_fmt(r['balanced_accuracy'])} | "
                     f"{_fmt(r['wall_s'], 0)} | {r['limit_s']:g} | {'' if r['exit_code'] is None else r['exit_code']} | {err} |")
    lines += ["", "## Paired comparison (ours − baseline, test macro-F1)", ""]
    if p["n"] == 0:
        lines.append("No seed where both methods succeeded: no paired comparison.")
    else:
        lines.append(f"Over {p['n']} seed(s) where both succeeded ({', '.join(str(x) for x in p['seeds'])}): "
                     f"mean difference **{p['mean_difference']:+.3f}**; ours better on {p['wins']}, "
                     f"worse on {p['losses']}, tied on {p['ties']}.")
        tests = []
        if p["wilcoxon_p"] is not None:
            tests.append(f"Wilcoxon signed-rank p = {p['wilcoxon_p']:.3f}")
        if p["ttest_p"] is not None:
            tests.append(f"paired t-test p = {p['ttest_p']:.3f}")
        if tests:
            lines += ["", "; ".join(tests) + " (two-sided)."]
        if p["note"]:
            lines += ["", f"Note: {p['note']}."]
        smallest = 2.0 / 2 ** p["n"]
        lines += ["", f"Honestly: {p['n']} seed(s) cannot show much. With n = {p['n']} the smallest two-sided "
                  f"Wilcoxon p-value possible is {min(smallest, 1.0):.3g}, and seed-to-seed spread on small data "
                  "is often as large as the difference between methods; read this as a sanity check, not as "
                  "evidence that one method is better."]
    failed = [r for r in rows if not succeeded(r)]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r['method']} seed {r['seed']}: {r['status']} — {(r.get('error') or '').splitlines()[0][:200] if r.get('error') else 'no metrics'} "
                  f"(logs in `{Path(r['run_dir']).name}/stderr.log`)" for r in failed]
    if result.get("plot"):
        lines += ["", f"![test macro-F1 and accuracy per method]({result['plot']})"]
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list[dict], path: Path) -> Path:
    """Two panels (test macro-F1, accuracy): one point per successful seed and the mean per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    colors = {"ours": "tab:orange", "baseline": "tab:blue"}
    for ax, key, title in zip(axes, ("macro_f1", "accuracy"), ("test macro-F1", "test accuracy")):
        for x, method in enumerate(METHODS):
            pts = [(r["seed"], r[key]) for r in rows if r["method"] == method and succeeded(r) and finite(r.get(key)) is not None]
            if not pts:
                ax.text(x, 0.5, "no run\nsucceeded", ha="center", va="center", fontsize=8, transform=ax.get_xaxis_transform())
                continue
            offsets = [(i - (len(pts) - 1) / 2) * 0.06 for i in range(len(pts))]
            ax.scatter([x + o for o in offsets], [v for _, v in pts], color=colors[method], s=40, alpha=0.8,
                       zorder=3, label="seed" if x == 0 else None)
            for o, (seed, v) in zip(offsets, pts):
                ax.annotate(str(seed), (x + o, v), textcoords="offset points", xytext=(5, 0), fontsize=7, va="center")
            mean = statistics.fmean(v for _, v in pts)
            ax.hlines(mean, x - 0.25, x + 0.25, color="black", lw=2, zorder=4, label="mean" if x == 0 else None)
            ax.text(x + 0.27, mean, f"{mean:.3f}", va="center", fontsize=8)
        limits = {r["method"]: r.get("limit_s") for r in rows}
        ax.set_xticks(range(len(METHODS)))
        ax.set_xticklabels([f"{m}\n({finite(limits.get(m)):g} s limit)" if finite(limits.get(m)) is not None else m
                            for m in METHODS])
        ax.set_xlim(-0.6, len(METHODS) - 0.4)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=8, loc="lower left")
    fig.suptitle("Held-out test metrics per seed (black bar = mean)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- the comparison


def run_comparison(data_dir: Path | str | None, time_limit_s: float, seeds: Sequence[int], *,
                   output_dir: Path | str, baseline_time_factor: float = 3.0,
                   run_command: RunCommand = default_run_command, log: Callable[[str], Any] = print,
                   timeout_slack_s: float = DEFAULT_TIMEOUT_SLACK_S) -> Path:
    """Run ours and the baseline for every seed; write comparison.{json,md,png}; return comparison.json's path.

    A failing, crashing or hanging run is recorded (status "failed"/"timeout",
    exit code, last stderr lines) and the comparison goes on. Raises ValueError
    for bad arguments only.
    """
    time_limit_s, baseline_time_factor = float(time_limit_s), float(baseline_time_factor)
    if not (math.isfinite(time_limit_s) and time_limit_s > 0):
        raise ValueError(f"time limit must be a positive number of seconds, got {time_limit_s}")
    if not (math.isfinite(baseline_time_factor) and baseline_time_factor > 0):
        raise ValueError(f"baseline time factor must be positive, got {baseline_time_factor}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("at least one seed is needed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = None if data_dir is None else Path(data_dir)

    result = {"data_dir": None if data is None else str(data), "time_limit_s": time_limit_s,
              "baseline_time_factor": baseline_time_factor, "seeds": seeds, "rows": [], "plot": None}

    def save() -> None:
        result["summary"], result["paired"] = summarise(result["rows"]), paired(result["rows"])
        write_json(out / "comparison.json", result)

    for seed in seeds:
        for method in METHODS:
            limit = time_limit_s * (baseline_time_factor if method == "baseline" else 1.0)
            spec = RunSpec(method=method, seed=seed, time_limit_s=limit,
                           output_dir=out / "runs" / f"{method}-seed{seed}", data_dir=data)
            try:
                row = run_one(spec, run_command, timeout_slack_s=timeout_slack_s, log=log)
            except Exception as exc:  # e.g. the command builder itself failed: a result, not the end
                row = _row(spec, None, status="failed", exit_code=None, error=f"{type(exc).__name__}: {exc}",
                           seconds=None, resumed=False)
                log(f"{method} seed {seed}: failed before running ({row['error']})")
            result["rows"].append(row)
            save()

    try:
        plot_comparison(result["rows"], out / "comparison.png")
        result["plot"] = "comparison.png"
    except Exception as exc:
        log(f"comparison plot failed: {type(exc).__name__}: {exc}")
    save()
    atomic_write_bytes(out / "comparison.md", render_markdown(result).encode("utf-8"))
    log(f"comparison written to {out / 'comparison.md'}")
    return out / "comparison.json"


# --------------------------------------------------------------------------- command line


def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``compare`` subcommand's arguments (the lead's CLI adds them to its subparser)."""
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="labelled image data (default: the built-in digits demo)")
    parser.add_argument("--time-limit", type=float, required=True, metavar="T",
                        help="seconds per run of ours; the baseline gets T * --baseline-time-factor")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                        help="seeds to run both methods with (default: 0 1 2)")
    parser.add_argument("--baseline-time-factor", type=float, default=3.0, metavar="F",
                        help="the baseline's time limit as a multiple of ours (default: 3, as on the poster)")
    parser.add_argument("--output-dir", type=Path, default=Path("comparison"),
                        help="where runs/ and comparison.{json,md,png} go (default: ./comparison)")
    return parser


def _argument_problem(args: argparse.Namespace) -> str | None:
    if not (math.isfinite(args.time_limit) and args.time_limit > 0):
        return f"--time-limit must be a positive number of seconds, got {args.time_limit:g}"
    if args.time_limit < MIN_TIME_LIMIT_S:
        return f"--time-limit {args.time_limit:g} is too short: each run needs at least {MIN_TIME_LIMIT_S:g} s"
    if not (math.isfinite(args.baseline_time_factor) and args.baseline_time_factor > 0):
        return f"--baseline-time-factor must be positive, got {args.baseline_time_factor:g}"
    if not args.seeds:
        return "--seeds needs at least one seed"
    if any(s < 0 for s in args.seeds):
        return f"--seeds must be non-negative integers, got {args.seeds}"
    if len(set(args.seeds)) != len(args.seeds):
        return f"--seeds must be distinct, got {args.seeds}"
    if args.data_dir is not None and not Path(args.data_dir).exists():
        return f"--data-dir {args.data_dir}: does not exist"
    if Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        return f"--output-dir {args.output_dir}: exists and is not a folder"
    return None


def compare_main(args: argparse.Namespace, *, run_command: RunCommand = default_run_command,
                 log: Callable[[str], Any] | None = None) -> int:
    """Exit code: 0 every run succeeded; 1 comparison written but some runs failed; 2 bad arguments."""
    problem = _argument_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    log = log or (lambda m: print(f"[compare] {m}", file=sys.stderr, flush=True))
    path = run_comparison(args.data_dir, args.time_limit, args.seeds, output_dir=args.output_dir,
                          baseline_time_factor=args.baseline_time_factor, run_command=run_command, log=log)
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    bad = [f"{r['method']} seed {r['seed']} ({r['status']})" for r in rows if not succeeded(r)]
    print(f"comparison: {path.with_suffix('.md')}")
    if bad:
        print(f"error: {len(bad)} of {len(rows)} runs did not succeed: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_compare_arguments(argparse.ArgumentParser(
        prog="run.py compare", description="Run the baseline and ours over several seeds and compare them."))
    return compare_main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
