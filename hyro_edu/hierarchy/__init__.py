"""Hierarchies and what scores them: trees, taxonomies, tree embeddings in the Poincaré ball, entailment-cone training on a tree, hierarchical evaluation metrics, and ProTeCt's taxonomic open-set machinery (depth-first taxonomies, tree cuts, their losses and metrics)."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = [
    "trees",
    "taxonomies",
    "tree_embedding",
    "entailment",
    "metrics",
    "taxonomic_tree",
    "tree_cuts",
    "taxonomic_losses",
    "taxonomic_metrics",
]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
