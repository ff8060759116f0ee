r"""The training config of tree alignment: the config class, the shipped configs, the data check.

.. math::
    T = \text{epochs}\cdot S \ \text{steps (unless steps is set)}, \qquad
    W = \text{warmup\_epochs}\cdot S, \qquad
    S = \max\Big(1, \Big\lfloor\frac{\text{classes}\cdot\text{shots}}{B}\Big\rfloor\Big)

A config is checked completely when it is constructed -- unknown keys (with a suggestion),
choices, ranges, curvature inits outside the clamp range, vision layers beyond the CLIP model's
depth, an empty class list, class names that are not leaves of the tree -- so the command line
reports every mistake before Lightning loads or a model is built
(:class:`hyro_edu.tree_alignment.train.config.TreeAlignmentTrainConfig`).
:func:`hyro_edu.tree_alignment.train.config.check_data` then checks that a full-size dataset is
prepared and names ``python -m data_scripts.prepare --datasets KEY`` when it is not (a
``ValueError`` naming ``dataset``; ``KEY`` is the prepared dataset of ``TAXONOMIC_KEYS``).
Nothing here imports Lightning.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Union

from hyro_edu.core import checks, paths
from hyro_edu.training.config import DistributedConfig, TrainConfig, suggest

__all__ = [
    "DATASETS",
    "FULL_DATASETS",
    "TAXONOMIC_KEYS",
    "BASE_CLASSES",
    "CLIP_IMAGE_SIZES",
    "VARIANTS",
    "CLIP_MODELS",
    "CURV_VERSIONS_BY_VARIANT",
    "PRECISIONS",
    "DataNotPrepared",
    "TreeAlignmentTrainConfig",
    "available_configs",
    "load_config",
    "run_dir",
    "check_run_dir",
    "check_data",
]

#: The full-size datasets of the paper (prepared by ``data_scripts``) and their number of leaf
#: classes (the whole tree: ``train_classes: all``, the few-shot setting of the paper's main tables).
FULL_DATASETS = {"cifar100": 100, "sun": 324, "imagenet": 1000, "rare_species": 400}
#: The prepared dataset (a key of :data:`hyro_edu.data.taxonomic_datasets.DATASETS`, the name
#: ``python -m data_scripts.prepare --datasets`` takes) of each full-size ``dataset``.
TAXONOMIC_KEYS = {"cifar100": "cifar100_protect", "sun": "sun324", "imagenet": "imagenet_protect",
                  "rare_species": "rare_species"}
#: The base classes of each full-size dataset's base/novel split: the classes trained on with
#: ``train_classes: base`` (the base-to-novel setting).
BASE_CLASSES = {"cifar100": 50, "sun": 162, "imagenet": 500, "rare_species": 200}
#: Every value of ``dataset``: the toy world, then the paper's four.
DATASETS = ("toy",) + tuple(FULL_DATASETS)
#: The variants of :mod:`hyro_edu.tree_alignment.model` (kept equal to its ``VARIANTS``, tested).
VARIANTS = ("vanilla", "protect", "sym", "euc", "hypv1", "hypv2", "full")
#: The ``curv_version`` of each variant (``None``: no curvature).
CURV_VERSIONS_BY_VARIANT = {"vanilla": None, "protect": None, "sym": None, "euc": "euclidean",
                            "hypv1": "learn_common", "hypv2": "learn3", "full": "learn2derive1"}
#: CLIP models and the number of blocks of their image towers (``layers`` must lie below it).
CLIP_MODELS = {"hyro-tiny": 4, "ViT-B-16": 12}
#: The input side of each CLIP model (its ``native_image_size``): the full-size datasets are
#: resized to it (the toy world uses ``toy_image_size``).
CLIP_IMAGE_SIZES = {"hyro-tiny": 64, "ViT-B-16": 224}
#: ``precision`` values (Lightning's names).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_TOY_CLASSES = 54


class DataNotPrepared(ValueError):
    """The config's dataset has no completed preparation; the message names the command."""


