"""--search-config: parsing, refusal of bad files, and each option reaching the part it switches."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from automl_pipeline.bohb import BohbResult, build_config_space, fixed_hyperparameters
from automl_pipeline.bohb import worker as worker_module
from automl_pipeline.bohb.remote import load_darts_cells
from automl_pipeline.bohb.results import TrialRecord
from automl_pipeline.bohb.worker import TrialContext, TrialWorker
from automl_pipeline.darts import DartsConfig, random_cell_result
from automl_pipeline.phases import architecture, common
from automl_pipeline.search_options import SearchOptions, SearchOptionsError
from automl_pipeline.search_space import TEMPLATE_OPS, validate_genotype
from automl_pipeline.search_space.ops import EXTRA_OPS
from automl_pipeline.training import TrainResult
from automl_pipeline.training.tensors import TensorData
from tests.data_builders import random_run_data

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, content) -> Path:
    path = tmp_path / "search.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_defaults_are_the_full_method_and_a_file_overrides_some(tmp_path):
    assert SearchOptions().changed() == {}
    options = SearchOptions.load(write(tmp_path, {"darts": "random", "max_skips": 2, "loss": "ce"}))
    assert options.changed() == {"darts": "random", "max_skips": 2, "loss": "ce"}
    assert options.fixed_loss == "ce" and SearchOptions().fixed_loss is None
    assert SearchOptions.from_json(options.to_json()) == options


@pytest.mark.parametrize("content, words", [
    ({"dart": "off"}, "unknown option(s) dart"),
    ({"darts": "rand"}, "darts must be one of"),
    ({"second_order": "yes"}, "second_order must be true or false"),
    ({"max_skips": -1}, "max_skips must be null or an integer"),
    ({"max_skips": True}, "max_skips must be null or an integer"),
    ({"optimizer": "tpe"}, "optimizer must be one of"),
    ([1, 2], "must be a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_bad_files_are_refused_naming_the_file(tmp_path, content, words):
    path = write(tmp_path, content)
    with pytest.raises(SearchOptionsError) as err:
        SearchOptions.load(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_the_cli_refuses_a_bad_or_missing_file_with_exit_2(tmp_path):
    for path in (write(tmp_path, {"loss": "hinge"}), tmp_path / "missing.json"):
        proc = subprocess.run([sys.executable, str(REPO / "run.py"), "--time-limit", "30", "--search-config", str(path),
                               "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                              cwd=REPO)
        assert proc.returncode == 2 and str(path) in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "out" / "predictions.npy").exists()


def test_darts_options_reach_the_darts_config():
    proxy = architecture.DARTS_PROXIES[0]
    full = architecture.darts_config(proxy, 28, epochs=6, seed=0)
    assert full.ops == TEMPLATE_OPS and not full.second_order and full.beta0 == DartsConfig.beta0
    assert full.skip_limit == DartsConfig.skip_limit
    options = SearchOptions(extra_ops=True, second_order=True, allow_zero=True, grouping=True, max_skips=1,
                            surrogate_skip=False, early_termination=False)
    changed = architecture.darts_config(proxy, 28, epochs=6, seed=0, options=options)
    assert changed.ops == TEMPLATE_OPS + EXTRA_OPS and changed.second_order
    assert changed.allow_zero and changed.grouping and changed.max_skips == 1
    assert changed.beta0 == 0.0 and changed.skip_limit >= 10 ** 6


def test_search_architecture_plans_with_the_options(monkeypatch):
    """The DARTS phase times and runs the configuration the options describe."""
    data = random_run_data(400)
    seen = []
    monkeypatch.setattr(architecture, "estimate_epoch_seconds", lambda train, val, n_classes, config, loss, n_batches: 0.01)

    def fake_run_darts(train, val, n_classes, config, **kwargs):
        seen.append(config)
        return random_cell_result(config.ops, seed=0)
    monkeypatch.setattr(architecture, "run_darts", fake_run_darts)
    options = SearchOptions(extra_ops=True, second_order=True, early_termination=False)
    result, why = architecture.search_architecture(data, lambda: 100.0, seed=0, log=lambda s: None, options=options)
    assert why == "" and result is not None
    assert seen[0].ops == TEMPLATE_OPS + EXTRA_OPS and seen[0].second_order and seen[0].skip_limit >= 10 ** 6


def test_a_fixed_loss_or_surrogate_leaves_the_space_and_every_trial_uses_it(monkeypatch):
    options = SearchOptions(loss="ce", surrogate_skip=False)
    fixed = fixed_hyperparameters(options)
    assert fixed == {"loss": "ce", "surrogate_skip": False}
    baseline = SearchOptions(loss="focal", optimizer="random").for_method("baseline")
    assert fixed_hyperparameters(baseline) == {"loss": "ce", "surrogate_skip": False}
    assert baseline.darts == "off" and baseline.optimizer == "random"        # the baseline keeps its optimizer
    names = set(build_config_space(seed=0, fixed=tuple(fixed)))
    assert not names & {"loss", "surrogate_skip"} and {"lr", "n_cells"} <= names
    assert {"loss", "surrogate_skip"} <= set(build_config_space(seed=0))

    configs = []

    def fake_train(model, train, val, config, **kwargs):
        configs.append(config)
        return TrainResult(state_dict=model.state_dict(), history=[], best_val_macro_f1=0.0, best_epoch=0,
                           epochs_done=1, seconds=0.0, stopped_by_deadline=False)
    monkeypatch.setattr(worker_module, "train_model", fake_train)
    data = TensorData(torch.randn(32, 1, 8, 8), torch.arange(32) % 4)
    ctx = TrialContext(train=data, val=data, n_classes=4, in_channels=1, image_side=8)
    sampled = dict(build_config_space(seed=0, fixed=tuple(fixed)).sample_configuration())
    # the master sends the fixed values with every job; the worker completes the configuration
    worker = TrialWorker(ctx, time_left=lambda: 100.0, run_id="r", nameserver="127.0.0.1", nameserver_port=1)
    result = worker.compute("id", sampled, 1.0, None, phase_seconds_left=100.0, fixed=fixed)
    assert result["info"]["error"] is None, result
    assert configs[0].loss == "ce" and configs[0].surrogate_beta0 == 0.0
    # the result says what was fixed, so a trial read back from results.json has its whole configuration
    assert result["info"]["fixed"] == fixed
    record = TrialRecord.from_hpbandster((0, 0, 0), sampled, 1.0, result, None, t_s=0.0)
    assert record.config == {**sampled, **fixed} and record.config["loss"] == "ce"

    first = common.default_train_config(epochs=3, batch_size=16, seed=0, options=options)
    assert first.loss == "ce"
    assert common.default_train_config(epochs=3, batch_size=16, seed=0).loss == "logit_adjusted"
    assert common.default_train_config(epochs=3, batch_size=16, seed=0, options=baseline).loss == "ce"


def test_a_random_cell_stands_in_for_darts():
    result = random_cell_result(TEMPLATE_OPS, seed=3)
    validate_genotype(result.genotype)
    assert np.allclose(result.alphas_normal, 1.0 / len(TEMPLATE_OPS)) and result.ops == TEMPLATE_OPS
    assert result.genotype == random_cell_result(TEMPLATE_OPS, seed=3).genotype
    assert result.genotype != random_cell_result(TEMPLATE_OPS, seed=4).genotype
    assert architecture.random_darts_stand_in(SearchOptions(extra_ops=True), seed=0).ops == TEMPLATE_OPS + EXTRA_OPS


def test_a_run_with_a_random_cell_records_the_options(tmp_path):
    """The options as a user passes them: DARTS replaced by a random cell, a fixed loss; the report
    says so and the delivered model trained with that loss."""
    config = write(tmp_path, {"darts": "random", "loss": "ce"})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "run.py"), "--time-limit", "30", "--search-config", str(config),
                           "--output-dir", str(out), "--quiet"], capture_output=True, text=True, timeout=90, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["search"]["darts"] == "random" and report["settings"]["search"]["loss"] == "ce"
    assert report["darts"]["status"] == "skipped" and report["darts"]["random_cell"] is True
    assert "random cell" in report["darts"]["reason"]
    darts_phase = [p for p in report["phases"] if p["name"] == "darts"]
    assert darts_phase and darts_phase[0]["status"] == "skipped", report["phases"]
    assert report["final"]["source"] != "majority_fallback"
    # every model delivered trained with that loss: the model itself, or each member of an ensemble or bag
    members = report["final"]["architecture"].get("members")
    configs = [m["config"] for m in members] if members else [report["final"]["config"]]
    assert configs and all(c["loss"] == "ce" for c in configs), configs
    assert "darts_random_cell" in (out / "run.log").read_text()
    assert "Search options" in (out / "report.md").read_text()
    # a remote worker rebuilds the same random cell from the run's DARTS outcome file
    cells = load_darts_cells(out / "checkpoints" / architecture.OUTCOME_FILE)
    assert json.loads(json.dumps(cells.genotype.to_json())) == report["darts"]["genotype"]


def test_the_optimizer_option_reaches_the_bohb_phase(monkeypatch, tmp_path):
    from automl_pipeline.phases import hyperparameters

    data = random_run_data(256)
    seen = {}

    def fake_run_bohb(ctx, **kwargs):
        seen.update(kwargs, optimizer=kwargs["options"].optimizer, fixed=kwargs["options"].fixed)
        return BohbResult(incumbent_config=None, incumbent_val_macro_f1=0.0, incumbent_budget=0.0, min_budget=0.5,
                          max_budget=1.5, eta=3.0, trials=[], configs_sampled=0, model_based_picks=0,
                          model_min_trials=0, trajectory=[], seconds=0.0, n_workers=1, clean_shutdown=True,
                          optimizer=kwargs["options"].optimizer)
    monkeypatch.setattr(hyperparameters, "run_bohb", fake_run_bohb)
    options = SearchOptions(optimizer="random", loss="logit_adjusted")
    result, why = hyperparameters.search_hyperparameters(
        data, None, lambda: 1000.0, seed=0, out_dir=tmp_path, workers=1, nameserver_host="127.0.0.1",
        nameserver_port=0, log=lambda s: None, options=options)
    assert why == "" and seen["optimizer"] == "random" and seen["fixed"] == {"loss": "logit_adjusted"}
    assert "loss" not in set(seen["config_space"])


def test_every_bohb_job_carries_the_fixed_values(tmp_path):
    from automl_pipeline.bohb import BohbOptions, run_bohb

    seen = []

    def quick(config, budget, ctx, time_left):
        seen.append(config)
        return {"loss": 0.5, "info": {"val_macro_f1": 0.5, "evaluated": True, "error": None, "epochs_done": 1,
                                      "stopped_by_deadline": False}}
    space = build_config_space(seed=0, fixed=("loss",))
    started = time.monotonic()
    run_bohb(None, config_space=space,
             options=BohbOptions(min_budget=1, max_budget=3, fixed={"loss": "logit_adjusted"}, wrapup_s=1.0),
             time_left=lambda: 3.0 - (time.monotonic() - started), out_dir=tmp_path, evaluate=quick,
             log=lambda s: None)
    assert seen and all(config["loss"] == "logit_adjusted" for config in seen)
