"""Tests for automl_pipeline.training: weights, losses, metrics, augmentation, the loop, prediction."""
from __future__ import annotations

import contextlib
import json
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

from automl_pipeline.search_space import DEFAULT_GENOTYPE, NetworkSpec, build_network
from automl_pipeline.training import (
    FocalLoss, TensorData, TrainConfig, augment_batch, autocast_context, class_weights,
    classification_metrics, configure_threads, make_loss, predict, predict_proba, resolve_device,
    surrogate_beta, train_model, warm_up,
)

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def forever() -> float:
    return 1e9


# ---------------------------------------------------------------- synthetic data / models

def make_patterns(n_per_class: int, seed: int) -> TensorData:
    """3 separable classes of 1x8x8 images: horizontal stripes, vertical stripes, checkerboard."""
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(8)
    templates = torch.stack([
        (i[:, None] % 2).expand(8, 8), (i[None, :] % 2).expand(8, 8), (i[:, None] + i[None, :]) % 2,
    ]).float() * 2 - 1
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = templates[y][:, None] + 0.3 * torch.randn(len(y), 1, 8, 8, generator=g)
    return TensorData(x=x, y=y)


class TinyCNN(nn.Module):
    def __init__(self, n_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, n_classes)
        self.train_forwards = 0
        self.broken = False
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        if self.training:
            self.train_forwards += 1
        h = F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        out = self.fc(h)
        return out * 0.0 if self.broken else out


class BetaRecorder(TinyCNN):
    """Records every set_surrogate_beta call (`betas`) and the beta each training forward ran with
    (`train_betas`)."""

    def __init__(self):
        super().__init__()
        self.betas: list[float] = []
        self.beta = 0.0
        self.train_betas: list[float] = []

    def set_surrogate_beta(self, beta: float) -> None:
        self.betas.append(beta)
        self.beta = beta

    def forward(self, x):
        if self.training:
            self.train_betas.append(self.beta)
        return super().forward(x)


def quick_config(**kw) -> TrainConfig:
    base = dict(epochs=6, batch_size=16, lr=0.03, loss="ce", augment=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


# ---------------------------------------------------------------- device

def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_configure_threads_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        n = configure_threads()
        assert n >= 1 and torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)


def test_warm_up_steps_both_optimisers_and_returns_the_seconds_it_took(monkeypatch):
    """warm_up pays the one-time costs of training up front: it builds and steps the optimisers the
    training loops use (AdamW, SGD) on the device, with gradients, and says how long that took."""
    stepped = []

    def spy(base):
        class Spy(base):
            def step(self, *args, **kwargs):
                params = [p for group in self.param_groups for p in group["params"]]
                stepped.append((base.__name__, {p.device.type for p in params}, all(p.grad is not None for p in params)))
                return super().step(*args, **kwargs)
        return Spy

    monkeypatch.setattr(torch.optim, "AdamW", spy(torch.optim.AdamW))
    monkeypatch.setattr(torch.optim, "SGD", spy(torch.optim.SGD))
    start = time.perf_counter()
    seconds = warm_up(CPU)
    outside = time.perf_counter() - start
    assert sorted(stepped) == [("AdamW", {"cpu"}, True), ("SGD", {"cpu"}, True)], stepped
    assert 0.0 < seconds <= outside and outside - seconds < 0.05, (seconds, outside)


def test_autocast_is_noop_on_cpu():
    assert isinstance(autocast_context(CPU), contextlib.nullcontext)


# ---------------------------------------------------------------- class weights and losses

def test_class_weights_hand_example():
    counts = np.array([10, 30, 60])
    np.testing.assert_allclose(class_weights(counts, 0.0), [1, 1, 1])
    # inverse frequency is proportional to 1/10 : 1/30 : 1/60 = 6 : 2 : 1, mean 3
    np.testing.assert_allclose(class_weights(counts, 1.0), [2.0, 2 / 3, 1 / 3], rtol=1e-6)
    half = class_weights(counts, 0.5)
    np.testing.assert_allclose(half, np.sqrt([6, 2, 1]) / np.sqrt([6, 2, 1]).mean(), rtol=1e-6)
    assert half.dtype == np.float32 and abs(half.mean() - 1) < 1e-6


