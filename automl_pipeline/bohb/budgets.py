"""Budget arithmetic of the BOHB phase: bracket widths, rungs, and the (min, max) budgets in
epochs that fit a phase of a given length. Pure functions; nothing here knows hpbandster's master."""
from __future__ import annotations

import math

import numpy as np

from automl_pipeline.bohb.space import n_hyperparameters
from budget.reserves import TRIAL_OVERHEAD_S

POSTER_MAX_BUDGET = 20.0
# The first bracket takes this share of the phase (choose_budgets); the rest is for model-based picks.
FIRST_BRACKET_SHARE = 0.6


def min_points_in_model(space) -> int:
    """hpbandster's minimum, d + 1; the KDE of a budget needs twice this many results there."""
    return n_hyperparameters(space) + 1


def default_first_configs(space) -> int:
    """Width of the first bracket: the 2(d + 1) results the KDE needs, plus two for failed trials."""
    return 2 * min_points_in_model(space) + 2


def bracket_sizes(first_configs: int, rungs: int, eta: float) -> list[int]:
    """Configurations per rung of a successive-halving bracket that starts `first_configs` wide."""
    return [max(1, int(first_configs * eta ** -i)) for i in range(rungs)]


def choose_budgets(epoch_seconds: float, phase_seconds: float, *, first_configs: int, min_budget_floor: float,
                   eta: float = 3.0, trial_overhead_s: float = TRIAL_OVERHEAD_S,
                   max_cap: float = POSTER_MAX_BUDGET) -> tuple[float, float] | None:
    """(min_budget, max_budget) in epochs, or None when no useful plan fits.

    The first bracket (`first_configs` at the min budget, 1/eta of them at the next rung, ...) is sized
    to take FIRST_BRACKET_SHARE of the phase, each trial costing its epochs plus `trial_overhead_s`, so
    that BOHB's KDE has enough results on the min budget while time is left for model-based picks.
    Three rungs when their min budget is at least `min_budget_floor` (the smallest fraction of an
    epoch worth training), else two; max capped at the poster's 20 epochs.
    """
    if not (epoch_seconds > 0 and math.isfinite(epoch_seconds)):
        raise ValueError(f"epoch_seconds must be a positive number, got {epoch_seconds}")
    if eta < 2:
        raise ValueError(f"eta must be >= 2, got {eta}")
    for rungs in (3, 2):
        sizes = bracket_sizes(first_configs, rungs, eta)
        units = sum(n * eta ** -(rungs - 1 - i) for i, n in enumerate(sizes))   # in max budgets
        seconds = FIRST_BRACKET_SHARE * max(0.0, float(phase_seconds)) - sum(sizes) * trial_overhead_s
        max_budget = min(max_cap, seconds / (units * epoch_seconds))
        min_budget = max_budget / eta ** (rungs - 1)
        if min_budget >= min_budget_floor and max_budget > 0:
            return min_budget, max_budget
    return None


def n_rungs(min_budget: float, max_budget: float, eta: float) -> int:
    """Successive-halving rungs for (min, max, eta): floor(log_eta(max / min)) + 1.

    hpbandster computes this as -int(log(min / max) / log(eta)) + 1, which rounds
    (1/3, 1, 3) to a single rung when the float division lands just below 1;
    DeadlineBOHB uses this tolerant version instead.
    """
    return int(math.floor(math.log(max_budget / min_budget) / math.log(eta) + 1e-9)) + 1


def hpbandster_budgets(min_budget: float, max_budget: float, eta: float) -> list[float]:
    """The budgets BOHB runs for (min, max, eta): max * eta**-k, smallest first."""
    n = n_rungs(min_budget, max_budget, eta)
    return [float(b) for b in max_budget * np.power(float(eta), -np.linspace(n - 1, 0, n))]
