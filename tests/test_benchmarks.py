"""The pieces of the benchmark scripts (benchmarks/common.py, benchmarks/quality_vs_resnet.py); no full benchmarks."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import quality_vs_resnet as qvr  # noqa: E402

from automl_pipeline.training import TensorData  # noqa: E402


@pytest.mark.parametrize("channels", [1, 3])
def test_resnet18_builder_gives_logits_for_small_images(channels):
    model = qvr.build_resnet18(channels, 7).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.in_channels == channels
    assert isinstance(model.maxpool, torch.nn.Identity)
    with torch.no_grad():
        out = model(torch.randn(2, channels, 8, 8))
    assert out.shape == (2, 7)


def test_mean_std_and_summary():
    stats = common.mean_std([0.5, 0.7, None, float("nan"), 0.9])
    assert stats["n"] == 3
    assert stats["mean"] == pytest.approx(0.7)
    assert stats["std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))
    assert common.mean_std([0.4]) == {"mean": 0.4, "std": 0.0, "n": 1}
    assert common.mean_std([None]) == {"mean": None, "std": None, "n": 0}

    rows = [{"method": "ours", "seed": s, "macro_f1": f, "accuracy": f + 0.1, "wall_s": 30.0, "error": None}
            for s, f in enumerate([0.8, 0.9])]
    rows.append({"method": "resnet18", "seed": 0, "macro_f1": None, "accuracy": None, "wall_s": None,
                 "error": "RuntimeError: boom"})
    summary = common.summarize(rows)
    assert list(summary) == ["ours", "resnet18"]
    assert summary["ours"]["macro_f1"]["mean"] == pytest.approx(0.85)
    assert summary["ours"]["accuracy"]["std"] == pytest.approx(statistics.stdev([0.9, 1.0]))
    assert summary["resnet18"]["failed"] == 1 and summary["resnet18"]["macro_f1"]["n"] == 0

    table = common.markdown_table(rows, [("method", "method", 0), ("seed", "seed", 0), ("macro_f1", "F1", 3)])
    lines = table.splitlines()
    assert lines[0] == "| method | seed | F1 | note |"
    assert "| ours | 0 | 0.800 |" in lines[2]
    assert lines[4].startswith("| resnet18 | 0 | - |") and "boom" in lines[4]
    text = common.summary_table(summary, [("macro_f1", "F1", 3)])
    assert "| ours | 2 | 0 | 0.850 ± 0.071 |" in text


def test_write_results_is_json(tmp_path):
    path = common.write_results(tmp_path / "sub" / "r.json", {"a": 1, "p": Path("x")})
    assert json.loads(path.read_text()) == {"a": 1, "p": "x"}
    info = common.machine_info("cpu")
    assert info["cpu_count"] and info["device"] == "cpu"


def test_run_pipeline_reports_a_crash_instead_of_raising(tmp_path):
    argv = [sys.executable, "-c", "import sys; print('Traceback', file=sys.stderr); "
                                  "print('ValueError: simulated', file=sys.stderr); sys.exit(1)"]
    row = common.run_pipeline(time_limit_s=5, output_dir=tmp_path / "run", seed=0, data_dir=None, argv=argv)
    assert row["status"] == "failed" and row["macro_f1"] is None
    assert "exit code 1" in row["error"] and "simulated" in row["error"]


def test_run_pipeline_reads_the_report(tmp_path):
    out = tmp_path / "run"
    code = (f"import json, pathlib; pathlib.Path({str(out)!r}, 'report.json').write_text(json.dumps("
            "{'status': 'complete', 'wall_s': 3.5, 'test_metrics': {'macro_f1': 0.5, 'accuracy': 0.6}}))")
    row = common.run_pipeline(time_limit_s=5, output_dir=out, seed=0, data_dir=None,
                              argv=[sys.executable, "-c", code])
    assert row["status"] == "complete" and row["error"] is None
    assert (row["macro_f1"], row["accuracy"], row["wall_s"]) == (0.5, 0.6, 3.5)


def test_train_resnet_stays_near_its_budget_and_keeps_best_weights():
    torch.manual_seed(0)
    n, k = 64, 3
    y = torch.arange(n) % k
    x = torch.randn(n, 1, 8, 8) * 0.1
    x[torch.arange(n), 0, (y * 2), :] += 2.0       # a class-dependent bright row
    data = TensorData(x=x, y=y)
    result = qvr.train_resnet(data, data, k, torch.device("cpu"), time_limit_s=2.0, seed=0, batch_size=32,
                              log=lambda m: None)
    assert result["epochs"] >= 1 and result["best_epoch"] >= 1
    assert result["train_s"] < 2.0 + 2.0 * max(result["first_epoch_s"], 0.5)
    assert len(result["history"]) == result["epochs"]
    assert all(np.isfinite(h["val_macro_f1"]) for h in result["history"])


def test_cli_skips_fashion_cleanly_when_the_data_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(common, "fashion_npz", lambda **kw: None)
    assert qvr.main(["--data", "fashion", "--time-limit", "10", "--seeds", "0", "--out", str(tmp_path)]) == 0
    assert "skipped fashion" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.json"))


def test_onecycle_plan_fits_the_time_left():
    # whole epochs after a full timed first epoch: 10 batches of 1 s + 2 s validation = 12 s an epoch
    assert qvr.plan_onecycle_steps(100.0, 1.0, 2.0, 10, True) == 8 * 10
    # steps when not even an epoch fitted in the probe: 6 s of 12 s epochs -> half an epoch
    assert qvr.plan_onecycle_steps(6.0, 1.0, 2.0, 10, False) == 5
    assert qvr.plan_onecycle_steps(0.0, 1.0, 2.0, 10, True) == 0


def test_budget_adherence_reads_first_prediction_times(tmp_path):
    import budget_adherence

    log = tmp_path / "run.log"
    log.write_text("[    5.0s |    20.0s left] loading\n"
                   "[    7.6s |    18.0s left] predictions written from majority-class fallback (val macro-F1 0.0182)\n"
                   "[   12.5s |    10.0s left] predictions written from first model (val macro-F1 0.9000)\n"
                   "[   20.0s |     2.0s left] predictions written from final fit (val macro-F1 0.9500)\n")
    assert budget_adherence.first_predictions(log) == (7.6, 12.5)
    assert budget_adherence.first_predictions(tmp_path / "missing.log") == (None, None)


def test_resolution_benchmark_loads_photos_at_each_side_and_writes_rows(tmp_path, capsys, one_torch_thread):
    import resolution

    assert resolution.main(["--sides", "8", "12", "--n-images", "12", "--steps", "1", "--batch", "4",
                            "--device", "cpu", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "resolution_cpu.json").read_text())["rows"]
    assert [r["side"] for r in rows] == [8, 12]
    assert all(r["load_s_per_1000"] > 0 and r["images_per_s"] > 0 for r in rows)
    assert rows[1]["tensor_mib_per_10k"] == pytest.approx(rows[0]["tensor_mib_per_10k"] * (12 / 8) ** 2, rel=0.02)
    assert "| 12 |" in capsys.readouterr().out