def test_class_weights_zero_count_is_finite():
    w = class_weights(np.array([0, 5, 20]), 1.0)
    assert np.all(np.isfinite(w)) and abs(w.mean() - 1) < 1e-6
    assert w[0] > w[1] > w[2]          # count 0 is treated as count 1: the rarest class
    with pytest.raises(ValueError):
        class_weights(np.array([1, 2]), 1.5)


@pytest.mark.parametrize("weighted", [False, True])
def test_focal_gamma_zero_is_cross_entropy(weighted):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 5, generator=g)
    target = torch.randint(0, 5, (32,), generator=g)
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.2]) if weighted else None
    expected = F.cross_entropy(logits, target, weight=weight)
    assert torch.equal(FocalLoss(0.0, weight)(logits, target), expected)
    # the general formula agrees too (gamma tiny but not the gamma=0 shortcut)
    torch.testing.assert_close(FocalLoss(1e-12, weight)(logits, target), expected)


def test_focal_down_weights_easy_examples():
    target = torch.tensor([0])
    easy, hard = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    focal, ce = FocalLoss(2.0), nn.CrossEntropyLoss()
    ratio_easy = focal(easy, target) / ce(easy, target)
    ratio_hard = focal(hard, target) / ce(hard, target)
    assert ratio_easy < 0.01 < ratio_hard < 1.0


def test_make_loss_kinds():
    counts = np.array([10, 30, 60])
    assert isinstance(make_loss("ce", counts, device=CPU), nn.CrossEntropyLoss)
    assert make_loss("ce", counts, device=CPU).weight is None
    wce = make_loss("weighted_ce", counts, smoothing=1.0, device=CPU)
    np.testing.assert_allclose(wce.weight.numpy(), class_weights(counts, 1.0))
    focal = make_loss("focal", counts, gamma=2.0, smoothing=0.8, device=CPU)
    assert isinstance(focal, FocalLoss) and focal.gamma == 2.0
    np.testing.assert_allclose(focal.weight.numpy(), class_weights(counts, 0.8))
    assert make_loss("focal", counts, smoothing=0.0, device=CPU).weight is None
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge", counts, device=CPU)


# ---------------------------------------------------------------- metrics

def test_metrics_hand_example_with_absent_class():
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y_true, y_pred, n_classes=4)    # class 3 never occurs
    # class 0: P=1/2 R=1/2 F=.5; class 1: P=2/3 R=1 F=.8; class 2: 0; class 3: absent from y_true, unscored
    assert m["per_class_f1"][3] is None
    np.testing.assert_allclose(m["per_class_f1"][:3], [0.5, 0.8, 0.0])
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    json.dumps(m)   # plain Python numbers only


def test_macro_f1_is_sklearns_over_the_classes_present_in_the_labels():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y_true = rng.choice([0, 2, 3], size=60)          # classes 1 and 4 never occur in the labels
    y_pred = rng.integers(0, 5, size=60)             # ... but are predicted
    m = classification_metrics(y_true, y_pred, n_classes=5)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 2, 3], average="macro"))
    assert [v is None for v in m["per_class_f1"]] == [False, True, False, False, True]
    assert classification_metrics([], [], n_classes=2)["per_class_f1"] == [None, None]


# ---------------------------------------------------------------- augmentation

def _is_crop_of(img: torch.Tensor, padded: torch.Tensor) -> bool:
    _, h, w = img.shape
    ph, pw = padded.shape[1] - h, padded.shape[2] - w
    return any(torch.equal(padded[:, dy:dy + h, dx:dx + w], img)
               for dy in range(ph + 1) for dx in range(pw + 1))


