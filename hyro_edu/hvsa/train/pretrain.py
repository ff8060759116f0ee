r"""The toy world's pretrained ``toy_cnn``: the stand-in for the paper's ImageNet-pretrained backbones.

.. math::
    \min_{h,\,W}\ \mathbb E_{(x, y)}\ \mathrm{BCE}\big(W h(x),\ y_{\text{leaves}}\big)

over the toy world's *training* scenes: :math:`h` is ``toy_cnn``
(:func:`hyro_edu.hvsa.backbones.build_backbone`), :math:`W` a linear layer to the 54 leaf classes
(dropped afterwards), :math:`y_{\text{leaves}}` which leaf classes the scene shows.  Adam, learning
rate 2e-3, batch 64, ``steps`` steps, seeded by ``seed``.

Why: every backbone of HVSA's experiments starts from pretrained weights, or (ImCLEF07) is a fixed
feature extractor (:cite:`hvsa` Sec. 5.1).  Trained from scratch on the toy world, the CNN's
features barely depend on the image at initialisation (between-image standard deviation of the
encoder's tangent output 0.005 against a mean of 0.12, measured with the ``toy`` sizes), and the
head needs about 2,000 steps to leave the label-frequency plateau even without the VAE terms
(MAP 0.378 after 400 steps, 0.608 after 2,000; the frequency control is 0.376).  The pretrained
CNN removes that plateau, which is the backbone's problem and not the method's, and every
variant of an ablation starts from the same weights.  Only training scenes are used; the
evaluation scenes are never seen.

The weights are trained once and cached as
``$HYRO_EDU_CACHE/hvsa_toy/toy_cnn_pretrained_<key>.pt`` (written atomically; a damaged file is
trained again), ``<key>`` a digest of everything they depend on.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
import torch.nn.functional as F

from hyro_edu.core import checks, paths
from hyro_edu.hvsa.backbones import build_backbone
from hyro_edu.hvsa.train.config import HVSATrainConfig
from hyro_edu.core.images import CLIP_MEAN, CLIP_STD
from hyro_edu.hvsa.train.data import TensorData, toy_tensors

__all__ = ["PRETRAIN_LR", "PRETRAIN_BATCH", "pretrain_toy_cnn", "pretrained_toy_cnn"]

#: Adam's learning rate and the batch size of the pretraining.
PRETRAIN_LR = 2e-3
PRETRAIN_BATCH = 64


def pretrain_toy_cnn(images: torch.Tensor, leaves: torch.Tensor, *, steps: int, seed: int = 0,
                     progress: bool = False) -> dict:
    """Trains ``toy_cnn`` with a linear leaf classifier (module docstring) and returns the CNN's
    ``state_dict``.  ``images``: normalised float ``(N, 3, S, S)``; ``leaves``: ``(N, K)`` 0/1,
    which of the ``K`` leaf classes each image shows; ``steps`` >= 1 batches of 64 drawn without
    replacement from a generator seeded by ``seed``."""
    steps = checks.integer(steps, "steps", 1)
    if images.dim() != 4 or leaves.dim() != 2 or len(images) != len(leaves):
        raise ValueError(f"images must be (N, 3, S, S) and leaves (N, K) with the same N, got "
                         f"{tuple(images.shape)} and {tuple(leaves.shape)}")
    torch.manual_seed(seed)
    cnn = build_backbone("toy_cnn")
    classifier = torch.nn.Linear(cnn.out_dim, leaves.shape[1])
    opt = torch.optim.Adam(list(cnn.parameters()) + list(classifier.parameters()), lr=PRETRAIN_LR)
    rng = np.random.default_rng(seed)
    batch = min(PRETRAIN_BATCH, len(images))
    targets = leaves.float()
    cnn.train()
    for step in range(steps):
        idx = torch.from_numpy(rng.choice(len(images), batch, replace=False))
        loss = F.binary_cross_entropy_with_logits(classifier(cnn(images[idx])), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress and (step + 1) % max(1, steps // 5) == 0:
            print(f"  pretraining toy_cnn: step {step + 1}/{steps}, leaf BCE {float(loss):.4f}", flush=True)
    return {k: v.detach().clone() for k, v in cnn.state_dict().items()}


def pretrained_toy_cnn(config: HVSATrainConfig) -> dict:
    """The ``state_dict`` of ``toy_cnn`` pretrained for ``config.toy_pretrain_steps`` steps on the
    training scenes of ``config``'s toy world (module docstring), from the cache or trained now
    (about 15 ms a step on 2 cores) and cached.  The pretraining seed is 0 whatever
    ``config.seed``: every run of an ablation starts from the same CNN."""
    steps = checks.integer(config.toy_pretrain_steps, "toy_pretrain_steps", 1)
    spec = {"steps": steps, "seed": 0, "lr": PRETRAIN_LR, "batch": PRETRAIN_BATCH,
            "image_size": config.toy_image_size, "train": config.toy_train,
            "objects": list(config.toy_objects), "version": 1}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = paths.cache_dir() / "hvsa_toy" / f"toy_cnn_pretrained_{key}.pt"
    cached = paths.load_cached(path)
    if cached is not None:
        return cached
    scenes = toy_tensors("train", config.toy_train, image_size=config.toy_image_size,
                         objects=config.toy_objects)
    # normalised as the toy data module's batches are
    images = TensorData(scenes["images"], scenes["classes"], mean=CLIP_MEAN, std=CLIP_STD).__getitems__(
        list(range(len(scenes["images"]))))["input"]
    if config.progress:
        print(f"pretraining toy_cnn on {len(images)} toy training scenes for {steps} steps "
              f"(once; cached at {path})", flush=True)
    state = pretrain_toy_cnn(images, scenes["classes"], steps=steps, seed=0, progress=config.progress)
    paths.atomic_torch_save(state, path)
    return state
