"""Tree alignment's own modules (curvature -c, c > 0): level features, heterogeneous curvatures, the alignment loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

from hyro_edu.geometry import cones, lorentz
from hyro_edu.geometry import intermediate_curvature as IC
from hyro_edu.tree_alignment import alignment as A
from hyro_edu.tree_alignment import features as FT
from hyro_edu.tree_alignment import manifolds as M

from .conftest import TOL

F64 = torch.float64


def blocks(n=4, d=16, heads=2, seed=0):
    torch.manual_seed(seed)
    out = [ResidualAttentionBlock(d, heads, mlp_ratio=2) for _ in range(n)]
    for b in out:  # non-trivial LayerNorm affine parameters, so that ln_1 matters
        with torch.no_grad():
            b.ln_1.weight.uniform_(0.5, 1.5)
            b.ln_1.bias.normal_(0, 0.3)
            b.ln_2.weight.uniform_(0.5, 1.5)
        b.requires_grad_(False)
    return out


def diagonal_mask(m, dtype=torch.float32):
    mask = torch.full((m, m), float("-inf"), dtype=dtype)
    return mask.fill_diagonal_(0.0)


def unit(x):
    return F.normalize(x, dim=-1)


# ----------------------------------------------------------------------------
# propagation of the intermediate class tokens
# ----------------------------------------------------------------------------
def test_self_attention_value_is_attention_with_the_diagonal_mask():
    # Oracle: the official code runs the block's MHA on the stored tokens with a diagonal mask.
    (b,) = blocks(1)
    h = torch.randn(3, 5, 16)
    expected = b.attn(h, h, h, need_weights=False, attn_mask=diagonal_mask(5))[0]
    torch.testing.assert_close(FT.self_attention_value(b.attn, h), expected, **TOL[torch.float32])
    # and it is not the unmasked attention (the tokens would mix)
    mixed = b.attn(h, h, h, need_weights=False)[0]
    assert not torch.allclose(mixed, expected, atol=1e-3)


def _test_vector_block():
    """The design notes' test vector: d = 2, W_v = W_o = I, zero biases, MLP ≡ 0, unit LayerNorms."""
    b = ResidualAttentionBlock(2, 1, mlp_ratio=2)
    with torch.no_grad():
        b.attn.in_proj_weight[4:].copy_(torch.eye(2))
        b.attn.in_proj_bias.zero_()
        b.attn.out_proj.weight.copy_(torch.eye(2))
        b.attn.out_proj.bias.zero_()
        b.mlp.c_proj.weight.zero_()
        b.mlp.c_proj.bias.zero_()
    return b


def test_propagation_test_vectors():
    b = _test_vector_block()
    h = torch.tensor([[1.0, 0.0]])
    torch.testing.assert_close(FT.propagate_block(b, h, propagation="official"), torch.tensor([[4.0, 0.0]]))
    two = FT.propagate_block(b, FT.propagate_block(b, h), propagation="official")
    torch.testing.assert_close(two, torch.tensor([[16.0, 0.0]]))
    inv = FT.propagate_block(b, h, propagation="invite")
    torch.testing.assert_close(inv, torch.tensor([[1.99998, -0.99998]]), rtol=0, atol=1e-5)


def test_invite_is_the_block_with_self_only_attention():
    # Oracle: open_clip's own block forward with the diagonal mask (INViTE's reference code).
    (b,) = blocks(1)
    h = torch.randn(2, 3, 16)
    expected = b(h, attn_mask=diagonal_mask(3))
    torch.testing.assert_close(FT.propagate_block(b, h, propagation="invite"), expected, **TOL[torch.float32])


def test_the_quirk_switch_changes_exactly_ln1_and_the_second_residual():
    (b,) = blocks(1)
    h = torch.randn(4, 16)
    official = FT.propagate_block(b, h, propagation="official")
    # official ignores ln_1 ...
    original_ln1 = b.ln_1
    b.ln_1 = nn.Identity()
    assert torch.equal(FT.propagate_block(b, h, propagation="official"), official)
    # ... and, with ln_1 gone from both, adds h1 = h + a(h) once more than the reference reading
    invite_without_ln1 = FT.propagate_block(b, h, propagation="invite")
    h1 = h + FT.self_attention_value(b.attn, h)
    torch.testing.assert_close(official - invite_without_ln1, h1, **TOL[torch.float32])
    b.ln_1 = original_ln1
    # with its LayerNorm the reference reading differs by more than the residual
    invite = FT.propagate_block(b, h, propagation="invite")
    assert not torch.allclose(official - invite, h1, atol=1e-3)


