"""The run's plan after the first model: which searches get time, and how much, as a pure function of
measured facts (the default network's epoch cost on the whole training split, the time left).

The delivered model comes first: the final fit needs FINAL_EPOCHS epochs of the default network. A
search gets time only when what is left beyond that can hold a search that ranks: BOHB a first bracket
whose smallest budget is MIN_RANKING_EPOCHS (trials shorter than that rank noise: the ablation's first
rung of 0.2-1 epoch reached a median validation macro-F1 of 0.03-0.06), DARTS its minimum. Priority:
final fit, then BOHB, then DARTS. What no search can use goes to the final fit, and `reason` says so in
one sentence with the numbers. No torch, no clock: tests feed it made-up costs.

The first model's learning curve is not an input: it trains on a one-cycle schedule over its few
epochs, so its best epoch is its last by design and its early epochs show the schedule's warm-up. It
can tell neither when a network plateaus nor when trials start to rank (a 17-epoch first model on shifted
digits got halfway from chance to its best only at epoch 6; read as a ranking budget, that gave BOHB away).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# The final fit needs this many epochs of the default network (the plain CNN of DESIGN.md took ~90 epochs
# to its 0.90 on 5k Fashion-MNIST; our cells learn slower per epoch, not faster; a floor, not a measurement).
FINAL_EPOCHS = 30
# BOHB's smallest budget (the ranking budget); whether its rung ranks is measured in every run
# (report.json bohb.rung_rank_correlation).
MIN_RANKING_EPOCHS = 2.0
# The first bracket BOHB needs: this many trials at the smallest budget (the smallest space's 2(d+1)+2),
# eta 3, three rungs: 3 x FIRST_CONFIGS x min_budget epochs, plus model-based picks after it; the bracket
# takes BRACKET_SHARE of the phase (bohb.budgets.FIRST_BRACKET_SHARE).
BOHB_FIRST_CONFIGS = 16
BOHB_RUNGS = 3
BRACKET_SHARE = 0.6
# BOHB's trials cost about the default network per epoch on average (its default configuration is that
# network, 3 cells of 24 channels; n_cells 2-5 and widths 16/24/32 spread around it): no margin.
TRIAL_COST_FACTOR = 1.0
# DARTS needs about this long to learn when its step was not measured (120 architecture steps at 0.27 s,
# planned at 90 %: 36 s, and its timing probes); a run measures it (RunFacts.darts_s).
DARTS_MIN_S = 45.0
# The cold one-epoch timing probe measured up to this many times the cost of the epochs a network then
# trained (shifted digits: 0.79 s probed, 0.42 s trained); a decision made before any epoch trained
# assumes the probe overstated this much.
PROBE_OVERSTATEMENT = 2.0
# Beyond the needs, time is shared as the fixed plan did: DARTS 0.20, BOHB 0.35, final fit 0.35.
SPARE_WEIGHTS = {"darts": 0.20, "bohb": 0.35, "final_fit": 0.35}
# k-fold bagging of the final choice (AutoGluon's bagging): BAG_FOLDS fold models over the training and
# validation images pooled, each validated on the fold it did not train on, averaged. Only for small data
# (at most BAG_MAX_IMAGES pooled), where one validation split of ~100 images ranks noise and the
# out-of-fold predictions score every image, and only when the final fit holds BAG_FOLDS fold models of
# FINAL_EPOCHS epochs each.
BAG_FOLDS = 5
BAG_MAX_IMAGES = 5000


@dataclass(frozen=True)
class RunFacts:
    """What the run measured: seconds_left, the work time left for the rest of the run; epoch_s,
    seconds of one epoch of the default network on the whole training split (with its validation pass);
    darts_enabled: the search options (and the method) allow a DARTS search; darts_s: seconds the DARTS
    phase needs to run at its minimum (measured from its cheapest supernet's step), DARTS_MIN_S if unmeasured."""

    seconds_left: float
    epoch_s: float
    darts_enabled: bool = True
    darts_s: float = DARTS_MIN_S


@dataclass(frozen=True)
class RunPlan:
    """weights: (phase, relative weight) of the phases that run, in order; skipped: phase -> reason;
    reason: the one sentence for report.json / report.md; the numbers behind it."""

    weights: tuple[tuple[str, float], ...]
    skipped: dict = field(default_factory=dict)
    reason: str = ""
    final_epochs: int = FINAL_EPOCHS
    ranking_epochs: float = MIN_RANKING_EPOCHS
    epochs_in_budget: float = 0.0
    needs_s: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"weights": {name: round(weight, 4) for name, weight in self.weights}, "skipped": dict(self.skipped),
                "reason": self.reason, "final_epochs": self.final_epochs, "ranking_epochs": self.ranking_epochs,
                "epochs_in_budget": round(self.epochs_in_budget, 1),
                "needs_s": {name: round(s, 1) for name, s in self.needs_s.items()}}


def bohb_seconds_needed(ranking_epochs: float, epoch_s: float) -> float:
    """A first bracket of BOHB_FIRST_CONFIGS trials from `ranking_epochs` (eta 3) as BRACKET_SHARE of the phase."""
    bracket_epochs = BOHB_RUNGS * BOHB_FIRST_CONFIGS * ranking_epochs
    return bracket_epochs * epoch_s * TRIAL_COST_FACTOR / BRACKET_SHARE


