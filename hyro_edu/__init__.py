"""hyro-edu: hyperbolic and hyperspherical vision-language alignment, from the geometry up.

Curvature convention, everywhere in this package: ``c > 0`` means curvature ``-c``.

The package is a house with floors; each subpackage imports only from the floors below it
(``tests/test_layers.py`` enforces this with an import-linter ``layers`` contract):

=====================  ================================================================  ==========
subpackage             what it holds                                                     book part
=====================  ================================================================  ==========
``book``               helpers for the chapters (glue, plots, widgets); nothing          all
                       imports it
``segmentation``       HyRo / HyperCLIP / H-CLIP: CAT-Seg decoder, segmenter,            IV
``hvsa``               evaluation, trainer; HVSA and tree alignment (planned) beside it
``tree_alignment``
``clip``               the CLIP backbone, weights, tiny CLIP, pretraining, fine-tuning   III
``data``               the procedural toy world, the benchmark datasets                  III
``training``           the shared engine: configs, run directories, resume, signals      IV
``nn``, ``hierarchy``  adapters (layers on the geometry); trees, taxonomies,             II
                       tree embeddings, entailment-cone training
``geometry``           pure functions: Poincaré ball, Lorentz model, Cayley maps,        I-II
                       T-products, cones, wrapped normals, intermediate curvature
``core``               validation, numerics, curvature conventions, paths                I
=====================  ================================================================  ==========

Subpackages resolve lazily (PEP 562): ``import hyro_edu`` is cheap, and
``hyro_edu.segmentation`` imports CLIP and the decoder only when first touched.

The modules also keep their short names, so ``from hyro_edu import poincare`` (the form the
chapters use) is ``hyro_edu.geometry.poincare``; :data:`SHORT_NAMES` lists every one.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: The subpackages, bottom floor first.
SUBPACKAGES = (
    "core",
    "geometry",
    "nn",
    "hierarchy",
    "training",
    "data",
    "clip",
    "segmentation",
    "hvsa",
    "tree_alignment",
    "book",
)

#: Short name -> the module it stands for (the flat layout of versions before 0.2).
SHORT_NAMES = {
    "checks": "core.checks",
    "numerics": "core.numerics",
    "curvature": "core.curvature",
    "paths": "core.paths",
    "poincare": "geometry.poincare",
    "lorentz": "geometry.lorentz",
    "cayley": "geometry.cayley",
    "tproduct": "geometry.tproduct",
    "cones": "geometry.cones",
    "wrapped_normal": "geometry.wrapped_normal",
    "intermediate_curvature": "geometry.intermediate_curvature",
    "hyperbolic_adapter": "nn.hyperbolic_adapter",
    "hyperspherical": "nn.hyperspherical",
    "trees": "hierarchy.trees",
    "taxonomies": "hierarchy.taxonomies",
    "tree_embedding": "hierarchy.tree_embedding",
    "entailment": "hierarchy.entailment",
    "clip_pretraining": "clip.pretraining",
    "finetune": "clip.finetune",
    "toyworld": "data.toyworld",
    "segmentation_data": "data.benchmarks",
    "catseg": "segmentation.catseg",
    "seg_model": "segmentation.model",
    "segmentation_eval": "segmentation.evaluation",
    "seg_training": "segmentation.train",
    "notebook": "book.notebook",
    "plotting": "book.plotting",
    "widgets": "book.widgets",
}

__all__ = [*SUBPACKAGES, *SHORT_NAMES, "SHORT_NAMES", "SUBPACKAGES", "__version__"]


def __getattr__(name: str):
    """PEP 562: import a subpackage, or the module behind a short name, on first access."""
    if name in SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{name}")
    elif name in SHORT_NAMES:
        module = importlib.import_module(f"{__name__}.{SHORT_NAMES[name]}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = module
    return module


def __dir__():
    return sorted(set(globals()) | set(__all__))
