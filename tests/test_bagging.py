"""k-fold bagging of the final choice: the plan's decision (budget.plan.bag_folds, made-up costs) and the
fold models on the digits demo (phases/bagging.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from automl_pipeline.data import load_dataset, make_splits
from automl_pipeline.phases import bagging, common
from automl_pipeline.pipeline import _to_run_data
from automl_pipeline.training.metrics import macro_f1
from automl_pipeline.training.tensors import random_subset
from budget.plan import BAG_FOLDS, BAG_MAX_IMAGES, FINAL_EPOCHS, FoldFacts, bag_folds, fold_epoch_seconds
from tests.data_builders import phase_context


def retina_sized(seconds: float, epoch_s: float = 1.0, rarest: int = 73) -> FoldFacts:
    return FoldFacts(seconds=seconds, epoch_s=epoch_s, n_train=1080, n_val=120, rarest_class=rarest)


def test_small_data_with_time_for_every_fold_model_is_bagged():
    need = BAG_FOLDS * FINAL_EPOCHS * fold_epoch_seconds(retina_sized(0))
    folds, why = bag_folds(retina_sized(need + 1))
    assert folds == BAG_FOLDS and "1200 training and validation images" in why and "averaged" in why


def test_one_final_model_when_the_fold_models_do_not_fit_said_with_the_numbers():
    facts = retina_sized(BAG_FOLDS * FINAL_EPOCHS * fold_epoch_seconds(retina_sized(0)) - 1)
    folds, why = bag_folds(facts)
    assert folds == 1 and why.endswith("one final model") and f"{facts.seconds:.0f}s" in why


def test_large_data_rare_classes_and_no_validation_are_never_bagged():
    big = FoldFacts(seconds=1e6, epoch_s=1.0, n_train=BAG_MAX_IMAGES, n_val=500, rarest_class=500)
    assert bag_folds(big)[0] == 1 and str(BAG_MAX_IMAGES) in bag_folds(big)[1]
    rare = retina_sized(1e6, rarest=BAG_FOLDS - 1)
    assert bag_folds(rare)[0] == 1 and "rarest class" in bag_folds(rare)[1]
    assert bag_folds(dataclasses.replace(retina_sized(1e6), n_val=0))[0] == 1


def test_a_fold_epoch_costs_the_share_of_the_pooled_images_it_trains_on():
    # 1200 pooled images, 4 of 5 folds: 960 images, against 1080 in the training split
    assert fold_epoch_seconds(retina_sized(0, epoch_s=1.08)) == pytest.approx(0.96)


def test_fold_holdouts_partition_the_images_and_keep_every_class_in_every_fold():
    labels = np.repeat(np.arange(4), [40, 20, 10, 5])
    held = bagging.fold_holdouts(labels, 5, seed=0)
    assert len(held) == 5
    assert np.array_equal(np.sort(np.concatenate(held)), np.arange(labels.size))
    assert all(set(labels[h]) == {0, 1, 2, 3} for h in held)


@pytest.fixture(scope="module")
def digits() -> common.RunData:
    dataset = load_dataset(None, max_side=8)
    data = _to_run_data(dataset, make_splits(dataset, seed=0), torch.device("cpu"))
    return dataclasses.replace(data, train=random_subset(data.train, 300, 0))


def plan_for(digits, description="final fit of the default network", *, source="default_network", epochs_cap=None,
             fold_epoch_s=5.0, asked=None) -> bagging.BagPlan:
    """A BagPlan of the default network on digits; fold models train at most `epochs_cap` epochs; the
    epochs each fold model was planned for are appended to `asked`."""
    def config_for(epochs):
        if asked is not None:
            asked.append(epochs)
        return common.default_train_config(epochs=min(epochs, epochs_cap or epochs), batch_size=32, seed=0)
    return bagging.BagPlan(source, description, common.first_model_spec(digits), config_for, fold_epoch_s)


def test_a_bag_on_digits_predicts_every_validation_image_out_of_fold(digits, one_torch_thread):
    lines: list[str] = []
    candidates, facts = bagging.fit_bags(plan_for(digits), digits, lambda: 60.0, folds=3, seed=0, log=lines.append,
                                         max_rounds=1)
    [candidate] = candidates
    assert facts["folds"] == 3 and facts["repeats"] == 1 and len(facts["fold_models"]) == 3
    pooled = len(digits.train) + len(digits.val)
    assert sum(m["n_held"] for m in facts["fold_models"]) == pooled
    assert all(m["n_train"] + m["n_held"] == pooled and m["epochs"] >= 1 for m in facts["fold_models"])
    val_labels = digits.val.y.numpy()
    assert candidate.val_probs.shape == (len(digits.val), digits.n_classes)
    assert candidate.val_macro_f1 == pytest.approx(macro_f1(val_labels, candidate.val_probs.argmax(axis=1), 10))
    assert facts["oof_macro_f1"] > 0.5 and candidate.val_macro_f1 > 0.5       # the fold models learned
    assert candidate.oof_macro_f1 == pytest.approx(facts["oof_macro_f1"], abs=1e-4)
    assert np.allclose(candidate.test_probs.sum(axis=1), 1.0, atol=1e-4)
    assert candidate.architecture["kind"] == bagging.KIND and candidate.architecture["models"] == 3
    assert {key.split(".")[0] for key in candidate.state_dict} == {f"member{i}" for i in range(3)}
    assert candidate.source == "default_network" and candidate.description.startswith("3-fold bag of")
    assert facts["best"] == candidate.name and facts["rounds_note"] == "one round"
    assert any("fold 3/3" in line for line in lines)


def test_a_fold_model_without_time_for_an_epoch_means_no_bag(digits, one_torch_thread):
    candidates, facts = bagging.fit_bags(plan_for(digits, fold_epoch_s=1.0), digits, lambda: 0.0, folds=3, seed=0,
                                         log=lambda s: None)
    assert candidates == [] and "trained no epoch" in facts["reason"]


def test_time_left_after_a_round_buys_another_partition(digits, one_torch_thread):
    """Fold models of 2 epochs in a time that does not run out and no contender: a second round on a new
    partition follows, and its models join the bag."""
    candidates, facts = bagging.fit_bags(plan_for(digits, epochs_cap=2, fold_epoch_s=1.0), digits, lambda: 1e4,
                                         folds=2, seed=0, log=lambda s: None, max_rounds=2)
    [candidate] = candidates
    assert facts["repeats"] == 2 and len(facts["fold_models"]) == 4
    assert {row["seed"] for row in facts["fold_models"]} == {0, 1}
    assert candidate.architecture["models"] == 4 and candidate.description.startswith("2-fold x 2 bag")
    assert "a repeat of" in facts["rounds_note"]


def test_a_contender_gets_its_own_bag_on_the_same_folds_at_the_first_bags_epochs(digits, one_torch_thread):
    """BOHB's runner-up (here: the same network under another name) is bagged on the first bag's partition,
    its fold models planned for the epochs the first bag's trained (2), not for what the time would hold;
    both bags come back, ranked by out-of-fold macro-F1 over every pooled image."""
    asked: list[int] = []
    built: list[str] = []

    def contender() -> bagging.BagPlan:
        built.append("runner-up")
        return plan_for(digits, "runner-up", source="bohb_runner_up", fold_epoch_s=1.0, asked=asked)

    candidates, facts = bagging.fit_bags(plan_for(digits, epochs_cap=2, fold_epoch_s=1.0), digits, lambda: 1e4,
                                         folds=2, seed=0, log=lambda s: None, contenders=[contender], max_rounds=2)
    assert built == ["runner-up"] and asked == [2, 2]
    assert [c.source for c in candidates] == ["default_network", "bohb_runner_up"]
    rows = facts["fold_models"]
    assert [(r["bag"], r["seed"], r["fold"]) for r in rows] == [(1, 0, 1), (1, 0, 2), (2, 0, 1), (2, 0, 2)]
    assert [r["n_held"] for r in rows[:2]] == [r["n_held"] for r in rows[2:]]      # the same partition
    assert [b["source"] for b in facts["bags"]] == ["default_network", "bohb_runner_up"]
    assert all(c.oof_macro_f1 is not None for c in candidates)
    best = max(candidates, key=lambda c: c.oof_macro_f1)
    assert facts["best"] == best.name and facts["oof_macro_f1"] == pytest.approx(best.oof_macro_f1, abs=1e-4)
    assert "runner-up: its own bag at 2 epochs per fold model" in facts["rounds_note"]


def test_a_contender_the_time_cannot_hold_gives_its_round_to_a_repeat(digits, one_torch_thread):
    """The runner-up's fold models would need more than the time left: the round repeats the first bag,
    and the report says why with the numbers."""
    def contender() -> bagging.BagPlan:
        return plan_for(digits, "runner-up", source="bohb_runner_up", fold_epoch_s=1e5)

    candidates, facts = bagging.fit_bags(plan_for(digits, epochs_cap=2, fold_epoch_s=1.0), digits, lambda: 1e4,
                                         folds=2, seed=0, log=lambda s: None, contenders=[contender], max_rounds=2)
    assert [c.source for c in candidates] == ["default_network"] and facts["repeats"] == 2
    assert "no time for runner-up" in facts["rounds_note"] and "10000s left" in facts["rounds_note"]
    assert "a repeat of final fit of the default network" in facts["rounds_note"]


@pytest.mark.parametrize("bagging_mode", ["auto", "off"])
def test_the_final_fit_phase_delivers_a_bag_or_says_why_not(bagging_mode, digits, tmp_path, monkeypatch,
                                                            one_torch_thread):
    """final_fit.run on digits with fold models of 2 epochs (budget.plan.FINAL_EPOCHS patched): the bag is
    trained, offered, written as model.pt (loadable with weights_only) and enters the ensemble's library;
    with the option off, one final model and the reason."""
    import budget.plan
    from automl_pipeline.phases import final_fit
    from automl_pipeline.search_options import SearchOptions
    from automl_pipeline.settings import Settings
    from budget import Budget

    monkeypatch.setattr(budget.plan, "FINAL_EPOCHS", 2)
    seconds = 16 if bagging_mode == "auto" else 5     # off: one model, whatever it trains in the time
    clock = Budget(seconds, margin_s=0)
    clock.plan([("final_fit", 1.0)])
    settings = Settings(time_limit_s=60, output_dir=tmp_path, search=SearchOptions(bagging=bagging_mode))
    ctx = phase_context(tmp_path, clock, digits, settings=settings)
    final_fit.run(ctx, None, None)
    section = ctx.report["bagging"]
    library = {entry["name"] for entry in ctx.report["ensemble"]["library"]}
    if bagging_mode == "off":
        assert section == {"folds": 1, "reason": "bagging is off (search options)"}
        assert not any("fold" in name for name in library)
        return
    assert section["folds"] == budget.plan.BAG_FOLDS and section["repeats"] >= 1, section
    bag_name = next(name for name in library if name.startswith("5-fold"))
    assert "bag of the final fit of the default network" in bag_name
    # the only candidate offered: delivered, and the ensemble has nothing to mix it with
    assert ctx.delivery.best.description == bag_name and not ctx.report["ensemble"]["delivered"]
    assert ctx.delivery.best.val_macro_f1 == pytest.approx(section["val_macro_f1"], abs=1e-4)
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    assert model["spec"]["kind"] == bagging.KIND and len(model["spec"]["members"]) == 5 * section["repeats"]
    assert {key.split(".")[0] for key in model["state_dict"]} == {f"member{i}" for i in range(model["spec"]["models"])}


def test_bohbs_runners_up_at_its_top_budget_are_the_contenders(digits):
    """final_fit.top_rung_contenders: the next best trials at the incumbent's budget that beat 1.5x chance,
    best first, as BOHB configurations ready to train; none when the final choice is not BOHB's incumbent."""
    from automl_pipeline.bohb.results import BohbResult, TrialRecord
    from automl_pipeline.bohb.space import build_config_space
    from automl_pipeline.phases import final_fit
    from submission import to_jsonable

    configs = [to_jsonable(dict(c)) for c in build_config_space(seed=0).sample_configuration(5)]

    def trial(i, budget, f1):
        return TrialRecord(config_id=(0, 0, i), config=configs[i], budget=budget, loss=1 - f1, val_macro_f1=f1,
                           evaluated=True, error=None, epochs_done=int(budget), stopped_by_deadline=False,
                           seconds=1.0, worker="w", t_s=float(i), model_based_pick=False)

    trials = [trial(0, 9, 0.6), trial(1, 3, 0.99), trial(2, 9, 0.1), trial(3, 9, 0.5), trial(4, 9, 0.55)]
    bohb = BohbResult(incumbent_config=configs[0], incumbent_val_macro_f1=0.6, incumbent_budget=9, min_budget=1,
                      max_budget=9, eta=3, trials=trials, configs_sampled=5, model_based_picks=0, model_min_trials=3,
                      trajectory=[], seconds=1.0, n_workers=1, clean_shutdown=True)
    contenders = final_fit.top_rung_contenders(digits, None, bohb, "bohb_incumbent", seed=0, n=3)
    assert [config for config, _ in contenders] == [configs[4], configs[3]]   # 0.1 is under 1.5 x chance (0.15)
    source, description, spec, config_for = contenders[0][1]
    assert source == "bohb_runner_up" and description == "BOHB's top-rung runner-up 1"
    assert spec.n_cells == configs[4]["n_cells"] and config_for(3).epochs == 3
    assert final_fit.top_rung_contenders(digits, None, bohb, "darts_cell", seed=0) == []


