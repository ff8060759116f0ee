r"""The Lightning task of tree alignment: the model, SGD with warm-up and cosine, the data module, evaluation.

.. math::
    \eta_t = \begin{cases} \eta_{\rm warm} & t < W \\
             \eta\,\tfrac12\big(1 + \cos(\pi\,(t - W)/(T - W))\big) & t \ge W \end{cases}

Training minimises :math:`w_{\rm mta}\mathcal L_{\rm DTL} + \lambda\mathcal L_{\rm NCL} +
\alpha L_{\rm align}` (:class:`hyro_edu.tree_alignment.model.TreeAlignmentModel`,
:cite:`wu2026modality`) with SGD and the schedule above: one warm-up epoch at the constant
``warmup_lr`` (official 1e-3) and then a **monotone** cosine to 0 over the remaining steps.  The
official code steps ``CosineAnnealingLR(T_max = epochs)`` once per iteration, which makes the rate
periodic over steps (design notes §2); this is a documented deviation.  The DTL's random cut of a
step comes from a generator seeded by ``(seed, step)``, so a resumed run draws what the
uninterrupted run draws.  Every step logs the loss terms, the learning rate and, for the
hyperbolic variants, the curvatures ``curv/c_i``, ``curv/c_t``, ``curv/c_m`` (to Lightning's CSV
logger, which keeps every ``min(50, steps/10)``-th step); the task also records the curvatures of
every step (``curvatures``, kept in the checkpoint), which the run writes to ``curvatures.csv`` for
a notebook to plot.

Evaluation (:func:`hyro_edu.tree_alignment.train.task.evaluate`): one score table per evaluation
tree (base, novel, full) from the trained prompts, then LA, HCA and MTA in percent
(:mod:`hyro_edu.hierarchy.taxonomic_metrics`, :cite:`wu2024protect`) with the tree's stored cuts,
and the standard deviation of the cut accuracies.
"""
from __future__ import annotations

import math
from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader

from hyro_edu.hierarchy import taxonomic_metrics as TM
from hyro_edu.hierarchy.tree_cuts import DEFAULT_RATES, sample_cuts
from hyro_edu.training.lightning import ConfigTask
from hyro_edu.training.stream import training_sampler
from hyro_edu.tree_alignment.model import TreeAlignmentModel
from hyro_edu.tree_alignment.train.config import TreeAlignmentTrainConfig
from hyro_edu.tree_alignment.train.data import TreeAlignmentData

__all__ = ["lr_factor", "build_model", "TreeAlignmentTask", "TreeAlignmentDataModule", "stored_cuts", "evaluate"]


def lr_factor(config: TreeAlignmentTrainConfig):
    """The multiplier of ``lr`` at step ``t`` (``LambdaLR``): ``warmup_lr / lr`` for ``t < W``, then
    ``(1 + cos(pi (t - W) / (T - W))) / 2`` (module docstring)."""
    T, W = config.total_steps, config.warmup_steps
    warm = config.warmup_lr / config.lr

    def factor(t: int) -> float:
        if t < W:
            return warm
        return 0.5 * (1 + math.cos(math.pi * min(t - W, T - W) / max(1, T - W)))

    return factor


def build_model(config: TreeAlignmentTrainConfig, tree, *, clip=None) -> TreeAlignmentModel:
    """:class:`hyro_edu.tree_alignment.model.TreeAlignmentModel` for ``config`` over ``tree``:
    the CLIP of ``clip_model`` / ``clip_pretrained`` (:func:`hyro_edu.clip.weights.load_clip`, on
    the CPU; the tiny CLIP's ``"toyworld"`` weights are cached after the first pretraining) or the
    given ``clip``, initialised from ``config.seed``."""
    if clip is None:
        from hyro_edu.clip.weights import load_clip

        torch.manual_seed(config.seed)  # random weights (clip_pretrained null) are a function of the seed
        clip = load_clip(config.clip_model, config.clip_pretrained, device="cpu")
    torch.manual_seed(config.seed)
    return TreeAlignmentModel(clip, tree, **config.model_kwargs())


