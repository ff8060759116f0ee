r"""Contrastive pretraining of the tiny CLIP on the toy world, cached on first use.

CLIP (Radford et al., ICML 2021) learns from image-caption pairs with the
symmetric InfoNCE loss (van den Oord et al., 2018): in a batch of :math:`N`
pairs, image :math:`i` must pick its caption among the :math:`N` captions and
caption :math:`i` its image among the :math:`N` images,

.. math::
    \ell = \tfrac12\Big[\operatorname{CE}\big(\tau\, I T^\top, Y\big)
           + \operatorname{CE}\big(\tau\, T I^\top, Y^\top\big)\Big],

with unit image and text embeddings :math:`I, T \in \mathbb{R}^{N\times E}`,
learned scale :math:`\tau = e^{s}` (clipped at 100, as in CLIP) and targets
:math:`Y`.  CLIP's targets are the identity.  The toy world repeats captions
within a batch (36 seen classes, 64 pairs), so here :math:`Y_{ij} \propto
[\text{image } i \text{ and caption } j \text{ name the same classes}]`, each
row normalised: a repeated caption is not pushed away from its other correct
images.  With :math:`Y = I` this is exactly CLIP's loss.

:func:`pretrained_tiny_clip` ("load if present, else train") returns the tiny
CLIP trained with :class:`PretrainConfig`: it looks for
``$HYRO_EDU_CACHE/tiny_clip/hyro-tiny-<hash>.pt``, where the hash covers every
setting of the config (a changed config trains a new model), and otherwise
trains with Lightning (:class:`ContrastivePretraining`,
:class:`ToyCaptionDataModule`), measures zero-shot accuracy, and writes the
checkpoint atomically (temporary file, then ``os.replace``), so an interrupted
run never leaves a half-written checkpoint.  The checkpoint (about 14 MB, most
of it the token-embedding table) is not shipped with the package.

The first use says so in one line (what, how long, where it is cached), shows a
progress bar on a terminal and a line every tenth of the run elsewhere
(notebooks, logs), and prints nothing once the cache is warm.  While it trains,
a partial checkpoint (weights, optimiser and schedule, losses so far) is written
atomically every :data:`CHECKPOINT_EVERY` steps, and on Ctrl-C (SIGINT) or
SIGTERM after the current step, into the work folder :func:`partial_dir` beside
the cache file; the next call resumes from it.  The training batches are a
function of the step (scene ``i`` of the split, its flip seeded by ``i``), so a
resumed run gives the same weights, bit for bit, as one that was never
interrupted.  The work folder is removed once the weights are cached.  This
module is longer than 500 lines because the loss, its Lightning task, the
evaluation and the cached, resumable run are one concept: the tiny CLIP's
pretraining.

:func:`zero_shot_accuracy` classifies single-object test images by the nearest
class-name embedding ("a photo of a {}."), and reports, next to chance, the
accuracy an oracle would reach knowing only the colour or only the shape: the
unseen names can only be told apart by both.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import lightning as L
import open_clip
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hyro_edu.core import checks as _checks
from hyro_edu.core import paths
from hyro_edu.training import lightning as _lightning
from hyro_edu.training.runs import InterruptGuard, TrainingInterrupted
from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.clip.tiny import TINY_CLIP_CONFIG, TINY_CLIP_NAME, TINY_PRETRAINED, build_tiny_clip
from hyro_edu.data.toyworld import ToyImageDataset, ToyTransform, ToyWorld

__all__ = [
    "PretrainConfig",
    "contrastive_loss",
    "same_labels",
    "ContrastivePretraining",
    "ToyCaptionDataModule",
    "ZeroShotResult",
    "zero_shot_accuracy",
    "train_tiny_clip",
    "checkpoint_path",
    "partial_dir",
    "pretrained_tiny_clip",
    "CHECKPOINT_EVERY",
]

#: Bump when training code changes what a config produces; part of the cache key.
FORMAT_VERSION = 1
_LOG_SCALE_MAX = math.log(100.0)
#: Optimiser steps between two partial checkpoints of a pretraining (not part of the cache key).
CHECKPOINT_EVERY = 50
#: Measured: the default config trained its 900 steps in 296 s with one CPU thread (torch 2.14,
#: an x86 server core), i.e. 0.33 s per step of 64 pairs (a resumed run here: 304 s); the two
#: zero-shot evaluations took 5.4 s.  The estimate printed before a first pretraining on a CPU comes from these numbers.
_SECONDS_PER_STEP_ONE_CORE = 296 / 900
_EVAL_SECONDS_ONE_CORE = 5.4


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that determines the pretrained tiny CLIP (hashed into the cache key).

    Attributes
    ----------
    model : keyword arguments of ``open_clip.CLIP`` (default
        :data:`~hyro_edu.clip.tiny.TINY_CLIP_CONFIG`).
    world : keyword arguments of :class:`~hyro_edu.data.toyworld.ToyWorld` (default ``{}``).
    steps : optimiser steps, >= 1 (default 900).
    batch_size : image-caption pairs per step, >= 2 (default 64).
    lr, weight_decay : AdamW; weight decay on matrices only (not on gains,
        biases, embeddings or the logit scale).
    warmup : linear warm-up steps, then cosine decay to 0.
    hflip : probability of a horizontal flip of a training image.
    num_objects : objects per training image (default one: the caption names it).
    seed : initialisation seed.
    """

    model: dict = field(default_factory=lambda: json.loads(json.dumps(TINY_CLIP_CONFIG)))
    world: dict = field(default_factory=dict)
    steps: int = 900
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 90
    hflip: float = 0.5
    num_objects: tuple = (1, 1)
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "warmup", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (contrastive learning needs negatives), got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup <= self.steps:
            raise ValueError(f"warmup must be in [0, steps={self.steps}], got {self.warmup}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip must be a probability in [0, 1], got {self.hflip}")
        object.__setattr__(self, "num_objects", tuple(self.num_objects))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def key(self) -> str:
        """16 hex digits of the SHA-256 of the config and ``FORMAT_VERSION``."""
        payload = {"format": FORMAT_VERSION, "config": self.to_dict()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def make_world(self) -> ToyWorld:
        return ToyWorld(**self.world)


# ----------------------------------------------------------------------------
# the loss
# ----------------------------------------------------------------------------
def same_labels(labels: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` multi-hot labels -> ``(N, N)`` bool, True where two rows name the same classes."""
    if labels.dim() != 2:
        raise ValueError(f"labels must have shape (N, C), got {tuple(labels.shape)}")
    return (labels[:, None, :] == labels[None, :, :]).all(dim=-1)


def contrastive_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    r"""Symmetric InfoNCE (CLIP's loss) with optional multiple positives.

    ``image_emb``, ``text_emb`` : ``(N, E)``, normalised inside.  ``logit_scale`` :
    the log of the scale :math:`\tau` (a scalar tensor).  ``positives`` : ``(N, N)``
    bool, ``positives[i, j]`` when caption ``j`` is correct for image ``i`` (default
    the identity, CLIP's case); the diagonal must be True.  Returns a scalar.

    Properties (checked in the tests): with all logits equal the loss is
    :math:`\log N`; it is 0 only in the limit of perfectly separated pairs; it is
    symmetric under swapping images and texts when ``positives`` is symmetric.
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(
            f"image_emb and text_emb must both have shape (N, E), got {tuple(image_emb.shape)} "
            f"and {tuple(text_emb.shape)}"
        )
    n = image_emb.shape[0]
    if positives is None:
        positives = torch.eye(n, dtype=torch.bool, device=image_emb.device)
    if positives.shape != (n, n) or not bool(positives.diagonal().all()):
        raise ValueError(f"positives must be an (N, N) = ({n}, {n}) bool matrix with a True diagonal")
    logits = logit_scale.exp() * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    target = positives.to(logits.dtype)
    loss_i = F.cross_entropy(logits, target / target.sum(1, keepdim=True))
    target_t = target.T
    loss_t = F.cross_entropy(logits.T, target_t / target_t.sum(1, keepdim=True))
    return (loss_i + loss_t) / 2


# ----------------------------------------------------------------------------
# Lightning
# ----------------------------------------------------------------------------
class ToyCaptionDataModule(L.LightningDataModule):
    """Training pairs: ``steps × batch_size`` fresh scenes of seen classes, each seen once.

    Scenes are rendered on the fly (about 1 ms each) from the ``"train"`` split;
    no pair repeats, so the model cannot memorise images.  Step ``t`` (from 0)
    trains on scenes ``t·batch_size .. (t+1)·batch_size - 1``, whatever step the
    run started from: a run resumed at ``trainer.global_step`` gets the batches
    an uninterrupted run would have had.
    """

    def __init__(self, config: PretrainConfig, world: Optional[ToyWorld] = None):
        super().__init__()
        self.config = config
        self.world = world if world is not None else config.make_world()

    def train_dataloader(self) -> DataLoader:
        cfg = self.config
        start = self.trainer.global_step if self.trainer is not None else 0
        transform = ToyTransform(hflip=cfg.hflip)
        # scene i and its flip depend only on i, not on the length, so a dataset that extends past
        # the last step changes no batch; the loader always holds `steps` batches (Lightning would
        # take a shorter one, after a resume past half-way, for an epoch already finished), and
        # max_steps ends the run
        data = ToyImageDataset(
            self.world, (start + cfg.steps) * cfg.batch_size, split="train", classes="seen",
            num_objects=cfg.num_objects, transform=transform,
        )
        indices = range(start * cfg.batch_size, (start + cfg.steps) * cfg.batch_size)
        return DataLoader(data, batch_size=cfg.batch_size, sampler=indices, num_workers=0, drop_last=True)


class ContrastivePretraining(L.LightningModule):
    """Trains a :class:`~hyro_edu.clip.backbone.ClipBackbone` with :func:`contrastive_loss`.

    Batches are dicts with ``image`` ``(N, 3, H, W)``, ``labels`` ``(N, C)`` and
    ``caption`` (N strings).  AdamW, linear warm-up then cosine decay per step;
    the logit scale is clipped at 100 after every optimiser step (inside
    :meth:`optimizer_step`, so a checkpoint written at the end of a step holds
    the clipped value).
    """

    def __init__(self, config: PretrainConfig, backbone: Optional[ClipBackbone] = None):
        super().__init__()
        self.config = config
        if backbone is None:
            backbone = ClipBackbone(build_tiny_clip(config.model, seed=config.seed), name=TINY_CLIP_NAME)
        self.backbone = backbone
        self.losses: list[float] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        bb = self.backbone
        tokens = bb.tokenize(batch["caption"])
        image_emb = bb.encode_image(batch["image"], normalize=True)
        text_emb = bb.encode_text(tokens, normalize=True)
        loss = contrastive_loss(image_emb, text_emb, bb.model.logit_scale, same_labels(batch["labels"]))
        self.losses.append(float(loss.detach()))
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():
            self.backbone.model.logit_scale.clamp_(0, _LOG_SCALE_MAX)

    def configure_optimizers(self):
        cfg = self.config
        decay, no_decay = [], []
        for name, p in self.backbone.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
        )

        def schedule(step: int) -> float:
            warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# ----------------------------------------------------------------------------
# zero-shot evaluation
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ZeroShotResult:
    """Zero-shot top-1 accuracy of ``n`` single-object test images among ``candidates``.

    chance : ``1 / len(candidates)``.  colour_only, shape_only : accuracy of an
    oracle that knows the colour (the shape) and guesses uniformly among the
    candidates with that colour (shape).  colour_accuracy, shape_accuracy : how
    often the predicted name has the right colour word (shape word).
    predictions, targets : class indices ``(n,)``.
    """

    accuracy: float
    chance: float
    colour_only: float
    shape_only: float
    colour_accuracy: float
    shape_accuracy: float
    n: int
    candidates: tuple
    predictions: torch.Tensor
    targets: torch.Tensor


@torch.no_grad()
def zero_shot_accuracy(
    backbone: ClipBackbone,
    world: ToyWorld,
    *,
    classes: Union[str, Sequence[int]] = "unseen",
    candidates: Union[str, Sequence[int], None] = None,
    n_images: int = 360,
    template: str = "a photo of a {}.",
    image_size: Optional[int] = None,
    batch_size: int = 120,
    split: str = "test",
) -> ZeroShotResult:
    """Zero-shot classification of single-object images of ``classes`` among ``candidates``.

    ``classes`` / ``candidates`` : "seen", "unseen", "all" or class indices
    (``candidates`` defaults to ``classes``; it must contain them).  Images come
    from ``split`` and are resized to ``image_size`` (default the backbone's
    native size) and normalised with the backbone's mean/std.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be an integer >= 1, got {n_images!r}")
    cls = world.class_subset(classes)
    cands = world.class_subset(classes if candidates is None else candidates)
    if not set(cls) <= set(cands):
        raise ValueError("candidates must contain every class the images are drawn from")
    size = backbone.native_image_size if image_size is None else image_size
    transform = ToyTransform(size, mean=backbone.mean.flatten().tolist(), std=backbone.std.flatten().tolist())
    data = ToyImageDataset(world, n_images, split=split, classes=cls, num_objects=(1, 1), transform=transform)
    was_training = backbone.training
    backbone.eval()
    text = backbone.class_embeddings([world.class_names[k] for k in cands], template)
    preds, targets = [], []
    for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
        image = backbone.encode_image(batch["image"].to(backbone.device))
        preds.append(torch.as_tensor(cands)[(image @ text.T).argmax(-1).cpu()])
        targets.append(batch["labels"].argmax(-1))
    backbone.train(was_training)
    pred, target = torch.cat(preds), torch.cat(targets)
    n_col = len(world.colours)
    colour_only = sum(1 / sum(c % n_col == k % n_col for c in cands) for k in cls) / len(cls)
    shape_only = sum(1 / sum(c // n_col == k // n_col for c in cands) for k in cls) / len(cls)
    return ZeroShotResult(
        accuracy=float((pred == target).float().mean()),
        chance=1 / len(cands),
        colour_only=colour_only,
        shape_only=shape_only,
        colour_accuracy=float((pred % n_col == target % n_col).float().mean()),
        shape_accuracy=float((pred // n_col == target // n_col).float().mean()),
        n=len(target),
        candidates=tuple(cands),
        predictions=pred,
        targets=target,
    )


def _zero_shot_summary(backbone: ClipBackbone, world: ToyWorld, n_images: int) -> dict:
    out = {}
    for name, classes, cands in (
        ("unseen_among_unseen", "unseen", "unseen"),
        ("unseen_among_all", "unseen", "all"),
        ("seen_among_seen", "seen", "seen"),
    ):
        r = zero_shot_accuracy(backbone, world, classes=classes, candidates=cands, n_images=n_images)
        out[name] = {"accuracy": r.accuracy, "chance": r.chance, "colour_only": r.colour_only,
                     "shape_only": r.shape_only}
    return out


# ----------------------------------------------------------------------------
# progress lines and partial checkpoints
# ----------------------------------------------------------------------------
_PARTIAL_FILE = "last.ckpt"
_PARTIAL_KEY = "hyro_edu_pretraining"  # what a partial checkpoint carries besides Lightning's state


def _duration(seconds: float) -> str:
    """``"42 s"`` or ``"3 min 05 s"``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


class _ProgressLines(L.Callback):
    """A line every tenth of the run and at its end: step, mean loss since the last line, time."""

    def __init__(self, steps: int):
        self.steps, self.every = steps, max(1, math.ceil(steps / 10))

    def on_train_start(self, trainer, pl_module) -> None:
        self.first, self.started = trainer.global_step, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every and step < self.steps:
            return
        elapsed = time.perf_counter() - self.started
        left = elapsed / max(1, step - self.first) * (self.steps - step)
        recent = pl_module.losses[-self.every:] or [float("nan")]
        print(f"  tiny CLIP: step {step}/{self.steps}, loss {sum(recent) / len(recent):.3f}, "
              f"{_duration(elapsed)} elapsed, about {_duration(left)} left", flush=True)


class _Bar(_lightning.StepProgressBar):
    """The step bar, labelled for this run."""

    @property
    def train_description(self) -> str:
        return "tiny CLIP"


def _save_partial(trainer: L.Trainer, path: Path) -> None:
    """The trainer's checkpoint to ``path`` atomically (a per-process temporary file, then ``os.replace``)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)
        os.replace(tmp, path)
    except OSError as err:  # a full disk, or another process finished and removed the folder
        tmp.unlink(missing_ok=True)
        logging.getLogger(__name__).warning("could not write the partial checkpoint %s (%s)", path, err)


class _PartialCheckpoints(L.Callback):
    """Writes the run's checkpoint to ``path`` every ``every`` steps (not at the last one).

    Every checkpoint of the run (also :class:`~hyro_edu.training.lightning.StopOnSignal`'s) gets
    ``carried`` (the config key, the zero-shot accuracies before training, the seconds and the
    resume steps of earlier attempts), the losses so far and the seconds spent up to now.
    """

    def __init__(self, path: Path, every: int, carried: dict):
        self.path, self.every, self.carried = Path(path), every, carried
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def on_fit_start(self, trainer, pl_module) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        c = self.carried
        checkpoint[_PARTIAL_KEY] = {
            **c, "losses": list(pl_module.losses),
            "train_seconds": c["train_seconds"] + time.perf_counter() - self.wall,
            "train_cpu_seconds": c["train_cpu_seconds"] + time.process_time() - self.cpu,
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0 and trainer.global_step < trainer.max_steps:
            _save_partial(trainer, self.path)


def _read_partial(path: Path, config: PretrainConfig) -> Optional[dict]:
    """What the partial checkpoint at ``path`` carries, with its ``step``; ``None`` if there is none.

    A damaged file, or one of another config, is removed (with a warning): the run starts at step 0.
    """
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        carried = dict(ckpt[_PARTIAL_KEY])
        if carried.get("key") != config.key():
            raise ValueError(f"written for config {carried.get('key')}, not {config.key()}")
        carried["step"] = int(ckpt["global_step"])
        if len(carried["losses"]) != carried["step"]:
            raise ValueError(f"{len(carried['losses'])} losses for {carried['step']} steps")
    except Exception as err:  # unreadable or foreign: start again
        logging.getLogger(__name__).warning("ignoring the partial pretraining %s (%s: %s); starting at step 0",
                                            path, type(err).__name__, err)
        path.unlink(missing_ok=True)
        return None
    return carried


# ----------------------------------------------------------------------------
# train, cache, load
# ----------------------------------------------------------------------------
def train_tiny_clip(
    config: Optional[PretrainConfig] = None,
    *,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
    eval_images: int = 360,
    work_dir: Optional[Union[str, Path]] = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> tuple[ClipBackbone, dict]:
    """Train the tiny CLIP with Lightning; return ``(backbone, record)``.

    ``record`` holds the config, the loss curve, the wall-clock and CPU seconds
    of training (summed over the attempts of a resumed run), ``resumed_at`` (the
    steps the attempts after the first started from), and zero-shot accuracies
    before and after training (``eval_images`` test images each; 0 skips the
    evaluation).

    progress : show a progress bar on a terminal, a line every tenth of the run
        elsewhere (notebooks, logs).
    work_dir : folder of the partial checkpoint ``last.ckpt``, written every
        ``checkpoint_every`` steps and, on SIGINT or SIGTERM, after the current
        step; the signal then raises
        :class:`~hyro_edu.training.runs.TrainingInterrupted` (a
        ``KeyboardInterrupt``).  A partial checkpoint found there is resumed,
        and gives the weights an uninterrupted run gives.  ``None`` (default):
        no checkpoints, and an interrupted run is lost.
    """
    config = PretrainConfig() if config is None else config
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint_every = _checks.integer(checkpoint_every, "checkpoint_every")
    last = None if work_dir is None else Path(work_dir) / _PARTIAL_FILE
    resume = None if last is None else _read_partial(last, config)
    world = config.make_world()
    module = ContrastivePretraining(config)
    callbacks: list = []
    bar = progress and sys.stdout.isatty()
    if progress:
        callbacks.append(_Bar() if bar else _ProgressLines(config.steps))
    guard = InterruptGuard() if last is not None else contextlib.nullcontext()
    stopper, stage = None, "the zero-shot evaluation before training"
    with guard:
        try:
            if resume is None:
                before = _zero_shot_summary(module.backbone, world, eval_images) if eval_images else {}
                carried = {"key": config.key(), "zero_shot_before": before, "train_seconds": 0.0,
                           "train_cpu_seconds": 0.0, "resumed_at": []}
            else:
                module.losses = list(resume["losses"])
                carried = {k: resume[k] for k in ("key", "zero_shot_before", "train_seconds",
                                                  "train_cpu_seconds", "resumed_at")}
                carried["resumed_at"] = [*carried["resumed_at"], resume["step"]]
            if last is not None:
                stopper = _lightning.StopOnSignal(guard, last)
                callbacks += [_PartialCheckpoints(last, checkpoint_every, carried), stopper]
            data = ToyCaptionDataModule(config, world)
            stage = "training"
            with _lightning.quiet():
                trainer = L.Trainer(
                    max_steps=config.steps, max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu",
                    devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=bar,
                    enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
                )
                wall, cpu = time.perf_counter(), time.process_time()
                trainer.fit(module, datamodule=data, ckpt_path=None if resume is None else last)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if last is not None and guard.received is not None:  # came after the last step's check
                _save_partial(trainer, last)
                raise _lightning.StopRequested(trainer.global_step, last)
            stage = "the zero-shot evaluation after training"
            backbone = module.backbone.to(device).eval()
            after = _zero_shot_summary(backbone, world, eval_images) if eval_images else {}
        except (_lightning.StopRequested, TrainingInterrupted, SystemExit):
            if last is None or guard.received is None:  # not a signal of ours
                raise
            step = stopper.step if stopper is not None and stopper.step is not None else None
            saved = stopper.saved_step if stopper is not None else None
            if saved is None and resume is not None:
                saved = resume["step"]
            raise TrainingInterrupted(
                guard.received, step, last if last.is_file() else None, saved,
                during=f"the tiny CLIP's pretraining ({stage})" if stage != "training"
                else "the tiny CLIP's pretraining",
                hint="call load_clip('hyro-tiny', 'toyworld') (or pretrained_tiny_clip) again to resume",
            ) from None
    record = {
        "config": config.to_dict(),
        "key": config.key(),
        "losses": module.losses,
        "train_seconds": carried["train_seconds"] + wall,
        "train_cpu_seconds": carried["train_cpu_seconds"] + cpu,
        "resumed_at": carried["resumed_at"],
        "device": device.type,
        "threads": torch.get_num_threads(),
        "zero_shot_before": carried["zero_shot_before"],
        "zero_shot_after": after,
        "versions": {"torch": str(torch.__version__), "open_clip": str(open_clip.__version__)},
    }
    return backbone, record


def checkpoint_path(config: Optional[PretrainConfig] = None, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """``<cache_dir>/tiny_clip/hyro-tiny-<config.key()>.pt``; ``cache_dir`` defaults to ``$HYRO_EDU_CACHE``."""
    config = PretrainConfig() if config is None else config
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    return root / "tiny_clip" / f"{TINY_CLIP_NAME}-{config.key()}.pt"


def partial_dir(config: Optional[PretrainConfig] = None, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The work folder of an unfinished pretraining: :func:`checkpoint_path` with ``.partial`` for ``.pt``."""
    return checkpoint_path(config, cache_dir).with_suffix(".partial")


def _load_checkpoint(path: Path, config: PretrainConfig, device) -> Optional[ClipBackbone]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("key") != config.key():
            return None
        model = build_tiny_clip(ckpt["config"]["model"])
        model.load_state_dict(ckpt["state_dict"])
    except Exception as err:  # unreadable or foreign file: train again and overwrite it
        logging.getLogger(__name__).warning("ignoring unreadable checkpoint %s (%s)", path, err)
        return None
    backbone = ClipBackbone(model, name=TINY_CLIP_NAME, pretrained=TINY_PRETRAINED).to(device).eval()
    backbone.pretraining_record = ckpt["record"]
    return backbone


def _announcement(config: PretrainConfig, device: torch.device, path: Path, step: Optional[int]) -> str:
    """The line printed before a pretraining starts (``step``: where it resumes, or ``None``)."""
    left = config.steps - (step or 0)
    what = (f"Pretraining the tiny CLIP once (first use): {config.steps} steps" if step is None
            else f"Resuming the tiny CLIP's pretraining at step {step} of {config.steps}")
    if device.type == "cpu" and config.model == PretrainConfig().model:
        seconds = left * _SECONDS_PER_STEP_ONE_CORE * config.batch_size / 64 + _EVAL_SECONDS_ONE_CORE
        when = f"about {round(seconds / 60)} min" if seconds >= 90 else f"about {10 * math.ceil(seconds / 10)} s"
        what += f", {when} on one CPU core (less with more cores or a GPU)"
    else:
        what += f" on {device.type}"
    return f"{what}; cached in {path}"


def pretrained_tiny_clip(
    config: Optional[PretrainConfig] = None,
    *,
    device: Optional[Union[str, torch.device]] = None,
    cache_dir: Optional[Union[str, Path]] = None,
    retrain: bool = False,
    progress: bool = True,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> ClipBackbone:
    """The tiny CLIP pretrained on the toy world: load it if cached, else train and cache it.

    The cache file is :func:`checkpoint_path` (``config`` hashed into its name).
    Training the default config took 296 s on one CPU core (less time with
    more cores or a GPU).  With ``progress`` (default) a first use prints what it
    does, how long it should take and where the weights go, then a progress bar
    (a line every tenth of the run outside a terminal) and a closing line; a
    cached model loads silently.  Partial checkpoints go to :func:`partial_dir`
    every ``checkpoint_every`` steps and on Ctrl-C or SIGTERM (which raise
    :class:`~hyro_edu.training.runs.TrainingInterrupted`); the next call resumes
    from there, with the weights an uninterrupted run gives, and removes the
    folder once the weights are cached.  ``retrain`` trains from step 0 (a
    partial run is discarded, the cache file replaced at the end).  The returned backbone is in eval mode and has
    ``pretraining_record`` (see :func:`train_tiny_clip`).
    """
    config = PretrainConfig() if config is None else config
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    path = checkpoint_path(config, cache_dir)
    if path.is_file() and not retrain:
        backbone = _load_checkpoint(path, config, device)
        if backbone is not None:
            return backbone
    work = partial_dir(config, cache_dir)
    if retrain:
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        resume = _read_partial(work / _PARTIAL_FILE, config)
        print(_announcement(config, device, path, None if resume is None else resume["step"]), flush=True)
    backbone, record = train_tiny_clip(config, device=device, progress=progress, work_dir=work,
                                       checkpoint_every=checkpoint_every)
    state = {k: v.detach().cpu() for k, v in backbone.model.state_dict().items()}
    paths.atomic_torch_save({"format": FORMAT_VERSION, "key": config.key(), "config": config.to_dict(),
                  "state_dict": state, "record": record}, path)
    shutil.rmtree(work, ignore_errors=True)
    backbone.pretraining_record = record
    if progress:
        print(f"Pretrained the tiny CLIP in {_duration(record['train_seconds'])}; "
              "later calls load it from the cache", flush=True)
    return backbone
