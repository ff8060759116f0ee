r"""Training an open-vocabulary segmenter with Lightning: one code path, toy world or COCO-Stuff.

The objective is CAT-Seg's (:func:`hyro_edu.catseg.catseg_loss`): per-class binary cross-entropy
between the upsampled logits and one-hot targets over the *training* vocabulary,

.. math::
    \min_{\phi,\ \psi}\ \mathbb E_{(x, y)}\ \mathcal L_{\mathrm{BCE}}\big(
        \mathrm{CATSeg}_\psi(\mathrm{CLIP}_{\phi}(x),\ \mathrm{CLIP}_{\phi}(\text{names})),\ y\big),

where :math:`\psi` is the decoder and :math:`\phi` the fine-tuning parameters of one of the five
modes of :mod:`hyro_edu.finetune` (CLIP itself stays frozen).  The optimiser follows the official
code (reference notes §0): AdamW with two learning-rate groups -- the decoder at ``lr`` and
everything inside CLIP (the adapters) at ``lr × clip_lr_multiplier`` -- weight decay except on
normalisation layers, gradient clipping of the full-model L2 norm, and a cosine schedule
(detectron2's ``WarmupCosineLR``: :math:`\eta_t = \eta\,\tfrac12(1 + \cos(\pi t / T))` after a
linear warm-up).  Mixed precision (``precision="bf16-mixed"`` or ``"16-mixed"``) runs CLIP and the
decoder in half precision while the hyperbolic maps compute in fp32
(:func:`hyro_edu.numerics.fp32_math`).

Two presets fill every value a config leaves unset (``None``):

==========================  ==============================  ==================================
value                       ``paper`` (HyRo paper, seed 000)  ``official`` (released code)
==========================  ==============================  ==================================
curvature ``c`` text/vision 0.01 / 0.01                       1.0 / 0.01
block of S (hyro)           256                               128
block of R                  256                               256
batch × iterations          8 × 40,000                        4 × 80,000
adapter lr                  2e-4 ("hyperbolic lr")            2e-4 × mode multiplier
CLIP-weight lr (attention)  1e-6                              2e-4 × 0.01 = 2e-6
==========================  ==============================  ==================================

The official multipliers are per released config: CAT-Seg 0.01, HyperCLIP 0.075, HyRo 0.025
(also used for ``rotation``, HyRo's ablation), H-CLIP 0.01.  The paper states neither gradient
clipping nor precision; the ``paper`` preset keeps the official values (clip 0.01, fp32).

Data: ``train_data="toy"`` trains on :class:`hyro_edu.toyworld.ToyPixelDataset` scenes of the
*seen* classes with the seen names as vocabulary (pixels of no object are ignored, label 255, as
the unlabelled pixels of the benchmarks are); ``"coco_stuff"`` trains on the
prepared COCO-Stuff-171 train split with CAT-Seg's augmentation (shortest edge 384, random
384² crop padded with label 255, photometric jitter, horizontal flip).  Evaluation on the toy world
uses all 54 names and reports the mIoU over seen and over unseen classes (object pixels only); on the
benchmarks it runs the official protocol (:func:`hyro_edu.segmentation_eval.evaluate`).

Runs live in ``$HYRO_EDU_CHECKPOINTS/<name>/`` (:func:`run_dir`): ``checkpoints/last.ckpt``
(saved every ``checkpoint_every`` steps; holds only the trainable tensors, the optimiser,
the scheduler and the config), ``logs/csv/version_<attempt>/metrics.csv`` (and
``logs/tensorboard/`` when ``tensorboard`` is installed; a resumed run starts a new version)
and ``result.pt`` (the final trainable state and metrics, written atomically last).
:func:`train` loads ``result.pt`` when it exists ("load if present, else train"), resumes from
``last.ckpt`` after an interruption, and refuses to resume a run whose config differs.  The data
stream depends only on ``(seed, step)``, so a resumed run sees the batches the uninterrupted run
would have seen and ends with the same weights.

Command line (defaults: the embedded toy config, no download)::

    python -m hyro_edu.seg_training                              # toy world, tiny CLIP, hyro
    python -m hyro_edu.seg_training --config official_vitb16 --set mode=hyperclip
    python -m hyro_edu.seg_training --config path/to/my.yaml --eval-only

References: CAT-Seg (Cho et al., CVPR 2024); HyRo (seed 000); HyperCLIP and H-CLIP (seeds 001, 004);
reference notes ``ovss-hyro-hyperclip-hclip-catseg.md`` §0, §2.3, §4.3-4.4.
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

from . import _lightning, paths
from .catseg import catseg_loss
from .clip_model import OPENAI_MEAN, OPENAI_STD, TINY_CLIP_NAME, TINY_PRETRAINED, load_clip
from .finetune import MODES, FinetuneConfig
from .seg_model import OpenVocabSegmenter, build_segmenter
from .segmentation_eval import MeanIoU
from .toyworld import BACKGROUND, ToyPixelDataset, ToyTransform, ToyWorld

__all__ = [
    "PRESETS",
    "OFFICIAL_CLIP_MULTIPLIERS",
    "SegTrainConfig",
    "available_configs",
    "load_config",
    "run_dir",
    "cosine_lambda",
    "parameter_groups",
    "ResumableSampler",
    "ToySegmentationData",
    "CocoStuffTrainData",
    "SegmentationTask",
    "build_task",
    "evaluate_toy",
    "evaluate_benchmarks",
    "train",
    "load_trained",
    "SimulatedInterruption",
    "main",
]


#: CLIP-side learning-rate multipliers of the released configs, by mode (reference notes §0).
OFFICIAL_CLIP_MULTIPLIERS = {"attention": 0.01, "hyperclip": 0.075, "rotation": 0.025, "hyro": 0.025, "hclip": 0.01}
#: HyRo paper: adapters ("hyperbolic lr") at 2e-4 = lr, CLIP weights at 1e-6 = lr × 0.005.
PAPER_CLIP_MULTIPLIERS = {"attention": 0.005, "hyperclip": 1.0, "rotation": 1.0, "hyro": 1.0, "hclip": 1.0}

#: What each preset fills in for the values a config leaves unset.
PRESETS: dict[str, dict] = {
    "paper": dict(c_text=0.01, c_vision=0.01, scale_block={"hyro": 256}, rotation_block=256, hclip_block=128,
                  batch_size=8, max_steps=40_000, clip_lr_multiplier=PAPER_CLIP_MULTIPLIERS),
    "official": dict(c_text=1.0, c_vision=0.01, scale_block=128, rotation_block=256, hclip_block=128,
                     batch_size=4, max_steps=80_000, clip_lr_multiplier=OFFICIAL_CLIP_MULTIPLIERS),
}
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
    mode : one of :data:`hyro_edu.finetune.MODES`.
    model, pretrained : :func:`hyro_edu.clip_model.load_clip` arguments (``"hyro-tiny"`` /
        ``"toyworld"``: the tiny CLIP pretrained on the toy world; ``"ViT-B-16"`` / ``"openai"``).
    image_size : training crop side in pixels, a multiple of the patch size.
    c_text, c_vision, scale_block, rotation_block, hclip_block : fine-tuning geometry.
    train_data : ``"toy"`` or ``"coco_stuff"``;  eval_data : list of ``"toy"`` or benchmark keys.
    batch_size, max_steps, lr, clip_lr_multiplier, weight_decay, grad_clip, warmup_steps,
        precision : the solver (``precision`` one of ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``).
    exclude_ignored : :func:`~hyro_edu.catseg.catseg_loss` option (False = official).
    toy_objects, toy_eval_images : objects per toy training image; toy evaluation images.
    eval_limit : evaluate on at most this many images per benchmark (None: all).
    checkpoint_every : steps between checkpoints;  seed : initialisation and data seed.
    num_workers : data-loader workers;  progress : show a progress bar.
    """

    name: str = "toy-hyro"
    preset: str = "official"
    mode: str = "hyro"
    model: str = TINY_CLIP_NAME
    pretrained: Optional[str] = TINY_PRETRAINED
    image_size: int = 64
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
    exclude_ignored: bool = False
    toy_objects: tuple = (1, 3)
    toy_eval_images: int = 200
    eval_limit: Optional[int] = None
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
        _int_at_least(self.image_size, "image_size", 16)
        _int_at_least(self.warmup_steps, "warmup_steps", 0)
        _int_at_least(self.toy_eval_images, "toy_eval_images", 1)
        _int_at_least(self.checkpoint_every, "checkpoint_every", 1)
        _int_at_least(self.seed, "seed", 0)
        _int_at_least(self.num_workers, "num_workers", 0)
        for field_name in ("batch_size", "max_steps", "scale_block", "rotation_block", "hclip_block", "eval_limit"):
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
        """A hash of everything that changes the trained weights (not ``name``, ``eval_*``, ``progress``...)."""
        d = self.resolved().to_dict()
        for k in ("name", "eval_data", "toy_eval_images", "eval_limit", "checkpoint_every", "num_workers", "progress"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _int_at_least(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def available_configs() -> list[str]:
    """Names of the YAML configs shipped in ``hyro_edu/configs`` (use them with :func:`load_config`)."""
    return sorted(p.name[:-5] for p in resources.files("hyro_edu.configs").iterdir() if p.name.endswith(".yaml"))


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
        text = resources.files("hyro_edu.configs").joinpath(f"{config}.yaml").read_text(encoding="utf-8")
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


class CocoStuffTrainData(Dataset):
    """COCO-Stuff-171 training crops with CAT-Seg's augmentation (reference notes §4.3).

    Shortest edge resized to ``size`` (longest at most 1333), a random ``size × size`` crop (padding
    with pixel 128 and label 255), photometric jitter (brightness ±32, contrast and saturation
    ×[0.5, 1.5], a stand-in for detectron2's ``ColorAugSSD``) and a horizontal flip, each drawn from
    ``(seed, position)``.  Images come out normalised with ``mean``/``std`` (0-1 scale).
    """

    def __init__(self, size: int = 384, *, root=None, seed: int = 0, mean=None, std=None):
        from .segmentation_data import SegmentationBenchmark  # only for the full recipe

        self.data = SegmentationBenchmark("coco_stuff", "train", root=root)
        self.vocabulary = tuple(self.data.prompt_names)
        self.size, self.seed = int(size), int(seed)
        self.mean = torch.tensor(mean or OPENAI_MEAN).view(3, 1, 1)
        self.std = torch.tensor(std or OPENAI_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item) -> dict:
        index, position = item if isinstance(item, tuple) else (item, item)
        sample = self.data[index]
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, 11, position]).generate_state(1)[0]))
        image, label = sample["image"].float(), sample["label"]
        h, w = label.shape
        scale = min(self.size / min(h, w), 1333 / max(h, w))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        label = F.interpolate(label[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
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
        image = (image.clamp(0, 255) / 255.0 - self.mean) / self.std
        return {"image": image, "label": label}


# ----------------------------------------------------------------------------
# the Lightning module
# ----------------------------------------------------------------------------
class SegmentationTask(L.LightningModule):
    """Lightning wrapper: CAT-Seg loss on the training vocabulary, the official optimiser.

    Checkpoints hold only the trainable tensors (``segmenter.trainable_state_dict()``), plus the
    optimiser, scheduler and config (as hyper-parameters).  Loading a checkpoint checks that its
    tensors are exactly this model's trainable set.
    """

    def __init__(self, segmenter: OpenVocabSegmenter, config: SegTrainConfig, vocabulary: Sequence[str]):
        super().__init__()
        self.segmenter = segmenter
        self.config = config.resolved()
        self.vocabulary = tuple(vocabulary)
        self.strict_loading = False  # checkpoints hold the trainable tensors only (checked below)
        self.save_hyperparameters({"config": self.config.to_dict(), "key": self.config.key()})
        self.losses: list[float] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.segmenter(batch["image"], self.vocabulary)  # every training class, every step
        loss = catseg_loss(logits.float(), batch["label"], len(self.vocabulary),
                           exclude_ignored=self.config.exclude_ignored)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        sched = self.lr_schedulers()
        if sched is not None:
            for group in sched.optimizer.param_groups:
                self.log(f"lr/{group['name']}", group["lr"], on_step=True, on_epoch=False)

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


def build_task(config: SegTrainConfig, *, device=None, data_root=None) -> tuple[SegmentationTask, Dataset]:
    """The backbone (``load_clip``), the segmenter for ``config.mode`` and the training data."""
    config = config.resolved()
    torch.manual_seed(config.seed)
    backbone = load_clip(config.model, config.pretrained, device=device or "cpu")
    mean, std = backbone.mean.flatten().tolist(), backbone.std.flatten().tolist()
    if config.image_size % backbone.patch_size:
        raise ValueError(f"image_size must be a multiple of the patch size {backbone.patch_size}, got {config.image_size}")
    segmenter = build_segmenter(backbone, config.finetune_config())
    if config.train_data == "toy":
        data = ToySegmentationData(ToyWorld(seed=config.seed), image_size=config.image_size,
                                   num_objects=config.toy_objects, mean=mean, std=std)
    else:
        data = CocoStuffTrainData(config.image_size, root=data_root, seed=config.seed, mean=mean, std=std)
    segmenter.train()  # load_clip returns eval mode; CLIP has no dropout, so this changes nothing it computes
    return SegmentationTask(segmenter, config, data.vocabulary), data


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
    from .segmentation_data import SegmentationBenchmark
    from .segmentation_eval import evaluate

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
    """
    config = (load_config() if config is None else config).resolved()
    directory = run_dir(config, root)
    result_path = directory / "result.pt"
    if result_path.is_file() and not retrain:
        result = torch.load(result_path, map_location="cpu", weights_only=False)
        if result.get("key") == config.key():
            result["loaded"] = True
            return result
        raise ValueError(
            f"{result_path} holds a run of a different config; choose another name (config.name) "
            "or pass retrain=True to overwrite it"
        )
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
        "parameter_counts": segmenter.parameter_counts(), "resumed_from": resumed_from,
        "device": device.type, "versions": {"torch": str(torch.__version__)},
    }
    paths.atomic_torch_save(result, result_path)
    result["loaded"] = False
    return result


def load_trained(result: dict, *, device=None) -> OpenVocabSegmenter:
    """Rebuild the segmenter of a :func:`train` result with its trained tensors (eval mode)."""
    config = SegTrainConfig(**result["config"])
    task, _ = build_task(config, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    task.segmenter.load_trainable_state_dict(result["state"])
    return task.segmenter.eval()


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
        prog="python -m hyro_edu.seg_training",
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
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides).resolved()
    except ValueError as err:
        parser.error(str(err))
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
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
    print(_format_metrics(result["metrics"]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
