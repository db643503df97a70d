"""The GPU path of training and DARTS (issue 7), tested on CPU where it can be:
out-of-memory retry by injection, no per-batch reads of device values, the DARTS step
returning device tensors; plus CUDA-only tests (skipped without a GPU)."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from automl_pipeline.darts.search import DartsConfig, _Search, run_darts
from automl_pipeline.training import TensorData, TrainConfig, predict, train_model
from automl_pipeline.training.device import (OutOfMemory, configure_device, optimizer_kwargs,
                                             use_channels_last)

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class TinyCNN(nn.Module):
    def __init__(self, channels: int = 1, n_classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes))

    def forward(self, x):
        return self.body(x)


class OomOnce(TinyCNN):
    """Raises the device's out-of-memory error on the first batch larger than `limit`."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit, self.raised, self.sizes = limit, 0, []

    def forward(self, x):
        if x.shape[0] > self.limit and not self.raised:
            self.raised += 1
            raise OutOfMemory("CUDA out of memory (injected)")
        if self.training:
            self.sizes.append(x.shape[0])                          # batches that really trained
        return super().forward(x)


def toy_data(n: int, device=CPU, side: int = 8, channels: int = 1, n_classes: int = 3, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, side, side, generator=g)
    y = torch.arange(n) % n_classes
    return TensorData(x.to(device), y.to(device))


def config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=32, lr=1e-2, loss="ce", augment=True, seed=0)
    base.update(kw)
    return TrainConfig(**base)


# --------------------------------------------------------------------------- out of memory


def test_oom_on_a_batch_halves_the_batch_size_and_training_continues():
    model = OomOnce(limit=16)
    res = train_model(model, toy_data(64), toy_data(12, seed=1), config(epochs=2, schedule="onecycle"),
                      time_left=lambda: 1e9, n_classes=3)
    assert model.raised == 1
    assert res.oom_halvings == 1 and res.batch_size == 16
    assert res.epochs_done == 2 and not res.stopped_by_deadline
    assert [h["batch_size"] for h in res.history] == [16, 16]
    assert [h["batches"] for h in res.history] == [4, 4]          # the failed batch is retried, not lost
    assert not any(h["partial"] for h in res.history)
    assert model.sizes == [16] * 8                                 # the 32-batch never trained
    assert all(np.isfinite(h["train_loss"]) for h in res.history)


def test_oom_at_the_smallest_batch_is_reraised():
    class AlwaysOom(TinyCNN):
        def forward(self, x):
            raise OutOfMemory("CUDA out of memory (injected)")

    with pytest.raises(OutOfMemory):
        train_model(AlwaysOom(), toy_data(16), None, config(epochs=1, batch_size=4), time_left=lambda: 1e9,
                    n_classes=3)


def test_predict_halves_its_chunks_on_oom():
    model = OomOnce(limit=8).eval()
    model.raised = 0
    x = toy_data(20).x
    out = predict(model, x, batch_size=16)
    assert out.shape == (20,) and model.raised == 1
    assert np.array_equal(out, predict(model, x, batch_size=16))     # same answer without the OOM


# --------------------------------------------------------------------------- no per-batch syncs


READS = ("item", "__float__", "__bool__", "__int__", "__index__", "tolist")