def plan_run(facts: RunFacts) -> RunPlan:
    """The plan for DARTS, BOHB and the final fit (see the module docstring)."""
    for name in ("epoch_s", "darts_s"):
        value = getattr(facts, name)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive number, got {value}")
    left = max(0.0, facts.seconds_left)
    final_epochs, ranking = FINAL_EPOCHS, MIN_RANKING_EPOCHS
    needs = {"final_fit": final_epochs * facts.epoch_s, "bohb": bohb_seconds_needed(ranking, facts.epoch_s),
             "darts": facts.darts_s}
    held = left / facts.epoch_s
    options = [("darts", "bohb"), ("bohb",), ("darts",), ()] if facts.darts_enabled else [("bohb",), ()]
    searches = next((s for s in options if needs["final_fit"] + sum(needs[name] for name in s) <= left), ())
    running = [name for name in ("darts", "bohb") if name in searches] + ["final_fit"]
    spare = left - sum(needs[name] for name in running)
    weight_of_spare = sum(SPARE_WEIGHTS[name] for name in running)
    weights = tuple((name, needs[name] + spare * SPARE_WEIGHTS[name] / weight_of_spare) for name in running)
    head = (f"the budget holds {held:.0f} epochs of the default network ({facts.epoch_s:.2f}s each); the final "
            f"fit needs about {final_epochs}")
    bohb_more = (f"a BOHB search that ranks (a first bracket of {BOHB_FIRST_CONFIGS} trials from {ranking:g} epochs) "
                 f"about {needs['bohb'] / facts.epoch_s:.0f} more")
    skipped = {}
    if "bohb" not in searches:
        nothing = "darts" not in searches
        skipped["bohb"] = f"{head} and {bohb_more}: no time {'to search' if nothing else 'for BOHB'}"
    if facts.darts_enabled and "darts" not in searches:
        before = needs["final_fit"] + (needs["bohb"] if "bohb" in searches else 0.0)
        skipped["darts"] = skipped.get("bohb") or (
            f"{head}{' and BOHB' if 'bohb' in searches else ''} about {before / facts.epoch_s:.0f} in all, leaving "
            f"{max(0.0, left - before):.0f}s where DARTS needs about {facts.darts_s:.0f}s: no time for DARTS")
    if skipped:
        reason = skipped.get("bohb") or skipped["darts"]
    else:
        reason = f"{head}: {' and '.join(searches)} fit, with {spare:.0f}s beyond what they need"
    return RunPlan(weights=weights, skipped=skipped, reason=reason, final_epochs=final_epochs, ranking_epochs=ranking,
                   epochs_in_budget=held, needs_s=needs)


def first_network_pays(seconds_left: float, probe_epoch_s: float) -> tuple[bool, str]:
    """(whether the first network is worth training, the sentence why not).

    The first network is early insurance and a measurement for the plan; when the time left cannot hold the
    final fit's FINAL_EPOCHS epochs even if the cold one-epoch probe overstated the cost PROBE_OVERSTATEMENT
    times, no search can run (every plan needs the final fit), the logistic regression already gave early
    predictions, and the first network's seconds buy more as final-fit epochs."""
    if not (probe_epoch_s > 0 and math.isfinite(probe_epoch_s)):
        raise ValueError(f"probe_epoch_s must be a positive number, got {probe_epoch_s}")
    optimistic = probe_epoch_s / PROBE_OVERSTATEMENT
    if max(0.0, seconds_left) >= FINAL_EPOCHS * optimistic:
        return True, ""
    return False, (f"{seconds_left:.0f}s hold {seconds_left / optimistic:.0f} epochs of the default network even at "
                   f"{optimistic:.2f}s each (the {probe_epoch_s:.2f}s probe / {PROBE_OVERSTATEMENT:g}), fewer than the final fit's "
                   f"{FINAL_EPOCHS}: no search can run, so the first network's time goes to the final fit")


@dataclass(frozen=True)
class FoldFacts:
    """What the final fit knows when it decides on bagging: seconds it has, seconds of one epoch of its
    network on the training split, the training and validation sizes and the rarest class's count in both."""

    seconds: float
    epoch_s: float
    n_train: int
    n_val: int
    rarest_class: int


def fold_epoch_seconds(facts: FoldFacts, folds: int = BAG_FOLDS) -> float:
    """Seconds of one epoch on k - 1 of k folds of the pooled training and validation images."""
    return facts.epoch_s * (facts.n_train + facts.n_val) * (folds - 1) / folds / max(1, facts.n_train)


def bag_seconds_needed(fold_epoch_s: float, folds: int = BAG_FOLDS) -> float:
    """Seconds one round of `folds` fold models of FINAL_EPOCHS epochs needs (a bag, or a repeat of one)."""
    return folds * FINAL_EPOCHS * fold_epoch_s


def bag_folds(facts: FoldFacts, *, folds: int = BAG_FOLDS) -> tuple[int, str]:
    """(k, the sentence why): `folds` when bagging fits (see BAG_FOLDS), else 1 (one final model)."""
    n = facts.n_train + facts.n_val
    if facts.n_val == 0 or n > BAG_MAX_IMAGES:
        return 1, (f"{n} training and validation images, more than the {BAG_MAX_IMAGES} k-fold bagging is for: "
                   f"one final model, validated on {facts.n_val} images")
    if facts.rarest_class < folds:
        return 1, (f"the rarest class has {facts.rarest_class} training and validation images, fewer than "
                   f"{folds} folds: one final model")
    fold_epoch_s = fold_epoch_seconds(facts, folds)
    need = bag_seconds_needed(fold_epoch_s, folds)
    if facts.seconds < need:
        return 1, (f"the final fit's {facts.seconds:.0f}s hold {facts.seconds / fold_epoch_s:.0f} fold-model epochs "
                   f"({fold_epoch_s:.2f}s each); {folds} fold models of {FINAL_EPOCHS} need {need:.0f}s: one final model")
    return folds, (f"{n} training and validation images (the rarest class {facts.rarest_class}): {folds} fold "
                   f"models sharing {facts.seconds:.0f}s ({fold_epoch_s:.2f}s per epoch), each validated on the "
                   f"fold it did not train on, averaged")
