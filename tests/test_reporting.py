"""report.md and plots from a report.json dict (automl_pipeline.reporting)."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from automl_pipeline.reporting import markdown, write_report_md, write_run_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# report.json of a real run, as the pipeline wrote it (both searches completed), made by
#   python tests/fixtures/make_report_fixture.py   (the committed one: on the digits demo, --time-limit 2400 at
#   a085764; a run made at f15e4c8 delivered an ensemble, which the network-description tests cannot read)
# test_the_fixture_has_every_key_the_pipeline_writes says when it must be made again.
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "report_digits.json"
NEWER_THAN_FIXTURE = {"candidates", "bagging"}
# keys newer than the fixture inside its sections, tested on their own
# (test_report_md_says_when_bohb_raised_its_smallest_budget, test_bohb.test_brackets_stop_starting_on_a_rung_...;
# the network's head: test_search_space.test_head_json_roundtrip_old_json_and_bad_head reads a spec without it)
NEWER_KEYS_THAN_FIXTURE = {"bohb.raised_min_budget", "bohb.raised_min_budget_reason", "final.architecture.head"}


def pipeline_report() -> dict:
    """A fresh copy of the fixture report (tests change their copy)."""
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def skipped(reason: str) -> dict:
    """A `darts` / `bohb` section of a search that did not run, as the phases write it."""
    from automl_pipeline.phases.context import search_section

    return search_section("skipped", reason)


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
    path = write_run_report(pipeline_report(), out, log=logs.append)
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
    report = pipeline_report()
    metrics = report["test_metrics"]
    assert path == out / "report.md"
    text = path.read_text(encoding="utf-8")
    head = text.split("## ", 1)[0]
    assert f"macro-F1: {metrics['macro_f1']:.3f}" in head
    assert f"accuracy {metrics['accuracy']:.3f}" in head
    assert f"balanced accuracy {metrics['balanced_accuracy']:.3f}" in head
    assert f"{report['wall_s']:.1f} s" in head and f"{report['time_limit_s']:.0f} s limit" in head
    assert f"status: **{report['status']}**" in head
    assert f"Held-out test images: {report['data']['splits']['test']['count']} ({report['data']['heldout_source']})" in head


def test_report_md_describes_model_darts_bohb_and_data(full_run):
    report, text = pipeline_report(), full_run[1].read_text(encoding="utf-8")
    final, darts, bohb, data = report["final"], report["darts"], report["bohb"], report["data"]
    assert f"**{final['description']}** (source `{final['source']}`)" in text
    assert f"trained {final['epochs']} epochs" in text and f"{final['architecture']['n_cells']} cells" in text
    for key in final["config"]:
        assert f"| {key} |" in text
    for c in final["architecture"]["cell_stack"]:
        kind = "reduction" if c["reduction"] else "normal"
        assert f"| {c['position']} | {c['stage']} | {kind} | {c['cell'] or '(one cell for all)'} | {c['skips']} |" in text
    assert f"{darts['epochs_run']}** of {darts['epochs_planned']} planned" in text
    assert f"(reason: {darts['stop_reason']})" in text and f"{darts['arch_steps']} architecture steps" in text
    assert "Skip count per epoch" in text and ", ".join(str(k) for k in darts["skip_count_per_epoch"]) in text
    assert f"{bohb['n_trials']} trials" in text
    assert "budgets (epochs): " + ", ".join(f"{b:g}" for b in bohb["budgets"]) in text
    inc = bohb["incumbent"]
    assert f"Incumbent: validation macro-F1 **{inc['val_macro_f1']:.3f}** at budget {inc['budget']}." in text
    for key in inc["config"]:
        assert f"| {key} |" in text
    assert (f"Model-based picks: {bohb['model_based_picks']} of {bohb['configs_sampled']} configurations." in text
            if not bohb["warning"] else bohb["warning"] in text)
    f1, support = report["test_metrics"]["per_class_f1"], data["splits"]["test"]["per_class"]
    assert f"| {data['class_names'][-1]} | {f1[-1]:.3f} | {support[-1]} |" in text
    for event in report["events"][:markdown.MAX_EVENTS]:
        assert markdown._cell(event["message"]) in text


def test_report_md_describes_a_network_with_a_cell_per_stage(tmp_path):
    """The stage cells BOHB picks, in words and per position (a NetworkSpec of the pipeline's own)."""
    from automl_pipeline.bohb import config_to_network_spec
    from automl_pipeline.darts import random_cell_result
    from automl_pipeline.search_space import TEMPLATE_OPS

    spec = config_to_network_spec({"n_cells": 5, "base_channels": 16, "cell_stage0": "default",
                                   "cell_stage1": "sampled_1", "cell_stage2": "skip_heavy"},
                                  darts=random_cell_result(TEMPLATE_OPS, seed=0), in_channels=1, n_classes=10,
                                  image_side=8, ops=TEMPLATE_OPS)
    report = pipeline_report()
    report["final"]["architecture"] = spec.to_json()
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8")
    skip_heavy = spec.stage_genotypes[2].normal
    words = " + ".join(f"`{op}`(state {i})" for op, i in skip_heavy[:2])
    assert f"- **stage 2 (`skip_heavy`) normal cell**: node 2 = {words}" in text
    for c in spec.cell_stack():
        kind = "reduction" if c["reduction"] else "normal"
        assert f"| {c['position']} | {c['stage']} | {kind} | {c['cell']} | {c['skips']} |" in text


def test_report_md_links_only_existing_files(full_run):
    out, path, _ = full_run
    from automl_pipeline.reporting.plots import PLOTTERS

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text(encoding="utf-8"))
    assert len(links) == len(PLOTTERS)
    for link in links:
        assert (out / link).is_file(), link


