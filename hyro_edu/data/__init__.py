"""Datasets: the procedural toy world (images, masks, a three-level taxonomy), the seven open-vocabulary segmentation benchmarks, HVSA's hierarchical datasets and tree alignment's taxonomic datasets, read from their prepared on-disk formats, and the completion marker of a prepared dataset (``prepared``)."""
from hyro_edu.core.lazy import lazy_submodules

__all__ = ["toyworld", "benchmarks", "hierarchical_datasets", "taxonomic_datasets", "prepared"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
