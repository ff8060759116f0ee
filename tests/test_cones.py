"""Entailment cones: worked examples, oracles, agreement across models, transitivity, training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hyro_edu import cones as C
from hyro_edu.book.plotting import cone_outline
from hyro_edu.hierarchy import entailment as E
from hyro_edu import lorentz as L
from hyro_edu import poincare as P
from hyro_edu.hierarchy.taxonomies import cifar100_hierarchy
from hyro_edu.hierarchy.trees import Tree, balanced_tree

from .conftest import TOL, ball_points

F64 = torch.float64


def annulus_points(n, dim, c, dtype, gen, *, K=0.1, hi=0.95):
    """Points with sqrt(c)‖x‖ uniform in [ε_K, hi]: where cones are defined."""
    x = torch.randn(n, dim, dtype=F64, generator=gen)
    x = x / x.norm(dim=-1, keepdim=True)
    lo = C.inner_radius(K) * 1.001
    r = lo + (hi - lo) * torch.rand(n, 1, dtype=F64, generator=gen)
    return (x * r / math.sqrt(c)).to(dtype)


def rotate(u, angle):
    """Rotate 2-D vectors u (..., 2) by angle (...,)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([cos * u[..., 0] - sin * u[..., 1], sin * u[..., 0] + cos * u[..., 1]], -1)


def ganea_xi(x, y, c):
    """The papers' arccos formula at curvature -c, float64, away from degenerate cases."""
    xy, x2, y2 = (x * y).sum(-1), (x * x).sum(-1), (y * y).sum(-1)
    num = xy * (1 + c * x2) - x2 * (1 + c * y2)
    den = x2.sqrt() * (x - y).norm(dim=-1) * torch.sqrt(1 + c**2 * x2 * y2 - 2 * c * xy)
    return torch.acos(num / den)


def meru_ext(xs, ys, c):
    """MERU's arccos formula (its `oxy_angle` without eps) from space parts, float64."""
    xt = torch.sqrt(1 / c + (xs * xs).sum(-1))
    yt = torch.sqrt(1 / c + (ys * ys).sum(-1))
    cxyl = c * ((xs * ys).sum(-1) - xt * yt)
    return torch.acos((yt + cxyl * xt) / (xs.norm(dim=-1) * torch.sqrt(cxyl**2 - 1)))


# ----------------------------------------------------------------------------
# worked examples (Ganea et al.'s and MERU's formulas evaluated in float64)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("c", [0.01, 0.5, 1.0, 2.0, 7.0])
def test_worked_example_poincare_every_curvature(c, dtype):
    p = torch.tensor([0.3, 0.2], dtype=dtype) / math.sqrt(c)
    q = torch.tensor([0.5, 0.45], dtype=dtype) / math.sqrt(c)
    tol = 1e-6 if dtype == F64 else 2e-6
    assert C.half_aperture(p, c=c, K=0.1).item() == pytest.approx(0.243700, abs=tol)
    assert C.exterior_angle(p, q, c=c).item() == pytest.approx(0.354073, abs=tol)
    assert C.energy(p, q, c=c, K=0.1).item() == pytest.approx(0.110373, abs=tol)


def test_worked_example_meru(dtype):
    x = L.lift(torch.tensor([1.0, 0.0], dtype=dtype), c=1.0)
    y = L.lift(torch.tensor([2.0, 0.5], dtype=dtype), c=1.0)
    tol = 1e-6 if dtype == F64 else 2e-6
    assert C.lorentz_half_aperture(x, c=1.0, K=0.1).item() == pytest.approx(0.201358, abs=tol)
    assert C.oxy_angle(x, y, c=1.0).item() == pytest.approx(0.749604, abs=tol)
    assert C.lorentz_energy(x, y, c=1.0, K=0.1).item() == pytest.approx(0.548246, abs=tol)


def test_inner_radius():
    eps = C.inner_radius(0.1)
    assert eps == pytest.approx(0.0990195, abs=1e-7)
    for K in [0.01, 0.1, 0.5, 2.0]:
        e = C.inner_radius(K)
        assert K * (1 - e * e) / e == pytest.approx(1.0, rel=1e-12)  # ψ = π/2 there
        # the Euclidean radius of the hyperbolic sphere of radius arsinh(2K)
        assert 2 * math.atanh(e) == pytest.approx(math.asinh(2 * K), rel=1e-12)
        for c in [0.25, 4.0]:
            assert C.inner_radius(K, c=c) == pytest.approx(e / math.sqrt(c), rel=1e-12)
    assert C.inner_radius(0.3, geometry="euclidean") == 0.3


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_degenerate_angles(c, dtype):
    # oxy_angle(x, x) ≈ π/2 (MERU's code: numerator 0) and oxy_angle(x, o) ≈ π
    x = L.lift(torch.tensor([[1.0, 0.0], [0.3, -0.7]], dtype=dtype), c=c)
    o = L.origin(2, c=c, dtype=dtype).expand_as(x)
    torch.testing.assert_close(C.oxy_angle(x, x, c=c), torch.full((2,), math.pi / 2, dtype=dtype))
    torch.testing.assert_close(C.oxy_angle(x, o, c=c), torch.full((2,), math.pi, dtype=dtype))
    p = torch.tensor([[0.3, 0.2], [-0.1, 0.6]], dtype=dtype) / math.sqrt(c)
    torch.testing.assert_close(
        C.exterior_angle(p, p, c=c), torch.full((2,), math.pi / 2, dtype=dtype)
    )
    zero = torch.zeros_like(p)
    torch.testing.assert_close(
        C.exterior_angle(p, zero, c=c), torch.full((2,), math.pi, dtype=dtype)
    )
    torch.testing.assert_close(
        C.euclidean_exterior_angle(p, zero), torch.full((2,), math.pi, dtype=dtype)
    )
    # further out on the axis: angle 0
    torch.testing.assert_close(
        C.exterior_angle(p, 1.3 * p, c=c), torch.zeros(2, dtype=dtype), **TOL[dtype]
    )


