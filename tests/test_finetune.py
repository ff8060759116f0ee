"""The six fine-tuning modes: trainable sets and counts, identity at initialisation, linear
forms; block sizes derived from the backbone; config checks; a failed call changes nothing."""
from __future__ import annotations

import warnings

import open_clip
import pytest
import torch
from torch.nn.utils import parametrize

from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.clip.tiny import build_tiny_clip
from hyro_edu.clip.finetune import (
    MODES,
    RELEASED_BLOCKS,
    FinetuneConfig,
    apply_finetuning,
    default_block_sizes,
)
from hyro_edu.nn.hyperspherical import hyperspherical_energy

# Trainable counts on ViT-B/16 of the modules in the released code: CAT-Seg's Q/V copies
# (cvlab-kaist/CAT-Seg, cat_seg/third_party/model_vpt.py), HyperCLIP's and HyRo's block matrices
# (SJTU-DeepVisionLab/HyperCLIP and tmhoanggg/HyRo, cat_seg/third_party/model_hyperbolic.py:
# S in 128-blocks, R in 256-blocks), H-CLIP's shared tensor and relation maps (ZhaoYi-10-13/HPS-Seg,
# cat_seg/third_party/oft_se_qkv_relation_vision_train_ortho_relation_free_half.py); written out
# from those shapes (:cite:`cho2024catseg`, :cite:`peng2025hyperclip`, :cite:`truong2026hyro`,
# :cite:`peng2025hclip`).
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
        ft = apply_finetuning(backbone, FinetuneConfig(mode=mode))  # block sizes derived
    assert ft.parameter_count() == OFFICIAL_COUNTS[mode]
    blocks = (ft.config.scale_block, ft.config.rotation_block, ft.config.hclip_block)
    assert blocks == (128, 256, 128)  # the released code's sizes: nothing changes on ViT-B/16
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
    with pytest.raises(ValueError, match="c_vision must be finite and > 0"):
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


# ----------------------------------------------------------------------------
# block sizes from the backbone
# ----------------------------------------------------------------------------
def test_default_block_sizes_keep_the_released_values_on_vit_b16_and_vit_l14():
    released = {"scale_block": 128, "rotation_block": 256, "hclip_block": 128}
    assert RELEASED_BLOCKS == released
    assert default_block_sizes(512, 768) == released  # ViT-B/16: text 512, vision 768
    assert default_block_sizes(768, 1024) == released  # ViT-L/14
    # the tiny CLIP (64, 64): the released code's 4 S-blocks, 2 R-blocks, 4 H-CLIP blocks per tower
    assert default_block_sizes(64, 64) == {"scale_block": 16, "rotation_block": 32, "hclip_block": 16}


@pytest.mark.parametrize("widths", [(64, 64), (512, 768), (768, 1024), (96, 64), (100, 60), (7, 5),
                                    (1024, 1280), (384, 576)])
