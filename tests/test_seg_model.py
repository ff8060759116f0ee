"""The open-vocabulary segmenter: shapes, class equivariance, trainable state, linear forms, training.

Everything runs on the tiny CLIP (4 blocks of width 64 per tower, 8-px patches) with block sizes
that divide 64; one test builds a randomly initialised ViT-B/16 for its shapes and counts.
"""
from __future__ import annotations

import math
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from hyro_edu import catseg as CS
from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.clip.tiny import TINY_CLIP_NAME, build_tiny_clip
from hyro_edu.clip.finetune import MODES, TOWERS, FinetuneConfig, apply_finetuning
from hyro_edu.clip.weights import load_clip
from hyro_edu.nn.hyperbolic_adapter import clip_threshold
import hyro_edu.segmentation.model as seg_model
from hyro_edu.segmentation.model import (
    CATSEG_TEMPLATE,
    IMAGENET_TEMPLATES,
    PROMPT_ENSEMBLES,
    OpenVocabSegmenter,
    build_segmenter,
)
from hyro_edu.segmentation.evaluation import sliding_window_inference
from hyro_edu.data.toyworld import ToyPixelDataset, ToyWorld

TINY = dict(scale_block=32, rotation_block=64, hclip_block=32)
HYPERBOLIC = ("hyperclip", "rotation", "hyro")
NAMES = ["red circle", "green ring", "blue square", "yellow star", "purple triangle", "white diamond"]
WORLD = ToyWorld()

# Trainable CLIP parameters of the tiny model (4 layers per tower, width 64 in both), written out:
# attention: W_q and W_v (64 x 64) per layer; hyperclip: 2 scaling blocks of 32^2 for each of
# Q, K, V; rotation: one 64^2 Θ for each of Q, K, V; hyro: both; hclip: the (b, b, 4L, K) tensor
# with b = 32, 4L = 16 slices and K = 64/32 + 64/32 = 4 blocks, the per-layer K x K maps and
# the 4L x 4L map of the official relation.
TINY_CLIP_COUNTS = {
    "frozen": 0,
    "attention": 8 * 2 * 64 * 64,
    "hyperclip": 8 * 3 * 2 * 32 * 32,
    "rotation": 8 * 3 * 64 * 64,
    "hyro": 8 * 3 * (2 * 32 * 32 + 64 * 64),
    "hclip": 32 * 32 * 16 * 4 + 4 * 4 * 4 + 16 * 16,
}


def tiny_backbone(seed: int = 0) -> ClipBackbone:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ClipBackbone(build_tiny_clip(seed=seed), name=TINY_CLIP_NAME)


def tiny_segmenter(mode: str, *, seed: int = 0, **kwargs) -> OpenVocabSegmenter:
    """The tiny segmenter on the frozen CLIP ``build_tiny_clip(seed=0)``; ``seed`` fixes the decoder."""
    backbone = tiny_backbone()
    torch.manual_seed(seed)
    return build_segmenter(backbone, FinetuneConfig(mode=mode, **TINY), **kwargs)


