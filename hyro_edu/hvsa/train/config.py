"""The training config of HVSA: :class:`HVSATrainConfig`, the shipped configs, and the data check.

A config is checked completely when it is constructed -- keys, choices, ranges, which backbone
fits which dataset -- so the command line reports every mistake before Lightning loads or a model
is built.  :func:`check_data` then checks that a full-size dataset is prepared, and names the
``python -m data_scripts.prepare --datasets ...`` command when it is not (a ``ValueError``
naming the ``dataset`` key), again before anything heavy starts.  Nothing here imports Lightning.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Union

from hyro_edu.core import checks
from hyro_edu.hvsa import latent as _latent
from hyro_edu.hvsa import objective as _objective
from hyro_edu.hvsa.classification import CLS_LOSSES
from hyro_edu.hvsa.head import SCORE_WITH
from hyro_edu.hvsa.sampling import LABEL_SAMPLES
from hyro_edu.hvsa.taxonomy import PRIOR_LABELS
from hyro_edu.hvsa.visual_embedding import BASE_POINTS, POSTERIOR_SCALES
from hyro_edu.training.config import DistributedConfig, TrainConfig, suggest

__all__ = [
    "DATASETS",
    "IMAGE_DATASETS",
    "PIXEL_DATASETS",
    "BACKBONES",
    "DENSE_BACKBONES",
    "OPTIMIZERS",
    "LR_SCHEDULES",
    "PRECISIONS",
    "DataNotPrepared",
    "HVSATrainConfig",
    "available_configs",
    "load_config",
    "run_dir",
    "check_run_dir",
    "check_data",
]

#: Image-level datasets: the toy world (rendered once), ImCLEF07A/D (80-d features),
#: tieredImageNet-H (images, one leaf each).
IMAGE_DATASETS = ("toy", "imclef07a", "imclef07d", "tiered_imagenet_h")
#: Pixel-level datasets: the toy world's class maps and the three segmentation benchmarks.
PIXEL_DATASETS = ("toy_pixel", "cityscapes", "lip", "pascal_person_part")
#: Every value of ``dataset``.
DATASETS = IMAGE_DATASETS + PIXEL_DATASETS
#: Names :func:`hyro_edu.hvsa.backbones.build_backbone` knows.
BACKBONES = ("toy_cnn", "toy_fcn", "identity", "resnet18", "deeplabv3plus_resnet101")
#: Backbones that return per-pixel features ``(B, D, H', W')``.
DENSE_BACKBONES = ("toy_fcn", "deeplabv3plus_resnet101")
#: Values of ``optimizer``: Adam (no weight decay unless set) or SGD with momentum.
OPTIMIZERS = ("adam", "sgd")
#: Values of ``lr_schedule`` (the paper's "cosine annealing with initial value 2e-4 and range
#: [0, 1e-3]", two readings, and a constant rate):
#:
#: * ``"warmup_cosine"`` (reading (a)): linear from ``warmup_start_lr`` to ``lr`` over
#:   ``warmup_steps``, then :math:`\eta_t = \eta\,\tfrac12(1 + \cos(\pi (t - W)/(T - W)))`;
#: * ``"cosine_clamped"`` (reading (b)): :math:`\min(\eta,\ \eta_0\,\tfrac12(1 + \cos(\pi t/T)))`
#:   with :math:`\eta_0` = ``warmup_start_lr`` (no warm-up);
#: * ``"constant"``: ``lr`` throughout.
LR_SCHEDULES = ("warmup_cosine", "cosine_clamped", "constant")
#: ``precision`` values (Lightning's names).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")

_TOY = ("toy", "toy_pixel")


class DataNotPrepared(ValueError):
    """The config's dataset has no completed preparation; the message names the command."""


def _number(value, name: str, *, low: float = 0.0, strict: bool = True, allow_none: bool = False,
            high: Optional[float] = None) -> None:
    if value is None and allow_none:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not (value > low if strict else value >= low) or (high is not None and value > high):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        if high is not None:
            bound += f" and <= {high:g}"
        raise ValueError(f"{name} must be a finite number {bound}{' or null' if allow_none else ''}, "
                         f"got {value!r}")


