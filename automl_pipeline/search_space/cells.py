"""Discrete cells built from a genotype.

A cell takes the outputs of the two previous cells (s0, s1). They are first
brought to the cell's node width C: s1 by ReLU-conv1x1-BN, s0 the same way, or
by FactorizedReduce when the previous cell was a reduction (s0 then has twice
the spatial side of s1); a cell whose edges never read s0 has no adapter for it.

Each intermediate node is the NORMALIZED sum of its incoming edges, i.e. their
mean: node = (1/k) * sum_e op_e(input_e). The cell output is the channel-wise
concatenation of the `concat` nodes, so it has C * len(concat) channels. In a
reduction cell the edges that read the cell inputs (indices 0 and 1) have stride 2.

Surrogate skip (DARTS-): every edge computes op(x) + beta * x, beta set through
`set_surrogate_beta` (0 = off, the default). Stride-2 edges get no surrogate
term: x has the wrong spatial size there, and a learned projection would be a
new operation rather than a parameter-free gradient path.
"""
from __future__ import annotations

import torch
from torch import nn

from automl_pipeline.search_space.genotype import Edges, node_edges
from automl_pipeline.search_space.ops import FactorizedReduce, ReLUConvBN, make_op


def make_preprocess(C_pp: int, C_p: int, C: int, reduction_prev: bool,
                    affine: bool = True) -> tuple[nn.Module, nn.Module]:
    """The two input adapters of a cell: (for s0, for s1)."""
    pre0 = FactorizedReduce(C_pp, C, affine) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, affine)
    return pre0, ReLUConvBN(C_p, C, 1, 1, 0, affine)


class Edge(nn.Module):
    """One discrete edge: op(x) + beta * x (the surrogate term only on stride-1 edges)."""

    def __init__(self, op: nn.Module, stride: int):
        super().__init__()
        self.op, self.stride, self.beta = op, stride, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.op(x)
        return out + self.beta * x if self.beta and self.stride == 1 else out


class Cell(nn.Module):
    """A discrete cell: `edges`/`concat` are one half of a Genotype."""

    def __init__(self, edges: Edges, concat: tuple[int, ...], C_pp: int, C_p: int, C: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        nodes = node_edges(edges, concat)
        self.reduction = reduction
        self.concat = tuple(concat)
        self.inputs = [[i for _, i in node] for node in nodes]
        self.preprocess0, self.preprocess1 = make_preprocess(C_pp, C_p, C, reduction_prev)
        if not any(0 in inputs for inputs in self.inputs):
            self.preprocess0 = None          # s0 unused: no adapter to compute
        self.edges = nn.ModuleList()
        for node in nodes:
            for op, i in node:
                stride = 2 if reduction and i < 2 else 1
                self.edges.append(Edge(make_op(op, C, C, stride), stride))
        self.out_channels = C * len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [None if self.preprocess0 is None else self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for inputs in self.inputs:
            states.append(sum(self.edges[e + j](states[i]) for j, i in enumerate(inputs)) / len(inputs))
            e += len(inputs)
        return torch.cat([states[i] for i in self.concat], dim=1)
