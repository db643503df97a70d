"""Genotypes as plain data (DARTS style).

A cell has two inputs, index 0 (output of the cell before the previous one) and
index 1 (output of the previous cell), and n intermediate nodes with indices
2 .. n + 1. `normal` / `reduce` list the (op name, input index) pairs of node 2
first, then node 3, ...; every node has the same number k of incoming edges
(k = 2 for genotypes from `derive_genotype`). `*_concat` names the nodes whose
outputs are concatenated into the cell output; the number of nodes is
max(concat) - 1, so k = len(edges) / n_nodes.
"""
from __future__ import annotations

from typing import NamedTuple

from automl_pipeline.search_space.ops import OPS

Edges = tuple[tuple[str, int], ...]


class Genotype(NamedTuple):
    normal: Edges
    normal_concat: tuple[int, ...]
    reduce: Edges
    reduce_concat: tuple[int, ...]

    def to_json(self) -> dict:
        """JSON-ready dict: {"normal": [[op, input], ...], "normal_concat": [...], ...}."""
        return {"normal": [[op, int(i)] for op, i in self.normal],
                "normal_concat": [int(i) for i in self.normal_concat],
                "reduce": [[op, int(i)] for op, i in self.reduce],
                "reduce_concat": [int(i) for i in self.reduce_concat]}

    @classmethod
    def from_json(cls, d: dict) -> "Genotype":
        """Inverse of to_json; validates the result (ValueError on a malformed genotype)."""
        def edges(key: str) -> Edges:
            return tuple((str(op), int(i)) for op, i in d[key])
        g = cls(edges("normal"), tuple(int(i) for i in d["normal_concat"]),
                edges("reduce"), tuple(int(i) for i in d["reduce_concat"]))
        validate_genotype(g)
        return g


def node_edges(edges: Edges, concat: tuple[int, ...]) -> list[Edges]:
    """Split a cell's flat edge list into per-node lists; ValueError if malformed."""
    if not concat or min(concat) < 2:
        raise ValueError(f"concat must name intermediate nodes (indices >= 2), got {concat}")
    n_nodes = max(concat) - 1
    if not edges or len(edges) % n_nodes:
        raise ValueError(f"{len(edges)} edges cannot be split evenly over {n_nodes} nodes")
    k = len(edges) // n_nodes
    nodes = [tuple(edges[j * k:(j + 1) * k]) for j in range(n_nodes)]
    for j, node in enumerate(nodes):
        for op, i in node:
            if op not in OPS:
                raise ValueError(f"unknown op {op!r} in genotype")
            if not 0 <= i < j + 2:
                raise ValueError(f"node {j + 2} cannot take input {i}")
    return nodes


def validate_genotype(g: Genotype) -> None:
    """Raise ValueError when either cell of `g` is malformed."""
    node_edges(g.normal, g.normal_concat)
    node_edges(g.reduce, g.reduce_concat)


# Fixed cell from the template blocks, used before / without DARTS. Normal cell:
# a conv and a basic block on the inputs, then a deeper path mixing residual
# blocks with skips. Reduction cell: strided conv / residual blocks on the inputs
# (stride-2 edges), bottleneck and skips inside.
DEFAULT_GENOTYPE = Genotype(
    normal=(("conv_3x3", 0), ("res_basic", 1),
            ("res_basic", 2), ("skip_connect", 1),
            ("conv_3x3", 3), ("skip_connect", 2),
            ("res_bottleneck", 4), ("conv_3x3", 1)),
    normal_concat=(2, 3, 4, 5),
    reduce=(("res_basic", 0), ("conv_3x3", 1),
            ("res_basic", 1), ("skip_connect", 2),
            ("conv_3x3", 3), ("skip_connect", 2),
            ("res_bottleneck", 4), ("skip_connect", 3)),
    reduce_concat=(2, 3, 4, 5),
)
