"""HVSA, hyperbolic visual-semantic alignment for structural visual recognition (:cite:`hvsa`).

Labels are wrapped normals in the Poincaré ball, an image's prior is the uniform mixture of its
labels' distributions (a Gaussian-mixture VAE), and entailment cones order the labels by the
taxonomy.  Modules, bottom up: ``taxonomy`` (labels, paths, levels), ``latent`` (the two latent
geometries), ``label_embedding`` (Eq. 4), ``visual_embedding`` (Eq. 5), ``sampling`` (Sec. 4.2),
``classification`` (the classification loss), ``objective`` (Eqs. 7-14), ``head`` (the model),
``backbones`` (the feature extractors under the head) and ``train`` (the Lightning trainer, its
configs and command line).
"""
from hyro_edu.core.lazy import lazy_submodules

__all__ = [
    "taxonomy",
    "latent",
    "label_embedding",
    "visual_embedding",
    "sampling",
    "classification",
    "objective",
    "head",
    "backbones",
    "train",
]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