# ----------------------------------------------------------------------------
# oracles
# ----------------------------------------------------------------------------
def test_exterior_angle_is_the_angle_of_the_log_map(c, dtype, gen):
    x = ball_points(200, 4, c, dtype, max_frac=0.9, generator=gen)
    y = ball_points(200, 4, c, dtype, max_frac=0.9, generator=gen)
    # the ball is conformal and geodesics from 0 are straight: Ξ = ∠(x, log_x(y))
    oracle = P.angle_at_origin(x, P.logmap(x, y, c=c))
    scale = 1 if dtype == F64 else 10
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    torch.testing.assert_close(C.exterior_angle(x, y, c=c), oracle, **tol)


def test_exterior_angle_law_of_cosines(c, gen):
    x = annulus_points(300, 3, c, F64, gen)
    y = annulus_points(300, 3, c, F64, gen)
    zero = torch.zeros_like(x)
    sc = math.sqrt(c)
    a, b, o = P.dist(zero, x, c=c), P.dist(x, y, c=c), P.dist(zero, y, c=c)
    # interior angle at x of the geodesic triangle 0, x, y; Ξ is its supplement
    cos_x = (torch.cosh(sc * a) * torch.cosh(sc * b) - torch.cosh(sc * o)) / (
        torch.sinh(sc * a) * torch.sinh(sc * b)
    )
    keep = cos_x.abs() < 0.999  # arccos loses digits near ±1
    assert int(keep.sum()) > 250
    oracle = math.pi - torch.acos(cos_x)
    torch.testing.assert_close(C.exterior_angle(x, y, c=c)[keep], oracle[keep], rtol=0, atol=1e-9)


def test_exterior_angle_matches_the_papers_arccos_formula(c, gen):
    x = annulus_points(300, 5, c, F64, gen)
    y = annulus_points(300, 5, c, F64, gen)
    torch.testing.assert_close(C.exterior_angle(x, y, c=c), ganea_xi(x, y, c), rtol=0, atol=1e-9)


def test_euclidean_formulas(gen):
    x = 3 * torch.randn(300, 4, dtype=F64, generator=gen)
    y = 3 * torch.randn(300, 4, dtype=F64, generator=gen)
    # HVSA, Appendix A.1, Eq. (13)
    xn, yn, dn = x.norm(dim=-1), y.norm(dim=-1), (x - y).norm(dim=-1)
    oracle = torch.acos((yn**2 - xn**2 - dn**2) / (2 * xn * dn))
    torch.testing.assert_close(C.euclidean_exterior_angle(x, y), oracle, rtol=0, atol=1e-9)
    K = 0.4
    xs = x[xn >= K]
    torch.testing.assert_close(C.euclidean_half_aperture(xs, K=K), torch.asin(K / xs.norm(dim=-1)))
    # invariant under a common rescaling and under rotations
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=F64, generator=gen))
    torch.testing.assert_close(
        C.euclidean_exterior_angle(2.5 * x, 2.5 * y), oracle, rtol=0, atol=1e-9
    )
    torch.testing.assert_close(
        C.euclidean_exterior_angle(x @ q.T, y @ q.T), oracle, rtol=0, atol=1e-9
    )


def test_oxy_angle_matches_merus_arccos_formula(c, gen):
    xs = torch.randn(300, 3, dtype=F64, generator=gen) / math.sqrt(c)
    ys = torch.randn(300, 3, dtype=F64, generator=gen) / math.sqrt(c)
    got = C.oxy_angle(L.lift(xs, c=c), L.lift(ys, c=c), c=c)
    torch.testing.assert_close(got, meru_ext(xs, ys, c), rtol=0, atol=1e-8)


def test_curvature_scaling(c, gen):
    # the isometry p -> sqrt(c) p keeps angles: ψ_c(x) = ψ_1(√c x), Ξ_c(x, y) = Ξ_1(√c x, √c y)
    x = annulus_points(200, 3, c, F64, gen)
    y = annulus_points(200, 3, c, F64, gen)
    sc = math.sqrt(c)
    torch.testing.assert_close(C.half_aperture(x, c=c), C.half_aperture(sc * x, c=1.0))
    torch.testing.assert_close(
        C.exterior_angle(x, y, c=c), C.exterior_angle(sc * x, sc * y, c=1.0)
    )


@pytest.mark.parametrize("K", [0.05, 0.1, 0.3])
def test_clairaut_constant(c, K, gen):
    # sinh(√c Rad(x)) sin ψ_c(x) = 2K: the boundary geodesics are tangent to one sphere
    x = annulus_points(200, 3, c, F64, gen, K=K)
    lhs = torch.sinh(math.sqrt(c) * P.radius(x, c=c)) * torch.sin(C.half_aperture(x, c=c, K=K))
    torch.testing.assert_close(lhs, torch.full_like(lhs, 2 * K))


def test_half_aperture_shape_of_the_function():
    r = torch.linspace(C.inner_radius(0.1), 0.999, 500, dtype=F64)[:, None] * torch.tensor(
        [[0.6, 0.8]], dtype=F64
    )
    psi = C.half_aperture(r, c=1.0)
    assert psi[0].item() == pytest.approx(math.pi / 2, abs=1e-6)
    assert bool((psi[1:] <= psi[:-1]).all())  # non-increasing in the norm
    assert psi[-1].item() < 1e-3  # tends to 0 at the boundary
    # Ganea et al.'s ψ at c = 1
    n = r.norm(dim=-1)
    torch.testing.assert_close(psi[1:], torch.asin(0.1 * (1 - n**2) / n)[1:])