def test_a_contender_that_fails_leaves_the_bags_already_trained(digits, one_torch_thread):
    def contender() -> bagging.BagPlan:
        raise RuntimeError("no network for this configuration")

    candidates, facts = bagging.fit_bags(plan_for(digits, epochs_cap=1, fold_epoch_s=1.0), digits, lambda: 1e4,
                                         folds=2, seed=0, log=lambda s: None, contenders=[contender], max_rounds=2)
    assert [c.source for c in candidates] == ["default_network"] and facts["repeats"] == 1
    assert "round 2 not started: RuntimeError: no network for this configuration" in facts["rounds_note"]


def test_the_final_fit_phase_bags_bohbs_runner_up_beside_its_incumbent(digits, tmp_path, monkeypatch,
                                                                      one_torch_thread):
    """final_fit.run after a BOHB phase whose top budget holds two trials above chance, with fold models capped
    at 2 epochs (bagging.MAX_EPOCHS patched, as a long budget caps them at 200): the incumbent is bagged,
    then the runner-up on the same folds; both bags enter the library, and the report ranks them."""
    import budget.plan
    from automl_pipeline.bohb.results import BohbResult, TrialRecord
    from automl_pipeline.bohb.space import build_config_space
    from automl_pipeline.phases import final_fit
    from budget import Budget
    from submission import to_jsonable

    monkeypatch.setattr(budget.plan, "FINAL_EPOCHS", 2)
    monkeypatch.setattr(bagging, "MAX_EPOCHS", 2)
    configs = [dict(to_jsonable(dict(c)), n_cells=2, base_channels=8)
               for c in build_config_space(seed=1).sample_configuration(2)]
    trials = [TrialRecord(config_id=(0, 0, i), config=configs[i], budget=2, loss=0.3 + i / 10, val_macro_f1=0.7 - i / 10,
                          evaluated=True, error=None, epochs_done=2, stopped_by_deadline=False, seconds=1.0,
                          worker="w", t_s=float(i), model_based_pick=False) for i in range(2)]
    bohb = BohbResult(incumbent_config=configs[0], incumbent_val_macro_f1=0.7, incumbent_budget=2, min_budget=1,
                      max_budget=2, eta=2, trials=trials, configs_sampled=2, model_based_picks=0, model_min_trials=3,
                      trajectory=[], seconds=1.0, n_workers=1, clean_shutdown=True)
    clock = Budget(60, margin_s=0)
    clock.plan([("final_fit", 1.0)])
    ctx = phase_context(tmp_path, clock, digits, report={"darts": {}})
    final_fit.run(ctx, None, bohb)
    section = ctx.report["bagging"]
    assert [b["source"] for b in section["bags"]] == ["bohb_incumbent", "bohb_runner_up"], section
    assert all(b["fold_epochs"] == 2 for b in section["bags"])
    assert "BOHB's top-rung runner-up 1: its own bag" in section["rounds_note"]
    library = {entry["name"] for entry in ctx.report["ensemble"]["library"]}
    assert {b["name"] for b in section["bags"]} <= library
    assert ctx.report["evidence"]["bag"] == section["best"]
    assert ctx.report["darts"]["cell_used"] is False           # template cells only, no DARTS phase
