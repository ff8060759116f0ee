r"""The Lightning task of the segmenter: loss, optimiser, schedule, data module, and evaluation.

The optimiser follows the official code (``train_net.py``'s ``build_optimizer`` and the released
configs of CAT-Seg :cite:`cho2024catseg`, HyperCLIP :cite:`peng2025hyperclip` and HyRo
:cite:`truong2026hyro`): AdamW with the decoder at ``lr`` and everything inside CLIP (the
adapters) at ``lr × clip_lr_multiplier`` (:func:`parameter_groups`), weight decay except on
normalisation layers, and detectron2's ``WarmupCosineLR`` (:func:`cosine_lambda`),

.. math::
    \eta_t = \eta\,\tfrac12\big(1 + \cos(\pi t / T)\big)\quad\text{after a linear warm-up.}

Evaluation: :func:`evaluate_toy` (open-vocabulary mIoU on toy scenes of all 54 classes) and
:func:`evaluate_benchmarks` (the official protocol, :func:`hyro_edu.segmentation.evaluation.evaluate`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from hyro_edu.clip.weights import load_clip
from hyro_edu.core import checks
from hyro_edu.core.distributed import shard
from hyro_edu.data.toyworld import BACKGROUND, ToyPixelDataset, ToyTransform, ToyWorld
from hyro_edu.segmentation.catseg import segmentation_loss
from hyro_edu.segmentation.evaluation import MeanIoU
from hyro_edu.segmentation.model import PROMPT_ENSEMBLES, OpenVocabSegmenter, build_segmenter
from hyro_edu.segmentation.train.config import SegTrainConfig
from hyro_edu.segmentation.train.data import CocoStuffTrainData, ToySegmentationData
from hyro_edu.training.lightning import StepLosses
from hyro_edu.training.stream import training_sampler

__all__ = [
    "cosine_lambda",
    "parameter_groups",
    "SegmentationTask",
    "SegmentationDataModule",
    "build_model",
    "build_task",
    "evaluate_toy",
    "evaluate_benchmarks",
]


def cosine_lambda(max_steps: int, warmup_steps: int = 0):
    r"""The factor of detectron2's ``WarmupCosineLR`` at step ``t``: linear warm-up (from 0.001), then
    :math:`\tfrac12(1 + \cos(\pi t / T))`."""
    max_steps = checks.integer(max_steps, "max_steps", 1)
    warmup_steps = checks.integer(warmup_steps, "warmup_steps", 0)

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
        self.step_losses = StepLosses()
        self.validations: list[tuple[int, float]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.segmenter(batch["image"], self.vocabulary)  # every training class, every step
        loss = segmentation_loss(logits.float(), batch["label"], len(self.vocabulary),
                                 loss=self.config.loss,
                                 exclude_ignored=self.config.exclude_ignored)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False,
                 sync_dist=True)  # the mean over the processes (a no-op in one process)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        loss = self.step_losses.add(self.trainer, outputs["loss"])
        if loss is None:  # between the micro-batches of one optimiser step
            return
        self.losses.append(loss)
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
                "train it again with --retrain (retrain=True in Python), or give this config a new name"
            )
        prefix = "segmenter."
        state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        self.segmenter.load_trainable_state_dict(state)  # raises unless the keys match exactly


class SegmentationDataModule(L.LightningDataModule):
    """The training loader: :class:`~hyro_edu.segmentation.train.data.ResumableSampler` from ``global_step × batch_size`` on, so a
    resumed run reads the batches the uninterrupted run reads; with several processes or
    accumulated micro-batches each process reads its share of every global batch
    (:func:`hyro_edu.training.stream.training_sampler`)."""

    def __init__(self, data: Dataset, config: SegTrainConfig):
        super().__init__()
        self.data, self.config = data, config

    def train_dataloader(self) -> DataLoader:
        c = self.config
        # from global_step × batch_size: resume where the checkpoint stopped
        sampler, per_device = training_sampler(len(self.data), self.trainer, batch_size=c.batch_size,
                                               max_steps=c.max_steps, seed=c.seed, shuffle=c.train_data != "toy")
        return DataLoader(self.data, batch_size=per_device, sampler=sampler, num_workers=c.num_workers,
                          drop_last=True, persistent_workers=False)


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
@torch.no_grad()
def evaluate_toy(segmenter: OpenVocabSegmenter, *, world: Optional[ToyWorld] = None, n_images: int = 200,
                 image_size: int = 64, batch_size: int = 25, split: str = "val") -> dict:
    """Open-vocabulary mIoU on toy-world scenes of *all* 54 classes, with all 54 names as vocabulary.

    Pixels of no object are ignored (as the benchmarks ignore unlabelled pixels).  Returns ``miou``
    (all classes that occur), ``seen_miou`` and ``unseen_miou`` (mean IoU over the seen / unseen
    classes that occur in the ground truth or the predictions), ``hiou`` (their harmonic mean),
    ``pixel_accuracy`` and the per-class ``iou`` (54,).  The logits are bilinearly upsampled to the
    image size before the arg-max.  In several processes (an initialised process group) each
    scores every ``W``-th image and the confusion matrices are summed
    (:class:`hyro_edu.segmentation.evaluation.MeanIoU`): every process must call it.
    """
    world = ToyWorld(seed=0) if world is None else world
    n_images = checks.integer(n_images, "n_images", 1)
    names = list(world.class_names)
    backbone = segmenter.backbone
    transform = ToyTransform(image_size, mean=backbone.mean.flatten().tolist(), std=backbone.std.flatten().tolist())
    data = ToyPixelDataset(world, n_images, split=split, classes="all", num_objects=(1, 3), transform=transform)
    metric = MeanIoU(len(names), ignore_index=BACKGROUND)
    was_training = segmenter.training
    segmenter.eval()
    device = backbone.device
    mine = list(shard(n_images))  # every image in one process; every W-th in each of W processes
    for batch in DataLoader(Subset(data, mine), batch_size=batch_size, shuffle=False):
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
