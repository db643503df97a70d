"""The pieces of the benchmark scripts (benchmarks/common.py, quality_vs_resnet.py, plain_cnn.py,
quality_vs_plain_cnn.py); no full benchmarks."""
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

import ablation  # noqa: E402
import common  # noqa: E402
import ensemble_audit  # noqa: E402
import epoch_choice  # noqa: E402
import head_choice  # noqa: E402
import plain_cnn  # noqa: E402
import quality_vs_plain_cnn as qpc  # noqa: E402
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


def test_plain_cnn_has_the_documented_size_and_takes_any_side():
    assert sum(p.numel() for p in plain_cnn.build_plain_cnn(1, 10, 28).parameters()) == 390_634
    with torch.no_grad():
        assert plain_cnn.build_plain_cnn(3, 4, 32).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 4)
        assert plain_cnn.build_plain_cnn(1, 10, 8).eval()(torch.randn(2, 1, 8, 8)).shape == (2, 10)   # digits: 1x1
    assert [plain_cnn.method_name(loss) for loss in ("ce", "focal_inv")] == ["plain_ce", "plain_focal"]


def test_plain_cnn_refuses_bad_data_with_exit_code_2(tmp_path, capsys):
    assert plain_cnn.main(["--time-limit", "30", "--data-dir", str(tmp_path / "missing"),
                           "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "missing" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "result.json").exists()


def test_plain_cnn_process_on_digits_ends_inside_its_limit(tmp_path):
    """The whole process, timed from outside: 20 s from start to exit, held-out macro-F1 well above chance.

    20 s, not 15: on a loaded 2-core machine start-up (torch, the search modules that
    automl_pipeline.phases imports, torch's warm-up) took up to 13.5 s, all of a 15 s run's work time."""
    limit = 20.0
    row = common.run_plain_cnn(time_limit_s=limit, output_dir=tmp_path / "run", seed=0, data_dir=None, loss="ce",
                               device="cpu", slack_s=30)
    assert row["status"] == "complete", row["error"]
    assert row["seconds"] <= limit
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["method"] == "plain_ce" and result["seed"] == 0 and result["time_limit_s"] == limit
    assert result["wall_s"] <= limit and result["epochs"] >= 1 and result["train_images_per_s"] > 0
    assert result["macro_f1"] > 0.5 and 0 < result["val_macro_f1"] <= 1
    assert result["data"]["n_test"] == 359   # digits: 20 % of each class carved out, as run.py does


def _fake_row(data, limit, method, seed, f1, **extra):
    row = {"data": data, "time_limit_s": limit, "method": method, "seed": seed, "status": "complete",
           "macro_f1": f1, "accuracy": f1, "wall_s": limit - 2.0, "seconds": limit - 1.5, "error": None}
    row.update(extra)
    return row


def test_plain_cnn_tables_summary_and_ratio_from_fake_rows():
    rows = [_fake_row("digits", 60.0, "ours", 0, 0.90, source="default_network", darts_arch_steps=0,
                      bohb_n_trials=0),
            _fake_row("digits", 60.0, "plain_ce", 0, 0.80, epochs=12, train_images_per_s=900.0),
            _fake_row("digits", 60.0, "plain_focal", 0, 0.84),
            _fake_row("digits", 60.0, "ours", 1, 0.92, source="first_model", darts_arch_steps=120,
                      darts_cell_used=True, bohb_n_trials=7, bohb_model_based_picks=2),
            _fake_row("digits", 60.0, "plain_ce", 1, 0.82),
            _fake_row("digits", 60.0, "plain_focal", 1, None, status="failed", error="exit code 1: boom"),
            _fake_row("colour-lt", 300.0, "plain_ce", 0, 0.5)]
    text, summary, ratios = qpc.build_tables(rows)
    assert [(s["data"], s["method"], s["runs"], s["failed"]) for s in summary] == [
        ("digits", "ours", 2, 0), ("digits", "plain_ce", 2, 0), ("digits", "plain_focal", 2, 1),
        ("colour-lt", "plain_ce", 1, 0)]
    assert summary[0]["macro_f1"]["mean"] == pytest.approx(0.91)
    digits, colour = ratios
    assert digits["best_plain"] == "plain_focal" and digits["best_plain_macro_f1"] == pytest.approx(0.84)
    assert digits["ratio"] == pytest.approx(0.91 / 0.84)
    assert colour["ours_macro_f1"] is None and colour["ratio"] is None and colour["best_plain"] == "plain_ce"
    assert "| digits | 60 | ours | 1 | complete | 0.9200 |" in text
    assert "| first_model | 120 | True | 7 | 2 |" in text and "boom" in text
    assert "| digits | 60 | ours | 2 | 0 | 0.9100 ± 0.0141 |" in text
    assert "| digits | 60 | 0.9100 | plain_focal | 0.8400 | 1.083 |" in text
    assert "| colour-lt | 300 | - | plain_ce | 0.5000 | - |" in text


def test_plain_cnn_benchmark_reads_what_the_pipeline_reports():
    report = {"final": {"source": "ensemble", "description": "ensemble of 2 models", "epochs": 9,
                        "train_images_per_s": 812.5,
                        "members": [{"name": "first model", "source": "first_model", "weight": 0.6},
                                    {"name": "BOHB trial 0-0-1", "source": "bohb_trial", "weight": 0.4}]},
              "darts": {"status": "completed", "arch_steps": 300, "cell_used": False},
              "bohb": {"status": "completed", "n_trials": 11, "model_based_picks": 4,
                       "rung_rank_correlation": [{"budgets": [2, 6], "n_configs": 5, "spearman": 0.41},
                                                 {"budgets": [6, 18], "n_configs": 2, "spearman": None}]},
              "phases": [{"name": "first_model", "start_s": 5.0, "end_s": 35.0},
                         {"name": "darts", "status": "skipped", "start_s": None, "end_s": None},
                         {"name": "final_fit", "start_s": 35.0, "end_s": 280.5}],
              "plan": {"skipped": {"darts": "no time for DARTS"}}}
    assert qpc.ours_facts(report) == {
        "source": "ensemble", "epochs": 9, "train_images_per_s": 812.5, "darts_arch_steps": 300,
        "darts_cell_used": False, "bohb_n_trials": 11, "bohb_model_based_picks": 4,
        "bohb_rank_correlation": "0.41, n/a", "phases_text": "first_model 30, darts -, final_fit 246",
        "ensemble_text": "first model (0.6), BOHB trial 0-0-1 (0.4)", "plan_skipped": "darts", "bag_folds": None, "bag_oof_macro_f1": None,
        "val_heldout_spearman": None, "evidence_win_rate": None, "evidence_bag_delivered": None,
        "bag_heldout_macro_f1": None, "passed_over_heldout_macro_f1": None, "evidence_text": None}
    bag_name = "5-fold bag of the final fit of the BOHB incumbent"
    overruled = {**report, "evidence": {"status": "completed", "bag": bag_name, "challenger": "ensemble of 2 models",
                                        "delivered": bag_name, "win_rate": 0.71},
                 "ensemble": {"heldout_macro_f1": {bag_name: 0.42, "ensemble of 2 models": 0.3855}},
                 "candidates": {"models": [{"name": "first model", "heldout_macro_f1": 0.33},
                                           {"name": bag_name, "heldout_macro_f1": 0.42}]}}
    facts = qpc.ours_facts(overruled)
    assert (facts["evidence_bag_delivered"], facts["bag_heldout_macro_f1"], facts["passed_over_heldout_macro_f1"]) == (
        True, 0.42, 0.3855)
    assert facts["evidence_text"] == "bag delivered (win rate 0.71; passed over: 0.3855 held-out)"
    kept = {**overruled, "evidence": {**overruled["evidence"], "delivered": "ensemble of 2 models", "win_rate": 0.97}}
    assert qpc.ours_facts(kept)["evidence_text"] == "validation choice kept (win rate 0.97)"
    agreed = {**overruled, "evidence": {"status": "completed", "bag": bag_name, "delivered": bag_name}}
    assert qpc.ours_facts(agreed)["evidence_text"] == "bag delivered (also the validation choice)"
    # searches skipped: report.json always has both sections, with status and reason
    skipped = {"final": {"source": "default_network", "description": "final fit of the default network"},
               "darts": {"status": "skipped", "reason": "19s is too short", "arch_steps": 0, "cell_used": False},
               "bohb": {"status": "skipped", "reason": "too short", "n_trials": 0, "model_based_picks": 0}}
    facts = qpc.ours_facts(skipped)
    assert (facts["source"], facts["darts_arch_steps"], facts["darts_cell_used"], facts["bohb_n_trials"]) == (
        "default_network", 0, False, 0)
    assert facts["bohb_rank_correlation"] is None and facts["ensemble_text"] is None
    assert qpc.ours_facts(None)["source"] is None


def test_make_fashion_npz_colour_tints_carry_no_label_and_keep_the_garment():
    import make_fashion_npz as maker

    rng = np.random.default_rng(0)
    grey = np.zeros((50, 4, 4), np.uint8)
    grey[:, 1:3, 1:3] = 255
    rgb = maker.colourize(grey, rng)
    assert rgb.shape == (50, 4, 4, 3) and rgb.dtype == np.uint8
    fg, bg = rgb[:, 1, 1].astype(float), rgb[:, 0, 0].astype(float)
    assert np.all(np.linalg.norm(fg - bg, axis=1) >= maker.MIN_TINT_DISTANCE - 1)
    assert len({tuple(c) for c in bg}) > 40      # a tint per image, not per class


def test_ablation_variants_are_valid_search_configs(tmp_path):
    from automl_pipeline.search_options import SearchOptions

    for variant, spec in ablation.VARIANTS.items():
        extra, scale = ablation.variant_arguments(variant, tmp_path)
        if "method" in spec:
            assert extra == ["--method", "baseline"] and scale == spec["scale"]
        elif variant == ablation.FULL:
            assert extra == [] and scale == 1.0
        else:
            options = SearchOptions.load(Path(extra[1]))
            assert options.changed() == spec["search"], variant


def test_ablation_pairs_by_seed_and_flags_differences_beyond_the_spread():
    rows = [{"data": "d", "variant": v, "seed": s, "macro_f1": f1}
            for v, scores in {"full": (0.80, 0.82, 0.84), "darts_off": (0.70, 0.71, 0.75),
                              "loss_ce": (0.81, 0.82, None)}.items() for s, f1 in enumerate(scores)]
    summary = {s["variant"]: s for s in ablation.summarize(rows)}
    assert summary["full"]["full_seed_std"] == pytest.approx(0.02)
    assert summary["darts_off"]["diff_vs_full"]["mean"] == pytest.approx(-0.1) and summary["darts_off"]["n_pairs"] == 3
    assert summary["darts_off"]["exceeds_spread"] is True
    assert summary["loss_ce"]["n_pairs"] == 2 and summary["loss_ce"]["exceeds_spread"] is False
    assert summary["full"]["exceeds_spread"] is None
    assert summary["darts_off"]["same_sign_every_seed"] is True            # -0.10, -0.11, -0.09
    assert summary["loss_ce"]["same_sign_every_seed"] is False             # +0.01, 0.00
    assert summary["full"]["same_sign_every_seed"] is None
    assert "**yes**" in ablation.summary_markdown(list(summary.values()))


def test_ablation_runs_every_variant_and_resumes_only_the_missing(tmp_path, monkeypatch):
    calls = []

    def fake_run_one(*, data, data_dir, variant, seed, time_limit_s, out_dir, device, slack_s, core):
        calls.append((variant, seed))
        f1 = 0.8 + 0.01 * seed - (0.1 if variant == "darts_off" else 0.0)
        return {"data": data, "variant": variant, "seed": seed, "time_limit_s": time_limit_s, "status": "complete",
                "macro_f1": f1, "error": None, "wall_s": 1.0}
    monkeypatch.setattr(ablation, "run_one", fake_run_one)
    argv = ["--data", "digits", "--time-limit", "20", "--seeds", "0", "1", "--variants", "full", "darts_off",
            "--out", str(tmp_path)]
    assert ablation.main(argv) == 0
    assert sorted(calls) == [("darts_off", 0), ("darts_off", 1), ("full", 0), ("full", 1)]
    saved = json.loads((tmp_path / "ablation_digits_20s.json").read_text())
    assert len(saved["rows"]) == 4 and (tmp_path / "ablation_digits_20s_digits.png").is_file()
    calls.clear()
    assert ablation.main(argv + ["--seeds", "0", "1", "2", "--resume"]) == 0
    assert sorted(calls) == [("darts_off", 2), ("full", 2)]


def test_ablation_facts_count_trial_scores_per_rung_and_cells_of_per_stage_searches(tmp_path, capsys):
    import ablation_facts

    def run(name, cell_choice, config, source, stack, trials=()):
        run_dir = tmp_path / name
        (run_dir / "bohb").mkdir(parents=True)
        report = {"bohb": {"status": "completed", "min_budget": 0.5, "max_budget": 1.5, "cell_choice": cell_choice,
                           "incumbent": {"config": config}},
                  "final": {"source": source, "architecture": {"cell_stack": stack}}}
        (run_dir / "report.json").write_text(json.dumps(report))
        lines = [json.dumps([[0, 0, i], budget, {}, {"loss": 1 - f1, "info": {"val_macro_f1": f1}}, None])
                 for i, (budget, f1) in enumerate(trials)]
        (run_dir / "bohb" / "results.json").write_text("\n".join(lines + ["[0, 0"]) + "\n")   # last line cut
        return {"variant": "full", "run_dir": str(run_dir)}

    stack = [{"position": 0, "stage": 0, "reduction": False, "cell": "skip_heavy", "skips": 4},
             {"position": 1, "stage": 1, "reduction": True, "cell": "darts", "skips": 1}]
    per_stage = {"cell_stage0": "skip_heavy", "cell_stage1": "darts", "cell_stage2": "darts"}
    rows = [run("a", "per_stage", per_stage, "bohb_incumbent", stack, trials=[(0.5, 0.1), (0.5, 0.2), (1.5, 0.6)]),
            run("b", "per_stage", {**per_stage, "cell_stage0": "default"}, "first_model", stack),   # skips not counted
            run("c", "shared", {"cell": "darts"}, "bohb_incumbent", stack, trials=[(0.5, 0.3)])]    # not per stage
    results = tmp_path / "ablation_x.json"
    results.write_text(json.dumps({"rows": rows}))
    assert ablation_facts.main([str(results)]) == 0
    scores = ablation_facts.trial_scores([tmp_path / n for n in ("a", "b", "c")])
    assert sorted(scores["smallest"]) == [0.1, 0.2, 0.3] and scores["larger"] == [0.6]
    reports = [json.loads((tmp_path / n / "report.json").read_text()) for n in ("a", "b")]
    counts = ablation_facts.stage_choices(reports)
    assert counts[0] == {"skip_heavy": 1, "default": 1} and counts[2] == {"darts": 2}
    assert ablation_facts.delivered_skips(reports) == {(0, "normal"): [4], (1, "reduction"): [1]}
    out = (tmp_path / "ablation_x_facts.md").read_text()
    assert "2 runs with a per-stage search" in out and "| smallest budget | 3 | 0.200 |" in out
    (tmp_path / "bad.json").write_text("[]")
    assert ablation_facts.main([str(tmp_path / "bad.json")]) == 2
    assert "not an ablation results file" in capsys.readouterr().err


def test_make_retina_like_has_retinamnist_shapes_and_counts_and_is_deterministic(tmp_path):
    import make_fashion_npz
    import make_retina_like

    source = make_fashion_npz.find_source_dir(None)
    if source is None:
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) is not installed")
    first = make_retina_like.build(source, seed=0)
    for split, counts in make_retina_like.COUNTS.items():
        images, labels = first[f"{split}_images"], first[f"{split}_labels"]
        assert images.shape == (sum(counts), 28, 28, 3) and images.dtype == np.uint8
        assert labels.shape == (sum(counts), 1)
        assert np.bincount(labels[:, 0], minlength=5).tolist() == list(counts)
    assert make_retina_like.COUNTS["train"] == (486, 128, 206, 194, 66)
    out = tmp_path / "retina.npz"
    assert make_retina_like.main(["--out", str(out)]) == 0     # a second build, from the CLI: the same arrays
    with np.load(out, allow_pickle=False) as saved:
        assert sorted(saved.files) == sorted(first) and all(np.array_equal(saved[k], first[k]) for k in first)


def test_plain_cnn_members_average_to_a_score_on_the_same_labels(tmp_path):
    import mission_run

    labels = np.array([0, 1, 2, 1])
    for i, probs in enumerate(([[.9, .1, 0], [.6, .4, 0], [0, .2, .8], [.1, .9, 0]],
                               [[.1, .9, 0], [0, 1., 0], [0, .4, .6], [.2, .8, 0]])):
        np.savez(tmp_path / f"m{i}.npz", probs=np.array(probs, np.float32), labels=labels)
    got = mission_run.average_members([tmp_path / "m0.npz", tmp_path / "m1.npz"])
    assert got["accuracy"] == 1.0 and got["macro_f1"] == 1.0 and got["n_members"] == 2   # member 0 alone: 0.75
    np.savez(tmp_path / "bad.npz", probs=np.ones((4, 3), np.float32), labels=labels[::-1])
    assert "differ" in mission_run.average_members([tmp_path / "m0.npz", tmp_path / "bad.npz"])["error"]
    report = {"phases": [{"name": "first_model", "start_s": 2.0, "end_s": 5.5}, {"name": "darts", "start_s": 5.5,
                                                                                   "end_s": None}],
              "bohb": {"trials_per_budget": {"3": 2, "1": 6}, "n_trials": 8}, "final": {"source": "first_model"}}
    facts = mission_run.pipeline_facts(report)
    assert facts["phase_seconds"] == {"first_model": 3.5, "darts": None}
    assert facts["bohb_trials_text"] == "1: 6, 3: 2" and facts["source"] == "first_model"


def test_mission_run_end_to_end_on_tiny_data_gives_a_row_per_contestant_and_seed(tmp_path):
    """Every contestant as real processes, two lanes pinned to cores 0 and 1 (one unpinned lane on a
    one-core machine), T = 25 s as run.py's end-to-end tests, two members of 12.5 s."""
    import os
    import shutil
    import time

    import mission_run
    from data_builders import make_npz

    lanes = 2 if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2 else 1
    data = make_npz(tmp_path / "data", n_per_class=12, n_classes=3, side=12, rgb=True) / "data.npz"
    start = time.monotonic()
    assert mission_run.main(["--time-limit", "25", "--seeds", "0", "--lanes", str(lanes), "--members", "2",
                             "--data", str(data), "--device", "cpu", "--slack", "30",
                             "--out", str(tmp_path / "out")]) == 0
    assert time.monotonic() - start < 120
    saved = json.loads((tmp_path / "out" / "mission_25s.json").read_text())
    rows = {(r["contestant"], r["seed"]): r for r in saved["rows"]}
    assert sorted(rows) == sorted((c, 0) for c in mission_run.CONTESTANTS)
    for row in rows.values():
        assert row["macro_f1"] is not None and np.isfinite(row["macro_f1"]), row
        assert row["core"] in ((0, 1) if lanes == 2 else (None,)) and row["wall_s"] > 0
    for name in ("ours", "baseline"):
        assert rows[(name, 0)]["phase_seconds"] and rows[(name, 0)]["source"]
    ensemble = rows[("plain_cnn_x5", 0)]
    assert ensemble["n_members"] == 2 and [m["init_seed"] for m in ensemble["members"]] == [0, 1000]
    assert ensemble["heldout_same_as_ours"] is not False
    assert "| ours |" in (tmp_path / "out" / "mission_25s.md").read_text()


def test_ablation_finds_every_data_set_it_offers(tmp_path):
    """digits needs no file; the RetinaMNIST-shaped set is taken from the cache when built (the ablation once
    passed its name to fashion_npz as keyword arguments and raised)."""
    import make_retina_like

    assert ablation.prepare_data("digits", tmp_path) == (True, None)
    built = tmp_path / make_retina_like.DEFAULT_OUT.name
    built.write_bytes(b"stand-in: only its presence is checked here")
    assert ablation.prepare_data("retina", tmp_path) == (True, built)


def test_ensemble_audit_groups_by_decision_and_counts_a_rerun_once(tmp_path, capsys):
    def report(folder, seed, delivered, ensemble, single):
        path = tmp_path / folder / "report.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"time_limit_s": 60, "settings": {"seed": seed},
                                    "data": {"source": "/d/lt.npz"},
                                    "ensemble": {"delivered": delivered, "heldout_macro_f1": {
                                        "ensemble of 2 models": ensemble, "final fit": single}}}))

    report("a", 0, False, 0.80, 0.75)
    report("b", 0, False, 0.80, 0.75)          # the same run again: counted once
    report("c", 1, False, 0.70, 0.72)
    report("d", 2, True, 0.90, 0.85)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "report.json").write_text(json.dumps({"ensemble": {"heldout_macro_f1": {"final fit": 0.5}}}))
    assert ensemble_audit.main([str(tmp_path), "--out", str(tmp_path / "audit.json")]) == 0
    summary = json.loads((tmp_path / "audit.json").read_text())["summary"]
    passed_over, = [row for row in summary if not row["delivered"]]
    assert passed_over["runs"] == 2 and passed_over["ensemble_ahead"] == 1
    assert passed_over["mean_gain"] == pytest.approx((0.05 - 0.02) / 2)
    delivered, = [row for row in summary if row["delivered"]]
    assert delivered["runs"] == 1 and delivered["data"] == "lt"
    assert "| lt | 60 |" in capsys.readouterr().out


