"""The six fine-tuning modes: trainable sets and counts, identity at initialisation, linear
forms."""
from __future__ import annotations

import warnings

import open_clip
import pytest
import torch
from torch.nn.utils import parametrize

from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.clip.tiny import build_tiny_clip
from hyro_edu.clip.finetune import MODES, FinetuneConfig, apply_finetuning
from hyro_edu.nn.hyperspherical import hyperspherical_energy

# The official code's trainable counts on ViT-B/16 (reference notes §1.2, §2.2, §3.2, §4.1).
OFFICIAL_COUNTS = {
    "frozen": 0,  # HyRo's "no radius, no rotation" row: only the decoder trains
    "attention": 20_447_232,
    "hyperclip": 5_898_240,
    "rotation": 11_796_480,
    "hyro": 17_694_720,
    "hclip": 7_867_824,
}
TINY = dict(scale_block=32, rotation_block=64, hclip_block=32)


def tiny_backbone(seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ClipBackbone(build_tiny_clip(seed=seed))


def perturbed_finetuning(mode, scale):
    """A tiny backbone under ``mode`` with every adapter parameter moved off its identity init."""
    backbone = tiny_backbone()
    ft = apply_finetuning(backbone, FinetuneConfig(mode=mode, **TINY))
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(scale * torch.randn_like(p))
    return backbone, ft


def trainable(*modules):
    seen = {}
    for m in modules:
        for name, p in m.named_parameters():
            if p.requires_grad:
                seen[id(p)] = (name, p)
    return list(seen.values())


@pytest.mark.parametrize("mode", MODES)
def test_vit_b16_trainable_counts_equal_the_official_code(mode):
    with torch.device("meta"):
        backbone = ClipBackbone(open_clip.CLIP(**open_clip.get_model_config("ViT-B-16")), name="ViT-B-16")
        ft = apply_finetuning(backbone, FinetuneConfig(mode=mode))
    assert ft.parameter_count() == OFFICIAL_COUNTS[mode]
    total = sum(p.numel() for _, p in trainable(backbone, ft))
    assert total == OFFICIAL_COUNTS[mode], "nothing outside the adapters may train"


ADAPTED = [m for m in MODES if m != "frozen"]


def test_frozen_mode_trains_nothing_and_is_the_pretrained_clip():
    """``frozen`` (HyRo's ablation row without S and R): 0 trainable CLIP parameters, no adapter
    registered, and the forward pass is bit for bit the untouched CLIP's -- unlike ``attention``,
    which trains Q/V copies (CAT-Seg's mode) that move with the optimiser."""
    images = torch.rand(2, 3, 64, 64)
    texts = ["a green triangle", "a yellow star"]
    # (requires_grad decides which attention kernel PyTorch picks, ~1e-6 apart: freeze the
    # reference too)
    reference = tiny_backbone().requires_grad_(False)
    with torch.no_grad():
        ref_img, ref_txt = reference.dense_features(images), reference.encode_text(texts)
    backbone = tiny_backbone()
    ft = apply_finetuning(backbone, FinetuneConfig(mode="frozen", **TINY))
    assert ft.parameter_count() == 0 and not list(ft.parameters())
    assert not any(p.requires_grad for p in backbone.parameters())
    layers = [a for t in ("text", "visual") for a in backbone.attention_layers(t)]
    assert not any(parametrize.is_parametrized(a) for a in layers)
    with torch.no_grad():
        img, txt = backbone.dense_features(images), backbone.encode_text(texts)
    assert torch.equal(img, ref_img) and torch.equal(txt, ref_txt)
    # the attention mode is not the same row: it has trainable CLIP tensors
    other = tiny_backbone()
    attention = apply_finetuning(other, FinetuneConfig(mode="attention", **TINY))
    assert attention.parameter_count() == 8 * 2 * 64 * 64


@pytest.mark.parametrize("mode", ADAPTED)
def test_only_adapters_train_and_receive_gradients(mode):
    backbone = tiny_backbone()
    ft = apply_finetuning(backbone, FinetuneConfig(mode=mode, **TINY))
    images = torch.rand(2, 3, 64, 64)
    with ft.shared_blocks():
        feats = backbone.dense_features(images)
        text = backbone.encode_text(["a red circle", "a blue square"])
    (feats.sum() + text.sum()).backward()
    params = trainable(backbone, ft)
    assert params and sum(p.numel() for _, p in params) == ft.parameter_count()
    for name, p in backbone.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in params)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_starts_as_the_identity(mode):
    """Identity initialisation: the fine-tuned CLIP computes what the frozen one did."""
    images = torch.rand(2, 3, 64, 64)
    texts = ["a green triangle", "a yellow star"]
    reference = tiny_backbone()
    with torch.no_grad():
        ref_img, ref_txt = reference.dense_features(images), reference.encode_text(texts)
    backbone = tiny_backbone()
    ft = apply_finetuning(backbone, FinetuneConfig(mode=mode, margin="dtype", **TINY))
    with torch.no_grad(), ft.shared_blocks():
        img, txt = backbone.dense_features(images), backbone.encode_text(texts)
    torch.testing.assert_close(img, ref_img, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(txt, ref_txt, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["hyperclip", "rotation", "hyro"])
def test_hyperbolic_modes_equal_their_linear_form_below_the_clip(mode):
    """W' = W (R S)^T for rows below the clipping norm (HyperCLIP/HyRo are linear until the clip)."""
    torch.manual_seed(0)
    backbone, ft = perturbed_finetuning(mode, 0.05)
    for tower in ("text", "visual"):
        adapters = ft.adapters[f"{tower}_1"]
        original = backbone.qkv_weights(tower, 1, original=True)
        adapted = backbone.qkv_weights(tower, 1)
        for name in ("q", "k", "v"):
            lin = getattr(adapters, name).linear_equivalent()
            w0 = getattr(original, name)
            torch.testing.assert_close(getattr(adapted, name), w0 @ lin.T, rtol=1e-4, atol=1e-5)


def test_rotation_keeps_every_row_norm():
    backbone, ft = perturbed_finetuning("rotation", 0.1)
    before, after = backbone.qkv_weights("text", 0, original=True), backbone.qkv_weights("text", 0)
    torch.testing.assert_close(after.q.norm(dim=1), before.q.norm(dim=1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after.q, before.q, atol=1e-3)


def test_hclip_keeps_the_hyperspherical_energy_of_text_qkv():
    """Text blocks go through Cayley: W·R keeps the angles between neurons (hyperspherical energy)."""
    backbone, ft = perturbed_finetuning("hclip", 0.05)
    before, after = backbone.qkv_weights("text", 2, original=True), backbone.qkv_weights("text", 2)
    for name in ("q", "k", "v"):
        e0 = hyperspherical_energy(getattr(before, name))
        e1 = hyperspherical_energy(getattr(after, name))
        assert abs(e1 - e0) / e0 < 1e-5
        assert not torch.allclose(getattr(after, name), getattr(before, name), atol=1e-4)


def test_shared_blocks_give_the_same_result_as_per_layer_computation():
    backbone, ft = perturbed_finetuning("hclip", 0.05)
    with torch.no_grad():
        images = torch.rand(1, 3, 64, 64)
        plain = backbone.dense_features(images)
        with ft.shared_blocks():
            shared = backbone.dense_features(images)
    torch.testing.assert_close(plain, shared)


def test_bad_input():
    with pytest.raises(ValueError, match="mode must be one of"):
        FinetuneConfig(mode="lora")
    with pytest.raises(ValueError, match="c_vision must be a number > 0"):
        FinetuneConfig(c_vision=0.0)
    with pytest.raises(ValueError, match="margin must be one of"):
        FinetuneConfig(margin="none")
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match="scale_block must divide the feature dimension 64"):
        apply_finetuning(backbone, FinetuneConfig(mode="hyperclip", scale_block=48))
    backbone = tiny_backbone()
    apply_finetuning(backbone, FinetuneConfig(mode="attention"))
    with pytest.raises(ValueError, match="already carries adapters"):
        apply_finetuning(backbone, FinetuneConfig(mode="attention"))
    with pytest.raises(ValueError, match="backbone must be a hyro_edu.clip.backbone.ClipBackbone"):
        apply_finetuning(torch.nn.Linear(2, 2), FinetuneConfig())
