"""The CAT-Seg decoder: shapes, equivariance, truncation, windows, linear attention, loss, size."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hyro_edu import catseg as CS

from .conftest import TOL

F64 = TOL[torch.float64]


def _tiny(**overrides) -> CS.CATSegDecoder:
    """The tiny preset in float64 (exact comparisons), with a fixed initialisation."""
    torch.manual_seed(0)
    return CS.build_catseg_decoder("tiny", **overrides).double()


def _inputs(dec, b=2, t=5, h=8, w=8, text_batch=None, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    p, d, c = dec.prompt_channels, dec.embed_dim, dec.vision_width
    return (
        torch.randn(b, d, h, w, dtype=dtype, generator=g),
        torch.randn(text_batch or b, t, p, d, dtype=dtype, generator=g),
        torch.randn(b, c, h, w, dtype=dtype, generator=g),
        torch.randn(b, c, h, w, dtype=dtype, generator=g),
    )


# ----------------------------------------------------------------------------
# size and shapes
# ----------------------------------------------------------------------------
def _expected_vit_b16_counts():
    """Per-module sizes from the layer shapes of the released code (CAT-Seg repository,
    ``cat_seg/modeling/transformer/model.py`` and ``cat_seg/cat_seg_model.py``), written out independently."""
    def conv(cin, cout, k, bias=True):  # Conv2d and ConvTranspose2d alike
        return cin * cout * k * k + (cout if bias else 0)

    def lin(cin, cout):
        return cin * cout + cout

    def ln(d):
        return 2 * d

    def double_conv(cin, cout):  # two bias-free 3x3 convs, each followed by a GroupNorm (weight, bias)
        return conv(cin, cout, 3, False) + 2 * cout + conv(cout, cout, 3, False) + 2 * cout

    hid, g = 128, 128
    swin = ln(hid) + 2 * lin(hid + g, hid) + 2 * lin(hid, hid) + ln(hid) + lin(hid, 4 * hid) + lin(4 * hid, hid)
    spatial = 2 * swin + ln(g)
    classes = 2 * lin(hid + g, hid) + lin(hid, hid) + lin(hid, 4 * hid) + lin(4 * hid, hid) + 2 * ln(hid) + hid + g
    return {
        "upsample1": conv(768, 256, 2),
        "upsample2": conv(768, 128, 4),
        "cost_embed": conv(1, hid, 7),
        "appearance_guidance": conv(512, 128, 3),
        "decoder_guidance": conv(256, 32, 3) + conv(128, 16, 3),
        "text_guidance": lin(512, 128),
        "layers": 2 * (spatial + classes),
        "up1": conv(128, 96, 2) + double_conv(128, 64),
        "up2": conv(64, 48, 2) + double_conv(64, 32),
        "head": conv(32, 1, 3),
    }


def test_full_size_parameter_count_by_module_matches_the_reference():
    dec = CS.build_catseg_decoder("vit_b16")
    counts = CS.count_parameters(dec)
    expected = _expected_vit_b16_counts()
    assert {k: v for k, v in counts.items() if k != "total"} == expected
    assert counts["total"] == sum(p.numel() for p in dec.parameters() if p.requires_grad) == 4_668_641
    groups = dec.parameter_groups()
    # the numbers counted by hand from the released code (REFERENCE_PARAMETER_COUNTS) hold exactly
    assert groups["aggregator"] == CS.REFERENCE_PARAMETER_COUNTS["aggregator"] == 2_308_961
    assert groups["upsampling"] == CS.REFERENCE_PARAMETER_COUNTS["upsampling"] == 2_359_680
    deeper = CS.count_parameters(dec, depth=2)
    assert deeper["layers.0"] == deeper["layers.1"] == expected["layers"] // 2
    assert deeper["total"] == counts["total"]


def test_count_parameters_skips_frozen_parameters():
    dec = _tiny()
    dec.upsample1.requires_grad_(False)
    counts = CS.count_parameters(dec)
    assert "upsample1" not in counts
    frozen = sum(p.numel() for p in dec.upsample1.parameters())
    assert counts["total"] == sum(p.numel() for p in dec.parameters()) - frozen
    assert CS.count_parameters(dec, trainable_only=False)["upsample1"] == 64 * 32 * 4 + 32


def test_full_size_forward_shape():
    torch.manual_seed(0)
    dec = CS.build_catseg_decoder("vit_b16").eval()
    args = _inputs(dec, b=1, t=2, h=24, w=24, dtype=torch.float32)
    with torch.no_grad():
        out = dec(*args)
    assert out.shape == (1, 2, 96, 96) and torch.isfinite(out).all()
    assert dec.stage_layers == (3, 7)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("text_batch", [1, 3])
def test_tiny_shapes(training, text_batch):
    dec = _tiny().train(training)
    out = dec(*_inputs(dec, b=3, t=4, text_batch=text_batch))
    assert out.shape == (3, 4, 32, 32) and torch.isfinite(out).all()
    assert dec.pooling == ((2, 2) if training else (1, 1))


def test_several_prompts_and_a_grid_equal_to_the_window():
    # P = 3 prompt channels; a 4x4 grid with window 4 is a single unshifted window (Swin's rule)
    dec = _tiny(prompt_channels=3)
    assert dec.layers[0].spatial.block2.window_and_shift(4, 4) == (4, 0)
    assert dec.layers[0].spatial.block2.window_and_shift(8, 8) == (4, 2)
    out = dec.eval()(*_inputs(dec, b=2, t=3, h=4, w=4))
    assert out.shape == (2, 3, 16, 16)


def test_text_batch_one_equals_repeated_text():
    dec = _tiny().eval()
    img, text, s, d = _inputs(dec, b=2, t=3, text_batch=1)
    torch.testing.assert_close(dec(img, text, s, d), dec(img, text.expand(2, -1, -1, -1), s, d), **F64)


# ----------------------------------------------------------------------------
# cost volume and classes
# ----------------------------------------------------------------------------
def test_cost_volume_is_the_cosine_similarity():
    g = torch.Generator().manual_seed(3)
    img = torch.randn(2, 6, 3, 4, dtype=torch.float64, generator=g)
    text = torch.randn(2, 5, 2, 6, dtype=torch.float64, generator=g)
    cost = CS.cost_volume(img, 7.0 * text)  # invariant to rescaling
    assert cost.shape == (2, 2, 5, 3, 4)
    ref = F.cosine_similarity(img[:, None, None], text.permute(0, 2, 1, 3)[..., None, None], dim=3)
    torch.testing.assert_close(cost, ref, **F64)
    assert cost.abs().max() <= 1 + 1e-12


@pytest.mark.parametrize("training", [False, True])
def test_permuting_the_classes_permutes_the_logits(training):
    dec = _tiny().train(training)
    img, text, s, d = _inputs(dec, b=2, t=5)
    perm = torch.tensor([4, 0, 2, 1, 3])
    out = dec(img, text, s, d)
    torch.testing.assert_close(dec(img, text[:, perm], s, d), out[:, perm], **F64)
    # and the classes do interact: dropping one changes the others' logits
    assert not torch.allclose(dec(img, text[:, :4], s, d), out[:, :4], **F64)


def test_class_truncation_keeps_the_top_classes_and_fills_the_rest():
    k, t = 3, 7
    dec = _tiny(pad_len=k).eval()
    img, text, s, d = _inputs(dec, b=2, t=t)
    out = dec(img, text, s, d)
    assert out.shape == (2, t, 32, 32)
    # the expected kept classes: the k largest max-cosine classes of each image, computed here
    cos = F.cosine_similarity(img[:, None, :, :, :], text[:, :, 0, :, None, None], dim=2)  # (B, T, H, W)
    best = cos.flatten(2).amax(-1)
    kept_sets = []
    for b in range(2):
        kept = sorted(best[b].argsort(descending=True)[:k].tolist())
        kept_sets.append(kept)
        dropped = [c for c in range(t) if c not in kept]
        assert torch.equal(out[b, dropped], torch.full_like(out[b, dropped], CS.DROPPED_CLASS_LOGIT))
        assert (out[b, kept] != CS.DROPPED_CLASS_LOGIT).all()
        # the kept classes get exactly the logits they would get as the only classes
        alone = dec(img[b : b + 1], text[b : b + 1, kept], s[b : b + 1], d[b : b + 1])
        torch.testing.assert_close(out[b : b + 1, kept], alone, **F64)
    assert kept_sets[0] != kept_sets[1]  # per-image selection (this seed), not a fixed prefix
    assert torch.equal(CS.select_classes(CS.cost_volume(img, text), k), torch.tensor(kept_sets))
    # truncation is still permutation-equivariant
    perm = torch.randperm(t, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(dec(img, text[:, perm], s, d), out[:, perm], **F64)


def test_no_truncation_up_to_pad_len():
    dec = _tiny(pad_len=4).eval()
    out = dec(*_inputs(dec, b=1, t=4))
    assert (out != CS.DROPPED_CLASS_LOGIT).all()


# ----------------------------------------------------------------------------
# windows
# ----------------------------------------------------------------------------
def _window_ids(h, w, window, shift):
    """Window label of every token, in original coordinates: floor((y - shift) / window)."""
    ys = torch.div(torch.arange(h) - shift, window, rounding_mode="floor")
    xs = torch.div(torch.arange(w) - shift, window, rounding_mode="floor")
    return (ys[:, None] * 1000 + xs[None, :]).flatten()  # (H·W,)


@pytest.mark.parametrize("h,w,window,shift", [(8, 8, 4, 2), (12, 8, 4, 2), (24, 24, 12, 6), (9, 6, 3, 1)])
def test_shifted_window_mask_allows_exactly_the_shifted_windows(h, w, window, shift):
    mask = CS.shifted_window_mask(h, w, window, shift)
    assert mask.shape == ((h // window) * (w // window), window**2, window**2)
    # original coordinates of the tokens in each window of the rolled grid
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    orig = (((ys + shift) % h) * w + (xs + shift) % w)[None, :, :, None].double()
    pos = CS.window_partition(orig, window)[..., 0].long()  # (nW, window²)
    ids = _window_ids(h, w, window, shift)[pos]
    assert torch.equal(mask, ids[:, :, None] == ids[:, None, :])


def _dense_swin(block, x, g, window, shift):
    """Oracle: full attention over all tokens, allowed iff same (shifted) window; no roll, no tiles."""
    n, h, w, c = x.shape
    att = block.attn
    y = torch.cat([block.norm1(x), g], -1).reshape(n, h * w, -1)
    heads = att.num_heads

    def split(t):
        return t.reshape(n, h * w, heads, -1).transpose(1, 2)

    q, k, v = split(att.q(y)), split(att.k(y)), split(att.v(y[..., :c]))
    ids = _window_ids(h, w, window, shift)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(ids[:, None] != ids[None, :], float("-inf"))
    out = att.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(n, h * w, c)).reshape(n, h, w, c)
    x = x + out
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_equals_masked_dense_attention(shift):
    torch.manual_seed(0)
    block = CS.SwinBlock(16, 8, num_heads=4, window_size=4, shift=shift).double()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 8, 12, 16, dtype=torch.float64, generator=g)
    gd = torch.randn(3, 8, 12, 8, dtype=torch.float64, generator=g)
    torch.testing.assert_close(block(x, gd), _dense_swin(block, x, gd, 4, shift), **F64)


@pytest.mark.parametrize("shift", [0, 2])
def test_a_token_never_influences_tokens_outside_its_window(shift):
    torch.manual_seed(0)
    block = CS.SwinBlock(16, 8, num_heads=4, window_size=4, shift=shift).double()
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 8, 8, 16, dtype=torch.float64, generator=g)
    gd = torch.randn(1, 8, 8, 8, dtype=torch.float64, generator=g)
    ids = _window_ids(8, 8, 4, shift).reshape(8, 8)
    for (py, px) in [(0, 0), (3, 4), (7, 7), (1, 6)]:
        x2 = x.clone()
        x2[0, py, px] += torch.randn(16, dtype=torch.float64, generator=g)  # not constant: LN removes means
        changed = (block(x2, gd) - block(x, gd)).abs().amax(-1)[0] > 0  # (8, 8)
        assert torch.equal(changed, ids == ids[py, px]), (py, px)
    # the shifted windows are not the unshifted ones: (1, 1) and (2, 2) share a window only without shift
    assert (ids[1, 1] == ids[2, 2]) == (shift == 0)


def test_window_partition_round_trip():
    x = torch.randn(2, 8, 12, 5)
    tiles = CS.window_partition(x, 4)
    assert tiles.shape == (2 * 2 * 3, 16, 5)
    torch.testing.assert_close(tiles[1].reshape(4, 4, 5), x[0, 0:4, 4:8])  # window (0, 1) of image 0
    assert torch.equal(CS.window_merge(tiles, 4, 8, 12), x)


# ----------------------------------------------------------------------------
# linear attention and the class transformer
# ----------------------------------------------------------------------------
def _quadratic_attention(q, k, v, m=None):
    """Oracle: the explicit (L, S) attention matrix with the elu+1 kernel."""
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    a = torch.einsum("nlhd,nshd->nhls", phi_q, phi_k)
    if m is not None:
        a = a * m
    a = a / a.sum(-1, keepdim=True)
    return torch.einsum("nhls,nshe->nlhe", a, v)


@pytest.mark.parametrize("shape", [(2, 5, 7, 3, 4, 6), (1, 1, 1, 1, 1, 1), (3, 9, 4, 2, 8, 8)])
def test_linear_attention_equals_its_quadratic_form(shape):
    n, length, s, heads, d, e = shape
    g = torch.Generator().manual_seed(7)
    q = 2 * torch.randn(n, length, heads, d, dtype=torch.float64, generator=g)
    k = 2 * torch.randn(n, s, heads, d, dtype=torch.float64, generator=g)
    v = torch.randn(n, s, heads, e, dtype=torch.float64, generator=g)
    out = CS.linear_attention(q, k, v)
    torch.testing.assert_close(out, _quadratic_attention(q, k, v), **F64)
    # a convex combination of the values
    assert (out <= v.amax(1, keepdim=True) + 1e-12).all() and (out >= v.amin(1, keepdim=True) - 1e-12).all()


def test_multiplicity_equals_repeated_keys():
    g = torch.Generator().manual_seed(8)
    q = torch.randn(2, 4, 2, 3, dtype=torch.float64, generator=g)
    k = torch.randn(2, 3, 2, 3, dtype=torch.float64, generator=g)
    v = torch.randn(2, 3, 2, 5, dtype=torch.float64, generator=g)
    m = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64)
    reps = torch.tensor([0, 1, 1, 1, 1, 2, 2])
    weighted = CS.linear_attention(q, k, v, multiplicity=m)
    torch.testing.assert_close(weighted, CS.linear_attention(q, k[:, reps], v[:, reps]), **F64)
    torch.testing.assert_close(CS.linear_attention(q, k, v, multiplicity=m), _quadratic_attention(q, k, v, m), **F64)


def _literal_class_aggregation(mod, x, guidance, pooling):
    """Oracle: the official recipe, literally: pool, pad to pad_len, quadratic elu+1 attention, drop padding."""
    b, t, h, w, c = x.shape
    pooled = F.avg_pool2d(x.reshape(b * t, h, w, c).permute(0, 3, 1, 2), pooling)
    hp, wp = pooled.shape[-2:]
    seq = pooled.reshape(b, t, c, hp, wp).permute(0, 3, 4, 1, 2).reshape(b * hp * wp, t, c)
    extra = mod.pad_len - t
    seq = torch.cat([seq, mod.padding_tokens.expand(b * hp * wp, extra, c)], 1)
    gd = torch.cat([guidance, mod.padding_guidance.expand(b, extra, -1)], 1)
    gd = gd.repeat_interleave(hp * wp, dim=0)
    y = mod.norm1(seq)
    att = mod.attention
    yg = torch.cat([y, gd], -1)
    heads = att.num_heads
    q, k, v = (z.reshape(*z.shape[:2], heads, -1) for z in (att.q(yg), att.k(yg), att.v(y)))
    seq = seq + _quadratic_attention(q, k, v).reshape(seq.shape)
    seq = seq + mod.mlp(mod.norm2(seq))
    seq = seq[:, :t].reshape(b, hp, wp, t, c).permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
    up = F.interpolate(seq, size=(h, w), mode="bilinear", align_corners=True)
    return x + up.reshape(b, t, c, h, w).permute(0, 1, 3, 4, 2)


@pytest.mark.parametrize("pooling", [(1, 1), (2, 2)])
def test_class_aggregation_equals_the_literally_padded_transformer(pooling):
    torch.manual_seed(0)
    mod = CS.ClassAggregation(16, 8, num_heads=4, pad_len=11).double()
    with torch.no_grad():  # non-zero padding parameters, so that they matter
        mod.padding_tokens.normal_()
        mod.padding_guidance.normal_()
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 4, 6, 6, 16, dtype=torch.float64, generator=g)
    gd = torch.randn(2, 4, 8, dtype=torch.float64, generator=g)
    out = mod(x, gd, pooling)
    torch.testing.assert_close(out, _literal_class_aggregation(mod, x, gd, pooling), **F64)
    mod.pad_len = 4  # no padding at all changes the result
    assert not torch.allclose(mod(x, gd, pooling), out, **F64)


# ----------------------------------------------------------------------------
# switches: guidance order, pooling
# ----------------------------------------------------------------------------
def test_guidance_order_switch_swaps_which_layer_feeds_which_stage():
    code = _tiny(intermediate_layers=(3, 7)).eval()
    paper = _tiny(guidance_order="paper", intermediate_layers=(3, 7)).eval()
    paper.load_state_dict(code.state_dict())
    assert code.stage_layers == (3, 7) and paper.stage_layers == (7, 3)
    img, text, shallow, deep = _inputs(code, b=1, t=3)
    seen = {}
    for name, dec in (("code", code), ("paper", paper)):
        dec.upsample1.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__((name, 1), i[0]))
        dec.upsample2.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__((name, 2), i[0]))
    out_code = code(img, text, shallow, deep)
    out_paper = paper(img, text, shallow, deep)
    assert seen["code", 1] is shallow and seen["code", 2] is deep  # 2x stage <- shallow (official)
    assert seen["paper", 1] is deep and seen["paper", 2] is shallow  # 2x stage <- deep (paper)
    assert not torch.allclose(out_code, out_paper, **F64)
    torch.testing.assert_close(paper(img, text, deep, shallow), out_code, **F64)


def test_pooling_is_the_only_difference_between_train_and_eval():
    dec = _tiny()
    args = _inputs(dec, b=1, t=3)
    train_out = dec.train()(*args)
    eval_out = dec.eval()(*args)
    assert not torch.allclose(train_out, eval_out, **F64)
    dec.eval_pooling = (2, 2)  # CAT-Seg's validation during training (issue #35)
    torch.testing.assert_close(dec(*args), train_out, **F64)


# ----------------------------------------------------------------------------
# loss
# ----------------------------------------------------------------------------
def _bce(z, y):
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_loss_matches_a_hand_computed_bce():
    z = [[[0.5, -1.0], [2.0, 0.0]], [[-0.3, 1.5], [0.7, -2.0]]]  # (T=2, 2, 2)
    logits = torch.tensor([z], dtype=torch.float64)
    target = torch.tensor([[[0, 1], [255, 1]]])
    entries = []
    for c in range(2):
        for i in range(2):
            for j in range(2):
                lab = int(target[0, i, j])
                entries.append((lab != 255, _bce(z[c][i][j], float(lab == c))))
    official = sum(e for _, e in entries) / 8  # ignored pixel counted, all-zero target
    corrected = sum(e for keep, e in entries if keep) / 6
    got = CS.catseg_loss(logits, target, 2)
    assert abs(got.item() - official) < 1e-12
    got = CS.catseg_loss(logits, target, 2, exclude_ignored=True)
    assert abs(got.item() - corrected) < 1e-12
    assert official != pytest.approx(corrected)


def test_loss_upsamples_the_logits_to_the_target():
    logits = torch.tensor([[[[1.0]], [[-2.0]], [[0.5]]]], dtype=torch.float64)  # (1, 3, 1, 1)
    target = torch.tensor([[[2, 0, 255], [1, 1, 2]]])  # (1, 2, 3)
    loss = CS.catseg_loss(logits, target, 3)
    labels = target.flatten().tolist()
    hand = sum(_bce(z, float(lab == c)) for lab in labels for c, z in enumerate([1.0, -2.0, 0.5])) / 18
    assert abs(loss.item() - hand) < 1e-12


def test_loss_with_every_pixel_ignored():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), 255)
    loss = CS.catseg_loss(logits, target, 2, exclude_ignored=True)
    loss.backward()
    assert loss.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))
    assert CS.catseg_loss(logits, target, 2).item() > 0  # the official loss still pushes logits down


def test_cross_entropy_and_bce_differ_on_a_hand_computed_2x2_example():
    """The paper's softmax CE and the code's BCE on one 2x2 image with T = 2 and one ignored pixel.

    By hand: CE averages ``-log softmax`` over the 3 labelled pixels; BCE averages the 8
    sigmoid terms of all 4 pixels (the ignored one as all-negative)."""
    z = [[[0.5, -1.0], [2.0, 0.0]], [[-0.3, 1.5], [0.7, -2.0]]]  # z[class][row][col]
    logits = torch.tensor([z], dtype=torch.float64)
    target = torch.tensor([[[0, 1], [255, 1]]])
    ce_terms = []
    for i, j in ((0, 0), (0, 1), (1, 1)):
        lab = int(target[0, i, j])
        log_norm = math.log(math.exp(z[0][i][j]) + math.exp(z[1][i][j]))
        ce_terms.append(log_norm - z[lab][i][j])
    ce_hand = sum(ce_terms) / 3
    bce_hand = sum(_bce(z[c][i][j], float(int(target[0, i, j]) == c))
                   for c in range(2) for i in range(2) for j in range(2)) / 8
    ce = CS.segmentation_loss(logits, target, 2, loss="ce")
    bce = CS.segmentation_loss(logits, target, 2, loss="bce")
    assert abs(ce.item() - ce_hand) < 1e-12 and abs(bce.item() - bce_hand) < 1e-12
    assert abs(ce_hand - bce_hand) > 1e-3  # different objectives (0.86 vs 0.95), beyond rounding
    assert CS.pixel_cross_entropy(logits, target, 2).item() == ce.item()
    assert CS.catseg_loss(logits, target, 2).item() == bce.item()
    # CE ignores label 255 whatever its logits are; BCE pushes them down
    moved = logits.clone()
    moved[0, :, 1, 0] += 5.0
    assert CS.segmentation_loss(moved, target, 2, loss="ce").item() == ce.item()
    assert CS.segmentation_loss(moved, target, 2, loss="bce").item() > bce.item() + 0.1
    with pytest.raises(ValueError, match="loss must be one of"):
        CS.segmentation_loss(logits, target, 2, loss="focal")


def test_cross_entropy_is_softmax_competition_between_classes():
    """Raising one class's logit everywhere lowers CE on its pixels and raises it on the others'
    (classes compete); with one class CE is 0 for any logits, BCE is not."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 8, 8))
    per_class = []
    for c in range(3):
        mask = target == c
        t = torch.where(mask, target, torch.full_like(target, 255))
        o = torch.where(~mask, target, torch.full_like(target, 255))
        bumped = logits.clone()
        bumped[:, c] += 1.0
        ce = CS.pixel_cross_entropy
        per_class.append((ce(bumped, t, 3) < ce(logits, t, 3),
                          ce(bumped, o, 3) > ce(logits, o, 3)))
    assert all(a and b for a, b in per_class)
    single = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    zeros = torch.zeros(1, 6, 6, dtype=torch.long)
    assert CS.pixel_cross_entropy(single, zeros, 1).item() == pytest.approx(0.0, abs=1e-15)
    assert CS.catseg_loss(single, zeros, 1).item() > 0


