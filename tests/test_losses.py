"""Tests for automl_pipeline.training.losses: the loss contract and logit adjustment."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from automl_pipeline.training import LogitAdjustedLoss, class_prior, make_loss
from automl_pipeline.training.losses import LOSS_KINDS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COUNTS = np.array([10, 30, 60])


def random_batch(n: int = 32, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_loss_contract(kind):
    """Every loss: a finite scalar with finite gradients, lower for confident right answers."""
    logits, target = random_batch()
    logits.requires_grad_(True)
    loss = make_loss(kind, COUNTS)(logits, target)
    loss.backward()
    assert loss.shape == () and torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    right = 10 * F.one_hot(target, 3).float()
    wrong = 10 * F.one_hot((target + 1) % 3, 3).float()
    assert make_loss(kind, COUNTS)(right, target) < make_loss(kind, COUNTS)(wrong, target)


def test_class_prior_treats_zero_count_as_one():
    np.testing.assert_allclose(class_prior(np.array([0, 1, 2])), [0.25, 0.25, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        class_prior(np.array([1, -1]))


def test_logit_adjusted_tau_zero_is_cross_entropy():
    logits, target = random_batch()
    assert torch.equal(LogitAdjustedLoss(COUNTS, tau=0.0)(logits, target), F.cross_entropy(logits, target))


def test_logit_adjusted_balanced_counts_is_cross_entropy():
    logits, target = random_batch()
    loss = LogitAdjustedLoss(np.array([7, 7, 7]), tau=2.0)(logits, target)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_logit_adjusted_hand_formula(tau):
    logits, target = random_batch()
    prior = torch.tensor([0.1, 0.3, 0.6])
    expected = F.cross_entropy(logits + tau * prior.log(), target)
    torch.testing.assert_close(LogitAdjustedLoss(COUNTS, tau=tau)(logits, target), expected)


def test_logit_adjusted_tau_one_is_balanced_softmax():
    """Ren et al. 2020: -log(n_y exp(z_y) / sum_j n_j exp(z_j))."""
    logits, target = random_batch()
    n = torch.tensor(COUNTS, dtype=torch.float32)
    weighted = n * logits.exp()
    expected = -(weighted.gather(1, target[:, None]).squeeze(1) / weighted.sum(dim=1)).log().mean()
    torch.testing.assert_close(LogitAdjustedLoss(COUNTS, tau=1.0)(logits, target), expected)


def test_logit_adjusted_validates_and_is_made_by_make_loss():
    with pytest.raises(ValueError, match="tau"):
        LogitAdjustedLoss(COUNTS, tau=-1.0)
    loss = make_loss("logit_adjusted", COUNTS, tau=0.5)
    assert isinstance(loss, LogitAdjustedLoss) and loss.tau == 0.5
    torch.testing.assert_close(loss.adjustment, 0.5 * torch.tensor([0.1, 0.3, 0.6]).log())
    assert torch.isfinite(LogitAdjustedLoss(np.array([0, 5, 20])).adjustment).all()


def _train_linear(loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Linear:
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    return model


def test_logit_adjustment_helps_the_minority_class():
    """Two unit gaussians 2 apart, 20:1 imbalance. Plain CE moves the boundary towards the
    minority (minority recall ~0.3); logit adjustment keeps it near the middle (~0.84)."""
    g = torch.Generator().manual_seed(0)

    def blobs(n_major: int, n_minor: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n_major + n_minor, 2, generator=g)
        x[n_major:, 0] += 2.0
        return x, torch.cat([torch.zeros(n_major, dtype=torch.int64), torch.ones(n_minor, dtype=torch.int64)])

    x, y = blobs(2000, 100)
    x_test, y_test = blobs(1000, 1000)
    counts = np.bincount(y.numpy())

    def recalls(loss_fn: nn.Module) -> np.ndarray:
        model = _train_linear(loss_fn, x, y)
        with torch.no_grad():
            pred = model(x_test).argmax(dim=1)
        return np.array([(pred[y_test == c] == c).float().mean().item() for c in (0, 1)])

    ce, adjusted = recalls(make_loss("ce", counts)), recalls(make_loss("logit_adjusted", counts))
    assert ce[1] < 0.5 < 0.7 < adjusted[1]
    assert adjusted.mean() > ce.mean() + 0.1           # balanced accuracy


def test_focal_settings_come_from_losses_only():
    """FOCAL_GAMMA and CLASS_WEIGHT_SMOOTHING are defined in training.losses and nowhere else: the
    loss factory, TrainConfig and BOHB's fixed settings all train with them."""
    from automl_pipeline.bohb import worker
    from automl_pipeline.training import TrainConfig, class_weights
    from automl_pipeline.training.losses import CLASS_WEIGHT_SMOOTHING, FOCAL_GAMMA

    focal = make_loss("focal", COUNTS)
    assert focal.gamma == FOCAL_GAMMA
    np.testing.assert_allclose(focal.weight.numpy(), class_weights(COUNTS, CLASS_WEIGHT_SMOOTHING))
    default = TrainConfig(epochs=1)
    assert (default.focal_gamma, default.class_weight_smoothing) == (FOCAL_GAMMA, CLASS_WEIGHT_SMOOTHING)
    trial = worker.config_to_train_config({"lr": 1e-3, "loss": "focal"}, 1, 0, batch_size=8)
    assert (trial.focal_gamma, trial.class_weight_smoothing) == (FOCAL_GAMMA, CLASS_WEIGHT_SMOOTHING)
    assert "FOCAL_GAMMA =" not in open(worker.__file__).read()
