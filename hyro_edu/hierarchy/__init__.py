"""Hierarchies and what scores them: trees, taxonomies, tree embeddings in the Poincaré ball, entailment-cone training on a tree, and hierarchical evaluation metrics."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["trees", "taxonomies", "tree_embedding", "entailment", "metrics"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