def perturb_adapters(seg: OpenVocabSegmenter, scale: float, seed: int) -> None:
    """Move every adapter parameter away from its (identity) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in seg.finetuning.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def images(b: int = 2, size=(64, 64), seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, *size, generator=torch.Generator().manual_seed(seed))


def rotation_and_scaling(adapter) -> tuple[torch.Tensor, torch.Tensor]:
    """``R`` and ``S`` (float64) written out from the raw parameters, not through the library.

    ``S = diag(S_1, ..., S_K)``; ``R = diag(R_1, ..., R_K)``, ``R_k = (I + A_k)(I - A_k)^{-1}`` with
    ``A_k = Θ_k - Θ_k^T`` (the two factors commute, so this is ``solve(I - A, I + A)``).
    """
    eye = torch.eye(adapter.dim, dtype=torch.float64)
    s = eye if adapter.scale is None else torch.block_diag(*adapter.scale.detach().double())
    if adapter.theta is None:
        return eye, s
    blocks = []
    for theta in adapter.theta.detach().double():
        a = theta - theta.T
        i = torch.eye(a.shape[0], dtype=torch.float64)
        blocks.append(torch.linalg.solve(i - a, i + a))
    return torch.block_diag(*blocks), s


def untouched(backbone: ClipBackbone) -> bool:
    """Nothing frozen, no adapter registered: what a fresh backbone looks like."""
    layers = [a for tower in TOWERS for a in backbone.attention_layers(tower)]
    return all(p.requires_grad for p in backbone.parameters()) and not any(
        parametrize.is_parametrized(a) for a in layers
    )


# ----------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("num_classes", [1, 3, 7])
def test_tiny_output_shape(num_classes, training):
    seg = tiny_segmenter("hyro").train(training)
    out = seg(images(2), WORLD.class_names[:num_classes])
    assert out.shape == (2, num_classes, 32, 32)
    assert torch.isfinite(out).all()


def test_non_square_images_give_a_non_square_map():
    seg = tiny_segmenter("attention").eval()
    with torch.no_grad():
        out = seg(images(1, (64, 96)), NAMES[:2])  # an 8 x 12 patch grid, windows of 4
    assert out.shape == (1, 2, 32, 48)


def test_more_classes_than_pad_len_are_truncated():
    """54 classes, pad_len = 48: per image exactly 6 classes are dropped, with the official logit -100."""
    seg = tiny_segmenter("hyro", decoder_overrides=dict(pad_len=48)).eval()
    names = WORLD.class_names
    assert len(names) == 54
    with torch.no_grad():
        out = seg(images(2), names)
    assert out.shape == (2, len(names), 32, 32)
    dropped = (out == CS.DROPPED_CLASS_LOGIT).flatten(2).all(dim=2)  # (B, T)
    assert dropped.sum(dim=1).tolist() == [6, 6]


def test_vit_b16_segmenter_shape_and_counts():
    """ViT-B/16 at 384 px: a 24 x 24 grid gives (B, T, 96, 96); blocks 3 and 7 guide the decoder.

    The trainable counts are the official code's: CAT-Seg's Q/V fine-tuning (20,447,232) and its
    decoder sized from the backbone (4,668,641), nothing else.  (``attention`` mode: the cheapest
    forward on a CPU; the adapter counts of every mode are tested in ``test_finetune.py``.)
    """
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.CLIP(**open_clip.get_model_config("ViT-B-16"))
    seg = build_segmenter(ClipBackbone(model, name="ViT-B-16"), "attention").eval()
    assert seg.guidance_blocks == (3, 7) and seg.decoder.stage_layers == (3, 7)
    assert seg.parameter_counts() == {"clip": 20_447_232, "decoder": 4_668_641, "total": 25_115_873}
    with torch.no_grad():
        out = seg(torch.randn(1, 3, 384, 384), ["sky", "wall, brick wall"])
    assert out.shape == (1, 2, 96, 96) and torch.isfinite(out).all()


def test_forward_pixels_normalises_0_255_images():
    """0-255 floats (the sliding window's) and uint8 pixels take the same path:
    ``forward(normalize_images(images / 255))``; other dtypes are a TypeError."""
    seg = tiny_segmenter("rotation").eval()
    pixels = 255 * torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        direct = seg(seg.backbone.normalize_images(pixels / 255), NAMES[:3])
        torch.testing.assert_close(seg.forward_pixels(pixels, NAMES[:3]), direct)
        as_uint8 = pixels.round().to(torch.uint8)
        torch.testing.assert_close(seg.forward_pixels(as_uint8, NAMES[:3]),
                                   seg.forward_pixels(as_uint8.float(), NAMES[:3]))
    for bad in (pixels.to(torch.int32), pixels > 128):
        with pytest.raises(TypeError, match="images must be a uint8 or float tensor"):
            seg.forward_pixels(bad, NAMES[:3])
    with pytest.raises(TypeError, match="images must be a uint8 or float tensor"):
        seg.forward_pixels(pixels.tolist(), NAMES[:3])


def test_forward_rejects_images_it_cannot_interpret():
    """``forward`` takes normalised floats only: uint8 pixels used to pass silently as if they
    were normalised values."""
    seg = tiny_segmenter("attention").eval()
    pixels = (255 * torch.rand(1, 3, 64, 64)).to(torch.uint8)
    for bad in (pixels, pixels.long(), pixels > 0):
        with pytest.raises(TypeError, match=r"images must be a float tensor .* normalised .*predict\(\)"):
            seg(bad, NAMES[:2])
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        seg(pixels.tolist(), NAMES[:2])


def test_predict_takes_uint8_or_unit_floats_and_returns_class_indices():
    """``predict``: uint8 and the same image as [0, 1] floats give the same (B, H, W) int64 indices,
    the argmax of the logits of ``forward`` on the normalised image resized to (H, W); one
    image (3, H, W) gives (H, W); the train/eval mode is restored; 0-255 floats are rejected."""
    seg = tiny_segmenter("hyro")
    perturb_adapters(seg, 0.02, seed=9)
    pixels = (255 * torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))).to(torch.uint8)
    names = NAMES[:4]
    seg.train()
    labels = seg.predict(pixels, names)
    assert seg.training  # restored
    assert labels.shape == (2, 64, 96) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) < len(names)
    assert len(labels.unique()) > 1  # not vacuous: several classes win somewhere
    seg.eval()
    with torch.no_grad():
        logits = seg(seg.backbone.normalize_images(pixels / 255.0), names)
    want = F.interpolate(logits, size=(64, 64 * 3 // 2), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(labels, want)
    assert torch.equal(seg.predict(pixels.float() / 255, names), labels)
    assert torch.equal(seg.predict(pixels[1], names), labels[1])
    assert seg.predict(pixels, names, output_size=(16, 24)).shape == (2, 16, 24)
    assert not seg.training
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\] as floats"):
        seg.predict(pixels.float(), names)
    with pytest.raises(TypeError, match="images must be uint8"):
        seg.predict(pixels.long(), names)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\) or \(3, H, W\)"):
        seg.predict(pixels[:, :1], names)


def test_prompts_and_the_text_cache():
    seg = tiny_segmenter("hclip")
    # CAT-Seg's rule: the first synonym before ", "; whitespace is kept (the tokenizer drops it)
    assert seg.prompts(["wall, brick wall, stone wall", " sky ", "a,b"]) == [
        CATSEG_TEMPLATE.format("wall"),
        CATSEG_TEMPLATE.format(" sky "),
        CATSEG_TEMPLATE.format("a,b"),
    ]
    seg.eval()
    with torch.no_grad():
        computed = seg.text_embeddings(NAMES[:3])
        first = seg.text_embeddings(NAMES[:3])
        assert seg.text_embeddings(NAMES[:3]) is first  # cached in eval mode
        torch.testing.assert_close(first, computed, rtol=0, atol=0)
        assert seg.text_embeddings(NAMES[:2]) is not first
        seg.train()
        assert seg.text_embeddings(NAMES[:3]) is not first  # not in training mode
        seg.eval()
        again = seg.text_embeddings(NAMES[:3])
    assert again is not first  # train() cleared the cache
    torch.testing.assert_close(again, first)
    assert first.shape == (3, 1, seg.backbone.embed_dim)  # (T, P, D) with one template
    torch.testing.assert_close(first.norm(dim=-1), torch.ones(3, 1))


# ----------------------------------------------------------------------------
# prompt ensembles (P > 1) and the CLIP input resolution
# ----------------------------------------------------------------------------
def test_imagenet_templates_are_catseg_s_80():
    """CAT-Seg's ``IMAGENET_TEMPLATES`` (``imagenet_templates.py``) = CLIP's 80 ImageNet templates;
    first and last entries as that file lists them."""
    assert len(IMAGENET_TEMPLATES) == 80 == len(set(IMAGENET_TEMPLATES))
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
    assert IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert PROMPT_ENSEMBLES == {"single": (CATSEG_TEMPLATE,), "imagenet": IMAGENET_TEMPLATES}


@pytest.mark.parametrize("p", [1, 3])
def test_prompt_ensemble_end_to_end(p):
    """P templates: prompts class by class, text features (T, P, D) with each prompt the unit
    embedding of its own text, a decoder with P prompt channels, logits (B, T, 32, 32), and
    gradients reaching the adapters through every template."""
    templates = IMAGENET_TEMPLATES[:p]
    seg = tiny_segmenter("hyro", template=templates)
    assert seg.decoder.prompt_channels == seg.prompt_channels == p and seg.templates == templates
    names = ["wall, brick wall", "sky"]
    prompts = seg.prompts(names)
    assert prompts == [t.format(n) for n in ("wall", "sky") for t in templates]
    text = seg.text_embeddings(names)
    assert text.shape == (2, p, seg.backbone.embed_dim)
    with torch.no_grad():
        direct = seg.backbone.encode_text(prompts, normalize=True)
    torch.testing.assert_close(text.detach().reshape(2 * p, -1), direct, rtol=1e-5, atol=1e-6)
    out = seg(images(2), names)
    assert out.shape == (2, 2, 32, 32) and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [q.grad for n, q in seg.trainable_named_parameters()
             if n.startswith("finetuning.adapters.text_")]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_an_ensemble_of_one_template_repeated_equals_the_single_template():
    """P = 3 copies of one template, with the cost embedding's weights split in three, computes
    exactly what P = 1 computes: the P channels reach the decoder and nothing else changes."""
    single = tiny_segmenter("hyro", seed=0)
    triple = tiny_segmenter("hyro", seed=0, template=[CATSEG_TEMPLATE] * 3)
    perturb_adapters(single, 0.02, seed=8)
    triple.finetuning.load_state_dict(single.finetuning.state_dict())
    state = single.decoder.state_dict()
    state["cost_embed.weight"] = state["cost_embed.weight"].repeat(1, 3, 1, 1) / 3
    triple.decoder.load_state_dict(state)
    single.eval()
    triple.eval()
    x = images(2)
    with torch.no_grad():
        want = single(x, NAMES[:4])
        torch.testing.assert_close(triple(x, NAMES[:4]), want, rtol=1e-4, atol=1e-5)
        # and not vacuous: distinct templates give another result
        other = tiny_segmenter("hyro", seed=0, template=IMAGENET_TEMPLATES[:3])
        other.finetuning.load_state_dict(single.finetuning.state_dict())
        other.decoder.load_state_dict(state)
        assert (other.eval()(x, NAMES[:4]) - single(x, NAMES[:4])).abs().max() > 1e-3


def test_clip_resolution_resizes_the_images_before_clip():
    """CAT-Seg's clip_resolution: 96-px inputs resized to 64 give the 8 x 8 grid (32 x 32 logits)
    and the logits of the pre-resized 64-px image; without it the grid follows the input
    (12 x 12)."""
    seg = tiny_segmenter("rotation", clip_resolution=64).eval()
    plain = tiny_segmenter("rotation").eval()
    plain.load_trainable_state_dict(seg.trainable_state_dict())
    x = images(1, (96, 96))
    with torch.no_grad():
        out = seg(x, NAMES[:2])
        assert out.shape == (1, 2, 32, 32) and plain(x, NAMES[:2]).shape == (1, 2, 48, 48)
        small = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, plain(small, NAMES[:2]))
        torch.testing.assert_close(seg(small, NAMES[:2]), out)  # at the resolution: unchanged


def test_vit_l14_336_builds_with_the_official_architecture():
    """ViT-L/14@336 on PyTorch's meta device (no weights, no memory): guidance blocks 7 and 15, the
    decoder fed by a 768-d joint space and the 1024-wide tower, HyRo's trainable counts from the
    released code's shapes (``tmhoanggg/HyRo``, ``cat_seg/third_party/model_hyperbolic.py``: S in
    128-blocks and R in 256-blocks, 3·D·128 and 3·D·256 per layer; text 12 × 768, vision
    24 × 1024; the default block sizes derived from these widths are the same),
    and CAT-Seg's ViT-L decoder (:func:`test_catseg.test_vit_l14_decoder_...`: 5,782,753)."""
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = open_clip.CLIP(**open_clip.get_model_config("ViT-L-14-336"))
        backbone = ClipBackbone(model, name="ViT-L-14-336")
        seg = build_segmenter(backbone, "hyro", clip_resolution=336)
    assert backbone.patch_size == 14
    assert (backbone.num_layers("visual"), backbone.num_layers("text")) == (24, 12)
    assert seg.guidance_blocks == (7, 15) and seg.decoder.intermediate_layers == (7, 15)
    assert (seg.decoder.embed_dim, seg.decoder.vision_width) == (768, 1024)
    assert seg.decoder.upsample1.in_channels == seg.decoder.upsample2.in_channels == 1024
    assert seg.clip_resolution == 336 and 336 // 14 == 24  # the 24 x 24 grid CAT-Seg hard-codes
    scaling = 3 * 128 * (12 * 768 + 24 * 1024)
    rotation = 3 * 256 * (12 * 768 + 24 * 1024)
    assert (scaling, rotation) == (12_976_128, 25_952_256)  # 12.98M and 25.95M
    assert seg.parameter_counts() == {"clip": scaling + rotation, "decoder": 5_782_753,
                                      "total": scaling + rotation + 5_782_753}


