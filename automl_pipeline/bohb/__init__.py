"""BOHB over stacked cells: ConfigSpace space, hpbandster worker, the time-bounded phase,
remote workers, and the Pyro4/serpent numpy fix."""
from automl_pipeline.bohb.phase import (BohbResult, DeadlineBOHB, TrialRecord, choose_budgets, hpbandster_budgets,
                                        run_bohb, select_incumbent)
from automl_pipeline.bohb.remote import run_remote_worker
from automl_pipeline.bohb.serialization import register_numpy_serializers, to_plain
from automl_pipeline.bohb.space import build_config_space, fixed_hyperparameters
from automl_pipeline.bohb.worker import (TrialContext, TrialWorker, config_to_network_spec, config_to_train_config,
                                         evaluate_config)

__all__ = ["BohbResult", "DeadlineBOHB", "TrialContext", "TrialRecord", "TrialWorker", "build_config_space",
           "choose_budgets", "config_to_network_spec", "config_to_train_config", "evaluate_config", "fixed_hyperparameters",
           "hpbandster_budgets", "register_numpy_serializers", "run_bohb", "run_remote_worker",
           "select_incumbent", "to_plain"]
