r"""The Lightning task of HVSA: backbone + head, optimiser, learning-rate schedule, data module, evaluation.

Training minimises Eq. (12) of HVSA :cite:`hvsa` as :class:`hyro_edu.hvsa.head.HVSAHead`
computes it,

.. math::
    \mathcal L = \mathcal L_{CLS} + \alpha\,\mathcal L_{HM} + \beta\,(D_{KL} + \mathcal L_{RECON}),

with the terms ``components`` switches on, under Adam or SGD with momentum and one of the
schedules of :data:`hyro_edu.hvsa.train.config.LR_SCHEDULES` (:func:`lr_factor`).  The random
draws of a step (the posterior and label samples, the negative pairs, the pixels for KL and RECON)
come from a generator seeded by ``(seed, step)``, so a resumed run draws what the uninterrupted
run draws.  For pixel-level data the label maps are sampled to the backbone's feature resolution
(nearest neighbour) for the loss; evaluation upsamples the scores bilinearly to the labels.

Evaluation (:func:`evaluate`) with :mod:`hyro_edu.hierarchy.metrics`: image level MAP, CMAP, CV
(``closure_diag`` and ``edges``), MAP per level (finest first) and, for single-label data, the
top-1 error over the leaves; pixel level the mIoU per level of the
:class:`~hyro_edu.hierarchy.taxonomies.LevelTaxonomy` (level 1 the finest), each level predicted by
the arg-max of its own label scores (``level_pred="own_channels"``, a choice: the paper does not
say which rule HVSA uses).  Both also report the ``kl`` and ``hm`` terms on the first
``eval_batch_size`` evaluation samples (``None`` for a variant that does not train the term).
MAP, CMAP, CV and mIoU are fractions in [0, 1].
"""
from __future__ import annotations

import math
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from hyro_edu.core import checks
from hyro_edu.hierarchy import metrics as M
from hyro_edu.hvsa.backbones import build_backbone
from hyro_edu.hvsa.head import HVSAHead
from hyro_edu.hvsa.train.config import HVSATrainConfig
from hyro_edu.hvsa.train.data import HVSAData, downsample_labels
from hyro_edu.training.lightning import ConfigTask
from hyro_edu.training.stream import training_sampler

__all__ = ["lr_factor", "HVSAModel", "HVSATask", "HVSADataModule", "build_model", "evaluate"]


def lr_factor(config: HVSATrainConfig):
    r"""The multiplier of ``lr`` at step ``t`` (``LambdaLR``) for ``config.lr_schedule``:

    * ``warmup_cosine``: :math:`s_0 + (1 - s_0)\,t/W` for :math:`t < W`, then
      :math:`\tfrac12(1 + \cos(\pi (t - W)/(T - W)))`, with :math:`s_0` = ``warmup_start_lr / lr``
      (0 when unset) and :math:`W` = ``warmup_steps``;
    * ``cosine_clamped``: :math:`\min(1,\ s_0\,\tfrac12(1 + \cos(\pi t / T)))` (:math:`s_0` 1 when unset);
    * ``constant``: 1.
    """
    T, W = checks.integer(config.steps, "steps"), checks.integer(config.warmup_steps, "warmup_steps", 0)
    start = config.warmup_start_lr
    if config.lr_schedule == "constant":
        return lambda t: 1.0
    if config.lr_schedule == "cosine_clamped":
        s0 = 1.0 if start is None else start / config.lr
        return lambda t: min(1.0, s0 * 0.5 * (1 + math.cos(math.pi * min(t, T) / T)))
    s0 = 0.0 if start is None else start / config.lr

    def factor(t: int) -> float:
        if t < W:
            return s0 + (1 - s0) * t / W
        return 0.5 * (1 + math.cos(math.pi * min(t - W, T - W) / max(1, T - W)))

    return factor