# ----------------------------------------------------------------------------
# the frozen mode
# ----------------------------------------------------------------------------
def test_frozen_segmenter_sees_the_pretrained_clip_and_trains_only_the_decoder():
    seg = tiny_segmenter("frozen")
    reference = tiny_backbone().requires_grad_(False)  # the same pretrained CLIP, untouched
    x = images(2)
    with torch.no_grad():
        dense, shallow, deep = seg.image_features(x)
        want = reference.forward_visual(x, blocks=(1, 2), dense=True)
        torch.testing.assert_close(dense, want.dense_map(), rtol=0, atol=0)
        torch.testing.assert_close(seg.text_embeddings(NAMES[:2])[:, 0], reference.encode_text(
            [CATSEG_TEMPLATE.format(n) for n in NAMES[:2]]), rtol=0, atol=0)
    assert seg.parameter_counts()["clip"] == 0
    clip_before = {n: q.clone() for n, q in seg.backbone.named_parameters()}
    dec_before = {n: q.clone() for n, q in seg.decoder.named_parameters()}
    opt = torch.optim.AdamW([q for _, q in seg.trainable_named_parameters()], lr=1e-2)
    target = torch.randint(0, 3, (2, 64, 64))
    CS.catseg_loss(seg(x, NAMES[:3]), target, 3).backward()
    opt.step()
    assert all(torch.equal(q, clip_before[n]) for n, q in seg.backbone.named_parameters())
    assert any(not torch.equal(q, dec_before[n]) for n, q in seg.decoder.named_parameters())