def test_cross_entropy_with_every_pixel_ignored():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = CS.pixel_cross_entropy(logits, torch.full((1, 3, 3), 255), 2)
    loss.backward()
    assert loss.item() == 0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_vit_l14_decoder_differs_from_vit_b16_only_in_its_input_widths():
    """CAT-Seg's and HyRo's vitl_336.yaml: the ViT-B/16 decoder fed by a 768-d joint space and
    1024-wide blocks 7 and 15.  Hand count of the difference: the two ConvTranspose2d read 1024
    instead of 768 channels (256·256·4 + 256·128·16), the appearance guidance Conv3x3 and the
    text guidance Linear read 768 instead of 512 (256·128·9 + 256·128)."""
    b16 = CS.count_parameters(CS.build_catseg_decoder("vit_b16"))["total"]
    l14 = CS.build_catseg_decoder("vit_l14")
    delta = 256 * 256 * 4 + 256 * 128 * 16 + 256 * 128 * 9 + 256 * 128
    assert CS.count_parameters(l14)["total"] == b16 + delta == 5_782_753
    assert l14.intermediate_layers == (7, 15) and l14.stage_layers == (7, 15)
    same = {k: v for k, v in CS.PRESETS["vit_l14"].items()
            if k not in ("embed_dim", "vision_width", "intermediate_layers")}
    assert same == {k: CS.PRESETS["vit_b16"][k] for k in same}


