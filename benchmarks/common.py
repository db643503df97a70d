"""Shared helpers of the benchmark scripts (no torch at import time).

- `run_pipeline`: `python run.py ...` as a subprocess under a limit (killed, with its process
  group, after limit + slack), read back its report.json; never raises for a bad run, the
  returned row says what went wrong.
- `run_plain_cnn`: the same for `benchmarks/plain_cnn.py` (the plain-CNN baseline), reading its
  result.json. Both take `core=`: the process pinned to that core with `taskset -c`.
- `lanes_error`, `run_in_lanes`: K runs at once, each pinned to its own core (lane i holds core i
  while it runs), so every run sees the same one-core machine; one lane runs unpinned.
- `fashion_npz`: build (once, cached) a MedMNIST-style Fashion-MNIST npz (grey, or tinted RGB with
  `colour=True`) with `benchmarks/make_fashion_npz.py`, or say how to install the data and return None.
- `summarize`, `markdown_table`, `summary_table`: result rows -> mean/std per method, markdown.
- `machine_info`, `write_results`: the JSON written to benchmarks/out/*.json.

Rows are plain dicts with at least `method`, `seed`, `status` and metric keys
(`macro_f1`, `accuracy`, `wall_s`); a metric is None when the run failed.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"
DEFAULT_OUT = BENCH_DIR / "out"
FASHION_PACKAGE = "dataset-fashion-mnist"
DEFAULT_SLACK_S = 60.0
PLAIN_CNN_SCRIPT = BENCH_DIR / "plain_cnn.py"


def ensure_repo_on_path() -> None:
    """Make `import automl_pipeline` work when a script is started as `python benchmarks/x.py`."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


ensure_repo_on_path()
from automl_pipeline.reporting.numbers import finite  # noqa: E402  (needs the repo on sys.path)
from automl_pipeline.processes import run_logged  # noqa: E402
from submission import write_json  # noqa: E402

# --------------------------------------------------------------------------- numbers and json


num = finite   # kept as the benchmarks' short name


def read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def write_results(path: Path, payload: dict) -> Path:
    """Write `payload` as indented JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, payload)
    return path


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that started this process, shell-quoted (for the results file)."""
    argv = sys.argv if argv is None else argv
    return " ".join(shlex.quote(str(a)) for a in [Path(sys.executable).name, *argv])


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def machine_info(device: str | None = None) -> dict:
    """Platform, CPU count and (when torch is importable) the torch device's name."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "processor": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cores"] = len(os.sched_getaffinity(0))
    try:
        import torch
    except ImportError:  # pragma: no cover
        return info
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    info["cuda_available"] = torch.cuda.is_available()
    if device is not None:
        info["device"] = str(device)
        if str(device).startswith("cuda") and torch.cuda.is_available():
            info["device_name"] = torch.cuda.get_device_name(torch.device(str(device)))
        else:
            info["device_name"] = info["processor"] or "cpu"
    return info


# --------------------------------------------------------------------------- run.py as a subprocess


def pipeline_command(*, time_limit_s: float, output_dir: Path, seed: int, data_dir: Path | None,
                     device: str = "auto", extra: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, str(REPO_ROOT / "run.py"), "--time-limit", f"{time_limit_s:g}",
            "--output-dir", str(output_dir), "--seed", str(seed), "--device", device, "--quiet"]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return argv + [str(a) for a in extra]


def _tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(ln for ln in lines[-n:] if ln.strip())


def _subprocess_status(code: int | None, outcome: str, seconds: float, time_limit_s: float,
                       slack_s: float) -> tuple[str | None, str | None]:
    """(status, error) from run_logged's result; status None when the process exited with 0."""
    if outcome == "timeout":
        return "timeout", f"killed after {seconds:.0f} s (limit {time_limit_s:g} s + {slack_s:g} s slack)"
    if outcome.startswith("not_started"):
        return "failed", outcome
    if code != 0:
        return "failed", f"exit code {code}"
    return None, None


def _move_stale(path: Path) -> None:
    """A result file left by an earlier run must not be read as this run's."""
    if path.exists():
        os.replace(path, path.with_name(f"{path.stem}.previous{path.suffix}"))


def pinned(argv: Sequence[str], core: int | None) -> list[str]:
    """argv run under `taskset -c core` (unchanged for core None)."""
    return list(argv) if core is None else ["taskset", "-c", str(core), *argv]


def lanes_error(lanes: int) -> str | None:
    """Why `lanes` parallel pinned runs cannot go on this machine, or None when they can."""
    if lanes < 1 or (lanes > 1 and shutil.which("taskset") is None):
        return "--lanes must be >= 1, and lanes > 1 need `taskset` (util-linux)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if lanes > cores:
        return f"--lanes {lanes} is more than the {cores} usable cores"
    return None


