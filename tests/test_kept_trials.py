"""Nothing trained is thrown away: a trial at the largest budget keeps its weights by config id, and the
BOHB phase turns the best of them into deliverable candidates (hpbandster itself keeps no weights);
the rung rank correlation that says whether a rung ranks noise."""
import dataclasses

import numpy as np
import torch

from automl_pipeline.bohb.results import (RUNG_EVIDENCE_CONFIGS, BohbResult, TrialRecord, first_ranking_rung,
                                          rung_rank_correlations)
from automl_pipeline.bohb.worker import TrialContext, build_trial_network, evaluate_config, trial_weights_name
from automl_pipeline.phases.hyperparameters import kept_trial_candidates
from automl_pipeline.training import predict_proba
from data_builders import random_run_data

CONFIG = {"n_cells": 1, "base_channels": 8, "lr": 1e-2, "flip": False}


def trial_context(data, tmp_path, keep_from_budget):
    return TrialContext(train=data.train, val=data.val, n_classes=data.n_classes, in_channels=data.in_channels,
                        image_side=data.image_side, weights_dir=tmp_path, keep_from_budget=keep_from_budget)


def record(config_id, budget, f1, config=CONFIG, epochs=1):
    return TrialRecord(config_id=config_id, config=dict(config), budget=budget, loss=1 - f1, val_macro_f1=f1,
                       evaluated=True, error=None, epochs_done=epochs, stopped_by_deadline=False, seconds=1.0,
                       worker=None, t_s=0.0, model_based_pick=False)


def test_only_top_budget_trials_name_a_weights_file(tmp_path):
    ctx = trial_context(random_run_data(n=32), tmp_path, keep_from_budget=3.0)
    assert ctx.weights_path((0, 0, 1), 1.0) is None
    assert ctx.weights_path((0, 0, 1), 3.0) == tmp_path / trial_weights_name((0, 0, 1), 3.0)
    assert trial_weights_name((0, 0, 1), 3.0) != trial_weights_name((0, 0, 2), 3.0)
    remote = TrialContext(train=ctx.train, val=ctx.val, n_classes=4, in_channels=1, image_side=8)
    assert remote.weights_path((0, 0, 1), 3.0) is None


def test_a_kept_trial_becomes_a_candidate_with_the_trials_own_weights(tmp_path):
    """The candidate's validation probabilities are those of the trained trial, not of a fresh network."""
    data = random_run_data(n=64, side=8, n_classes=4)
    ctx = trial_context(data, tmp_path, keep_from_budget=1.0)
    path = ctx.weights_path((0, 0, 0), 1.0)
    result = evaluate_config(CONFIG, 1.0, ctx, lambda: 60.0, weights_path=path)
    assert result["info"]["evaluated"] and result["info"]["weights"] == path.name
    saved = torch.load(path, weights_only=True)

    trained = build_trial_network(CONFIG, ctx)
    trained.load_state_dict(saved)
    expected = predict_proba(trained, data.val.x)
    fresh = predict_proba(build_trial_network(CONFIG, ctx), data.val.x)
    assert not np.allclose(expected, fresh, atol=1e-4)

    trials = [record((0, 0, 0), 1.0, result["info"]["val_macro_f1"]), record((0, 0, 1), 1.0, 0.0)]
    bohb = BohbResult(incumbent_config=CONFIG, incumbent_val_macro_f1=trials[0].val_macro_f1, incumbent_budget=1.0,
                      min_budget=1.0, max_budget=1.0, eta=3.0, trials=trials, configs_sampled=2,
                      model_based_picks=0, model_min_trials=10, trajectory=[], seconds=1.0, n_workers=1,
                      clean_shutdown=True)
    (candidate,) = kept_trial_candidates(bohb, data, None, tmp_path)   # the second trial saved no weights
    assert candidate.source == "bohb_trial"
    np.testing.assert_allclose(candidate.val_probs, expected, atol=1e-5)
    assert candidate.state_dict.keys() == saved.keys()