def test_augment_batch_shape_determinism_and_change():
    x = torch.randn(16, 3, 16, 16)
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    c = augment_batch(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)
    assert (a != x).flatten(1).any(dim=1).float().mean() > 0.5     # most images changed


@pytest.mark.parametrize("flip", [False, True])
def test_augment_batch_is_crop_of_padded_image(flip):
    x = torch.randn(12, 2, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), flip=flip, padding_mode="zeros")
    padded = F.pad(x, (1, 1, 1, 1))                                 # pad = max(1, 8 // 8)
    for img, pad in zip(out, padded):
        ok = _is_crop_of(img, pad) or (flip and _is_crop_of(img, pad.flip(-1)))
        assert ok
    if flip:     # some image was mirrored: only a mirrored crop explains it
        assert any(not _is_crop_of(img, pad) for img, pad in zip(out, padded))


# ---------------------------------------------------------------- training loop

def test_train_model_learns_separable_problem():
    torch.manual_seed(0)
    train, val = make_patterns(30, seed=0), make_patterns(15, seed=1)
    seen = []
    result = train_model(TinyCNN(), train, val, quick_config(augment=True, loss="focal"),
                         time_left=forever, n_classes=3, on_epoch=seen.append)
    assert result.epochs_done == 6 and not result.stopped_by_deadline
    assert result.best_val_macro_f1 >= 0.9
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]
    assert seen == result.history
    assert {"epoch", "train_loss", "val_macro_f1", "val_accuracy", "seconds"} <= set(result.history[0])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert all(v.device == CPU for v in result.state_dict.values())


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "cosine"), ("adamw", "none"), ("sgd", "onecycle")])
def test_train_model_optimizer_schedule_combinations(optimizer, schedule):
    torch.manual_seed(0)
    result = train_model(TinyCNN(), make_patterns(10, 0), None,
                         quick_config(epochs=2, optimizer=optimizer, schedule=schedule),
                         time_left=forever, n_classes=3)
    assert result.epochs_done == 2 and result.best_epoch == 0


def test_deadline_stops_mid_epoch_and_runs_no_more_batches():
    model = TinyCNN()
    calls = {"n": 0, "forwards_at_zero": None}

    def time_left():
        calls["n"] += 1
        if calls["n"] <= 4:
            return 1e9
        if calls["forwards_at_zero"] is None:
            calls["forwards_at_zero"] = model.train_forwards
        return 0.0

    train = make_patterns(30, 0)       # 90 images / 16 = 6 batches per epoch
    result = train_model(model, train, make_patterns(5, 1), quick_config(epochs=3),
                         time_left=time_left, n_classes=3)
    assert result.stopped_by_deadline
    assert result.epochs_done == 0
    assert model.train_forwards == calls["forwards_at_zero"] == 4
    assert result.history[-1]["partial"] and result.history[-1]["batches"] == 4
    assert result.history[-1]["val_macro_f1"] is None        # no time left for evaluation


def test_deadline_uses_batch_time_estimate():
    """A batch is not started when time_left() is below 1.5x the measured batch time."""
    model = TinyCNN()
    # plenty for the first batch, then a tiny but positive amount: the estimate must stop it
    answers = iter([1e9, 1e-9])
    result = train_model(model, make_patterns(30, 0), None, quick_config(epochs=2),
                         time_left=lambda: next(answers, 1e-9), n_classes=3)
    assert result.stopped_by_deadline and model.train_forwards == 1


def test_no_time_at_all_returns_initial_weights():
    model = TinyCNN()
    result = train_model(model, make_patterns(5, 0), make_patterns(5, 1), quick_config(),
                         time_left=lambda: 0.0, n_classes=3)
    assert result.stopped_by_deadline and result.history == [] and model.train_forwards == 0
    assert result.best_epoch == 0 and set(result.state_dict) == set(model.state_dict())


