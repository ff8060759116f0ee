"""The Lorentz model: geoopt oracle, conversions to the Poincaré ball, worked examples, edge cases."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hyro_edu import lorentz as L
from hyro_edu import poincare as P
from hyro_edu.core.curvature import to_geoopt_lorentz_k

from .conftest import TOL, ball_points

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import geoopt


def hyperboloid_points(n, dim, c, dtype, gen, scale=1.0):
    return L.expmap0(scale * torch.randn(n, dim, dtype=dtype, generator=gen) / c**0.5, c=c)


def test_points_lie_on_the_hyperboloid(c, dtype, gen):
    x = hyperboloid_points(50, 4, c, dtype, gen)
    torch.testing.assert_close(L.inner(x, x), torch.full((50,), -1 / c, dtype=dtype), **TOL[dtype])
    assert torch.all(x[:, 0] > 0)


def test_origin_and_lift(c):
    o = L.origin(3, c=c, dtype=torch.float64)
    assert o.tolist() == [1 / math.sqrt(c), 0.0, 0.0, 0.0]
    torch.testing.assert_close(L.lift(torch.zeros(3, dtype=torch.float64), c=c), o)
    assert L.radius(o, c=c).item() == 0


def test_distances_match_geoopt(c, dtype, gen):
    manifold = geoopt.Lorentz(k=torch.tensor(to_geoopt_lorentz_k(c), dtype=torch.float64))
    x, y = hyperboloid_points(40, 3, c, dtype, gen, 0.7), hyperboloid_points(40, 3, c, dtype, gen, 0.7)
    torch.testing.assert_close(L.dist(x, y, c=c), manifold.dist(x, y), **TOL[dtype])


def test_exp_log_transport_match_geoopt(c, gen):
    dtype = torch.float64
    manifold = geoopt.Lorentz(k=torch.tensor(to_geoopt_lorentz_k(c), dtype=torch.float64))
    x, y = hyperboloid_points(30, 3, c, dtype, gen, 0.6), hyperboloid_points(30, 3, c, dtype, gen, 0.6)
    u = manifold.proju(x, 0.5 * torch.randn(30, 4, dtype=dtype, generator=gen) / c**0.5)
    torch.testing.assert_close(L.expmap(x, u, c=c), manifold.expmap(x, u), **TOL[dtype])
    torch.testing.assert_close(L.logmap(x, y, c=c), manifold.logmap(x, y), **TOL[dtype])
    torch.testing.assert_close(L.parallel_transport(x, y, u, c=c), manifold.transp(x, y, u), **TOL[dtype])


def test_exp_log_round_trips(c, dtype, gen):
    x, y = hyperboloid_points(30, 5, c, dtype, gen, 0.6), hyperboloid_points(30, 5, c, dtype, gen, 0.6)
    scale = 50 if dtype == torch.float32 else 1
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    torch.testing.assert_close(L.expmap(x, L.logmap(x, y, c=c), c=c), y, **tol)
    v = 0.5 * torch.randn(30, 5, dtype=dtype, generator=gen) / c**0.5
    torch.testing.assert_close(L.logmap0(L.expmap0(v, c=c), c=c), v, **tol)
    torch.testing.assert_close(L.radius(L.expmap0(v, c=c), c=c), v.norm(dim=-1), **tol)
    # logmap is tangent and has Lorentz norm equal to the distance
    w = L.logmap(x, y, c=c)
    torch.testing.assert_close(L.inner(x, w), torch.zeros(30, dtype=dtype), **tol)
    torch.testing.assert_close(L.inner(w, w).clamp_min(0).sqrt(), L.dist(x, y, c=c), **tol)


def test_parallel_transport_keeps_inner_products(c, gen):
    dtype = torch.float64
    x, y = hyperboloid_points(20, 3, c, dtype, gen, 0.6), hyperboloid_points(20, 3, c, dtype, gen, 0.6)
    u = L.logmap(x, hyperboloid_points(20, 3, c, dtype, gen, 0.6), c=c)
    v = L.logmap(x, hyperboloid_points(20, 3, c, dtype, gen, 0.6), c=c)
    pu, pv = L.parallel_transport(x, y, u, c=c), L.parallel_transport(x, y, v, c=c)
    torch.testing.assert_close(L.inner(pu, pv), L.inner(u, v), **TOL[dtype])
    torch.testing.assert_close(L.inner(y, pu), torch.zeros(20, dtype=dtype), **TOL[dtype])


def test_poincare_conversion_is_an_isometry(c, dtype, gen):
    p, q = ball_points(40, 4, c, dtype, generator=gen), ball_points(40, 4, c, dtype, generator=gen)
    x, y = L.from_poincare(p, c=c), L.from_poincare(q, c=c)
    scale = 20 if dtype == torch.float32 else 1
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    torch.testing.assert_close(L.dist(x, y, c=c), P.dist(p, q, c=c), **tol)
    torch.testing.assert_close(L.to_poincare(x, c=c), p, **tol)
    torch.testing.assert_close(L.inner(x, x), torch.full((40,), -1 / c, dtype=dtype), **tol)


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_reference_conversion_example(c):
    """p = (0.3, 0.2)/sqrt(c), q = (0.5, 0.45)/sqrt(c): d = 0.897357/sqrt(c) in both models."""
    p = torch.tensor([0.3, 0.2], dtype=torch.float64) / math.sqrt(c)
    q = torch.tensor([0.5, 0.45], dtype=torch.float64) / math.sqrt(c)
    expected = 0.897357 / math.sqrt(c)
    assert P.dist(p, q, c=c).item() == pytest.approx(expected, abs=1e-6)
    assert L.dist(L.from_poincare(p, c=c), L.from_poincare(q, c=c), c=c).item() == pytest.approx(expected, abs=1e-6)


def test_meru_exp_map_examples():
    """MERU's exp_map0 examples (space components): c = 1 and c = 0.5."""
    v = torch.tensor([0.6, 0.8], dtype=torch.float64)
    x = L.expmap0(v, c=1.0)
    torch.testing.assert_close(x, torch.tensor([1.543081, 0.705121, 0.940161], dtype=torch.float64), atol=1e-6, rtol=0)
    x = L.expmap0(v, c=0.5)
    torch.testing.assert_close(x[1:], torch.tensor([0.651265, 0.868353], dtype=torch.float64), atol=1e-6, rtol=0)
    assert L.dist(x, L.origin(2, c=0.5, dtype=torch.float64), c=0.5).item() == pytest.approx(1.0, abs=1e-12)