# ----------------------------------------------------------------------------
# equivariance over classes
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_permuting_the_class_names_permutes_the_logits(mode):
    seg = tiny_segmenter(mode)
    perturb_adapters(seg, 0.02, seed=1)
    seg.eval()
    perm = [3, 0, 5, 1, 4, 2]
    x = images(2)
    with torch.no_grad():
        out = seg(x, NAMES)
        permuted = seg(x, [NAMES[i] for i in perm])
    torch.testing.assert_close(permuted, out[:, perm], rtol=1e-4, atol=1e-5)
    # not vacuous: the classes get different logits
    for i in range(1, len(NAMES)):
        assert (out[:, 0] - out[:, i]).abs().max() > 1e-3


# ----------------------------------------------------------------------------
# what trains, and the trainable state
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_only_the_adapters_and_the_decoder_train(mode):
    seg = tiny_segmenter(mode)
    named = seg.trainable_named_parameters()
    names = [n for n, _ in named]
    assert all(n.startswith(("finetuning.", "decoder.")) for n in names), names
    # frozen: the decoder only
    assert any(n.startswith("finetuning.") for n in names) == (mode != "frozen")
    assert any(n.startswith("decoder.") for n in names)
    ids = [id(p) for _, p in named]
    assert len(set(ids)) == len(ids), "a tensor listed twice"
    assert set(ids) == {id(p) for p in seg.parameters() if p.requires_grad}
    # the decoder trains in full; every CLIP tensor that is not an adapter is frozen
    assert all(p.requires_grad for p in seg.decoder.parameters())
    adapters = {id(p) for p in seg.finetuning.parameters()}
    frozen = [(n, p) for n, p in seg.backbone.named_parameters(remove_duplicate=False) if id(p) not in adapters]
    assert frozen and not any(p.requires_grad for _, p in frozen)
    assert sum(p.numel() for _, p in frozen) == sum(p.numel() for p in tiny_backbone().parameters())
    # the counts
    counts = seg.parameter_counts()
    assert counts["clip"] == seg.finetuning.parameter_count() == TINY_CLIP_COUNTS[mode]
    assert counts["decoder"] == CS.count_parameters(CS.build_catseg_decoder("tiny"))["total"]
    assert counts["total"] == counts["clip"] + counts["decoder"] == sum(p.numel() for _, p in named)