def test_euclidean_limit_of_the_poincare_cones(gen):
    x = 0.5 + torch.rand(50, 2, dtype=F64, generator=gen)
    y = 2 * torch.randn(50, 2, dtype=F64, generator=gen)
    c = 1e-10
    torch.testing.assert_close(
        C.exterior_angle(x, y, c=c), C.euclidean_exterior_angle(x, y), rtol=0, atol=1e-7
    )
    K_e = 0.3  # Euclidean K corresponds to K·sqrt(c) in the ball
    torch.testing.assert_close(
        C.half_aperture(x, c=c, K=K_e * math.sqrt(c)),
        C.euclidean_half_aperture(x, K=K_e),
        rtol=0,
        atol=1e-7,
    )


# ----------------------------------------------------------------------------
# agreement across models (Poincaré <-> Lorentz)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("K", [0.05, 0.1, 0.4])
def test_poincare_and_lorentz_cones_agree(c, dtype, K, gen):
    p = annulus_points(300, 3, c, dtype, gen, K=K, hi=0.9)
    q = ball_points(300, 3, c, dtype, max_frac=0.9, generator=gen)
    xl, yl = L.from_poincare(p, c=c), L.from_poincare(q, c=c)
    scale = 1 if dtype == F64 else 10
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    torch.testing.assert_close(
        C.lorentz_half_aperture(xl, c=c, K=K), C.half_aperture(p, c=c, K=K), **tol
    )
    torch.testing.assert_close(C.oxy_angle(xl, yl, c=c), C.exterior_angle(p, q, c=c), **tol)
    torch.testing.assert_close(C.lorentz_energy(xl, yl, c=c, K=K), C.energy(p, q, c=c, K=K), **tol)


def test_meru_aperture_at_c1_is_ganeas_psi(gen):
    p = annulus_points(100, 2, 1.0, F64, gen)
    n = p.norm(dim=-1)
    ganea = torch.asin(0.1 * (1 - n**2) / n)
    torch.testing.assert_close(C.lorentz_half_aperture(L.from_poincare(p, c=1.0), c=1.0), ganea)


# ----------------------------------------------------------------------------
# cones, energies and transitivity
# ----------------------------------------------------------------------------
def point_in_cone(x, frac, length, c, K):
    """expmap at x (2-D) at angle frac·ψ(x) from the axis, for a hyperbolic length `length`."""
    psi = C.half_aperture(x, c=c, K=K)
    axis = x / x.norm(dim=-1, keepdim=True)
    u = rotate(axis, frac * psi)
    lam = P.conformal_factor(x, c=c)
    return P.expmap(x, u * (length / lam)[:, None], c=c), frac * psi


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_energy_is_zero_inside_and_the_angle_gap_outside(c, gen):
    x = annulus_points(300, 2, c, F64, gen, hi=0.8)
    frac = torch.empty(300, dtype=F64).uniform_(-1.6, 1.6, generator=gen)
    length = torch.empty(300, dtype=F64).uniform_(0.05, 3.0, generator=gen) / math.sqrt(c)
    y, theta = point_in_cone(x, frac, length, c, 0.1)
    xi = C.exterior_angle(x, y, c=c, project=False)
    torch.testing.assert_close(xi, theta.abs(), rtol=0, atol=1e-9)  # Ξ is the initial angle
    e = C.energy(x, y, c=c, project=False)
    psi = C.half_aperture(x, c=c)
    inside = frac.abs() < 1
    assert bool((e[inside] == 0).all()) and bool((e >= 0).all())
    torch.testing.assert_close(e[~inside], (xi - psi)[~inside])
    assert bool((e[~inside] > 0).all())


@pytest.mark.parametrize("c", [0.5, 1.0, 3.0])
def test_nested_cones_constructed(c, gen):
    # y in cone(x) and z in cone(y), including the extreme case on both boundaries
    x = annulus_points(400, 2, c, F64, gen, hi=0.7)
    f1 = torch.cat([torch.ones(100), torch.empty(300).uniform_(-1, 1, generator=gen)]).double()
    f2 = torch.cat([torch.ones(100), torch.empty(300).uniform_(-1, 1, generator=gen)]).double()
    l1 = torch.empty(400, dtype=F64).uniform_(0.01, 3.0, generator=gen) / math.sqrt(c)
    l2 = torch.empty(400, dtype=F64).uniform_(0.01, 3.0, generator=gen) / math.sqrt(c)
    y, _ = point_in_cone(x, f1, l1, c, 0.1)
    z, _ = point_in_cone(y, f2, l2, c, 0.1)
    psi_x = C.half_aperture(x, c=c)
    assert bool((C.exterior_angle(x, z, c=c) <= psi_x + 1e-9).all())


@pytest.mark.parametrize("dim", [2, 3, 6])
def test_nested_cones_random_configurations(dim, gen):
    # random triples: y ∈ cone(x) and z ∈ cone(y)  =>  z ∈ cone(x)
    c, K, n = 1.0, 0.1, 20_000

    def further_out(a, spread):
        # a random point beyond a, in a direction near a's: often, but not always, in a's cone
        d = a / a.norm(dim=-1, keepdim=True) + spread * torch.randn(
            n, dim, dtype=F64, generator=gen
        )
        d = d / d.norm(dim=-1, keepdim=True)
        r = a.norm(dim=-1, keepdim=True)
        return d * (r + (0.99 - r) * torch.rand(n, 1, dtype=F64, generator=gen))

    x = annulus_points(n, dim, c, F64, gen, hi=0.7)
    y = further_out(x, 0.05)
    z = further_out(y, 0.05)
    xy = C.energy(x, y, c=c, K=K) == 0
    yz = C.energy(y, z, c=c, K=K) == 0
    both = xy & yz
    assert int(both.sum()) > 500 and int((~xy).sum()) > 1000  # not vacuous, not trivial
    xi, psi = C.exterior_angle(x[both], z[both], c=c), C.half_aperture(x[both], c=c, K=K)
    assert bool((xi <= psi + 1e-9).all())