def test_nan_loss_raises():
    class NanNet(TinyCNN):
        def forward(self, x):
            return super().forward(x) * float("nan")

    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1"):
        train_model(NanNet(), make_patterns(10, 0), None, quick_config(), time_left=forever, n_classes=3)


def test_best_state_is_best_by_val():
    torch.manual_seed(0)
    model = TinyCNN()
    train, val = make_patterns(30, 0), make_patterns(15, 1)

    def break_after_epoch_3(entry):
        if entry["epoch"] == 3:
            model.broken = True            # later epochs predict a constant class

    result = train_model(model, train, val, quick_config(epochs=5), time_left=forever,
                         n_classes=3, on_epoch=break_after_epoch_3)
    f1s = [h["val_macro_f1"] for h in result.history]
    assert max(f1s[3:]) < 0.5 < result.best_val_macro_f1 == max(f1s)
    assert result.best_epoch == 1 + f1s.index(max(f1s)) <= 3
    fresh = TinyCNN()
    fresh.load_state_dict(result.state_dict)
    score = classification_metrics(val.y.numpy(), predict(fresh, val.x), 3)["macro_f1"]
    assert score == pytest.approx(result.best_val_macro_f1)
    for k, v in model.state_dict().items():   # the trained model itself holds the best weights
        assert torch.equal(v, result.state_dict[k])


def test_last_epoch_weights_are_kept_beside_the_best_when_they_differ():
    torch.manual_seed(0)
    model, seen = TinyCNN(), {}
    train, val = make_patterns(30, 0), make_patterns(15, 1)

    def break_after_epoch_3(entry):
        if entry["epoch"] == 3:
            model.broken = True
        seen[entry["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    result = train_model(model, train, val, quick_config(epochs=5), time_left=forever, n_classes=3,
                         on_epoch=break_after_epoch_3, keep_last=True)
    assert result.best_epoch <= 3 and result.last_state_dict is not None
    for k, v in seen[5].items():               # the weights at the end of epoch 5, not the best epoch's
        assert torch.equal(v, result.last_state_dict[k])
    assert any(not torch.equal(v, result.state_dict[k]) for k, v in result.last_state_dict.items())
    # one epoch: the last is the best, nothing more to keep; without validation there is no best to differ from
    one = train_model(TinyCNN(), train, val, quick_config(epochs=1), time_left=forever, n_classes=3, keep_last=True)
    assert one.best_epoch == 1 and one.last_state_dict is None
    blind = train_model(TinyCNN(), train, None, quick_config(epochs=2), time_left=forever, n_classes=3, keep_last=True)
    assert blind.last_state_dict is None
    # not asked for: no copy, even where the last epoch is not the best
    model.broken = False
    unasked = train_model(model, train, val, quick_config(epochs=5), time_left=forever, n_classes=3,
                          on_epoch=break_after_epoch_3)
    assert unasked.best_epoch < 5 and unasked.last_state_dict is None


def test_without_val_keeps_last_state():
    torch.manual_seed(0)
    model = TinyCNN()
    result = train_model(model, make_patterns(10, 0), None, quick_config(epochs=2),
                         time_left=forever, n_classes=3)
    assert result.best_epoch == 0 and result.history[-1]["val_macro_f1"] is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.state_dict[k])


def test_batch_size_capped_and_singleton_last_batch_dropped():
    data = make_patterns(11, 0)            # 33 images
    r = train_model(TinyCNN(), data, None, quick_config(epochs=1, batch_size=1000),
                    time_left=forever, n_classes=3)
    assert r.history[0]["batches"] == 1
    r = train_model(TinyCNN(), data, None, quick_config(epochs=1, batch_size=16),
                    time_left=forever, n_classes=3)   # 16 + 16 + 1 -> the single image is dropped
    assert r.history[0]["batches"] == 2