@pytest.mark.parametrize("mode", MODES)
def test_trainable_state_dict_round_trips_into_a_fresh_segmenter(mode):
    seg = tiny_segmenter(mode, seed=0)
    perturb_adapters(seg, 0.02, seed=2)
    state = seg.trainable_state_dict()
    expected = {n for n, _ in seg.trainable_named_parameters()}
    expected |= {f"decoder.{n}" for n, _ in seg.decoder.named_buffers()}
    assert set(state) == expected
    clip_storage = {p.data_ptr() for p in seg.backbone.parameters() if not p.requires_grad}
    assert not any(v.data_ptr() in clip_storage for v in state.values()), "a frozen CLIP tensor in the state"

    fresh = tiny_segmenter(mode, seed=1)  # the same frozen CLIP; another decoder; adapters at init
    seg.eval()
    fresh.eval()
    x = images(2)
    with torch.no_grad():
        want = seg(x, NAMES[:4])
        before = fresh(x, NAMES[:4])  # also fills the text cache, which loading must clear
        assert (before - want).abs().max() > 1e-3
        fresh.load_trainable_state_dict(state)
        got = fresh(x, NAMES[:4])
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_load_trainable_state_dict_rejects_other_keys():
    seg = tiny_segmenter("hyro")
    state = seg.trainable_state_dict()
    snapshot = {k: v.clone() for k, v in state.items()}
    missing = dict(state)
    gone = next(iter(missing))
    del missing[gone]
    extra = dict(state, **{"backbone.model.logit_scale": torch.zeros(())})
    bad_cases = [
        (missing, rf"missing \['{gone}'\]"),
        (extra, r"unexpected \['backbone.model.logit_scale'\]"),
        (tiny_segmenter("attention").trainable_state_dict(), "mode 'hyro'"),
        (seg.state_dict(), "unexpected"),  # the whole model, frozen CLIP included
        ({}, "missing"),
    ]
    for bad, match in bad_cases:
        with pytest.raises(ValueError, match=match):
            seg.load_trainable_state_dict(bad)
    for k, v in seg.trainable_state_dict().items():  # a rejected state changes nothing
        assert torch.equal(v, snapshot[k]), k