def test_missing_plot_file_is_not_linked(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "timeline.png").write_bytes(PNG_SIGNATURE)
    path = write_report_md(pipeline_report(), tmp_path, {"timeline": "plots/timeline.png",
                                                     "confusion": "plots/confusion.png"})
    text = path.read_text(encoding="utf-8")
    assert "plots/timeline.png" in text
    assert "confusion.png" not in text


@pytest.mark.parametrize("missing", ["darts", "bohb", "test_metrics", "data", "phases", "final", "events",
                                     "environment", "settings"])
def test_report_md_without_a_section(tmp_path, missing):
    report = pipeline_report()
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
    report = pipeline_report()
    report["darts"] = skipped("19s is too short for a search (at least 20s)")
    report["bohb"] = skipped("76s cannot hold a first bracket of 12 trials")
    text = write_report_md(report, tmp_path, {}).read_text(encoding="utf-8")
    darts = text.split("## DARTS search", 1)[1].split("## ", 1)[0]
    bohb = text.split("## BOHB search", 1)[1].split("## ", 1)[0]
    assert "**Skipped**: 19s is too short for a search (at least 20s)." in darts and "n/a" not in darts
    assert "**Skipped**: 76s cannot hold a first bracket of 12 trials." in bohb
    assert "trials" not in bohb.replace("12 trials", "") and "Hyperband" not in bohb

    report = pipeline_report()
    report["darts"].update(learned=False, cell_used=False, reason="the supernet did not learn")
    text = write_report_md(report, tmp_path, {}).read_text(encoding="utf-8")
    assert "Its cell was not used: the supernet did not learn." in text


def test_skipped_searches_make_no_search_plots(tmp_path, monkeypatch):
    import automl_pipeline.reporting.plots as plots

    monkeypatch.setattr(plots, "DPI", 20)
    report = pipeline_report()
    report["darts"], report["bohb"] = skipped("too short"), skipped("too short")
    errors: list[str] = []
    made = plots.write_plots(report, tmp_path, log=lambda m: None, errors=errors)
    assert errors == [] and "darts_alphas" not in made and "bohb" not in made and "timeline" in made


