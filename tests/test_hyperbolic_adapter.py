"""HyRo's map x' = log0(R (S ⊗_c exp0(x))): linear until the clip, where the clip starts, the
rotation's geometry, the weight-row form, parameter counts, gradients, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from hyro_edu import cayley as C
from hyro_edu import hyperbolic_adapter as H
from hyro_edu import poincare as P

from .conftest import CURVATURES, TOL, ball_points

D, BS, BR = 16, 4, 8  # feature size, scaling block, rotation block for the small tests


def tol(dtype, scale=1.0):
    return {k: v * scale for k, v in TOL[dtype].items()}


def random_adapter(
    dim,
    c,
    dtype,
    gen,
    *,
    scale_block=BS,
    rotation_block=BR,
    margin="dtype",
    spread=0.3,
    mode="hyro",
):
    """An adapter with S away from I (block gains in [0.5, 1.5] plus noise) and Θ away from 0."""
    a = H.HyperbolicAdapter.from_mode(
        dim, mode, c=c, scale_block=scale_block, rotation_block=rotation_block, margin=margin
    ).to(dtype)
    with torch.no_grad():
        if a.scale is not None:
            k, b, _ = a.scale.shape
            gains = 0.5 + torch.rand(k, 1, 1, dtype=dtype, generator=gen)
            noise = spread * torch.randn(k, b, b, dtype=dtype, generator=gen) / math.sqrt(b)
            a.scale.copy_(gains * torch.eye(b, dtype=dtype) + noise)
        if a.theta is not None:
            a.theta.copy_(spread * torch.randn(a.theta.shape, dtype=dtype, generator=gen))
    return a


def directions(n, d, dtype, gen):
    x = torch.randn(n, d, dtype=dtype, generator=gen)
    return x / x.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------
# worked examples from the released code (peng2025hyperclip, truong2026hyro)
# ----------------------------------------------------------------------------
def test_clip_thresholds_match_the_released_cap():
    # :cite:`peng2025hyperclip`, as in the released code (SJTU-DeepVisionLab/HyperCLIP,
    # cat_seg/third_party/hyperbolic.py, the _project after S): the cap (1 - 1e-3)/sqrt(c) clips
    # when ‖S w‖ > artanh(0.999)/sqrt(c), 3.80 (c = 1, text) and 38.0 (c = 0.01, vision)
    assert round(H.clip_threshold(1.0, margin="official"), 2) == 3.80
    assert round(H.clip_threshold(0.01, margin="official"), 1) == 38.0
    # our margin sqrt(eps): 3.45e-4 in float32 (and half), 1.49e-8 in float64
    assert H.margin_value("dtype", torch.float32) == pytest.approx(2.0**-11.5, rel=1e-12)
    assert H.margin_value("dtype", torch.float16) == H.margin_value("dtype", torch.float32)
    assert H.margin_value("dtype", torch.float64) == pytest.approx(2.0**-26, rel=1e-12)
    assert round(H.clip_threshold(1.0), 2) == 4.33 and round(H.clip_threshold(0.01), 1) == 43.3
    for c in CURVATURES:
        official = H.clip_threshold(c, margin="official")
        assert official == pytest.approx(math.atanh(0.999) / math.sqrt(c), rel=1e-15)
        # the float32 margin sqrt(eps) = 3.5e-4 < 1e-3 clips later; float64 later still
        ours32 = H.clip_threshold(c, margin="dtype", dtype=torch.float32)
        ours64 = H.clip_threshold(c, margin="dtype", dtype=torch.float64)
        assert official < ours32 < ours64
        # half precision is computed in float32, so it gets float32's margin
        assert H.clip_threshold(c, dtype=torch.float16) == ours32
        # exp0 of a vector of norm t lands exactly on the cap (1 - δ)/sqrt(c)
        delta = H.margin_value("official")
        assert math.tanh(math.sqrt(c) * official) == pytest.approx(1 - delta, rel=1e-14)


def test_parameter_counts_match_the_released_block_sizes():
    # :cite:`truong2026hyro` as in the released code (tmhoanggg/HyRo, cat_seg/third_party/
    # hyperbolic.py and model_hyperbolic.py: S in 128-blocks, Θ in 256-blocks, on Q, K, V of
    # every layer of both encoders); CLIP ViT-B/16: 12 layers each, text 512, vision 768.
    # The totals are derived from those sizes (the paper's own counts were not available).
    def total(width, layers, key):
        return 3 * layers * H.parameter_counts(width)[key]

    assert total(512, 12, "scaling") + total(768, 12, "scaling") == 5_898_240
    assert total(512, 12, "rotation") + total(768, 12, "rotation") == 11_796_480
    assert H.parameter_counts(256, scale_block=128)["rotation_dof"] == 32_640  # 256·255/2
    dof = total(512, 12, "rotation_dof") + total(768, 12, "rotation_dof")
    assert round(dof / 1e6, 2) == 5.88
    # ViT-L/14@336: text 768 × 12 layers, vision 1024 × 24 layers
    assert round((total(768, 12, "scaling") + total(1024, 24, "scaling")) / 1e6, 2) == 12.98
    assert round((total(768, 12, "rotation") + total(1024, 24, "rotation")) / 1e6, 2) == 25.95


@pytest.mark.parametrize("mode", list(H.ADAPTER_MODES))
def test_module_parameter_count_is_the_formula(mode):
    a = H.HyperbolicAdapter.from_mode(768, mode, c=0.01)
    counts = a.parameter_counts
    assert counts["total"] == sum(p.numel() for p in a.parameters())
    assert (a.scale is not None, a.theta is not None) == H.ADAPTER_MODES[mode]
    assert counts["scaling"] == (6 * 128**2 if a.scaling else 0)
    assert counts["rotation"] == (3 * 256**2 if a.rotation else 0)


# ----------------------------------------------------------------------------
# the map is R S until the clip
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(H.ADAPTER_MODES))
def test_initialisation_is_the_identity(mode, dtype, gen):
    a = H.HyperbolicAdapter.from_mode(D, mode, c=1.0, scale_block=BS, rotation_block=BR).to(dtype)
    x = directions(20, D, dtype, gen) * torch.rand(20, 1, dtype=dtype, generator=gen) * 3.0
    torch.testing.assert_close(a(x), x, **tol(dtype, 10))
    assert torch.equal(a.linear_equivalent(), torch.eye(D, dtype=dtype))


@pytest.mark.parametrize("margin", H.MARGINS)
@pytest.mark.parametrize("mode", list(H.ADAPTER_MODES))
def test_map_equals_the_linear_equivalent_below_the_clip(mode, margin, c, dtype, gen):
    a = random_adapter(D, c, dtype, gen, margin=margin, mode=mode)
    lin = a.linear_equivalent()
    t = H.clip_threshold(c, margin=margin, dtype=dtype)
    x = directions(200, D, dtype, gen) * torch.rand(200, 1, dtype=dtype, generator=gen) * t
    sx = x @ a.scaling_matrix().T
    x = x * (0.9 * t / sx.norm(dim=-1, keepdim=True)).clamp(max=1.0)  # ‖Sx‖ <= 0.9 t
    expected = x @ lin.T
    # near the cap log0 loses about eps / (2(1 - sqrt(c)‖y‖)) in artanh: 2e-5 relative at 0.9 t
    # in float32, hence the factor 10 on the float32 tolerance
    torch.testing.assert_close(a(x), expected, **tol(dtype, 10))


def test_rotation_after_scaling_is_the_composition_of_the_two_modes(c, dtype, gen):
    hyro = random_adapter(D, c, dtype, gen, mode="hyro")
    only_s = H.HyperbolicAdapter.from_mode(D, "hyperclip", c=c, scale_block=BS).to(dtype)
    only_r = H.HyperbolicAdapter.from_mode(D, "rotation", c=c, rotation_block=BR).to(dtype)
    with torch.no_grad():
        only_s.scale.copy_(hyro.scale)
        only_r.theta.copy_(hyro.theta)
    x = directions(50, D, dtype, gen) * 0.5 / math.sqrt(c)
    torch.testing.assert_close(hyro(x), only_r(only_s(x)), **tol(dtype, 10))
    torch.testing.assert_close(
        hyro.linear_equivalent(), only_r.rotation_matrix() @ only_s.scaling_matrix()
    )


# ----------------------------------------------------------------------------
# where the clip starts
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("margin", H.MARGINS)
@pytest.mark.parametrize("c", [1.0, 0.01])
def test_clipping_follows_the_closed_form(margin, c, dtype, gen):
    """x' = R z·min(1, t_δ/‖z‖), z = S x·min(1, t_e/‖x‖).

    t_e: where exp0's output saturates -- the package's dtype projection of exp0 (``"dtype"``), or
    the official code's artanh clamp at 1 - 1e-5, which acts like a projection at
    artanh(1 - 1e-5)/sqrt(c) = 6.10/sqrt(c) (``"official"``: no projection after exp0)."""
    a = random_adapter(D, c, dtype, gen, margin=margin, spread=0.2)
    with torch.no_grad():  # S shrinks the first half of the coordinates and expands the second
        a.scale.mul_(torch.tensor([0.6, 0.6, 2.0, 2.0], dtype=dtype).view(4, 1, 1))
    t_m = H.clip_threshold(c, margin=margin, dtype=dtype)
    if margin == "official":
        t_e = math.atanh(1 - 1e-5) / math.sqrt(c)
    else:
        t_e = H.clip_threshold(c, margin="dtype", dtype=dtype)
    norms = torch.logspace(math.log10(0.1 * t_m), math.log10(4 * t_e), 400, dtype=dtype)
    u = directions(400, D, dtype, gen)
    u[::2, D // 2 :] = 0  # every other row lies in the shrunk half
    x = u / u.norm(dim=-1, keepdim=True) * norms.unsqueeze(1)
    xn = x.norm(dim=-1, keepdim=True)
    z = (x @ a.scaling_matrix().T) * (t_e / xn).clamp(max=1.0)
    zn = z.norm(dim=-1, keepdim=True)
    expected = (z * (t_m / zn).clamp(max=1.0)) @ a.rotation_matrix().T
    # rows within 1% of a threshold could round to either side: leave them out
    keep = (((xn / t_e - 1).abs() > 1e-2) & ((zn / t_m - 1).abs() > 1e-2)).squeeze(1)
    out = a(x)
    # all three regimes occur: no clip, clipped after S, exp0 clipped but S x shrunk below t_m
    exp0_only = (xn > t_e) & (zn < t_m)
    assert keep.sum() > 300 and (zn > t_m).sum() > 50 and (xn < t_m).sum() > 50
    assert exp0_only.sum() > 10, exp0_only.sum()
    torch.testing.assert_close(out[keep], expected[keep], **tol(dtype, 10))
    # and nothing ever leaves the cap
    assert out.norm(dim=-1).max() <= t_m * (1 + 10 * torch.finfo(dtype).eps ** 0.5)


@pytest.mark.parametrize("margin", H.MARGINS)
@pytest.mark.parametrize("c", [1.0, 0.01])
def test_clipping_starts_at_the_threshold(margin, c, gen):
    a = random_adapter(D, c, torch.float32, gen, margin=margin, mode="rotation")  # S = I
    t = H.clip_threshold(c, margin=margin, dtype=torch.float32)
    norms = torch.linspace(0.5 * t, 1.5 * t, 2001)
    x = directions(1, D, torch.float32, gen) * norms.unsqueeze(1)
    gap = (a(x).norm(dim=-1) - norms).abs() / t
    first = norms[gap > 1e-3][0].item()  # first norm where ‖x'‖ leaves ‖R x‖ = ‖x‖
    step = (norms[1] - norms[0]).item()
    assert t < first <= t * 1.001 + 2 * step
    below = norms < 0.999 * t
    assert gap[below].max() < 1e-4


def test_official_margin_clips_earlier_than_the_float32_margin(gen):
    for c in [1.0, 0.01]:
        t_off = H.clip_threshold(c, margin="official")
        t_ours = H.clip_threshold(c, margin="dtype", dtype=torch.float32)
        x = directions(5, D, torch.float32, gen) * (t_off + t_ours) / 2
        official = H.hyro_map(x, None, None, c=c, margin="official")
        ours = H.hyro_map(x, None, None, c=c, margin="dtype")
        torch.testing.assert_close(ours, x, **tol(torch.float32, 10))
        torch.testing.assert_close(
            official.norm(dim=-1), torch.full((5,), t_off), **TOL[torch.float32]
        )
        torch.testing.assert_close(
            official / t_off, x / x.norm(dim=-1, keepdim=True), **TOL[torch.float32]
        )


# ----------------------------------------------------------------------------
# the rotation and the scaling in the ball
# ----------------------------------------------------------------------------
def test_rotation_is_special_orthogonal_and_keeps_the_radius(c, dtype, gen):
    a = random_adapter(32, c, dtype, gen, rotation_block=8, spread=1.0, mode="rotation")
    r = a.rotation_matrix()
    torch.testing.assert_close(r.T @ r, torch.eye(32, dtype=dtype), **tol(dtype, 10))
    torch.testing.assert_close(
        torch.linalg.det(r), torch.tensor(1.0, dtype=dtype), **tol(dtype, 10)
    )
    blocks = a.rotation_blocks()
    y = ball_points(64, 32, c, dtype, max_frac=0.95, generator=gen)
    ry = C.block_matvec(blocks, y)
    torch.testing.assert_close(P.radius(ry, c=c), P.radius(y, c=c), **tol(dtype, 10))
    # R commutes with the maps at the origin: log0(R exp0(v)) = R v and exp0(R v) = R exp0(v)
    v = directions(64, 32, dtype, gen) * torch.rand(64, 1, dtype=dtype, generator=gen) * 3 / c**0.5
    rv = C.block_matvec(blocks, v)
    torch.testing.assert_close(
        P.logmap0(C.block_matvec(blocks, P.expmap0(v, c=c)), c=c), rv, **tol(dtype, 10)
    )
    torch.testing.assert_close(
        P.expmap0(rv, c=c), C.block_matvec(blocks, P.expmap0(v, c=c)), **tol(dtype, 10)
    )
    # and it changes angles: the angle at 0 between x and R x is far from 0 for this Θ
    assert P.angle_at_origin(y, ry).mean() > 0.3


def test_block_mobius_matvec_is_the_dense_one_and_scales_the_radius(c, dtype, gen):
    """HyperCLIP supplement, Eq. S-5: Rad(S ⊗_c y) = ‖S y‖ / ‖y‖ · Rad(y)."""
    a = random_adapter(D, c, dtype, gen, mode="hyperclip")
    s = a.scaling_matrix()
    y = ball_points(64, D, c, dtype, max_frac=0.7, generator=gen)
    out = H.block_mobius_matvec(a.scale, y, c=c)
    torch.testing.assert_close(out, P.mobius_matvec(s, y, c=c), **tol(dtype, 10))
    factor = (y @ s.T).norm(dim=-1) / y.norm(dim=-1)
    assert factor.max() / factor.min() > 1.2  # S really rescales different points differently
    torch.testing.assert_close(P.radius(out, c=c), factor * P.radius(y, c=c), **tol(dtype, 10))
    # identity blocks are the identity; S y = 0 gives 0
    eye = torch.eye(BS, dtype=dtype).repeat(D // BS, 1, 1)
    torch.testing.assert_close(H.block_mobius_matvec(eye, y, c=c), y, **tol(dtype))
    assert torch.equal(H.block_mobius_matvec(torch.zeros_like(eye), y, c=c), torch.zeros_like(y))


# ----------------------------------------------------------------------------
# weight rows, as the official code
# ----------------------------------------------------------------------------
def test_weight_rows_are_mapped_and_equal_a_transformed_input(dtype, gen):
    c = 1.0
    a = random_adapter(D, c, dtype, gen)
    w = torch.randn(24, D, dtype=dtype, generator=gen) * 0.3
    lin = a.linear_equivalent()
    w_new = a.adapt_weight(w)
    torch.testing.assert_close(w_new, w @ lin.T, **tol(dtype, 10))
    h = torch.randn(7, D, dtype=dtype, generator=gen)
    torch.testing.assert_close(F.linear(h, w_new), F.linear(h @ lin, w), **tol(dtype, 10))


def test_in_proj_weight_gets_one_adapter_per_projection(gen):
    dtype, c = torch.float64, 0.01
    adapters = [random_adapter(D, c, dtype, gen) for _ in range(3)]
    w = torch.randn(3 * D, D, dtype=dtype, generator=gen)
    out = H.adapt_in_proj_weight(w, adapters)
    for part, a, w_part in zip(out.chunk(3), adapters, w.chunk(3)):
        torch.testing.assert_close(part, w_part @ a.linear_equivalent().T, **tol(dtype, 10))
    assert not torch.allclose(out[:D], out[D : 2 * D] @ torch.eye(D, dtype=dtype))


# ----------------------------------------------------------------------------
# gradients and precision
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [0.5, 6.0], ids=["inside", "clipped"])
def test_gradients_match_finite_differences(radius, gen):
    dtype, c = torch.float64, 0.5
    a = random_adapter(8, c, dtype, gen, scale_block=4, rotation_block=8)
    x = (directions(3, 8, dtype, gen) * radius / math.sqrt(c)).requires_grad_(True)
    scale = a.scale.detach().clone().requires_grad_(True)
    theta = a.theta.detach().clone().requires_grad_(True)

    def fn(x, scale, theta):
        return H.hyro_map(x, scale, C.block_cayley(theta), c=c)

    assert torch.autograd.gradcheck(fn, (x, scale, theta))


def test_zero_parameters_are_trainable(gen):
    """At Θ = 0, S = I (the initialisation) the gradients are finite and not zero."""
    a = H.HyperbolicAdapter(D, c=1.0, scale_block=BS, rotation_block=BR)
    x = directions(10, D, torch.float32, gen)
    target = torch.randn(10, D, generator=gen)
    ((a(x) - target) ** 2).sum().backward()
    for p in (a.scale, a.theta):
        assert torch.isfinite(p.grad).all() and p.grad.abs().max() > 1e-3


def test_half_precision_and_autocast_run_in_float32(gen):
    a = random_adapter(D, 1.0, torch.float32, gen)
    x = directions(10, D, torch.float32, gen) * 2
    half = a(x.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, a(x.half().float()))
    reference = a(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = a(x)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, reference)


finite32 = st.floats(-(2.0**50), 2.0**50, width=32)  # ‖x‖² stays finite in float32


@given(
    x=st.lists(finite32, min_size=8, max_size=8),
    zero_row=st.booleans(),
    s_entries=st.lists(st.floats(-20, 20, width=32), min_size=4, max_size=4),
    theta_scale=st.floats(0, 50, width=32),
    c=st.sampled_from(CURVATURES),
    margin=st.sampled_from(H.MARGINS),
)
def test_fuzzed_float32_inputs_give_finite_values_and_gradients(
    x, zero_row, s_entries, theta_scale, c, margin
):
    gen = torch.Generator().manual_seed(0)
    a = H.HyperbolicAdapter(8, c=c, scale_block=4, rotation_block=8, margin=margin)
    with torch.no_grad():
        a.scale.mul_(torch.tensor(s_entries[:2]).view(2, 1, 1))
        a.scale[:, 0, 1] += torch.tensor(s_entries[2:])
        a.theta.copy_(theta_scale * torch.randn(1, 8, 8, generator=gen))
    rows = [torch.tensor(x), torch.tensor(x[::-1]) * 1e-30]
    if zero_row:
        rows.append(torch.zeros(8))
    xs = torch.stack(rows).requires_grad_(True)
    out = a(xs)
    assert torch.isfinite(out).all()
    assert out.norm(dim=-1).max() <= H.clip_threshold(c, margin=margin) * (1 + 1e-3)
    out.square().sum().backward()
    for g in (xs.grad, a.scale.grad, a.theta.grad):
        assert torch.isfinite(g).all()


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_input_raises_value_error_naming_the_argument():
    with pytest.raises(ValueError, match="scale_block must divide the feature dimension 100"):
        H.HyperbolicAdapter(100, c=1.0)
    with pytest.raises(ValueError, match="rotation_block must divide"):
        H.HyperbolicAdapter(384, c=1.0, scale_block=128, rotation_block=256)
    H.HyperbolicAdapter(384, c=1.0, scale_block=128, rotation_block=256, rotation=False)  # fine
    for bad_c in (0.0, -1.0, float("nan"), float("inf"), torch.tensor([1.0, 2.0])):
        with pytest.raises(ValueError, match="c must"):
            H.HyperbolicAdapter(256, c=bad_c)
        with pytest.raises(ValueError, match="c must"):
            H.hyro_map(torch.zeros(2, 8), None, None, c=bad_c)
    with pytest.raises(ValueError, match="margin must be one of"):
        H.HyperbolicAdapter(256, c=1.0, margin=1e-3)
    with pytest.raises(ValueError, match="margin must be one of"):
        H.clip_threshold(1.0, margin="geoopt")
    with pytest.raises(ValueError, match="mode must be one of"):
        H.HyperbolicAdapter.from_mode(256, "lora", c=1.0)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        H.HyperbolicAdapter(0, c=1.0)
    with pytest.raises(ValueError, match="scaling must be True or False"):
        H.HyperbolicAdapter(256, c=1.0, scaling=1)
    a = H.HyperbolicAdapter(256, c=1.0)
    with pytest.raises(ValueError, match="x must have dim = 256"):
        a(torch.zeros(3, 128))
    with pytest.raises(ValueError, match="x must be a floating-point tensor"):
        a(torch.zeros(3, 256, dtype=torch.long))
    with pytest.raises(ValueError, match="weight must be a matrix"):
        a.adapt_weight(torch.zeros(2, 3, 256))
    with pytest.raises(ValueError, match=r"in_proj_weight must have shape \(3·D, D\)"):
        H.adapt_in_proj_weight(torch.zeros(256, 256), [a, a, a])
    with pytest.raises(ValueError, match="adapters must be three"):
        H.adapt_in_proj_weight(torch.zeros(768, 256), [a, a])
    x = torch.zeros(2, 8)
    with pytest.raises(ValueError, match=r"scale_blocks must have shape \(K, n, n\)"):
        H.hyro_map(x, torch.eye(8), None, c=1.0)  # a matrix, not a stack of blocks
    with pytest.raises(ValueError, match="rotation_blocks must cover the feature dimension"):
        H.hyro_map(x, None, torch.eye(4).expand(3, 4, 4), c=1.0)
    with pytest.raises(ValueError, match="blocks must cover"):
        H.block_mobius_matvec(torch.eye(3).expand(2, 3, 3), x, c=1.0)
    with pytest.raises(ValueError, match="scale_block must divide"):
        H.parameter_counts(100)


def test_the_official_margin_reproduces_the_released_map_in_the_saturated_regime():
    """Audit D4: text tower (c = 1), a row of norm 6, S = I/2.  The released map has no projection
    after exp0 (only its artanh clamp at 1 - 1e-5, i.e. 6.10), so log0(S ⊗ exp0(w)) = S w: norm 3.0
    and the gradient of the linear map.  The package's cleaner variant ("dtype") projects exp0(w)
    onto float32's sqrt(eps) margin first, which caps ‖w‖ at 4.33: norm 2.17."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(1, 128, generator=g)
    w = 6.0 * w / w.norm()
    seed = torch.randn(1, 128, generator=g)  # a random upstream gradient
    results = {}
    for margin in H.MARGINS:
        a = H.HyperbolicAdapter(128, c=1.0, scale_block=128, rotation=False, margin=margin)
        with torch.no_grad():
            a.scale.mul_(0.5)
        out = a(w)
        (out * seed).sum().backward()
        results[margin] = (out.detach(), a.scale.grad[0].clone())
    linear_grad = seed.T @ w  # d/dS of <seed, S w> for the linear map S w
    out, grad = results["official"]
    assert abs(out.norm().item() - 3.0) < 3e-3 * 3.0
    torch.testing.assert_close(out, 0.5 * w, rtol=0, atol=3e-3)
    rel = (grad - linear_grad).norm() / linear_grad.norm()
    assert rel < 3e-2  # float32 rounding of tanh(6) = 1 - 1.2e-5 in the artanh's derivative
    out_d, grad_d = results["dtype"]
    assert abs(out_d.norm().item() - 0.5 * H.clip_threshold(1.0, margin="dtype")) < 1e-3
    assert (grad_d - linear_grad).norm() / linear_grad.norm() > 0.2


def test_the_official_artanh_passes_gradient_where_it_clamps():
    """Beyond artanh(1 - 1e-5)/sqrt(c) the released artanh clamps but keeps its backward 1/(1 - z²)
    at the clamped z: the gradient w.r.t. S stays finite and non-zero (a plain clamp would give 0)."""
    w = torch.zeros(1, 128)
    w[0, 0] = 8.0  # beyond 6.10
    a = H.HyperbolicAdapter(128, c=1.0, scale_block=128, rotation=False, margin="official")
    with torch.no_grad():
        a.scale.mul_(0.5)
    out = a(w)
    assert abs(out.norm().item() - 0.5 * math.atanh(1 - 1e-5)) < 1e-2
    out.sum().backward()
    assert torch.isfinite(a.scale.grad).all() and a.scale.grad.abs().max() > 0
