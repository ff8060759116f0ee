r"""Training tree alignment with Lightning: one code path from the toy world to the paper's four datasets.

.. math::
    \min_{\text{prompts},\,W_{q,k,v},\,c}\ \mathbb E_{(x, y)}\Big[w_{\rm mta}\,\mathcal L_{\rm DTL}
        + \lambda\,\mathcal L_{\rm NCL} + \alpha\,L_{\rm align}\Big]

(:cite:`wu2026modality`; ProTeCt's losses :cite:`wu2024protect` on MaPLe :cite:`khattak2023maple`)
with :class:`hyro_edu.tree_alignment.model.TreeAlignmentModel` on the shared engine
:mod:`hyro_edu.training`.

Usage (a notebook)::

    from hyro_edu.tree_alignment.train import load_config, train, VARIANTS
    cfg = load_config("toy", overrides={"variant": "protect", "shots": 1})
    result = train(cfg)        # trains, or loads the finished run, or resumes an interrupted one
    result["metrics"]          # {"base": {"la", "hca", "mta", "mta_std", ...}, "novel": {...}, "full": {...}}
    result["curvatures"]       # [(step, c_i, c_t, c_m), ...] for the hyperbolic variants

Shipped configs (:func:`hyro_edu.tree_alignment.train.config.available_configs`): ``toy`` (the
design notes' CPU plan: the toy world at 64 px, 16 shots of the 36 seen classes, the tiny CLIP
pretrained on the toy world, SGD with momentum 0.9 at 0.02, one warm-up epoch, batch 32 x 360
steps; ``shots=1`` for 1-shot) and one per paper setting with the hyper-parameters of the official
MaPLe configs: ``cifar100``, ``sun``, ``imagenet``, ``rare_species`` (16 shots) and their
``*_1shot`` twins.  These need ``python -m data_scripts.prepare --datasets KEY`` first, ``KEY``
being ``cifar100_protect``, ``sun324``, ``imagenet_protect`` or ``rare_species``
(:data:`hyro_edu.tree_alignment.train.config.TAXONOMIC_KEYS`;
:func:`hyro_edu.tree_alignment.train.run.train` says so before it starts); they train by the
base-to-novel protocol (few shots of the base classes, evaluation on the base, novel and full
trees, :mod:`hyro_edu.tree_alignment.train.data`).  The ablation rows are the ``variant`` key
(:data:`hyro_edu.tree_alignment.train.VARIANTS`).

Runs live in ``$HYRO_EDU_CHECKPOINTS/<name>/`` (see :mod:`hyro_edu.tree_alignment.train.run`).
SIGINT (Ctrl-C) and SIGTERM stop after the current step with a checkpoint.

Command line::

    python -m hyro_edu.tree_alignment.train
    python -m hyro_edu.tree_alignment.train --set variant=hypv1 --set seed=1
    python -m hyro_edu.tree_alignment.train --config sun --print-config

The package: ``config`` (the config class
:class:`hyro_edu.tree_alignment.train.config.TreeAlignmentTrainConfig` and
:func:`hyro_edu.tree_alignment.train.config.check_data`), ``data`` (few-shot sets, the evaluation
trees, the toy world and the full-size datasets), ``task`` (the Lightning task, the schedule, evaluation), ``run``
(:func:`hyro_edu.tree_alignment.train.run.train`,
:func:`hyro_edu.tree_alignment.train.run.load_result`,
:func:`hyro_edu.tree_alignment.train.run.load_trained`) and ``__main__``.  Every name below is
importable from here; the submodules load on first use, so ``--help`` imports neither torch nor
Lightning.
"""
from __future__ import annotations

from hyro_edu.core.lazy import lazy_names

#: The ablation rows of the CPU plan, in table order (``variant`` values).
VARIANTS = ("vanilla", "protect", "sym", "euc", "hypv1", "hypv2", "full")

_HOMES = {
    "config": ("DATASETS", "FULL_DATASETS", "CLIP_MODELS", "CURV_VERSIONS_BY_VARIANT", "PRECISIONS",
               "DataNotPrepared", "TreeAlignmentTrainConfig", "available_configs", "load_config", "run_dir",
               "check_run_dir", "check_data"),
    "data": ("few_shot_indices", "subtree", "toy_images", "ImageTensors", "TaxonomicImages", "EvalSet",
             "TreeAlignmentData", "build_data"),
    "task": ("lr_factor", "build_model", "TreeAlignmentTask", "TreeAlignmentDataModule", "stored_cuts", "evaluate"),
    "run": ("CURVATURES_FILE", "TrainingInterrupted", "RunConflict", "train", "load_result", "load_trained",
            "run_cuts", "format_metrics", "format_summary", "write_metrics", "write_curvatures"),
    "__main__": ("main",),
}
__all__ = ["VARIANTS"] + [name for names in _HOMES.values() for name in names]
__getattr__, __dir__ = lazy_names(__name__, _HOMES, submodules=("config", "data", "task", "run"), public=__all__)