def test_sparse_report_makes_only_the_plots_it_has_data_for(tmp_path):
    report = {key: pipeline_report()[key] for key in ("time_limit_s", "wall_s", "status", "phases", "test_metrics")}
    logs: list[str] = []
    path = write_run_report(report, tmp_path, log=logs.append)
    assert logs == []
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["confusion.png", "per_class_f1.png",
                                                                      "timeline.png"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text(encoding="utf-8"))
    assert sorted(links) == ["plots/confusion.png", "plots/per_class_f1.png", "plots/timeline.png"]


def test_report_md_of_an_architecture_with_one_shared_cell(tmp_path):
    """A network without stage cells (the first model, a configuration without cell keys): one cell
    described, and the stack says so at every position."""
    from automl_pipeline.bohb import config_to_network_spec

    spec = config_to_network_spec({"n_cells": 3, "base_channels": 16}, darts=None, in_channels=1, n_classes=10,
                                  image_side=8)
    report = pipeline_report()
    report["final"]["architecture"] = spec.to_json()
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8").split("## Chosen model", 1)[1]
    op, state = spec.genotype.normal[0]
    assert f"- **normal cell**: node 2 = `{op}`(state {state})" in text and "**stage 0" not in text
    for c in spec.cell_stack():
        kind = "reduction" if c["reduction"] else "normal"
        assert f"| {c['position']} | {c['stage']} | {kind} | (one cell for all) | {c['skips']} |" in text


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
    path = write_run_report(pipeline_report(), tmp_path, log=logs.append)
    assert path is not None
    assert any("confusion" in m and "plot exploded" in m for m in logs)
    text = path.read_text(encoding="utf-8")
    assert "confusion.png" not in text
    assert "plots/timeline.png" in text  # the other plots were still made


def test_write_plots_collects_errors(tmp_path, monkeypatch):
    import automl_pipeline.reporting.plots as plots

    monkeypatch.setattr(plots, "DPI", 20)
    report = pipeline_report()
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
    path = write_run_report(pipeline_report(), tmp_path, log=logs.append)
    assert path.is_file() and "![" not in path.read_text(encoding="utf-8")
    assert any("no matplotlib" in m for m in logs)


def test_write_run_report_never_raises_and_returns_none_when_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    logs: list[str] = []
    assert write_run_report(pipeline_report(), blocker / "out", log=logs.append) is None
    assert any("report.md failed" in m for m in logs)
    logs.clear()
    assert write_run_report(None, tmp_path / "none", log=logs.append) is None  # not a dict: logged, no raise
    assert any("report.md failed" in m for m in logs)


def test_trajectory_points_are_a_running_best():
    """bohb.trajectory is [t_s, val macro-F1] pairs; anything else is skipped."""
    from automl_pipeline.reporting.plots import trajectory_points

    pts = trajectory_points([[5, 0.4], [2, 0.3], [9, 0.35], ["x", 0.9], [12, float("nan")], [13, 0.5, 1],
                             {"t_s": 14, "val_macro_f1": 0.9}])
    assert pts == [(2.0, 0.3), (5.0, 0.4), (9.0, 0.4)]
    assert trajectory_points(pipeline_report()["bohb"]["trajectory"])   # the pipeline's own is readable


def test_markdown_output_is_deterministic(tmp_path):
    report = pipeline_report()
    a = markdown.render_report_md(copy.deepcopy(report), tmp_path, {})
    b = markdown.render_report_md(json.loads(json.dumps(report)), tmp_path, {})
    assert a == b


def test_a_train_only_class_reads_absent_in_report_md_and_gets_no_bar(tmp_path, monkeypatch):
    import automl_pipeline.reporting.plots as plots

    monkeypatch.setattr(plots, "DPI", 20)
    report = {key: pipeline_report()[key] for key in ("time_limit_s", "wall_s", "status", "data", "test_metrics")}
    name = report["data"]["class_names"][4]
    report["data"]["train_only_classes"] = [name]
    report["data"]["splits"]["test"]["per_class"][4] = 0
    report["test_metrics"]["per_class_f1"][4] = None
    logs: list[str] = []
    path = write_run_report(report, tmp_path, log=logs.append)
    assert logs == []
    text = path.read_text(encoding="utf-8")
    assert f"| {name} | absent | 0 |" in text
    assert f"Kept in training only (1 image, nothing carved from them): {name}." in text
    assert (tmp_path / "plots" / "per_class_f1.png").read_bytes().startswith(PNG_SIGNATURE)


