"""The BOHB search space (ConfigSpace 1.x).

Ranges follow the poster's code (DESIGN.md section 5). Three variants:

* ours, DARTS available: cells come from the DARTS genotype or are sampled
  from the amplified DARTS distribution (`cell_source`, with `temperature` and
  `cell_seed` active only for `sampled`); focal loss with class weights; the
  scheduled surrogate skip (`surrogate_skip`, with `beta0` active only when on).
* ours, no DARTS result: the same without `cell_source` (the default genotype).
* baseline: a fixed CNN of template blocks (DEFAULT_GENOTYPE), plain
  cross-entropy, no class weights, no surrogate skip.

hpbandster's BOHB needs every hyperparameter as numeric or categorical (it
rejects ordinal ones), so the channel widths are a categorical.
"""
from __future__ import annotations

from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float, Integer

BASE_CHANNELS = (16, 24, 32, 48)

# names shared by every variant
COMMON_HPS = ("batch_size", "n_cells", "lr_schedule", "lr", "weight_decay", "optimizer", "base_channels", "dropout")
LOSS_HPS = ("focal_gamma", "class_weight_smoothing")
SKIP_HPS = ("surrogate_skip", "beta0")
CELL_HPS = ("cell_source", "temperature", "cell_seed")


def build_config_space(*, seed: int, darts_available: bool, baseline: bool) -> ConfigurationSpace:
    """The configuration space for one BOHB phase; `seed` seeds its sampler.

    `baseline=True` wins over `darts_available` (the baseline never uses DARTS).
    """
    cs = ConfigurationSpace(seed=seed)
    cs.add([
        Integer("batch_size", (16, 256), log=True, default=64),
        Integer("n_cells", (1, 6), default=3),
        Categorical("lr_schedule", ["onecycle", "none"], default="onecycle"),
        Float("lr", (1e-5, 1e-1), log=True, default=3e-3),
        Float("weight_decay", (1e-8, 1e-1), log=True, default=5e-4),
        Categorical("optimizer", ["adamw", "sgd"], default="adamw"),
        Categorical("base_channels", list(BASE_CHANNELS), default=32),
        Float("dropout", (0.0, 0.5), default=0.3),
        # linear head, or the poster's 64-32-16 MLP head (it learned far slower on short budgets)
        Categorical("head", ["linear", "mlp"], default="linear"),
        # horizontal flips in the augmentation: right for photos, wrong for digits and characters
        Categorical("flip", [False, True], default=False),
    ])
    if baseline:
        return cs

    cs.add([
        Float("focal_gamma", (0.0, 5.0), default=3.0),
        Float("class_weight_smoothing", (0.0, 1.0), default=0.8),
    ])
    surrogate_skip = Categorical("surrogate_skip", [False, True], default=False)
    beta0 = Float("beta0", (0.1, 1.0), default=1.0)
    cs.add([surrogate_skip, beta0])
    cs.add(EqualsCondition(beta0, surrogate_skip, True))

    if darts_available:
        cell_source = Categorical("cell_source", ["darts_genotype", "sampled"], default="darts_genotype")
        temperature = Float("temperature", (0.1, 1.0), default=0.5)
        cell_seed = Integer("cell_seed", (0, 10 ** 6), default=0)
        cs.add([cell_source, temperature, cell_seed])
        cs.add([EqualsCondition(temperature, cell_source, "sampled"),
                EqualsCondition(cell_seed, cell_source, "sampled")])
    return cs
