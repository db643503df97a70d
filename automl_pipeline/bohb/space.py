"""The BOHB search space (ConfigSpace 1.x), kept small on purpose.

hpbandster's KDE is built for a budget only once it has 2(d+1) results there (d = number of
hyperparameters; `min_points_in_model` = d+1 good and d+1 bad points), and until then BOHB is
random search. The poster's 17 dimensions would need 36 results on one budget, which no CPU run
of minutes reaches, so the space keeps the dimensions that measured to matter and fixes the rest
(AdamW, one-cycle, weight decay 5e-4, linear head without dropout, batch from the data size,
focal gamma 3 with class-weight smoothing 0.8, surrogate beta0 1.0):

* ours: lr, depth (`n_cells`), width (`base_channels`), the loss (`focal` + class weights,
  `logit_adjusted`, plain `ce`), horizontal flips, the DARTS- surrogate skip during training (d = 6),
  and, when the genotype pool has more than one cell (a DARTS result that learned, see
  `genotype_pool`), the cell of each stage of the stack (`cell_stage0`, `cell_stage1`, `cell_stage2`:
  names from the pool; stages as in `search_space.network.cell_stages`; a network with fewer
  reduction cells leaves the later stage choices unused). d = 9, so the KDE needs 20 results on a
  budget and BOHB's first bracket has 22 configurations (bohb/budgets.py `default_first_configs`).
  When that bracket does not fit the phase, the BOHB phase (phases/hyperparameters.py) searches one
  `cell` for the whole stack (d = 7, 18 configurations), else fixes the DARTS cell (d = 6).
* baseline (search options with DARTS off and the loss and surrogate skip fixed): lr, depth, width
  and flips over the default cell. d = 4.

Every hyperparameter is numeric or categorical (hpbandster rejects ordinal ones).
"""
from __future__ import annotations

from collections.abc import Collection

from ConfigSpace import Categorical, Configuration, ConfigurationSpace, Float, Integer

from automl_pipeline.search_options import SearchOptions
from automl_pipeline.search_space.network import N_STAGES

BASE_CHANNELS = (16, 24, 32)
LOSSES = ("focal", "logit_adjusted", "ce")
DEFAULT_CELL = "default"
STAGE_CELL_KEYS = tuple(f"cell_stage{s}" for s in range(N_STAGES))   # the config key of each stage's cell
SHARED_CELL_KEY = "cell"                                              # one cell for every stage
# How BOHB chooses cells from a pool of more than one: one per stage (d + 3) or one for all (d + 1).
CELL_CHOICES = ("per_stage", "shared")


def build_config_space(*, seed: int, cells: tuple[str, ...] = (DEFAULT_CELL,),
                       fixed: Collection[str] = (), cell_choice: str = "per_stage"
                       ) -> ConfigurationSpace:
    """The configuration space for one BOHB phase; `seed` seeds its sampler.

    cells: the names of the genotype pool (`genotype_pool`); one name leaves the cell fixed, more add
      one categorical per stage (STAGE_CELL_KEYS; cell_choice "per_stage") or one for the whole stack
      (SHARED_CELL_KEY; "shared"), default cells[0].
    fixed: names of hyperparameters the search options fix ("loss", "surrogate_skip"): left out of
      the space (the trials get their values from TrialContext.fixed).
    """
    cs = ConfigurationSpace(seed=seed)
    cs.add([
        Float("lr", (3e-4, 3e-2), log=True, default=3e-3),
        Integer("n_cells", (2, 5), default=3),
        Categorical("base_channels", list(BASE_CHANNELS), default=24),
        # horizontal flips in the augmentation: right for photos, wrong for digits and characters
        Categorical("flip", [False, True], default=False),
    ])
    if "loss" not in fixed:
        cs.add(Categorical("loss", list(LOSSES), default="focal"))
    if "surrogate_skip" not in fixed:
        cs.add(Categorical("surrogate_skip", [False, True], default=False))
    if cell_choice not in CELL_CHOICES:
        raise ValueError(f"cell_choice must be one of {CELL_CHOICES}, got {cell_choice!r}")
    if len(cells) > 1 and SHARED_CELL_KEY not in fixed:
        keys = STAGE_CELL_KEYS if cell_choice == "per_stage" else (SHARED_CELL_KEY,)
        cs.add([Categorical(key, list(cells), default=cells[0]) for key in keys])
    return cs


def fixed_hyperparameters(options: SearchOptions) -> dict:
    """Hyperparameters the search options fix (the loss; the surrogate skip, off), with their values:
    left out of the space (`build_config_space(fixed=...)`), sent with every BOHB job and used by the
    networks trained outside BOHB."""
    fixed: dict = {}
    if options.fixed_loss is not None:
        fixed["loss"] = options.fixed_loss
    if not options.surrogate_skip:
        fixed["surrogate_skip"] = False
    return fixed


def n_hyperparameters(space: ConfigurationSpace) -> int:
    return len(list(space.values()))


def config_fits(space, config: dict) -> bool:
    """True when `config` is a valid configuration of the ConfigSpace `space`."""
    try:
        Configuration(space, values=config)
    except Exception:   # noqa: BLE001 - ConfigSpace raises several types for a foreign configuration
        return False
    return True