def test_nested_cones_euclidean(gen):
    K = 0.5
    x = torch.randn(400, 2, dtype=F64, generator=gen)
    x = (
        x
        / x.norm(dim=-1, keepdim=True)
        * torch.empty(400, 1, dtype=F64).uniform_(K, 3, generator=gen)
    )

    def child(a, frac, length):
        psi = C.euclidean_half_aperture(a, K=K)
        return a + rotate(a / a.norm(dim=-1, keepdim=True), frac * psi) * length[:, None]

    f = torch.cat([torch.ones(100), torch.empty(300).uniform_(-1, 1, generator=gen)]).double()
    y = child(x, f, torch.empty(400, dtype=F64).uniform_(0.01, 5, generator=gen))
    z = child(y, f.flip(0), torch.empty(400, dtype=F64).uniform_(0.01, 5, generator=gen))
    assert bool((C.euclidean_energy(x, y, K=K) <= 1e-12).all())  # rounding on the boundary rays
    assert bool(
        (C.euclidean_exterior_angle(x, z) <= C.euclidean_half_aperture(x, K=K) + 1e-9).all()
    )


def test_a_non_shrinking_aperture_is_not_transitive():
    # Control: with a constant half-aperture cones are not nested, so the tests above can fail.
    c, const = 1.0, 0.5
    x = torch.tensor([[0.5, 0.0]], dtype=F64)
    lam = P.conformal_factor(x, c=c)
    turn = torch.tensor([const], dtype=F64)
    y = P.expmap(x, rotate(torch.tensor([[1.0, 0.0]], dtype=F64), turn) * 0.5 / lam, c=c)
    z = P.expmap(y, rotate(y / y.norm(), turn) * 2.0 / P.conformal_factor(y, c=c), c=c)
    assert C.exterior_angle(x, y, c=c).item() <= const + 1e-12
    assert C.exterior_angle(y, z, c=c).item() <= const + 1e-12
    assert C.exterior_angle(x, z, c=c).item() > const + 0.05


# ----------------------------------------------------------------------------
# gradients and edge cases
# ----------------------------------------------------------------------------
def test_gradcheck_generic_points(gen):
    x = annulus_points(6, 3, 1.0, F64, gen, hi=0.8).requires_grad_(True)
    y = ball_points(6, 3, 1.0, F64, max_frac=0.8, generator=gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: C.half_aperture(a, c=1.3), (x,))
    assert torch.autograd.gradcheck(lambda a, b: C.exterior_angle(a, b, c=1.3), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: C.euclidean_exterior_angle(a, b), (x, y))
    xl = L.from_poincare(x.detach(), c=0.7).requires_grad_(True)
    yl = L.from_poincare(y.detach(), c=0.7).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: C.oxy_angle(a, b, c=0.7), (xl, yl))
    assert torch.autograd.gradcheck(lambda a: C.lorentz_half_aperture(a, c=0.7), (xl,))


@st.composite
def pairs_of_points(draw):
    dtype = draw(st.sampled_from([torch.float32, F64]))
    c = draw(st.floats(min_value=1e-3, max_value=1e3))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(2, 4, dtype=F64, generator=g)
    u = u / u.norm(dim=-1, keepdim=True)
    kinds = [
        draw(st.sampled_from(["zero", "tiny", "inner", "interior", "boundary"])) for _ in range(2)
    ]
    pts = []
    for k, direction in zip(kinds, u):
        frac = {
            "zero": 0.0,
            "tiny": 1e-20,
            "inner": C.inner_radius(0.1) * (1 + 1e-9),
            "interior": draw(st.floats(0.0, 0.99)),
            "boundary": 1 - draw(st.floats(0.0, 1e-6)),
        }[k]
        pts.append((direction * frac / math.sqrt(c)).to(dtype))
    x, y = pts
    relation = draw(st.sampled_from(["free", "equal", "origin", "ray"]))
    if relation == "equal":
        y = x.clone()
    elif relation == "origin":
        y = torch.zeros_like(x)
    elif relation == "ray":
        y = 0.5 * x
    return x, y, c, dtype


@given(pairs_of_points())
def test_finite_values_and_gradients_everywhere(case):
    x, y, c, dtype = case
    fns = {
        "energy": lambda a, b: C.energy(a, b, c=c),
        "exterior_angle": lambda a, b: C.exterior_angle(a, b, c=c),
        "half_aperture": lambda a, b: C.half_aperture(a, c=c),
        "euclidean_energy": lambda a, b: C.euclidean_energy(a, b),
        "lorentz_energy": lambda a, b: C.lorentz_energy(
            L.from_poincare(P.project(a, c=c), c=c), L.from_poincare(P.project(b, c=c), c=c), c=c
        ),
    }
    for name, f in fns.items():
        a, b = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        out = f(a, b)
        assert out.dtype == dtype, name
        assert bool(torch.isfinite(out)) and 0 <= out.item() <= math.pi + 1e-6, (name, out)
        out.backward()
        for t in (a, b):
            assert t.grad is None or bool(torch.isfinite(t.grad).all()), (name, t.grad)