@pytest.mark.parametrize("propagation", FT.PROPAGATIONS)
def test_propagate_class_tokens(propagation):
    bl = blocks(4)
    tokens = torch.randn(3, 3, 16)
    out = FT.propagate_class_tokens(tokens, bl, layers=(1, 2, 3), propagation=propagation)
    assert out.shape == (3, 3, 16)
    assert torch.equal(out[:, 2], tokens[:, 2])  # stored after the last block: unchanged
    h = tokens[:, 0]
    for b in bl[2:]:
        h = FT.propagate_block(b, h, propagation=propagation)
    torch.testing.assert_close(out[:, 0], h)
    # levels never mix: changing one token changes only its own output
    other = tokens.clone()
    other[:, 1] += 1.0
    out2 = FT.propagate_class_tokens(other, bl, layers=(1, 2, 3), propagation=propagation)
    assert torch.equal(out2[:, 0], out[:, 0]) and torch.equal(out2[:, 2], out[:, 2])
    assert not torch.allclose(out2[:, 1], out[:, 1])


def test_semantic_visual_features_projects_after_propagation():
    bl = blocks(4)
    ln_post = nn.LayerNorm(16)
    proj = torch.randn(16, 8)
    tokens = torch.randn(2, 3, 16)
    out = FT.semantic_visual_features(tokens, bl, layers=(1, 2, 3), ln_post=ln_post, proj=proj)
    expected = ln_post(FT.propagate_class_tokens(tokens, bl, layers=(1, 2, 3))) @ proj
    assert out.shape == (2, 3, 8)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="proj"):
        FT.semantic_visual_features(tokens, bl, layers=(1, 2, 3), proj=torch.randn(8, 8))


def test_propagation_rejects_bad_layers():
    bl = blocks(4)
    tokens = torch.randn(2, 3, 16)
    with pytest.raises(ValueError, match="layers"):
        FT.propagate_class_tokens(tokens, bl, layers=(2, 3))  # 2 layers for 3 tokens
    with pytest.raises(ValueError, match="layers"):
        FT.propagate_class_tokens(tokens, bl, layers=(1, 3, 2))
    with pytest.raises(ValueError, match="layers"):
        FT.propagate_class_tokens(tokens, bl, layers=(1, 2, 4))
    with pytest.raises(ValueError, match="layers"):
        FT.propagate_class_tokens(tokens, bl, layers=(-3, -2, -1))
    with pytest.raises(ValueError, match="propagation"):
        FT.propagate_class_tokens(tokens, bl, layers=(1, 2, 3), propagation="paper")
    with pytest.raises(ValueError, match="tokens"):
        FT.propagate_class_tokens(tokens[0], bl, layers=(1, 2, 3))


# ----------------------------------------------------------------------------
# text-guided cross-attention
# ----------------------------------------------------------------------------
def test_cross_attention_identity_initialisation_oracle():
    torch.manual_seed(0)
    e = 16
    ca = FT.TextGuidedCrossAttention(e)
    text = torch.randn(5, e)
    # one level: the output is that level, exactly as given, for every label
    single = torch.randn(3, 1, e)
    out = ca(text, single)
    torch.testing.assert_close(out.fused, single.expand(3, 5, e), **TOL[torch.float32])
    # equal levels: unchanged too
    same = single.expand(3, 4, e)
    torch.testing.assert_close(ca(text, same).fused, single.expand(3, 5, e), **TOL[torch.float32])
    # in general: the attention-weighted mean of the levels, weights from the Q/K projections
    levels = torch.randn(3, 4, e)
    out = ca(text, levels)
    w_q, w_k, _ = ca.attn.in_proj_weight.chunk(3)
    b_q, b_k, _ = ca.attn.in_proj_bias.chunk(3)
    q = text @ w_q.T + b_q
    k = levels @ w_k.T + b_k
    weights = torch.softmax(torch.einsum("ke,bme->bkm", q, k) / math.sqrt(e), dim=-1)
    torch.testing.assert_close(out.weights, weights, **TOL[torch.float32])
    torch.testing.assert_close(out.fused, weights @ levels, **TOL[torch.float32])
    # a value projection that is not the identity breaks the oracle (the test can fail)
    with torch.no_grad():
        ca.attn.in_proj_weight[2 * e:] += 0.1
    assert not torch.allclose(ca(text, levels).fused, weights @ levels, atol=1e-3)


