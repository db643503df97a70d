"""Op registry, genotypes, cells and the stacked network (NetworkSpec -> nn.Module)."""
from automl_pipeline.search_space.cells import Cell, Edge
from automl_pipeline.search_space.genotype import DEFAULT_GENOTYPE, Genotype, node_edges, validate_genotype
from automl_pipeline.search_space.network import (N_STAGES, Network, NetworkSpec, build_network, cell_stages,
                                                  default_stem_pool, node_channels, reduction_cells)
from automl_pipeline.search_space.ops import EXTRA_OPS, OPS, TEMPLATE_OPS, make_op

__all__ = ["Cell", "DEFAULT_GENOTYPE", "EXTRA_OPS", "Edge", "Genotype", "N_STAGES", "Network", "NetworkSpec",
           "OPS", "TEMPLATE_OPS", "build_network", "cell_stages", "default_stem_pool", "make_op", "node_channels",
           "node_edges", "reduction_cells", "validate_genotype"]
