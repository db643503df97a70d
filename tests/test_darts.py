"""DARTS: MixedOp, supernet, discretisation, sampling and the deadline-aware search."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from automl_pipeline.darts import (DartsConfig, MixedOp, SuperNet, derive_genotype,
                                   estimate_epoch_seconds, n_edges_for, run_darts, sample_genotype, skip_count,
                                   with_more_skips)
from automl_pipeline.darts.search import _Search
from automl_pipeline.search_space import EXTRA_OPS, OPS, TEMPLATE_OPS, validate_genotype
from automl_pipeline.training import surrogate_beta
from automl_pipeline.training.tensors import TensorData

OPS5 = TEMPLATE_OPS   # none, skip_connect, conv_3x3, res_basic, res_bottleneck


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor((d.images[:, None] / 16.0 - 0.3) / 0.4, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    return TensorData(x[:32], y[:32]), TensorData(x[32:64], y[32:64])


def tiny(**kw) -> DartsConfig:
    base = dict(epochs=2, batch_size=16, n_cells=2, base_channels=4, seed=0)
    return DartsConfig(**(base | kw))


CE = torch.nn.CrossEntropyLoss()


# --------------------------------------------------------------------------- MixedOp / supernet

@pytest.mark.parametrize("k,name", list(enumerate(sorted(OPS))))
@pytest.mark.parametrize("stride", [1, 2])
def test_mixed_op_one_hot_equals_that_op(k, name, stride):
    torch.manual_seed(0)
    ops = tuple(sorted(OPS))
    mixed = MixedOp(4, stride, ops)
    x = torch.randn(3, 4, 8, 8)
    weights = F.one_hot(torch.tensor(k), len(ops)).float()
    assert torch.allclose(mixed(x, weights), mixed._ops[k](x), atol=1e-6)


def test_mixed_op_surrogate_skip_only_on_stride_one():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 8)
    w = torch.full((len(OPS5),), 1 / len(OPS5))
    m1 = MixedOp(4, 1, OPS5)
    plain = m1(x, w)
    m1.beta = 0.5
    assert torch.allclose(m1(x, w), plain + 0.5 * x, atol=1e-6)
    m2 = MixedOp(4, 2, OPS5)
    plain2 = m2(x, w)
    m2.beta = 0.5
    assert torch.allclose(m2(x, w), plain2, atol=1e-6)


@pytest.mark.parametrize("n_nodes,n_edges", [(4, 14), (3, 9), (2, 5)])
def test_supernet_alpha_shapes_and_logits(n_nodes, n_edges):
    assert n_edges_for(n_nodes) == n_edges
    net = SuperNet(1, 10, 8, ops=OPS5 + EXTRA_OPS, n_cells=3, base_channels=4, n_nodes=n_nodes)
    assert net.alphas_normal.shape == net.alphas_reduce.shape == (n_edges, 9)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    arch = {id(p) for p in net.arch_parameters()}
    assert not arch & {id(p) for p in net.weight_parameters()}


# --------------------------------------------------------------------------- discretisation

def cell_weights(winners: dict[int, tuple[str, float]], ops=OPS5, n_edges=14, rest=0.01) -> np.ndarray:
    """Weights with `rest` everywhere and edge -> (op, weight) set; rows are not renormalised."""
    a = np.full((n_edges, len(ops)), rest)
    for e, (op, w) in winners.items():
        a[e, ops.index(op)] = w
    return a


# edges of node 2: 0-1, node 3: 2-4, node 4: 5-8, node 5: 9-13 (input index = edge - first edge)
NORMAL = cell_weights({0: ("conv_3x3", 0.9), 1: ("res_basic", 0.8),
                       2: ("res_bottleneck", 0.5), 4: ("conv_3x3", 0.7),
                       6: ("skip_connect", 0.6), 8: ("res_basic", 0.65),
                       9: ("skip_connect", 0.9), 13: ("skip_connect", 0.8)})


def test_derive_topk_per_node():
    g = derive_genotype(NORMAL, NORMAL, OPS5)
    assert g.normal == (("conv_3x3", 0), ("res_basic", 1),
                        ("res_bottleneck", 0), ("conv_3x3", 2),
                        ("skip_connect", 1), ("res_basic", 3),
                        ("skip_connect", 0), ("skip_connect", 4))
    assert g.normal_concat == (2, 3, 4, 5)
    validate_genotype(g)


def test_derive_excludes_zero_unless_allowed():
    a = NORMAL.copy()
    a[0, OPS5.index("none")] = 0.95          # edge 0: none beats conv_3x3 (0.9)
    assert derive_genotype(a, a, OPS5).normal[0] == ("conv_3x3", 0)
    assert derive_genotype(a, a, OPS5, allow_zero=True).normal[0] == ("none", 0)


def test_grouping_changes_the_pick():
    a = NORMAL.copy()
    # edge 0: skip 0.40 alone beats conv_3x3 0.30, but the conv group (0.30 + 0.31 + rest) wins
    a[0] = [0.0, 0.40, 0.30, 0.31, 0.0]
    assert derive_genotype(a, a, OPS5).normal[0] == ("skip_connect", 0)
    assert derive_genotype(a, a, OPS5, grouping=True).normal[0] == ("res_basic", 0)


def test_grouping_changes_which_inputs_win():
    a = np.full((14, 5), 0.0)
    a[0] = [0, 0.5, 0.1, 0.1, 0.1]    # strongest single op
    a[1] = [0, 0.0, 0.3, 0.3, 0.3]    # strongest group (0.9)
    a[2:] = [0, 0.2, 0.2, 0.2, 0.2]
    g = derive_genotype(a, a, OPS5, k=1)
    assert g.normal[0] == ("skip_connect", 0)
    assert derive_genotype(a, a, OPS5, k=1, grouping=True).normal[0] == ("conv_3x3", 1)


def test_max_skips_replaces_weakest_skips_in_normal_cell_only():
    g = derive_genotype(NORMAL, NORMAL, OPS5, max_skips=1)
    skips = [e for e in g.normal if e[0] == "skip_connect"]
    assert skips == [("skip_connect", 0)]                       # the strongest (0.9) survives
    assert g.normal[4][1] == 1 and g.normal[7][1] == 4          # inputs kept, ops replaced
    assert g.normal[4][0] != "skip_connect" and g.normal[7][0] != "skip_connect"
    assert sum(op == "skip_connect" for op, _ in g.reduce) == 3  # reduce untouched


def test_with_more_skips_turns_the_edges_with_the_largest_skip_weight_into_skips():
    a = NORMAL.copy()
    a[4, OPS5.index("skip_connect")] = 0.3      # node 3's conv_3x3 from state 2: the largest skip weight
    a[1, OPS5.index("skip_connect")] = 0.2      # node 2's res_basic from state 1: the second
    g = derive_genotype(a, a, OPS5)
    more = with_more_skips(g, a, OPS5, extra=2)
    assert more.normal == (("conv_3x3", 0), ("skip_connect", 1),
                           ("res_bottleneck", 0), ("skip_connect", 2),
                           ("skip_connect", 1), ("res_basic", 3),
                           ("skip_connect", 0), ("skip_connect", 4))
    assert more.reduce == g.reduce and more.normal_concat == g.normal_concat
    validate_genotype(more)
    assert with_more_skips(g, a, OPS5, extra=0) == g
    with pytest.raises(ValueError):
        with_more_skips(g, a[:9], OPS5, extra=1)             # 3 nodes of weights for a 4-node genotype


def test_derive_rejects_bad_shapes():
    with pytest.raises(ValueError):
        derive_genotype(np.ones((13, 5)) / 5, np.ones((14, 5)) / 5, OPS5)
    with pytest.raises(ValueError):
        derive_genotype(np.ones((14, 4)) / 4, np.ones((14, 4)) / 4, OPS5)


def test_sample_genotype_is_seeded_valid_and_sharpens_with_temperature():
    rng = np.random.default_rng(1)
    a = rng.dirichlet(np.ones(5), size=14)
    g1 = sample_genotype(a, a, OPS5, temperature=1.0, seed=3)
    assert g1 == sample_genotype(a, a, OPS5, temperature=1.0, seed=3)
    validate_genotype(g1)
    assert all(op != "none" for op, _ in g1.normal + g1.reduce)
    assert len({sample_genotype(a, a, OPS5, temperature=1.0, seed=s) for s in range(6)}) > 1
    cold = sample_genotype(NORMAL, NORMAL, OPS5, temperature=0.02, seed=0)
    assert cold == derive_genotype(NORMAL, NORMAL, OPS5)
    with pytest.raises(ValueError):
        sample_genotype(a, a, OPS5, temperature=0.0, seed=0)


# --------------------------------------------------------------------------- schedules

def test_darts_surrogate_beta_falls_to_zero_over_the_planned_epochs():
    """run_darts takes the one schedule with zero at the last planned epoch, max(E - 1, 1)."""
    assert [surrogate_beta(1.0, e, 5 - 1) for e in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert surrogate_beta(0.6, 0, max(1 - 1, 1)) == 0.6               # one planned epoch: beta0 throughout
    assert surrogate_beta(1.0, 7, 5 - 1) == 0.0


def test_skip_count():
    w = np.full((14, 5), 0.2)
    assert skip_count(w, OPS5, 0.3) == 0
    w[[0, 3, 5], 1] = 0.31
    assert skip_count(w, OPS5, 0.3) == 3
    assert skip_count(w, ("conv_3x3",) * 5, 0.3) == 0


# --------------------------------------------------------------------------- the search

def test_search_updates_alphas_and_reports(digits):
    train, val = digits
    seen = []
    cfg = tiny()
    res = run_darts(train, val, 10, cfg, time_left=lambda: 1e9, loss=CE, on_epoch=seen.append,
                    init_alphas=(np.zeros((14, 5)), np.zeros((14, 5))))
    assert res.stop_reason == "completed" and not res.stopped_early
    assert res.epochs_run == res.epochs_planned == 2 and res.steps_run == 4
    assert len(seen) == len(res.epoch_seconds) == len(res.alphas_per_epoch) == 2
    assert res.beta_per_epoch == [1.0, 0.0] and res.skip_count_per_epoch == [0, 0]
    uniform = np.full((14, 5), 0.2)
    for cell in ("normal", "reduce"):
        first, last = np.array(res.alphas_per_epoch[0][cell]), np.array(res.alphas_per_epoch[1][cell])
        assert not np.allclose(first, uniform, atol=1e-6)        # alphas got gradients and moved
        assert not np.allclose(first, last, atol=1e-7)
        assert np.allclose(last.sum(1), 1.0)
    assert np.allclose(res.alphas_normal, np.array(res.alphas_per_epoch[-1]["normal"]))
    validate_genotype(res.genotype)
    report = json.loads(json.dumps(res.report()))
    for key in ("epochs_planned", "epochs_run", "stopped_early", "stop_reason", "skip_count_per_epoch",
                "beta_per_epoch", "alphas_per_epoch", "genotype", "seconds"):
        assert key in report
    assert report["genotype"] == res.genotype.to_json()


def test_skip_limit_stops_and_restores_alphas_from_before_the_epoch(digits):
    train, val = digits
    init = np.zeros((14, 5))
    init[:, OPS5.index("skip_connect")] = 3.0     # softmax skip weight ~0.83 on every edge
    res = run_darts(train, val, 10, tiny(epochs=3), time_left=lambda: 1e9, loss=CE,
                    init_alphas=(init, np.zeros((14, 5))))
    assert res.stop_reason == "skip_limit" and res.stopped_early
    assert res.epochs_run == 1 and res.skip_count_per_epoch == [14]
    before = torch.softmax(torch.tensor(init), -1).numpy()
    assert np.allclose(res.alphas_normal, before, atol=1e-6)
    assert not np.allclose(np.array(res.alphas_per_epoch[0]["normal"]), before, atol=1e-7)


def test_uniform_alphas_do_not_trigger_skip_limit(digits):
    train, val = digits
    res = run_darts(train, val, 10, tiny(), time_left=lambda: 1e9, loss=CE)
    assert res.stop_reason == "completed" and res.skip_count_per_epoch == [0, 0]


class TickingLoss(torch.nn.Module):
    """Cross-entropy that advances a fake clock by `tick` seconds per call."""

    def __init__(self, tick: float):
        super().__init__()
        self.now, self.tick = 0.0, tick

    def clock(self) -> float:
        return self.now

    def forward(self, logits, y):
        self.now += self.tick
        return F.cross_entropy(logits, y)


def test_deadline_stops_mid_search_without_overrun(digits):
    train, val = digits
    loss = TickingLoss(1.0)                       # one step = 2 loss calls = 2 fake seconds
    deadline = 9.0
    res = run_darts(train, val, 10, tiny(epochs=5), time_left=lambda: deadline - loss.clock(), loss=loss,
                    clock=loss.clock)
    # steps at t=0,2,4,6; at t=8 only 1 s is left, less than 1.5 x 2 s -> stop
    assert res.stop_reason == "deadline" and res.stopped_early
    assert res.steps_run == 4 and res.epochs_run == 2
    assert loss.clock() <= deadline
    assert res.epoch_seconds == [4.0, 4.0]


def test_deadline_with_hint_refuses_the_first_step(digits):
    train, val = digits
    res = run_darts(train, val, 10, tiny(), time_left=lambda: 1.0, loss=CE, step_seconds=5.0)
    assert res.stop_reason == "deadline" and res.steps_run == 0 and res.epochs_run == 0
    validate_genotype(res.genotype)


def test_second_order_search_runs_one_step(digits):
    train, val = digits
    cfg = tiny(epochs=1, batch_size=32, second_order=True)
    res = run_darts(train, val, 10, cfg, time_left=lambda: 1e9, loss=CE,
                    init_alphas=(np.zeros((14, 5)), np.zeros((14, 5))))
    assert res.steps_run == 1 and res.stop_reason == "completed"
    assert np.isfinite(res.alphas_normal).all()
    assert not np.allclose(res.alphas_normal, 0.2, atol=1e-7)


def test_second_order_gradient_matches_exact_unrolled_gradient_and_restores_state(digits):
    # float64 and a smooth net (ReLU -> Tanh; ops without functional ReLUs, no reduction), so that
    # finite differences are accurate and the test checks the formula, not DARTS' crude radius
    train, val = (TensorData(d.x.double(), d.y) for d in digits)
    torch.manual_seed(0)
    lr = 0.5
    cfg = tiny(batch_size=32, w_lr=lr, w_wd=0.0, n_cells=1, ops=("skip_connect", "conv_3x3"))
    search = _Search(train, val, 10, cfg, CE)
    for module in list(search.model.modules()):
        for name, child in module.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(module, name, torch.nn.Tanh())
    search.model.double()
    search.fd_eps = 1e-6
    W, A = search.weights, search.arch
    state = [t.detach().clone() for t in list(W) + list(search.model.buffers())]
    xt, yt, xv, yv = train.x, train.y, val.x, val.y
    _, _, approx = search._second_order(xt, yt, xv, yv)
    assert all(torch.equal(a, b) for a, b in zip(state, list(W) + list(search.model.buffers())))
    # exact: d/da L_val(w - lr * dL_train/dw (w, a), a), by double backprop through the virtual step
    g = torch.autograd.grad(CE(search.model(xt), yt), W, create_graph=True, allow_unused=True)
    virtual = [p - lr * gi if gi is not None else p for p, gi in zip(W, g)]
    params = dict(search.model.named_parameters())
    names = [n for n, p in params.items() if all(p is not a for a in A)]
    out = torch.func.functional_call(search.model, {**params, **dict(zip(names, virtual))}, (xv,))
    exact = torch.autograd.grad(CE(out, yv), A[:1])   # one normal cell: alphas_reduce unused
    first_order = torch.autograd.grad(CE(search.model(xv), yv), A[:1])
    err = torch.norm(approx[0] - exact[0]).item()
    assert err < 1e-3 * torch.norm(exact[0]).item()
    assert err < 0.05 * torch.norm(first_order[0] - exact[0]).item()   # the second-order term matters here


def test_estimate_epoch_seconds_times_steps_after_a_warm_up_and_scales_to_an_epoch(digits, monkeypatch):
    """One search step costs 0.05 s after a first one of 0.6 s (start-up): an epoch is the mean of the
    n_batches timed steps (the first one left out) times the steps per epoch, here 32 // 16 = 2. Three
    timed steps also need more batches than one epoch holds (a second pass over the data)."""
    train, val = digits
    batches = []

    def step(self, x, y):
        batches.append((x.shape[0], y.shape[0]))
        time.sleep(0.6 if len(batches) == 1 else 0.05)

    monkeypatch.setattr(_Search, "step", step)
    seconds = estimate_epoch_seconds(train, val, 10, tiny(), CE, n_batches=3)
    assert batches == [(16, 16)] * 4                   # one warm-up step + 3 timed, full batches only
    # 2 x 0.05 = 0.1 (sleep may overshoot on a loaded machine); with the warm-up step in the mean it is 0.375
    assert 0.1 <= seconds < 0.25, seconds