@pytest.fixture
def count_reads(monkeypatch):
    """Counts Tensor -> Python value conversions made from project code (automl_pipeline/*)."""
    calls: list[str] = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if "automl_pipeline" in caller:
                calls.append(f"{_name} from {caller}:{sys._getframe(1).f_lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_training_reads_device_values_a_bounded_number_of_times_per_epoch(count_reads, optimizer):
    n_batches, epochs = 60, 2                                      # 3 NaN checks per epoch at 20
    res = train_model(TinyCNN(), toy_data(4 * n_batches), None,
                      config(epochs=epochs, batch_size=4, optimizer=optimizer),
                      time_left=lambda: 1e9, n_classes=3)
    assert res.epochs_done == epochs and res.history[0]["batches"] == n_batches
    # per epoch: the synced loss read at the end; nothing per batch
    assert len(count_reads) <= 2 * epochs, count_reads


def test_darts_step_returns_device_tensors_and_reads_nothing(count_reads):
    train, val = toy_data(64, side=8), toy_data(64, side=8, seed=1)
    cfg = DartsConfig(epochs=1, batch_size=16, n_cells=1, base_channels=4, n_nodes=2)
    search = _Search(train, val, 3, cfg, nn.CrossEntropyLoss())
    totals = None
    for xt, yt in search.train_batches():
        out = search.step(xt, yt)
        totals = out if totals is None else {k: totals[k] + v for k, v in out.items()}
    assert count_reads == []
    for key in ("train_loss", "train_correct", "val_loss", "val_correct"):
        assert torch.is_tensor(out[key]) and out[key].dim() == 0 and out[key].device == train.x.device
    assert out["n_train"] == 16 and out["n_val"] == 16
    floats = search.to_floats(totals)
    assert all(isinstance(v, float) for v in floats.values())
    assert floats["n_train"] == 64 and 0 <= floats["train_correct"] <= 64
    assert np.isfinite(floats["train_loss"])


def test_darts_non_finite_losses_are_caught_once_per_epoch():
    with pytest.raises(FloatingPointError, match="train loss"):
        _Search.to_floats({"train_loss": torch.tensor(float("nan")), "n_train": 4})
    train, val = toy_data(64, side=8), toy_data(64, side=8, seed=1)
    cfg = DartsConfig(epochs=1, batch_size=16, n_cells=1, base_channels=4, n_nodes=2)

    class NanLoss(nn.Module):
        def forward(self, logits, y):
            return nn.functional.cross_entropy(logits, y) * float("nan")

    with pytest.raises(FloatingPointError):
        run_darts(train, val, 3, cfg, time_left=lambda: 1e9, loss=NanLoss())


def test_run_darts_history_is_plain_floats():
    train, val = toy_data(64, side=8), toy_data(64, side=8, seed=1)
    cfg = DartsConfig(epochs=1, batch_size=16, n_cells=1, base_channels=4, n_nodes=2)
    res = run_darts(train, val, 3, cfg, time_left=lambda: 1e9, loss=nn.CrossEntropyLoss())
    record = res.history[0]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert type(record[key]) is float


# --------------------------------------------------------------------------- device settings


def test_cpu_settings_are_plain():
    before = torch.backends.cudnn.benchmark
    configure_device(CPU)
    assert torch.backends.cudnn.benchmark == before
    assert optimizer_kwargs(CPU) == {}
    assert use_channels_last(CPU) is False and use_channels_last(CPU, True) is True


def test_precision_is_validated():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(epochs=1, precision="fp16")
    assert TrainConfig(epochs=1).to_json()["precision"] == "auto"


# --------------------------------------------------------------------------- CUDA only


@needs_cuda
def test_configure_device_turns_on_cudnn_benchmark():
    configure_device(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True
    assert optimizer_kwargs(torch.device("cuda")) == {"fused": True}


@needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_training_bf16_fused_channels_last(channels_last):
    cuda = torch.device("cuda")
    model = TinyCNN(3).to(cuda)
    res = train_model(model, toy_data(256, cuda, side=16, channels=3), toy_data(64, cuda, side=16, channels=3),
                      config(epochs=2, batch_size=32, channels_last=channels_last), time_left=lambda: 1e9,
                      n_classes=3)
    assert res.epochs_done == 2 and all(np.isfinite(h["train_loss"]) for h in res.history)
    assert model.body[0].weight.is_contiguous()                  # handed back in the default format
    assert all(v.device.type == "cpu" for v in res.state_dict.values())


@needs_cuda
def test_cuda_training_loop_does_not_sync_per_batch():
    """Synchronising calls (torch's sync debug mode warns on each) must not grow with the
    number of batches in an epoch."""
    cuda = torch.device("cuda")

    def syncs(n_batches: int) -> int:
        model = TinyCNN(3).to(cuda)
        data = toy_data(8 * n_batches, cuda, side=16, channels=3)
        train_model(model, data, None, config(epochs=1, batch_size=8), time_left=lambda: 1e9, n_classes=3)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train_model(model, data, None, config(epochs=1, batch_size=8), time_left=lambda: 1e9, n_classes=3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(80) <= syncs(10) + 1


@needs_cuda
def test_cuda_darts_step_runs_under_bf16_and_returns_device_tensors():
    cuda = torch.device("cuda")
    train, val = toy_data(64, cuda, side=8), toy_data(64, cuda, side=8, seed=1)
    cfg = DartsConfig(epochs=1, batch_size=16, n_cells=1, base_channels=4, n_nodes=2)
    search = _Search(train, val, 3, cfg, nn.CrossEntropyLoss())
    assert search.amp and search.w_opt.defaults.get("fused")
    out = search.step(*next(search.train_batches()))
    assert out["train_loss"].device.type == "cuda"
    assert np.isfinite(search.to_floats(out)["train_loss"])
