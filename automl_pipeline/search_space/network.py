"""NetworkSpec -> nn.Module: a stem, a stack of cells and a linear head.

Layout rules (shared with the DARTS supernet):
- Stem: conv3x3 (stride 1) + BN, in_channels -> base_channels; with `stem_pool` it is followed
  by ReLU + 2x2 max-pooling (ceil), so the cells work at half the side. Per image this cuts the
  cost of every cell about 4x (benchmarks/throughput.py on 2 CPU cores, 28 px: the default network
  went from 84-89 to 644 images/s, against 728 for a plain 3-block CNN; RESULTS.md).
  `default_stem_pool(side)` turns it on for sides >= STEM_POOL_MIN_SIDE.
- Reduction cells (`reduction_cells`): n_cells == 1 -> no reduction; n_cells == 2 ->
  the second cell reduces; n_cells >= 3 -> cells n//3 and 2n//3 (DARTS' rule:
  3 cells -> cells 1 and 2, 6 cells -> cells 2 and 4). A planned reduction is
  dropped (the cell stays a normal cell) when it would take the spatial side
  below 2 (side after = ceil(side / 2)).
- Width: the cell width starts at base_channels and doubles at every reduction
  cell, so 3 cells with base 32 have widths 32/64/128 (the poster's channels).
  The width is the cell's output channels: each of the len(concat) nodes gets
  `node_channels(width, len(concat)) = max(2, width // len(concat))` channels.
- Head (`NetworkSpec.head`): "pool" global-average-pools the last cell's map -> Linear(n_classes) logits (the
  default, and what specs written before the field have); "flatten" flattens the map instead, so the head reads
  every position: it learns faster and ends worse (the run's rule: phases/common.py with_head_for). (The
  poster's 64-32-16 MLP head with dropout learned far slower on short budgets: phases/common.py first_model_spec.)
- Stages (`cell_stages`): stage 0 = the cells before the first reduction cell, stage 1 = from the first
  reduction cell up to the second, stage 2 = from the second reduction cell on (a reduction cell belongs to
  the stage it opens). A spec may give one genotype per stage (`NetworkSpec.stage_genotypes`); each cell is
  built from its stage's genotype, the normal or the reduce part by the cell's kind. A network with fewer
  reductions has fewer stages and leaves the later stage genotypes unused.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from automl_pipeline.search_space.cells import Cell, Edge
from automl_pipeline.search_space.genotype import Genotype, validate_genotype


STEM_POOL_MIN_SIDE = 16
N_STAGES = 3          # at most two reduction cells -> stages 0, 1, 2
HEADS = ("flatten", "pool")


def default_stem_pool(image_side: int) -> bool:
    """Pool in the stem when the image is large enough that the cells still see >= 8 px."""
    return image_side >= STEM_POOL_MIN_SIDE


def reduction_cells(n_cells: int, image_side: int) -> tuple[bool, ...]:
    """Which of the n_cells cells reduce (see the module docstring for the rule)."""
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    wanted = set() if n_cells == 1 else {1} if n_cells == 2 else {n_cells // 3, 2 * n_cells // 3}
    side, layout = image_side, []
    for i in range(n_cells):
        reduce = i in wanted and -(-side // 2) >= 2
        if reduce:
            side = -(-side // 2)
        layout.append(reduce)
    return tuple(layout)


def cell_stages(layout: tuple[bool, ...]) -> tuple[int, ...]:
    """The stage of each cell of a reduction layout: the number of reduction cells up to and including it."""
    stages, stage = [], 0
    for reduction in layout:
        stage += bool(reduction)
        if stage >= N_STAGES:
            raise ValueError(f"a layout with more than {N_STAGES - 1} reduction cells: {layout}")
        stages.append(stage)
    return tuple(stages)


def node_channels(width: int, n_concat: int) -> int:
    """Channels per intermediate node for a cell of the given output width."""
    return max(2, width // n_concat)


def cells_side(image_side: int, stem_pool: bool) -> int:
    """The spatial side the first cell sees."""
    return -(-image_side // 2) if stem_pool else image_side


def output_side(image_side: int, stem_pool: bool, layout: tuple[bool, ...]) -> int:
    """The spatial side of the last cell's output."""
    side = cells_side(image_side, stem_pool)
    for reduction in layout:
        side = -(-side // 2) if reduction else side
    return side


def stack_cells(in_channels: int, base_channels: int, n_cells: int, image_side: int,
                make_cell: Callable[[int, int, int, bool, bool], nn.Module], *, stem_pool: bool = False
                ) -> tuple[nn.Sequential, tuple[bool, ...], nn.ModuleList, int]:
    """The stem and the cell stack of the layout rules above, shared with the DARTS supernet.

    make_cell(C_pp, C_p, width, reduction, reduction_prev) builds one cell; the cell tells its
    output channels as `out_channels`. Returns (stem, reduction layout, cells, channels of the last cell).
    """
    stem = nn.Sequential(nn.Conv2d(in_channels, base_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(base_channels))
    if stem_pool:
        stem.append(nn.ReLU())
        stem.append(nn.MaxPool2d(2, ceil_mode=True))
    layout = reduction_cells(n_cells, cells_side(image_side, stem_pool))
    cells = nn.ModuleList()
    C_pp = C_p = width = base_channels
    reduction_prev = False
    for reduction in layout:
        if reduction:
            width *= 2
        cell = make_cell(C_pp, C_p, width, reduction, reduction_prev)
        cells.append(cell)
        C_pp, C_p, reduction_prev = C_p, cell.out_channels, reduction
    return stem, layout, cells, C_p


@dataclass(frozen=True)
class NetworkSpec:
    """A stacked network as data.

    genotype: the cell of every position, or with `stage_genotypes` the cell of stage 0.
    stage_genotypes: () or one genotype per stage (N_STAGES of them, see `cell_stages`); when given,
      stage_genotypes[0] == genotype.
    head: one of HEADS (module docstring); "pool" where a spec's JSON has none.
    stage_cells: () or the stage genotypes' names (BOHB's pool names, `bohb.worker.genotype_pool`), one per
      stage; labels for the report, the network is built from the genotypes.
    """

    genotype: Genotype
    in_channels: int
    n_classes: int
    image_side: int
    n_cells: int = 3
    base_channels: int = 32
    stem_pool: bool = False
    stage_genotypes: tuple[Genotype, ...] = ()
    stage_cells: tuple[str, ...] = ()
    head: str = "pool"

    def __post_init__(self):
        validate_genotype(self.genotype)
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.in_channels < 1 or self.n_classes < 2 or self.image_side < 1:
            raise ValueError(f"bad shapes in {self}")
        if self.n_cells < 1 or self.base_channels < 1:
            raise ValueError(f"bad network sizes in {self}")
        object.__setattr__(self, "stage_genotypes", tuple(self.stage_genotypes))
        object.__setattr__(self, "stage_cells", tuple(str(c) for c in self.stage_cells))
        if self.stage_genotypes:
            if len(self.stage_genotypes) != N_STAGES:
                raise ValueError(f"stage_genotypes needs {N_STAGES} genotypes, got {len(self.stage_genotypes)}")
            for g in self.stage_genotypes:
                validate_genotype(g)
            if self.stage_genotypes[0] != self.genotype:
                raise ValueError("stage_genotypes[0] must be the spec's genotype")
        if self.stage_cells and len(self.stage_cells) != len(self.stage_genotypes):
            raise ValueError(f"stage_cells {self.stage_cells} needs one name per stage genotype "
                             f"({len(self.stage_genotypes)})")

    def stage_genotype(self, stage: int) -> Genotype:
        """The genotype of a stage's cells."""
        return self.stage_genotypes[stage] if self.stage_genotypes else self.genotype

    def reduction_layout(self) -> tuple[bool, ...]:
        """Which cells reduce (`reduction_cells` at the side the first cell sees)."""
        return reduction_cells(self.n_cells, cells_side(self.image_side, self.stem_pool))

    def cell_stack(self) -> list[dict]:
        """The stack per position: [{"position", "stage", "reduction", "cell" (the stage's name, or None
        without stage_cells), "skips" (skip_connect edges of the cell built there: the normal or the reduce
        part by its kind)}]."""
        stack, layout = [], self.reduction_layout()
        for position, (reduction, stage) in enumerate(zip(layout, cell_stages(layout))):
            g = self.stage_genotype(stage)
            edges = g.reduce if reduction else g.normal
            stack.append({"position": position, "stage": stage, "reduction": bool(reduction),
                          "cell": self.stage_cells[stage] if self.stage_cells else None,
                          "skips": sum(op == "skip_connect" for op, _ in edges)})
        return stack

    def to_json(self) -> dict:
        """JSON-ready dict; `cell_stack` is derived (for the report) and ignored by from_json."""
        d = dataclasses.asdict(self)
        d["genotype"] = self.genotype.to_json()
        d["stage_genotypes"] = [g.to_json() for g in self.stage_genotypes]
        d["stage_cells"] = list(self.stage_cells)
        d["cell_stack"] = self.cell_stack()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "NetworkSpec":
        """Inverse of to_json; reads JSON of earlier versions too (no stem_pool, no stage keys, no head)."""
        d = {k: v for k, v in d.items() if k != "cell_stack"}
        d["genotype"] = Genotype.from_json(d["genotype"])
        d["stem_pool"] = bool(d.get("stem_pool", False))
        d["stage_genotypes"] = tuple(Genotype.from_json(g) for g in d.get("stage_genotypes", ()))
        d["stage_cells"] = tuple(d.get("stage_cells", ()))
        d["head"] = str(d.get("head", "pool"))
        return cls(**d)


class Network(nn.Module):
    """The stacked-cell classifier; see the module docstring."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        stages = iter(cell_stages(spec.reduction_layout()))   # stack_cells builds the cells in order

        def make_cell(C_pp: int, C_p: int, width: int, reduction: bool, reduction_prev: bool) -> Cell:
            g = spec.stage_genotype(next(stages))
            edges, concat = (g.reduce, g.reduce_concat) if reduction else (g.normal, g.normal_concat)
            return Cell(edges, concat, C_pp, C_p, node_channels(width, len(concat)), reduction, reduction_prev)

        self.stem, self.layout, self.cells, C_p = stack_cells(spec.in_channels, spec.base_channels, spec.n_cells,
                                                              spec.image_side, make_cell, stem_pool=spec.stem_pool)
        self.stages = cell_stages(self.layout)
        if spec.head == "pool":
            self.pool, features = nn.AdaptiveAvgPool2d(1), C_p
        else:
            self.pool, features = nn.Identity(), C_p * output_side(spec.image_side, spec.stem_pool, self.layout) ** 2
        self.head = nn.Linear(features, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.head(torch.flatten(self.pool(s1), 1))

    def set_surrogate_beta(self, beta: float) -> None:
        """Auxiliary beta * x skip on every stride-1 edge (0 = off)."""
        for m in self.modules():
            if isinstance(m, Edge):
                m.beta = float(beta)


def build_network(spec: NetworkSpec) -> Network:
    """Build the classifier described by `spec` (logits of shape (N, n_classes))."""
    return Network(spec)