def test_cross_attention_parameters():
    e = 64
    ca = FT.TextGuidedCrossAttention(e)
    trainable = sum(p.numel() for p in ca.parameters() if p.requires_grad)
    assert trainable == 3 * e * e + 3 * e == 12480  # the design notes' count for E = 64
    assert not ca.attn.out_proj.weight.requires_grad and not ca.attn.out_proj.bias.requires_grad
    torch.testing.assert_close(ca.attn.out_proj.weight, torch.eye(e))
    torch.testing.assert_close(ca.attn.in_proj_weight[2 * e:], torch.eye(e))
    # the V rows receive a gradient (V stays trainable), Q and K too
    text, levels = torch.randn(2, 7, e), torch.randn(2, 3, e)
    ca(text, levels).fused.pow(2).sum().backward()
    g = ca.attn.in_proj_weight.grad
    assert all(bool(part.abs().sum() > 0) for part in g.chunk(3))
    with pytest.raises(ValueError, match="levels"):
        ca(text, torch.randn(2, 3, e + 1))
    with pytest.raises(ValueError, match="text"):
        ca(torch.randn(3, 7, e), levels)


def test_level_logits_are_scaled_cosines():
    fused, text = torch.randn(2, 5, 8), torch.randn(5, 8)
    out = FT.level_logits(fused, text, logit_scale=100.0)
    expected = 100 * F.cosine_similarity(fused, text.unsqueeze(0), dim=-1)
    torch.testing.assert_close(out, expected, **TOL[torch.float32])


# ----------------------------------------------------------------------------
# heterogeneous curvatures
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("version", M.CURV_VERSIONS)
def test_each_curv_version_has_its_documented_trainable_curvatures(version):
    mod = M.HeterogeneousCurvatures(version, curv_init=0.05, c_image=0.05, c_text=0.025, c_inter=0.025)
    trainable = {n for n, p in mod.named_parameters() if p.requires_grad}
    assert trainable == set(M.TRAINABLE[version])
    cs = mod(0.6, 0.9)
    if version == "euclidean":
        assert cs.euclidean and list(mod.parameters()) == []
        return
    if version == "learn_common":
        assert cs.image is cs.text is cs.inter
    if version in ("fixed3", "fixed2derive1"):
        assert len(list(mod.parameters())) == (3 if version == "fixed3" else 2)
        assert not any(c.requires_grad for c in cs)
    else:
        total = cs.image + cs.text + cs.inter
        total.backward()
        assert all(mod.get_parameter(n).grad is not None for n in trainable)


@pytest.mark.parametrize("ablation,version", [("Euc", "euclidean"), ("HypV1", "learn_common"),
                                              ("HypV2", "learn3"), ("full", "learn2derive1")])
def test_ablation_rows_map_to_curv_versions(ablation, version):
    mod = M.build_curvatures(ablation)
    assert mod.curv_version == version
    assert {n for n, p in mod.named_parameters() if p.requires_grad} == set(M.TRAINABLE[version])


def test_bad_curvature_configs_raise():
    with pytest.raises(ValueError, match="curv_version"):
        M.HeterogeneousCurvatures("learn4")
    with pytest.raises(ValueError, match="name"):
        M.build_curvatures("HypV3")
    with pytest.raises(ValueError, match="c_text"):
        M.HeterogeneousCurvatures(curv_init=0.05, c_text=0.001)  # below 0.05/10
    with pytest.raises(ValueError, match="c_image"):
        M.HeterogeneousCurvatures(curv_init=0.05, c_image=0.6)  # above 0.05*10
    with pytest.raises(ValueError, match="curv_init"):
        M.HeterogeneousCurvatures(curv_init=0.0)
    with pytest.raises(ValueError, match="r_image"):
        M.HeterogeneousCurvatures("learn2derive1")()
    with pytest.raises(ValueError, match="variant"):
        M.HeterogeneousCurvatures(variant="brief")