class HVSAModel(torch.nn.Module):
    """``backbone`` then :class:`~hyro_edu.hvsa.head.HVSAHead`: ``forward(x, targets=None,
    generator=None)`` returns the head's dict (``scores``, the loss terms)."""

    def __init__(self, backbone: torch.nn.Module, head: HVSAHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, targets=None, *, generator=None) -> dict:
        features = self.backbone(x)
        if targets is not None and features.dim() == 4:
            targets = downsample_labels(targets, features.shape[-2:])
        return self.head(features, targets, generator=generator)


def build_model(config: HVSATrainConfig, tree, *, in_dim: Optional[int] = None) -> HVSAModel:
    """The backbone (:func:`hyro_edu.hvsa.backbones.build_backbone`) and head for ``config`` over
    the labels of ``tree`` (its non-root nodes), initialised from ``config.seed``; with
    ``config.toy_pretrain_steps > 0`` the toy CNN starts from
    :func:`hyro_edu.hvsa.train.pretrain.pretrained_toy_cnn`."""
    torch.manual_seed(config.seed)
    kwargs = {"in_dim": in_dim} if config.backbone == "identity" else {}
    backbone = build_backbone(config.backbone, pretrained=config.pretrained, **kwargs)
    if config.toy_pretrain_steps:
        from hyro_edu.hvsa.train.pretrain import pretrained_toy_cnn

        backbone.load_state_dict(pretrained_toy_cnn(config))
    torch.manual_seed(config.seed)  # the head's initialisation does not depend on the backbone's
    head = HVSAHead(backbone.out_dim, tree, **config.head_kwargs())
    return HVSAModel(backbone, head)


class HVSATask(ConfigTask):
    """Lightning wrapper: Eq. (12) on a training batch, the optimiser and the schedule.
    ``losses`` lists the loss of every step this process ran."""

    def __init__(self, model: HVSAModel, config: HVSATrainConfig):
        super().__init__(model, config)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch["input"], batch["target"], generator=self.step_generator())
        for term in ("cls", "kl", "recon", "hm"):
            if term in out:
                self.log(f"train/{term}", out[term].detach(), on_step=True, on_epoch=False)
        self.log("train/loss", out["loss"].detach(), prog_bar=True, on_step=True, on_epoch=False,
                 sync_dist=True)  # the mean over the processes (a no-op in one process)
        return out["loss"]

    def make_optimizer(self, params: list) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)

    def lr_lambda(self):
        return lr_factor(self.config)


def _collate_batched(batch):
    return batch  # TensorData.__getitems__ returns the batch already


class HVSADataModule(L.LightningDataModule):
    """The training loader: :class:`~hyro_edu.training.stream.ResumableSampler` from
    ``global_step × batch_size`` on, so a resumed run reads the batches the uninterrupted run reads;
    each process reads its share of every global batch
    (:func:`hyro_edu.training.stream.training_sampler`)."""

    def __init__(self, data: HVSAData, config: HVSATrainConfig):
        super().__init__()
        self.data, self.config = data, config

    def train_dataloader(self) -> DataLoader:
        c = self.config
        sampler, per_device = training_sampler(len(self.data.train), self.trainer, batch_size=c.batch_size,
                                               max_steps=c.steps, seed=c.seed)
        if self.data.batched:
            return DataLoader(self.data.train, batch_size=per_device, sampler=sampler, drop_last=True,
                              collate_fn=_collate_batched)
        return DataLoader(self.data.train, batch_size=per_device, sampler=sampler, drop_last=True,
                          num_workers=c.num_workers, persistent_workers=False)


