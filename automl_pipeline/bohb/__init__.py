"""BOHB over stacked cells: ConfigSpace space (space), hpbandster worker (worker), budget
arithmetic (budgets), results and the incumbent rule (results), the per-trial files (trial_log),
the deadline-bounded master (master), name server options and shared secret (nameserver), the
time-bounded search (search: run_bohb and its BohbOptions), remote workers (remote), and the
Pyro4/serpent numpy fix."""
from automl_pipeline.bohb.budgets import choose_budgets, default_first_configs, hpbandster_budgets
from automl_pipeline.bohb.master import OPTIMIZERS, DeadlineBOHB
from automl_pipeline.bohb.nameserver import HmacKeyError, NameServerOptions, require_hmac_key
from automl_pipeline.bohb.search import BohbOptions, run_bohb
from automl_pipeline.bohb.remote import run_remote_worker
from automl_pipeline.bohb.results import BohbResult, TrialRecord, select_incumbent
from automl_pipeline.bohb.serialization import register_numpy_serializers
from automl_pipeline.bohb.space import build_config_space, fixed_hyperparameters
from automl_pipeline.bohb.worker import (TrialContext, TrialWorker, config_to_network_spec, config_to_train_config,
                                         evaluate_config)

__all__ = ["OPTIMIZERS", "BohbOptions", "BohbResult", "DeadlineBOHB", "HmacKeyError", "NameServerOptions",
           "TrialContext", "TrialRecord", "TrialWorker", "build_config_space", "choose_budgets",
           "config_to_network_spec", "config_to_train_config", "default_first_configs", "evaluate_config",
           "fixed_hyperparameters", "hpbandster_budgets",
           "register_numpy_serializers", "require_hmac_key", "run_bohb", "run_remote_worker", "select_incumbent"]