def test_the_bohb_plot_says_which_clock_its_times_are_on(tmp_path, monkeypatch):
    """bohb.trajectory counts seconds from the start of the BOHB search (bohb/trial_log.py), not from
    process start like `phases` and `events`: the plot's time axis says so (it said "since process start")."""
    import matplotlib.pyplot as plt

    import automl_pipeline.reporting.plots as plots

    report = pipeline_report()
    phase = next(p for p in report["phases"] if p["name"] == "bohb")
    assert report["bohb"]["trajectory"][0][0] < phase["start_s"]      # not on the process clock
    labels: list[str] = []

    def save(fig, path, **kwargs):
        labels.extend(ax.get_xlabel() for ax in fig.axes)
        plt.close(fig)
        return path
    monkeypatch.setattr(plots, "_save", save)
    assert plots.plot_bohb(report, tmp_path / "bohb.png") is not None
    assert labels == ["seconds since the BOHB search started"]


def _bohb_section(optimizer: str) -> dict:
    """The fixture's `bohb` section as a search with 0 model-based picks of `optimizer` writes it."""
    from automl_pipeline.bohb import BohbResult

    result = BohbResult(incumbent_config=None, incumbent_val_macro_f1=0.0, incumbent_budget=0.0, min_budget=1.0,
                        max_budget=3.0, eta=3.0, trials=[], configs_sampled=16, model_based_picks=0,
                        model_min_trials=14, trajectory=[], seconds=1.0, n_workers=1, clean_shutdown=True,
                        optimizer=optimizer)
    section = pipeline_report()["bohb"]
    section.update(optimizer=optimizer, configs_sampled=16, model_based_picks=0, warning=result.warning(),
                   model_based_picks_per_budget={key: 0 for key in section["model_based_picks_per_budget"]})
    return section


def test_random_search_is_not_warned_about_missing_model_based_picks(tmp_path):
    """Search option `optimizer: random` samples every configuration at random: report.md says so and
    gives no "not model-based" warning; BOHB with 0 model-based picks still gets it."""
    report = pipeline_report()
    report["bohb"] = _bohb_section("random")
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8")
    bohb = text.split("## BOHB search", 1)[1].split("## ", 1)[0]
    assert "Warning" not in bohb and "Hyperband" not in bohb
    assert "Random search (search option `optimizer: random`)" in bohb

    report["bohb"] = _bohb_section("bohb")
    bohb = write_report_md(report, tmp_path).read_text(encoding="utf-8").split("## BOHB search", 1)[1]
    assert "> **Warning:** BOHB was effectively random search: 0 of 16 configurations" in bohb
    assert "Hyperband" in bohb and "Random search (search option" not in bohb


