"""Architecture weights -> discrete genotype: derivation (top-k) and sampling.

Inputs are the SOFTMAXED architecture weights (rows sum to 1, as stored in
DartsResult), shape (n_edges, n_ops), edges in `supernet.edge_inputs` order (node by node, inputs in order).
"""
from __future__ import annotations

import numpy as np

from automl_pipeline.search_space.genotype import Genotype, node_edges

# Operation groups for "discretization by grouping" (thesis section 3.5).
GROUPS = {"none": "none", "skip_connect": "skip", "max_pool_3x3": "pool", "avg_pool_3x3": "pool"}


def op_group(op: str) -> str:
    """none | skip | pool | conv (every other op is a conv)."""
    return GROUPS.get(op, "conv")


def _check(alphas: np.ndarray, ops: tuple[str, ...]) -> tuple[np.ndarray, int]:
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != len(ops):
        raise ValueError(f"alphas of shape {a.shape} do not match {len(ops)} ops")
    n_nodes, n = 0, 0
    while n < a.shape[0]:
        n += n_nodes + 2
        n_nodes += 1
    if n != a.shape[0]:
        raise ValueError(f"{a.shape[0]} edges is not a full cell with two inputs")
    if (a < 0).any():
        raise ValueError("alphas must be softmaxed weights (non-negative)")
    return a, n_nodes


def _allowed(ops: tuple[str, ...], allow_zero: bool) -> np.ndarray:
    mask = np.array([allow_zero or op != "none" for op in ops])
    if not mask.any():
        raise ValueError("no selectable op (only 'none' and allow_zero=False)")
    return mask


def _group(a: np.ndarray, ops: tuple[str, ...], mask: np.ndarray) -> np.ndarray:
    """Per edge: pick the group with the largest summed weight (selectable ops only)
    and give that sum to the group's strongest op; other weights are unchanged."""
    out = a.copy()
    groups = [op_group(op) for op in ops]
    for e in range(a.shape[0]):
        sums: dict[str, float] = {}
        for k, g in enumerate(groups):
            if mask[k]:
                sums[g] = sums.get(g, 0.0) + a[e, k]
        best_group = max(sums, key=lambda g: (sums[g], -groups.index(g)))
        members = [k for k, g in enumerate(groups) if g == best_group and mask[k]]
        strongest = max(members, key=lambda k: (a[e, k], -k))
        out[e, strongest] = sums[best_group]
    return out


def _select(a: np.ndarray, n_nodes: int, ops: tuple[str, ...], mask: np.ndarray,
            k: int) -> list[tuple[str, int, int, float]]:
    """(op, input, edge, weight) of the k strongest edges per node; edge strength = its best selectable op."""
    chosen = []
    e0 = 0
    for j in range(n_nodes):
        n_in = j + 2
        cands = []
        for i in range(n_in):
            row = np.where(mask, a[e0 + i], -np.inf)
            best = int(np.argmax(row))
            cands.append((float(row[best]), i, best))
        cands.sort(key=lambda c: (-c[0], c[1]))
        for w, i, best in sorted(cands[:min(k, n_in)], key=lambda c: c[1]):
            chosen.append((ops[best], i, e0 + i, w))
        e0 += n_in
    return chosen


def _cell(alphas, ops, k, allow_zero, grouping, max_skips):
    a, n_nodes = _check(alphas, ops)
    mask = _allowed(ops, allow_zero)
    weights = _group(a, ops, mask) if grouping else a
    chosen = _select(weights, n_nodes, ops, mask, k)
    if max_skips is not None:
        skips = sorted((w, n) for n, (op, _, _, w) in enumerate(chosen) if op == "skip_connect")
        no_skip = mask & np.array([op != "skip_connect" for op in ops])
        for _, n in skips[:max(0, len(skips) - max_skips)]:
            op, i, e, _ = chosen[n]
            if no_skip.any():
                best = int(np.argmax(np.where(no_skip, a[e], -np.inf)))
                chosen[n] = (ops[best], i, e, float(a[e, best]))
    return tuple((op, i) for op, i, _, _ in chosen), tuple(range(2, n_nodes + 2))


