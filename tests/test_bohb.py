"""BOHB phase: space, trial worker, time-bounded phase, distributed workers, serialisation fix.

CPU-only and small: digits subsets at 8x8, one- or two-cell networks, phases of ~20 s.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import serpent
import torch
from ConfigSpace import Categorical, Configuration, ConfigurationSpace, Float, Integer

from automl_pipeline.bohb import worker as worker_module
from automl_pipeline.bohb.budgets import FIRST_BRACKET_SHARE, bracket_sizes, choose_budgets, hpbandster_budgets
from automl_pipeline.bohb.search import BohbOptions, run_bohb
from automl_pipeline.bohb.results import BohbResult, TrialRecord, select_incumbent, top_rung
from automl_pipeline.bohb.serialization import register_numpy_serializers
from submission import to_jsonable
from automl_pipeline.bohb.space import STAGE_CELL_KEYS, build_config_space, fixed_hyperparameters
from automl_pipeline.bohb.worker import (SKIP_HEAVY_EXTRA, TrialContext, budget_epochs, config_cells,
                                         config_to_network_spec, config_to_train_config, evaluate_config,
                                         genotype_pool, TrialWorker)
from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space import DEFAULT_GENOTYPE, TEMPLATE_OPS, Genotype

REPO = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}

# Builds a small digits TrialContext; exec'd here and in the worker subprocesses.
DIGITS_CONTEXT_CODE = textwrap.dedent("""
    import numpy as np
    from sklearn.datasets import load_digits
    from automl_pipeline.bohb.worker import TrialContext
    from automl_pipeline.training import channel_stats, to_tensor_data

    def digits_context(n_train=300, n_val=150, seed=0):
        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16)).astype(np.uint8)[..., None]
        order = np.random.default_rng(seed).permutation(len(images))
        tr, va = order[:n_train], order[n_train:n_train + n_val]
        mean, std = channel_stats(images[tr])
        return TrialContext(train=to_tensor_data(images[tr], digits.target[tr], "cpu", mean, std),
                            val=to_tensor_data(images[va], digits.target[va], "cpu", mean, std),
                            n_classes=10, in_channels=1, image_side=8, seed=seed)
""")
_namespace: dict = {}
exec(DIGITS_CONTEXT_CODE, _namespace)
digits_context = _namespace["digits_context"]


def tiny_space(seed: int = 0) -> ConfigurationSpace:
    """Our space's hyperparameters with ranges narrowed to networks a shared CPU trains in ~1 s/epoch."""
    cs = ConfigurationSpace(seed=seed)
    cs.add([Integer("n_cells", (1, 2), default=1), Float("lr", (3e-3, 3e-2), log=True, default=1e-2),
            Categorical("base_channels", [8, 16]), Categorical("loss", ["focal", "ce"])])
    return cs


@pytest.fixture(scope="module")
def ctx() -> TrialContext:
    torch.set_num_threads(2)
    return digits_context()


def good_config() -> dict:
    cfg = to_jsonable(dict(build_config_space(seed=0).get_default_configuration()))
    return dict(cfg, n_cells=1, base_channels=16, lr=1e-2)


def fake_darts(seed: int = 0):
    """A DartsResult stand-in: softmaxed alphas over the template ops plus a derived genotype."""
    rng = np.random.default_rng(seed)
    n_edges = 14                                   # 4 nodes: 2 + 3 + 4 + 5 edges
    alphas = [rng.dirichlet(np.ones(len(TEMPLATE_OPS)), size=n_edges) for _ in range(2)]
    from automl_pipeline.darts import derive_genotype
    genotype = derive_genotype(alphas[0], alphas[1], TEMPLATE_OPS)
    return SimpleNamespace(genotype=genotype, alphas_normal=alphas[0], alphas_reduce=alphas[1])


# --------------------------------------------------------------------------- space