def _keys_the_pipeline_writes(tmp_path, monkeypatch) -> tuple[dict, dict]:
    """The report.json the current code writes, made cheaply: RunReport.finish over the sections the
    loading and the two search phases write (the searches replaced by results built without training);
    and a NetworkSpec's JSON (final.architecture of a trained network)."""
    import torch

    from automl_pipeline import pipeline
    from automl_pipeline.bohb import BohbResult, TrialRecord
    from automl_pipeline.checkpoints import Checkpoints
    from automl_pipeline.darts import random_cell_result
    from automl_pipeline.data import load_dataset, make_splits
    from automl_pipeline.delivery import Delivery, majority_fallback
    from automl_pipeline.phases import architecture, common, hyperparameters
    from automl_pipeline.phases.context import RunContext
    from automl_pipeline.runlog import RunLog
    from automl_pipeline.search_space import TEMPLATE_OPS
    from automl_pipeline.settings import Settings
    from budget import Budget, FakeClock
    from budget.plan import RunFacts, plan_run

    dataset = load_dataset(None, max_side=8)
    splits = make_splits(dataset, seed=0)
    data = pipeline._to_run_data(dataset, splits, torch.device("cpu"))
    settings = Settings(time_limit_s=60, output_dir=tmp_path, quiet=True)
    budget = Budget(60, clock=FakeClock(), margin_s=5)
    budget.plan([("first_model", 1.0), ("darts", 1.0), ("bohb", 1.0), ("final_fit", 1.0)])
    log = RunLog(None, quiet=True, elapsed=budget.elapsed, remaining=budget.remaining)
    report = pipeline.RunReport(settings, budget, tmp_path, log, with_plots=False)
    report.sections["environment"] = pipeline._environment(torch.device("cpu"), 1)
    report.sections["data"] = pipeline._data_section(dataset, splits)
    delivery = Delivery(tmp_path, predict_ids=splits.predict.ids, class_names=dataset.class_names, log=log)
    report.delivery, report.test_labels, report.n_classes = delivery, splits.test.labels, dataset.n_classes
    store = Checkpoints(tmp_path)
    store.dir.mkdir()
    ctx = RunContext(settings=settings, budget=budget, data=data, log=log, store=store, report=report.sections,
                     delivery=delivery)
    ctx.deliver(majority_fallback(data.train_counts, splits.val.labels, n_predict=len(splits.predict.ids),
                                  n_test=len(splits.test.ids)))
    log.event("input", "an event")

    darts = random_cell_result(TEMPLATE_OPS, seed=0)
    monkeypatch.setattr(architecture, "search_architecture", lambda *args, **kwargs: (darts, ""))
    trial = TrialRecord(config_id=(0, 0, 0), config={"lr": 0.01}, budget=1.0, loss=0.5, val_macro_f1=0.5,
                        evaluated=True, error=None, epochs_done=1, stopped_by_deadline=False, seconds=1.0,
                        worker="w", t_s=1.0, model_based_pick=False)
    bohb = BohbResult(incumbent_config={"lr": 0.01}, incumbent_val_macro_f1=0.5, incumbent_budget=1.0,
                      min_budget=1.0, max_budget=3.0, eta=3.0, trials=[trial], configs_sampled=1,
                      model_based_picks=0, model_min_trials=14, trajectory=[(1.0, 0.5)], seconds=1.0, n_workers=1,
                      clean_shutdown=True)
    monkeypatch.setattr(hyperparameters, "search_hyperparameters", lambda *args, **kwargs: (bohb, ""))
    architecture.run(ctx)
    hyperparameters.run(ctx, None)
    report.finish("complete")
    written = json.loads((tmp_path / "report.json").read_text())
    written["plan"] = plan_run(RunFacts(seconds_left=600.0, epoch_s=1.0)).to_json()   # pipeline._replan
    return written, common.first_model_spec(data).to_json()


def test_the_fixture_has_every_key_the_pipeline_writes(tmp_path, monkeypatch):
    """The fixture is the schema the readers are tested on: when the code writes a key it lacks, make
    it again (the command is at FIXTURE)."""
    written, spec, fixture = *_keys_the_pipeline_writes(tmp_path, monkeypatch), pipeline_report()
    assert fixture["darts"]["status"] == fixture["bohb"]["status"] == "completed"   # the random cell: "completed" too

    def lacking(path: str, code: dict, there: dict) -> list[str]:
        return [f"{path}{key}" for key in sorted(set(code) - set(there))]

    # sections newer than the fixture, tested on their own (test_report_md_describes_a_bagged_final_model,
    # test_ensemble.test_validation_vs_heldout_ranks_the_candidates_on_both_splits)
    missing = [key for key in lacking("", written, fixture) if key not in NEWER_THAN_FIXTURE]
    for name, section in written.items():
        if isinstance(section, dict) and name not in NEWER_THAN_FIXTURE:
            missing += lacking(f"{name}.", section, fixture.get(name) or {})
    missing += lacking("data.splits.test.", written["data"]["splits"]["test"], fixture["data"]["splits"]["test"])
    missing += lacking("bohb.incumbent.", written["bohb"]["incumbent"], fixture["bohb"]["incumbent"])
    missing += lacking("final.architecture.", spec, fixture["final"]["architecture"])
    missing += lacking("final.architecture.cell_stack[].", spec["cell_stack"][0],
                       fixture["final"]["architecture"]["cell_stack"][0])
    missing += lacking("phases[].", written["phases"][0], fixture["phases"][0])
    missing += lacking("events[].", written["events"][0], fixture["events"][0])
    missing = [key for key in missing if key not in NEWER_KEYS_THAN_FIXTURE]
    assert not missing, f"{FIXTURE.name} lacks keys the pipeline writes now: {missing}; make it again"


