"""report.md and plots from a report.json dict (automl_pipeline.reporting)."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from automl_pipeline.reporting import markdown, write_report_md, write_run_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["healthy", "mild", "moderate", "severe", "proliferative"]


def fake_report(n_edges: int = 14) -> dict:
    """A report.json as the pipeline writes it: RetinaMNIST-like, 5 classes, all sections.

    n_edges: DARTS edges per cell (14 for 4 nodes); tests that do not look at the DARTS plot
    use fewer, because drawing 28 small panels takes seconds on a shared 2-core machine.
    """
    rng = np.random.default_rng(0)
    n_ops, epochs = 5, 6
    alphas = []
    for e in range(epochs):
        cell = {}
        for kind in ("normal", "reduce"):
            logits = rng.normal(size=(n_edges, n_ops)) + 0.2 * e * np.arange(n_ops)
            a = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            cell[kind] = a.round(4).tolist()
        alphas.append(cell)
    genotype = {
        "normal": [["conv_3x3", 0], ["res_basic", 1], ["skip_connect", 0], ["conv_3x3", 2],
                   ["res_bottleneck", 1], ["conv_3x3", 3], ["res_basic", 2], ["skip_connect", 4]],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [["conv_3x3", 0], ["conv_3x3", 1], ["res_basic", 0], ["conv_3x3", 2],
                   ["res_basic", 1], ["conv_3x3", 2], ["res_bottleneck", 3], ["conv_3x3", 4]],
        "reduce_concat": [2, 3, 4, 5],
    }
    # stage 2's cell: more skips with depth (the poster's finding)
    skip_heavy = dict(genotype, normal=[["skip_connect", i] if k in (1, 3) else [op, i]
                                        for k, (op, i) in enumerate(genotype["normal"])])
    stack = [{"position": i, "stage": stage, "reduction": red, "cell": cell, "skips": skips}
             for i, (stage, red, cell, skips) in enumerate([(0, False, "darts", 2), (1, True, "sampled_1", 0),
                                                            (1, False, "sampled_1", 2), (2, True, "skip_heavy", 0),
                                                            (2, False, "skip_heavy", 4)])]
    confusion = [[150, 8, 12, 3, 1], [20, 15, 6, 4, 1], [18, 5, 52, 10, 7],
                 [6, 2, 14, 40, 6], [2, 1, 5, 7, 5]]
    trials = [{"budget": b, "loss": float(l), "t_s": 60.0 + 3 * i, "model_based_pick": False}
              for i, (b, l) in enumerate(zip([5, 5, 5, 5, 10, 10, 20] * 4, rng.uniform(0.55, 0.9, 28)))]
    return {
        "settings": {"time_limit_s": 300.0, "seed": 0, "device": "auto", "method": "ours"},
        "time_limit_s": 300.0,
        "wall_s": 287.4,
        "status": "complete",
        "phases": [
            {"name": "setup", "planned_s": 10.0, "start_s": 0.0, "end_s": 4.2},
            {"name": "anytime", "planned_s": 30.0, "start_s": 4.2, "end_s": 31.0},
            {"name": "darts", "planned_s": 70.0, "start_s": 31.0, "end_s": 88.5},
            {"name": "bohb", "planned_s": 110.0, "start_s": 88.5, "end_s": 200.1},
            {"name": "final", "planned_s": 65.0, "start_s": 200.1, "end_s": 279.0},
            {"name": "ensemble", "planned_s": 0.0, "skipped": "no time left"},
        ],
        "data": {
            "format": "npz", "source": "/data/retinamnist.npz", "n_classes": 5, "class_names": CLASSES,
            "image_size": [28, 28, 3], "native_side": 28, "notes": ["labels reshaped from (N,1) | to (N,)"],
            "splits": {
                "train": {"count": 1080, "per_class": [486, 128, 206, 194, 66]},
                "val": {"count": 120, "per_class": [54, 14, 23, 22, 7]},
                "test": {"count": 400, "per_class": [174, 46, 92, 68, 20]},
                "heldout_source": "data test split",
            },
        },
        "test_metrics": {
            "macro_f1": 0.4217, "accuracy": 0.6550, "balanced_accuracy": 0.4389,
            "per_class_f1": [0.8152, 0.3409, 0.5810, 0.5926, 0.2778],
            "confusion_matrix": confusion,
        },
        "final": {
            "source": "bohb_incumbent", "description": "final fit of the BOHB incumbent",
            "architecture": {"genotype": genotype, "in_channels": 3, "n_classes": 5, "image_side": 28,
                             "n_cells": 5, "base_channels": 32, "dropout": 0.3, "head_hidden": [64, 32, 16],
                             "stem_pool": False, "stage_genotypes": [genotype, genotype, skip_heavy],
                             "stage_cells": ["darts", "sampled_1", "skip_heavy"], "cell_stack": stack},
            "config": {"batch_size": 64, "lr": 0.0031, "weight_decay": 1.2e-4, "loss": "focal",
                       "focal_gamma": 3.0, "class_weight_smoothing": 0.8, "schedule": "onecycle"},
            "epochs": 41, "train_s": 78.9, "val_macro_f1": 0.47,
        },
        "environment": {"python": "3.11.2", "torch": "2.14.1", "device": "cpu"},
        "darts": {
            "status": "completed", "learned": True, "reason": "", "cell_used": True, "arch_steps": 540,
            "epochs_planned": 15, "epochs_run": epochs, "stopped_early": True,
            "stop_reason": "skip count 3 > limit 2", "skip_count_per_epoch": [0, 0, 1, 1, 2, 3],
            "beta_per_epoch": [1.0, 0.93, 0.87, 0.8, 0.73, 0.67], "skip_limit": 2, "skip_threshold": 0.3,
            "alphas_per_epoch": alphas, "genotype": genotype, "seconds": 57.5,
            "ops": ["none", "skip_connect", "conv_3x3", "res_basic", "res_bottleneck"],
        },
        "bohb": {
            "status": "completed", "failed_trials": 1,
            "n_trials": len(trials), "budgets": [5, 10, 20], "trials": trials,
            "trajectory": [{"t_s": 62.0, "val_macro_f1": 0.31}, {"t_s": 75.0, "val_macro_f1": 0.38},
                           {"t_s": 120.0, "val_macro_f1": 0.45}, {"t_s": 190.0, "val_macro_f1": 0.47}],
            "incumbent_config": {"n_cells": 5, "lr": 0.0031, "batch_size": 64, "cell_stage0": "darts",
                                 "cell_stage1": "sampled_1", "cell_stage2": "skip_heavy"},
            "incumbent_val_macro_f1": 0.47, "incumbent_budget": 20, "model_based_picks": 0,
        },
        "events": [
            {"t_s": 4.1, "kind": "data", "message": "loaded 1600 images"},
            {"t_s": 150.3, "kind": "trial_failed", "message": "trial 7: CUDA out of memory | retried"},
        ],
    }


def assert_valid_png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert len(data) > 5_000, f"{path.name} is suspiciously small ({len(data)} bytes)"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    logs: list[str] = []
    path = write_run_report(fake_report(), out, log=logs.append)
    return out, path, logs


def test_importing_reporting_does_not_import_matplotlib_or_torch():
    code = ("import sys, automl_pipeline.reporting, automl_pipeline.compare; "
            "bad = [m for m in ('matplotlib', 'torch') if m in sys.modules]; "
            "sys.exit(len(bad))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0


def test_every_plot_is_a_valid_png(full_run):
    out, _, logs = full_run
    from automl_pipeline.reporting.plots import PLOTTERS

    assert logs == []
    for name in PLOTTERS:
        assert_valid_png(out / "plots" / f"{name}.png")


def test_report_md_has_headline_numbers_first(full_run):
    out, path, _ = full_run
    assert path == out / "report.md"
    text = path.read_text(encoding="utf-8")
    head = text.split("## ", 1)[0]
    assert "macro-F1: 0.422" in head
    assert "accuracy 0.655" in head
    assert "balanced accuracy 0.439" in head
    assert "287.4 s" in head and "300 s" in head
    assert "complete" in head


def test_report_md_describes_model_darts_bohb_and_data(full_run):
    text = full_run[1].read_text(encoding="utf-8")
    assert "5 cells" in text and "64-32-16" in text
    assert "`res_bottleneck`(state 1)" in text
    assert "**stage 2 (`skip_heavy`) normal cell**: node 2 = `conv_3x3`(state 0) + `skip_connect`(state 1)" in text
    assert "| 3 | 2 | reduction | skip_heavy | 0 |" in text and "| 4 | 2 | normal | skip_heavy | 4 |" in text
    assert "focal_gamma" in text
    assert "**final fit of the BOHB incumbent** (source `bohb_incumbent`)" in text
    assert "6** of 15 planned" in text and "skip count 3 > limit 2" in text
    assert "540 architecture steps" in text and "uses a cell from this search" in text
    assert "28 trials; 1 failed (counted as loss 1)" in text
    assert "Hyperband" in text  # model-based picks == 0 warning
    assert "| proliferative | 0.278 | 20 |" in text
    assert "data test split" in text
    assert "trial 7: CUDA out of memory \\| retried" in text  # pipes escaped in tables


def test_report_md_links_only_existing_files(full_run):
    out, path, _ = full_run
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text(encoding="utf-8"))
    assert len(links) == 7
    for link in links:
        assert (out / link).is_file(), link


def test_missing_plot_file_is_not_linked(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "timeline.png").write_bytes(PNG_SIGNATURE)
    path = write_report_md(fake_report(), tmp_path, {"timeline": "plots/timeline.png",
                                                     "confusion": "plots/confusion.png"})
    text = path.read_text(encoding="utf-8")
    assert "plots/timeline.png" in text
    assert "confusion.png" not in text


@pytest.mark.parametrize("missing", ["darts", "bohb", "test_metrics", "data", "phases", "final", "events",
                                     "environment", "settings"])
def test_report_md_without_a_section(tmp_path, missing):
    report = fake_report(n_edges=2)
    del report[missing]
    path = write_report_md(report, tmp_path, {})
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# AutoML run report")
    heading = {"darts": "## DARTS", "bohb": "## BOHB", "data": "## Data", "phases": "## Phases",
               "final": "## Chosen model", "events": "## Events"}.get(missing)
    if heading:
        assert heading not in text
    if missing == "test_metrics":
        assert "No held-out test metrics" in text


def test_report_md_says_why_a_search_was_skipped_or_not_used(tmp_path):
    """report.json always has `darts` and `bohb`; a skipped search is its status and reason, not a
    table of n/a; a DARTS search that ran but learned nothing says its cell was not used."""
    report = fake_report(n_edges=2)
    report["darts"] = {"status": "skipped", "reason": "19s is too short for a search (at least 20s)",
                       "arch_steps": 0, "cell_used": False}
    report["bohb"] = {"status": "skipped", "reason": "76s cannot hold a first bracket of 12 trials",
                      "n_trials": 0, "model_based_picks": 0}
    text = write_report_md(report, tmp_path, {}).read_text(encoding="utf-8")
    darts = text.split("## DARTS search", 1)[1].split("## ", 1)[0]
    bohb = text.split("## BOHB search", 1)[1].split("## ", 1)[0]
    assert "**Skipped**: 19s is too short for a search (at least 20s)." in darts and "n/a" not in darts
    assert "**Skipped**: 76s cannot hold a first bracket of 12 trials." in bohb
    assert "trials" not in bohb.replace("12 trials", "") and "Hyperband" not in bohb

    report = fake_report(n_edges=2)
    report["darts"].update(learned=False, cell_used=False, reason="the supernet did not learn")
    text = write_report_md(report, tmp_path, {}).read_text(encoding="utf-8")
    assert "Its cell was not used: the supernet did not learn." in text


def test_skipped_searches_make_no_search_plots(tmp_path, monkeypatch):
    import automl_pipeline.reporting.plots as plots

    monkeypatch.setattr(plots, "DPI", 20)
    report = fake_report(n_edges=2)
    report["darts"] = {"status": "skipped", "reason": "too short", "arch_steps": 0, "cell_used": False}
    report["bohb"] = {"status": "skipped", "reason": "too short", "n_trials": 0, "model_based_picks": 0}
    errors: list[str] = []
    made = plots.write_plots(report, tmp_path, log=lambda m: None, errors=errors)
    assert errors == [] and "darts_alphas" not in made and "bohb" not in made and "timeline" in made


def test_sparse_report_makes_only_the_plots_it_has_data_for(tmp_path):
    report = {key: fake_report(n_edges=2)[key] for key in ("time_limit_s", "wall_s", "status", "phases", "test_metrics")}
    logs: list[str] = []
    path = write_run_report(report, tmp_path, log=logs.append)
    assert logs == []
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["confusion.png", "per_class_f1.png",
                                                                      "timeline.png"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text(encoding="utf-8"))
    assert sorted(links) == ["plots/confusion.png", "plots/per_class_f1.png", "plots/timeline.png"]


def test_report_md_of_an_architecture_with_one_shared_cell(tmp_path):
    report = fake_report(n_edges=2)
    arch = report["final"]["architecture"]
    for key in ("stage_genotypes", "stage_cells", "cell_stack"):
        del arch[key]                                              # a report of an earlier version
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8")
    assert "- **normal cell**: node 2 = `conv_3x3`(state 0)" in text and "Cell stack" not in text
    arch["cell_stack"] = [{"position": 0, "stage": 0, "reduction": False, "cell": None, "skips": 2}]
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8")
    assert "| 0 | 0 | normal | (one cell for all) | 2 |" in text


def test_minimal_report_gives_report_md_without_plots(tmp_path):
    path = write_run_report({"status": "stopped_by_watchdog", "wall_s": 59.0, "time_limit_s": 60}, tmp_path,
                            log=lambda m: None)
    text = path.read_text(encoding="utf-8")
    assert "No held-out test metrics" in text and "stopped_by_watchdog" in text
    assert "![" not in text


def test_failing_plot_is_logged_and_report_still_written(tmp_path, monkeypatch):
    import automl_pipeline.reporting.plots as plots

    def boom(report, path):
        raise RuntimeError("plot exploded")

    monkeypatch.setattr(plots, "DPI", 20)
    monkeypatch.setitem(plots.PLOTTERS, "confusion", boom)
    logs: list[str] = []
    path = write_run_report(fake_report(n_edges=2), tmp_path, log=logs.append)
    assert path is not None
    assert any("confusion" in m and "plot exploded" in m for m in logs)
    text = path.read_text(encoding="utf-8")
    assert "confusion.png" not in text
    assert "plots/timeline.png" in text  # the other plots were still made


def test_write_plots_collects_errors(tmp_path, monkeypatch):
    import automl_pipeline.reporting.plots as plots

    monkeypatch.setattr(plots, "DPI", 20)
    report = fake_report(n_edges=2)
    report["test_metrics"]["confusion_matrix"] = [[1, 2, 3], [4, 5, 6]]  # not square
    errors: list[str] = []
    made = plots.write_plots(report, tmp_path, log=lambda m: None, errors=errors)
    assert "confusion" not in made and len(errors) == 1 and "square" in errors[0]
    assert "per_class_f1" in made


def test_write_run_report_survives_broken_plot_module(tmp_path, monkeypatch):
    import automl_pipeline.reporting.plots as plots

    def broken(*args, **kwargs):
        raise ImportError("no matplotlib")

    monkeypatch.setattr(plots, "write_plots", broken)
    logs: list[str] = []
    path = write_run_report(fake_report(), tmp_path, log=logs.append)
    assert path.is_file() and "![" not in path.read_text(encoding="utf-8")
    assert any("no matplotlib" in m for m in logs)


def test_write_run_report_never_raises_and_returns_none_when_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    logs: list[str] = []
    assert write_run_report(fake_report(n_edges=2), blocker / "out", log=logs.append) is None
    assert any("report.md failed" in m for m in logs)
    logs.clear()
    assert write_run_report(None, tmp_path / "none", log=logs.append) is None  # not a dict: logged, no raise
    assert any("report.md failed" in m for m in logs)


def test_trajectory_points_are_a_running_best():
    from automl_pipeline.reporting.plots import trajectory_points

    pts = trajectory_points([{"t_s": 5, "loss": 0.6}, [2, 0.3], {"t_s": 9, "val_macro_f1": 0.35},
                             {"t_s": "x"}, {"t_s": 12, "score": float("nan")}])
    assert pts == [(2.0, 0.3), (5.0, pytest.approx(0.4)), (9.0, pytest.approx(0.4))]


def test_markdown_output_is_deterministic(tmp_path):
    report = fake_report()
    a = markdown.render_report_md(copy.deepcopy(report), tmp_path, {})
    b = markdown.render_report_md(json.loads(json.dumps(report)), tmp_path, {})
    assert a == b


def test_a_train_only_class_reads_absent_in_report_md_and_gets_no_bar(tmp_path, monkeypatch):
    import automl_pipeline.reporting.plots as plots

    monkeypatch.setattr(plots, "DPI", 20)
    report = {key: fake_report(n_edges=2)[key] for key in ("time_limit_s", "wall_s", "status", "data",
                                                           "test_metrics")}
    report["data"]["train_only_classes"] = ["proliferative"]
    report["data"]["splits"]["test"]["per_class"][4] = 0
    report["test_metrics"]["per_class_f1"][4] = None
    logs: list[str] = []
    path = write_run_report(report, tmp_path, log=logs.append)
    assert logs == []
    text = path.read_text(encoding="utf-8")
    assert "| proliferative | absent | 0 |" in text
    assert "Kept in training only (1 image, nothing carved from them): proliferative." in text
    assert (tmp_path / "plots" / "per_class_f1.png").read_bytes().startswith(PNG_SIGNATURE)
