"""Hierarchies and what scores them: trees, taxonomies, tree embeddings in the Poincaré ball, and entailment-cone training on a tree."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["trees", "taxonomies", "tree_embedding", "entailment"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