CLAMPED = [("learn_common", "log_curv", "image"), ("learn3", "log_curv_image", "image"),
           ("learn3", "log_curv_text", "text"), ("learn3", "log_curv_inter", "inter"),
           ("learn2derive1", "log_curv_text", "text")]


@pytest.mark.parametrize("side", ["low", "high"])
@pytest.mark.parametrize("version,param,field", CLAMPED)
def test_clamp_keeps_range_and_gradient_flows_on_the_bound(side, version, param, field):
    # The official clamp is in place and outside autograd: on a bound dc/dlog c = c, not 0.
    mod = M.HeterogeneousCurvatures(version, curv_init=0.05)
    lo, hi = mod.bounds
    assert (lo, hi) == pytest.approx((0.005, 0.5))
    p = mod.get_parameter(param)
    with torch.no_grad():  # an optimiser step that overshoots the bound
        p.fill_(math.log(hi) + 1.0 if side == "high" else math.log(lo) - 1.0)
    cs = mod(0.6, 0.9)
    bound = hi if side == "high" else lo
    assert getattr(cs, field).item() == pytest.approx(bound, rel=1e-6)
    assert p.item() == pytest.approx(math.log(bound), abs=1e-6)  # the stored value was reset, in place
    assert all(0.9 * lo * (1 - 1e-6) <= c.item() <= 1.1 * hi * (1 + 1e-6) for c in cs)
    (3.0 * getattr(cs, field)).backward()
    assert p.grad.item() == pytest.approx(3.0 * bound, rel=1e-5)
    assert p.grad.item() != 0
    # the alternative, a clamp inside the graph, would have killed that gradient
    raw = torch.tensor(math.log(hi) + 1.0 if side == "high" else math.log(lo) - 1.0, requires_grad=True)
    (3.0 * raw.clamp(*mod.log_bounds).exp()).backward()
    assert raw.grad.item() == 0


def _interior_case_module(dtype=F64, tol=1e-13):
    # Case C of the design notes: c_i = 0.3, c_t = 0.7, r = (5, 4), no rescaling.
    mod = M.HeterogeneousCurvatures(
        "learn2derive1", curv_init=0.5, c_image=0.3, c_text=0.7, rescale=False, tol=tol, max_iter=300
    )
    return mod.to(dtype)


def test_c_m_lies_between_the_curvatures_and_matches_the_worked_example():
    mod = _interior_case_module()
    cs = mod(5.0, 4.0)
    assert 0.3 < cs.inter.item() < 0.7
    assert cs.inter.item() == pytest.approx(0.419908, abs=2e-6)
    # swapped curvatures, and official rescaling of raw radii: still inside [0.9 min, 1.1 max]
    for c_i, c_t, r_i, r_t in [(0.05, 0.025, 0.6, 0.9), (0.025, 0.05, 0.9, 0.6), (0.12, 0.08, 0.3, 0.75)]:
        cs = M.HeterogeneousCurvatures(curv_init=0.05, c_image=c_i, c_text=c_t)(r_i, r_t)
        lo, hi = 0.9 * min(c_i, c_t), 1.1 * max(c_i, c_t)
        assert lo - 1e-7 <= cs.inter.item() <= hi + 1e-7


