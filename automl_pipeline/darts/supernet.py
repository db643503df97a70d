"""The DARTS supernet: every edge is a MixedOp over the candidate ops.

Structure follows the discrete network (search_space.network): same stem, same
reduction rule, same widths and node channels, same preprocessing, nodes are
the normalized sum (mean) of their incoming edges, cell output = concatenation
of all intermediate nodes. Differences: every node takes every earlier state
(2 + j edges into node j, so 14 edges for 4 nodes), BatchNorm has no affine
parameters (as in DARTS) and the head is one linear layer.

Edges are numbered node by node, inputs in order: node 0 gets edges 0-1 (from
inputs 0, 1), node 1 edges 2-4 (from 0, 1, 2), ... -- the row order of
`alphas_normal` / `alphas_reduce` and what `derive_genotype` expects.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from automl_pipeline.search_space.cells import make_preprocess
from automl_pipeline.search_space.network import node_channels, stack_cells
from automl_pipeline.search_space.ops import make_op


def n_edges_for(n_nodes: int) -> int:
    """Edges of a fully connected cell with two inputs: 2 + 3 + ... + (n_nodes + 1)."""
    return sum(2 + j for j in range(n_nodes))


def edge_inputs(n_nodes: int) -> list[tuple[int, int]]:
    """(node index, input index) of every edge, in alpha-row order."""
    return [(j + 2, i) for j in range(n_nodes) for i in range(j + 2)]


class MixedOp(nn.Module):
    """softmax-weighted sum over ops, plus the DARTS- surrogate skip beta * x.

    The surrogate term exists only on stride-1 edges (as in the discrete cells).
    """

    def __init__(self, C: int, stride: int, ops: tuple[str, ...]):
        super().__init__()
        self._ops = nn.ModuleList(make_op(name, C, C, stride, affine=False) for name in ops)
        self.stride, self.beta = stride, 0.0

    def surrogate(self, x: torch.Tensor) -> torch.Tensor | float:
        return self.beta * x if self.beta and self.stride == 1 else 0.0

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self._ops)) + self.surrogate(x)


class SearchCell(nn.Module):
    def __init__(self, n_nodes: int, C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
                 ops: tuple[str, ...]):
        super().__init__()
        self.reduction, self.n_nodes = reduction, n_nodes
        self.preprocess0, self.preprocess1 = make_preprocess(C_pp, C_p, C, reduction_prev, affine=False)
        self.edges = nn.ModuleList(MixedOp(C, 2 if reduction and i < 2 else 1, ops)
                                   for _, i in edge_inputs(n_nodes))
        self.out_channels = C * n_nodes

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for _ in range(self.n_nodes):
            n_in = len(states)
            states.append(sum(self.edges[e + i](h, weights[e + i]) for i, h in enumerate(states)) / n_in)
            e += n_in
        return torch.cat(states[2:], dim=1)


class SuperNet(nn.Module):
    """Supernet with architecture parameters alphas_normal / alphas_reduce of shape (n_edges, n_ops)."""

    def __init__(self, in_channels: int, n_classes: int, image_side: int, *, ops: tuple[str, ...],
                 n_cells: int = 3, base_channels: int = 16, n_nodes: int = 4, alpha_init_std: float = 1e-3,
                 stem_pool: bool = False):
        super().__init__()
        self.ops, self.n_nodes = tuple(ops), n_nodes

        def make_cell(C_pp: int, C_p: int, width: int, reduction: bool, reduction_prev: bool) -> SearchCell:
            return SearchCell(n_nodes, C_pp, C_p, node_channels(width, n_nodes), reduction, reduction_prev, self.ops)

        self.stem, self.layout, self.cells, C_p = stack_cells(in_channels, base_channels, n_cells, image_side,
                                                              make_cell, stem_pool=stem_pool)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, n_classes)
        shape = (n_edges_for(n_nodes), len(self.ops))
        self.alphas_normal = nn.Parameter(alpha_init_std * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(alpha_init_std * torch.randn(shape))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_beta(self, beta: float) -> None:
        """Surrogate skip coefficient on every stride-1 MixedOp (0 = off)."""
        for m in self.modules():
            if isinstance(m, MixedOp):
                m.beta = float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_normal = F.softmax(self.alphas_normal, dim=-1)
        w_reduce = F.softmax(self.alphas_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return self.classifier(torch.flatten(self.pool(s1), 1))