def test_half_precision_inputs_are_computed_in_float32():
    p = torch.tensor([0.3, 0.2], dtype=torch.float16)
    q = torch.tensor([0.5, 0.45], dtype=torch.float16)
    out = C.energy(p, q, c=1.0)
    assert out.dtype == torch.float32
    ref = C.energy(p.float(), q.float(), c=1.0)
    assert out.item() == ref.item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert C.exterior_angle(p.float(), q.float(), c=1.0).dtype == torch.float32


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_input_raises_value_error():
    p = torch.tensor([0.3, 0.2])
    for K in (0, -0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="K must be"):
            C.half_aperture(p, c=1.0, K=K)
        with pytest.raises(ValueError, match="K must be"):
            C.euclidean_half_aperture(p, K=K)
    for c in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="c must be"):
            C.energy(p, p, c=c)
        with pytest.raises(ValueError, match="c must be"):
            C.oxy_angle(L.lift(p, c=1.0), L.lift(p, c=1.0), c=c)
        with pytest.raises(ValueError, match="c must be"):
            C.inner_radius(0.1, c=c)
    with pytest.raises(ValueError, match="inside the Poincare ball"):
        C.exterior_angle(torch.tensor([1.5, 0.0]), p, c=1.0, project=False)
    with pytest.raises(ValueError, match="same size"):
        C.exterior_angle(p, torch.zeros(3), c=1.0)
    with pytest.raises(ValueError, match="at least 2 coordinates"):
        C.lorentz_half_aperture(torch.ones(1), c=1.0)
    with pytest.raises(ValueError, match="geometry"):
        C.inner_radius(0.1, geometry="sphere")


def test_strict_domain_check():
    eps = C.inner_radius(0.1)
    inside = torch.tensor([[0.5 * eps, 0.0]], dtype=F64)
    ok = torch.tensor([[eps, 0.0]], dtype=F64)
    with pytest.raises(ValueError, match="valid domain"):
        C.half_aperture(inside, c=1.0, strict=True)
    with pytest.raises(ValueError, match="valid domain"):
        C.energy(inside, ok, c=1.0, strict=True)
    with pytest.raises(ValueError, match="valid domain"):
        C.euclidean_half_aperture(torch.tensor([0.05, 0.0]), K=0.1, strict=True)
    with pytest.raises(ValueError, match="valid domain"):
        C.lorentz_half_aperture(L.from_poincare(inside, c=1.0), c=1.0, strict=True)
    # on the inner sphere itself the check passes and ψ = π/2; without strict the clamp gives ~π/2
    assert C.half_aperture(ok, c=1.0, strict=True).item() == pytest.approx(math.pi / 2, abs=1e-6)
    assert C.half_aperture(inside, c=1.0).item() == pytest.approx(math.pi / 2, abs=1e-6)
    assert C.lorentz_half_aperture(L.from_poincare(inside, c=1.0), c=1.0).item() == pytest.approx(
        math.pi / 2, abs=1e-6
    )


# ----------------------------------------------------------------------------
# the partial order of a taxonomy
# ----------------------------------------------------------------------------
def test_transitive_closure_is_a_strict_partial_order():
    tree = cifar100_hierarchy()
    a = E.transitive_closure(tree)
    for v in range(len(tree)):
        assert set(a[:, v].nonzero().flatten().tolist()) == set(tree.ancestors(v))
    assert not bool(a.diagonal().any())  # irreflexive
    assert not bool((a & a.T).any())  # antisymmetric
    a2 = (a.double() @ a.double()) > 0
    assert bool((a2 <= a).all())  # transitive
    assert len(E.positive_pairs(tree)) == 220 and len(E.positive_pairs(tree, closure=False)) == 120
    neg = E.non_entailed_pairs(tree)
    assert len(neg) == 121 * 120 - 220
    assert not bool(a[neg[:, 0], neg[:, 1]].any()) and bool((neg[:, 0] != neg[:, 1]).all())


def test_negative_sampling_is_uniform_and_seeded():
    tree = balanced_tree(2, 2)
    cand = E.non_entailed_pairs(tree)
    s1 = E.sample_negatives(cand, 30_000, generator=torch.Generator().manual_seed(3))
    s2 = E.sample_negatives(cand, 30_000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)
    closure = E.transitive_closure(tree)
    assert not bool(closure[s1[:, 0], s1[:, 1]].any())
    counts = torch.zeros(len(tree), len(tree))
    counts.index_put_((s1[:, 0], s1[:, 1]), torch.ones(len(s1)), accumulate=True)
    observed = counts[cand[:, 0], cand[:, 1]]
    expected = len(s1) / len(cand)
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    dof = len(cand) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof)  # far inside the chi-square's bulk
    with pytest.raises(ValueError, match="n must be"):
        E.sample_negatives(cand, -1)


def tiny_embedding():
    """A cone embedding of root -> {a, b}, a -> {a1}, b -> {b1} in the unit disk, built by hand."""
    tree = Tree(("r", "a", "b", "a1", "b1"), (-1, 0, 0, 1, 2))
    root = torch.tensor([[0.12, 0.0]], dtype=F64)

    def step(apex, frac, length):
        psi = C.half_aperture(apex, c=1.0)
        u = rotate(apex / apex.norm(dim=-1, keepdim=True), frac * psi)
        return P.expmap(apex, u * length / P.conformal_factor(apex, c=1.0, keepdim=True), c=1.0)

    a, b = step(root, 0.6, 1.5), step(root, -0.6, 1.5)
    pts = torch.cat([root, a, b, step(a, 0.0, 1.5), step(b, 0.0, 1.5)])
    return tree, pts


def test_margin_loss_and_metrics_on_a_hand_made_embedding():
    tree, pts = tiny_embedding()
    pos = E.positive_pairs(tree)
    neg = E.non_entailed_pairs(tree)
    e_pos, e_neg = C.pair_energies(pts, pos), C.pair_energies(pts, neg)
    assert bool((e_pos == 0).all()) and bool((e_neg > 0).all())
    m = E.evaluate_cones(pts, tree)
    assert (m.recall, m.false_positive_rate, m.precision, m.f1) == (1.0, 0.0, 1.0, 1.0)
    # L = 0 iff positives inside and negatives beyond the margin
    gap = e_neg.min().item()
    assert E.margin_loss(pts, pos, neg, margin=0.9 * gap).item() == 0
    big = E.margin_loss(pts, pos, neg, margin=gap + 0.1)
    torch.testing.assert_close(big, torch.relu(gap + 0.1 - e_neg).sum())
    torch.testing.assert_close(
        E.margin_loss(pts, pos, neg, margin=gap + 0.1, reduction="mean"), big / len(pos)
    )
    # swapping parent and child breaks every positive pair
    swapped = C.pair_energies(pts, pos.flip(1))
    assert bool((swapped > 0).all())
    with pytest.raises(ValueError, match="margin"):
        E.margin_loss(pts, pos, neg, margin=-1.0)
    with pytest.raises(ValueError, match="positives must hold node indices"):
        E.margin_loss(pts, pos + 10, neg)