def test_c_m_uses_the_rescaled_radii_of_the_official_code():
    # rescale=True: r' = rescale_radii(r); here r_i' = 1/sqrt(0.12) = 2.8868, r_t' = 7.2169
    mod = M.HeterogeneousCurvatures(curv_init=0.1, c_image=0.12, c_text=0.08).double()
    expected = IC.find_intermediate_curvature(
        c1=torch.tensor(0.12, dtype=F64), c2=torch.tensor(0.08, dtype=F64),
        r1=torch.tensor(1 / math.sqrt(0.12), dtype=F64), r2=torch.tensor(2.5 / math.sqrt(0.12), dtype=F64),
    ).c3
    # (the parameters hold float32 logs, so c_i and c_t are 0.12 and 0.08 to float32 rounding)
    assert mod(0.4, 1.0).inter.item() == pytest.approx(expected.item(), abs=2e-6)
    # rescale=False: the radii as given (case E of the design notes, official D)
    mod = M.HeterogeneousCurvatures(curv_init=0.1, c_image=0.12, c_text=0.08, rescale=False).double()
    assert mod(12.0, 30.0).inter.item() == pytest.approx(0.084625, abs=2e-6)
    # and the paper's D gives its own minimiser
    mod = M.HeterogeneousCurvatures(curv_init=0.1, c_image=0.12, c_text=0.08, rescale=False, variant="paper")
    assert mod.double()(12.0, 30.0).inter.item() == pytest.approx(0.082595, abs=2e-6)


def test_c_m_implicit_gradient_matches_finite_differences():
    mod = _interior_case_module()
    cs = mod(5.0, 4.0)
    cs.inter.backward()
    grads = (mod.log_curv_image.grad.item(), mod.log_curv_text.grad.item())
    # the design notes' dc*/dc_i, dc*/dc_t times dc/dlog c = c
    assert grads == pytest.approx((0.3 * 0.806845, 0.7 * 0.262131), rel=1e-5)
    h = 1e-3
    for name, g in zip(("log_curv_image", "log_curv_text"), grads):
        p = mod.get_parameter(name)
        base = p.item()
        with torch.no_grad():
            p.fill_(base + h)
            up = mod(5.0, 4.0).inter.item()
            p.fill_(base - h)
            down = mod(5.0, 4.0).inter.item()
            p.fill_(base)
        assert (up - down) / (2 * h) == pytest.approx(g, rel=1e-4)


def test_embed_puts_nodes_at_radius_scale_times_norm():
    f = unit(torch.randn(6, 8, dtype=F64))
    for scale in (1.0, 10.0):
        x = M.embed(f, c=0.05, scale=scale)
        assert x.shape == (6, 9)
        torch.testing.assert_close(lorentz.radius(x, c=0.05), torch.full((6,), scale, dtype=F64), **TOL[F64])
    with pytest.raises(ValueError, match="scale"):
        M.embed(f, c=0.05, scale=0.0)


