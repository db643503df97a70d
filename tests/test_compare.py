"""Baseline vs ours over seeds (automl_pipeline.compare), with fake runs instead of the pipeline."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from automl_pipeline import compare
from automl_pipeline.compare import RunSpec, add_compare_arguments, compare_main, run_comparison

# A stand-in for `python run.py`: records that it ran, then behaves as told by its arguments.
# argv: out_dir method seed limit marker_file behaviour
FAKE_RUN = r"""
import json, sys, time
from pathlib import Path
out, method, seed, limit, marker, behaviour = sys.argv[1:7]
seed = int(seed)
with open(marker, "a") as f:
    f.write(f"{method}-seed{seed}\n")
if behaviour == "crash":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("RuntimeError: simulated crash in BOHB", file=sys.stderr)
    sys.exit(1)
if behaviour == "hang":
    time.sleep(60)
if behaviour == "no_report":
    sys.exit(0)
f1 = {"ours": 0.60, "baseline": 0.50}[method] + 0.01 * seed
report = {"status": "complete", "time_limit_s": float(limit), "wall_s": 0.9 * float(limit),
          "test_metrics": {"macro_f1": f1, "accuracy": f1 + 0.1, "balanced_accuracy": f1 - 0.02,
                           "per_class_f1": [f1, f1], "confusion_matrix": [[5, 1], [1, 5]]}}