def test_project_annulus(dtype, gen):
    for c, geometry in [(1.0, "poincare"), (0.3, "poincare"), (1.0, "euclidean")]:
        x = (
            torch.randn(500, 3, dtype=dtype, generator=gen)
            * torch.logspace(-3, 1, 500, dtype=dtype)[:, None]
        )
        x[0] = 0
        y = E.project_annulus(x, c=c, geometry=geometry, outer=2.0)
        n = y.norm(dim=-1)
        lo = C.inner_radius(0.1, c=c, geometry=geometry)
        hi = 1 / math.sqrt(c) if geometry == "poincare" else 2.0
        assert bool((n >= lo * (1 - 1e-6)).all()) and bool((n <= hi * (1 + 1e-6)).all())
        torch.testing.assert_close(
            E.project_annulus(y, c=c, geometry=geometry, outer=2.0), y
        )  # idempotent
        keep = x.norm(dim=-1) > 0
        cos = (x[keep] * y[keep]).sum(-1) / (x[keep].norm(dim=-1) * n[keep])
        torch.testing.assert_close(cos, torch.ones_like(cos), **TOL[dtype])  # directions kept
        assert (
            bool(torch.isfinite(C.half_aperture(y, c=c)).all()) if geometry == "poincare" else True
        )


def test_rsgd_step(gen):
    u = annulus_points(20, 2, 1.0, F64, gen, hi=0.8)
    grad = torch.randn(20, 2, dtype=F64, generator=gen)
    lr = 1e-3
    expected = u - lr * ((1 - (u * u).sum(-1, keepdim=True)) ** 2 / 4) * grad
    torch.testing.assert_close(E.rsgd_step(u, grad, lr=lr), E.project_annulus(expected))
    # clipped steps have hyperbolic length max_step (for small steps ≈ the distance moved)
    big = E.rsgd_step(u, 1e4 * grad, lr=1.0, max_step=0.01)
    torch.testing.assert_close(
        P.dist(u, big, c=1.0), torch.full((20,), 0.01, dtype=F64), rtol=2e-2, atol=0
    )
    with pytest.raises(ValueError, match="lr"):
        E.rsgd_step(u, grad, lr=0.0)
    with pytest.raises(ValueError, match="max_step"):
        E.rsgd_step(u, grad, lr=1.0, max_step=-1.0)


def test_a_small_rsgd_step_decreases_the_loss(gen):
    tree = balanced_tree(2, 2)
    u = annulus_points(len(tree), 2, 1.0, F64, gen, hi=0.7).requires_grad_(True)
    pos, neg = E.positive_pairs(tree), E.non_entailed_pairs(tree)
    loss = E.margin_loss(u, pos, neg, margin=0.1)
    (g,) = torch.autograd.grad(loss, u)
    after = E.margin_loss(E.rsgd_step(u.detach(), g, lr=1e-4), pos, neg, margin=0.1)
    assert after.item() < loss.item()


def test_fit_cones_is_deterministic_and_learns_the_order_through_transitivity():
    tree = balanced_tree(3, 2)  # 13 nodes
    edges = E.positive_pairs(tree, closure=False)
    fit = E.fit_cones(tree, seed=1, steps=250, train_pairs=edges)
    again = E.fit_cones(tree, seed=1, steps=250, train_pairs=edges)
    assert torch.equal(fit.points, again.points) and fit.losses == again.losses
    start = E.fit_cones(tree, seed=1, steps=1, train_pairs=edges)  # (one step from) the init
    other = E.fit_cones(tree, seed=2, steps=1, train_pairs=edges)
    assert not torch.equal(start.points, other.points)
    assert sum(fit.losses[-20:]) < 0.2 * sum(fit.losses[:20])
    # trained on parent->child edges only; the root->grandchild pairs follow by transitivity
    closure = E.positive_pairs(tree)
    held_out = closure[
        torch.tensor([tree.depths[v] - tree.depths[u] == 2 for u, v in closure.tolist()])
    ]
    assert E.evaluate_cones(fit.points, tree, pairs=edges).recall == 1.0
    assert E.evaluate_cones(fit.points, tree, pairs=held_out).recall == 1.0
    assert (
        E.evaluate_cones(start.points, tree).f1 < 0.5 < 0.8 < E.evaluate_cones(fit.points, tree).f1
    )
    n = fit.points.norm(dim=-1)
    assert bool((n >= C.inner_radius(0.1)).all()) and bool((n < 1).all())
    with pytest.raises(ValueError, match="final"):
        E.fit_cones(tree, steps=1, final=0.0)
    with pytest.raises(ValueError, match="steps"):
        E.fit_cones(tree, steps=0)


def test_pair_energies_match_the_pointwise_functions(gen):
    tree = balanced_tree(2, 3)
    pts = annulus_points(len(tree), 3, 1.0, F64, gen)
    pairs = torch.cat([E.positive_pairs(tree), E.non_entailed_pairs(tree)])
    x, y = pts[pairs[:, 0]], pts[pairs[:, 1]]
    torch.testing.assert_close(
        C.pair_energies(pts, pairs, c=1.0), C.energy(x, y, c=1.0), rtol=0, atol=0
    )
    torch.testing.assert_close(
        C.pair_energies(3 * pts, pairs, geometry="euclidean", K=0.3),
        C.euclidean_energy(3 * x, 3 * y, K=0.3),
        rtol=0,
        atol=0,
    )


