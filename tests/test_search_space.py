"""Contracts of the op registry, genotypes, cells and the stacked network."""
from __future__ import annotations

import json
import math

import pytest
import torch

from automl_pipeline.search_space import (DEFAULT_GENOTYPE, EXTRA_OPS, OPS, TEMPLATE_OPS, Genotype, NetworkSpec,
                                          build_network, cell_stages, make_op, reduction_cells, validate_genotype)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_registry_is_template_plus_extra():
    assert set(OPS) == set(TEMPLATE_OPS) | set(EXTRA_OPS)
    assert len(TEMPLATE_OPS) + len(EXTRA_OPS) == len(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("side", [8, 7])
def test_op_contract(name, stride, side):
    torch.manual_seed(0)
    op = make_op(name, 3, 6, stride)
    x = torch.randn(4, 3, side, side, requires_grad=True)
    out = op(x)
    expected_side = math.ceil(side / stride)
    assert out.shape == (4, 6, expected_side, expected_side)
    params = list(op.parameters())
    if params:
        (out * torch.randn_like(out)).sum().backward()
        assert all(p.grad is not None for p in params)
        assert any(p.grad.abs().sum() > 0 for p in params)
    else:
        assert name == "none"


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_same_channels_stride_one_keeps_shape(name):
    op = make_op(name, 4, 4, 1)
    assert op(torch.randn(2, 4, 5, 5)).shape == (2, 4, 5, 5)


def test_skip_is_identity_when_shapes_match_and_zero_is_zero():
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(make_op("skip_connect", 4, 4, 1)(x), x)
    assert not make_op("none", 4, 6, 2)(x).any()


def test_unknown_op_and_bad_stride_raise():
    with pytest.raises(ValueError):
        make_op("conv_9x9", 4, 4, 1)
    with pytest.raises(ValueError):
        make_op("conv_3x3", 4, 4, 3)


def _roundtrip(g: Genotype) -> Genotype:
    return Genotype.from_json(json.loads(json.dumps(g.to_json())))


def test_genotype_json_roundtrip():
    g = DEFAULT_GENOTYPE
    back = _roundtrip(g)
    assert back == g
    assert isinstance(back.normal[0], tuple) and isinstance(back.normal_concat, tuple)
    three_nodes = Genotype((("conv_3x3", 0), ("none", 1), ("skip_connect", 2), ("res_basic", 0),
                            ("res_bottleneck", 3), ("conv_3x3", 2)), (2, 3, 4),
                           (("conv_3x3", 0), ("res_basic", 1), ("skip_connect", 2), ("res_basic", 0),
                            ("res_bottleneck", 3), ("conv_3x3", 2)), (2, 3, 4))
    assert _roundtrip(three_nodes) == three_nodes


@pytest.mark.parametrize("bad", [
    {"normal": [["conv_3x3", 2], ["conv_3x3", 1]], "normal_concat": [2]},        # node 2 reads itself
    {"normal": [["conv_9x9", 0], ["conv_3x3", 1]], "normal_concat": [2]},        # unknown op
    {"normal": [["conv_3x3", 0], ["conv_3x3", 1], ["conv_3x3", 1]], "normal_concat": [2, 3]},  # uneven
])
def test_genotype_from_json_rejects_malformed(bad):
    d = DEFAULT_GENOTYPE.to_json() | bad
    with pytest.raises(ValueError):
        Genotype.from_json(d)


def test_default_genotype_is_valid_template_cell():
    validate_genotype(DEFAULT_GENOTYPE)
    assert len(DEFAULT_GENOTYPE.normal) == 8 and DEFAULT_GENOTYPE.normal_concat == (2, 3, 4, 5)
    assert {op for op, _ in DEFAULT_GENOTYPE.normal + DEFAULT_GENOTYPE.reduce} <= set(TEMPLATE_OPS)


@pytest.mark.parametrize("n_cells,side,expected", [
    (1, 28, (False,)),
    (2, 28, (False, True)),
    (3, 28, (False, True, True)),
    (6, 28, (False, False, True, False, True, False)),
    (3, 4, (False, True, False)),     # 4 -> 2, a second reduction would go below 2x2
    (3, 2, (False, False, False)),
])
def test_reduction_rule(n_cells, side, expected):
    assert reduction_cells(n_cells, side) == expected


def _spec(side=8, n_cells=3, in_channels=1, base=8, genotype=DEFAULT_GENOTYPE, **kw) -> NetworkSpec:
    return NetworkSpec(genotype=genotype, in_channels=in_channels, n_classes=5, image_side=side,
                       n_cells=n_cells, base_channels=base, **kw)


@pytest.mark.parametrize("head", ["pool", "flatten"])
@pytest.mark.parametrize("side,stem_pool", [(8, False), (28, False), (28, True), (32, True), (3, False)])
@pytest.mark.parametrize("n_cells", range(1, 7))
def test_network_logits_shape(side, stem_pool, n_cells, head):
    net = build_network(_spec(side=side, n_cells=n_cells, in_channels=3, base=4, stem_pool=stem_pool, head=head))
    assert net(torch.randn(2, 3, side, side)).shape == (2, 5)


def test_flatten_head_sees_every_position_of_the_last_map():
    # 28 px, stem pool -> 14, reductions -> 7 -> 4: the head reads 4 x 4 positions of the last cell's 32 channels
    flat = build_network(_spec(side=28, base=8, stem_pool=True, head="flatten"))
    pooled = build_network(_spec(side=28, base=8, stem_pool=True, head="pool"))
    assert flat.head.in_features == 32 * 4 * 4 and pooled.head.in_features == 32
    # no reduction at 8 px: the head reads all 8 x 8 positions
    assert build_network(_spec(side=8, n_cells=1, base=8, head="flatten")).head.in_features == 8 * 8 * 8


def test_head_json_roundtrip_old_json_and_bad_head():
    spec = _spec(side=28, head="flatten")
    assert NetworkSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    old = {k: v for k, v in spec.to_json().items() if k != "head"}
    assert NetworkSpec.from_json(old).head == "pool"        # specs written before the field
    with pytest.raises(ValueError, match="head"):
        _spec(head="mlp")


def test_network_feature_map_never_below_two():
    net = build_network(_spec(side=3, n_cells=6, base=4))
    seen = []
    for cell in net.cells:
        cell.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    net(torch.randn(2, 1, 3, 3))
    assert min(seen) == 2


def test_same_spec_same_parameter_count_and_spec_json_roundtrip():
    spec = _spec(side=28, n_cells=4, in_channels=3, base=8)
    count = lambda: sum(p.numel() for p in build_network(spec).parameters())
    assert count() == count()
    back = NetworkSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert back == spec
    assert sum(p.numel() for p in build_network(back).parameters()) == count()


def test_default_size_is_modest_and_channels_double():
    spec = NetworkSpec(genotype=DEFAULT_GENOTYPE, in_channels=3, n_classes=5, image_side=28)
    net = build_network(spec)
    assert 10_000 < sum(p.numel() for p in net.parameters()) < 1_000_000
    assert [c.out_channels for c in net.cells] == [32, 64, 128]


def test_surrogate_beta_changes_output_and_zero_restores_it():
    torch.manual_seed(0)
    net = build_network(_spec(base=4)).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        base = net(x)
        net.set_surrogate_beta(0.7)
        with_beta = net(x)
        net.set_surrogate_beta(0.0)
        again = net(x)
    assert not torch.allclose(base, with_beta)
    assert torch.allclose(base, again)


def test_bad_spec_raises():
    with pytest.raises(ValueError):
        _spec(n_cells=0)
    with pytest.raises(ValueError):
        _spec(base=0)


# --------------------------------------------------------------------------- per-stage cells

NO_SKIP = DEFAULT_GENOTYPE._replace(normal=tuple(("conv_3x3" if op == "skip_connect" else op, i)
                                                 for op, i in DEFAULT_GENOTYPE.normal))
ALL_SKIP = DEFAULT_GENOTYPE._replace(normal=tuple(("skip_connect", i) for _, i in DEFAULT_GENOTYPE.normal))


def _staged(n_cells=5, side=28, **kw) -> NetworkSpec:
    return _spec(side=side, n_cells=n_cells, base=4, genotype=NO_SKIP, stage_genotypes=(NO_SKIP, DEFAULT_GENOTYPE,
                 ALL_SKIP), stage_cells=("darts", "default", "skip_heavy"), **kw)


@pytest.mark.parametrize("layout,stages", [
    ((False,), (0,)), ((False, True), (0, 1)), ((False, True, True), (0, 1, 2)),
    ((False, True, False, True, False), (0, 1, 1, 2, 2)), ((True, False), (1, 1))])
def test_cell_stages_open_at_each_reduction(layout, stages):
    assert cell_stages(layout) == stages


def test_each_position_is_built_from_its_stage_genotype():
    spec = _staged()
    net = build_network(spec)
    assert net.layout == (False, True, False, True, False) and net.stages == (0, 1, 1, 2, 2)
    identities = [sum(isinstance(e.op, torch.nn.Identity) for e in cell.edges) for cell in net.cells]
    assert identities == [0, 3, 2, 3, 8]     # normal cells NO_SKIP, DEFAULT, ALL_SKIP; reduce: DEFAULT's 3 skips
    stack = spec.cell_stack()
    assert [c["cell"] for c in stack] == ["darts", "default", "default", "skip_heavy", "skip_heavy"]
    assert [c["skips"] for c in stack if not c["reduction"]] == [0, 2, 8]
    assert [c["skips"] for c in stack if c["reduction"]] == [3, 3]       # DEFAULT_GENOTYPE.reduce
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    # one reduction: stage 2's genotype is unused
    assert [c["stage"] for c in _staged(n_cells=2).cell_stack()] == [0, 1]


def test_stage_genotypes_json_roundtrip_and_old_json():
    spec = _staged()
    d = json.loads(json.dumps(spec.to_json()))
    assert d["cell_stack"] == spec.cell_stack() and d["stage_cells"] == ["darts", "default", "skip_heavy"]
    assert NetworkSpec.from_json(d) == spec
    old = {k: v for k, v in _spec().to_json().items() if k not in ("stage_genotypes", "stage_cells", "cell_stack")}
    back = NetworkSpec.from_json(old)              # JSON of earlier runs (checkpoints, model.pt metadata)
    assert back == _spec() and back.stage_genotypes == () and back.stage_cells == ()
    assert [c["cell"] for c in back.cell_stack()] == [None] * 3


def test_bad_stage_genotypes_raise():
    with pytest.raises(ValueError, match="3 genotypes"):
        _spec(stage_genotypes=(DEFAULT_GENOTYPE,))
    with pytest.raises(ValueError, match="spec's genotype"):
        _spec(stage_genotypes=(NO_SKIP, DEFAULT_GENOTYPE, ALL_SKIP))
    with pytest.raises(ValueError, match="one name per stage"):
        _spec(stage_genotypes=(DEFAULT_GENOTYPE,) * 3, stage_cells=("default",))