def test_report_md_says_when_bohb_raised_its_smallest_budget(tmp_path):
    report = pipeline_report()
    assert "raised its smallest budget" not in write_report_md(report, tmp_path).read_text(encoding="utf-8")
    report["bohb"]["raised_min_budget"] = [{"iteration": 4, "from_budget": 2.2, "to_budget": 6.7, "evidence": [
        {"budgets": [2.2, 6.7], "n_configs": 9, "spearman": -0.1}]}]
    report["bohb"]["raised_min_budget_reason"] = "from iteration 4 on, brackets started at 6.7 epochs, not 2.2"
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8")
    assert "The search raised its smallest budget: from iteration 4 on, brackets started at 6.7 epochs" in text


def test_report_md_says_early_termination_off_instead_of_a_limit_never_applied(tmp_path):
    report = pipeline_report()
    report["settings"]["search"]["early_termination"] = False
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8")
    assert "early termination off)" in text and "termination when above" not in text
    on = write_report_md(pipeline_report(), tmp_path).read_text(encoding="utf-8")
    assert f"termination when above {pipeline_report()['darts']['skip_limit']})" in on


def test_report_md_describes_a_bagged_final_model(tmp_path):
    report = pipeline_report()
    member = {"weight": 0.2, "architecture": report["final"]["architecture"], "config": report["final"]["config"]}
    report["final"] = {**report["final"], "description": "5-fold bag of the final fit",
                       "architecture": {"kind": "bag", "models": 5, "members": [member] * 5}}
    report["bagging"] = {"folds": 5, "repeats": 1, "reason": "1200 training and validation images", "oof_macro_f1": 0.61}
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8")
    assert "A bag of 5 models of the architecture below (5 folds, 1 round(s))" in text
    assert "out-of-fold macro-F1 0.610" in text and f"{member['architecture']['n_cells']} cells" in text


def test_report_md_names_the_delivered_bag_among_several_ranked_out_of_fold(tmp_path):
    report = pipeline_report()
    member = {"weight": 0.2, "architecture": report["final"]["architecture"], "config": report["final"]["config"]}
    report["final"] = {**report["final"], "description": "5-fold bag of the runner-up 1",
                       "architecture": {"kind": "bag", "models": 5, "members": [member] * 5}}
    report["bagging"] = {"folds": 5, "repeats": 2, "reason": "1200 images", "oof_macro_f1": 0.64,
                         "rounds_note": "runner-up 1: its own bag at 40 epochs per fold model, on the same folds",
                         "bags": [{"name": "5-fold x 2 bag of the incumbent", "rounds": 2, "oof_macro_f1": 0.64},
                                  {"name": "5-fold bag of the runner-up 1", "rounds": 1, "oof_macro_f1": 0.66}]}
    text = write_report_md(report, tmp_path).read_text(encoding="utf-8")
    assert "(5 folds, 1 round(s))" in text and "out-of-fold macro-F1 0.660" in text     # its own bag's facts
    assert ("by out-of-fold macro-F1 over every pooled image: 5-fold bag of the runner-up 1 0.660; "
            "5-fold x 2 bag of the incumbent 0.640 (runner-up 1: its own bag") in text
