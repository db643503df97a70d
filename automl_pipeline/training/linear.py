"""The classical first candidate: multinomial logistic regression on the pixels.

Fitted full-batch with torch's L-BFGS (a second or two on ~1,000-10,000 small images, where
scikit-learn's lbfgs took 5-30 s on the same 2-core machine), checking the clock before each
iteration so that it always ends inside its time. Its network is `nn.Sequential(Flatten, Linear)`,
so it is stored, loaded and predicted like every other candidate.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from automl_pipeline.training.losses import class_weights
from automl_pipeline.training.tensors import TensorData

# L2 penalty on the weights (added to the mean loss): of 1e-4 / 1e-3 / 1e-2, 1e-3 scored best on digits
# (held-out macro-F1 0.923 / 0.914 at 1e-2) and within 0.002 of the best on a 5k Fashion-MNIST subset.
L2 = 1e-3
MAX_ITERATIONS = 100
# Class weights (inverse frequency ** smoothing) for the loss, as the networks' default.
CLASS_WEIGHT_SMOOTHING = 1.0


def linear_network(in_features: int, n_classes: int) -> nn.Sequential:
    """The logistic regression as a network: flatten, then one linear layer."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, n_classes))


def fit_logistic(train: TensorData, n_classes: int, *, time_left: Callable[[], float],
                 train_counts: np.ndarray | None = None, max_iterations: int = MAX_ITERATIONS,
                 l2: float = L2, seed: int = 0) -> nn.Sequential:
    """Fit a logistic regression to `train` (class-weighted when `train_counts` is given) until it
    converges, `max_iterations` pass, or `time_left()` cannot hold another iteration."""
    torch.manual_seed(seed)
    x = train.x.flatten(1)
    model = linear_network(x.shape[1], n_classes).to(x.device)
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    weight = None
    if train_counts is not None:
        weight = torch.as_tensor(class_weights(train_counts, CLASS_WEIGHT_SMOOTHING), dtype=torch.float32,
                                 device=x.device)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=1, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model(x), train.y) + 0.5 * l2 * model[1].weight.pow(2).sum()
        loss.backward()
        return loss

    slowest, previous = 0.0, None
    for _ in range(max_iterations):
        if time_left() < 1.5 * slowest:
            break
        start = time.perf_counter()
        loss = float(optimizer.step(closure).detach())
        slowest = max(slowest, time.perf_counter() - start)
        if previous is not None and abs(previous - loss) < 1e-6 * max(1.0, abs(previous)):
            break
        previous = loss
    return model.eval()
