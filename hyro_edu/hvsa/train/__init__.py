r"""Training HVSA with Lightning: one code path from the toy world to the paper's six datasets.

.. math::
    \min_{\theta}\ \mathbb E_{(x, y)}\Big[\mathcal L_{CLS} + \alpha\,\mathcal L_{HM}
        + \beta\,\big(D_{KL} + \mathcal L_{RECON}\big)\Big]

(HVSA :cite:`hvsa`, Eq. 12) over a backbone (:mod:`hyro_edu.hvsa.backbones`) and the head
(:class:`hyro_edu.hvsa.head.HVSAHead`), on the shared engine :mod:`hyro_edu.training`.

Usage (a notebook)::

    from hyro_edu.hvsa.train import load_config, train, ABLATIONS
    cfg = load_config("toy", overrides={"components": "full", "seed": 0})  # or ["steps=50", ...]
    result = train(cfg)          # trains, or loads the finished run, or resumes an interrupted one
    result["metrics"]            # {"map", "cmap", "cv", "cv_edges", "map_per_level", "kl", "hm"}

Shipped configs (:func:`available_configs`): ``toy`` (image level, CPU-sized: the toy world at
32 px, 3,000 / 1,000 scenes, ``toy_cnn`` pretrained on the training scenes, d = n = 32, 400
steps of 64), ``toy_pixel`` (the tiny
FCN, per-level focal loss, 32 pixels per image for KL and RECON, batch 32 x 300 steps), and one per paper
setting with the hyper-parameters of the paper's Sec. 5.1 (``imclef07a``, ``imclef07d``,
``tiered_imagenet_h``, ``cityscapes``, ``lip``, ``pascal_person_part``), which need
``python -m data_scripts.prepare --datasets NAME`` first (:func:`train` says so before it starts).
The ablations of Tables 6-7 are config overrides: :data:`ABLATIONS` (image level) and
:data:`PIXEL_ABLATIONS`.

Runs live in ``$HYRO_EDU_CHECKPOINTS/<name>/`` (:func:`hyro_edu.core.paths.checkpoint_dir`; the
default name joins the dataset, the variant, the seed and the config key): ``run.json`` (the config
and its key), ``checkpoints/last.ckpt``, ``logs/csv/version_<attempt>/metrics.csv``,
``metrics.json`` (fractions) and ``result.pt`` (metrics and weights, written last).  SIGINT
(Ctrl-C) and SIGTERM stop after the current step with a checkpoint; the command line prints
"interrupted at step N; run the same command to resume" and exits with 130 or 143.

Command line::

    python -m hyro_edu.hvsa.train                                  # the toy config
    python -m hyro_edu.hvsa.train --config toy --set components=cls --set seed=1
    python -m hyro_edu.hvsa.train --config cityscapes --print-config

The package: :mod:`.config` (:class:`HVSATrainConfig`, :func:`check_data`), :mod:`.data` (the
resumable stream, the toy world, the prepared datasets), :mod:`.pretrain` (the toy CNN's
pretrained weights), :mod:`.task` (the Lightning task, the
schedule, evaluation), :mod:`.run` (:func:`train`, :func:`load_result`, :func:`load_trained`) and
``__main__``.  Every name below is importable from here; the submodules load on first use, so
``python -m hyro_edu.hvsa.train --help`` imports neither torch nor Lightning.
"""
from __future__ import annotations

from hyro_edu.core.lazy import lazy_names

#: The image-level variants of our CPU plan (HVSA Tables 6-7): V1 classification
#: only, V2 + beta (KL + RECON), V3 the full model, V4 the full model in Euclidean space.
ABLATIONS = {
    "V1": {"components": "cls"},
    "V2": {"components": "vae"},
    "V3": {"components": "full"},
    "V4": {"components": "full", "geometry": "euclidean"},
}
#: The pixel-level variants run on ``toy_pixel`` (V1, V3, V4).
PIXEL_ABLATIONS = {key: ABLATIONS[key] for key in ("V1", "V3", "V4")}

#: Where each public name lives.
_HOMES = {
    "config": ("DATASETS", "IMAGE_DATASETS", "PIXEL_DATASETS", "BACKBONES", "DENSE_BACKBONES", "OPTIMIZERS",
               "LR_SCHEDULES", "PRECISIONS", "DataNotPrepared", "HVSATrainConfig", "available_configs",
               "load_config", "run_dir", "check_run_dir", "check_data"),
    "data": ("ResumableSampler", "toy_tensors", "TensorData", "ImageData", "SegmentationData", "HVSAData",
             "build_data", "downsample_labels"),
    "pretrain": ("pretrain_toy_cnn", "pretrained_toy_cnn"),
    "task": ("lr_factor", "HVSAModel", "HVSATask", "HVSADataModule", "build_model", "evaluate"),
    "run": ("TrainingInterrupted", "RunConflict", "train", "load_result", "load_trained", "format_metrics",
            "format_summary", "write_metrics"),
    "__main__": ("main",),
}
__all__ = ["ABLATIONS", "PIXEL_ABLATIONS"] + [name for names in _HOMES.values() for name in names]
__getattr__, __dir__ = lazy_names(__name__, _HOMES, submodules=("config", "data", "pretrain", "task", "run"), public=__all__)