def test_default_block_sizes_follow_the_documented_rule(widths):
    """b = the largest common divisor of both widths at or below b_code·min(1, min(d)/512)."""
    d_t, d_v = widths
    sizes = default_block_sizes(d_t, d_v)
    for name, code in RELEASED_BLOCKS.items():
        cap = max(1, code * min(d_t, d_v, 512) // 512)
        want = max(b for b in range(1, cap + 1) if d_t % b == 0 and d_v % b == 0)
        assert sizes[name] == want, name
        assert d_t % sizes[name] == 0 and d_v % sizes[name] == 0


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_builds_on_the_tiny_clip_with_the_defaults(mode):
    """``FinetuneConfig(mode=mode)`` on the 64-wide tiny CLIP: derived blocks 16, 32, 16; explicit
    values are kept; the counts follow the derived blocks (4 layers per tower)."""
    backbone = tiny_backbone()
    ft = apply_finetuning(backbone, FinetuneConfig(mode=mode))
    assert (ft.config.scale_block, ft.config.rotation_block, ft.config.hclip_block) == (16, 32, 16)
    counts = {
        "frozen": 0,
        "attention": 8 * 2 * 64 * 64,
        "hyperclip": 8 * 3 * 4 * 16 * 16,
        "rotation": 8 * 3 * 2 * 32 * 32,
        "hyro": 8 * 3 * (4 * 16 * 16 + 2 * 32 * 32),
        "hclip": 16 * 16 * 16 * 8 + 4 * 8 * 8 + 16 * 16,  # (b, b, 4L, K), L K x K maps, 4L x 4L
    }
    assert ft.parameter_count() == counts[mode]
    explicit = apply_finetuning(tiny_backbone(), FinetuneConfig(mode=mode, scale_block=64))
    assert explicit.config.scale_block == 64 and explicit.config.rotation_block == 32


# ----------------------------------------------------------------------------
# the config checks every field, under its own name
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, match", [
    ("mode", "HyRo",
     r"mode must be one of \('frozen', 'attention', 'hyperclip', 'rotation', 'hyro', 'hclip'\), got 'HyRo'"),
    ("c_text", "1", "c_text must be a number > 0"),
    ("c_text", float("inf"), "c_text must be finite and > 0"),
    ("c_vision", -1.0, "c_vision must be finite and > 0"),
    ("c_vision", torch.tensor(0.1), "c_vision must be a number > 0"),
    ("scale_block", 0, r"scale_block must be an integer >= 1, got 0"),
    ("rotation_block", 32.0, r"rotation_block must be an integer >= 1, got 32.0"),
    ("hclip_block", True, r"hclip_block must be an integer >= 1, got True"),
    ("margin", "none", r"margin must be one of \('dtype', 'official'\), got 'none'"),
    ("hclip_relation", "offical",
     r"hclip_relation must be one of \('official', 'gated', 'tproduct', 'none'\), got 'offical'"),
    ("hclip_vision_free", -3, r"hclip_vision_free must be an integer >= 0, got -3"),
    ("hclip_vision_free", 1.5, r"hclip_vision_free must be an integer >= 0, got 1.5"),
])
def test_config_checks_every_field_at_construction(field, value, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(mode="hclip", **{field: value}) if field != "mode" else FinetuneConfig(mode=value)


def test_hclip_arguments_that_need_the_backbone_are_named_as_the_user_typed_them():
    with pytest.raises(ValueError, match=r"hclip_vision_free must be an integer in \[0, 4\]"):
        apply_finetuning(tiny_backbone(), FinetuneConfig(mode="hclip", hclip_vision_free=5))
    with pytest.raises(ValueError, match="hclip_block must divide the feature dimension 64"):
        apply_finetuning(tiny_backbone(), FinetuneConfig(mode="hclip", hclip_block=48))
    ft = apply_finetuning(tiny_backbone(), FinetuneConfig(mode="hclip", hclip_vision_free=4,
                                                          hclip_relation="gated"))
    assert ft.relation.relation == "gated" and bool(ft.relation.free.any())


# ----------------------------------------------------------------------------
# a failed call leaves the backbone as it was
# ----------------------------------------------------------------------------
def backbone_state(backbone):
    """requires_grad of every parameter, train/eval of every module, the parametrized tensors,
    and the identity and values of every parameter."""
    return (
        {n: p.requires_grad for n, p in backbone.named_parameters()},
        {n: m.training for n, m in backbone.named_modules()},
        sorted((n, t) for n, m in backbone.named_modules() if parametrize.is_parametrized(m)
               for t in m.parametrizations),
        {n: (id(p), p.detach().clone()) for n, p in backbone.named_parameters()},
    )


def assert_same_state(backbone, state):
    grads, modes, params, tensors = backbone_state(backbone)
    assert grads == state[0]
    assert modes == state[1]
    assert params == state[2] == []
    assert tensors.keys() == state[3].keys()
    for n, (i, t) in tensors.items():
        assert i == state[3][n][0] and torch.equal(t, state[3][n][1]), n


def mixed_backbone():
    """A tiny backbone in eval mode with one tower frozen: a state a freeze would visibly change."""
    backbone = tiny_backbone().eval()
    backbone.model.visual.transformer.resblocks[1].train()
    backbone.model.transformer.requires_grad_(False)
    return backbone


@pytest.mark.parametrize("mode, bad", [("hyperclip", dict(scale_block=48)),
                                       ("rotation", dict(rotation_block=96)),
                                       ("hclip", dict(hclip_vision_free=9))])
def test_a_rejected_config_leaves_the_backbone_as_it_was(mode, bad):
    backbone = mixed_backbone()
    state = backbone_state(backbone)
    with pytest.raises(ValueError):
        apply_finetuning(backbone, FinetuneConfig(mode=mode, **bad))
    assert_same_state(backbone, state)
    apply_finetuning(backbone, FinetuneConfig(mode=mode))  # the corrected call works


@pytest.mark.parametrize("mode", ADAPTED)
def test_a_failure_half_way_through_registration_is_undone(mode, monkeypatch):
    """Registration fails at the third vision layer, after the text tower and two vision layers
    (and, for hclip, their out_proj) were re-parametrised: everything is undone."""
    backbone = mixed_backbone()
    state = backbone_state(backbone)
    register = type(backbone).register_qkv_adapter
    calls = []

    def failing(self, tower, layer, adapter):
        calls.append((tower, layer))
        if (tower, layer) == ("visual", 2):
            raise RuntimeError("simulated failure")
        register(self, tower, layer, adapter)

    monkeypatch.setattr(type(backbone), "register_qkv_adapter", failing)
    with pytest.raises(RuntimeError, match="simulated failure"):
        apply_finetuning(backbone, FinetuneConfig(mode=mode))
    assert len(calls) == 7  # 4 text layers, then visual 0, 1, 2
    assert_same_state(backbone, state)
    monkeypatch.undo()
    ft = apply_finetuning(backbone, FinetuneConfig(mode=mode))
    assert ft.parameter_count() > 0


def test_an_hclip_backbone_with_only_out_proj_left_is_still_adapted():
    """``remove_qkv_adapters`` leaves H-CLIP's out_proj parametrization: a second call must not
    stack another one on it."""
    backbone = tiny_backbone()
    apply_finetuning(backbone, FinetuneConfig(mode="hclip"))
    backbone.remove_qkv_adapters()
    with pytest.raises(ValueError, match="already carries adapters"):
        apply_finetuning(backbone, FinetuneConfig(mode="hclip"))