@pytest.mark.parametrize("epochs,expected", [
    (1, [0.0]), (2, [2.0, 0.0]), (3, [2.0, 0.0, 0.0]), (4, [2.0, 1.0, 0.0, 0.0]),
    (5, [2.0, 1.0, 0.0, 0.0, 0.0]), (6, [2.0, 4 / 3, 2 / 3, 0.0, 0.0, 0.0]),
])
def test_surrogate_beta_reaches_zero_at_half(epochs, expected):
    betas = [surrogate_beta(2.0, e, epochs // 2) for e in range(epochs)]
    assert betas == pytest.approx(expected)
    assert all(b == 0.0 for b in betas[epochs // 2:])       # exactly 0 for the second half


def test_surrogate_beta_set_per_step_and_off_for_evaluation():
    model = BetaRecorder()
    result = train_model(model, make_patterns(10, 0), make_patterns(5, 1),     # 30 images: 2 batches of 16
                         quick_config(epochs=4, surrogate_beta0=1.0), time_left=forever, n_classes=3)
    assert model.train_betas == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]    # 0 from half the 8 steps on
    assert [h["beta"] for h in result.history] == [1.0, 0.5, 0.0, 0.0]
    assert [h["beta_end"] for h in result.history] == [0.75, 0.25, 0.0, 0.0]
    assert model.betas == [1.0, 0.75, 0.0, 0.5, 0.25, 0.0, 0.0]    # each change, 0 for evaluation, 0 at the end
    assert model.modes.count(False) == 4 and model.beta == 0.0


def test_fractional_epoch_trial_trains_with_the_surrogate_skip():
    """A BOHB trial of a fractional budget trains one epoch (on a subset): beta decays per optimiser
    step from beta0 to 0 over the first half of its steps, so its low rungs do train with the skip.
    (With the zero at `epochs // 2` = 0 it trained with beta 0 from the first batch.)"""
    model = BetaRecorder()
    result = train_model(model, make_patterns(16, 0), make_patterns(5, 1),     # 48 images: 6 batches of 8
                         quick_config(epochs=1, batch_size=8, surrogate_beta0=1.0), time_left=forever, n_classes=3)
    assert model.train_betas == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.0, 0.0])
    assert result.history[0]["beta"] == 1.0 and result.history[0]["beta_end"] == 0.0
    assert result.best_epoch == 1                              # its last step trained with beta 0
    assert model.betas[-1] == 0.0


def test_epoch_counts_as_beta_zero_when_its_last_step_was():
    """Epoch 2 starts at beta 0.25 and ends at 0: it can be the best (epoch 1, ending at 0.5, cannot)."""
    torch.manual_seed(0)
    model = BetaRecorder()

    def break_after_epoch_2(entry):
        model.broken = entry["epoch"] == 2      # epoch 3 (beta 0 throughout) predicts a constant class

    result = train_model(model, make_patterns(12, 0), make_patterns(15, 1),    # 36 images: 3 batches of 12
                         quick_config(epochs=3, batch_size=12, surrogate_beta0=1.0), time_left=forever, n_classes=3,
                         on_epoch=break_after_epoch_2)
    assert model.train_betas == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0]    # 0 from step 4 of 9 on
    assert [h["beta"] for h in result.history] == [1.0, 0.25, 0.0]
    assert [h["beta_end"] for h in result.history] == [0.5, 0.0, 0.0]
    f1s = [h["val_macro_f1"] for h in result.history]
    assert f1s[1] > f1s[2]
    assert result.best_epoch == 2 and result.best_val_macro_f1 == f1s[1]


def test_surrogate_epochs_never_become_best():
    torch.manual_seed(0)
    model = BetaRecorder()

    def break_after_epoch_2(entry):
        if entry["epoch"] == 2:
            model.broken = True            # the beta-0 epochs 3 and 4 predict a constant class

    result = train_model(model, make_patterns(30, 0), make_patterns(15, 1),
                         quick_config(epochs=4, surrogate_beta0=1.0), time_left=forever, n_classes=3,
                         on_epoch=break_after_epoch_2)
    f1s = [h["val_macro_f1"] for h in result.history]
    assert max(f1s[:2]) > max(f1s[2:])
    assert result.best_epoch == 3 and result.best_val_macro_f1 == f1s[2]


