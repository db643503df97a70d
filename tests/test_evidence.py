"""The bag against the validation split's choice (phases/evidence.py) on fixed probabilities, and the paired
bootstrap it decides with (training.metrics.paired_bootstrap_win_rate)."""
import numpy as np
import pytest
import torch

from automl_pipeline.delivery import Candidate
from automl_pipeline.training.metrics import macro_f1, paired_bootstrap_win_rate

N_CLASSES = 3


def noisy(labels, right, seed):
    """Predictions equal to `labels` on a `right` share of the images, a wrong class elsewhere."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(labels.size) >= right
    return np.where(wrong, (labels + 1 + rng.integers(0, N_CLASSES - 1, labels.size)) % N_CLASSES, labels)


def test_the_bootstrap_win_rate_is_a_half_for_equals_near_one_for_a_clear_lead_and_complementary():
    labels = np.repeat(np.arange(N_CLASSES), 40)
    good, poor = noisy(labels, 0.9, seed=1), noisy(labels, 0.5, seed=2)
    assert paired_bootstrap_win_rate(labels, good, good, N_CLASSES, resamples=500, seed=0) == 0.5
    assert paired_bootstrap_win_rate(labels, good, poor, N_CLASSES, resamples=500, seed=0) > 0.99
    close = noisy(labels, 0.85, seed=3)
    ab = paired_bootstrap_win_rate(labels, good, close, N_CLASSES, resamples=500, seed=0)
    ba = paired_bootstrap_win_rate(labels, close, good, N_CLASSES, resamples=500, seed=0)
    assert ab + ba == pytest.approx(1.0) and 0.05 < ab < 0.95      # a small lead on 120 images is not sure


def test_ties_count_half_and_only_a_resample_holding_the_difference_is_a_win():
    """Class 2 has one image, which `a` gets right and `b` wrong, and they agree on every other image: a
    resample that leaves that image out is a tie, one that draws it a win for a; so the rate is
    P(drawn) + P(not drawn) / 2, with P(not drawn) = (1 - 1/61) ** 61."""
    labels = np.array([0] * 30 + [1] * 30 + [2])
    a = labels.copy()
    b = labels.copy()
    b[-1] = 0
    expected = 1 - (1 - 1 / 61) ** 61 / 2
    assert paired_bootstrap_win_rate(labels, a, b, N_CLASSES, resamples=4000, seed=1) == pytest.approx(expected, abs=0.02)


def one_hot(predictions):
    probs = np.full((predictions.size, N_CLASSES), 0.1 / (N_CLASSES - 1))
    probs[np.arange(predictions.size), predictions] = 0.9
    return probs.astype(np.float32)


def candidate(name, val_pred, val_labels, *, kind, oof_macro_f1=0.8):
    probs = one_hot(val_pred)
    test_pred = np.full(8, {"bag": 0, "single": 1}.get(kind, 2))     # tells the delivered model by its predictions
    return Candidate(source=name, description=name, val_macro_f1=macro_f1(val_labels, val_pred, N_CLASSES),
                     predict_labels=test_pred, test_predictions=test_pred, val_probs=probs,
                     test_probs=one_hot(test_pred), predict_probs=one_hot(test_pred),
                     architecture={"kind": kind}, config={}, state_dict={"w": torch.zeros(2)},
                     oof_macro_f1=oof_macro_f1 if kind == "bag" else None)


def run_evidence(tmp_path, pool_and_order):
    """evidence.run after the candidates were offered in this order; returns (ctx, delivery)."""
    from automl_pipeline.checkpoints import Checkpoints
    from automl_pipeline.delivery import Delivery
    from automl_pipeline.phases import evidence
    from automl_pipeline.phases.context import RunContext
    from automl_pipeline.runlog import RunLog
    from automl_pipeline.settings import Settings
    from budget import Budget, FakeClock
    from data_builders import random_run_data

    clock = Budget(60, clock=FakeClock(), margin_s=0)
    store = Checkpoints(tmp_path)
    store.dir.mkdir()
    log = RunLog(None, quiet=True, elapsed=clock.elapsed, remaining=clock.remaining)
    delivery = Delivery(tmp_path, predict_ids=[str(i) for i in range(8)], class_names=["a", "b", "c"], log=log)
    data = random_run_data(n=30, n_classes=N_CLASSES)
    data.val.y = torch.as_tensor(VAL_LABELS)
    ctx = RunContext(settings=Settings(time_limit_s=60, output_dir=tmp_path), budget=clock, data=data, log=log,
                     store=store, report={}, delivery=delivery)
    for c in pool_and_order:
        ctx.deliver(c)
    evidence.run(ctx)
    return ctx, delivery


VAL_LABELS = np.repeat(np.arange(N_CLASSES), 40)


def delivered_predictions(tmp_path):
    return np.load(tmp_path / "predictions.npy", allow_pickle=False)


def wrong_on(index):
    """VAL_LABELS with the images at `index` given the next class."""
    predictions = VAL_LABELS.copy()
    predictions[index] = (VAL_LABELS[index] + 1) % N_CLASSES
    return predictions


def test_a_validation_lead_inside_the_noise_gives_the_delivery_to_the_bag(tmp_path):
    """Both wrong on the same 20 images; the bag on 6 more, the single model on 3 others: a lead of 3 images
    of 120 (validation macro-F1 0.808 against 0.792), ahead in about 75 % of resamples."""
    both = np.arange(0, 120, 6)
    bag = candidate("bag", wrong_on(np.r_[both, [1, 41, 81, 2, 42, 82]]), VAL_LABELS, kind="bag")
    single = candidate("single", wrong_on(np.r_[both, [3, 43, 83]]), VAL_LABELS, kind="single")
    assert single.val_macro_f1 > bag.val_macro_f1             # the validation split alone would keep `single`
    ctx, delivery = run_evidence(tmp_path, [bag, single])
    section = ctx.report["evidence"]
    assert delivery.best is bag and delivery.runner_up is single, section
    assert section["delivered"] == "bag" and section["win_rate"] < 0.95 and "bag delivered instead" in section["reason"]
    assert section["bag_oof_macro_f1"] == 0.8
    assert (delivered_predictions(tmp_path) == 0).all()      # the bag's predictions are on disk
    assert torch.load(tmp_path / "model.pt", weights_only=True)["spec"]["kind"] == "bag"
    from automl_pipeline.reporting.markdown import render_report_md

    ctx.report["ensemble"] = {"status": "skipped", "reason": "nothing to mix"}
    assert "Against the k-fold bag: the bag delivered instead of single" in render_report_md(ctx.report, tmp_path)


def test_a_clear_validation_lead_keeps_the_validation_choice(tmp_path):
    bag = candidate("bag", noisy(VAL_LABELS, 0.55, seed=8), VAL_LABELS, kind="bag")
    single = candidate("single", noisy(VAL_LABELS, 0.95, seed=9), VAL_LABELS, kind="single")
    ctx, delivery = run_evidence(tmp_path, [bag, single])
    section = ctx.report["evidence"]
    assert delivery.best is single and delivery.runner_up is None
    assert section["delivered"] == "single" and section["win_rate"] >= 0.95 and "kept over the bag" in section["reason"]
    assert (delivered_predictions(tmp_path) == 1).all()


def test_without_a_bag_or_when_the_bag_leads_nothing_changes(tmp_path):
    single = candidate("single", noisy(VAL_LABELS, 0.8, seed=10), VAL_LABELS, kind="single")
    (tmp_path / "none").mkdir()
    ctx, delivery = run_evidence(tmp_path / "none", [single])
    assert delivery.best is single and ctx.report["evidence"]["status"] == "skipped"
    bag = candidate("bag", noisy(VAL_LABELS, 0.9, seed=11), VAL_LABELS, kind="bag")
    (tmp_path / "lead").mkdir()
    ctx, delivery = run_evidence(tmp_path / "lead", [single, bag])
    assert delivery.best is bag and ctx.report["evidence"]["delivered"] == "bag"
    assert "also the validation split's choice" in ctx.report["evidence"]["reason"]


def test_of_several_bags_the_best_out_of_fold_one_is_weighed_and_delivered(tmp_path):
    """Two bags on the same folds: the one whose out-of-fold macro-F1 over every pooled image is higher is
    the bag, though it was offered later and leads nobody on the validation split; the single model's
    lead over it is inside the noise, so it is delivered."""
    both = np.arange(0, 120, 6)
    first = candidate("bag 1", wrong_on(np.r_[both, [1, 41, 81]]), VAL_LABELS, kind="bag", oof_macro_f1=0.70)
    single = candidate("single", wrong_on(np.r_[both, [3, 43, 83, 4]]), VAL_LABELS, kind="single")
    second = candidate("bag 2", wrong_on(np.r_[both, [5, 45, 85, 7, 47, 87]]), VAL_LABELS, kind="bag",
                       oof_macro_f1=0.75)
    ctx, delivery = run_evidence(tmp_path, [first, single, second])
    section = ctx.report["evidence"]
    assert section["bag"] == "bag 2" and section["bag_oof_macro_f1"] == 0.75, section
    assert delivery.best is second and section["delivered"] == "bag 2"
