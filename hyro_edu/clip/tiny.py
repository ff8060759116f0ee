"""The tiny CLIP: open_clip's own ``open_clip.CLIP`` class in a configuration small enough for a CPU.

It is what the book runs in ``cpu-small`` mode (:func:`hyro_edu.clip.weights.select_mode`), with
weights pretrained on the toy world by :mod:`hyro_edu.clip.pretraining` (tag ``"toyworld"``).
"""
from __future__ import annotations

import copy
from typing import Optional

import open_clip
import torch

__all__ = ["TINY_CLIP_NAME", "TINY_PRETRAINED", "TINY_CLIP_CONFIG", "build_tiny_clip"]

TINY_CLIP_NAME = "hyro-tiny"
TINY_PRETRAINED = "toyworld"

#: The tiny CLIP: keyword arguments of ``open_clip.CLIP``.  A ViT with 8×8 patches on
#: 64×64 images (an 8×8 grid, like ViT-B/16's 24×24 at 384 px in miniature), 4 blocks of
#: width 64 (2 heads of 32) in each tower, a 64-d joint embedding, captions of up to 24
#: tokens.  Most of its 3.4 M parameters sit in the 49,408-token embedding table that
#: open_clip's tokenizer needs.
TINY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 64, "patch_size": 8, "width": 64, "layers": 4,
        "head_width": 32, "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2,
        "layers": 4, "mlp_ratio": 2.0,
    },
}


def build_tiny_clip(config: Optional[dict] = None, *, seed: Optional[int] = None) -> open_clip.CLIP:
    """A randomly initialised ``open_clip.CLIP`` with :data:`TINY_CLIP_CONFIG` (or ``config``).

    ``seed`` (optional) fixes the initialisation.
    """
    cfg = copy.deepcopy(TINY_CLIP_CONFIG if config is None else config)
    if not isinstance(cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
        raise ValueError(
            f"config must be a dict with keys embed_dim, vision_cfg, text_cfg, got {config!r}"
        )
    if seed is None:
        return open_clip.CLIP(**cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**cfg)