def test_deadline_before_any_beta_zero_epoch_returns_last_evaluated():
    torch.manual_seed(0)
    model = BetaRecorder()
    val = make_patterns(15, 1)
    out_of_time = {"now": False}

    def on_epoch(entry):
        model.broken = entry["epoch"] >= 2     # epoch 3, the last before the deadline, is the worst
        out_of_time["now"] = entry["epoch"] == 3

    result = train_model(model, make_patterns(30, 0), val,
                         quick_config(epochs=6, surrogate_beta0=1.0), n_classes=3, on_epoch=on_epoch,
                         time_left=lambda: 0.0 if out_of_time["now"] else 1e9)
    assert result.stopped_by_deadline
    assert [h["beta"] for h in result.history] == pytest.approx([1.0, 2 / 3, 1 / 3])
    f1s = [h["val_macro_f1"] for h in result.history]
    assert max(f1s[:2]) > f1s[2]
    assert result.best_epoch == 3 and result.best_val_macro_f1 == f1s[2]
    assert model.betas[-1] == 0.0
    delivered = classification_metrics(val.y.numpy(), predict(model, val.x), 3)["macro_f1"]
    assert delivered == pytest.approx(result.best_val_macro_f1)       # the weights of epoch 3, at beta 0


def test_surrogate_trained_network_is_judged_as_delivered():
    """The default network trained with the surrogate skip: the reported best macro-F1 is the one
    the returned weights give (beta 0), and it is good. The old schedule (beta never 0 in
    training, evaluation at 0) reported and returned a collapsed network here (macro-F1 ~0.2)."""
    digits = load_digits()
    x = torch.tensor((digits.images[:900, None] / 16.0 - 0.3) / 0.4, dtype=torch.float32)
    y = torch.tensor(digits.target[:900], dtype=torch.int64)
    train, val = TensorData(x[:800], y[:800]), TensorData(x[800:], y[800:])
    torch.manual_seed(0)
    model = build_network(NetworkSpec(DEFAULT_GENOTYPE, in_channels=1, n_classes=10, image_side=8, n_cells=2,
                                      base_channels=16))
    config = TrainConfig(epochs=2, batch_size=16, lr=0.01, loss="ce", augment=False, surrogate_beta0=1.0)
    result = train_model(model, train, val, config, time_left=forever, n_classes=10)
    delivered = classification_metrics(val.y.numpy(), predict(model, val.x), 10)["macro_f1"]
    assert result.best_val_macro_f1 == pytest.approx(delivered, abs=1e-6)
    assert result.best_val_macro_f1 > 0.7
    assert [h["beta"] for h in result.history] == [1.0, 0.0] and result.best_epoch == 2


def test_logit_adjust_tau_reaches_the_loss():
    """On imbalanced data tau 0 trains exactly like plain CE and tau 1 does not."""
    data = make_patterns(20, 0)
    keep = torch.cat([torch.arange(0, 20), torch.arange(20, 24), torch.arange(40, 60)])
    data = TensorData(data.x[keep], data.y[keep])
    states = {}
    for name, kw in {"ce": dict(loss="ce"), "tau0": dict(loss="logit_adjusted", logit_adjust_tau=0.0),
                     "tau1": dict(loss="logit_adjusted", logit_adjust_tau=1.0)}.items():
        torch.manual_seed(0)
        states[name] = train_model(TinyCNN(), data, None, quick_config(epochs=1, **kw),
                                   time_left=forever, n_classes=3).state_dict
    assert all(torch.equal(v, states["tau0"][k]) for k, v in states["ce"].items())
    assert not torch.equal(states["ce"]["fc.bias"], states["tau1"]["fc.bias"])