# ----------------------------------------------------------------------------
# the hyperbolic modes are linear until the clip
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", HYPERBOLIC)
def test_hyperbolic_segmenter_equals_its_linearised_clip_below_the_clip(mode):
    """With rows below the clip every adapted weight is ``W (R S)^T`` (row ``w -> R S w``), so the
    segmenter computes exactly what the frozen CLIP with those weights folded in computes."""
    seg = tiny_segmenter(mode)
    perturb_adapters(seg, 0.02, seed=3)
    config = seg.finetuning.config
    linear = tiny_backbone()  # the same frozen CLIP; the adapters get folded into its weights
    with torch.no_grad():
        for tower in TOWERS:
            c = config.c_text if tower == "text" else config.c_vision
            threshold = clip_threshold(c, margin=config.margin)
            for layer in range(seg.backbone.num_layers(tower)):
                adapters = seg.finetuning.adapters[f"{tower}_{layer}"]
                original = seg.backbone.qkv_weights(tower, layer, original=True)
                adapted = seg.backbone.qkv_weights(tower, layer)
                folded = []
                for name in ("q", "k", "v"):
                    r, s = rotation_and_scaling(getattr(adapters, name))
                    reference = getattr(original, name).double() @ (r @ s).T
                    assert reference.norm(dim=1).max() < 0.5 * threshold  # really below the clip
                    torch.testing.assert_close(getattr(adapted, name), reference.float(), rtol=1e-4, atol=1e-5)
                    folded.append(reference.float())
                linear.attention_layers(tower)[layer].in_proj_weight.copy_(torch.cat(folded))
    # "attention" mode starts as the identity: a segmenter on the linearised CLIP, same decoder
    twin = build_segmenter(linear, FinetuneConfig(mode="attention", **TINY))
    twin.decoder.load_state_dict(seg.decoder.state_dict())
    plain = tiny_segmenter("attention")  # the unadapted CLIP, same decoder
    plain.decoder.load_state_dict(seg.decoder.state_dict())
    for m in (seg, twin, plain):
        m.eval()
    x = images(2)
    with torch.no_grad():
        out, out_twin, out_plain = (m(x, NAMES[:4]) for m in (seg, twin, plain))
    torch.testing.assert_close(out, out_twin, rtol=1e-4, atol=1e-5)
    assert (out - out_plain).abs().max() > 1e-2, "the adapters must change the output"


@pytest.mark.parametrize("mode", HYPERBOLIC)
def test_hyperbolic_weights_are_clipped_beyond_the_threshold(mode):
    """Rows far beyond ``clip_threshold`` are not ``R S w`` but ``R S w`` shortened to the threshold.

    The documented form (``hyperbolic_adapter.hyro_map``): ``w' = R z·min(1, t/‖z‖)`` with
    ``z = S w·min(1, t_dtype/‖w‖)``, ``t`` the threshold of the configured margin and ``t_dtype``
    that of the dtype margin (the projection after ``exp0``).
    """
    seg = tiny_segmenter(mode)
    perturb_adapters(seg, 0.01, seed=4)
    config = seg.finetuning.config
    g = torch.Generator().manual_seed(5)
    for tower in TOWERS:
        c = config.c_text if tower == "text" else config.c_vision
        t = clip_threshold(c, margin=config.margin)
        t_dtype = clip_threshold(c, margin="dtype")
        original = seg.backbone.attention_layers(tower)[0].parametrizations.in_proj_weight.original
        with torch.no_grad():  # rows of norm t/4 ... 4t, in random order
            rows = torch.randn(original.shape, generator=g)
            norms = t * torch.logspace(math.log10(0.25), math.log10(4.0), original.shape[0])
            norms = norms[torch.randperm(original.shape[0], generator=g)]
            original.copy_(rows / rows.norm(dim=1, keepdim=True) * norms[:, None])
        w = seg.backbone.qkv_weights(tower, 0, original=True)
        adapted = seg.backbone.qkv_weights(tower, 0)
        adapters = seg.finetuning.adapters[f"{tower}_0"]
        for name in ("q", "k", "v"):
            x = getattr(w, name).double()
            got = getattr(adapted, name).detach().double()
            r, s = rotation_and_scaling(getattr(adapters, name))
            linear = x @ (r @ s).T
            z = (x @ s.T) * (t_dtype / x.norm(dim=1, keepdim=True)).clamp(max=1)
            clipped = (z * (t / z.norm(dim=1, keepdim=True)).clamp(max=1)) @ r.T
            torch.testing.assert_close(got, clipped, rtol=1e-4, atol=1e-4 * t)
            beyond = linear.norm(dim=1) > 1.2 * t
            below = linear.norm(dim=1) < 0.8 * t
            assert beyond.sum() >= 16 and below.sum() >= 16
            # beyond the threshold the weights are NOT the linear map: they are shortened to t
            assert ((got - linear)[beyond].norm(dim=1) > 0.1 * t).all()
            lengths = got[beyond].norm(dim=1)
            torch.testing.assert_close(lengths, torch.full_like(lengths, t), rtol=1e-4, atol=0)
            # below it they are
            torch.testing.assert_close(got[below], linear[below], rtol=1e-4, atol=1e-4 * t)


