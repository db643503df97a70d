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


def test_a_bag_on_digits_predicts_every_validation_image_out_of_fold(digits, one_torch_thread):
    spec = common.first_model_spec(digits)
    config_for = lambda epochs: common.default_train_config(epochs=epochs, batch_size=32, seed=0)   # noqa: E731
    lines: list[str] = []
    candidate, facts = bagging.fit_bag("default_network", "final fit of the default network", spec, config_for,
                                       digits, lambda: 60.0, folds=3, fold_epoch_s=5.0, seed=0, log=lines.append,
                                       max_repeats=1)
    assert candidate is not None and facts["folds"] == 3 and facts["repeats"] == 1 and len(facts["fold_models"]) == 3
    pooled = len(digits.train) + len(digits.val)
    assert sum(m["n_held"] for m in facts["fold_models"]) == pooled
    assert all(m["n_train"] + m["n_held"] == pooled and m["epochs"] >= 1 for m in facts["fold_models"])
    val_labels = digits.val.y.numpy()
    assert candidate.val_probs.shape == (len(digits.val), digits.n_classes)
    assert candidate.val_macro_f1 == pytest.approx(macro_f1(val_labels, candidate.val_probs.argmax(axis=1), 10))
    assert facts["oof_macro_f1"] > 0.5 and candidate.val_macro_f1 > 0.5       # the fold models learned
    assert np.allclose(candidate.test_probs.sum(axis=1), 1.0, atol=1e-4)
    models = 3 * facts["repeats"]
    assert candidate.architecture["kind"] == bagging.KIND and candidate.architecture["models"] == models
    assert {key.split(".")[0] for key in candidate.state_dict} == {f"member{i}" for i in range(models)}
    assert candidate.source == "default_network" and candidate.description.startswith("3-fold bag of")
    assert any("fold 3/3" in line for line in lines)


def test_a_fold_model_without_time_for_an_epoch_means_no_bag(digits, one_torch_thread):
    spec = common.first_model_spec(digits)
    config_for = lambda epochs: common.default_train_config(epochs=epochs, batch_size=32, seed=0)   # noqa: E731
    candidate, facts = bagging.fit_bag("default_network", "final fit", spec, config_for, digits, lambda: 0.0,
                                       folds=3, fold_epoch_s=1.0, seed=0, log=lambda s: None)
    assert candidate is None and "trained no epoch" in facts["reason"]


def test_time_left_after_a_round_buys_another_partition(digits, one_torch_thread):
    """Fold models of 2 epochs in a time that does
    not run out: a second round on a new partition follows, and its models join the bag."""
    spec = common.first_model_spec(digits)
    config_for = lambda epochs: common.default_train_config(epochs=min(epochs, 2), batch_size=32, seed=0)   # noqa: E731
    candidate, facts = bagging.fit_bag("default_network", "final fit", spec, config_for, digits, lambda: 1e4,
                                       folds=2, fold_epoch_s=1.0, seed=0, log=lambda s: None, max_repeats=2)
    assert facts["repeats"] == 2 and len(facts["fold_models"]) == 4
    assert {row["seed"] for row in facts["fold_models"]} == {0, 1}
    assert candidate.architecture["models"] == 4 and candidate.description.startswith("2-fold x 2 bag")


@pytest.mark.parametrize("bagging_mode", ["auto", "off"])
def test_the_final_fit_phase_delivers_a_bag_or_says_why_not(bagging_mode, digits, tmp_path, monkeypatch,
                                                            one_torch_thread):
    """final_fit.run on digits with fold models of 2 epochs (budget.plan.FINAL_EPOCHS patched): the bag is
    trained, offered, written as model.pt (loadable with weights_only) and enters the ensemble's library;
    with the option off, one final model and the reason."""
    import budget.plan
    from automl_pipeline.checkpoints import Checkpoints
    from automl_pipeline.delivery import Delivery
    from automl_pipeline.phases import final_fit
    from automl_pipeline.phases.context import RunContext
    from automl_pipeline.runlog import RunLog
    from automl_pipeline.search_options import SearchOptions
    from automl_pipeline.settings import Settings
    from budget import Budget

    monkeypatch.setattr(budget.plan, "FINAL_EPOCHS", 2)
    seconds = 16 if bagging_mode == "auto" else 5     # off: one model, whatever it trains in the time
    clock = Budget(seconds, margin_s=0)
    clock.plan([("final_fit", 1.0)])
    store = Checkpoints(tmp_path)
    store.dir.mkdir()
    log = RunLog(None, quiet=True, elapsed=clock.elapsed, remaining=clock.remaining)
    delivery = Delivery(tmp_path, predict_ids=[str(i) for i in range(len(digits.test))],
                        class_names=[str(c) for c in range(10)], log=log)
    settings = Settings(time_limit_s=60, output_dir=tmp_path, search=SearchOptions(bagging=bagging_mode))
    ctx = RunContext(settings=settings, budget=clock, data=digits, log=log, store=store, report={}, delivery=delivery)
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
    assert delivery.best.description == bag_name and not ctx.report["ensemble"]["delivered"]
    assert delivery.best.val_macro_f1 == pytest.approx(section["val_macro_f1"], abs=1e-4)
    model = torch.load(tmp_path / "model.pt", weights_only=True)
    assert model["spec"]["kind"] == bagging.KIND and len(model["spec"]["members"]) == 5 * section["repeats"]
    assert {key.split(".")[0] for key in model["state_dict"]} == {f"member{i}" for i in range(model["spec"]["models"])}