# ----------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: HVSAModel, data: HVSAData, config: HVSATrainConfig, *, device=None) -> dict:
    """The metrics of ``model`` on ``data.test`` (module docstring); at most ``config.eval_limit``
    samples.  Image level: ``map``, ``cmap``, ``cv``, ``cv_edges``, ``map_per_level`` (finest
    first), ``kl``, ``hm`` (and ``top1_error`` for single-label data); pixel level:
    ``miou_levels`` (finest first), ``pixel_accuracy``, ``kl``, ``hm``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(data.test) if config.eval_limit is None else min(config.eval_limit, len(data.test))
    generator = torch.Generator().manual_seed(12345 + config.seed)
    pixel = data.levels is not None
    bs = 1 if pixel and not data.batched else config.eval_batch_size
    terms = {"kl": [], "hm": []}
    scores, targets, conf = [], [], None
    if pixel:
        levels = data.levels
        columns = [torch.tensor([v - 1 for v in nodes]) for nodes in levels.level_nodes]
        maps = [torch.tensor(m) for m in levels.level_maps]
        conf = [torch.zeros(len(c), len(c), dtype=torch.long) for c in columns]
    for lo in range(0, n, bs):
        items = list(range(lo, min(n, lo + bs)))
        if data.batched:
            batch = data.test.__getitems__(items)
        else:
            parts = [data.test[i] for i in items]
            batch = {k: torch.stack([p[k] for p in parts]) for k in parts[0]}
        x, y = batch["input"].to(device), batch["target"].to(device)
        # the loss terms on the first batch only (the KL of every pixel is costly); scores on all
        out = model(x, y, generator=generator) if lo == 0 else model(x)
        for term in terms:
            if term in out:
                terms[term].append((float(out[term]), len(items)))
        if not pixel:
            scores.append(out["scores"].float().cpu())
            targets.append(batch["target"].cpu())
            continue
        s = F.interpolate(out["scores"].float(), size=batch["classes"].shape[-2:], mode="bilinear",
                          align_corners=False).cpu()
        classes = batch["classes"].cpu()
        ignore = levels.ignore_index
        for li, (cols, m) in enumerate(zip(columns, maps)):
            pred = s[:, cols].argmax(1)
            target_l = M.map_to_level(classes, m, ignore_index=ignore)
            conf[li] += M.confusion_matrix(pred, target_l, len(cols), ignore_index=ignore)
    model.train(was_training)

    def mean_term(name):
        rows = terms[name]
        return sum(v * k for v, k in rows) / sum(k for _, k in rows) if rows else None

    out = {"kl": mean_term("kl"), "hm": mean_term("hm"), "num_samples": n}
    if pixel:
        mious = []
        for c in conf:
            iou = M.iou_from_confusion(c)
            kept = ~torch.isnan(iou)
            mious.append(float(iou[kept].mean()) if bool(kept.any()) else math.nan)
        out["miou_levels"] = mious
        total = conf[0].sum()
        out["pixel_accuracy"] = float(conf[0].diagonal().sum() / total) if total > 0 else math.nan
        return out
    s = torch.cat(scores)
    t = torch.cat(targets)
    taxonomy = model.head.taxonomy
    if t.dim() == 1:  # one leaf label index per image: path-closed vectors for the multi-label metrics
        from hyro_edu.hvsa.taxonomy import path_labels

        leaves = taxonomy.leaves
        position = torch.full((taxonomy.num_labels,), -1, dtype=torch.long)
        position[leaves] = torch.arange(len(leaves))
        out["top1_error"] = M.top1_error(s[:, leaves], position[t]) / 100
        t = path_labels(t, taxonomy).float()
    tree = data.tree
    out["map"] = M.mean_average_precision(s, t)
    out["cmap"] = M.coherent_mean_average_precision(s, t, tree)
    out["cv"] = M.constraint_violation(s, tree)
    out["cv_edges"] = M.constraint_violation(s, tree, pairs="edges")
    depths = taxonomy.depths
    per_level = []
    for depth in range(int(depths.max()), 0, -1):
        cols = (depths == depth).nonzero().flatten()
        per_level.append(M.mean_average_precision(s[:, cols], t[:, cols]))
    out["map_per_level"] = per_level
    return out