@pytest.mark.parametrize("with_darts,baseline", [(True, False), (False, False), (False, True)])
def test_space_variants_sample_valid_configurations(with_darts, baseline):
    darts = fake_darts() if with_darts else None
    pool = genotype_pool(darts)
    options = SearchOptions().for_method("baseline" if baseline else "ours")
    cs = build_config_space(seed=3, cells=tuple(pool), fixed=tuple(fixed_hyperparameters(options)))
    names = set(cs.keys())
    assert {"lr", "n_cells", "base_channels", "flip"} <= names
    assert ({"loss", "surrogate_skip"} <= names) is (not baseline)
    assert (set(STAGE_CELL_KEYS) <= names) is with_darts and "cell" not in names
    assert not with_darts or all(list(cs[key].choices) == list(pool) for key in STAGE_CELL_KEYS)
    assert len(names) == (9 if with_darts else 6 if not baseline else 4)   # small for the KDE (module docstring)
    for config in cs.sample_configuration(40):
        plain = to_jsonable(dict(config))
        Configuration(cs, values=plain)                      # plain values are valid in the space
        assert all(type(v) in (int, float, str, bool) for v in plain.values()), plain
        spec = config_to_network_spec(plain, darts=darts, in_channels=1, n_classes=10, image_side=8)
        assert spec.n_cells == plain["n_cells"]
        if with_darts:
            assert spec.stage_cells == tuple(plain[key] for key in STAGE_CELL_KEYS)
            assert spec.stage_genotypes == tuple(pool[plain[key]] for key in STAGE_CELL_KEYS)
        else:
            assert spec.stage_genotypes == () and spec.genotype == DEFAULT_GENOTYPE
        train = config_to_train_config(plain, epochs=3, seed=0, batch_size=32)
        assert train.loss == plain.get("loss", "ce") and train.batch_size == 32


def test_genotype_pool_is_a_fixed_set_of_names():
    darts = fake_darts(1)
    assert genotype_pool(None) == {"default": DEFAULT_GENOTYPE}
    pool = genotype_pool(darts)
    assert list(pool) == ["default", "darts", "sampled_1", "sampled_2", "skip_heavy"]
    assert pool["darts"] == darts.genotype and pool == genotype_pool(darts)      # deterministic
    assert all(isinstance(g, Genotype) for g in pool.values())
    n_skips = [sum(op == "skip_connect" for op, _ in pool[name].normal) for name in ("darts", "skip_heavy")]
    assert n_skips[1] == n_skips[0] + SKIP_HEAVY_EXTRA and pool["skip_heavy"].reduce == darts.genotype.reduce
    with pytest.raises(ValueError, match="not in the pool"):
        config_to_network_spec({"n_cells": 2, "base_channels": 16, "cell_stage1": "darts"}, darts=None,
                               in_channels=1, n_classes=10, image_side=8)


def test_config_to_network_spec_builds_each_stage_from_its_cell():
    darts = fake_darts(2)
    pool = genotype_pool(darts)
    config = {"n_cells": 5, "base_channels": 16, "cell_stage0": "darts", "cell_stage1": "default",
              "cell_stage2": "skip_heavy"}
    spec = config_to_network_spec(config, darts=darts, in_channels=1, n_classes=10, image_side=8)
    assert spec.stage_cells == ("darts", "default", "skip_heavy") and spec.genotype == pool["darts"]
    stack = spec.cell_stack()
    assert [(c["stage"], c["reduction"], c["cell"]) for c in stack] == [
        (0, False, "darts"), (1, True, "default"), (1, False, "default"), (2, True, "skip_heavy"),
        (2, False, "skip_heavy")]                                # 5 cells: cells 1 and 3 reduce
    assert stack[4]["skips"] == sum(op == "skip_connect" for op, _ in pool["skip_heavy"].normal)
    # two cells (one reduction): stage 2's choice is unused
    short = config_to_network_spec(dict(config, n_cells=2), darts=darts, in_channels=1, n_classes=10, image_side=8)
    assert [c["cell"] for c in short.cell_stack()] == ["darts", "default"]
    assert config_cells({"n_cells": 2}) == ("default",) * 3


def test_space_is_seeded():
    cells = tuple(genotype_pool(fake_darts()))
    a = [dict(c) for c in build_config_space(seed=7, cells=cells).sample_configuration(5)]
    b = [dict(c) for c in build_config_space(seed=7, cells=cells).sample_configuration(5)]
    assert a == b


# --------------------------------------------------------------------------- pure config mappings

def test_config_to_train_config_maps_loss_and_surrogate():
    base = {"n_cells": 2, "lr": 1e-3, "base_channels": 24, "flip": True}
    baseline = config_to_train_config(base, epochs=5, seed=11, batch_size=32)
    assert (baseline.loss, baseline.class_weight_smoothing, baseline.surrogate_beta0) == ("ce", 0.0, 0.0)
    assert (baseline.epochs, baseline.seed, baseline.batch_size, baseline.flip, baseline.lr) == (5, 11, 32, True, 1e-3)
    focal = config_to_train_config(dict(base, loss="focal", surrogate_skip=True), epochs=4, seed=0, batch_size=8)
    assert (focal.loss, focal.focal_gamma, focal.class_weight_smoothing, focal.surrogate_beta0) == \
        ("focal", worker_module.FOCAL_GAMMA, worker_module.CLASS_WEIGHT_SMOOTHING, worker_module.SURROGATE_BETA0)
    adjusted = config_to_train_config(dict(base, loss="logit_adjusted"), epochs=4, seed=0, batch_size=8)
    assert (adjusted.loss, adjusted.class_weight_smoothing, adjusted.surrogate_beta0) == ("logit_adjusted", 0.0, 0.0)