@dataclass(frozen=True)
class HVSATrainConfig(TrainConfig, DistributedConfig):
    """One HVSA training run (defaults: the ``toy`` config).

    Fields, by group:

    * ``name``: the run name (the folder under the runs root); ``null`` gives
      ``<dataset>-<components>-<geometry>-seed<seed>-<first 8 digits of the key>``, so every
      distinct config has its own folder.
    * ``dataset``: one of ``DATASETS``; ``backbone``: one of ``BACKBONES`` (dense ones for the
      pixel datasets, ``identity`` only for ImCLEF07); ``pretrained``: ImageNet weights.
    * ``toy_image_size``, ``toy_train``, ``toy_test``, ``toy_objects``: the toy world (32 px;
      3,000 train and 1,000 test scenes rendered once and cached; ``[lo, hi]`` objects per scene);
      ``toy_pretrain_steps``: 0 trains ``toy_cnn`` from scratch, ``k > 0`` starts it from the toy
      world's pretrained weights (:func:`hyro_edu.hvsa.train.pretrain.pretrained_toy_cnn`, ``k``
      steps, cached), the toy world's stand-in for the paper's ImageNet-pretrained backbones.
    * ``d``, ``n``, ``c``, ``visual_hidden``, ``semantic_hidden``, ``decoder_hidden``: the head's
      sizes and curvature ``-c`` (:class:`~hyro_edu.hvsa.head.HVSAHead`).
    * ``components``, ``geometry``, ``hm_rule``, ``hm_reduction``, ``vae_reduction``, ``cls_loss``,
      ``score_with``, ``recon_target``, ``prior_labels``, ``label_sample``, ``posterior_scale``,
      ``base_point``: the head's switches (``cls_loss: null``: BCE for images, focal for pixels).
    * ``alpha``, ``beta``, ``gamma``, ``K``, ``focal_gamma``, ``negatives``, ``pixel_samples``: the
      head's constants.
    * ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``lr_schedule``, ``warmup_steps``,
      ``warmup_start_lr``, ``grad_clip``: the solver (``OPTIMIZERS``, ``LR_SCHEDULES``).
    * ``batch_size``, ``steps``: the budget (optimiser steps).
    * ``crop_size``, ``scale_range``, ``hflip``: segmentation augmentation (``[h, w]`` crop, random
      scale, horizontal flip); ``image_size``: tieredImageNet-H's square side.
    * ``eval_split``: the split evaluated after training (``null``: the test split, or the last
      split with labels); ``eval_limit``: at most this many evaluation samples (``null``: all).
    * ``eval_batch_size``, ``checkpoint_every``, ``num_workers``, ``progress``, ``precision``:
      bookkeeping.
    * ``seed``: initialisation and data-order seed (the toy scenes are the same for every seed).
    * ``devices``, ``num_nodes``, ``strategy``, ``accumulate_grad_batches``: where the run trains
      (:class:`hyro_edu.training.config.DistributedConfig`; ``batch_size`` stays the global batch
      of a step; not part of the run key).
    """

    CONFIG_PACKAGE: ClassVar[str] = "hyro_edu.hvsa.configs"
    DEFAULT_CONFIG: ClassVar[str] = "toy"
    KEY_IGNORES: ClassVar[tuple] = ("name", "eval_batch_size", "checkpoint_every", "num_workers",
                                    "progress")

    name: Optional[str] = None
    dataset: str = "toy"
    backbone: str = "toy_cnn"
    pretrained: bool = False
    toy_image_size: int = 32
    toy_train: int = 3000
    toy_test: int = 1000
    toy_objects: tuple = (1, 2)
    toy_pretrain_steps: int = 0
    d: int = 32
    n: int = 32
    c: float = 1.0
    visual_hidden: tuple = (32, 32, 16)
    semantic_hidden: tuple = (32, 16)
    decoder_hidden: tuple = (16, 32, 32)
    components: str = "full"
    geometry: str = "hyperbolic"
    hm_rule: str = "ganea"
    hm_reduction: str = "mean"
    vae_reduction: str = "sum"
    cls_loss: Optional[str] = None
    score_with: str = "f"
    recon_target: str = "feature"
    prior_labels: str = "path"
    label_sample: str = "wrapped"
    posterior_scale: str = "learned"
    base_point: str = "origin"
    alpha: float = 0.2
    beta: float = 4.0
    gamma: float = 1.0
    K: float = 0.1
    focal_gamma: float = 2.0
    negatives: Optional[int] = 10
    pixel_samples: int = 1024
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "warmup_cosine"
    warmup_steps: int = 20
    warmup_start_lr: Optional[float] = None
    grad_clip: Optional[float] = None
    batch_size: int = 64
    steps: int = 400
    crop_size: tuple = (512, 1024)
    scale_range: tuple = (0.5, 2.0)
    hflip: bool = True
    image_size: int = 224
    eval_split: Optional[str] = None
    eval_limit: Optional[int] = None
    eval_batch_size: int = 250
    checkpoint_every: int = 100
    num_workers: int = 0
    progress: bool = True
    precision: str = "32-true"
    seed: int = 0

    def __post_init__(self):
        self.coerce_sequences()
        self.check_name()
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}"
                             + suggest(str(self.dataset), DATASETS))
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}"
                             + suggest(str(self.backbone), BACKBONES))
        dense = self.backbone in DENSE_BACKBONES
        if self.dataset in PIXEL_DATASETS and not dense:
            raise ValueError(f"backbone must be a dense one {DENSE_BACKBONES} for the pixel-level dataset "
                             f"{self.dataset!r}, got {self.backbone!r}")
        if self.dataset in IMAGE_DATASETS and dense:
            raise ValueError(f"backbone must be an image-level one (not {DENSE_BACKBONES}) for the "
                             f"image-level dataset {self.dataset!r}, got {self.backbone!r}")
        if (self.backbone == "identity") != self.dataset.startswith("imclef07"):
            raise ValueError(f"backbone 'identity' goes with the feature datasets imclef07a/imclef07d and "
                             f"only with them; got backbone {self.backbone!r} for dataset {self.dataset!r}")
        for field_name in ("pretrained", "hflip", "progress"):
            if not isinstance(getattr(self, field_name), bool):
                raise ValueError(f"{field_name} must be true or false, got {getattr(self, field_name)!r}")
        for field_name, allowed in (
            ("components", _objective.COMPONENTS), ("geometry", _latent.GEOMETRIES),
            ("hm_rule", _objective.HM_RULES), ("hm_reduction", _objective.HM_REDUCTIONS),
            ("vae_reduction", _objective.VAE_REDUCTIONS),
            ("score_with", SCORE_WITH), ("recon_target", _objective.RECON_TARGETS),
            ("prior_labels", PRIOR_LABELS), ("label_sample", LABEL_SAMPLES),
            ("posterior_scale", POSTERIOR_SCALES), ("base_point", BASE_POINTS),
            ("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("precision", PRECISIONS),
        ):
            value = getattr(self, field_name)
            if value not in allowed:
                raise ValueError(f"{field_name} must be one of {tuple(allowed)}, got {value!r}"
                                 + suggest(str(value), allowed))
        if self.cls_loss is not None and self.cls_loss not in CLS_LOSSES:
            raise ValueError(f"cls_loss must be one of {CLS_LOSSES} or null (BCE for images, focal for "
                             f"pixels), got {self.cls_loss!r}")
        for field_name, low, high in (("toy_image_size", 32, 512), ("toy_train", 1, None),
                                      ("toy_test", 1, None), ("toy_pretrain_steps", 0, None),
                                      ("d", 1, None), ("n", 1, None),
                                      ("pixel_samples", 1, None), ("warmup_steps", 0, None),
                                      ("batch_size", 1, None), ("steps", 1, None), ("image_size", 16, None),
                                      ("eval_batch_size", 1, None), ("checkpoint_every", 1, None),
                                      ("num_workers", 0, None), ("seed", 0, None)):
            checks.integer(getattr(self, field_name), field_name, low, high)
        self.check_distributed(self.batch_size)
        if self.toy_pretrain_steps and (self.backbone != "toy_cnn" or self.dataset != "toy"):
            raise ValueError(f"toy_pretrain_steps must be 0 unless backbone is 'toy_cnn' on dataset 'toy' "
                             f"(it pretrains that CNN on the toy world), got {self.toy_pretrain_steps} for "
                             f"backbone {self.backbone!r} on dataset {self.dataset!r}")
        for field_name in ("negatives", "eval_limit"):
            if getattr(self, field_name) is not None:
                checks.integer(getattr(self, field_name), field_name, 1)
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        for field_name in ("visual_hidden", "semantic_hidden", "decoder_hidden"):
            values = getattr(self, field_name)
            checks.integers(list(values), field_name, len(values))
            if not values:
                raise ValueError(f"{field_name} must list at least one layer width, got []")
        _number(self.c, "c")
        _number(self.lr, "lr")
        _number(self.warmup_start_lr, "warmup_start_lr", allow_none=True)
        _number(self.grad_clip, "grad_clip", allow_none=True)
        for field_name in ("alpha", "beta", "gamma", "K", "focal_gamma", "weight_decay"):
            _number(getattr(self, field_name), field_name, strict=False)
        _number(self.momentum, "momentum", strict=False, high=1.0)
        lo_hi = self.toy_objects
        if len(lo_hi) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in lo_hi) \
                or not 1 <= lo_hi[0] <= lo_hi[1] <= 4:
            raise ValueError(f"toy_objects must be [lo, hi] with 1 <= lo <= hi <= 4, got {list(lo_hi)}")
        checks.integers(list(self.crop_size), "crop_size", 2, 16)
        lo_hi = self.scale_range
        if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi) \
                or not 0 < lo_hi[0] <= lo_hi[1]:
            raise ValueError(f"scale_range must be [lo, hi] with 0 < lo <= hi, got {list(lo_hi)}")
        splits = _splits(self.dataset)
        if self.eval_split is not None and self.eval_split not in splits:
            raise ValueError(f"eval_split must be one of {splits} for dataset {self.dataset!r} or null, "
                             f"got {self.eval_split!r}")

    # -- derived values ----------------------------------------------------------------------
    @property
    def pixel(self) -> bool:
        """Pixel-level (a segmentation dataset) or image-level."""
        return self.dataset in PIXEL_DATASETS

    @property
    def split_to_evaluate(self) -> str:
        """``eval_split``, or the dataset's test split (the last one with labels)."""
        if self.eval_split is not None:
            return self.eval_split
        return {"imclef07a": "test", "imclef07d": "test", "tiered_imagenet_h": "test",
                "cityscapes": "val", "lip": "val", "pascal_person_part": "test"}.get(self.dataset, "test")

    @property
    def train_split(self) -> str:
        return "train"

    def resolved(self) -> "HVSATrainConfig":
        """A copy with the run name filled in (``null``: from the dataset, variant, seed and key)."""
        if self.name is not None:
            return self
        key = dataclasses.replace(self, name="unnamed").key()  # the name is not part of the key
        name = f"{self.dataset}-{self.components}-{self.geometry}-seed{self.seed}-{key[:8]}"
        return dataclasses.replace(self, name=name)

    def head_kwargs(self) -> dict:
        """The keyword arguments of :class:`hyro_edu.hvsa.head.HVSAHead` (all but ``in_dim``, ``parents``)."""
        names = ("d", "n", "c", "components", "geometry", "hm_rule", "hm_reduction", "vae_reduction", "cls_loss",
                 "score_with", "recon_target", "prior_labels", "label_sample", "posterior_scale",
                 "base_point", "alpha", "beta", "gamma", "K", "focal_gamma", "negatives", "pixel_samples")
        out = {k: getattr(self, k) for k in names}
        out.update(visual_hidden=tuple(self.visual_hidden), semantic_hidden=tuple(self.semantic_hidden),
                   decoder_hidden=tuple(self.decoder_hidden))
        return out


