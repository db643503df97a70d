"""DARTS: supernet, bilevel search with skip prevention, discretisation, sampling."""
from automl_pipeline.darts.discretize import amplify, derive_genotype, op_group, sample_genotype, with_more_skips
from automl_pipeline.darts.search import (DartsConfig, DartsResult, cosine_lr,
                                          estimate_epoch_seconds, random_cell_result, run_darts, skip_count,
                                          steps_per_epoch)
from automl_pipeline.darts.supernet import MixedOp, SearchCell, SuperNet, edge_inputs, n_edges_for

__all__ = ["DartsConfig", "DartsResult", "MixedOp", "SearchCell", "SuperNet", "amplify",
           "cosine_lr", "derive_genotype", "edge_inputs", "estimate_epoch_seconds", "n_edges_for", "op_group",
           "random_cell_result", "run_darts", "sample_genotype", "skip_count", "steps_per_epoch",
           "with_more_skips"]