Path(out).mkdir(parents=True, exist_ok=True)
Path(out, "report.json").write_text(json.dumps(report))
"""


def fake_command(marker: Path, behaviour: dict[tuple[str, int], str] | None = None):
    behaviour = behaviour or {}

    def build(spec: RunSpec) -> list[str]:
        return [sys.executable, "-c", FAKE_RUN, str(spec.output_dir), spec.method, str(spec.seed),
                str(spec.time_limit_s), str(marker), behaviour.get((spec.method, spec.seed), "ok")]

    return build


def invocations(marker: Path) -> list[str]:
    return marker.read_text().split() if marker.exists() else []


def _first_comparison(tmp_path: Path):
    """Seeds 0-2, the baseline of seed 1 crashes."""
    marker = tmp_path / "calls.txt"
    out = tmp_path / "cmp"
    logs: list[str] = []
    path = run_comparison(None, 10.0, [0, 1, 2], output_dir=out, baseline_time_factor=3.0,
                          run_command=fake_command(marker, {("baseline", 1): "crash"}), log=logs.append)
    return path, out, marker, logs


@pytest.fixture(scope="module")
def first_comparison(tmp_path_factory):
    """Shared by the tests that only read the results."""
    return _first_comparison(tmp_path_factory.mktemp("first"))


def test_one_row_per_seed_and_method_and_crash_is_recorded(first_comparison):
    path, out, marker, _ = first_comparison
    result = json.loads(path.read_text())
    rows = {(r["method"], r["seed"]): r for r in result["rows"]}
    assert len(result["rows"]) == 6 and set(rows) == {(m, s) for m in ("ours", "baseline") for s in (0, 1, 2)}
    crashed = rows[("baseline", 1)]
    assert crashed["status"] == "failed" and crashed["exit_code"] == 1
    assert "simulated crash in BOHB" in crashed["error"] and crashed["macro_f1"] is None
    # the runs after the crash still ran
    assert rows[("ours", 2)]["status"] == "complete" and rows[("baseline", 2)]["status"] == "complete"
    assert rows[("ours", 2)]["macro_f1"] == pytest.approx(0.62)
    assert rows[("ours", 0)]["limit_s"] == 10.0 and rows[("baseline", 0)]["limit_s"] == 30.0
    assert sorted(invocations(marker)) == sorted(f"{m}-seed{s}" for m in ("ours", "baseline") for s in (0, 1, 2))
    for name in ("comparison.json", "comparison.md", "comparison.png"):
        assert (out / name).is_file()
    assert (out / "runs" / "baseline-seed1" / "stderr.log").read_text().count("simulated crash") == 1


def test_summary_and_paired_statistics(first_comparison):
    result = json.loads(first_comparison[0].read_text())
    ours, base = result["summary"]["ours"], result["summary"]["baseline"]
    assert ours["n_ok"] == 3 and base["n_ok"] == 2 and base["n_runs"] == 3
    assert ours["macro_f1"]["mean"] == pytest.approx(0.61)
    assert ours["macro_f1"]["std"] == pytest.approx(0.01)
    assert base["macro_f1"]["mean"] == pytest.approx(0.51)
    p = result["paired"]
    assert p["seeds"] == [0, 2] and p["n"] == 2 and p["wins"] == 2 and p["losses"] == 0
    assert p["mean_difference"] == pytest.approx(0.10)
    assert p["wilcoxon_p"] is None and "too few" in p["note"]


def test_markdown_and_png(first_comparison):
    _, out, _, _ = first_comparison
    text = (out / "comparison.md").read_text()
    assert "0.610 ± 0.010" in text and "0.510 ± 0.014" in text
    assert "| 1 | baseline | failed |" in text
    assert "+0.100" in text and "too few" in text.lower()
    assert "cannot show much" in text
    assert "![" in text and "comparison.png" in text
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000


def test_second_call_reruns_only_the_failed_run(tmp_path):
    path, out, marker, _ = _first_comparison(tmp_path)
    before = invocations(marker)
    run_comparison(None, 10.0, [0, 1, 2], output_dir=out, baseline_time_factor=3.0,
                   run_command=fake_command(marker), log=lambda m: None)
    assert invocations(marker)[len(before):] == ["baseline-seed1"]  # finished runs were read back
    result = json.loads(path.read_text())
    assert all(r["status"] == "complete" for r in result["rows"])
    assert sum(r["resumed"] for r in result["rows"]) == 5
    p = result["paired"]
    assert p["n"] == 3 and p["wilcoxon_p"] is not None and p["ttest_p"] is None  # constant differences
    assert 0 < p["wilcoxon_p"] <= 1
    # a third call runs nothing at all
    run_comparison(None, 10.0, [0, 1, 2], output_dir=out, baseline_time_factor=3.0,
                   run_command=fake_command(marker), log=lambda m: None)
    assert len(invocations(marker)) == len(before) + 1


def test_hanging_run_is_killed_and_marked_timeout(tmp_path):
    marker = tmp_path / "calls.txt"
    path = run_comparison(None, 0.5, [0], output_dir=tmp_path / "cmp", baseline_time_factor=1.0,
                          run_command=fake_command(marker, {("ours", 0): "hang", ("baseline", 0): "no_report"}),
                          log=lambda m: None, timeout_slack_s=1.0)
    rows = {r["method"]: r for r in json.loads(path.read_text())["rows"]}
    assert rows["ours"]["status"] == "timeout" and rows["ours"]["wall_s"] < 20
    assert rows["baseline"]["status"] == "failed" and "no readable report.json" in rows["baseline"]["error"]
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "No seed where both methods succeeded" in text
    assert (tmp_path / "cmp" / "comparison.png").is_file()


def test_command_that_cannot_start_is_a_failed_row(tmp_path):
    def missing(spec):
        return [str(tmp_path / "no-such-python"), "run.py"]

    path = run_comparison(None, 1.0, [3], output_dir=tmp_path / "cmp", run_command=missing, log=lambda m: None)
    rows = json.loads(path.read_text())["rows"]
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("not_started" in r["error"] for r in rows)


def test_default_run_command():
    spec = RunSpec(method="baseline", seed=4, time_limit_s=900.0, output_dir=Path("/o/runs/baseline-seed4"),
                   data_dir=Path("/data/retina"))
    argv = compare.default_run_command(spec)
    assert argv[0] == sys.executable and argv[1].endswith("run.py")
    assert argv[2:] == ["--time-limit", "900", "--output-dir", "/o/runs/baseline-seed4", "--seed", "4",
                        "--method", "baseline", "--quiet", "--data-dir", "/data/retina"]
    no_data = compare.default_run_command(RunSpec("ours", 0, 2.5, Path("o"), None))
    assert "--data-dir" not in no_data and no_data[3] == "2.5"


def parse(argv):
    return add_compare_arguments(argparse.ArgumentParser()).parse_args(argv)


@pytest.mark.parametrize("argv, message", [
    (["--time-limit", "0"], "--time-limit"),
    (["--time-limit", "-5"], "--time-limit"),
    (["--time-limit", "nan"], "--time-limit"),
    (["--time-limit", "10", "--baseline-time-factor", "0"], "--baseline-time-factor"),
    (["--time-limit", "10", "--seeds", "1", "1"], "distinct"),
    (["--time-limit", "10", "--seeds", "-1"], "non-negative"),
    (["--time-limit", "10", "--data-dir", "/no/such/dir"], "does not exist"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    def never(spec):
        raise AssertionError("no run may start for bad arguments")

    assert compare_main(parse(argv), run_command=never) == 2
    assert message in capsys.readouterr().err


def test_empty_seeds_exit_2():
    with pytest.raises(SystemExit) as exc:
        parse(["--time-limit", "10", "--seeds"])
    assert exc.value.code == 2
    args = parse(["--time-limit", "10"])
    args.seeds = []
    assert compare_main(args) == 2


def test_compare_main_exit_codes(tmp_path, capsys):
    marker = tmp_path / "calls.txt"
    args = parse(["--time-limit", "10", "--seeds", "0", "--output-dir", str(tmp_path / "a")])
    assert compare_main(args, run_command=fake_command(marker), log=lambda m: None) == 0
    args = parse(["--time-limit", "10", "--seeds", "0", "--output-dir", str(tmp_path / "b")])
    assert compare_main(args, run_command=fake_command(marker, {("ours", 0): "crash"}), log=lambda m: None) == 1
    assert "ours seed 0 (failed)" in capsys.readouterr().err


def test_real_compare_on_the_digits_demo(tmp_path):
    """`python run.py compare` end to end: real runs of both methods, two seeds, tiny limits."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, str(repo / "run.py"), "compare", "--time-limit", "12", "--seeds", "0", "1",
                           "--baseline-time-factor", "1", "--output-dir", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert sorted((r["method"], r["seed"]) for r in rows) == [("baseline", 0), ("baseline", 1), ("ours", 0), ("ours", 1)]
    for row in rows:  # on a loaded machine a 12 s run may end by its watchdog: still a valid result
        assert row["status"] in ("complete", "stopped_by_watchdog"), row
        assert 0 <= row["macro_f1"] <= 1 and row["wall_s"] < 12, row
    assert "ours" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
