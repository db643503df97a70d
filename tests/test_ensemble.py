"""The ensemble's selection on fixed probabilities (no training): greedy weights, logit adjustment,
the delivery rule against the best single model, and the phase that builds the candidate."""
import numpy as np
import pytest
import torch

from automl_pipeline import ensemble
from automl_pipeline.delivery import Candidate
from automl_pipeline.phases.ensemble import build_ensemble
from automl_pipeline.training.metrics import classification_metrics, macro_f1
from data_builders import random_run_data


def one_hot(labels, n_classes, confidence=0.9):
    probs = np.full((len(labels), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def experts(n_per_class=20, seed=0):
    """Three classes; candidate A is right on classes 0 and 1 only, B on 1 and 2 only, C is noise.
    Their mean (A + B) is right everywhere; no single model is."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    a_pred = np.where(labels == 2, 0, labels)
    b_pred = np.where(labels == 0, 2, labels)
    a = one_hot(a_pred, 3, 0.6)
    a[labels == 0, 0], a[labels == 0, 2] = 0.6, 0.35   # A hesitates between 0 and 2 where it is right
    b = one_hot(b_pred, 3, 0.6)
    b[labels == 2, 2], b[labels == 2, 0] = 0.6, 0.35
    a[labels == 2] = [0.5, 0.0, 0.5 - 1e-3]
    b[labels == 0] = [0.5 - 1e-3, 0.0, 0.5]
    noise = rng.dirichlet(np.ones(3), size=labels.size)
    return labels, [a, b, noise]


def test_macro_f1_matches_the_report_metric():
    rng = np.random.default_rng(1)
    for _ in range(50):
        y_true, y_pred = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        assert macro_f1(y_true, y_pred, 5) == pytest.approx(classification_metrics(y_true, y_pred, 5)["macro_f1"])


def test_greedy_selection_mixes_complementary_models_and_leaves_noise_out():
    labels, probs = experts()
    weights = ensemble.greedy_weights(probs, labels, 3)
    assert weights[2] == 0.0
    assert weights[0] > 0 and weights[1] > 0
    mixed = ensemble.combine(probs, ensemble.Ensemble(weights))
    assert macro_f1(labels, mixed.argmax(axis=1), 3) == 1.0
    assert max(macro_f1(labels, p.argmax(axis=1), 3) for p in probs) < 0.9


def test_greedy_selection_of_one_good_model_is_that_model():
    labels = np.repeat(np.arange(3), 10)
    good, bad = one_hot(labels, 3), one_hot((labels + 1) % 3, 3)
    assert ensemble.greedy_weights([bad, good], labels, 3) == (0.0, 1.0)


def test_logit_adjustment_recovers_the_rare_class():
    """A model biased towards the frequent class: dividing by the prior puts the rare class back."""
    labels = np.array([0] * 40 + [1] * 10)
    probs = np.tile([0.6, 0.4], (50, 1))
    probs[40:] = [0.55, 0.45]                     # the rare class is always under-called
    prior = np.array([0.8, 0.2])
    tau = ensemble.choose_tau(probs, labels, 2, prior)
    assert tau == 0.25              # the one strength of the grid that separates them (0.146 < tau < 0.29)
    assert ensemble.choose_tau(probs[:40], labels[:40], 2, prior) == 0.0   # nothing to gain: no adjustment
    adjusted = ensemble.combine([probs], ensemble.Ensemble((1.0,), tau), prior)
    assert macro_f1(labels, adjusted.argmax(axis=1), 2) == 1.0
    assert macro_f1(labels, probs.argmax(axis=1), 2) < 0.5


def test_should_adjust_only_imbalanced_training_data():
    assert ensemble.should_adjust(np.array([100, 10]))
    assert not ensemble.should_adjust(np.array([100, 90, 80]))


def _candidate(name, val_probs, test_probs, val_labels):
    return Candidate(source=name, description=name,
                     val_macro_f1=macro_f1(val_labels, val_probs.argmax(axis=1), 3),
                     predict_labels=test_probs.argmax(axis=1), test_predictions=test_probs.argmax(axis=1),
                     val_probs=val_probs, test_probs=test_probs, predict_probs=test_probs,
                     architecture={"kind": name}, config={}, state_dict={"w": torch.zeros(2)})


def test_the_phase_builds_a_loadable_ensemble_candidate_when_it_pays():
    labels, probs = experts(n_per_class=20)
    data = random_run_data(n=30, n_classes=3)
    data.val.y = torch.as_tensor(labels)
    pool = [_candidate(name, p, p, labels) for name, p in zip(("a", "b", "noise"), probs)]
    candidate, single, section = build_ensemble(pool, data)
    assert section["delivered"] is True
    assert {m["name"] for m in section["members"]} == {"a", "b"}
    assert candidate.val_macro_f1 == 1.0 > single.val_macro_f1
    assert candidate.architecture["kind"] == "ensemble" and len(candidate.architecture["members"]) == 2
    assert set(candidate.state_dict) == {"member0.w", "member1.w"}
    assert (candidate.predict_labels == labels).all()


def test_the_phase_passes_over_an_ensemble_that_does_not_pay():
    labels = np.repeat(np.arange(3), 20)
    data = random_run_data(n=30, n_classes=3)
    data.val.y = torch.as_tensor(labels)
    good = one_hot(labels, 3)
    pool = [_candidate("good", good, good, labels), _candidate("same", good.copy(), good, labels)]
    _, single, section = build_ensemble(pool, data)
    assert section["delivered"] is False and "reason" in section
    assert single.name == "good"


def test_validation_vs_heldout_ranks_the_candidates_on_both_splits():
    from automl_pipeline.delivery import validation_vs_heldout

    labels = np.array([0, 1, 2, 0, 1, 2])

    def candidate(name, val_f1, right):
        predictions = np.where(np.arange(labels.size) < right, labels, (labels + 1) % 3)
        return Candidate(source="x", description=name, val_macro_f1=val_f1, predict_labels=predictions,
                         test_predictions=predictions)

    agree = validation_vs_heldout([candidate("a", 0.9, 6), candidate("b", 0.5, 3), candidate("c", 0.1, 0)], labels, 3)
    assert agree["val_heldout_spearman"] == pytest.approx(1.0)
    assert [m["heldout_macro_f1"] for m in agree["models"]] == [1.0, pytest.approx(0.5, abs=0.2), 0.0]
    reverse = validation_vs_heldout([candidate("a", 0.1, 6), candidate("b", 0.5, 3), candidate("c", 0.9, 0)], labels, 3)
    assert reverse["val_heldout_spearman"] == pytest.approx(-1.0)
    assert validation_vs_heldout([candidate("a", 0.1, 6), candidate("b", 0.5, 3)], labels, 3)["val_heldout_spearman"] is None