def test_only_the_best_kept_trials_keep_their_files(tmp_path):
    data = random_run_data(n=32, side=8, n_classes=4)
    ctx = trial_context(data, tmp_path, keep_from_budget=1.0)
    trials = []
    for i, f1 in enumerate((0.1, 0.5, 0.3, 0.4, 0.2)):
        path = ctx.weights_path((0, 0, i), 1.0)
        torch.save(build_trial_network(CONFIG, ctx).state_dict(), path)
        trials.append(record((0, 0, i), 1.0, f1))
    bohb = BohbResult(incumbent_config=CONFIG, incumbent_val_macro_f1=0.5, incumbent_budget=1.0, min_budget=1.0,
                      max_budget=1.0, eta=3.0, trials=trials, configs_sampled=5, model_based_picks=0,
                      model_min_trials=10, trajectory=[], seconds=1.0, n_workers=1, clean_shutdown=True)
    candidates = kept_trial_candidates(bohb, data, None, tmp_path, keep=2)
    assert len(candidates) == 2
    assert sorted(p.name for p in tmp_path.glob("trial_*.pt")) == sorted(
        trial_weights_name((0, 0, i), 1.0) for i in (1, 3))


def test_rung_rank_correlation_tells_a_ranking_rung_from_noise():
    ids = [(0, 0, i) for i in range(6)]
    low = [record(c, 1.0, f) for c, f in zip(ids, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6))]
    agreeing = [record(c, 3.0, f + 0.2) for c, f in zip(ids, (0.1, 0.2, 0.3, 0.4, 0.5, 0.6))]
    reversed_ = [record(c, 3.0, f) for c, f in zip(ids, (0.6, 0.5, 0.4, 0.3, 0.2, 0.1))]
    (row,) = rung_rank_correlations(low + agreeing, [1.0, 3.0])
    assert row == {"budgets": [1.0, 3.0], "n_configs": 6, "spearman": 1.0}
    (row,) = rung_rank_correlations(low + reversed_, [1.0, 3.0])
    assert row["spearman"] == -1.0
    assert rung_rank_correlations(low[:2] + agreeing[:2], [1.0, 3.0])[0]["spearman"] is None   # too few

    result = BohbResult(incumbent_config=CONFIG, incumbent_val_macro_f1=0.6, incumbent_budget=3.0, min_budget=1.0,
                        max_budget=3.0, eta=3.0, trials=low + reversed_, configs_sampled=6, model_based_picks=1,
                        model_min_trials=10, trajectory=[], seconds=1.0, n_workers=1, clean_shutdown=True)
    assert "ranks noise" in result.rank_warning() and "raise min_budget" in result.rank_warning()
    assert result.report()["rung_rank_correlation"][0]["spearman"] == -1.0
    raised = dataclasses.replace(result, raised_min_budget=[
        {"iteration": 2, "from_budget": 1.0, "to_budget": 3.0, "evidence": [row]}])
    assert "raise min_budget" not in raised.rank_warning()   # the search already did
    assert "later brackets started at 3 epochs" in raised.rank_warning()


def test_a_rung_is_passed_over_only_on_enough_evidence_of_noise():
    row = lambda rho, n: {"budgets": [1.0, 3.0], "n_configs": n, "spearman": rho}   # noqa: E731
    assert first_ranking_rung([row(-0.5, RUNG_EVIDENCE_CONFIGS), row(0.8, 5)]) == 1
    assert first_ranking_rung([row(-0.5, RUNG_EVIDENCE_CONFIGS - 1), row(0.8, 5)]) == 0   # too few configurations
    assert first_ranking_rung([row(0.5, 20), row(-1.0, 20)]) == 0          # the lowest rung ranks: start there
    assert first_ranking_rung([row(None, 20), row(-1.0, 20)]) == 0
    assert first_ranking_rung([row(0.1, 9), row(0.0, 9)]) == 2             # both lower rungs rank noise
    assert first_ranking_rung([]) == 0