def test_expmap0_matches_poincare_expmap0_with_halved_vector(c, gen):
    v = torch.randn(20, 3, dtype=torch.float64, generator=gen) / c**0.5
    torch.testing.assert_close(L.to_poincare(L.expmap0(v, c=c), c=c), P.expmap0(v / 2, c=c))


def test_nearby_points_have_accurate_distances():
    """The arsinh form keeps relative accuracy where arcosh(-c<x, y>) loses it."""
    x = L.expmap0(torch.tensor([0.3, 0.4], dtype=torch.float32), c=1.0)
    y = L.expmap(x, L.parallel_transport(L.origin(2, c=1.0), x, torch.tensor([0.0, 1e-4, 0.0]), c=1.0), c=1.0)
    assert L.dist(x, y, c=1.0).item() == pytest.approx(1e-4, rel=1e-3)


@given(
    c=st.floats(1e-3, 1e3),
    scale=st.sampled_from([0.0, 1e-30, 1e-6, 1.0, 30.0, 1e4]),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_no_nan_or_inf_forward_or_backward(c, scale, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    v = (scale * torch.randn(3, 4, dtype=dtype, generator=g)).requires_grad_(True)
    w = (torch.randn(3, 4, dtype=dtype, generator=g)).requires_grad_(True)
    x, y = L.expmap0(v, c=c), L.expmap0(w, c=c)
    outs = [x, L.logmap0(x, c=c), L.dist(x, y, c=c), L.dist(x, x, c=c), L.logmap(x, y, c=c), L.radius(x, c=c)]
    outs.append(L.parallel_transport(x, y, L.logmap(x, y, c=c), c=c))
    outs.append(L.to_poincare(x, c=c))
    total = sum(o.sum() for o in outs)
    assert all(torch.isfinite(o).all() for o in outs)
    total.backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(w.grad).all()


def test_learnable_curvature_is_positive_and_clamped():
    k = L.LearnableCurvature(0.5)
    assert k().item() == pytest.approx(0.5)
    with torch.no_grad():
        k.log_c.fill_(10.0)
    assert k().item() == pytest.approx(5.0)
    with torch.no_grad():
        k.log_c.fill_(-10.0)
    assert k().item() == pytest.approx(0.05)
    k.log_c.data.fill_(math.log(0.5))
    x = L.expmap0(torch.tensor([[0.3, 0.1]]), c=k())
    L.dist(x, L.origin(2, c=0.5).unsqueeze(0), c=k()).sum().backward()
    assert torch.isfinite(k.log_c.grad)


def _fit_curvature_with_a_target_switch(curv, steps_before, steps_after, lr=0.08):
    """Least-squares fit of c to pairwise distances observed at c* = 0.05, then at c* = 0.3."""
    v = torch.randn(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def observed(c_star):
        with torch.no_grad():
            x = L.expmap0(v, c=c_star)
            return L.pairwise_dist(x, x, c=c_star)

    opt = torch.optim.Adam(curv.parameters(), lr=lr)
    history, grads = [], []
    for step in range(steps_before + steps_after):
        target = observed(0.05 if step < steps_before else 0.3)
        c = curv().double()
        x = L.expmap0(v, c=c)
        loss = (L.pairwise_dist(x, x, c=c) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        grads.append(curv.log_c.grad.item())
        opt.step()
        history.append(curv().item())
    return history, grads


def test_learnable_curvature_leaves_a_bound_when_the_target_changes():
    """c* = 0.05 lies below the range [0.1, 10]: c sits on the lower bound with a live gradient,
    and once the target moves to c* = 0.3 it travels back (a clamp inside autograd kept it at 0.1
    for ever: zero gradient once the raw parameter had passed the bound)."""
    curv = L.LearnableCurvature(1.0)
    lo = 0.1
    history, grads = _fit_curvature_with_a_target_switch(curv, 100, 40)
    assert history[99] == pytest.approx(lo, rel=1e-6)  # on the bound before the switch
    # the loss still pulls c down (d loss / d log c > 0): the gradient reaches log c on the bound
    assert grads[99] > 0
    assert min(history) >= lo * (1 - 1e-6)  # the returned c never leaves the range
    assert history[-1] > 1.5 * lo and grads[-1] < 0  # after the switch c travels back up


def test_learnable_curvature_gradient_is_finite_and_nonzero_on_a_bound():
    for raw, bound in [(-10.0, 0.05), (10.0, 5.0)]:
        k = L.LearnableCurvature(0.5)
        with torch.no_grad():
            k.log_c.fill_(raw)  # far past the bound, as an optimiser step can leave it
        c = k()
        assert c.item() == pytest.approx(bound, rel=1e-6)
        assert k.log_c.item() == pytest.approx(math.log(bound), rel=1e-6)  # clamped in place
        c.backward()
        # d c / d log c = c: the clamp is outside the graph, so the gradient is not cut
        assert torch.isfinite(k.log_c.grad)
        assert k.log_c.grad.item() == pytest.approx(bound, rel=1e-6)
    k = L.LearnableCurvature(0.5)
    (k() + k()).backward()  # two calls in one graph: the in-place clamp does not break backward
    assert k.log_c.grad.item() == pytest.approx(1.0, rel=1e-6)
    frozen = L.LearnableCurvature(0.5, learnable=False)
    assert not frozen().requires_grad and "range=[0.05, 5]" in repr(frozen)


def test_bad_input():
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        L.expmap0(torch.zeros(2), c=0.0)
    with pytest.raises(ValueError, match="at least 2 coordinates"):
        L.dist(torch.zeros(3, 1), torch.zeros(3, 1), c=1.0)
    with pytest.raises(ValueError, match="p must lie inside the Poincare ball"):
        L.from_poincare(torch.tensor([1.0, 1.0]), c=1.0)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        L.origin(0, c=1.0)
    with pytest.raises(ValueError, match="c_init must be finite and > 0"):
        L.LearnableCurvature(-1.0)
    with pytest.raises(ValueError, match="x and y must have the same size"):
        L.dist(torch.zeros(3), torch.zeros(4), c=1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [0.01, 1.0, 5.0])
def test_capacity_matches_the_poincare_ball(c, dtype):
    from hyro_edu.core.numerics import max_radius

    far = L.expmap0(torch.tensor([[1e4, 0.0]], dtype=dtype), c=c)
    assert L.radius(far, c=c).item() == pytest.approx(max_radius(c, dtype), rel=1e-4)
    assert torch.isfinite(L.to_poincare(far, c=c)).all()
    assert bool((L.to_poincare(far, c=c).norm(dim=-1) * c**0.5 < 1).all())


def test_origin_follows_default_dtype_and_keeps_curvature_gradient():
    assert L.origin(2, c=1.0).dtype == torch.get_default_dtype()
    c = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    o = L.origin(3, c=c)
    assert o.dtype == torch.float64 and o[0].item() == pytest.approx(2.0)
    o[0].backward()
    assert c.grad.item() == pytest.approx(-0.5 * 0.25**-1.5)


@pytest.mark.parametrize("layout", ["one ray", "side by side"])
def test_float32_distance_of_nearby_points_far_from_the_origin(layout):
    """Points 0.5 apart at radius about 8: float32 reaches the accuracy of the stored points."""
    c = 1.0
    if layout == "one ray":
        v = torch.tensor([[7.75, 0.0], [8.25, 0.0]], dtype=torch.float64)
    else:
        theta = math.acos((math.cosh(8.0) ** 2 - math.cosh(0.5)) / math.sinh(8.0) ** 2)
        v = 8.0 * torch.tensor([[1.0, 0.0], [math.cos(theta), math.sin(theta)]], dtype=torch.float64)
    pts = L.expmap0(v, c=c)
    p32 = pts.float()
    stored = L.dist(p32[0].double(), p32[1].double(), c=c)
    got = L.dist(p32[0], p32[1], c=c).double()
    assert stored.item() == pytest.approx(0.5, rel=1e-3)
    assert ((got - stored).abs() / stored).item() < 1e-4


def test_a_curvature_per_point_needs_size_one_on_the_vector_axis():
    """A tensor c of shape (B,) against points (B, n+1) used to broadcast to a (B, B) grid."""
    g = torch.Generator().manual_seed(5)
    x = L.lift(0.3 * torch.randn(4, 3, generator=g), c=1.0)
    y = L.lift(0.3 * torch.randn(4, 3, generator=g), c=1.0)
    c = torch.tensor([0.5, 1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match=r"c must be .*c.unsqueeze\(-1\)"):
        L.expmap0(x[..., 1:], c=c)
    space_x, space_y = x[..., 1:], y[..., 1:]
    per_point = L.dist(L.lift(space_x, c=c[:, None]), L.lift(space_y, c=c[:, None]), c=c[:, None])
    assert per_point.shape == (4,)
    for i in range(4):
        one = L.dist(L.lift(space_x[i], c=float(c[i])), L.lift(space_y[i], c=float(c[i])), c=float(c[i]))
        assert torch.allclose(per_point[i], one)