def run_in_lanes(jobs: Iterable[Any], lanes: int, work: Callable[[Any, int | None], None]) -> None:
    """work(job, core) for every job in order, `lanes` at a time: with lanes > 1 each running job
    holds its own core (0 .. lanes - 1, given back when it ends), with one lane core is None (unpinned)."""
    free_cores = list(range(lanes))
    lock = threading.Lock()

    def one(job) -> None:
        with lock:
            core = free_cores.pop(0) if lanes > 1 else None
        try:
            work(job, core)
        finally:
            if core is not None:
                with lock:
                    free_cores.append(core)

    with ThreadPoolExecutor(max_workers=lanes) as pool:
        list(pool.map(one, jobs))


def run_pipeline(*, time_limit_s: float, output_dir: Path, seed: int, data_dir: Path | None,
                 device: str = "auto", extra: Sequence[str] = (), slack_s: float = DEFAULT_SLACK_S,
                 argv: Sequence[str] | None = None, core: int | None = None) -> dict:
    """One `python run.py` run; returns a result dict (never raises for a failed run).

    Keys: status ("complete" | report status | "failed" | "timeout"), exit_code, error (None or a
    message with the last stderr line), seconds (measured outside), macro_f1, accuracy,
    balanced_accuracy, wall_s (the report's own, else the measured seconds), report (the parsed
    report.json or None), command. `argv` overrides the command (tests); `core` pins it (taskset).
    """
    if argv is None:
        argv = pipeline_command(time_limit_s=time_limit_s, output_dir=output_dir, seed=seed, data_dir=data_dir,
                                device=device, extra=extra)
    argv = pinned(argv, core)
    return _run_and_read(argv, Path(output_dir), "report.json", "report", time_limit_s, slack_s,
                         metrics=lambda report: report.get("test_metrics"),
                         complete_status=lambda report: str(report.get("status", "complete")),
                         no_metrics="report.json has no held-out test metrics")


def plain_cnn_command(*, time_limit_s: float, output_dir: Path, seed: int, data_dir: Path | None, loss: str,
                      device: str = "auto", extra: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, str(PLAIN_CNN_SCRIPT), "--time-limit", f"{time_limit_s:g}", "--output-dir",
            str(output_dir), "--seed", str(seed), "--loss", loss, "--device", device]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    return argv + [str(a) for a in extra]


def run_plain_cnn(*, time_limit_s: float, output_dir: Path, seed: int, data_dir: Path | None, loss: str,
                  device: str = "auto", extra: Sequence[str] = (), slack_s: float = DEFAULT_SLACK_S,
                  argv: Sequence[str] | None = None, core: int | None = None) -> dict:
    """One `python benchmarks/plain_cnn.py` run (its own process, timed from outside); never raises
    for a failed run.

    Keys as run_pipeline's, with `result` (the parsed result.json or None) instead of `report`;
    wall_s is the script's own process-elapsed figure, else the measured seconds.
    """
    if argv is None:
        argv = plain_cnn_command(time_limit_s=time_limit_s, output_dir=output_dir, seed=seed, data_dir=data_dir,
                                 loss=loss, device=device, extra=extra)
    argv = pinned(argv, core)
    return _run_and_read(argv, Path(output_dir), "result.json", "result", time_limit_s, slack_s,
                         metrics=lambda result: result, complete_status=lambda result: "complete",
                         no_metrics="result.json has no held-out macro_f1")