def test_surrogate_beta_not_called_when_beta0_zero():
    model = BetaRecorder()
    train_model(model, make_patterns(5, 0), None, quick_config(epochs=2), time_left=forever, n_classes=3)
    assert model.betas == []


def test_train_config_validates():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(epochs=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(epochs=1, loss="mse")
    with pytest.raises(ValueError, match="logit_adjust_tau"):
        TrainConfig(epochs=1, logit_adjust_tau=-0.5)


# ---------------------------------------------------------------- prediction

@pytest.mark.parametrize("was_training", [True, False])
def test_predict_shapes_and_mode_restored(was_training):
    model = TinyCNN(n_classes=4)
    model.train(was_training)
    x = torch.randn(37, 1, 8, 8)
    pred = predict(model, x, batch_size=10)
    proba = predict_proba(model, x, batch_size=10)
    assert pred.shape == (37,) and pred.dtype == np.int64 and pred.min() >= 0 and pred.max() < 4
    assert proba.shape == (37, 4) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(proba.argmax(axis=1), pred)
    assert model.training == was_training
    assert not any(model.modes)            # every forward ran in eval mode


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_and_augment_on_cuda():
    cuda = resolve_device("cuda")
    x = torch.randn(8, 3, 16, 16, device=cuda)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.device == x.device and out.shape == x.shape
    torch.manual_seed(0)
    train, val = make_patterns(30, 0), make_patterns(15, 1)
    train, val = (TensorData(d.x.to(cuda), d.y.to(cuda)) for d in (train, val))
    model = TinyCNN().to(cuda)
    result = train_model(model, train, val, quick_config(augment=True, loss="focal"),
                         time_left=forever, n_classes=3)
    assert result.best_val_macro_f1 >= 0.9
    assert all(v.device.type == "cpu" for v in result.state_dict.values())
    assert predict(model, val.x).shape == (45,)


def test_step_guard_starts_a_step_only_when_the_slowest_recent_one_fits():
    from automl_pipeline.training.deadline import STEP_SAFETY, WINDOW, StepGuard

    left = [10.0]
    guard = StepGuard(lambda: left[0])
    assert guard.allows() and guard.estimate is None          # untimed: any time left will do
    guard.record(2.0)
    guard.record(1.0)
    assert guard.estimate == 2.0 and guard.allows()           # 10 >= 1.5 x 2
    assert not guard.allows(reserve=7.5)                      # a validation pass must fit too
    left[0] = STEP_SAFETY * 2.0 - 0.01
    assert not guard.allows()
    for _ in range(WINDOW):                                   # the slow step leaves the window
        guard.record(1.0)
    assert guard.estimate == 1.0 and guard.allows()
    guard.reset(0.5)
    assert guard.times == [0.5]
    left[0] = 0.0
    assert not guard.allows()
    assert StepGuard(lambda: 1.0, hint=4.0).allows() is False  # a measured hint counts before any step


@pytest.mark.parametrize("channels", [1, 3])
def test_image_tensors_have_the_standard_strides(channels):
    """Grey images permuted from NHWC kept strides (HW, 1, W, 1) through `.contiguous()`; with them a DARTS
    step on 12 px images crashed the process (SIGFPE/SIGSEGV in torch's backward)."""
    from automl_pipeline.training import channel_stats, to_tensor_data

    images = np.random.default_rng(0).integers(0, 256, size=(5, 12, 12, channels), dtype=np.uint8)
    mean, std = channel_stats(images)
    x = to_tensor_data(images, np.zeros(5, dtype=np.int64), CPU, mean, std).x
    assert x.shape == (5, channels, 12, 12)
    assert x.stride() == torch.empty(x.shape).stride()
    expected = (images.transpose(0, 3, 1, 2) / 255.0 - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)
    assert np.allclose(x.numpy(), expected, atol=1e-5)
