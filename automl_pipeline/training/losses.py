"""Class-imbalance aware losses: class weights, focal loss, logit adjustment, and the loss factory."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOSS_KINDS = ("ce", "weighted_ce", "focal", "logit_adjusted")
# The package's focal loss: gamma and the class-weight smoothing (TrainConfig's defaults, BOHB's fixed
# settings, the default network's training and DARTS' loss all take them from here).
FOCAL_GAMMA = 3.0
CLASS_WEIGHT_SMOOTHING = 0.8


def class_prior(counts: np.ndarray) -> np.ndarray:
    """Class frequencies counts / sum(counts), a count of 0 treated as 1 (every frequency > 0).
    Returns float64 of shape (n_classes,)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty 1-D array, got shape {counts.shape}")
    if np.any(counts < 0):
        raise ValueError("counts must be non-negative")
    safe = np.maximum(counts, 1.0)
    return safe / safe.sum()


def class_weights(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """Per-class weights w_c = ((1/freq_c) / mean(1/freq)) ** smoothing, normalised to mean 1.

    smoothing 0 -> all ones; 1 -> inverse frequency. Frequencies are class_prior(counts): a
    class with count 0 counts as 1 (it never occurs as a target, so its weight only matters
    for the normalisation; this keeps every weight finite). Returns float32 of shape (n_classes,).
    """
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    inv = 1.0 / class_prior(counts)
    w = (inv / inv.mean()) ** smoothing
    return (w / w.mean()).astype(np.float32)


class FocalLoss(nn.Module):
    """Multi-class focal loss: -w_y (1 - p_y)^gamma log p_y.

    Mean-reduced like torch's weighted cross-entropy: sum(w_y * loss) / sum(w_y)
    (plain mean without weights), so gamma=0 is exactly F.cross_entropy(weight=...).
    Computed in float32 whatever the logits' dtype.
    """

    def __init__(self, gamma: float = FOCAL_GAMMA, weight: torch.Tensor | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.gamma == 0.0:
            return F.cross_entropy(logits, target, weight=self.weight)
        logp_y = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - logp_y.exp()).clamp_min(0.0) ** self.gamma) * logp_y
        if self.weight is None:
            return loss.mean()
        w = self.weight[target]
        return (w * loss).sum() / w.sum()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, weighted={self.weight is not None}"


class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted cross-entropy (Menon et al., ICLR 2021): CE(logits + tau * log prior, y)
    with prior = class_prior(counts); tau 0 is plain CE, tau 1 is Balanced Softmax (Ren et al.
    2020). The adjustment exists only in training: the plain argmax of the model's logits is
    the balanced prediction. Computed in float32 whatever the logits' dtype.
    """

    def __init__(self, counts: np.ndarray, tau: float = 1.0):
        super().__init__()
        if tau < 0:
            raise ValueError(f"logit adjustment tau must be >= 0, got {tau}")
        self.tau = float(tau)
        adjustment = self.tau * np.log(class_prior(counts))
        self.register_buffer("adjustment", torch.as_tensor(adjustment, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float() + self.adjustment, target)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"


def make_loss(kind: str, counts: np.ndarray, *, gamma: float = FOCAL_GAMMA, smoothing: float = CLASS_WEIGHT_SMOOTHING,
              tau: float = 1.0, device: torch.device | str = "cpu") -> nn.Module:
    """"ce" (unweighted) | "weighted_ce" | "focal" | "logit_adjusted". weighted_ce and focal weight
    classes with class_weights(counts, smoothing) (smoothing 0 = no weighting); logit_adjusted is
    LogitAdjustedLoss(counts, tau), unweighted."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSS_KINDS}")
    if kind == "logit_adjusted":
        return LogitAdjustedLoss(counts, tau).to(device)
    weight = None
    if kind != "ce" and smoothing > 0:
        weight = torch.as_tensor(class_weights(counts, smoothing), device=device)
    if kind == "focal":
        return FocalLoss(gamma, weight).to(device)
    return nn.CrossEntropyLoss(weight=weight).to(device)