# ----------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------
def test_gradients_reach_every_trainable_parameter():
    dec = _tiny().train()
    img, text, s, d = _inputs(dec, b=2, t=4)
    target = torch.randint(0, 4, (2, 40, 40), generator=torch.Generator().manual_seed(0))
    target[:, :3] = 255
    CS.catseg_loss(dec(img, text, s, d), target, 4).backward()
    for name, p in dec.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_forward_input():
    dec = _tiny().eval()
    img, text, s, d = _inputs(dec, b=2, t=3)
    with pytest.raises(ValueError, match=r"image_features must have embed_dim = 64 channels"):
        dec(img[:, :32], text, s, d)
    with pytest.raises(ValueError, match=r"text_features must have embed_dim = 64 features"):
        dec(img, text[..., :32], s, d)
    with pytest.raises(ValueError, match=r"text_features must have 4 dimensions \(B or 1, T, P, D\)"):
        dec(img, text[:, :, 0], s, d)
    with pytest.raises(ValueError, match=r"image_features must have 4 dimensions"):
        dec(img[0], text, s, d)
    with pytest.raises(ValueError, match=r"at least one class \(T >= 1\)"):
        dec(img, text[:, :0], s, d)
    with pytest.raises(ValueError, match=r"P = prompt_channels = 1"):
        dec(img, torch.cat([text, text], 2), s, d)
    with pytest.raises(ValueError, match=r"batch size 1 or B = 2"):
        dec(img, torch.cat([text] * 3), s, d)
    with pytest.raises(ValueError, match=r"deep must have shape \(B, vision_width, H, W\)"):
        dec(img, text, s, d[:, :10])
    with pytest.raises(ValueError, match=r"shallow must have shape"):
        dec(img, text, s[:, :, :4], d)
    with pytest.raises(ValueError, match=r"window_size = 4 must divide the feature grid"):
        dec(img[:, :, :6, :6], text, s[:, :, :6, :6], d[:, :, :6, :6])
    with pytest.raises(ValueError, match=r"shallow must be a floating-point tensor"):
        dec(img, text, s.long(), d)


