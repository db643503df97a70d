"""Helpers of the run's phases (automl_pipeline/phases/) that the end-to-end tests only see from outside."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from automl_pipeline.phases import architecture, common, first_model
from automl_pipeline.training.tensors import random_subset
from automl_pipeline.data import load_dataset, make_splits
from automl_pipeline.pipeline import _to_run_data
from automl_pipeline.search_space import NetworkSpec, build_network
from tests.data_builders import phase_context, random_run_data


@pytest.fixture(scope="module")
def digits() -> common.RunData:
    dataset = load_dataset(None, max_side=8)
    return _to_run_data(dataset, make_splits(dataset, seed=0), torch.device("cpu"))


def test_batch_for_steps_halves_the_batch_until_enough_steps():
    assert first_model.batch_for_steps(5000, 10, 128) == 128                 # plenty of steps: unchanged
    assert first_model.batch_for_steps(361, 3, 64) == 16                      # 18 steps at 64, 69 at 16
    assert first_model.batch_for_steps(1400, 3, 64) == 64                     # 66 steps at 64
    assert first_model.batch_for_steps(1200, 3, 64) == 32                     # 57 at 64, 114 at 32
    assert first_model.batch_for_steps(10, 1, 64) == first_model.MIN_FIRST_MODEL_BATCH   # never below the floor
    for n, epochs in [(361, 3), (803, 2), (3000, 1)]:
        batch = first_model.batch_for_steps(n, epochs, 128)
        steps = epochs * -(-n // batch)
        assert steps >= first_model.MIN_FIRST_MODEL_STEPS or batch == first_model.MIN_FIRST_MODEL_BATCH
        assert batch == 128 or epochs * -(-n // (2 * batch)) < first_model.MIN_FIRST_MODEL_STEPS   # the largest such


def test_a_first_model_on_a_small_subset_learns(digits, one_torch_thread):
    """Three epochs on a 361-image subset, as a 60 s digits run's first model gets: with batch 64 (18
    steps) it stayed at chance (val macro-F1 0.02); the step rule makes it learn."""
    data = dataclasses.replace(digits, train=random_subset(digits.train, 361, 0))
    batch = first_model.batch_for_steps(len(data.train), 3, data.batch_size)
    config = common.default_train_config(epochs=3, batch_size=batch, seed=0)
    candidate, result = common.train_candidate("first_model", common.first_model_spec(data), config, data,
                                               lambda: 1e9, log=lambda s: None)
    assert result.epochs_done == 3 and batch == 16
    assert candidate.val_macro_f1 > 0.3


def test_a_network_trained_briefly_gets_the_flattening_head(digits, one_torch_thread):
    spec = common.first_model_spec(digits)
    assert spec.head == "pool"
    assert common.with_head_for(spec, common.FLATTEN_HEAD_BELOW_EPOCHS - 1).head == "flatten"
    assert common.with_head_for(spec, common.FLATTEN_HEAD_BELOW_EPOCHS) == spec
    # a first model planned for a few epochs (2 s left at ~0.5 s per epoch) trains and delivers the flattening head
    data = dataclasses.replace(digits, train=random_subset(digits.train, 200, 0))
    candidate, _ = first_model.train_first_model(data, lambda: 2.0, seed=0, log=lambda s: None, probe_epoch_s=0.5)
    assert candidate.architecture["head"] == "flatten" and candidate.epochs < common.FLATTEN_HEAD_BELOW_EPOCHS
    network = build_network(NetworkSpec.from_json(candidate.architecture))
    network.load_state_dict(candidate.state_dict)          # the delivered weights fit the spec the report keeps


def test_the_final_fit_offers_its_last_epoch_beside_its_best(digits, one_torch_thread, monkeypatch):
    from automl_pipeline.phases import final_fit
    data = dataclasses.replace(digits, train=random_subset(digits.train, 200, 0))
    spec = common.first_model_spec(data)
    torch.manual_seed(1)
    other = {k: v.clone() for k, v in build_network(spec).state_dict().items()}   # untrained: far from the best
    real_train_model = common.train_model

    def train_model_whose_last_epoch_was_other(*args, **kwargs):
        result = real_train_model(*args, **kwargs)
        return dataclasses.replace(result, last_state_dict=other)
    monkeypatch.setattr(common, "train_model", train_model_whose_last_epoch_was_other)
    config_for = lambda epochs: common.default_train_config(epochs=2, batch_size=32, seed=0)   # noqa: E731
    clock = {"left": 1e9}

    def rounds():
        return final_fit.fit_for_the_time_left("default_network", "final fit", spec, config_for, data,
                                               lambda: clock["left"], epoch_s=1e8, log=lambda s: None)
    fit = rounds()
    best, last = next(fit), next(fit)
    assert (best.description, last.description) == ("final fit", "final fit (last epoch)")
    assert all(torch.equal(last.state_dict[k], v) for k, v in other.items())
    assert last.val_macro_f1 < best.val_macro_f1 and last.source == best.source
    assert last.val_probs.shape == best.val_probs.shape and last.test_probs is not None
    assert (last.epochs, last.train_s, last.train_images_per_s) == (best.epochs, best.train_s, best.train_images_per_s)
    # no time left for the extra prediction pass once the round is done: only the best weights
    fit = rounds()
    assert next(fit).description == "final fit"
    clock["left"] = 0.0
    assert list(fit) == []


# --------------------------------------------------------------------------- DARTS planning

def _step_costs(costs: dict):
    """step_seconds for plan_darts from a table {(n_cells, n_nodes, base_channels): seconds}; records calls."""
    calls = []

    def step_seconds(config):
        calls.append((config.n_cells, config.n_nodes, config.base_channels))
        return costs[calls[-1]]
    return step_seconds, calls


def test_plan_darts_takes_the_richest_proxy_that_fits_enough_steps():
    costs = {(p.n_cells, p.n_nodes, p.base_channels): 0.05 * 2 ** i for i, p in enumerate(architecture.DARTS_PROXIES)}
    step_seconds, calls = _step_costs(costs)
    # 100 s: 1800, 900, 450 steps -> the second proxy (the third would fit fewer than RICHER_PROXY_STEPS)
    config, n_train, why = architecture.plan_darts(step_seconds, 100.0, n_train=5000, n_classes=10, image_side=28, seed=0)
    assert why == "" and (config.n_cells, config.n_nodes, config.base_channels) == calls[1]
    assert len(calls) == 3                                    # the third was timed and found too slow
    assert config.proxy_side == 16 and config.stem_pool is True   # 28 px searched at 16 px with a pooling stem
    steps = int(0.9 * 100.0 / 0.1)
    assert config.epochs == architecture.MIN_DARTS_EPOCHS          # 900 steps are fewer than 6 epochs of 5000 images
    assert n_train == steps // architecture.MIN_DARTS_EPOCHS * config.batch_size
    assert config.epochs * n_train // config.batch_size >= architecture.MIN_ARCH_STEPS


def test_plan_darts_skips_when_too_few_steps_fit_and_keeps_small_images():
    step_seconds, calls = _step_costs({(p.n_cells, p.n_nodes, p.base_channels): 1.0 for p in architecture.DARTS_PROXIES})
    config, _, why = architecture.plan_darts(step_seconds, 100.0, n_train=5000, n_classes=10, image_side=28, seed=0)
    assert config is None and f"at least {architecture.MIN_ARCH_STEPS}" in why and len(calls) == 1
    step_seconds, _ = _step_costs({(p.n_cells, p.n_nodes, p.base_channels): 0.01 for p in architecture.DARTS_PROXIES})
    config, n_train, why = architecture.plan_darts(step_seconds, 1000.0, n_train=1000, n_classes=10, image_side=8, seed=0)
    assert why == "" and config.proxy_side is None and config.stem_pool is False   # 8 px: no resize, no pool
    assert n_train == 1000 and config.epochs == architecture.MAX_DARTS_EPOCHS


def test_the_time_the_plan_reserves_for_darts_holds_its_minimum_search(monkeypatch):
    """seconds_needed (the run's plan reserves it) from a measured step of 0.5 s and a 2 s probe: the phase,
    given that time and re-timing its step up to 15 % slower, still searches; 20 % less time and it does not."""
    from budget import FakeClock

    clock = FakeClock()

    def measured(data, config, loss):
        clock.advance(2.0)
        return 0.5
    monkeypatch.setattr(architecture, "measure_step_seconds", measured)
    data = random_run_data(n=256, side=8)
    need = architecture.seconds_needed(data, seed=0, clock=clock)
    probes = architecture.PROBES_PER_PHASE * 2.0
    assert need == pytest.approx(architecture.NEED_MARGIN * architecture.MIN_ARCH_STEPS * 0.5 / 0.9 + probes)
    retimed = lambda config: 0.5 * 1.15      # noqa: E731
    config, _, why = architecture.plan_darts(retimed, need - probes, n_train=256, n_classes=4, image_side=8, seed=0)
    assert config is not None, why
    config, _, why = architecture.plan_darts(retimed, 0.8 * (need - probes), n_train=256, n_classes=4, image_side=8,
                                             seed=0)
    assert config is None and f"at least {architecture.MIN_ARCH_STEPS}" in why


def test_darts_seconds_needed_measures_a_real_supernet_step():
    need = architecture.seconds_needed(random_run_data(n=128, side=8), seed=0)
    assert 0 < need < 600


def test_darts_result_counts_as_learned_only_when_supernet_and_alphas_moved():
    from automl_pipeline.darts import DartsResult
    from automl_pipeline.search_space import DEFAULT_GENOTYPE

    def result(val_acc: float, peak: float) -> DartsResult:
        w = np.full((5, 5), (1 - peak) / 4)
        w[:, 2] = peak
        return DartsResult(genotype=DEFAULT_GENOTYPE, alphas_normal=w, alphas_reduce=w, epochs_planned=1,
                           epochs_run=1, stopped_early=False, stop_reason="completed", skip_count_per_epoch=[0],
                           beta_per_epoch=[1.0], alphas_per_epoch=[{"normal": w.tolist(), "reduce": w.tolist()}],
                           seconds=1.0, epoch_seconds=[1.0], steps_run=300,
                           history=[{"val_acc": val_acc, "train_acc": val_acc}])

    assert result(0.6, 0.4).learned(10) == (True, "")
    learned, why = result(0.12, 0.4).learned(10)
    assert not learned and "did not learn" in why
    learned, why = result(0.6, 0.2).learned(10)              # uniform alphas
    assert not learned and "near uniform" in why
    report = result(0.6, 0.4).report()
    assert report["arch_steps"] == 300 and report["supernet_val_acc_per_epoch"] == [0.6]
    assert 0 < report["alpha_entropy_per_epoch"][0] < 1


# --------------------------------------------------------------------------- BOHB's space by the time it has

def test_bohb_spaces_go_from_a_cell_per_stage_to_one_cell_to_the_darts_cell():
    from automl_pipeline.bohb.space import n_hyperparameters
    from automl_pipeline.darts import random_cell_result
    from automl_pipeline.phases.hyperparameters import search_spaces
    from automl_pipeline.search_options import SearchOptions
    from automl_pipeline.search_space import TEMPLATE_OPS

    darts = random_cell_result(TEMPLATE_OPS, seed=0)
    levels = search_spaces(darts, TEMPLATE_OPS, options=SearchOptions(), seed=0)
    assert [(name, n_hyperparameters(space)) for name, space, _ in levels] == [
        ("per_stage", 9), ("shared", 7), ("darts_cell", 6)]
    assert levels[-1][2] == {"cell": "darts"} and "cell" in set(levels[1][1])
    (name, space, fixed), = search_spaces(None, TEMPLATE_OPS, options=SearchOptions(), seed=0)
    assert name == "default_cell" and n_hyperparameters(space) == 6 and fixed == {}


def test_bohb_takes_the_richest_space_whose_first_bracket_fits(monkeypatch, tmp_path):
    """When 22 configurations do not fit but 18 do, BOHB searches one cell for the whole stack; the
    values left out of the space travel with every job (the worker records them with each trial's
    result, so the incumbent carries them: tests/test_search_options.py, test_resume.py)."""
    from automl_pipeline.bohb import BohbResult
    from automl_pipeline.darts import random_cell_result
    from automl_pipeline.phases import hyperparameters
    from automl_pipeline.search_options import SearchOptions
    from automl_pipeline.search_space import TEMPLATE_OPS

    real_choose = hyperparameters.choose_budgets
    monkeypatch.setattr(hyperparameters, "choose_budgets", lambda epoch_s, seconds, *, first_configs, min_budget_floor:
                        None if first_configs > limit else real_choose(epoch_s, 1e4, first_configs=first_configs,
                                                                       min_budget_floor=min_budget_floor))
    seen = {}

    def fake_run_bohb(trials, **kwargs):
        seen["space"], seen["fixed"] = set(kwargs["config_space"]), kwargs["options"].fixed
        return BohbResult(incumbent_config={"lr": 0.01, "n_cells": 3, "base_channels": 16, "flip": False},
                          incumbent_val_macro_f1=0.5, incumbent_budget=1.0, min_budget=0.5, max_budget=1.5, eta=3.0,
                          trials=[], configs_sampled=0, model_based_picks=0, model_min_trials=0, trajectory=[],
                          seconds=0.0, n_workers=1, clean_shutdown=True)
    monkeypatch.setattr(hyperparameters, "run_bohb", fake_run_bohb)
    darts = random_cell_result(TEMPLATE_OPS, seed=0)

    def search():
        return hyperparameters.search_hyperparameters(
            random_run_data(), darts, lambda: 1000.0, seed=0, out_dir=tmp_path, workers=1,
            nameserver_host="127.0.0.1", nameserver_port=0, log=lambda s: None, options=SearchOptions(loss="ce"))

    limit = 18
    result, why = search()
    assert why == "" and result.cell_choice == "shared" and "cell" in seen["space"]
    assert not any(key.startswith("cell_stage") for key in seen["space"])
    assert seen["fixed"] == {"loss": "ce"} and result.report()["cell_choice"] == "shared"
    limit = 15                                      # loss fixed: d is one less (20 / 16 / 14 configurations)
    result, _ = search()
    assert result.cell_choice == "darts_cell" and seen["fixed"] == {"loss": "ce", "cell": "darts"}
    limit = 22
    assert search()[0].cell_choice == "per_stage"


@pytest.mark.parametrize("phase", ["darts", "bohb"])
def test_a_search_that_starts_and_then_skips_says_skipped_in_the_phases(phase, tmp_path):
    """Both searches decide inside their started phase that it is too short: the report's `phases`
    row says skipped with the same reason as the section (it said "done")."""
    from automl_pipeline.checkpoints import Checkpoints
    from automl_pipeline.phases import hyperparameters
    from automl_pipeline.phases.context import RunContext
    from automl_pipeline.runlog import RunLog
    from automl_pipeline.settings import Settings
    from budget import Budget, FakeClock

    budget = Budget(60, clock=FakeClock(), margin_s=50)            # 10 s of work: too short for a search
    budget.plan([(phase, 1.0)])
    store = Checkpoints(tmp_path)
    store.dir.mkdir()
    ctx = RunContext(settings=Settings(time_limit_s=60, output_dir=tmp_path), budget=budget,
                     data=random_run_data(), log=RunLog(None, quiet=True, elapsed=budget.elapsed,
                                                        remaining=budget.remaining),
                     store=store, report={}, delivery=None)
    assert (architecture.run(ctx) if phase == "darts" else hyperparameters.run(ctx, None)) is None
    row, = budget.phases_report()
    assert ctx.report[phase]["status"] == "skipped" and "too short" in ctx.report[phase]["reason"]
    assert row["status"] == "skipped" and row["skipped"] == ctx.report[phase]["reason"], row


@pytest.mark.parametrize("probe_s, trained", [(5.0, False), (0.01, True)])
def test_the_first_network_trains_only_when_a_search_could_follow(probe_s, trained, digits, tmp_path, monkeypatch):
    """With 20 s of work left, a 5 s epoch (30 epochs would need 75 s even at half of it) leaves the final fit
    short of its epochs: the first network is not trained and the report says why; at 0.01 s it trains."""
    from automl_pipeline.phases.context import RunContext
    from budget import Budget, FakeClock

    budget = Budget(60, clock=FakeClock(), margin_s=40)            # 20 s of work
    budget.plan([("first_model", 0.5), ("final_fit", 0.5)])
    ctx = phase_context(tmp_path, budget, digits)
    log = ctx.log
    monkeypatch.setattr(first_model, "probe_epoch_seconds", lambda data, **kw: probe_s)
    trainings = []
    monkeypatch.setattr(first_model, "train_first_model", lambda *a, **kw: trainings.append(kw) or (None, 0.02))
    monkeypatch.setattr(RunContext, "deliver", lambda self, candidate: None)
    epoch_s = first_model.run(ctx)
    assert bool(trainings) == trained
    if trained:
        assert trainings[0]["probe_epoch_s"] == probe_s and epoch_s == 0.02
        assert "first_network" not in ctx.report
    else:
        assert epoch_s == probe_s
        assert ctx.report["first_network"]["trained"] is False
        assert "first network's time goes to the final fit" in ctx.report["first_network"]["reason"]
        assert [e["kind"] for e in log.events] == ["first_network_skipped"]