class TreeAlignmentTask(ConfigTask):
    """Lightning wrapper: the loss of a training batch, SGD and the schedule.  ``losses`` lists the
    loss of every step this process ran; ``curvatures`` the ``(step, c_i, c_t, c_m)`` of every step
    of the run, earlier attempts included (kept in the checkpoint, so a resumed run has the whole
    trajectory).

    Checkpoints hold the trained tensors only: the frozen CLIP weights (600 MB for ViT-B/16) are
    left out and come back from ``clip_model`` / ``clip_pretrained`` when a run resumes (hence
    ``strict_loading = False``)."""

    def __init__(self, model: TreeAlignmentModel, config: TreeAlignmentTrainConfig):
        super().__init__(model, config)
        self.strict_loading = False  # the frozen CLIP is not in the checkpoint
        self.curvatures: list[tuple] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch["input"], batch["target"], generator=self.step_generator())
        for term in ("ce", "dtl", "ncl", "align", "align_image", "align_text", "align_cross"):
            if term in out:
                self.log(f"train/{term}", out[term].detach(), on_step=True, on_epoch=False)
        if "c_i" in out:
            values = tuple(float(out[k].detach()) for k in ("c_i", "c_t", "c_m"))
            for k, v in zip(("c_i", "c_t", "c_m"), values):
                self.log(f"curv/{k}", v, on_step=True, on_epoch=False)
            self.curvatures.append((int(self.trainer.global_step), *values))
        self.log("train/loss", out["loss"].detach(), prog_bar=True, on_step=True, on_epoch=False,
                 sync_dist=True)  # the mean over the processes (a no-op in one process)
        return out["loss"]

    def make_optimizer(self, params: list) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def lr_lambda(self):
        return lr_factor(self.config)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["curvatures"] = list(self.curvatures)
        frozen = {f"model.{n}" for n, p in self.model.named_parameters() if not p.requires_grad}
        frozen |= {f"model.{n}" for n, _ in self.model.named_buffers() if n.startswith("clip.model.")}
        state = checkpoint.get("state_dict", {})
        for name in [k for k in state if k in frozen]:
            del state[name]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.curvatures = [tuple(c) for c in checkpoint.get("curvatures", [])]


def _collate_batched(batch):
    return batch  # ImageTensors.__getitems__ (TaxonomicImages.__getitems__) returns the batch already


class TreeAlignmentDataModule(L.LightningDataModule):
    """The training loader: a :class:`~hyro_edu.training.stream.ResumableSampler` from
    ``global_step × batch_size`` on (a resumed run reads the batches the uninterrupted run reads;
    each process reads its share of every global batch,
    :func:`hyro_edu.training.stream.training_sampler`),
    ``num_workers`` worker processes (the full-size datasets decode their images lazily)."""

    def __init__(self, data: TreeAlignmentData, config: TreeAlignmentTrainConfig):
        super().__init__()
        self.data, self.config = data, config

    def train_dataloader(self) -> DataLoader:
        c = self.config
        sampler, per_device = training_sampler(len(self.data.train), self.trainer, batch_size=c.batch_size,
                                               max_steps=c.total_steps, seed=c.seed)
        return DataLoader(self.data.train, batch_size=per_device, sampler=sampler, drop_last=True,
                          collate_fn=_collate_batched, num_workers=c.num_workers)


def stored_cuts(tree, config: TreeAlignmentTrainConfig):
    """The evaluation cuts of ``tree``: :func:`hyro_edu.hierarchy.tree_cuts.sample_cuts` with
    ProTeCt's rates, ``eval_cuts_per_rate`` new cuts each (capped by the tree's number of cuts), seed 100."""
    from hyro_edu.hierarchy.tree_cuts import count_cuts

    per_rate = min(config.eval_cuts_per_rate, max(1, count_cuts(tree) // len(DEFAULT_RATES)))
    return sample_cuts(tree, DEFAULT_RATES, per_rate, seed=100)


@torch.no_grad()
def evaluate(model: TreeAlignmentModel, data: TreeAlignmentData, config: TreeAlignmentTrainConfig, *,
             cuts: Optional[dict] = None, device=None) -> dict:
    """LA, HCA, MTA (percent) and ``mta_std`` per evaluation tree: ``{"base": {...}, "novel": {...},
    "full": {...}}``, each with ``num_samples``.  ``cuts``: ``{tree name: cuts}`` (default: the
    evaluation set's own ``cuts``, the stored 25 of a full-size dataset, else
    :func:`hyro_edu.tree_alignment.train.task.stored_cuts`); at most ``config.eval_limit`` images per tree."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {}
    for name, ev in data.evals.items():
        tree = ev.tree
        text = model.encode_nodes(tree.param_names)
        n = len(ev.data) if config.eval_limit is None else min(config.eval_limit, len(ev.data))
        scores, labels = [], []
        for lo in range(0, n, config.eval_batch_size):
            batch = ev.data.__getitems__(list(range(lo, min(n, lo + config.eval_batch_size))))
            scores.append(model.scores(batch["input"].to(device), text).float().cpu())
            labels.append(batch["target"])
        s, y = torch.cat(scores), torch.cat(labels)
        tree_cuts = (cuts or {}).get(name) or getattr(ev, "cuts", None) or stored_cuts(tree, config)
        accs = TM.tree_cut_accuracies(s, y, tree, tree_cuts)
        out[name] = {"la": TM.leaf_accuracy(s, y, tree), "hca": TM.hierarchical_consistent_accuracy(s, y, tree),
                     "mta": float(accs.mean()), "mta_std": float(accs.std(correction=0)), "num_samples": n,
                     "num_cuts": len(tree_cuts)}
    model.train(was_training)
    return out
