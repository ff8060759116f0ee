"""The training config of the segmenter: :class:`SegTrainConfig`, its two presets, and the estimate.

Every value a config leaves ``None`` comes from its preset (:data:`PRESETS`; the table is in
:mod:`hyro_edu.segmentation.train`).  A config is checked completely when it is constructed --
keys, choices, ranges, the CLIP model name, the patch size, and the fine-tuning fields (passed to
:class:`hyro_edu.clip.finetune.FinetuneConfig`, which validates them) -- so the command line
reports every mistake before Lightning loads or a model is built.  Nothing here imports
Lightning.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Union

import open_clip

from hyro_edu.clip.finetune import MODES, FinetuneConfig
from hyro_edu.clip.tiny import TINY_CLIP_CONFIG, TINY_CLIP_NAME, TINY_PRETRAINED
from hyro_edu.core import checks, paths
from hyro_edu.data.benchmarks import BENCHMARKS
from hyro_edu.segmentation.catseg import LOSSES
from hyro_edu.segmentation.model import PROMPT_ENSEMBLES
from hyro_edu.training.config import DistributedConfig, TrainConfig, suggest
from hyro_edu.training.runs import check_run

__all__ = [
    "PRESETS",
    "OFFICIAL_CLIP_MULTIPLIERS",
    "PAPER_CLIP_MULTIPLIERS",
    "COLOR_AUGS",
    "TRAIN_RESIZES",
    "PRECISIONS",
    "MATMUL_PRECISIONS",
    "PUBLISHED_STEP_REFERENCE",
    "SegTrainConfig",
    "available_configs",
    "load_config",
    "run_dir",
    "check_run_dir",
    "estimate_run",
    "format_estimate",
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
#: ``precision`` values (Lightning's names).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
#: ``matmul_precision`` values (``torch.set_float32_matmul_precision``).
MATMUL_PRECISIONS = ("highest", "high", "medium")

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
_DEFAULT_SCALE_BLOCK = 128  # a preset's per-mode scale_block for the modes it does not list
_FINETUNE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
_EVAL_KEYS = ("toy",) + tuple(BENCHMARKS)


def _number(value, name: str, *, low: float, strict: bool, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not (value > low if strict else value >= low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ValueError(f"{name} must be a finite number {bound}{' or null' if allow_none else ''}, "
                         f"got {value!r}")


def _patch_size(model: str) -> Optional[int]:
    if model == TINY_CLIP_NAME:
        return TINY_CLIP_CONFIG["vision_cfg"]["patch_size"]
    cfg = open_clip.get_model_config(model) or {}
    patch = cfg.get("vision_cfg", {}).get("patch_size")
    return patch if isinstance(patch, int) else None


@dataclass(frozen=True)
class SegTrainConfig(TrainConfig, DistributedConfig):
    """Everything that determines a training run.  ``None`` means "take it from ``preset``".

    Attributes
    ----------
    name : run directory under ``$HYRO_EDU_CHECKPOINTS`` (letters, digits, ``-_.``).
    preset : ``"paper"`` or ``"official"`` (see :mod:`hyro_edu.segmentation.train`).
    mode : one of :data:`hyro_edu.clip.finetune.MODES`.
    model, pretrained : :func:`hyro_edu.clip.weights.load_clip` arguments (``"hyro-tiny"`` /
        ``"toyworld"``: the tiny CLIP pretrained on the toy world; ``"ViT-B-16"`` / ``"openai"``;
        ``"ViT-L-14-336"`` / ``"openai"``; ``pretrained: null`` for random weights).  ``model``
        must be ``"hyro-tiny"`` or in ``open_clip.list_models()``.
    image_size : training crop side in pixels (a multiple of the patch size unless
        ``clip_resolution`` is set).
    clip_resolution : side the crops are resized to before CLIP (CAT-Seg's ``clip_resolution``:
        336 for ViT-L/14@336 with 384 crops); ``None``: the crop itself.
    prompt_ensemble : ``"single"`` (CAT-Seg's one template, P = 1, the released configs) or
        ``"imagenet"`` (the 80 CLIP ImageNet templates, P = 80).
    c_text, c_vision, scale_block, rotation_block, hclip_block, margin, hclip_relation,
        hclip_vision_free : the fields of :class:`~hyro_edu.clip.finetune.FinetuneConfig`
        (every fine-tuning switch), passed through and validated there.
    train_data : ``"toy"`` or ``"coco_stuff"``;  eval_data : list of ``"toy"`` or benchmark keys
        (:data:`hyro_edu.data.benchmarks.BENCHMARKS`; one name is a one-element list).
    batch_size, max_steps, lr, clip_lr_multiplier, weight_decay, grad_clip, warmup_steps,
        precision : the solver (``precision`` one of :data:`PRECISIONS`).
    matmul_precision : ``torch.set_float32_matmul_precision`` during training (``"high"``:
        TF32 on Ampere+, as the official ``train_net.py``; ``"highest"``: exact fp32).
    loss : ``"bce"`` (CAT-Seg's code) or ``"ce"`` (the HyRo paper).
    exclude_ignored : :func:`~hyro_edu.segmentation.catseg.catseg_loss` option (False = official; BCE only).
    color_aug, train_resize : COCO-Stuff augmentation switches (:data:`COLOR_AUGS`,
        :data:`TRAIN_RESIZES`; :class:`~hyro_edu.segmentation.train.data.CocoStuffTrainData`).
    toy_objects, toy_eval_images : ``[lo, hi]`` objects per toy training image; toy evaluation images.
    eval_limit : evaluate on at most this many images per benchmark (None: all).
    val_every, val_data, val_limit : validate every ``val_every`` steps (None: never) on
        ``val_data`` (``"toy"`` or a benchmark key; the COCO-Stuff val split by default), at most
        ``val_limit`` images, without the sliding window (CAT-Seg's in-training validation).
    checkpoint_every : steps between checkpoints;  seed : initialisation and data seed.
    num_workers : data-loader workers;  progress : show a progress bar.
    devices, num_nodes, strategy, accumulate_grad_batches : where the run trains
        (:class:`hyro_edu.training.config.DistributedConfig`): ``batch_size`` stays the global
        batch of a step, each process reads ``batch_size / (devices × num_nodes ×
        accumulate_grad_batches)`` images per micro-batch; not part of the run key.
    """

    CONFIG_PACKAGE: ClassVar[str] = "hyro_edu.segmentation.configs"
    DEFAULT_CONFIG: ClassVar[str] = "toy"
    KEY_IGNORES: ClassVar[tuple] = ("name", "eval_data", "toy_eval_images", "eval_limit",
                                    "checkpoint_every", "num_workers", "progress", "val_every",
                                    "val_data", "val_limit")
    KEY_OMIT_DEFAULTS: ClassVar[tuple] = ("margin", "hclip_relation", "hclip_vision_free")

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
    margin: str = _FINETUNE_DEFAULTS["margin"]
    hclip_relation: str = _FINETUNE_DEFAULTS["hclip_relation"]
    hclip_vision_free: Optional[int] = _FINETUNE_DEFAULTS["hclip_vision_free"]

    def __post_init__(self):
        self.coerce_sequences()
        if not isinstance(self.name, str) or not self.name or any(
            not (ch.isalnum() or ch in "-_.") for ch in self.name
        ) or self.name.startswith("."):
            raise ValueError(f"name must be a non-empty run name of letters, digits and '-_.', got {self.name!r}")
        checks.choice(self.preset, "preset", tuple(PRESETS))
        checks.choice(self.mode, "mode", MODES)
        if self.model != TINY_CLIP_NAME and self.model not in open_clip.list_models():
            raise ValueError(
                f"model must be {TINY_CLIP_NAME!r} or an open_clip model (open_clip.list_models(), "
                f"e.g. 'ViT-B-16', 'ViT-L-14-336'), got {self.model!r}"
                + suggest(self.model, [TINY_CLIP_NAME, *open_clip.list_models()])
            )
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise ValueError(f"pretrained must be a tag, a path or null, got {self.pretrained!r}")
        checks.choice(self.train_data, "train_data", ("toy", "coco_stuff"))
        for key in self.eval_data:
            if key not in _EVAL_KEYS:
                raise ValueError(f"eval_data entries must be 'toy' or one of {tuple(BENCHMARKS)}, "
                                 f"got {key!r}" + suggest(str(key), _EVAL_KEYS))
        if self.val_data not in _EVAL_KEYS:
            raise ValueError(f"val_data must be 'toy' or one of {tuple(BENCHMARKS)}, got {self.val_data!r}"
                             + suggest(str(self.val_data), _EVAL_KEYS))
        checks.choice(self.precision, "precision", PRECISIONS)
        for field_name, allowed in (("matmul_precision", MATMUL_PRECISIONS), ("loss", LOSSES),
                                    ("color_aug", COLOR_AUGS), ("train_resize", TRAIN_RESIZES)):
            value = getattr(self, field_name)
            if value is not None and value not in allowed:
                raise ValueError(f"{field_name} must be one of {allowed} or null (the preset's), got {value!r}")
        checks.choice(self.prompt_ensemble, "prompt_ensemble", tuple(PROMPT_ENSEMBLES))
        for field_name, low in (("image_size", 16), ("warmup_steps", 0), ("toy_eval_images", 1),
                                ("checkpoint_every", 1), ("seed", 0), ("num_workers", 0)):
            checks.integer(getattr(self, field_name), field_name, low)
        for field_name in ("batch_size", "max_steps", "eval_limit", "clip_resolution", "val_every",
                           "val_limit"):
            if getattr(self, field_name) is not None:
                checks.integer(getattr(self, field_name), field_name, 1)
        for field_name in ("c_text", "c_vision", "clip_lr_multiplier"):
            _number(getattr(self, field_name), field_name, low=0, strict=True, allow_none=True)
        _number(self.lr, "lr", low=0, strict=True, allow_none=False)
        _number(self.weight_decay, "weight_decay", low=0, strict=False, allow_none=False)
        if self.grad_clip is not None and (isinstance(self.grad_clip, bool)
                                           or not isinstance(self.grad_clip, (int, float))
                                           or not self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a number > 0 or null (no clipping), got {self.grad_clip!r}")
        for field_name in ("exclude_ignored", "progress"):
            if not isinstance(getattr(self, field_name), bool):
                raise ValueError(f"{field_name} must be true or false, got {getattr(self, field_name)!r}")
        lo_hi = self.toy_objects
        if len(lo_hi) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in lo_hi) \
                or not 1 <= lo_hi[0] <= lo_hi[1] <= 6:
            raise ValueError(f"toy_objects must be [lo, hi] with 1 <= lo <= hi <= 6, got {list(lo_hi)}")
        filled = {**self.to_values(), **self.preset_values()}
        self.check_distributed(filled["batch_size"])
        if self.warmup_steps > filled["max_steps"]:
            raise ValueError(f"warmup_steps must be in [0, max_steps={filled['max_steps']}], got {self.warmup_steps}")
        patch = _patch_size(self.model)
        if self.clip_resolution is None and patch and self.image_size % patch:
            raise ValueError(f"image_size must be a multiple of the patch size {patch} of {self.model} "
                             f"(or set clip_resolution), got {self.image_size}")
        self.finetune_config()  # FinetuneConfig validates the fine-tuning fields

    # -- presets ---------------------------------------------------------------------------
    def to_values(self) -> dict:
        """The fields as they are (no copies of nested values, unlike ``dataclasses.asdict``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def preset_values(self) -> dict:
        """The values :data:`PRESETS` fills in for this config's ``None`` fields."""
        values = {}
        for key, default in PRESETS[self.preset].items():
            if getattr(self, key) is not None:
                continue
            if isinstance(default, dict):
                default = default.get(self.mode, _DEFAULT_SCALE_BLOCK if key == "scale_block" else None)
            values[key] = default
        return values

    def resolved(self) -> "SegTrainConfig":
        """A copy with every ``None`` solver/geometry value taken from :data:`PRESETS`."""
        values = self.preset_values()
        return dataclasses.replace(self, **values) if values else self

    def finetune_config(self) -> FinetuneConfig:
        """The :class:`~hyro_edu.clip.finetune.FinetuneConfig` of the resolved config (every one
        of its fields, by name)."""
        values = {**self.to_values(), **self.preset_values()}
        return FinetuneConfig(**{name: values[name] for name in _FINETUNE_DEFAULTS})


def available_configs() -> list[str]:
    """Names of the YAML configs shipped in ``hyro_edu/segmentation/configs`` (use them with :func:`load_config`)."""
    return SegTrainConfig.available_configs()


def load_config(config: Union[str, Path, None] = None, overrides=None) -> SegTrainConfig:
    """A :class:`SegTrainConfig` from a shipped config name (:func:`available_configs`), a YAML path or
    ``None`` (the embedded toy default, ``toy``), with ``overrides`` (a dict or ``"key=value"`` strings,
    values parsed as YAML) applied on top.  Unknown keys and bad values raise ``ValueError``
    naming the key."""
    return SegTrainConfig.load(config, overrides)


def run_dir(config: SegTrainConfig, root: Optional[Union[str, Path]] = None) -> Path:
    """``<root>/<config.name>``; ``root`` defaults to ``$HYRO_EDU_CHECKPOINTS``."""
    return (Path(root) if root is not None else paths.checkpoint_dir()) / config.name


def check_run_dir(config: SegTrainConfig, root: Optional[Union[str, Path]] = None) -> Path:
    """:func:`run_dir`, after checking that its ``run.json`` (if any) names this config's key;
    :class:`~hyro_edu.training.runs.RunConflict` otherwise.  Reads JSON only."""
    directory = run_dir(config, root)
    check_run(directory, config.resolved().key(), config.name)
    return directory


def estimate_run(config: SegTrainConfig) -> dict:
    """Time and memory of ``config`` scaled from :data:`PUBLISHED_STEP_REFERENCE` (a published
    figure for ViT-B/16 ``hyperclip`` on 4 × RTX 3090, not a measurement of ours).

    ``reference_steps`` = ``max_steps × batch_size / 4`` steps of the reference's 4 images;
    ``hours`` = those steps × 0.587 s on the reference's 4 GPUs; ``gpu_hours`` = 4 × ``hours``;
    ``memory_mib_per_gpu`` = 14,951 MiB (the log's ``max_mem``) with one image per GPU.
    ``caveats`` lists what the figure does not cover for this config (another mode or backbone,
    P > 1, more images per device than the reference's one).
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
    per_device = c.per_device_batch_size
    world = c.world_size
    if world != ref["gpus"]:
        caveats.append(f"the figure is for {ref['gpus']} GPUs, this run trains on {world} "
                       f"(devices x num_nodes): the hours scale by about {ref['gpus']}/{world}")
    if per_device > 1:
        caveats.append(f"each device holds {per_device} images of a micro-batch (batch_size / (devices x "
                       "num_nodes x accumulate_grad_batches)): expect more memory than the figure's one "
                       "image per GPU; raise devices or accumulate_grad_batches to lower it")
    return dict(reference=ref, reference_steps=steps, hours=hours, gpu_hours=hours * ref["gpus"],
                memory_mib_per_gpu=ref["memory_mib_per_gpu"], caveats=caveats)


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.1f} min"


def format_estimate(config: SegTrainConfig) -> str:
    """:func:`estimate_run` as the lines :func:`~hyro_edu.segmentation.train.train` prints before a full run."""
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