def test_bad_configuration():
    with pytest.raises(ValueError, match=r"num_heads must divide hidden_dim = 32"):
        CS.build_catseg_decoder("tiny", num_heads=5)
    with pytest.raises(ValueError, match=r"guidance_order must be one of \('code', 'paper'\)"):
        CS.build_catseg_decoder("tiny", guidance_order="both")
    with pytest.raises(ValueError, match=r"preset must be one of \('vit_b16', 'vit_l14', 'tiny'"):
        CS.build_catseg_decoder("vit_h14")
    with pytest.raises(ValueError, match=r"overrides must be CATSegDecoder arguments"):
        CS.build_catseg_decoder("tiny", hidden=16)
    with pytest.raises(ValueError, match=r"pad_len must be an integer >= 0, got -1"):
        CS.build_catseg_decoder("tiny", pad_len=-1)
    with pytest.raises(ValueError, match=r"train_pooling must be a sequence of 2 integers >= 1"):
        CS.build_catseg_decoder("tiny", train_pooling=2)
    with pytest.raises(ValueError, match=r"decoder_guidance_proj_dims must be smaller"):
        CS.build_catseg_decoder("tiny", decoder_guidance_proj_dims=(32, 4))
    with pytest.raises(ValueError, match=r"window_size must be an integer >= 1, got 0"):
        CS.build_catseg_decoder("tiny", window_size=0)