def _number(value, name: str, *, low: float = 0.0, strict: bool = True, high: Optional[float] = None) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not (value > low if strict else value >= low) or (high is not None and value > high):
        bound = (f"> {low:g}" if strict else f">= {low:g}") + (f" and <= {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TreeAlignmentTrainConfig(TrainConfig, DistributedConfig):
    """One tree-alignment training run (defaults: the ``toy`` config, variant ``full``).

    Fields, by group:

    * ``name``: the run folder; ``null`` gives ``<dataset>-<variant>-<shots>shot-seed<seed>-<key>``.
    * ``dataset``: one of ``DATASETS``; ``variant``: one of ``VARIANTS``
      (:data:`hyro_edu.tree_alignment.model.VARIANT_PARTS`).
    * ``clip_model`` (``CLIP_MODELS``), ``clip_pretrained`` (``"toyworld"`` for the tiny CLIP's
      cached toy-world pretraining, ``"openai"`` for ViT-B/16, ``null`` random weights).
    * ``shots``: training images per class; ``train_classes``: ``"seen"`` (the toy world's 36
      seen classes, the base tree), ``"all"``, or a list of leaf names; the full-size datasets
      take ``"all"`` (every class, the few-shot setting of the paper's main tables, evaluated on
      the full tree) or ``"base"`` (the base classes of the prepared base/novel split, evaluated
      on the base, novel and full trees: the base-to-novel setting);
      ``augment``: a full-size dataset's training images get a random resized crop and a flip
      (CoOp's few-shot augmentation) instead of the official resize and centre crop;
      ``toy_image_size``, ``toy_test_per_class``: the toy world's image side and test scenes per
      class (all 54).
    * ``image_root``: where a full-size dataset's images are read from instead of the folder its
      preparation recorded (a user's copy of ImageNet or Rare Species); ``null`` for that folder.
    * ``n_ctx``, ``ctx_init``, ``prompt_depth``: MaPLe; ``layers``, ``propagation``,
      ``num_heads``: the level features and the cross-attention.
    * ``curv_init``, ``c_image``, ``c_text``, ``c_inter``, ``curv_variant``: the curvatures
      (each init in ``[curv_init/10, 10 curv_init]``); ``scale_image``, ``scale_text``, ``K``.
    * ``mta_weight``, ``node_weight`` (λ), ``align_weight`` (α), ``cut_dropout``, ``padding``.
    * ``lr``, ``momentum``, ``weight_decay``, ``warmup_lr``, ``warmup_epochs``: SGD, a constant
      warm-up at ``warmup_lr`` then a monotone cosine to 0; ``batch_size``, ``epochs`` (or
      ``steps``, which wins when set).
    * ``eval_cuts_per_rate``: stored cuts per dropout rate (5: ProTeCt's 25), ``eval_batch_size``,
      ``eval_limit``, ``checkpoint_every``, ``num_workers``, ``progress``, ``precision``, ``seed``.
    * ``devices``, ``num_nodes``, ``strategy``, ``accumulate_grad_batches``: where the run trains
      (:class:`hyro_edu.training.config.DistributedConfig`; ``batch_size`` stays the global batch
      of a step; not part of the run key).
    """

    CONFIG_PACKAGE: ClassVar[str] = "hyro_edu.tree_alignment.configs"
    DEFAULT_CONFIG: ClassVar[str] = "toy"
    KEY_IGNORES: ClassVar[tuple] = ("name", "eval_batch_size", "checkpoint_every", "num_workers", "progress",
                                    "eval_limit", "image_root")

    name: Optional[str] = None
    dataset: str = "toy"
    variant: str = "full"
    clip_model: str = "hyro-tiny"
    clip_pretrained: Optional[str] = "toyworld"
    shots: int = 16
    train_classes: tuple = ("seen",)
    toy_image_size: int = 64
    toy_test_per_class: int = 20
    image_root: Optional[str] = None
    augment: bool = False
    n_ctx: int = 2
    ctx_init: Optional[str] = "a photo of a"
    prompt_depth: int = 2
    layers: tuple = (1, 2, 3)
    propagation: str = "official"
    num_heads: int = 1
    curv_init: float = 0.05
    c_image: float = 0.05
    c_text: float = 0.025
    c_inter: float = 0.025
    curv_variant: str = "official"
    scale_image: float = 1.0
    scale_text: float = 1.0
    K: float = 0.1
    mta_weight: float = 1.0
    node_weight: float = 0.5
    align_weight: float = 0.5
    cut_dropout: float = 0.1
    padding: str = "mask"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_lr: float = 1e-3
    warmup_epochs: int = 1
    batch_size: int = 32
    epochs: int = 20
    steps: Optional[int] = None
    eval_cuts_per_rate: int = 5
    eval_batch_size: int = 256
    eval_limit: Optional[int] = None
    checkpoint_every: int = 100
    num_workers: int = 0
    progress: bool = True
    precision: str = "32-true"
    seed: int = 0

    def __post_init__(self):
        self.coerce_sequences()
        self.check_name()
        for field_name, allowed in (("dataset", DATASETS), ("variant", VARIANTS), ("clip_model", tuple(CLIP_MODELS)),
                                    ("propagation", ("official", "invite")), ("curv_variant", ("official", "paper")),
                                    ("padding", ("mask", "zeros")), ("precision", PRECISIONS)):
            value = getattr(self, field_name)
            if value not in allowed:
                raise ValueError(f"{field_name} must be one of {tuple(allowed)}, got {value!r}"
                                 + suggest(str(value), allowed))
        if self.clip_pretrained is not None and not isinstance(self.clip_pretrained, str):
            raise ValueError(f"clip_pretrained must be a tag, a weights path or null, got {self.clip_pretrained!r}")
        if self.clip_pretrained == "toyworld" and self.clip_model != "hyro-tiny":
            raise ValueError(f"clip_pretrained 'toyworld' exists only for clip_model 'hyro-tiny', got "
                             f"{self.clip_model!r}")
        if self.image_root is not None:
            if not isinstance(self.image_root, str) or not self.image_root:
                raise ValueError(f"image_root must be a folder path or null, got {self.image_root!r}")
            if self.dataset == "toy":
                raise ValueError(f"image_root is for the full-size datasets; the toy world has no image folder, "
                                 f"got {self.image_root!r}")
        if self.ctx_init is not None and not isinstance(self.ctx_init, str):
            raise ValueError(f"ctx_init must be a string or null, got {self.ctx_init!r}")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be true or false, got {self.augment!r}")
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be true or false, got {self.progress!r}")
        for field_name, low, high in (("shots", 1, None), ("toy_image_size", 32, 512), ("toy_test_per_class", 1, None),
                                      ("n_ctx", 1, None), ("prompt_depth", 0, None), ("num_heads", 1, None),
                                      ("warmup_epochs", 0, None), ("batch_size", 1, None), ("epochs", 1, None),
                                      ("eval_cuts_per_rate", 1, None), ("eval_batch_size", 1, None),
                                      ("checkpoint_every", 1, None), ("num_workers", 0, None), ("seed", 0, None)):
            checks.integer(getattr(self, field_name), field_name, low, high)
        for field_name in ("steps", "eval_limit"):
            if getattr(self, field_name) is not None:
                checks.integer(getattr(self, field_name), field_name, 1)
        depth = CLIP_MODELS[self.clip_model]
        if self.prompt_depth > depth:
            raise ValueError(f"prompt_depth must be at most {depth} (the blocks of {self.clip_model}), "
                             f"got {self.prompt_depth}")
        if not self.layers:
            raise ValueError("layers must list at least one vision block, got []")
        for i, b in enumerate(self.layers):
            if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < depth:
                raise ValueError(f"layers[{i}] must be a block index in [0, {depth - 1}] ({self.clip_model} has "
                                 f"{depth} vision blocks), got {b!r}")
        if any(b <= a for a, b in zip(self.layers, self.layers[1:])):
            raise ValueError(f"layers must be strictly increasing, got {list(self.layers)}")
        if self.toy_image_size % 8:
            raise ValueError(f"toy_image_size must be a multiple of the tiny CLIP's patch size 8, got "
                             f"{self.toy_image_size}")
        _number(self.curv_init, "curv_init")
        lo, hi = self.curv_init / 10, self.curv_init * 10
        for field_name in ("c_image", "c_text", "c_inter"):
            value = _number(getattr(self, field_name), field_name)
            if not lo * (1 - 1e-12) <= value <= hi * (1 + 1e-12):
                raise ValueError(f"{field_name} must lie in the clamp range [curv_init/10, curv_init*10] = "
                                 f"[{lo:.6g}, {hi:.6g}] (curv_init={self.curv_init:g}), got {value!r}")
        for field_name in ("scale_image", "scale_text", "K", "lr", "warmup_lr"):
            _number(getattr(self, field_name), field_name)
        if self.K > 1:  # MERU's aperture constant
            raise ValueError(f"K must be in (0, 1], got {self.K!r}")
        for field_name in ("mta_weight", "node_weight", "align_weight", "weight_decay"):
            _number(getattr(self, field_name), field_name, strict=False)
        _number(self.momentum, "momentum", strict=False, high=1.0)
        _number(self.cut_dropout, "cut_dropout", high=1.0)
        if self.cut_dropout >= 1:
            raise ValueError(f"cut_dropout must be in (0, 1), got {self.cut_dropout!r}")
        self._check_classes()
        self.check_distributed(self.batch_size)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_epochs must leave steps after the warm-up: {self.warmup_steps} warm-up steps "
                             f"of {self.total_steps}")

    def _check_classes(self) -> None:
        classes = self.train_classes
        if len(classes) == 0:
            raise ValueError("train_classes must name at least one class (an empty shot list trains nothing); "
                             "use 'seen', 'all' or a list of leaf names")
        if len(classes) == 1 and classes[0] in ("seen", "all", "base"):
            if classes[0] == "seen" and self.dataset != "toy":
                raise ValueError(f"train_classes 'seen' is the toy world's split; use 'all' or 'base' for dataset "
                                 f"{self.dataset!r}")
            if classes[0] == "base" and self.dataset == "toy":
                raise ValueError("train_classes 'base' is a full-size dataset's split; the toy world's base "
                                 "classes are 'seen'")
            return
        if self.dataset != "toy":
            raise ValueError(f"train_classes must be 'all' or 'base' for dataset {self.dataset!r} (its base/novel "
                             f"split comes with the prepared data), got {list(classes)}")
        from hyro_edu.hierarchy.taxonomies import toyworld_hierarchy

        tree = toyworld_hierarchy()
        leaves = {tree.names[v] for v in tree.leaves}
        for i, name in enumerate(classes):
            if not isinstance(name, str) or name not in leaves:
                raise ValueError(f"train_classes[{i}] must be a leaf of the toy tree, got {name!r}"
                                 + suggest(str(name), sorted(leaves)))
        if len(set(classes)) != len(classes):
            raise ValueError(f"train_classes must not repeat a class, got {list(classes)}")

    # -- derived values ----------------------------------------------------------------------
    @property
    def num_train_classes(self) -> int:
        """Leaf classes trained on (toy ``seen``: 36; a full-size dataset: all its classes, or its
        base classes, :data:`hyro_edu.tree_alignment.train.config.BASE_CLASSES`)."""
        c = self.train_classes
        if len(c) == 1 and c[0] == "seen":
            return 36
        if len(c) == 1 and c[0] == "base":
            return BASE_CLASSES[self.dataset]
        if len(c) == 1 and c[0] == "all":
            return _TOY_CLASSES if self.dataset == "toy" else FULL_DATASETS[self.dataset]
        return len(c)

    @property
    def image_size(self) -> int:
        """The side of the input images: ``toy_image_size`` for the toy world, else the CLIP
        model's input size (:data:`hyro_edu.tree_alignment.train.config.CLIP_IMAGE_SIZES`: 224 for
        ViT-B/16, 64 for the tiny CLIP)."""
        return self.toy_image_size if self.dataset == "toy" else CLIP_IMAGE_SIZES[self.clip_model]

    @property
    def taxonomic_key(self) -> Optional[str]:
        """The prepared dataset behind ``dataset`` (:data:`hyro_edu.tree_alignment.train.config.TAXONOMIC_KEYS`;
        ``None`` for the toy world)."""
        return TAXONOMIC_KEYS.get(self.dataset)

    @property
    def steps_per_epoch(self) -> int:
        """``max(1, classes · shots // batch_size)`` (the sampler drops the last partial batch)."""
        return max(1, self.num_train_classes * self.shots // self.batch_size)

    @property
    def total_steps(self) -> int:
        """``steps`` if set, else ``epochs · steps_per_epoch`` (toy: 20 · 18 = 360)."""
        return self.steps if self.steps is not None else self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        """``warmup_epochs · steps_per_epoch`` (toy: 18)."""
        return self.warmup_epochs * self.steps_per_epoch

    def resolved(self) -> "TreeAlignmentTrainConfig":
        """A copy with the run name filled in."""
        if self.name is not None:
            return self
        key = dataclasses.replace(self, name="unnamed").key()
        name = f"{self.dataset}-{self.variant}-{self.shots}shot-seed{self.seed}-{key[:8]}"
        return dataclasses.replace(self, name=name)

    def model_kwargs(self) -> dict:
        """Keyword arguments of :class:`hyro_edu.tree_alignment.model.TreeAlignmentModel` (all but
        ``clip`` and ``tree``)."""
        names = ("variant", "n_ctx", "prompt_depth", "ctx_init", "propagation", "num_heads", "curv_init",
                 "c_image", "c_text", "c_inter", "curv_variant", "scale_image", "scale_text", "K", "mta_weight",
                 "node_weight", "align_weight", "cut_dropout", "padding", "seed")
        out = {k: getattr(self, k) for k in names}
        out["layers"] = tuple(self.layers)
        return out


def available_configs() -> list[str]:
    """Names of the YAML configs shipped in ``hyro_edu/tree_alignment/configs``."""
    return TreeAlignmentTrainConfig.available_configs()


def load_config(config: Union[str, Path, None] = None, overrides=None) -> TreeAlignmentTrainConfig:
    """A :class:`hyro_edu.tree_alignment.train.config.TreeAlignmentTrainConfig` from a shipped name,
    a YAML path or ``None`` (``toy``), with ``overrides`` (a dict or ``"key=value"`` strings) on top;
    ``ValueError`` naming the key otherwise."""
    return TreeAlignmentTrainConfig.load(config, overrides)


def run_dir(config: TreeAlignmentTrainConfig, root: Optional[Union[str, Path]] = None) -> Path:
    """``<root>/<name>``; ``root`` defaults to ``$HYRO_EDU_CHECKPOINTS``."""
    return config.run_dir(root)


def check_run_dir(config: TreeAlignmentTrainConfig, root: Optional[Union[str, Path]] = None) -> Path:
    """:func:`hyro_edu.tree_alignment.train.config.run_dir` after checking that its ``run.json``
    (if any) names this config's key."""
    return config.checked_run_dir(root)


def check_data(config: TreeAlignmentTrainConfig, data_root=None) -> None:
    """Raise :class:`hyro_edu.tree_alignment.train.config.DataNotPrepared` (a ``ValueError`` naming
    ``dataset``) when the prepared dataset of a full-size ``dataset``
    (:data:`hyro_edu.tree_alignment.train.config.TAXONOMIC_KEYS`) has no completed preparation under
    ``data_root`` (default ``$HYRO_EDU_DATA``), as
    :func:`hyro_edu.data.taxonomic_datasets.check_prepared` finds; the message says "not prepared:
    run python -m data_scripts.prepare --datasets KEY" and why.  The toy world needs nothing.
    Reads the completion marker only."""
    if config.dataset == "toy":
        return
    from hyro_edu.data import taxonomic_datasets as td

    key = TAXONOMIC_KEYS[config.dataset]
    try:
        td.check_prepared(key, root=data_root)
    except td.DatasetNotPreparedError as exc:
        root = Path(data_root).expanduser() if data_root is not None else paths.data_root()
        raise DataNotPrepared(f"dataset {config.dataset!r} is not prepared: run python -m data_scripts.prepare "
                              f"--datasets {key} --root {root}\n{exc}") from None