def test_cone_outline_follows_the_cone_boundary():
    x = torch.tensor([0.3, 0.35], dtype=F64)
    for c in [0.5, 1.0, 2.0]:
        poly = cone_outline(x / math.sqrt(c), c=c, n=40)
        rays = poly[1:30]  # the first boundary geodesic (its start is the apex itself)
        xi = C.exterior_angle((x / math.sqrt(c)).expand_as(rays), rays, c=c)
        psi = C.half_aperture(x / math.sqrt(c), c=c)
        torch.testing.assert_close(xi, psi.expand_as(xi), rtol=0, atol=1e-7)
    e_poly = cone_outline(
        torch.tensor([1.0, 0.5], dtype=F64), K=0.5, geometry="euclidean", reach=4.0
    )
    assert e_poly.norm(dim=-1).max().item() <= 4.0 + 1e-9


@pytest.mark.parametrize("bad", [-0.1, 0.0, float("nan")])
def test_energy_rejects_bad_K(bad):
    p = torch.tensor([0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.5, 0.45], dtype=torch.float64)
    with pytest.raises(ValueError, match="K"):
        C.energy(p, q, c=1.0, K=bad)


# ----------------------------------------------------------------------------
# the projection gap (Ganea et al.'s 1e-5) and mini-batches
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("c", [0.3, 1.0, 4.0])
def test_project_annulus_gap_is_ganeas_clipping(c):
    """gap = 1e-5: eps_K + gap <= sqrt(c)||x|| <= 1 - gap (Ganea et al.'s clipping)."""
    eps_k = C.inner_radius(0.1)
    radii = torch.tensor([0.0, 1e-3, eps_k, eps_k + 1e-6, 0.5, 1 - 1e-6, 1.0], dtype=F64)
    x = torch.stack([radii, torch.zeros_like(radii)], -1) / math.sqrt(c)
    y = E.project_annulus(x, c=c, gap=1e-5)
    r = y.norm(dim=-1) * math.sqrt(c)
    assert abs(r.min().item() - (eps_k + 1e-5)) < 1e-12  # the old code: eps_K (1 + 1.5e-8)
    assert abs(r.max().item() - (1 - 1e-5)) < 1e-12  # the old code: 1 - 1.5e-8
    assert abs(r[4].item() - 0.5) < 1e-15  # points inside are kept
    torch.testing.assert_close(E.project_annulus(y, c=c, gap=1e-5), y, rtol=0, atol=0)
    # the default is unchanged: a relative gap sqrt(eps) at the inner edge
    r0 = E.project_annulus(x, c=c).norm(dim=-1) * math.sqrt(c)
    assert abs(r0.min().item() / eps_k - 1 - 2**-26) < 1e-12
    # at Ganea's gap the aperture's slope is far smaller than at sqrt(eps) (square-root law)
    slopes = []
    for proj in (E.project_annulus(x[:1], c=1.0), E.project_annulus(x[:1], c=1.0, gap=1e-5)):
        p = proj.clone().requires_grad_(True)
        C.half_aperture(p, c=1.0).sum().backward()
        slopes.append(p.grad.norm().item())
    assert slopes[0] > 50 * slopes[1]


def test_project_annulus_gap_euclidean():
    x = torch.tensor([[0.05, 0.0], [0.0, 3.0]], dtype=F64)
    y = E.project_annulus(x, geometry="euclidean", K=0.2, gap=0.01, outer=2.0)
    torch.testing.assert_close(y.norm(dim=-1), torch.tensor([0.21, 2.0], dtype=F64))


@pytest.mark.parametrize(
    "bad", [0.0, -1e-5, 1e-20, 0.5, float("nan"), float("inf"), True, "1e-5", torch.tensor(1e-5)]
)
def test_gap_must_leave_a_non_empty_annulus(bad):
    x = torch.tensor([[0.3, 0.2]], dtype=F64)
    with pytest.raises(ValueError, match="gap"):
        E.project_annulus(x, c=1.0, gap=bad)
    with pytest.raises(ValueError, match="gap"):
        E.rsgd_step(x, torch.ones_like(x), lr=1e-3, gap=bad)
    with pytest.raises(ValueError, match="gap"):
        E.fit_cones(balanced_tree(2, 1), steps=1, gap=bad)
    with pytest.raises(ValueError, match="gap"):  # K + gap must stay below outer
        E.project_annulus(x, geometry="euclidean", K=0.1, outer=0.2, gap=0.2)
    # a float32 gap below finfo(float32).eps would put 1 - gap on the boundary itself
    with pytest.raises(ValueError, match="gap"):
        E.project_annulus(x.float(), c=1.0, gap=1e-9)


def test_rsgd_step_and_fit_cones_use_the_gap():
    eps_k = C.inner_radius(0.1)
    u = torch.tensor([[0.3, 0.0], [0.0, 0.5]], dtype=F64)
    grad = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=F64)
    into_core = 0.25 / ((1 - 0.09) ** 2 / 4)  # the lr that moves u[0] to ||u|| = 0.05
    step = E.rsgd_step(u, grad, lr=into_core, gap=1e-5)  # into the core, then clipped
    assert abs(step[0].norm().item() - (eps_k + 1e-5)) < 1e-12 and step[0, 0] > 0
    across = E.rsgd_step(u, grad, lr=100.0, gap=1e-5)  # thrown across the origin and beyond
    assert abs(across[0].norm().item() - (1 - 1e-5)) < 1e-12 and across[0, 0] < 0
    fit = E.fit_cones(balanced_tree(2, 2), steps=3, gap=1e-3)
    r = fit.points.norm(dim=-1)
    assert r.min().item() >= eps_k + 1e-3 - 1e-12 and r.max().item() <= 1 - 1e-3 + 1e-12