def test_bad_loss_and_helper_input():
    logits = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"num_classes must equal the number of logit channels T = 3, got 4"):
        CS.catseg_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long), 4)
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 2\] or ignore_index = 255"):
        CS.catseg_loss(logits, torch.full((1, 4, 4), 3), 3)
    with pytest.raises(ValueError, match=r"ignore_index must lie outside the class range \[0, 2\]"):
        CS.catseg_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long), 3, ignore_index=1)
    with pytest.raises(ValueError, match=r"target must hold integer class indices"):
        CS.catseg_loss(logits, torch.zeros(1, 4, 4), 3)
    with pytest.raises(ValueError, match=r"target must have the batch size B = 1"):
        CS.catseg_loss(logits, torch.zeros(2, 4, 4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"text_features must have the embedding size D = 6"):
        CS.cost_volume(torch.zeros(1, 6, 2, 2), torch.zeros(1, 3, 1, 5))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 3\]"):
        CS.select_classes(torch.zeros(1, 1, 3, 2, 2), 4)
    with pytest.raises(ValueError, match=r"multiplicity must be a non-negative tensor of shape \(S,\) = \(2,\)"):
        z = torch.zeros(1, 2, 1, 3)
        CS.linear_attention(z, z, z, multiplicity=-torch.ones(2))
    with pytest.raises(ValueError, match=r"q \(N, L, heads, d\), k \(N, S, heads, d\)"):
        CS.linear_attention(torch.zeros(1, 2, 1, 3), torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 3))
    with pytest.raises(ValueError, match=r"depth must be an integer >= 1"):
        CS.count_parameters(torch.nn.Linear(2, 2), depth=0)
