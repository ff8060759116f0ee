r"""Training an open-vocabulary segmenter with Lightning: one code path, toy world or COCO-Stuff.

The objective is a pixel-wise loss between the upsampled logits and the labels over the
*training* vocabulary,

.. math::
    \min_{\phi,\ \psi}\ \mathbb E_{(x, y)}\ \mathcal L\big(
        \mathrm{CATSeg}_\psi(\mathrm{CLIP}_{\phi}(x),\ \mathrm{CLIP}_{\phi}(\text{names})),\ y\big),

where :math:`\psi` is the decoder and :math:`\phi` the fine-tuning parameters of one of the six
modes of :mod:`hyro_edu.clip.finetune` (CLIP's own weights stay frozen; ``frozen`` trains no
:math:`\phi` at all), and :math:`\mathcal L` is chosen by ``loss``: ``"bce"``, CAT-Seg's per-class
binary cross-entropy over all classes with ignored pixels as all-negative
(:func:`hyro_edu.segmentation.catseg.catseg_loss`, what the CAT-Seg, HyperCLIP and HyRo code trains with), or
``"ce"``, the pixel-wise softmax cross-entropy that ignores label 255 which the HyRo paper states
(:func:`hyro_edu.segmentation.catseg.pixel_cross_entropy`).  The optimiser follows the official code
(``train_net.py``'s ``build_optimizer`` and the released configs): AdamW with two learning-rate
groups -- the decoder at ``lr`` and everything inside CLIP (the adapters) at
``lr × clip_lr_multiplier`` -- weight decay except on normalisation layers, gradient clipping of the full-model L2 norm, and a cosine schedule (detectron2's
``WarmupCosineLR``: :math:`\eta_t = \eta\,\tfrac12(1 + \cos(\pi t / T))` after a linear warm-up).
Mixed precision (``precision="bf16-mixed"`` or ``"16-mixed"``) runs CLIP and the decoder in half
precision while the hyperbolic maps compute in fp32 (:func:`hyro_edu.core.numerics.fp32_math`).
``matmul_precision`` is passed to ``torch.set_float32_matmul_precision`` when :func:`train`
starts (and restored when it returns): the official ``train_net.py`` sets ``"high"`` (TF32 matrix
products on Ampere and newer GPUs; no effect on a CPU).

Two presets fill every value a config leaves unset (``None``):

==========================  ==============================  ==================================
value                       ``paper`` (HyRo paper)          ``official`` (released code)
==========================  ==============================  ==================================
curvature ``c`` text/vision 0.01 / 0.01                       1.0 / 0.01
block of S (hyro)           256                               128
block of R                  256                               256
batch × iterations          8 × 40,000                        4 × 80,000
adapter lr                  2e-4 ("hyperbolic lr")            2e-4 × mode multiplier
CLIP-weight lr (attention)  1e-6                              2e-4 × 0.01 = 2e-6
loss                        ``ce`` (softmax CE)               ``bce`` (CAT-Seg's BCE)
==========================  ==============================  ==================================

The official multipliers are per released config: CAT-Seg 0.01, HyperCLIP 0.075, HyRo 0.025
(also used for ``rotation``, HyRo's ablation), H-CLIP 0.01; ``frozen`` trains nothing inside CLIP,
so its multiplier (defined in both presets) is read by no parameter.  The paper states neither
gradient clipping, precision nor augmentation; the ``paper`` preset keeps the official values
(clip 0.01, fp32 with ``matmul_precision="high"``, the augmentation below).

Data: ``train_data="toy"`` trains on :class:`hyro_edu.data.toyworld.ToyPixelDataset` scenes of the
*seen* classes with the seen names as vocabulary (pixels of no object are ignored, label 255, as
the unlabelled pixels of the benchmarks are); ``"coco_stuff"`` trains on the prepared
COCO-Stuff-171 train split with CAT-Seg's augmentation (:class:`CocoStuffTrainData`): shortest
edge 384 (``train_resize``: ``"pil"``, the official uint8 PIL resize, or ``"torch"``, the earlier
float resize), a random crop of at most 384², detectron2's ``ColorAugSSDTransform``
(``color_aug="ssd"``; ``"legacy"`` is the earlier always-on stand-in, ``"none"`` switches it off),
a horizontal flip and padding to 384² (pixel 128, label 255).  Evaluation on the toy world uses
all 54 names and reports the mIoU over seen and over unseen classes (object pixels only); on the
benchmarks it runs the official protocol (:func:`hyro_edu.segmentation.evaluation.evaluate`).  With
``val_every`` the run also validates every ``val_every`` steps on ``val_data`` without the
sliding window and with the training pooling (CAT-Seg's in-training validation, its issue #35),
logging ``val/miou``.

Runs live in ``$HYRO_EDU_CHECKPOINTS/<name>/`` (:func:`run_dir`): ``checkpoints/last.ckpt``
(saved every ``checkpoint_every`` steps; holds only the trainable tensors, the optimiser,
the scheduler and the config), ``logs/csv/version_<attempt>/metrics.csv`` (and
``logs/tensorboard/`` when ``tensorboard`` is installed; a resumed run starts a new version)
and ``result.pt`` (the final trainable state and metrics, written atomically last).
:func:`train` loads ``result.pt`` when it exists ("load if present, else train"), resumes from
``last.ckpt`` after an interruption, and refuses to resume a run whose config differs.  The data
stream depends only on ``(seed, step)``, so a resumed run sees the batches the uninterrupted run
would have seen and ends with the same weights.  Before a full run (not the toy world) starts,
:func:`format_estimate` prints a time and memory estimate scaled from a *published* figure
(HyperCLIP's training log), not from a measurement of ours.  One device only: ``devices > 1``
(data parallelism) is not supported yet.

Command line (defaults: the embedded toy config, no download)::

    python -m hyro_edu.segmentation.train                              # toy world, tiny CLIP, hyro
    python -m hyro_edu.segmentation.train --config official_vitb16 --set mode=hyperclip
    python -m hyro_edu.segmentation.train --config official_vitb16 --estimate
    python -m hyro_edu.segmentation.train --config path/to/my.yaml --eval-only

References: CAT-Seg (Cho et al., CVPR 2024); HyRo (Truong et al., CVPR 2026 workshops), HyperCLIP
and H-CLIP (Peng et al., CVPR 2025); detectron2 (``ColorAugSSDTransform``, ``ResizeShortestEdge``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from hyro_edu.training import lightning as _lightning
from hyro_edu.core import paths
from hyro_edu.segmentation.catseg import LOSSES, segmentation_loss
from hyro_edu.clip.tiny import TINY_CLIP_NAME, TINY_PRETRAINED
from hyro_edu.clip.weights import load_clip
from hyro_edu.core.images import CLIP_MEAN, CLIP_STD
from hyro_edu.clip.finetune import MODES, FinetuneConfig
from hyro_edu.segmentation.model import PROMPT_ENSEMBLES, OpenVocabSegmenter, build_segmenter
from hyro_edu.segmentation.evaluation import MeanIoU
from hyro_edu.data.toyworld import BACKGROUND, ToyPixelDataset, ToyTransform, ToyWorld

__all__ = [
    "PRESETS",
    "OFFICIAL_CLIP_MULTIPLIERS",
    "PAPER_CLIP_MULTIPLIERS",
    "COLOR_AUGS",
    "TRAIN_RESIZES",
    "PUBLISHED_STEP_REFERENCE",
    "SegTrainConfig",
    "available_configs",
    "load_config",
    "run_dir",
    "load_result",
    "estimate_run",
    "format_estimate",
    "cosine_lambda",
    "parameter_groups",
    "ResumableSampler",
    "ToySegmentationData",
    "shortest_edge_size",
    "resize_for_training",
    "rgb_to_hsv_opencv",
    "hsv_to_rgb_opencv",
    "ColorAugSSD",
    "CocoStuffTrainData",
    "SegmentationTask",
    "build_model",
    "build_task",
    "evaluate_toy",
    "evaluate_benchmarks",
    "train",
    "load_trained",
    "SimulatedInterruption",
    "main",
]


#: CLIP-side learning-rate multipliers of the released configs (``SOLVER.CLIP_MULTIPLIER``).
#: ``frozen`` trains no CLIP-side parameter: its value (HyRo's, whose ablation it is) is read by
#: none.
OFFICIAL_CLIP_MULTIPLIERS = {"frozen": 0.025, "attention": 0.01, "hyperclip": 0.075,
                             "rotation": 0.025, "hyro": 0.025, "hclip": 0.01}
#: HyRo paper: adapters ("hyperbolic lr") at 2e-4 = lr, CLIP weights at 1e-6 = lr × 0.005.
#: ``frozen``: defined, read by no parameter.
PAPER_CLIP_MULTIPLIERS = {"frozen": 1.0, "attention": 0.005, "hyperclip": 1.0, "rotation": 1.0,
                          "hyro": 1.0, "hclip": 1.0}
#: ``color_aug`` values: detectron2's ``ColorAugSSDTransform`` (official), the earlier always-on
#: stand-in, or none.
COLOR_AUGS = ("ssd", "legacy", "none")
#: ``train_resize`` values: PIL's bilinear resize of the uint8 image (detectron2's
#: ``ResizeShortestEdge``, official) or the earlier float ``F.interpolate`` without antialiasing.
TRAIN_RESIZES = ("pil", "torch")
_MATMUL_PRECISIONS = ("highest", "high", "medium")
_PROMPT_ENSEMBLES = tuple(PROMPT_ENSEMBLES)

#: What each preset fills in for the values a config leaves unset.  The paper states no
#: augmentation or matmul precision: both presets keep the official code's.
PRESETS: dict[str, dict] = {
    "paper": dict(c_text=0.01, c_vision=0.01, scale_block={"hyro": 256}, rotation_block=256,
                  hclip_block=128, batch_size=8, max_steps=40_000,
                  clip_lr_multiplier=PAPER_CLIP_MULTIPLIERS, loss="ce", color_aug="ssd",
                  train_resize="pil", matmul_precision="high"),
    "official": dict(c_text=1.0, c_vision=0.01, scale_block=128, rotation_block=256, hclip_block=128,
                     batch_size=4, max_steps=80_000, clip_lr_multiplier=OFFICIAL_CLIP_MULTIPLIERS,
                     loss="bce", color_aug="ssd", train_resize="pil", matmul_precision="high"),
}

#: The one published training-speed figure for this model family: HyperCLIP's committed training
#: log (``output/log.txt`` of the official HyperCLIP repository; a 31-iteration check run):
#: ViT-B/16 at 384², mode ``hyperclip``, 4 × RTX 3090 with one image each (batch 4), fp32.
#: A published reference, not a measurement of this package.
PUBLISHED_STEP_REFERENCE = dict(
    source="HyperCLIP training log (official repository, output/log.txt)", model="ViT-B-16",
    mode="hyperclip", gpus=4, gpu="RTX 3090", batch_size=4, seconds_per_step=0.587,
    memory_mib_per_gpu=14_951,
)
_DEFAULT_SCALE_BLOCK = 128
_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_BENCHMARKS = ("coco_stuff", "ade20k_150", "ade20k_847", "pascal_context_59", "pascal_context_459", "voc20", "voc20b")


# ----------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SegTrainConfig:
    """Everything that determines a training run.  ``None`` means "take it from ``preset``".

    name : run directory under ``$HYRO_EDU_CHECKPOINTS`` (letters, digits, ``-_.``).
    preset : ``"paper"`` or ``"official"`` (see the module docstring).
    mode : one of :data:`hyro_edu.clip.finetune.MODES`.
    model, pretrained : :func:`hyro_edu.clip.weights.load_clip` arguments (``"hyro-tiny"`` /
        ``"toyworld"``: the tiny CLIP pretrained on the toy world; ``"ViT-B-16"`` / ``"openai"``;
        ``"ViT-L-14-336"`` / ``"openai"``; ``pretrained: null`` for random weights).
    image_size : training crop side in pixels (a multiple of the patch size unless
        ``clip_resolution`` is set).
    clip_resolution : side the crops are resized to before CLIP (CAT-Seg's ``clip_resolution``:
        336 for ViT-L/14@336 with 384 crops); ``None``: the crop itself.
    prompt_ensemble : ``"single"`` (CAT-Seg's one template, P = 1, the released configs) or
        ``"imagenet"`` (the 80 CLIP ImageNet templates, P = 80).
    c_text, c_vision, scale_block, rotation_block, hclip_block : fine-tuning geometry.
    train_data : ``"toy"`` or ``"coco_stuff"``;  eval_data : list of ``"toy"`` or benchmark keys.
    batch_size, max_steps, lr, clip_lr_multiplier, weight_decay, grad_clip, warmup_steps,
        precision : the solver (``precision`` one of ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``).
    matmul_precision : ``torch.set_float32_matmul_precision`` during :func:`train` (``"high"``:
        TF32 on Ampere+, as the official ``train_net.py``; ``"highest"``: exact fp32).
    loss : ``"bce"`` (CAT-Seg's code) or ``"ce"`` (the HyRo paper); see the module docstring.
    exclude_ignored : :func:`~hyro_edu.segmentation.catseg.catseg_loss` option (False = official; BCE only).
    color_aug, train_resize : COCO-Stuff augmentation switches (:data:`COLOR_AUGS`,
        :data:`TRAIN_RESIZES`; :class:`CocoStuffTrainData`).
    toy_objects, toy_eval_images : objects per toy training image; toy evaluation images.
    eval_limit : evaluate on at most this many images per benchmark (None: all).
    val_every, val_data, val_limit : validate every ``val_every`` steps (None: never) on
        ``val_data`` (``"toy"`` or a benchmark key; the COCO-Stuff val split by default), at most
        ``val_limit`` images, without the sliding window (CAT-Seg's in-training validation).
    checkpoint_every : steps between checkpoints;  seed : initialisation and data seed.
    num_workers : data-loader workers;  progress : show a progress bar.
    """

    name: str = "toy-hyro"
    preset: str = "official"
    mode: str = "hyro"
    model: str = TINY_CLIP_NAME
    pretrained: Optional[str] = TINY_PRETRAINED
    image_size: int = 64
    clip_resolution: Optional[int] = None
    prompt_ensemble: str = "single"
    c_text: Optional[float] = None
    c_vision: Optional[float] = None
    scale_block: Optional[int] = None
    rotation_block: Optional[int] = None
    hclip_block: Optional[int] = None
    train_data: str = "toy"
    eval_data: tuple = ("toy",)
    batch_size: Optional[int] = None
    max_steps: Optional[int] = None
    lr: float = 2e-4
    clip_lr_multiplier: Optional[float] = None
    weight_decay: float = 1e-4
    grad_clip: Optional[float] = 0.01
    warmup_steps: int = 0
    precision: str = "32-true"
    matmul_precision: Optional[str] = None
    loss: Optional[str] = None
    exclude_ignored: bool = False
    color_aug: Optional[str] = None
    train_resize: Optional[str] = None
    toy_objects: tuple = (1, 3)
    toy_eval_images: int = 200
    eval_limit: Optional[int] = None
    val_every: Optional[int] = None
    val_data: str = "coco_stuff"
    val_limit: Optional[int] = None
    checkpoint_every: int = 1000
    seed: int = 0
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "eval_data", tuple(self.eval_data))
        object.__setattr__(self, "toy_objects", tuple(self.toy_objects))
        if not isinstance(self.name, str) or not self.name or any(
            not (ch.isalnum() or ch in "-_.") for ch in self.name
        ) or self.name.startswith("."):
            raise ValueError(f"name must be a non-empty run name of letters, digits and '-_.', got {self.name!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.train_data not in ("toy", "coco_stuff"):
            raise ValueError(f"train_data must be 'toy' or 'coco_stuff', got {self.train_data!r}")
        for key in self.eval_data:
            if key != "toy" and key not in _BENCHMARKS:
                raise ValueError(f"eval_data entries must be 'toy' or one of {_BENCHMARKS}, got {key!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {self.precision!r}")
        for field_name, allowed in (("matmul_precision", _MATMUL_PRECISIONS), ("loss", LOSSES),
                                    ("color_aug", COLOR_AUGS), ("train_resize", TRAIN_RESIZES)):
            value = getattr(self, field_name)
            if value is not None and value not in allowed:
                raise ValueError(
                    f"{field_name} must be one of {allowed} or null (the preset's), got {value!r}"
                )
        if self.prompt_ensemble not in _PROMPT_ENSEMBLES:
            raise ValueError(
                f"prompt_ensemble must be one of {_PROMPT_ENSEMBLES}, got {self.prompt_ensemble!r}"
            )
        if self.val_data != "toy" and self.val_data not in _BENCHMARKS:
            raise ValueError(
                f"val_data must be 'toy' or one of {_BENCHMARKS}, got {self.val_data!r}"
            )
        _int_at_least(self.image_size, "image_size", 16)
        _int_at_least(self.warmup_steps, "warmup_steps", 0)
        _int_at_least(self.toy_eval_images, "toy_eval_images", 1)
        _int_at_least(self.checkpoint_every, "checkpoint_every", 1)
        _int_at_least(self.seed, "seed", 0)
        _int_at_least(self.num_workers, "num_workers", 0)
        for field_name in ("batch_size", "max_steps", "scale_block", "rotation_block",
                           "hclip_block", "eval_limit", "clip_resolution", "val_every",
                           "val_limit"):
            if getattr(self, field_name) is not None:
                _int_at_least(getattr(self, field_name), field_name, 1)
        for field_name in ("c_text", "c_vision", "clip_lr_multiplier"):
            value = getattr(self, field_name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not (value > 0 and math.isfinite(value))):
                raise ValueError(f"{field_name} must be a finite number > 0 or null, got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.weight_decay, bool) or not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and (isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, (int, float))
                                           or not self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a number > 0 or null (no clipping), got {self.grad_clip!r}")
        lo_hi = self.toy_objects
        if len(lo_hi) != 2 or not all(isinstance(v, int) for v in lo_hi) or not 1 <= lo_hi[0] <= lo_hi[1] <= 6:
            raise ValueError(f"toy_objects must be [lo, hi] with 1 <= lo <= hi <= 6, got {list(lo_hi)}")
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}")

    # -- presets ---------------------------------------------------------------------------
    def resolved(self) -> "SegTrainConfig":
        """A copy with every ``None`` solver/geometry value taken from :data:`PRESETS`."""
        preset = PRESETS[self.preset]
        values = {}
        for key, default in preset.items():
            if getattr(self, key) is not None:
                continue
            if isinstance(default, dict):
                default = default.get(self.mode, _DEFAULT_SCALE_BLOCK if key == "scale_block" else None)
            values[key] = default
        out = dataclasses.replace(self, **values)
        if out.warmup_steps > out.max_steps:
            raise ValueError(f"warmup_steps must be in [0, max_steps={out.max_steps}], got {out.warmup_steps}")
        return out

    def finetune_config(self) -> FinetuneConfig:
        r = self.resolved()
        return FinetuneConfig(mode=r.mode, c_text=float(r.c_text), c_vision=float(r.c_vision),
                              scale_block=r.scale_block, rotation_block=r.rotation_block, hclip_block=r.hclip_block)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["eval_data"], d["toy_objects"] = list(self.eval_data), list(self.toy_objects)
        return d

    def key(self) -> str:
        """A hash of everything that changes the trained weights (not ``name``, ``eval_*``,
        ``val_*``, ``progress``...)."""
        d = self.resolved().to_dict()
        for k in ("name", "eval_data", "toy_eval_images", "eval_limit", "checkpoint_every",
                  "num_workers", "progress", "val_every", "val_data", "val_limit"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _int_at_least(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def available_configs() -> list[str]:
    """Names of the YAML configs shipped in ``hyro_edu/segmentation/configs`` (use them with :func:`load_config`)."""
    return sorted(p.name[:-5] for p in resources.files("hyro_edu.segmentation.configs").iterdir() if p.name.endswith(".yaml"))


def _parse_value(text: str):
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string; a number was meant
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def load_config(config: Union[str, Path, None] = None, overrides: Optional[Union[dict, Sequence[str]]] = None) -> SegTrainConfig:
    """A :class:`SegTrainConfig` from a shipped config name (:func:`available_configs`), a YAML path or
    ``None`` (the embedded toy default, ``toy``), with ``overrides`` (a dict or ``"key=value"`` strings,
    values parsed as YAML) applied on top.  Unknown keys raise ``ValueError``."""
    if config is None:
        config = "toy"
    path = Path(config)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text(encoding="utf-8")
    elif str(config) in available_configs():
        text = resources.files("hyro_edu.segmentation.configs").joinpath(f"{config}.yaml").read_text(encoding="utf-8")
    else:
        raise ValueError(f"config must be a YAML file or one of {available_configs()}, got {str(config)!r}")
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"config {config!s} must hold a mapping of settings, got {type(values).__name__}")
    if overrides:
        if isinstance(overrides, dict):
            values.update(overrides)
        else:
            for item in overrides:
                if "=" not in item:
                    raise ValueError(f"overrides must look like key=value, got {item!r}")
                k, v = item.split("=", 1)
                values[k.strip()] = _parse_value(v)
    known = {f.name for f in dataclasses.fields(SegTrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; allowed: {sorted(known)}")
    return SegTrainConfig(**values)


def run_dir(config: SegTrainConfig, root: Optional[Union[str, Path]] = None) -> Path:
    """``<root>/<config.name>``; ``root`` defaults to ``$HYRO_EDU_CHECKPOINTS``."""
    return (Path(root) if root is not None else paths.checkpoint_dir()) / config.name


def load_result(config: SegTrainConfig, root: Optional[Union[str, Path]] = None) -> Optional[dict]:
    """The finished run of ``config`` (its ``result.pt``, ``loaded=True``), or ``None`` when there
    is none.  Never trains; raises ``ValueError`` when the run directory holds another config's
    run."""
    config = config.resolved()
    path = run_dir(config, root) / "result.pt"
    if not path.is_file():
        return None
    result = torch.load(path, map_location="cpu", weights_only=False)
    if result.get("key") != config.key():
        raise ValueError(
            f"{path} holds a run of a different config; choose another name (config.name) "
            "or pass retrain=True to train() to overwrite it"
        )
    result["loaded"] = True
    return result


def estimate_run(config: SegTrainConfig) -> dict:
    """Time and memory of ``config`` scaled from :data:`PUBLISHED_STEP_REFERENCE` (a published
    figure for ViT-B/16 ``hyperclip`` on 4 × RTX 3090, not a measurement of ours).

    ``reference_steps`` = ``max_steps × batch_size / 4`` steps of the reference's 4 images;
    ``hours`` = those steps × 0.587 s on the reference's 4 GPUs; ``gpu_hours`` = 4 × ``hours``;
    ``memory_mib_per_gpu`` = 14,951 MiB (the log's ``max_mem``) with one image per GPU.
    ``caveats`` lists what the figure does not cover for this config (another mode or backbone,
    P > 1, one device for the batch).
    """
    c = config.resolved()
    ref = PUBLISHED_STEP_REFERENCE
    steps = c.max_steps * c.batch_size / ref["batch_size"]
    hours = steps * ref["seconds_per_step"] / 3600
    caveats = []
    if c.mode != ref["mode"]:
        caveats.append(f"the figure is for mode {ref['mode']!r}, this run trains {c.mode!r} "
                       "(a different step cost)")
    if c.model != ref["model"]:
        caveats.append(f"the figure is for {ref['model']}, this run uses {c.model}")
    if c.prompt_ensemble != "single":
        p = len(PROMPT_ENSEMBLES[c.prompt_ensemble])
        caveats.append(f"P = {p} templates: the text tower encodes {p} times more prompts a step")
    caveats.append("this trainer runs on one device (devices > 1 is not supported yet), so one "
                   f"GPU holds all {c.batch_size} images of a step: expect more memory than the "
                   "figure's one image per GPU")
    return dict(reference=ref, reference_steps=steps, hours=hours, gpu_hours=hours * ref["gpus"],
                memory_mib_per_gpu=ref["memory_mib_per_gpu"], caveats=caveats)


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.1f} min"


def format_estimate(config: SegTrainConfig) -> str:
    """:func:`estimate_run` as the lines :func:`train` prints before a full run."""
    e = estimate_run(config)
    ref = e["reference"]
    c = config.resolved()
    lines = [
        f"estimate for {c.name!r} ({c.mode}, {c.max_steps:,} steps x batch {c.batch_size}) -- "
        "scaled from a PUBLISHED reference, not our measurement:",
        f"  reference: {ref['source']}: {ref['model']} {ref['mode']}, "
        f"{ref['gpus']} x {ref['gpu']}, batch {ref['batch_size']}: "
        f"{ref['seconds_per_step']} s/step, "
        f"max_mem {ref['memory_mib_per_gpu']:,} MiB "
        f"({ref['memory_mib_per_gpu'] / 1024:.1f} GiB) per GPU",
        f"  this run: about {_duration(e['hours'])} on {ref['gpus']} such GPUs "
        f"({_duration(e['gpu_hours'])} of GPU time)",
    ]
    lines += [f"  caveat: {text}" for text in e["caveats"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# optimisation
# ----------------------------------------------------------------------------
def cosine_lambda(max_steps: int, warmup_steps: int = 0):
    r"""The factor of detectron2's ``WarmupCosineLR`` at step ``t``: linear warm-up (from 0.001), then
    :math:`\tfrac12(1 + \cos(\pi t / T))`."""
    max_steps = _int_at_least(max_steps, "max_steps", 1)
    warmup_steps = _int_at_least(warmup_steps, "warmup_steps", 0)

    def factor(step: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, max_steps) / max_steps))
        if step < warmup_steps:
            alpha = step / warmup_steps
            return cosine * (0.001 * (1 - alpha) + alpha)
        return cosine

    return factor


_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm1d)


def parameter_groups(segmenter: OpenVocabSegmenter, *, lr: float, clip_lr_multiplier: float,
                     weight_decay: float) -> list[dict]:
    """AdamW groups as the official ``build_optimizer``: the decoder at ``lr``, the CLIP side (adapters)
    at ``lr × clip_lr_multiplier``; normalisation-layer parameters without weight decay
    (detectron2's ``WEIGHT_DECAY_NORM = 0``).  Every trainable tensor is in exactly one group."""
    norm_params = {id(p) for m in segmenter.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    groups: dict[tuple, list] = {}
    for name, p in segmenter.trainable_named_parameters():
        side = "decoder" if name.startswith("decoder.") else "clip"
        decay = 0.0 if id(p) in norm_params else weight_decay
        groups.setdefault((side, decay), []).append(p)
    return [
        {"params": ps, "lr": lr * (clip_lr_multiplier if side == "clip" else 1.0), "weight_decay": decay,
         "name": f"{side}{'' if decay else '_no_decay'}"}
        for (side, decay), ps in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))
    ]


# ----------------------------------------------------------------------------
# data: a stream that depends only on (seed, step)
# ----------------------------------------------------------------------------
class ResumableSampler(Sampler):
    """Yields ``(index, position)`` for positions ``start .. stop - 1`` of an endless stream over
    ``n`` items: epoch ``e`` is ``permutation(seed, e)`` (or ``0..n-1`` when ``shuffle`` is False).

    Training resumes at ``start = global_step × batch_size``, so an interrupted run continues with
    exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, n: int, *, start: int, stop: int, seed: int = 0, shuffle: bool = True):
        self.n = _int_at_least(n, "n", 1)
        self.start, self.stop = _int_at_least(start, "start", 0), _int_at_least(stop, "stop", 0)
        self.seed, self.shuffle = int(seed), bool(shuffle)

    def _epoch(self, e: int) -> np.ndarray:
        return np.random.default_rng([self.seed, e]).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start
        if not self.shuffle:  # no array: n may be astronomically large (the toy world's stream)
            for pos in range(self.start, self.stop):
                yield pos % self.n, pos
            return
        while pos < self.stop:
            e = pos // self.n
            order = self._epoch(e)
            for i in range(pos - e * self.n, self.n):
                if pos >= self.stop:
                    return
                yield int(order[i]), pos
                pos += 1

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class ToySegmentationData(Dataset):
    """Toy-world scenes of the seen classes, labels mapped to the training vocabulary.

    Item ``(index, position)`` (from :class:`ResumableSampler`) is training scene ``position``:
    every step draws new scenes, and scene ``p`` depends only on ``(world.seed, p)``.
    ``dict(image=(3, S, S) normalised, label=(S, S) int64)`` with labels ``0..len(seen)-1`` for the
    seen classes and 255 (ignored) where no object is.  ``vocabulary`` holds the seen class names.
    """

    #: the stream's length: endless in practice; the sampler decides what is read
    STREAM = 2**62

    def __init__(self, world: ToyWorld, *, image_size: int, num_objects=(1, 3), mean=None, std=None):
        kwargs = {} if mean is None else dict(mean=mean, std=std)
        self.world = world
        self.scenes = ToyPixelDataset(world, self.STREAM, split="train", classes="seen",
                                      num_objects=tuple(num_objects),
                                      transform=ToyTransform(image_size, hflip=0.5, **kwargs))
        seen = world.seen_classes
        self.vocabulary = tuple(world.class_names[k] for k in seen)
        lut = torch.full((256,), BACKGROUND, dtype=torch.int64)  # no object: ignored, like unlabelled pixels
        lut[torch.tensor(seen)] = torch.arange(len(seen))
        self._lut = lut

    def __len__(self) -> int:
        return self.STREAM

    def __getitem__(self, item) -> dict:
        _, position = item if isinstance(item, tuple) else (item, item)
        sample = self.scenes[position]
        return {"image": sample["image"], "label": self._lut[sample["mask"].long()]}


# ----------------------------------------------------------------------------
# COCO-Stuff augmentation, as detectron2 runs it for CAT-Seg
# ----------------------------------------------------------------------------
def shortest_edge_size(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """``(new_height, new_width)`` of detectron2's ``ResizeShortestEdge``: the shorter side becomes
    ``size`` unless the longer would exceed ``max_size`` (then the longer becomes ``max_size``);
    both rounded half up (``int(x + 0.5)``)."""
    scale = size / min(height, width)
    new_h, new_w = (size, scale * width) if height < width else (scale * height, size)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_for_training(image: torch.Tensor, label: torch.Tensor, size: int = 384,
                        max_size: int = 1333, *, method: str = "pil"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize a uint8 ``image (3, H, W)`` and its ``label (H, W)`` so the shorter side is ``size``.

    ``method="pil"`` (official): the image as detectron2's ``ResizeTransform`` resizes a uint8
    array, with PIL's bilinear filter (antialiased when shrinking, rounded to uint8); the label as
    it resizes CAT-Seg's label, which the mapper reads as float64:
    ``F.interpolate(mode="nearest")``, i.e. source index ``floor(i · H / H')`` -- *not* PIL's
    nearest, which samples pixel centres, ``floor((i + 0.5) · H / H')``.  Returns
    ``(uint8 image, int64 label)`` at :func:`shortest_edge_size`.

    ``method="torch"`` (the earlier stand-in): a float bilinear ``F.interpolate`` without
    antialiasing and without rounding, the size rounded with Python's ``round``; returns a float
    image.
    """
    if method not in TRAIN_RESIZES:
        raise ValueError(f"method must be one of {TRAIN_RESIZES}, got {method!r}")
    h, w = label.shape
    if method == "torch":
        scale = min(size / min(h, w), max_size / max(h, w))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        out = F.interpolate(image.float()[None], size=(nh, nw), mode="bilinear",
                            align_corners=False)[0]
        lab = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        return out, lab
    from PIL import Image  # a dependency of matplotlib and of segmentation_data

    if image.dtype != torch.uint8:
        raise ValueError(
            f"image must be a uint8 tensor (3, H, W) for method='pil', got {image.dtype}"
        )
    nh, nw = shortest_edge_size(h, w, size, max_size)
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    pil = pil.resize((nw, nh), Image.BILINEAR)
    out = torch.from_numpy(np.array(pil)).permute(2, 0, 1).contiguous()
    lab = F.interpolate(label[None, None].double(), size=(nh, nw), mode="nearest")[0, 0].long()
    return out, lab


def rgb_to_hsv_opencv(rgb: np.ndarray) -> np.ndarray:
    r"""OpenCV's ``cvtColor(RGB2HSV)`` on uint8 ``(..., 3)`` arrays, in OpenCV's 8-bit units.

    .. math::
        V = \max(R, G, B),\quad S = 255\,\frac{V - \min}{V},\quad
        H = \tfrac12\,\mathrm{hue}^\circ \in [0, 180),

    computed in OpenCV's fixed point (12 fractional bits, its ``sdiv``/``hdiv`` tables), so the
    integers are OpenCV's own.  Returns uint8 ``(..., 3)`` (H, S, V).
    """
    x = np.asarray(rgb)
    if x.dtype != np.uint8 or x.shape[-1] != 3:
        raise ValueError(f"rgb must be a uint8 array (..., 3), got {x.dtype} {x.shape}")
    r, g, b = (x[..., i].astype(np.int64) for i in range(3))
    v = np.maximum(np.maximum(r, g), b)
    diff = v - np.minimum(np.minimum(r, g), b)
    shift = 12
    # OpenCV's tables: round((255 << 12) / v) and round((180 << 12) / (6 diff)), 0 at 0
    sdiv = np.where(v > 0, np.floor((255 << shift) / np.maximum(v, 1) + 0.5), 0)
    hdiv = np.where(diff > 0, np.floor((180 << shift) / (6.0 * np.maximum(diff, 1)) + 0.5), 0)
    sdiv, hdiv = sdiv.astype(np.int64), hdiv.astype(np.int64)
    s = (diff * sdiv + (1 << (shift - 1))) >> shift
    num = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (num * hdiv + (1 << (shift - 1))) >> shift  # arithmetic shift: floor, as in C
    h = np.where(h < 0, h + 180, h)
    return np.stack([np.clip(h, 0, 255), s, v], axis=-1).astype(np.uint8)


def hsv_to_rgb_opencv(hsv: np.ndarray) -> np.ndarray:
    """OpenCV's ``cvtColor(HSV2RGB)`` on uint8 ``(..., 3)`` arrays (H in [0, 180), S and V in
    [0, 255]): float32 arithmetic with the sector table of :func:`rgb_to_hsv_opencv`'s inverse,
    then ``× 255`` and truncation to uint8, as OpenCV 4's vectorised loop does (its scalar loop,
    which handles the last few pixels of a call, rounds instead: a difference of at most 1 there).
    """
    x = np.asarray(hsv)
    if x.dtype != np.uint8 or x.shape[-1] != 3:
        raise ValueError(f"hsv must be a uint8 array (..., 3), got {x.dtype} {x.shape}")
    f32 = np.float32
    one = f32(1.0)
    h = x[..., 0].astype(f32) * (f32(6.0) / f32(180.0))
    s = x[..., 1].astype(f32) * (one / f32(255.0))
    v = x[..., 2].astype(f32) * (one / f32(255.0))
    pre = np.trunc(h)
    frac = h - pre
    sector = pre - f32(6.0) * np.trunc(pre * (one / f32(6.0)))
    tab = [v, v * (one - s), v * (one - s * frac), v * (one - s * (one - frac))]
    # which table entry each sector takes for R, G and B (OpenCV's sector_data, RGB order)
    order = {"r": (0, 2, 1, 1, 3, 0), "g": (3, 0, 0, 2, 1, 1), "b": (1, 1, 3, 0, 0, 2)}
    out = []
    for channel in ("r", "g", "b"):
        value = np.zeros_like(v)
        for k, entry in enumerate(order[channel]):
            value = np.where(sector == k, tab[entry], value)
        out.append(np.clip(np.trunc(value * f32(255.0)), 0, 255))
    return np.stack(out, axis=-1).astype(np.uint8)


class ColorAugSSD:
    """detectron2's ``ColorAugSSDTransform`` (the SSD photometric distortion) on uint8 RGB images.

    In this order, each step applied with probability 1/2 and saved as uint8 after it (values
    clipped to [0, 255] and truncated):

    1. brightness: add ``δ ~ U(-32, 32)`` to every channel;
    2. a fair coin chooses ``contrast, saturation, hue`` or ``saturation, hue, contrast``:

       * contrast: multiply every channel by ``α ~ U(0.5, 1.5)`` (no mean-centring);
       * saturation: in OpenCV's HSV (:func:`rgb_to_hsv_opencv`), multiply S by
         ``α ~ U(0.5, 1.5)``;
       * hue: in OpenCV's HSV, ``H ← (H + k) mod 180`` with an integer ``k`` uniform in
         ``[-18, 18]`` (OpenCV's 8-bit hue unit is 2°, so up to ±36°).

    :meth:`draw` returns the random choices as a plan (``None`` for a skipped step) and
    :meth:`apply` applies a plan, so a test can check the order and each step on its own.
    Reference: detectron2 ``projects/PointRend/point_rend/color_augmentation.py`` (which CAT-Seg's
    ``MaskFormerSemanticDatasetMapper`` uses with ``COLOR_AUG_SSD: True``); Liu et al., SSD (2016).
    """

    def __init__(self, brightness_delta: float = 32, contrast=(0.5, 1.5), saturation=(0.5, 1.5),
                 hue_delta: int = 18):
        self.brightness_delta = float(brightness_delta)
        self.contrast, self.saturation = tuple(contrast), tuple(saturation)
        self.hue_delta = int(hue_delta)

    def draw(self, rng: np.random.Generator) -> dict:
        """One random plan: ``brightness`` (δ or None), ``contrast_first`` (bool), ``contrast``,
        ``saturation`` (α or None), ``hue`` (k or None)."""
        plan = {"brightness": float(rng.uniform(-self.brightness_delta, self.brightness_delta))
                if rng.integers(2) else None}
        plan["contrast_first"] = bool(rng.integers(2))
        plan["contrast"] = float(rng.uniform(*self.contrast)) if rng.integers(2) else None
        plan["saturation"] = float(rng.uniform(*self.saturation)) if rng.integers(2) else None
        hue = int(rng.integers(-self.hue_delta, self.hue_delta + 1))
        plan["hue"] = hue if rng.integers(2) else None
        return plan

    @staticmethod
    def _affine(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        # detectron2's convert(): float32 arithmetic, clip, then a truncating cast to uint8
        y = x.astype(np.float32) * np.float32(alpha) + np.float32(beta)
        return np.clip(y, 0, 255).astype(np.uint8)

    def brightness(self, img: np.ndarray, delta: float) -> np.ndarray:
        return self._affine(img, beta=delta)

    def contrast_(self, img: np.ndarray, alpha: float) -> np.ndarray:
        return self._affine(img, alpha=alpha)

    def saturation_(self, img: np.ndarray, alpha: float) -> np.ndarray:
        hsv = rgb_to_hsv_opencv(img)
        hsv[..., 1] = self._affine(hsv[..., 1], alpha=alpha)
        return hsv_to_rgb_opencv(hsv)

    def hue_(self, img: np.ndarray, shift: int) -> np.ndarray:
        hsv = rgb_to_hsv_opencv(img)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
        return hsv_to_rgb_opencv(hsv)

    def apply(self, img: np.ndarray, plan: dict) -> np.ndarray:
        """``img`` uint8 ``(H, W, 3)`` RGB after the steps of ``plan`` (see :meth:`draw`)."""
        if plan["brightness"] is not None:
            img = self.brightness(img, plan["brightness"])
        steps = [("contrast", self.contrast_), ("saturation", self.saturation_),
                 ("hue", self.hue_)]
        if not plan["contrast_first"]:
            steps = steps[1:] + steps[:1]
        for key, op in steps:
            if plan[key] is not None:
                img = op(img, plan[key])
        return img

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply(img, self.draw(rng))


class CocoStuffTrainData(Dataset):
    """COCO-Stuff-171 training crops with CAT-Seg's augmentation (its
    ``MaskFormerSemanticDatasetMapper``).

    Official (``color_aug="ssd"``, ``resize="pil"``), in detectron2's order: shortest edge to
    ``size`` with the longest at most 1333 (:func:`resize_for_training`), a random crop of
    ``min(size, H) × min(size, W)``, :class:`ColorAugSSD`, a horizontal flip with probability 1/2,
    and padding at the bottom and right to ``size × size`` (pixel 128, label 255).
    ``color_aug="none"`` skips the colour step.  ``color_aug="legacy"`` is the earlier stand-in:
    pad first, then crop, an always-on jitter (brightness ±32, mean-centred contrast and a
    grey-blend saturation in ×[0.5, 1.5], no hue) on float pixels, then the flip; with
    ``resize="torch"`` it reproduces the earlier data exactly.  Every random choice is drawn from
    ``(seed, position)``.  Images come out normalised with ``mean``/``std`` (0-1 scale).
    ``dataset`` replaces the prepared COCO-Stuff train split (anything with uint8 ``image``
    samples, ``label``, ``ignore_index`` and ``prompt_names``; the tests use small ones).
    """

    def __init__(self, size: int = 384, *, root=None, seed: int = 0, mean=None, std=None,
                 color_aug: str = "ssd", resize: str = "pil", max_size: int = 1333, dataset=None):
        if color_aug not in COLOR_AUGS:
            raise ValueError(f"color_aug must be one of {COLOR_AUGS}, got {color_aug!r}")
        if resize not in TRAIN_RESIZES:
            raise ValueError(f"resize must be one of {TRAIN_RESIZES}, got {resize!r}")
        if dataset is None:
            from hyro_edu.data.benchmarks import SegmentationBenchmark  # only for the full recipe

            dataset = SegmentationBenchmark("coco_stuff", "train", root=root)
        self.data = dataset
        self.vocabulary = tuple(self.data.prompt_names)
        self.size, self.seed, self.max_size = int(size), int(seed), int(max_size)
        self.color_aug, self.resize = color_aug, resize
        self.ssd = ColorAugSSD()
        self.mean = torch.tensor(mean or CLIP_MEAN).view(3, 1, 1)
        self.std = torch.tensor(std or CLIP_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    def _normalise(self, image: torch.Tensor) -> torch.Tensor:
        return (image.float().clamp(0, 255) / 255.0 - self.mean) / self.std

    def __getitem__(self, item) -> dict:
        index, position = item if isinstance(item, tuple) else (item, item)
        sample = self.data[index]
        image, label = resize_for_training(sample["image"], sample["label"], self.size,
                                           self.max_size, method=self.resize)
        if self.color_aug == "legacy":
            return self._legacy(image, label, position)
        rng = np.random.default_rng([self.seed, 11, position])
        size, ignore = self.size, self.data.ignore_index
        h, w = label.shape
        ch, cw = min(size, h), min(size, w)
        top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        image = image[:, top: top + ch, left: left + cw]
        label = label[top: top + ch, left: left + cw]
        if self.color_aug == "ssd":
            if image.dtype != torch.uint8:  # resize="torch" gives float pixels: round them first
                image = image.round().clamp(0, 255).to(torch.uint8)
            hwc = self.ssd(image.permute(1, 2, 0).contiguous().numpy(), rng)
            image = torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)
        if rng.random() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        ph, pw = size - ch, size - cw
        if ph or pw:  # detectron2 pads after the augmentation, at the bottom and the right
            image = F.pad(image.float(), (0, pw, 0, ph), value=128.0)
            label = F.pad(label, (0, pw, 0, ph), value=ignore)
        return {"image": self._normalise(image), "label": label.contiguous()}

    def _legacy(self, image: torch.Tensor, label: torch.Tensor, position: int) -> dict:
        """The earlier stand-in (kept for comparison): pad, crop, always-on jitter, flip."""
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, 11, position]).generate_state(1)[0]))
        image = image.float()
        nh, nw = label.shape
        ph, pw = max(0, self.size - nh), max(0, self.size - nw)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=128.0)
            label = F.pad(label, (0, pw, 0, ph), value=self.data.ignore_index)
        top = int(torch.randint(0, image.shape[1] - self.size + 1, (1,), generator=g))
        left = int(torch.randint(0, image.shape[2] - self.size + 1, (1,), generator=g))
        image = image[:, top: top + self.size, left: left + self.size]
        label = label[top: top + self.size, left: left + self.size]
        u = torch.rand(4, generator=g)
        image = image + (u[0] * 64 - 32)
        mean = image.mean()
        image = (image - mean) * (0.5 + u[1]) + mean
        grey = image.mean(0, keepdim=True)
        image = (image - grey) * (0.5 + u[2]) + grey
        if u[3] < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        return {"image": self._normalise(image), "label": label}