def test_fit_cones_mini_batches():
    tree = balanced_tree(2, 2)
    edges = E.positive_pairs(tree, closure=False)  # 6 edges
    full = E.fit_cones(tree, steps=4, train_pairs=edges, seed=3)
    batched = E.fit_cones(tree, steps=4, train_pairs=edges, seed=3, batch_size=2)
    big = E.fit_cones(tree, steps=4, train_pairs=edges, seed=3, batch_size=100)
    assert torch.equal(full.points, big.points)  # batch_size >= P: the full batch
    assert not torch.equal(full.points, batched.points)
    again = E.fit_cones(tree, steps=4, train_pairs=edges, seed=3, batch_size=2)
    assert torch.equal(batched.points, again.points)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            E.fit_cones(tree, steps=1, batch_size=bad)


def test_fit_cones_batches_cover_every_pair_each_epoch(monkeypatch):
    tree = balanced_tree(2, 2)
    edges = E.positive_pairs(tree, closure=False)
    seen = []
    real = E.margin_loss

    def spy(points, positives, negatives, **kw):
        seen.append(positives.clone())
        return real(points, positives, negatives, **kw)

    monkeypatch.setattr(E, "margin_loss", spy)
    E.fit_cones(tree, steps=6, train_pairs=edges, batch_size=2)
    assert all(len(b) == 2 for b in seen)
    for epoch in (seen[:3], seen[3:]):
        got = sorted(map(tuple, torch.cat(epoch).tolist()))
        assert got == sorted(map(tuple, edges.tolist()))


def test_evaluate_cones_with_given_negatives():
    tree = balanced_tree(2, 2)
    pts = E.fit_cones(tree, steps=200, seed=0).points
    neg = E.non_entailed_pairs(tree)
    some = neg[:5]
    m_all = E.evaluate_cones(pts, tree)
    m_some = E.evaluate_cones(pts, tree, negatives=some)
    assert m_some.n_negative == 5 and m_all.n_negative == len(neg)
    hit = int((C.pair_energies(pts, some) <= 0).sum())
    assert abs(m_some.false_positive_rate - hit / 5) < 1e-15


# ----------------------------------------------------------------------------
# cones are antisymmetric: why symmetric positives can never reach zero loss
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("c", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("dim", [2, 5])
def test_a_cone_member_is_further_from_the_origin(c, dim, gen):
    """E(a, b) = 0, b != a  =>  d(o, b) > d(o, a): the cone lies beyond the perpendicular at a."""
    a = annulus_points(20000, dim, c, F64, gen, hi=0.9)
    b = annulus_points(20000, dim, c, F64, gen, hi=0.9)
    # put half of the b's inside the cone of a: on a geodesic leaving a at an angle
    # theta < psi(a) from the axis
    half = 10000
    axis = a[:half] / a[:half].norm(dim=-1, keepdim=True)
    side = torch.randn(half, dim, dtype=F64, generator=gen)
    side = side - (side * axis).sum(-1, keepdim=True) * axis
    side = side / side.norm(dim=-1, keepdim=True)
    theta = 0.95 * C.half_aperture(a[:half], c=c) * torch.rand(half, dtype=F64, generator=gen)
    u = theta.cos()[:, None] * axis + theta.sin()[:, None] * side
    length = 0.01 + 2 * torch.rand(half, 1, dtype=F64, generator=gen)
    lam = P.conformal_factor(a[:half], c=c, keepdim=True)
    b[:half] = P.expmap(a[:half], length * u / lam, c=c)
    inside = C.energy(a, b, c=c) == 0
    assert inside[:half].all() and inside.sum() >= half  # the members, and any random ones
    ra, rb = P.radius(a, c=c), P.radius(b, c=c)
    assert bool((rb[inside] > ra[inside]).all())
    # and then b's cone cannot contain a: E(b, a) >= pi/2 - psi(b) > 0
    psi_b = C.half_aperture(b, c=c)
    assert bool((C.energy(b[inside], a[inside], c=c) >= math.pi / 2 - psi_b[inside] - 1e-12).all())


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_symmetric_energy_has_a_positive_lower_bound(c, gen):
    """E(a, p) + E(p, a) >= min(pi/2 - psi(a), pi/2 - psi(p)) > 0 in the valid domain.

    If Xi(a, p) < pi/2, p lies beyond the perpendicular at a, so d(o, p) > d(o, a) and
    Xi(p, a) >= pi/2; otherwise E(a, p) >= pi/2 - psi(a).  So sibling positives sampled in both
    orders (HVSA's triplets by tree distance) keep Eq. (9) above zero.
    """
    a = annulus_points(20000, 3, c, F64, gen, hi=0.95)
    p = annulus_points(20000, 3, c, F64, gen, hi=0.95)
    # nearby pairs too, where both energies can be small
    p[:10000] = P.expmap(a[:10000], 0.05 * torch.randn(10000, 3, dtype=F64, generator=gen), c=c)
    p = E.project_annulus(p, c=c)
    both = C.energy(a, p, c=c) + C.energy(p, a, c=c)
    bound = torch.minimum(
        math.pi / 2 - C.half_aperture(a, c=c), math.pi / 2 - C.half_aperture(p, c=c)
    )
    assert bool((bound > 0).all())
    assert bool((both >= bound - 1e-12).all())
    # the same in MERU's Lorentz form
    la, lp = L.from_poincare(a, c=c), L.from_poincare(p, c=c)
    both_l = C.lorentz_energy(la, lp, c=c) + C.lorentz_energy(lp, la, c=c)
    torch.testing.assert_close(both_l, both, rtol=0, atol=1e-9)