# ----------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------
def test_loss_falls_on_an_overfit_batch():
    """30 AdamW steps on two toy images: the loss falls below half its start and below the best
    loss any image-independent prediction reaches, so the model fits the pixels, not only the
    class frequencies; gradients reach every trainable tensor and no frozen one."""
    data = ToyPixelDataset(WORLD, 2)
    x = torch.stack([data[i]["image"] for i in range(2)])
    masks = torch.stack([data[i]["mask"] for i in range(2)])
    present = sorted(set(masks.unique().tolist()) - {255})
    lut = torch.full((256,), 255, dtype=torch.long)
    lut[present] = torch.arange(len(present))
    target = lut[masks]
    names = [WORLD.class_names[k] for k in present]
    num_classes = len(names)
    assert num_classes >= 3

    # the best image-independent prediction: one constant per class (its pixel frequency)
    freq = torch.stack([(target == k).double().mean() for k in range(num_classes)])
    constant_loss = float(-(freq * freq.log() + (1 - freq) * (1 - freq).log()).mean())

    seg = tiny_segmenter("hyro").train()
    named = seg.trainable_named_parameters()
    initial = {n: p.detach().clone() for n, p in named if n.startswith("finetuning.")}
    last = f"finetuning.adapters.visual_{seg.backbone.num_layers('visual') - 1}"
    optimizer = torch.optim.AdamW([p for _, p in named], lr=5e-3)
    losses = []
    for step in range(30):
        loss = CS.catseg_loss(seg(x, names), target, num_classes)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for n, p in named:
                assert p.grad is not None and torch.isfinite(p.grad).all(), n
            assert all(p.grad is None for p in seg.parameters() if not p.requires_grad)
            # CAT-Seg's dense last vision block uses only the value path: its Q and K adapters
            # get a zero gradient; every other trainable tensor a non-zero one
            zero = {n for n, p in named if not p.grad.any()}
            assert zero == {n for n in initial if n.startswith((f"{last}.q.", f"{last}.k."))}, sorted(zero)
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = float(CS.catseg_loss(seg(x, names), target, num_classes))
    assert final < 0.5 * losses[0], (losses[0], final)
    assert final < 0.85 * constant_loss, (constant_loss, final)
    for n, p in named:  # the CLIP adapters trained too, not only the decoder
        if n in initial and n not in zero:
            assert not torch.equal(p.detach(), initial[n]), n


# ----------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------
def test_sliding_window_on_one_crop_equals_direct_inference():
    """A 384 x 384 image with out_res = kernel = 384 is one crop, and the global view is the same
    image: CAT-Seg's sliding window then returns the model's own (upsampled) prediction."""
    seg = tiny_segmenter("hyro")
    perturb_adapters(seg, 0.02, seed=6)
    seg.eval()
    image = 255 * torch.rand(3, 384, 384, generator=torch.Generator().manual_seed(7))
    names = NAMES[:3]
    calls = []

    def model(views, classes):
        calls.append(tuple(views.shape))
        return seg.forward_pixels(views, classes)

    with torch.no_grad():
        direct = seg.forward_pixels(image[None], names)
    assert direct.shape == (1, 3, 192, 192)  # a 48 x 48 grid of 8-px patches
    want = F.interpolate(direct, size=(384, 384), mode="bilinear", align_corners=False)[0]
    raw = sliding_window_inference(model, image, names, kernel=384, overlap=1 / 3, out_res=384, activation=None)
    assert calls == [(2, 3, 384, 384)]  # the single crop and the global view, in one batch
    torch.testing.assert_close(raw, want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_class_names():
    seg = tiny_segmenter("attention").eval()
    x = images(1)
    for bad in ([], (), "red circle", None, 3):
        with pytest.raises(ValueError, match="class_names must be a non-empty list of strings"):
            seg(x, bad)
    for bad in (["red circle", 3], ["red circle", ""], ["   "]):
        with pytest.raises(ValueError, match="class names must be non-empty strings"):
            seg(x, bad)


@pytest.mark.parametrize("blocks", [(0, 3), (-1, 1), (1,), (0, 1, 2), (True, 1), (0.0, 1), 2])
def test_bad_guidance_blocks(blocks):
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match=r"guidance_blocks must be two block indices in \[0, 2\]"):
        build_segmenter(backbone, FinetuneConfig(mode="hyro", **TINY), guidance_blocks=blocks)
    # the failed call left the backbone as it was, so the corrected call works
    assert untouched(backbone)
    seg = build_segmenter(backbone, FinetuneConfig(mode="hyro", **TINY), guidance_blocks=(0, 2))
    assert seg.guidance_blocks == (0, 2)