def _run_and_read(argv: Sequence[str], output_dir: Path, file_name: str, key: str, time_limit_s: float,
                  slack_s: float, *, metrics, complete_status, no_metrics: str) -> dict:
    """Run `argv` (logged, killed after the limit + slack), read the JSON file it writes into
    output_dir, and return the row run_pipeline / run_plain_cnn document; the parsed file is under
    `key`. metrics(parsed) -> the dict holding macro_f1/accuracy/balanced_accuracy;
    complete_status(parsed) -> the status of a run that exited cleanly with metrics."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / file_name
    _move_stale(path)
    code, outcome, seconds = run_logged(argv, output_dir, time_limit_s + slack_s, cwd=REPO_ROOT)
    parsed = read_json(path)
    tail = _tail(output_dir / "stderr.log")
    found = metrics(parsed or {})
    found = found if isinstance(found, dict) else {}
    status, error = _subprocess_status(code, outcome, seconds, time_limit_s, slack_s)
    if status is None:
        if parsed is None:
            status, error = "failed", f"no readable {file_name}"
        elif num(found.get("macro_f1")) is None:
            status, error = "failed", no_metrics
        else:
            status = complete_status(parsed)
    if error is not None and tail:
        error = f"{error}: {tail.splitlines()[-1].strip()}"
    wall = num((parsed or {}).get("wall_s"))
    return {"status": status, "exit_code": code, "error": error, "seconds": round(seconds, 3),
            "macro_f1": num(found.get("macro_f1")), "accuracy": num(found.get("accuracy")),
            "balanced_accuracy": num(found.get("balanced_accuracy")),
            "wall_s": wall if wall is not None else round(seconds, 3), key: parsed,
            "command": " ".join(shlex.quote(str(a)) for a in argv), "stderr_tail": tail if error else None}


# --------------------------------------------------------------------------- data


def fashion_npz(*, imbalance_ratio: float = 1.0, n_train: int = 5000, n_test: int = 2000, seed: int = 0,
                colour: bool = False, cache_dir: Path | None = None, log=print) -> Path | None:
    """A Fashion-MNIST npz built with make_fashion_npz.py (cached under `cache_dir`, default
    benchmarks/out/data/); `colour` = RGB images with random per-image tints (its --colour).

    Returns None, after printing how to install the data, when the Debian package is missing.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_OUT / "data"
    tag = "fmnist" + ("_colour" if colour else "") + ("" if imbalance_ratio == 1 else f"_lt{imbalance_ratio:g}")
    path = cache_dir / f"{tag}_n{n_train}_t{n_test}_s{seed}.npz"
    if path.is_file():
        return path
    ensure_bench_on_path()
    import make_fashion_npz as maker   # noqa: PLC0415 (benchmarks/ script)

    if maker.find_source_dir(None) is None:
        log(f"Fashion-MNIST is not installed (Debian package {FASHION_PACKAGE}). Install it with:\n"
            f"    sudo apt-get install {FASHION_PACKAGE}\n"
            f"and run this benchmark again; skipping this dataset.")
        return None
    code = maker.main(["--out", str(path), "--n-train", str(n_train), "--n-test", str(n_test),
                       "--imbalance-ratio", f"{imbalance_ratio:g}", "--seed", str(seed)]
                      + (["--colour"] if colour else []))
    return path if code == 0 and path.is_file() else None


def run_data_on_one_thread(data_path: Path | None, seed: int):
    """The run's data for `seed` (its loader at the CPU's 32 px cap, its splits) as the phases' RunData on the CPU,
    with torch on one thread and seeded: what the in-process training benchmarks train on."""
    import torch

    from automl_pipeline.data import load_dataset, make_splits
    from automl_pipeline.pipeline import _to_run_data

    torch.set_num_threads(1)
    dataset = load_dataset(data_path, max_side=32)
    data = _to_run_data(dataset, make_splits(dataset, seed=seed), torch.device("cpu"))
    torch.manual_seed(seed)
    return data


def ensure_bench_on_path() -> None:
    bench = str(BENCH_DIR)
    if bench not in sys.path:
        sys.path.insert(0, bench)


# --------------------------------------------------------------------------- tables


def mean_std(values: Iterable[Any]) -> dict:
    """{"mean", "std", "n"} over the finite values; std is the sample std (n - 1), 0.0 for one value,
    mean/std None for none."""
    xs = [x for x in (num(v) for v in values) if x is not None]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "n": len(xs)}


def summarize(rows: Sequence[dict], metrics: Sequence[str] = ("macro_f1", "accuracy", "wall_s"),
              key: str = "method") -> dict:
    """{method: {metric: mean_std(...), "runs": n, "failed": n}} in first-seen method order."""
    out: dict[str, dict] = {}
    for method in dict.fromkeys(r[key] for r in rows):
        mine = [r for r in rows if r[key] == method]
        out[method] = {m: mean_std(r.get(m) for r in mine) for m in metrics}
        out[method]["runs"] = len(mine)
        out[method]["failed"] = sum(1 for r in mine if r.get("error"))
    return out


def _cell(value: Any, digits: int) -> str:
    x = num(value)
    if x is None:
        return "-" if value is None else str(value)
    return f"{x:.{digits}f}"


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, int]]) -> str:
    """columns: (row key, header, decimals for numbers). Failed rows get their error in a last column."""
    has_err = any(r.get("error") for r in rows)
    headers = [h for _, h, _ in columns] + (["note"] if has_err else [])
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for r in rows:
        cells = [_cell(r.get(k), d) for k, _, d in columns]
        if has_err:
            cells.append(str(r.get("error") or "").replace("|", "/").replace("\n", " ")[:120])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_mean_std(stats: dict, digits: int = 3) -> str:
    if stats.get("mean") is None:
        return "-"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def summary_table(summary: dict, metrics: Sequence[tuple[str, str, int]]) -> str:
    """Mean ± std per method: metrics are (key, header, decimals)."""
    headers = ["method", "runs", "failed"] + [h for _, h, _ in metrics]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for method, stats in summary.items():
        cells = [method, str(stats.get("runs", 0)), str(stats.get("failed", 0))]
        cells += [fmt_mean_std(stats[k], d) + (f" (n={stats[k]['n']})" if stats[k]["n"] != stats.get("runs") else "")
                  for k, _, d in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