# ----------------------------------------------------------------------------
# the Lightning module
# ----------------------------------------------------------------------------
class SegmentationTask(L.LightningModule):
    """Lightning wrapper: the configured loss on the training vocabulary, the official optimiser,
    and (with ``val_every``) CAT-Seg's in-training validation.

    Checkpoints hold only the trainable tensors (``segmenter.trainable_state_dict()``), plus the
    optimiser, scheduler and config (as hyper-parameters).  Loading a checkpoint checks that its
    tensors are exactly this model's trainable set.  ``validations`` lists ``(step, mIoU)`` of the
    validations this process ran.
    """

    def __init__(self, segmenter: OpenVocabSegmenter, config: SegTrainConfig,
                 vocabulary: Sequence[str], *, data_root=None):
        super().__init__()
        self.segmenter = segmenter
        self.config = config.resolved()
        self.vocabulary = tuple(vocabulary)
        self.data_root = data_root
        self.strict_loading = False  # checkpoints hold the trainable tensors only (checked below)
        self.save_hyperparameters({"config": self.config.to_dict(), "key": self.config.key()})
        self.losses: list[float] = []
        self.validations: list[tuple[int, float]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.segmenter(batch["image"], self.vocabulary)  # every training class, every step
        loss = segmentation_loss(logits.float(), batch["label"], len(self.vocabulary),
                                 loss=self.config.loss,
                                 exclude_ignored=self.config.exclude_ignored)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        sched = self.lr_schedulers()
        if sched is not None:
            for group in sched.optimizer.param_groups:
                self.log(f"lr/{group['name']}", group["lr"], on_step=True, on_epoch=False)
        every = self.config.val_every
        if every and self.trainer.global_step % every == 0:
            miou = self.validate()
            self.validations.append((int(self.trainer.global_step), miou))
            self.log("val/miou", miou, prog_bar=True, on_step=True, on_epoch=False)

    @torch.no_grad()
    def validate(self) -> float:
        """mIoU on ``config.val_data`` as CAT-Seg validates during training (its issue #35): one
        whole-image view, no sliding window, and the decoder's *training* pooling (2×2), at most
        ``val_limit`` images.  The toy world: :func:`evaluate_toy` (mIoU over every class)."""
        c, seg = self.config, self.segmenter
        decoder = seg.decoder
        was_training, eval_pooling = seg.training, decoder.eval_pooling
        seg.eval()
        decoder.eval_pooling = decoder.train_pooling
        try:
            if c.val_data == "toy":
                n = c.val_limit or c.toy_eval_images
                return float(evaluate_toy(seg, n_images=n, image_size=c.image_size)["miou"])
            from hyro_edu.data.benchmarks import SegmentationBenchmark
            from hyro_edu.segmentation.evaluation import evaluate

            ds = SegmentationBenchmark(c.val_data, root=self.data_root)
            out = evaluate(lambda images, classes: seg.forward_pixels(images, classes), ds,
                           sliding_window=False, device=seg.backbone.device, limit=c.val_limit)
            return float(out["miou"])
        finally:
            decoder.eval_pooling = eval_pooling
            seg.train(was_training)

    def configure_optimizers(self):
        c = self.config
        groups = parameter_groups(self.segmenter, lr=c.lr, clip_lr_multiplier=c.clip_lr_multiplier,
                                  weight_decay=c.weight_decay)
        opt = torch.optim.AdamW(groups, lr=c.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(c.max_steps, c.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {f"segmenter.{k}": v for k, v in self.segmenter.trainable_state_dict().items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("hyper_parameters", {}).get("key") != self.config.key():
            raise ValueError(
                f"the checkpoint was written by a different config than run {self.config.name!r}; "
                "choose another name, or delete the run directory to start afresh"
            )
        prefix = "segmenter."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        self.segmenter.load_trainable_state_dict(state)  # raises unless the keys match exactly


def build_model(config: SegTrainConfig, *, device=None) -> OpenVocabSegmenter:
    """The backbone (``load_clip``) and the segmenter for ``config`` (mode, templates,
    ``clip_resolution``), in training mode; no data is touched."""
    config = config.resolved()
    torch.manual_seed(config.seed)
    backbone = load_clip(config.model, config.pretrained, device=device or "cpu")
    if config.clip_resolution is None and config.image_size % backbone.patch_size:
        raise ValueError(f"image_size must be a multiple of the patch size {backbone.patch_size}, got {config.image_size}")
    # seed again: loading the CLIP may or may not draw random numbers (the tiny CLIP is pretrained
    # on first use, later read from the cache); the decoder's initialisation must not depend on it
    torch.manual_seed(config.seed)
    segmenter = build_segmenter(backbone, config.finetune_config(),
                                template=PROMPT_ENSEMBLES[config.prompt_ensemble],
                                clip_resolution=config.clip_resolution)
    segmenter.train()  # load_clip returns eval mode; CLIP has no dropout, so this changes nothing it computes
    return segmenter


def build_task(config: SegTrainConfig, *, device=None, data_root=None) -> tuple[SegmentationTask, Dataset]:
    """The backbone (``load_clip``), the segmenter for ``config.mode`` and the training data."""
    config = config.resolved()
    segmenter = build_model(config, device=device)
    backbone = segmenter.backbone
    mean, std = backbone.mean.flatten().tolist(), backbone.std.flatten().tolist()
    if config.train_data == "toy":
        data = ToySegmentationData(ToyWorld(seed=config.seed), image_size=config.image_size,
                                   num_objects=config.toy_objects, mean=mean, std=std)
    else:
        data = CocoStuffTrainData(config.image_size, root=data_root, seed=config.seed, mean=mean,
                                  std=std, color_aug=config.color_aug, resize=config.train_resize)
    return SegmentationTask(segmenter, config, data.vocabulary, data_root=data_root), data


# ----------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------
@torch.no_grad()
def evaluate_toy(segmenter: OpenVocabSegmenter, *, world: Optional[ToyWorld] = None, n_images: int = 200,
                 image_size: int = 64, batch_size: int = 25, split: str = "val") -> dict:
    """Open-vocabulary mIoU on toy-world scenes of *all* 54 classes, with all 54 names as vocabulary.

    Pixels of no object are ignored (as the benchmarks ignore unlabelled pixels).  Returns ``miou``
    (all classes that occur), ``seen_miou`` and ``unseen_miou`` (mean IoU over the seen / unseen
    classes that occur in the ground truth or the predictions), ``hiou`` (their harmonic mean),
    ``pixel_accuracy`` and the per-class ``iou`` (54,).  The logits are bilinearly upsampled to the
    image size before the arg-max.
    """
    world = ToyWorld(seed=0) if world is None else world
    n_images = _int_at_least(n_images, "n_images", 1)
    names = list(world.class_names)
    backbone = segmenter.backbone
    transform = ToyTransform(image_size, mean=backbone.mean.flatten().tolist(), std=backbone.std.flatten().tolist())
    data = ToyPixelDataset(world, n_images, split=split, classes="all", num_objects=(1, 3), transform=transform)
    metric = MeanIoU(len(names), ignore_index=BACKGROUND)
    was_training = segmenter.training
    segmenter.eval()
    device = backbone.device
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        logits = segmenter(batch["image"].to(device), names)
        logits = F.interpolate(logits.float(), size=batch["mask"].shape[-2:], mode="bilinear", align_corners=False)
        metric.update(logits.argmax(1).cpu(), batch["mask"])
    segmenter.train(was_training)
    out = metric.compute()
    iou = out["iou"]

    def mean_of(idx) -> float:
        vals = iou[list(idx)]
        vals = vals[~torch.isnan(vals)]
        return float(vals.mean()) if vals.numel() else math.nan

    seen, unseen = mean_of(world.seen_classes), mean_of(world.unseen_classes)
    hiou = 2 * seen * unseen / (seen + unseen) if seen + unseen > 0 else 0.0
    return {"miou": out["miou"], "seen_miou": seen, "unseen_miou": unseen, "hiou": hiou,
            "pixel_accuracy": out["pixel_accuracy"], "iou": iou, "num_images": n_images}


def evaluate_benchmarks(segmenter: OpenVocabSegmenter, names: Sequence[str], *, root=None, limit=None,
                        progress: bool = False) -> dict:
    """mIoU on prepared benchmarks with the official protocol (sliding window, shortest edge 640)."""
    from hyro_edu.data.benchmarks import SegmentationBenchmark
    from hyro_edu.segmentation.evaluation import evaluate

    results = {}
    was_training = segmenter.training
    segmenter.eval()
    for key in names:
        ds = SegmentationBenchmark(key, root=root)
        results[key] = evaluate(lambda images, classes: segmenter.forward_pixels(images, classes), ds,
                                device=segmenter.backbone.device, limit=limit, progress=progress)
    segmenter.train(was_training)
    return results


# ----------------------------------------------------------------------------
# train: load if present, else (resume and) train
# ----------------------------------------------------------------------------
class _StopAfter(L.Callback):
    """Raise :class:`SimulatedInterruption` when step ``step + 1`` begins (a crash, for tests and demos)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:  # a crash in the middle of step ``step + 1``
            raise SimulatedInterruption(f"simulated crash after step {trainer.global_step}")


class SimulatedInterruption(RuntimeError):
    """Raised by ``train(..., interrupt_after=k)`` to imitate a crash after step ``k``."""


class _DataModule(L.LightningDataModule):
    def __init__(self, data: Dataset, config: SegTrainConfig):
        super().__init__()
        self.data, self.config = data, config

    def train_dataloader(self) -> DataLoader:
        c = self.config
        start = self.trainer.global_step * c.batch_size  # resume where the checkpoint stopped
        n = len(self.data)
        # Lightning restores how many batches of the epoch it has run and stops the epoch after
        # len(loader) batches in total, so the loader is max_steps long; max_steps ends the run.
        sampler = ResumableSampler(n, start=start, stop=start + c.max_steps * c.batch_size, seed=c.seed,
                                   shuffle=c.train_data != "toy")
        return DataLoader(self.data, batch_size=c.batch_size, sampler=sampler, num_workers=c.num_workers,
                          drop_last=True, persistent_workers=False)


def _loggers(directory: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger

    # one version folder per attempt (logs/csv/version_0, version_1 after a resume, ...): a resumed
    # run never overwrites the logs of the attempt that crashed
    loggers = [CSVLogger(directory / "logs", name="csv")]
    try:
        import tensorboard  # noqa: F401  (optional: pip install tensorboard)
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(directory / "logs", name="tensorboard"))
    except ImportError:
        pass
    return loggers


def train(config: Optional[SegTrainConfig] = None, *, root: Optional[Union[str, Path]] = None, device=None,
          data_root=None, evaluate: bool = True, retrain: bool = False,
          interrupt_after: Optional[int] = None) -> dict:
    """Train ``config`` (default: the embedded toy config) and return its result, or load it.

    Returns ``dict(config, key, state (trainable tensors), losses, train_seconds, steps, metrics,
    resumed_from, loaded)``.  If ``<run_dir>/result.pt`` exists for this config it is loaded and
    nothing trains (``loaded=True``; ``retrain=True`` ignores it).  Otherwise training starts, or
    resumes from ``<run_dir>/checkpoints/last.ckpt``.  ``interrupt_after=k`` raises
    :class:`SimulatedInterruption` when step ``k + 1`` begins (the checkpoint of step ``k`` is on
    disk when ``k`` is a multiple of ``checkpoint_every``).  ``evaluate`` runs ``config.eval_data`` at the end.
    A full run (``train_data`` not ``"toy"``) first prints :func:`format_estimate`.  The run
    (training and evaluation) uses
    ``torch.set_float32_matmul_precision(config.matmul_precision)``; the previous setting is
    restored when it returns.  ``validations`` holds ``(step, mIoU)`` of the in-training
    validations of this attempt (``val_every``).
    """
    config = (load_config() if config is None else config).resolved()
    directory = run_dir(config, root)
    if not retrain:
        result = load_result(config, root)
        if result is not None:
            return result
    if config.train_data != "toy":  # a full run: say what it costs before it starts
        print(format_estimate(config), flush=True)
    previous_precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(config.matmul_precision)  # official train_net.py: "high"
    try:
        return _train(config, directory, device=device, data_root=data_root, evaluate=evaluate,
                      retrain=retrain, interrupt_after=interrupt_after)
    finally:
        torch.set_float32_matmul_precision(previous_precision)


def _train(config: SegTrainConfig, directory: Path, *, device, data_root, evaluate: bool,
           retrain: bool, interrupt_after: Optional[int]) -> dict:
    result_path = directory / "result.pt"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    task, data = build_task(config, device=device, data_root=data_root)
    ckpt_dir = directory / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    resume = last if last.is_file() and not retrain else None
    resumed_from = None
    if resume is not None:
        meta = torch.load(resume, map_location="cpu", weights_only=False)
        resumed_from = int(meta.get("global_step", 0))
        if meta.get("hyper_parameters", {}).get("key") != config.key():
            raise ValueError(
                f"{resume} was written by a different config; choose another name (config.name), "
                "or delete the run directory to start afresh"
            )
    from lightning.pytorch.callbacks import ModelCheckpoint

    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="last", every_n_train_steps=config.checkpoint_every,
                                 save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True)]
    if interrupt_after is not None:
        callbacks.insert(0, _StopAfter(interrupt_after))
    device = torch.device(device)
    with _lightning.quiet():
        trainer = L.Trainer(
            max_steps=config.max_steps, max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1, precision=config.precision, gradient_clip_val=config.grad_clip,
            gradient_clip_algorithm="norm", logger=_loggers(directory), callbacks=callbacks,
            enable_progress_bar=config.progress, enable_model_summary=False, num_sanity_val_steps=0,
            limit_val_batches=0, log_every_n_steps=max(1, min(50, config.max_steps // 10)),
            default_root_dir=directory, deterministic=False,
        )
        wall = time.perf_counter()
        trainer.fit(task, datamodule=_DataModule(data, config), ckpt_path=resume)
        wall = time.perf_counter() - wall
    if trainer.global_step < config.max_steps:  # Lightning stops quietly on Ctrl-C: keep the checkpoint
        raise SimulatedInterruption(f"training stopped at step {trainer.global_step} of {config.max_steps}; "
                                    f"run again to resume from {last}")
    segmenter = task.segmenter
    metrics = {}
    if evaluate:
        for key in config.eval_data:
            if key == "toy":
                metrics["toy"] = evaluate_toy(segmenter, n_images=config.toy_eval_images, image_size=config.image_size)
            else:
                metrics.update(evaluate_benchmarks(segmenter, [key], root=data_root, limit=config.eval_limit,
                                                   progress=config.progress))
    result = {
        "config": config.to_dict(), "key": config.key(), "mode": config.mode,
        "state": {k: v.detach().cpu() for k, v in segmenter.trainable_state_dict().items()},
        "losses": task.losses, "train_seconds": wall, "steps": trainer.global_step, "metrics": metrics,
        "validations": task.validations, "matmul_precision": torch.get_float32_matmul_precision(),
        "parameter_counts": segmenter.parameter_counts(), "resumed_from": resumed_from,
        "device": device.type, "versions": {"torch": str(torch.__version__)},
    }
    paths.atomic_torch_save(result, result_path)
    result["loaded"] = False
    return result


def load_trained(result: dict, *, device=None) -> OpenVocabSegmenter:
    """Rebuild the segmenter of a :func:`train` result with its trained tensors (eval mode)."""
    config = SegTrainConfig(**result["config"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    segmenter = build_model(config, device=device)
    segmenter.load_trainable_state_dict(result["state"])
    return segmenter.eval()


# ----------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------
def _format_metrics(metrics: dict) -> str:
    lines = []
    for key, m in metrics.items():
        if key == "toy":
            lines.append(f"toy world: seen mIoU {100 * m['seen_miou']:.1f}, unseen mIoU {100 * m['unseen_miou']:.1f}, "
                         f"hIoU {100 * m['hiou']:.1f}, pixel accuracy {100 * m['pixel_accuracy']:.1f}")
        else:
            lines.append(f"{key}: mIoU {100 * m['miou']:.1f} ({m['num_images']} images)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hyro_edu.segmentation.train",
        description="Train an open-vocabulary segmenter (CAT-Seg decoder + a CLIP fine-tuning mode). "
                    "Without arguments: the embedded toy config (tiny CLIP, toy world, CPU-sized).",
    )
    parser.add_argument("--config", default=None,
                        help=f"a YAML file or a shipped config name ({', '.join(available_configs())}); default: toy")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set mode=hyperclip --set max_steps=100")
    parser.add_argument("--root", default=None, help="runs directory (default $HYRO_EDU_CHECKPOINTS)")
    parser.add_argument("--data-root", default=None, help="prepared datasets (default $HYRO_EDU_DATA)")
    parser.add_argument("--retrain", action="store_true", help="ignore an existing result and checkpoint")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the finished run of this config")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--estimate", action="store_true",
                        help="print the time and memory estimate (scaled from a published figure) "
                        "and exit")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides).resolved()
    except ValueError as err:
        parser.error(str(err))
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if args.estimate:
        print(format_estimate(config))
        return 0
    print(f"run {config.name!r}: mode {config.mode}, preset {config.preset}, {config.model} ({config.pretrained}), "
          f"{config.train_data} data, batch {config.batch_size} x {config.max_steps} steps -> {run_dir(config, args.root)}")
    if args.eval_only:
        path = run_dir(config, args.root) / "result.pt"
        if not path.is_file():
            parser.error(f"no finished run at {path}; train first (without --eval-only)")
        result = torch.load(path, map_location="cpu", weights_only=False)
        seg = load_trained(result)
        metrics = {}
        for key in config.eval_data:
            if key == "toy":
                metrics["toy"] = evaluate_toy(seg, n_images=config.toy_eval_images, image_size=config.image_size)
            else:
                metrics.update(evaluate_benchmarks(seg, [key], root=args.data_root, limit=config.eval_limit))
        print(_format_metrics(metrics))
        return 0
    result = train(config, root=args.root, data_root=args.data_root, retrain=args.retrain)
    print(("loaded finished run" if result["loaded"] else f"trained {result['steps']} steps in {result['train_seconds']:.0f} s")
          + f"; trainable parameters {result['parameter_counts']}")
    for step, miou in result.get("validations", []):
        print(f"validation at step {step}: mIoU {100 * miou:.1f} ({config.val_data})")
    print(_format_metrics(result["metrics"]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
