"""Image arrays -> normalised tensors that live on the training device."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TensorData:
    """A whole image set as tensors on one device.

    x: float32 (N, C, H, W), normalised with the training split's channel stats.
    y: int64 (N,), or None for unlabelled images.
    """

    x: torch.Tensor
    y: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 NHWC images, in [0, 1] units."""
    scaled = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    mean = scaled.mean(axis=0)
    std = np.maximum(scaled.std(axis=0), 1e-3)
    return mean.astype(np.float32), std.astype(np.float32)


def to_tensor_data(images: np.ndarray, labels: np.ndarray | None, device: torch.device,
                   mean: np.ndarray, std: np.ndarray) -> TensorData:
    """uint8 NHWC images (+ labels) -> normalised NCHW float tensors on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.as_tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, device=device).view(1, -1, 1, 1)
    x = ((x - mean_t) / std_t).contiguous()
    y = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=device)
    return TensorData(x=x, y=y)