def test_fractional_budgets_train_on_a_fraction_of_the_epoch():
    assert budget_epochs(3.0) == (3, 1.0) and budget_epochs(1.0) == (1, 1.0)
    assert budget_epochs(1 / 3) == (1, pytest.approx(1 / 3))
    epochs, fraction = budget_epochs(2.5)
    assert epochs == 3 and fraction == pytest.approx(2.5 / 3)


def test_same_configuration_builds_the_same_network(ctx):
    config = dict(good_config(), n_cells=2)
    a = worker_module.build_trial_network(config, ctx).eval()
    b = worker_module.build_trial_network(config, ctx).eval()
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters()) > 0
    with torch.no_grad():
        assert torch.equal(a(ctx.val.x[:16]), b(ctx.val.x[:16]))
    bigger = worker_module.build_trial_network(dict(config, base_channels=32), ctx)
    assert sum(p.numel() for p in bigger.parameters()) > sum(p.numel() for p in a.parameters())


# --------------------------------------------------------------------------- trials

def test_evaluate_config_good_trial_on_digits(ctx):
    result = evaluate_config(good_config(), 2, ctx, time_left=lambda: 120.0)
    info = result["info"]
    assert info["error"] is None and info["evaluated"] and info["epochs_done"] == 2
    assert math.isfinite(result["loss"]) and 0.0 <= result["loss"] < 1.0
    assert result["loss"] == pytest.approx(1.0 - info["val_macro_f1"])
    assert len(info["per_class_f1"]) == 10 and 0.0 < info["val_accuracy"] <= 1.0
    assert info["n_params"] > 0 and info["seconds"] > 0 and info["stopped_by_deadline"] is False
    json.dumps(result)                                       # plain Python all the way down