# ----------------------------------------------------------------------------
# the alignment loss
# ----------------------------------------------------------------------------
def random_trees(b=5, d=4, e=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return unit(torch.randn(b, d, e, generator=g, dtype=dtype)), unit(torch.randn(b, d, e, generator=g, dtype=dtype))


def cone_trees(b=3, d=4, e=8, dtype=F64):
    """Trees inside every cone: each sample's nodes on one ray, deeper (and image) nodes further out."""
    u = unit(torch.randn(b, 1, e, dtype=dtype))
    depth = torch.arange(d, dtype=dtype).view(1, d, 1)
    return u * (0.6 + 0.5 * depth), u * (0.5 + 0.5 * depth)  # image, text


CURVS = {
    "hyperbolic": M.Curvatures(torch.tensor(0.05), torch.tensor(0.025), torch.tensor(0.03)),
    "euclidean": M.Curvatures(None, None, None),
}


@pytest.mark.parametrize("geometry", list(CURVS))
@pytest.mark.parametrize("padding", A.PADDINGS)
def test_losses_are_nonnegative_and_zero_inside_the_cones(geometry, padding):
    curv = CURVS[geometry]
    image, text = random_trees()
    loss = A.tree_alignment_loss(image, text, curv, lengths=[4, 2, 3, 1, 4], padding=padding)
    assert all(term.item() >= 0 for term in loss) and loss.total.item() > 0
    torch.testing.assert_close(loss.total, loss.image + loss.text + loss.cross)
    image, text = cone_trees()
    for scale in (1.0, 10.0):
        zero = A.tree_alignment_loss(image, text, curv, scale_image=scale, scale_text=scale, padding=padding)
        assert zero.total.item() == 0.0
    # the same nodes in the wrong order violate the cones (the test can fail)
    flipped = A.tree_alignment_loss(image.flip(1), text.flip(1), curv, padding=padding)
    assert flipped.image.item() > 0 and flipped.text.item() > 0
    swapped = A.tree_alignment_loss(text * 0.5, image, curv, padding=padding)  # image nearer than text
    assert swapped.cross.item() > 0


@pytest.mark.parametrize("scale,expected", [(1.0, (0.2506, 0.7360, 1.6186)), (10.0, (1.6186, 2.4069, 3.1346))])
def test_path_loss_of_two_unit_nodes_matches_the_design_table(scale, expected):
    # Parent and child unit features at angle 0.5, c = 0.005, 0.05, 0.5 (design notes, section 2).
    feats = torch.tensor([[[1.0, 0.0], [math.cos(0.5), math.sin(0.5)]]], dtype=F64)
    got = [A.path_entailment_loss(feats, c=c, scale=scale).item() for c in (0.005, 0.05, 0.5)]
    assert got == pytest.approx(expected, abs=1e-4)


def test_alignment_terms_match_energies_of_the_embedded_nodes():
    image, text = random_trees(dtype=F64)
    c_i, c_t, c_m = 0.05, 0.025, 0.03
    curv = M.Curvatures(*(torch.tensor(c, dtype=F64) for c in (c_i, c_t, c_m)))
    loss = A.tree_alignment_loss(image, text, curv, scale_image=10.0, scale_text=2.0)
    v = lorentz.expmap0(10.0 * image, c=c_i)
    t = lorentz.expmap0(2.0 * text, c=c_t)
    torch.testing.assert_close(loss.image, cones.lorentz_energy(v[:, :-1], v[:, 1:], c=c_i).mean(), **TOL[F64])
    torch.testing.assert_close(loss.text, cones.lorentz_energy(t[:, :-1], t[:, 1:], c=c_t).mean(), **TOL[F64])
    tm, vm = lorentz.expmap0(2.0 * text, c=c_m), lorentz.expmap0(10.0 * image, c=c_m)
    torch.testing.assert_close(loss.cross, cones.lorentz_energy(tm, vm, c=c_m).mean(), **TOL[F64])
    euc = A.tree_alignment_loss(image, text, CURVS["euclidean"], scale_image=10.0, scale_text=2.0)
    torch.testing.assert_close(euc.cross, cones.euclidean_energy(2.0 * text, 10.0 * image).mean(), **TOL[F64])


def test_entailment_loss_matches_lorentz_energy():
    x = M.embed(unit(torch.randn(7, 8, dtype=F64)), c=0.5)
    y = M.embed(torch.randn(7, 8, dtype=F64), c=0.5)
    expected = cones.lorentz_energy(x, y, c=0.5).mean()
    torch.testing.assert_close(A.entailment_loss(x, y, c=0.5), expected, **TOL[F64])
    mask = torch.tensor([True, False, True, True, False, False, True])
    expected = cones.lorentz_energy(x[mask], y[mask], c=0.5).mean()
    torch.testing.assert_close(A.entailment_loss(x, y, c=0.5, mask=mask), expected, **TOL[F64])


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("version", ["learn2derive1", "learn3", "learn_common"])
def test_gradients_are_finite(dtype, version):
    mod = M.HeterogeneousCurvatures(version, curv_init=0.05, c_image=0.05, c_text=0.025).to(dtype)
    image, text = random_trees(dtype=dtype)
    image.requires_grad_(True)
    text.requires_grad_(True)
    lengths = [4, 2, 3, 1, 4]
    curv = mod(A.tree_radius(image, lengths=lengths), A.tree_radius(text, lengths=lengths))
    loss = A.tree_alignment_loss(image, text, curv, scale_image=10.0, scale_text=10.0, lengths=lengths)
    assert loss.total.dtype == dtype
    loss.total.backward()
    for t in (image.grad, text.grad, *(p.grad for p in mod.parameters())):
        assert t is not None and bool(torch.isfinite(t).all())
    assert any(p.grad.abs().item() > 0 for p in mod.parameters())


def test_half_inputs_and_autocast_compute_in_float32():
    image, text = random_trees()
    curv = CURVS["hyperbolic"]
    ref = A.tree_alignment_loss(image.half().float(), text.half().float(), curv)
    half = A.tree_alignment_loss(image.half(), text.half(), curv)
    assert half.total.dtype == torch.float32
    torch.testing.assert_close(half.total, ref.total, **TOL[torch.float32])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = A.tree_alignment_loss(image, text, curv)
    assert auto.total.dtype == torch.float32
    torch.testing.assert_close(auto.total, A.tree_alignment_loss(image, text, curv).total, **TOL[torch.float32])


@pytest.mark.parametrize("geometry", list(CURVS))
def test_padding_and_masking_differ_on_short_paths_and_agree_on_full_ones(geometry):
    curv = CURVS[geometry]
    image, text = random_trees(dtype=F64)
    short = [4, 2, 3, 1, 4]
    zeros = A.tree_alignment_loss(image, text, curv, lengths=short, padding="zeros")
    masked = A.tree_alignment_loss(image, text, curv, lengths=short, padding="mask")
    for a, b in zip(zeros, masked):
        assert abs(a.item() - b.item()) > 1e-3
    full = [4] * 5
    zeros = A.tree_alignment_loss(image, text, curv, lengths=full, padding="zeros")
    masked = A.tree_alignment_loss(image, text, curv, lengths=full, padding="mask")
    none = A.tree_alignment_loss(image, text, curv)
    for a, b, c in zip(zeros, masked, none):
        torch.testing.assert_close(a, b, **TOL[F64])
        torch.testing.assert_close(a, c, **TOL[F64])
    # what sits in the padded slots is ignored by both
    junk_i, junk_t = image.clone(), text.clone()
    junk_i[1, 2:] = 5.0
    junk_t[3, 1:] = -3.0
    for padding in A.PADDINGS:
        a = A.tree_alignment_loss(image, text, curv, lengths=short, padding=padding).total
        b = A.tree_alignment_loss(junk_i, junk_t, curv, lengths=short, padding=padding).total
        torch.testing.assert_close(a, b, **TOL[F64])


def test_zero_padding_costs_pi_minus_the_aperture_of_the_last_node():
    # One sample, path of length 1 in a tree of depth 2: the only pair is (node, origin).
    c = 0.05
    node = unit(torch.randn(1, 1, 8, dtype=F64))
    feats = torch.cat([node, torch.randn(1, 1, 8, dtype=F64)], dim=1)
    loss = A.path_entailment_loss(feats, c=c, lengths=[1], padding="zeros")
    aper = cones.lorentz_half_aperture(M.embed(node[0], c=c), c=c)
    torch.testing.assert_close(loss, (math.pi - aper).squeeze(), **TOL[F64])
    assert A.path_entailment_loss(feats, c=c, lengths=[1], padding="mask").item() == 0.0  # no pair


def test_tree_radius_padding():
    nodes, _ = random_trees(dtype=F64)
    short = [4, 2, 3, 1, 4]
    valid = A.path_mask(short, 4)
    expected_mask = nodes[valid].mean(0).norm()
    expected_zeros = (nodes * valid.unsqueeze(-1)).mean((0, 1)).norm()
    torch.testing.assert_close(A.tree_radius(nodes, lengths=short), expected_mask)
    torch.testing.assert_close(A.tree_radius(nodes, lengths=short, padding="zeros"), expected_zeros)
    torch.testing.assert_close(A.tree_radius(nodes, lengths=[4] * 5, padding="zeros"), A.tree_radius(nodes))


def test_alignment_rejects_bad_input():
    image, text = random_trees()
    curv = CURVS["hyperbolic"]
    with pytest.raises(ValueError, match="lengths"):
        A.tree_alignment_loss(image, text, curv, lengths=[4, 2, 5, 1, 4])
    with pytest.raises(ValueError, match="lengths"):
        A.tree_alignment_loss(image, text, curv, lengths=[4, 2])
    with pytest.raises(ValueError, match="padding"):
        A.tree_alignment_loss(image, text, curv, padding="none")
    with pytest.raises(ValueError, match="image_features"):
        A.tree_alignment_loss(image[:, :3], text, curv)
    with pytest.raises(ValueError, match="curvatures"):
        A.tree_alignment_loss(image, text, (0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="features"):
        A.path_entailment_loss(image[0], c=0.1)