def _splits(dataset: str) -> tuple:
    if dataset in _TOY:
        return ("test", "val")
    from hyro_edu.data.hierarchical_datasets import dataset_info

    return tuple(s for s in dataset_info(dataset).splits if s != "train")


def available_configs() -> list[str]:
    """Names of the YAML configs shipped in ``hyro_edu/hvsa/configs`` (use them with :func:`load_config`)."""
    return HVSATrainConfig.available_configs()


def load_config(config: Union[str, Path, None] = None, overrides=None) -> HVSATrainConfig:
    """An :class:`HVSATrainConfig` from a shipped config name (:func:`available_configs`), a YAML
    path or ``None`` (``toy``), with ``overrides`` (a dict or ``"key=value"`` strings, values read
    as YAML) on top.  Unknown keys and bad values raise ``ValueError`` naming the key."""
    return HVSATrainConfig.load(config, overrides)


def run_dir(config: HVSATrainConfig, root: Optional[Union[str, Path]] = None) -> Path:
    """``<root>/<name>``; ``root`` defaults to ``$HYRO_EDU_CHECKPOINTS``
    (:func:`hyro_edu.core.paths.checkpoint_dir`)."""
    return config.run_dir(root)


def check_run_dir(config: HVSATrainConfig, root: Optional[Union[str, Path]] = None) -> Path:
    """:func:`run_dir`, after checking that its ``run.json`` (if any) names this config's key;
    :class:`~hyro_edu.training.runs.RunConflict` otherwise.  Reads JSON only."""
    return config.checked_run_dir(root)


def check_data(config: HVSATrainConfig, data_root=None) -> None:
    """Raise :class:`DataNotPrepared` (a ``ValueError`` naming ``dataset`` and the
    ``python -m data_scripts.prepare --datasets ...`` command) when a full-size dataset's training
    or evaluation split is not prepared under ``data_root`` (default ``$HYRO_EDU_DATA``).  The toy
    world needs no preparation.  Reads the completion markers only."""
    if config.dataset in _TOY:
        return
    from hyro_edu.data.hierarchical_datasets import DatasetNotPreparedError, check_prepared

    try:
        for split in (config.train_split, config.split_to_evaluate):
            check_prepared(config.dataset, split, data_root)
    except DatasetNotPreparedError as err:
        raise DataNotPrepared(f"dataset {config.dataset!r} cannot be used yet: {err}") from None