@pytest.mark.parametrize("where,exc", [("build_network", RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")),
                                       ("train_model", FloatingPointError("loss became nan at epoch 1"))])
def test_evaluate_config_failing_trial_is_a_result(ctx, monkeypatch, where, exc):
    def boom(*args, **kwargs):
        raise exc
    monkeypatch.setattr(worker_module, where, boom)
    result = evaluate_config(good_config(), 2, ctx, time_left=lambda: 60.0)
    assert result["loss"] == 1.0
    assert result["info"]["error"] == f"{type(exc).__name__}: {exc}"
    assert result["info"]["evaluated"] is False


def test_evaluate_config_bad_hyperparameter_value_is_a_result(ctx):
    result = evaluate_config(dict(good_config(), lr=-1.0), 1, ctx, time_left=lambda: 60.0)
    assert result["loss"] == 1.0 and result["info"]["error"].startswith("ValueError: lr")


def test_evaluate_config_fractional_budget_trains_on_a_subset(ctx):
    result = evaluate_config(good_config(), 0.5, ctx, time_left=lambda: 60.0)
    assert result["info"]["train_images"] == len(ctx.train) // 2 and result["info"]["epochs_done"] == 1


def test_evaluate_config_without_time_reports_no_evaluation(ctx):
    result = evaluate_config(good_config(), 2, ctx, time_left=lambda: 0.0)
    assert result["loss"] == 1.0 and result["info"]["evaluated"] is False
    assert result["info"]["error"] is None and result["info"]["stopped_by_deadline"] is True


# --------------------------------------------------------------------------- budgets and incumbent

def test_choose_budgets():
    # the first bracket (18 configs at min, 6 at the middle, 2 at max) fits in FIRST_BRACKET_SHARE of the phase
    for epoch_s, phase_s in ((1.0, 100.0), (5.0, 100.0), (2.0, 1000.0), (0.5, 30.0)):
        lo, hi = choose_budgets(epoch_s, phase_s, first_configs=18, min_budget_floor=0.05, trial_overhead_s=0.5)
        rungs = len(hpbandster_budgets(lo, hi, 3))
        sizes = bracket_sizes(18, rungs, 3)
        cost = sum(n * (b * epoch_s + 0.5) for n, b in zip(sizes, hpbandster_budgets(lo, hi, 3)))
        assert cost == pytest.approx(FIRST_BRACKET_SHARE * phase_s) or hi == 20
        assert hpbandster_budgets(lo, hi, 3)[0] == pytest.approx(lo)
    assert choose_budgets(0.1, 1e6, first_configs=18, min_budget_floor=0.1)[1] == 20      # the poster's cap
    # more time never shrinks the max budget; too little time for even two rungs: no plan
    maxima = [choose_budgets(1.0, t, first_configs=18, min_budget_floor=0.1)[1] for t in (60, 120, 240, 480)]
    assert maxima == sorted(maxima)
    assert choose_budgets(1.0, 60, first_configs=18, min_budget_floor=0.1) is not None
    assert choose_budgets(1.0, 10, first_configs=18, min_budget_floor=0.5) is None
    with pytest.raises(ValueError):
        choose_budgets(0.0, 100.0, first_configs=18, min_budget_floor=0.1)


def _record(budget, f1, t, *, error=None, cut=False, evaluated=True):
    return TrialRecord(config_id=(0, 0, int(t)), config={"t": t}, budget=budget, loss=1 - f1, val_macro_f1=f1,
                       evaluated=evaluated, error=error, epochs_done=int(budget), stopped_by_deadline=cut,
                       seconds=1.0, worker="w", t_s=t, model_based_pick=False)


def test_select_incumbent_prefers_largest_completed_budget():
    assert select_incumbent([]) is None
    trials = [_record(1, 0.9, 1), _record(3, 0.7, 2), _record(3, 0.8, 3), _record(9, 0.95, 4, cut=True),
              _record(9, 0.0, 5, error="RuntimeError: x", evaluated=False)]
    assert select_incumbent(trials).t_s == 3                 # budget 3 is the largest completed one
    assert select_incumbent(trials + [_record(9, 0.6, 6)]).t_s == 6
    assert select_incumbent([_record(3, 0.5, 1, cut=True), _record(1, 0.4, 2, cut=True)]).t_s == 1
    assert select_incumbent([_record(3, 0.8, 7), _record(3, 0.8, 2)]).t_s == 2    # ties: earlier


def test_the_top_rung_is_the_incumbent_then_the_next_best_at_its_budget():
    trials = [_record(1, 0.99, 1), _record(3, 0.7, 2), _record(3, 0.8, 3), _record(3, 0.6, 4),
              _record(3, 0.9, 5, cut=True), _record(3, 0.0, 6, error="RuntimeError: x", evaluated=False)]
    assert [t.t_s for t in top_rung(trials, 2)] == [3, 2]    # no lower budget, cut or failed trial
    assert [t.t_s for t in top_rung(trials, 9)] == [3, 2, 4]
    assert top_rung(trials, 1)[0] is select_incumbent(trials) and top_rung([], 3) == []


# --------------------------------------------------------------------------- serialisation fix

def test_numpy_serializers_convert_numpy_scalars():
    register_numpy_serializers()
    register_numpy_serializers()                             # idempotent
    values = {"s": np.str_("sampled"), "b": np.True_, "i": np.int64(3), "f": np.float32(0.5),
              "d": np.float64(2.5), "a": np.arange(3)}
    back = serpent.loads(serpent.dumps(values))
    assert back == {"s": "sampled", "b": True, "i": 3, "f": 0.5, "d": 2.5, "a": [0, 1, 2]}
    assert type(back["b"]) is bool and type(back["i"]) is int
    assert to_jsonable({"x": (np.int8(1), [np.bool_(False)])}) == {"x": [1, [False]]}


STOCK_BOHB_SCRIPT = textwrap.dedent("""
    import logging, warnings
    warnings.simplefilter("ignore")
    import numpy as np
    from automl_pipeline.bohb.serialization import register_numpy_serializers
    register_numpy_serializers()
    from hpbandster.core.nameserver import NameServer
    from hpbandster.core.worker import Worker
    from hpbandster.optimizers.bohb import BOHB
    from automl_pipeline.bohb.space import build_config_space

    class Dummy(Worker):
        def compute(self, config_id, config, budget, working_directory, **kwargs):
            assert type(config["loss"]) is str             # arrived as plain Python
            return {"loss": float(config["lr"]), "info": {"lr": np.float32(config["lr"]), "n": np.int64(1)}}

    quiet = logging.getLogger("quiet"); quiet.setLevel(logging.ERROR)
    ns = NameServer(run_id="np", host="127.0.0.1", port=0); host, port = ns.start()
    w = Dummy(run_id="np", nameserver=host, nameserver_port=port, host="127.0.0.1", logger=quiet)
    w.run(background=True)
    space = build_config_space(seed=0, cells=("default", "darts"))
    config = space.sample_configuration()
    assert any(isinstance(v, np.generic) for v in dict(config).values())   # the trap is armed
    m = BOHB(configspace=space, run_id="np", nameserver=host, nameserver_port=port, host="127.0.0.1",
             min_budget=1, max_budget=3, logger=quiet)
    runs = m.run(n_iterations=1).get_all_runs()
    m.shutdown(shutdown_workers=True); ns.shutdown()
    print("FINISHED", len(runs), sum(r.loss is not None for r in runs))
""")


def test_stock_bohb_with_numpy_configurations_finishes():
    """Regression: without register_numpy_serializers this run hangs forever (the dispatcher's
    job-runner thread dies on a numpy.str_); run in a subprocess so a hang fails instead of blocking."""
    proc = subprocess.run([sys.executable, "-c", STOCK_BOHB_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "FINISHED 4 4" in proc.stdout, proc.stdout + proc.stderr[-2000:]


# --------------------------------------------------------------------------- the phase

def _phase_clock(seconds: float):
    start = time.monotonic()
    return start, (lambda: max(0.0, seconds - (time.monotonic() - start)))


def test_phase_stops_slow_trials_at_the_deadline(tmp_path):
    """Trials that would run forever stop at their deadline and still report (no torch)."""
    def slow(config, budget, ctx, time_left):
        while time_left() > 0:
            time.sleep(0.02)
        return {"loss": 0.5, "info": {"val_macro_f1": 0.5, "evaluated": True, "error": None,
                                      "epochs_done": 0, "stopped_by_deadline": True, "seconds": 1.0}}
    start, time_left = _phase_clock(4.0)
    result = run_bohb(None, config_space=tiny_space(),
                      options=BohbOptions(min_budget=1, max_budget=3, n_local_workers=2, wrapup_s=1.0),
                      time_left=time_left, out_dir=tmp_path, evaluate=slow, log=lambda s: None)
    elapsed = time.monotonic() - start
    assert elapsed <= 4.0 + 0.5, elapsed
    assert len(result.trials) == 2 and all(t.stopped_by_deadline for t in result.trials)   # no job after the deadline
    assert all(t.t_s <= 4.0 for t in result.trials)          # reported before the phase ended
    assert result.clean_shutdown
    assert result.incumbent_config is not None and result.report()["deadline_cut_trials"] == 2


def _quick(config, budget, ctx, time_left):
    f1 = 1.0 - abs(math.log10(config["lr"]) + 2.0) / 3.0            # best at lr = 1e-2
    return {"loss": 1.0 - f1, "info": {"val_macro_f1": f1, "evaluated": True, "error": None,
                                       "epochs_done": int(budget), "stopped_by_deadline": False}}


def test_phase_warm_starts_from_a_previous_run(tmp_path):
    first = run_bohb(None, config_space=tiny_space(), options=BohbOptions(min_budget=1, max_budget=9, wrapup_s=1.0),
                     time_left=_phase_clock(3.0)[1], out_dir=tmp_path / "a", evaluate=_quick, log=lambda s: None)
    assert len(first.trials) >= 5 and first.hpbandster_result is not None
    # the first bracket holds the 2(d + 1) results BOHB's KDE needs on one budget: model-based picks follow
    assert first.model_based_picks > 0 and first.report()["warning"] is None, first.report()["trials_per_budget"]
    assert 0 < sum(first.report()["model_based_picks_per_budget"].values()) <= first.model_based_picks
    lines = (tmp_path / "a" / "bohb" / "results.json").read_text().splitlines()
    assert len(lines) == len(first.trials) and first.report()["optimizer"] == "bohb"
    # 4 s with 2 s of wrap-up: on CI's loaded 2 cores a 2 s phase (0.75 s for shutdown) once shut down
    # unclean, and an unclean search builds no hpbandster Result
    second = run_bohb(None, config_space=tiny_space(), options=BohbOptions(min_budget=1, max_budget=9, wrapup_s=2.0),
                      time_left=_phase_clock(4.0)[1], out_dir=tmp_path / "b", previous_result=tmp_path / "a" / "bohb",
                      evaluate=_quick, log=lambda s: None)
    assert second.clean_shutdown and second.hpbandster_result is not None, (second.master_error, len(second.trials))
    runs = second.hpbandster_result.get_all_runs()
    assert len(runs) == len(second.trials) + len(first.trials)         # old runs are part of the result


def test_random_search_runs_the_same_brackets_without_model_based_picks(tmp_path):
    result = run_bohb(None, config_space=tiny_space(),
                      options=BohbOptions(min_budget=1, max_budget=9, wrapup_s=1.0, optimizer="random"),
                      time_left=_phase_clock(3.0)[1], out_dir=tmp_path, evaluate=_quick, log=lambda s: None)
    report = result.report()
    assert report["optimizer"] == "random" and report["n_trials"] >= 5, report["trials_per_budget"]
    assert report["model_based_picks"] == 0 and report["configs_sampled"] >= 5
    assert report["warning"] is None                      # random by request, not by lack of data
    assert len(report["trials_per_budget"]) >= 2          # promoted along the same brackets
    assert report["incumbent"] is not None


def test_too_few_trials_for_the_kde_is_reported_as_random_search(tmp_path):
    """A phase that ends after 4 trials (its clock runs out once the 4th has reported) leaves BOHB's KDE
    without the 2(d + 1) = 10 results it needs on one budget: no model-based pick, and the report says so."""
    finished: list[float] = []

    def counted(config, budget, ctx, time_left):
        result = _quick(config, budget, ctx, time_left)
        finished.append(time.monotonic())
        return result

    start = time.monotonic()

    def time_left() -> float:     # 1 s (the wrap-up reserve) from the 4th result on: no trial starts after it
        left = 20.0 - (time.monotonic() - start)
        if len(finished) >= 4:
            left = min(left, 1.0 - (time.monotonic() - finished[3]))
        return max(0.0, left)

    result = run_bohb(None, config_space=tiny_space(), options=BohbOptions(min_budget=1, max_budget=9, wrapup_s=1.0),
                      time_left=time_left, out_dir=tmp_path, evaluate=counted, log=lambda s: None)
    report = result.report()
    assert 4 <= report["n_trials"] < report["model_min_trials"] == 10, report["trials_per_budget"]
    assert report["model_based_picks"] == 0 and report["configs_sampled"] >= 4
    assert report["warning"] == (f"BOHB was effectively random search: 0 of {report['configs_sampled']} "
                                 "configurations were model-based picks (its KDE needs 10 finished trials on one budget)")


def test_unknown_optimizer_is_refused(tmp_path):
    with pytest.raises(ValueError, match="bohb, random"):
        run_bohb(None, config_space=tiny_space(), options=BohbOptions(min_budget=1, max_budget=3, optimizer="smac"),
                 time_left=lambda: 5.0, out_dir=tmp_path, log=lambda s: None)


def test_phase_without_time_returns_at_once_without_incumbent(tmp_path):
    def never(*args):
        raise AssertionError("no trial should start")
    start, time_left = _phase_clock(1.0)
    result = run_bohb(None, config_space=tiny_space(), options=BohbOptions(min_budget=1, max_budget=3, wrapup_s=1.0),
                      time_left=time_left, out_dir=tmp_path, evaluate=never, log=lambda s: None)
    assert time.monotonic() - start <= 1.5
    assert result.trials == [] and result.incumbent_config is None and result.clean_shutdown
    report = result.report()
    assert report["incumbent"] is None and report["n_trials"] == 0 and report["warning"] is None
    assert not (tmp_path / "bohb" / "incumbent.json").exists()


def test_bohb_phase_on_digits_ends_by_deadline(tmp_path):
    ctx = digits_context(n_train=200, n_val=100)
    phase_s = 25.0
    logs: list[str] = []
    start, time_left = _phase_clock(phase_s)
    result = run_bohb(ctx, config_space=tiny_space(),
                      options=BohbOptions(min_budget=1, max_budget=3, seed=0, first_configs=4, run_id="digits"),
                      time_left=time_left, out_dir=tmp_path, log=logs.append)
    elapsed = time.monotonic() - start
    assert elapsed <= phase_s + 1.0, elapsed
    assert isinstance(result, BohbResult) and result.clean_shutdown
    report = result.report()
    json.dumps(report)
    assert len(report["trials_per_budget"]) >= 2, report["trials_per_budget"]     # both budgets tried
    assert report["n_trials"] >= 4 and report["failed_trials"] == 0, report
    assert 1 <= report["configs_sampled"] <= report["n_trials"] + 1   # promoted configs run again
    # (whether these trials were enough for model-based picks depends on the machine's speed: the warning
    # for too few is test_too_few_trials_for_the_kde_is_reported_as_random_search, none after enough
    # test_phase_warm_starts_from_a_previous_run)
    inc = report["incumbent"]
    # the incumbent is the best finished trial at the highest budget reached (how well 3 epochs on 200
    # digits learn depends on the sampled configs, so no quality bar here)
    at_top = [t for t in result.trials if t.evaluated and t.budget == inc["budget"]]
    assert inc["budget"] in (1.0, 3.0) and inc["val_macro_f1"] == max(t.val_macro_f1 for t in at_top)
    assert 0.0 <= inc["val_macro_f1"] <= 1.0
    assert [f1 for _, f1 in report["trajectory"]] == sorted(f1 for _, f1 in report["trajectory"])
    files = tmp_path / "bohb"
    assert len((files / "results.json").read_text().splitlines()) == report["n_trials"]
    assert (files / "configs.json").read_text().strip()
    on_disk = json.loads((files / "incumbent.json").read_text())
    assert on_disk["config"] == inc["config"] and on_disk["val_macro_f1"] == inc["val_macro_f1"]
    assert any("trial" in line for line in logs)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_worker_processes_share_one_run(tmp_path):
    port = _free_port()
    worker_cli = [sys.executable, str(REPO / "run.py"), "worker", "--run-id", "shared", "--nameserver", "127.0.0.1",
                  "--nameserver-port", str(port), "--max-image-side", "8", "--host", "127.0.0.1",
                  "--device", "cpu", "--time-limit", "90"]
    procs = [subprocess.Popen(worker_cli, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_env(OMP_NUM_THREADS="1"))
             for _ in range(2)]
    try:
        phase_s = 30.0                                       # includes the workers' start-up (torch import, ~5 s)
        start, time_left = _phase_clock(phase_s)
        result = run_bohb(None, config_space=tiny_space(1),
                          options=BohbOptions(min_budget=1, max_budget=3, n_local_workers=0, min_n_workers=2,
                                              nameserver_port=port, run_id="shared"),
                          time_left=time_left, out_dir=tmp_path, log=lambda s: None)
        assert time.monotonic() - start <= phase_s + 1.0
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    workers = {t.worker for t in result.trials}
    pids = {str(p.pid) for p in procs}
    assert len(workers) == 2, result.report()
    for pid in pids:                                         # hpbandster.run_<id>.worker.<host>.<pid>
        assert sum(w.endswith(f".{pid}") for w in workers) == 1, (workers, pids)
    assert all(t.error is None for t in result.trials), [t.error for t in result.trials]
    served = sorted(int(o[1].split("worker done: ")[1].split()[0]) for o in outs)
    assert sum(served) >= len(result.trials) and min(served) >= 1
    assert all("shut down by the master" in o[1] for o in outs)


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (routing lookup, nothing is sent)."""
    import ipaddress
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))                      # TEST-NET-1: only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


def test_off_loopback_workers_need_the_shared_secret(tmp_path, monkeypatch):
    """Name server + master on a non-loopback address with a key: a `run.py worker` with the same key
    serves trials; one with another key is refused by the name server, one without a key refuses to
    start; both exit 2 naming AUTOML_BOHB_HMAC_KEY."""
    from automl_pipeline.bohb.nameserver import HMAC_KEY_ENV, HMAC_KEY_FILE_ENV
    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    key_file = tmp_path / "hmac.key"
    key_file.write_text("the-shared-secret\n")
    monkeypatch.delenv(HMAC_KEY_FILE_ENV, raising=False)
    monkeypatch.setenv(HMAC_KEY_ENV, "the-shared-secret")
    port = _free_port()
    worker_cli = [sys.executable, str(REPO / "run.py"), "worker", "--run-id", "keyed", "--nameserver", address,
                  "--nameserver-port", str(port), "--max-image-side", "8", "--host", address,
                  "--device", "cpu", "--time-limit", "75"]
    base = {k: v for k, v in _env(OMP_NUM_THREADS="1").items() if k not in (HMAC_KEY_ENV, HMAC_KEY_FILE_ENV)}
    envs = {"right": {**base, HMAC_KEY_FILE_ENV: str(key_file)}, "wrong": {**base, HMAC_KEY_ENV: "guessed"},
            "none": base}
    procs = {name: subprocess.Popen(worker_cli, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env) for name, env in envs.items()}
    try:
        phase_s = 30.0                                       # includes the workers' start-up (torch import, ~5 s)
        result = run_bohb(None, config_space=tiny_space(2),
                          options=BohbOptions(min_budget=1, max_budget=3, n_local_workers=0, min_n_workers=1,
                                              nameserver_host=address, nameserver_port=port, run_id="keyed"),
                          time_left=_phase_clock(phase_s)[1], out_dir=tmp_path / "out", log=lambda s: None)
    finally:
        for p in procs.values():
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
    outs = {name: p.communicate() for name, p in procs.items()}
    codes = {name: p.returncode for name, p in procs.items()}
    assert codes == {"right": 0, "wrong": 2, "none": 2}, {n: o[1][-800:] for n, o in outs.items()}
    assert result.trials and all(t.error is None for t in result.trials), [t.error for t in result.trials]
    assert {t.worker.rsplit(".", 1)[-1] for t in result.trials} == {str(procs["right"].pid)}
    assert "refused this worker" in outs["wrong"][1] and HMAC_KEY_ENV in outs["wrong"][1]
    assert "not loopback" in outs["none"][1] and HMAC_KEY_ENV in outs["none"][1]
    assert all("Traceback" not in o[1] for o in outs.values())
    assert json.loads((tmp_path / "out" / "bohb" / "nameserver.json").read_text())["hmac"] is True
    assert "the-shared-secret" not in (tmp_path / "out" / "bohb" / "nameserver.json").read_text()


def test_worker_reads_the_darts_result_from_checkpoint_or_report(tmp_path):
    from automl_pipeline.bohb.remote import load_darts_cells
    from automl_pipeline.darts import random_cell_result
    from automl_pipeline.search_space import TEMPLATE_OPS

    saved = random_cell_result(TEMPLATE_OPS, seed=1)
    section = json.loads(json.dumps(saved.report()))
    for wrapper in ({"result": section}, {"darts": section, "status": "complete"}):
        path = tmp_path / "darts.json"
        path.write_text(json.dumps(wrapper))
        cells = load_darts_cells(path)
        assert cells.genotype == saved.genotype and cells.ops == TEMPLATE_OPS
        assert cells.alphas_normal.shape == (14, 5)
    path.write_text(json.dumps({"skipped": "too short"}))
    with pytest.raises(ValueError, match="no DARTS result"):
        load_darts_cells(path)


def test_a_result_for_a_master_that_is_gone_is_dropped_without_a_thread_traceback(caplog):
    """A trial that ends after the master shut its dispatcher down: hpbandster's start_computation would
    raise in Pyro's oneway thread; the worker logs the dropped result and is free for the next job."""
    import Pyro4.errors

    class GoneDispatcher:
        def register_result(self, id, result):
            raise Pyro4.errors.CommunicationError("cannot connect: [Errno 111] Connection refused")

    worker = TrialWorker(None, time_left=lambda: 10.0, run_id="r", nameserver="127.0.0.1", nameserver_port=1,
                         evaluate=_quick)
    with caplog.at_level("INFO", logger="automl_pipeline.bohb.worker"):
        result = worker.start_computation(GoneDispatcher(), (0, 0, 0), config={"lr": 0.01}, budget=1.0,
                                          working_directory=".")
    assert result["exception"] is None and result["result"]["info"]["val_macro_f1"] == 1.0
    assert worker.busy is False and "the master is gone" in caplog.text


def test_brackets_stop_starting_on_a_rung_that_ranks_noise(tmp_path):
    """The 1-epoch rung ranks configurations in the reverse order of the 3- and 9-epoch rungs: once enough
    configurations were trained on both, no bracket starts at 1 epoch, and the report says when and why."""
    started_at_one: list[float] = []

    def reversed_low_rung(config, budget, ctx, time_left):
        f1 = 1.0 - abs(math.log10(config["lr"]) + 2.0) / 3.0
        if budget == 1:
            f1 = 1.0 - f1
            started_at_one.append(time.monotonic())
        return {"loss": 1.0 - f1, "info": {"val_macro_f1": f1, "evaluated": True, "error": None,
                                           "epochs_done": int(budget), "stopped_by_deadline": False}}

    logs: list[str] = []
    result = run_bohb(None, config_space=tiny_space(), options=BohbOptions(min_budget=1, max_budget=9, wrapup_s=1.0),
                      time_left=_phase_clock(5.0)[1], out_dir=tmp_path, evaluate=reversed_low_rung, log=logs.append)
    report = result.report()
    assert report["raised_min_budget"], report["rung_rank_correlation"]
    raised = report["raised_min_budget"][0]
    assert raised["from_budget"] == 1 and raised["to_budget"] == 3
    assert raised["evidence"][0]["spearman"] < 0 and raised["evidence"][0]["n_configs"] >= 8
    # trials on 1 epoch belong to iterations before the raise only
    iterations_at_one = {t.config_id[0] for t in result.trials if t.budget == 1}
    assert max(iterations_at_one) < raised["iteration"]
    assert any(t.config_id[0] >= raised["iteration"] and t.budget == 3 for t in result.trials)
    assert "ranked noise" in report["raised_min_budget_reason"]
    assert any("brackets started at 3 epochs" in line for line in logs)


def test_brackets_keep_the_lowest_rung_while_it_ranks(tmp_path):
    result = run_bohb(None, config_space=tiny_space(), options=BohbOptions(min_budget=1, max_budget=9, wrapup_s=1.0),
                      time_left=_phase_clock(3.0)[1], out_dir=tmp_path, evaluate=_quick, log=lambda s: None)
    report = result.report()
    assert report["raised_min_budget"] == [] and report["raised_min_budget_reason"] is None
    assert report["trials_per_budget"].get("1", 0) > 16          # brackets went on starting at 1 epoch