def derive_genotype(alphas_normal, alphas_reduce, ops, *, k: int = 2, allow_zero: bool = False,
                    grouping: bool = False, max_skips: int | None = None) -> Genotype:
    """Discretise softmaxed weights (DARTS' rule, with options).

    Per edge the strongest selectable op wins ("none" is selectable only with
    allow_zero); per node the k edges with the strongest winners are kept (ties:
    lower input index), listed by input index. grouping=True first applies the
    thesis' discretisation by grouping (none/skip/pool/conv; see `_group`).
    max_skips=M keeps at most M skip_connect edges in the NORMAL cell: the weakest
    extra skips are replaced by their edge's best non-skip op (same input).
    """
    ops = tuple(ops)
    normal, normal_concat = _cell(alphas_normal, ops, k, allow_zero, grouping, max_skips)
    reduce, reduce_concat = _cell(alphas_reduce, ops, k, allow_zero, grouping, None)
    return Genotype(normal, normal_concat, reduce, reduce_concat)


def with_more_skips(genotype: Genotype, alphas_normal, ops, *, extra: int) -> Genotype:
    """A skip-heavier variant of a genotype derived from these weights: of its NORMAL cell's non-skip
    edges, the `extra` ones whose skip_connect weight is largest (ties: the earlier edge) become
    skip_connect from the same input; the reduction cell is unchanged. The edges DARTS was closest
    to making skips are the ones that become skips (BOHB's pool, `bohb.worker.genotype_pool`)."""
    ops = tuple(ops)
    if "skip_connect" not in ops:
        raise ValueError(f"no skip_connect among the ops {ops}")
    a, n_nodes = _check(alphas_normal, ops)
    nodes = node_edges(genotype.normal, genotype.normal_concat)
    if len(nodes) != n_nodes:
        raise ValueError(f"the genotype has {len(nodes)} normal nodes, the weights {n_nodes}")
    skip = ops.index("skip_connect")
    edges = [edge for node in nodes for edge in node]
    rows = [j * (j + 3) // 2 + i for j, node in enumerate(nodes) for _, i in node]   # node j's inputs start there
    candidates = sorted((n for n, (op, _) in enumerate(edges) if op != "skip_connect"),
                        key=lambda n: (-a[rows[n], skip], n))
    for n in candidates[:max(0, int(extra))]:
        edges[n] = ("skip_connect", edges[n][1])
    return genotype._replace(normal=tuple(edges))


def amplify(weights: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(w) / T) along the last axis == w**(1/T) renormalised."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = np.log(np.clip(weights, 1e-12, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=-1, keepdims=True)


def _sample_cell(alphas, ops, mask, k, temperature, rng):
    a, n_nodes = _check(alphas, ops)
    a = np.where(mask, a, 0.0)
    edges = []
    e0 = 0
    for j in range(n_nodes):
        n_in = j + 2
        picked_ops, scores = [], []
        for i in range(n_in):
            p = amplify(a[e0 + i], temperature) * mask
            p /= p.sum()
            o = int(rng.choice(len(ops), p=p))
            picked_ops.append(o)
            scores.append(a[e0 + i, o])
        q = amplify(np.asarray(scores), temperature)
        n_pick = min(k, n_in)
        # rng.choice without replacement needs n_pick nonzero probabilities
        q = np.clip(q, 1e-12, None)
        inputs = sorted(int(i) for i in rng.choice(n_in, size=n_pick, replace=False, p=q / q.sum()))
        edges += [(ops[picked_ops[i]], i) for i in inputs]
        e0 += n_in
    return tuple(edges), tuple(range(2, n_nodes + 2))


def sample_genotype(alphas_normal, alphas_reduce, ops, *, temperature: float, seed: int, k: int = 2,
                    allow_zero: bool = False) -> Genotype:
    """Sample a genotype from the amplified DARTS distribution; same seed -> same genotype.

    Exact procedure, with rng = numpy.random.default_rng(seed), normal cell first,
    then reduce; nodes in order; edges of a node in input order:
    1. for each candidate edge draw one op from softmax(log(w_edge) / T) over the
       selectable ops ("none" only with allow_zero);
    2. the edge's score is the (unamplified) weight of its drawn op; draw k distinct
       inputs without replacement with probabilities softmax(log(scores) / T);
    3. the node keeps (drawn op, input) for those inputs, listed by input index.
    T < 1 sharpens towards the derived genotype, T = 1 samples the DARTS weights
    as they are, T > 1 flattens.
    """
    ops = tuple(ops)
    mask = _allowed(ops, allow_zero)
    rng = np.random.default_rng(seed)
    normal, normal_concat = _sample_cell(alphas_normal, ops, mask, k, temperature, rng)
    reduce, reduce_concat = _sample_cell(alphas_reduce, ops, mask, k, temperature, rng)
    return Genotype(normal, normal_concat, reduce, reduce_concat)