def test_epoch_choice_rules_pick_from_the_validation_scores_alone():
    val = [0.5, 0.9, 0.4, 0.9, 0.7, 0.6]
    assert epoch_choice.choose_epoch("first_best", val) == 1
    assert epoch_choice.choose_epoch("last_best", val) == 3
    assert epoch_choice.choose_epoch("second_half", val) == 3        # epochs 4-6 only
    assert epoch_choice.choose_epoch("second_half", [0.9, 0.8, 0.1, 0.2]) == 3
    assert epoch_choice.choose_epoch("last", val) == 5
    with pytest.raises(ValueError):
        epoch_choice.choose_epoch("median", val)


def test_head_choice_pairs_the_heads_by_seed_per_epoch_count():
    rows = [{"data": "lt", "epochs": 8, "seed": 0, "head": "pool", "macro_f1": 0.70},
            {"data": "lt", "epochs": 8, "seed": 0, "head": "flatten", "macro_f1": 0.76},
            {"data": "lt", "epochs": 8, "seed": 1, "head": "pool", "macro_f1": 0.72},
            {"data": "lt", "epochs": 8, "seed": 1, "head": "flatten", "macro_f1": 0.71},
            {"data": "lt", "epochs": 8, "seed": 2, "head": "pool", "macro_f1": 0.90},      # no flatten run: unpaired
            {"data": "lt", "epochs": 40, "seed": 0, "head": "pool", "macro_f1": 0.80},
            {"data": "lt", "epochs": 40, "seed": 0, "head": "flatten", "macro_f1": 0.78}]
    short, long = head_choice.summarize(rows)
    assert (short["epochs"], short["seeds"], short["flatten_led"]) == (8, 2, 1)
    assert short["flatten_minus_pool"] == pytest.approx((0.06 - 0.01) / 2)
    assert short["pool"] == pytest.approx((0.70 + 0.72 + 0.90) / 3)
    assert (long["epochs"], long["flatten_led"]) == (40, 0) and long["flatten_minus_pool"] == pytest.approx(-0.02)


def test_head_choice_trains_both_heads_on_digits(tmp_path, capsys):
    assert head_choice.main(["--data", "digits", "--seeds", "0", "--epochs", "1", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "head_choice.json").read_text())
    assert [r["head"] for r in saved["rows"]] == ["pool", "flatten"]
    assert all(0.0 <= r["macro_f1"] <= 1.0 and r["seconds"] > 0 for r in saved["rows"])
    assert "| digits | 1 | 1 |" in capsys.readouterr().out