def test_bad_decoder_and_other_arguments():
    backbone = tiny_backbone()
    config = FinetuneConfig(mode="hyro", **TINY)
    fits = "decoder must have embed_dim = 64 and vision_width = 64"
    for kwargs, match in [
        (dict(decoder_overrides=dict(embed_dim=32)), fits),
        (dict(decoder_overrides=dict(vision_width=48)), fits),
        (dict(decoder_overrides=dict(prompt_channels=2)), "decoder must have prompt_channels = 1"),
        (dict(template=("a {}", "the {}"), decoder_overrides=dict(prompt_channels=1)),
         "decoder must have prompt_channels = 2"),
        (dict(decoder_overrides=dict(depth=3)), "overrides must be CATSegDecoder arguments"),
        (dict(decoder="vit_h14"), "decoder must be one of"),
        (dict(template="a photo of a thing"), "template must contain"),
        (dict(template=[]), "template must be a string or a non-empty list"),
        (dict(template=("a {}", "no slot")), "template must contain"),
        (dict(clip_resolution=60),
         "clip_resolution must be None or a positive multiple of the patch size 8"),
    ]:
        with pytest.raises(ValueError, match=match):
            build_segmenter(backbone, config, **kwargs)
        assert untouched(backbone), kwargs
    with pytest.raises(ValueError, match="backbone must be a hyro_edu.clip.backbone.ClipBackbone"):
        build_segmenter(torch.nn.Linear(2, 2), config)

    ft = apply_finetuning(backbone, config)
    decoder = CS.build_catseg_decoder("tiny")
    with pytest.raises(ValueError, match=fits):
        OpenVocabSegmenter(backbone, ft, CS.build_catseg_decoder("tiny", vision_width=32))
    with pytest.raises(ValueError, match="decoder must be a hyro_edu.segmentation.catseg.CATSegDecoder"):
        OpenVocabSegmenter(backbone, ft, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="finetuning must be a hyro_edu.clip.finetune.Finetuning"):
        OpenVocabSegmenter(backbone, torch.nn.Module(), decoder)
    with pytest.raises(ValueError, match="backbone must be a hyro_edu.clip.backbone.ClipBackbone"):
        OpenVocabSegmenter(torch.nn.Linear(2, 2), ft, decoder)
    with pytest.raises(ValueError, match=r"guidance_blocks must be two block indices in \[0, 2\]"):
        OpenVocabSegmenter(backbone, ft, decoder, guidance_blocks=(1, 3))
    assert OpenVocabSegmenter(backbone, ft, decoder).guidance_blocks == (1, 2)


# ----------------------------------------------------------------------------
# defaults from the backbone; a failed build changes nothing
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_build_segmenter_with_a_mode_name_works_on_the_tiny_clip(mode):
    """``build_segmenter(load_clip("hyro-tiny", None), mode)``: the block sizes follow the 64-wide
    towers (16, 32, 16), where the ViT-B/16 constants (128, 256, 128) used to fail."""
    backbone = load_clip(TINY_CLIP_NAME, None, device="cpu")
    seg = build_segmenter(backbone, mode).eval()
    config = seg.finetuning.config
    assert (config.scale_block, config.rotation_block, config.hclip_block) == (16, 32, 16)
    with torch.no_grad():
        out = seg(images(1), NAMES[:3])
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def full_state(backbone):
    """requires_grad per parameter, train/eval per module, parametrized tensors, parameter ids."""
    return (
        {n: p.requires_grad for n, p in backbone.named_parameters()},
        {n: m.training for n, m in backbone.named_modules()},
        sorted((n, t) for n, m in backbone.named_modules() if parametrize.is_parametrized(m)
               for t in m.parametrizations),
        {n: id(p) for n, p in backbone.named_parameters()},
    )


@pytest.mark.parametrize("mode", ["hyro", "hclip"])
def test_a_failed_build_segmenter_leaves_the_backbone_as_it_was(mode, monkeypatch):
    """Three failures: an invalid block size (found before anything changes), an invalid
    hclip_vision_free, and a failure after the adapters were registered (the segmenter's
    construction): each leaves flags, modes and parametrizations as they were."""
    backbone = load_clip(TINY_CLIP_NAME, None, device="cpu")  # eval mode, nothing frozen
    backbone.model.transformer.resblocks[0].requires_grad_(False)
    state = full_state(backbone)
    with pytest.raises(ValueError, match="scale_block must divide the feature dimension 64"):
        build_segmenter(backbone, FinetuneConfig(mode="hyro", scale_block=48))
    assert full_state(backbone) == state
    with pytest.raises(ValueError, match=r"hclip_vision_free must be an integer in \[0, 4\]"):
        build_segmenter(backbone, FinetuneConfig(mode="hclip", hclip_vision_free=7))
    assert full_state(backbone) == state

    def broken(*args, **kwargs):
        assert parametrize.is_parametrized(backbone.attention_layers("visual")[0])  # applied
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(seg_model, "OpenVocabSegmenter", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        build_segmenter(backbone, mode)
    assert full_state(backbone) == state
    monkeypatch.undo()
    seg = build_segmenter(backbone, mode)  # and the backbone is still usable
    assert seg.parameter_counts()["clip"] > 0
    with pytest.raises(ValueError, match="finetune must be a FinetuneConfig or a mode name"):
        build_segmenter(tiny_backbone(), 3)
