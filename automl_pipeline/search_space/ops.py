"""The operation registry: block name -> factory(C_in, C_out, stride) -> nn.Module.

Every factory also takes `affine=` (BatchNorm affine parameters; True for the
discrete network, False in the DARTS supernet as in the DARTS paper).

Shape contract for every op: input (N, C_in, H, W) -> output
(N, C_out, ceil(H / stride), ceil(W / stride)), stride in {1, 2}, for any H, W >= 1
(odd sides included).

Block definitions (where a choice had to be made):
- "none": Zero. Outputs zeros of the output shape (no parameters, no gradient to x).
- "skip_connect": Identity when stride 1 and C_in == C_out; FactorizedReduce when
  stride 2; ReLU-conv1x1-BN when only the channels differ.
- "conv_3x3": conv3x3-BN-ReLU (the "conv block" of the poster's template).
- "res_basic": ResNet basic block: conv3x3(stride)-BN-ReLU-conv3x3-BN plus the
  shortcut (identity, or conv1x1(stride)-BN projection when shapes differ), then ReLU.
- "res_bottleneck": ResNet bottleneck with expansion 4: the inner width is
  max(1, C_out // 4); conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1-BN, plus
  the projection shortcut when needed, then ReLU.
- "sep_conv_3x3", "dil_conv_3x3": as in DARTS (ReLU-depthwise-pointwise-BN; the
  separable conv applies it twice, the dilated conv once with dilation 2).
- "max_pool_3x3", "avg_pool_3x3": 3x3 pooling (padding 1), followed by a
  conv1x1-BN projection when C_in != C_out.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

OpFactory = Callable[..., nn.Module]

TEMPLATE_OPS: tuple[str, ...] = ("none", "skip_connect", "conv_3x3", "res_basic", "res_bottleneck")
EXTRA_OPS: tuple[str, ...] = ("sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3")

BOTTLENECK_EXPANSION = 4


def _ceil_half(n: int, stride: int) -> int:
    return -(-n // stride)


class Zero(nn.Module):
    """Zeros of the output shape: (N, C_out, ceil(H/stride), ceil(W/stride))."""

    def __init__(self, C_out: int, stride: int):
        super().__init__()
        self.C_out, self.stride = C_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return x.new_zeros(n, self.C_out, _ceil_half(h, self.stride), _ceil_half(w, self.stride))


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv(k, stride, padding) -> BN (DARTS' preprocessing / projection unit)."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(C_in, C_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(C_out, affine=affine))


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two stride-2 1x1 convs, the second on the input
    shifted by one pixel; their outputs are concatenated (C_out // 2 and the rest).
    Odd sides are padded on the bottom/right before the shift so both halves agree.
    With C_out == 1 a single stride-2 1x1 conv is used."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True):
        super().__init__()
        c1 = C_out // 2
        self.conv_1 = nn.Conv2d(C_in, c1, 1, stride=2, bias=False) if c1 else None
        self.conv_2 = nn.Conv2d(C_in, C_out - c1, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        if self.conv_1 is None:
            return self.bn(self.conv_2(shifted))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def _projection(C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """Shortcut for residual blocks: identity, or conv1x1(stride)-BN when shapes differ."""
    if stride == 1 and C_in == C_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(C_in, C_out, 1, stride, bias=False), nn.BatchNorm2d(C_out, affine=affine))


class ConvBlock(nn.Sequential):
    """conv3x3(stride) -> BN -> ReLU."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True):
        super().__init__(nn.Conv2d(C_in, C_out, 3, stride, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine),
                         nn.ReLU())


class ResBasic(nn.Module):
    """ResNet basic block (two 3x3 convs) with a projection shortcut when needed."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(C_in, C_out, 3, stride, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine), nn.ReLU(),
            nn.Conv2d(C_out, C_out, 3, 1, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))
        self.shortcut = _projection(C_in, C_out, stride, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResBottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3(stride) -> 1x1), inner width max(1, C_out // 4)."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True):
        super().__init__()
        mid = max(1, C_out // BOTTLENECK_EXPANSION)
        self.body = nn.Sequential(
            nn.Conv2d(C_in, mid, 1, bias=False), nn.BatchNorm2d(mid, affine=affine), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid, affine=affine), nn.ReLU(),
            nn.Conv2d(mid, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))
        self.shortcut = _projection(C_in, C_out, stride, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class SepConv(nn.Sequential):
    """DARTS separable conv: (ReLU-dw3x3-pw1x1-BN) twice, stride on the first."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True):
        super().__init__(
            nn.ReLU(), nn.Conv2d(C_in, C_in, 3, stride, 1, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_in, 1, bias=False), nn.BatchNorm2d(C_in, affine=affine),
            nn.ReLU(), nn.Conv2d(C_in, C_in, 3, 1, 1, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))


class DilConv(nn.Sequential):
    """DARTS dilated conv: ReLU-dw3x3(dilation 2)-pw1x1-BN."""

    def __init__(self, C_in: int, C_out: int, stride: int, affine: bool = True):
        super().__init__(
            nn.ReLU(), nn.Conv2d(C_in, C_in, 3, stride, 2, dilation=2, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))


def _pool(kind: str) -> OpFactory:
    def make(C_in: int, C_out: int, stride: int, affine: bool = True) -> nn.Module:
        pool = (nn.MaxPool2d(3, stride, 1) if kind == "max"
                else nn.AvgPool2d(3, stride, 1, count_include_pad=False))
        if C_in == C_out:
            return pool
        return nn.Sequential(pool, nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=affine))
    return make


def _skip(C_in: int, C_out: int, stride: int, affine: bool = True) -> nn.Module:
    if stride == 2:
        return FactorizedReduce(C_in, C_out, affine)
    if C_in == C_out:
        return nn.Identity()
    return ReLUConvBN(C_in, C_out, 1, 1, 0, affine)


OPS: dict[str, OpFactory] = {
    "none": lambda C_in, C_out, stride, affine=True: Zero(C_out, stride),
    "skip_connect": _skip,
    "conv_3x3": ConvBlock,
    "res_basic": ResBasic,
    "res_bottleneck": ResBottleneck,
    "sep_conv_3x3": SepConv,
    "dil_conv_3x3": DilConv,
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg"),
}


def make_op(name: str, C_in: int, C_out: int, stride: int, *, affine: bool = True) -> nn.Module:
    """OPS[name](C_in, C_out, stride, affine=affine) with a clear error for unknown names."""
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}; known: {sorted(OPS)}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    return OPS[name](C_in, C_out, stride, affine=affine)
