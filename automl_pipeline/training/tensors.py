"""Image arrays -> normalised tensors on the training device, and whole-batch augmentation."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


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
    """uint8 NHWC images (+ labels) -> normalised NCHW float tensors on `device`, with the standard strides.

    The permute of grey NHWC images leaves strides (HW, 1, W, 1), which `.contiguous()` keeps (a size-1
    dimension's stride does not count); with those strides torch 2.14's CPU backward of the DARTS
    supernet on 12 px images corrupted memory (SIGSEGV/SIGFPE), so the result is copied to standard ones."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.as_tensor(mean, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, device=device).view(1, -1, 1, 1)
    x = ((x - mean_t) / std_t).clone(memory_format=torch.contiguous_format)
    y = None if labels is None else torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=device)
    return TensorData(x=x, y=y)


def _draw(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """n random ints in [0, high) drawn on the generator's device, returned on `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    draw = torch.randint(0, high, (n,), generator=generator, device=gen_device)
    return draw.to(device, non_blocking=True)


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None, *,
                  flip: bool = True, padding_mode: str = "reflect") -> torch.Tensor:
    """Random crop with padding (+ optional horizontal flip) for a whole NCHW batch at once.

    Each image is padded by max(1, side // 8) pixels per side ("reflect" or "zeros";
    reflect falls back to "replicate" for sides too small to reflect) and a random
    H x W window is cut out. The crop and the flip are one pair of index gathers on
    x's device; no per-image Python. Flipping is optional: it hurts digits and text.
    Returns a new tensor with x's shape, dtype and device; x is not modified.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch expects an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if n == 0:
        return x.clone()
    ph, pw = max(1, h // 8), max(1, w // 8)
    if padding_mode == "zeros":
        padded = F.pad(x, (pw, pw, ph, ph), mode="constant", value=0.0)
    elif padding_mode == "reflect":
        mode = "reflect" if (h > ph and w > pw) else "replicate"
        padded = F.pad(x, (pw, pw, ph, ph), mode=mode)
    else:
        raise ValueError(f"padding_mode must be 'reflect' or 'zeros', got {padding_mode!r}")
    dy = _draw(2 * ph + 1, n, generator, x.device)
    dx = _draw(2 * pw + 1, n, generator, x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)                  # (N, H)
    cols = torch.arange(w, device=x.device).expand(n, w)                    # (N, W)
    if flip:
        flipped = _draw(2, n, generator, x.device).bool()
        cols = torch.where(flipped[:, None], (w - 1) - cols, cols)
    cols = dx[:, None] + cols
    out = torch.gather(padded, 2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * pw))
    return torch.gather(out, 3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def resize_tensor_data(data: TensorData, side: int) -> TensorData:
    """`data` with its images resized (area-averaged down, bilinear up) to side x side; the same
    object when they already have that side."""
    if data.x.shape[-1] == side and data.x.shape[-2] == side:
        return data
    mode = "area" if side < data.x.shape[-1] else "bilinear"
    x = F.interpolate(data.x, size=(side, side), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return TensorData(x=x, y=data.y)


def random_subset(data: TensorData, n: int, seed: int) -> TensorData:
    """A seeded random subset of n images (at least 1) of `data`."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(data), generator=generator)[:max(1, n)].to(data.x.device)
    return TensorData(x=data.x[keep], y=None if data.y is None else data.y[keep])
