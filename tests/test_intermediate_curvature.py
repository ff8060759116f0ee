"""The intermediate curvature c3* of tree alignment (curvature -c, c > 0): D, golden section, IFT gradients."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import brentq

from hyro_edu import intermediate_curvature as IC

from .conftest import TOL

F64 = torch.float64
VARIANTS = ["official", "paper"]


def t64(x):
    return torch.tensor(x, dtype=F64)


def g_of(c3, c1, c2, r1, r2, variant="official"):
    return IC.objective_dc3(c3=t64(c3), c1=t64(c1), c2=t64(c2), r1=t64(r1), r2=t64(r2), variant=variant).item()


def solve64(c1, c2, r1, r2, **kw):
    """c3* by the module's search, all inputs float64 (python floats would give a float32 result)."""
    return IC.find_intermediate_curvature(c1=t64(c1), c2=t64(c2), r1=t64(r1), r2=t64(r2), **kw).c3.item()


def root_c3(c1, c2, r1, r2, variant, guess):
    """An independent oracle for an interior c3*: the root of g = ∂f/∂c3 by Brent's method, float64."""
    lo, hi = guess * (1 - 1e-3), guess * (1 + 1e-3)
    return brentq(lambda x: g_of(x, c1, c2, r1, r2, variant), lo, hi, xtol=1e-17, rtol=1e-15)


# ----------------------------------------------------------------------------
# D and its derivative
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("c", [0.005, 0.05, 0.5, 2.0])
@pytest.mark.parametrize("r", [0.3, 1.0, 10.0])
def test_distance_at_equal_curvatures_is_not_zero(c, r):
    # Neither variant vanishes at c3 = c1: D(c, c; r) = 1/(2c) (official), 1/(2 sqrt c) (paper).
    official = IC.manifold_distance(c1=c, c3=c, r=r, variant="official")
    paper = IC.manifold_distance(c1=c, c3=c, r=r, variant="paper")
    torch.testing.assert_close(official, torch.tensor(1 / (2 * c)), **TOL[torch.float32])
    torch.testing.assert_close(paper, torch.tensor(1 / (2 * math.sqrt(c))), **TOL[torch.float32])


def test_variants_differ_by_sqrt_c3(gen):
    c1 = torch.rand(50, dtype=F64, generator=gen) + 0.01
    c3 = torch.rand(50, dtype=F64, generator=gen) * 3 + 0.01
    r = torch.rand(50, dtype=F64, generator=gen) * 10 + 0.1
    paper = IC.manifold_distance(c1=c1, c3=c3, r=r, variant="paper")
    official = IC.manifold_distance(c1=c1, c3=c3, r=r, variant="official")
    torch.testing.assert_close(paper, c3.sqrt() * official, **TOL[F64])


def test_official_distance_is_a_lorentzian_gaussian_kl(gen):
    """D_official = <mu1 - mu3, mu1 - mu3>_L / 2 + 1/(2 c1), mu_c = exp^c_0(v), |v| = r.

    An independent oracle through hyro_edu.geometry.lorentz: -<mu1, mu3>_L = cosh((sqrt c3 - sqrt c1) r)
    / sqrt(c1 c3) for two points on one ray.  Fails for the paper's denominator 2 sqrt(c1 c3).
    """
    from hyro_edu import lorentz as L

    log_range = (math.log(0.005), math.log(5.0))
    c1 = torch.exp(torch.empty(40, dtype=F64).uniform_(*log_range, generator=gen))
    c3 = torch.exp(torch.empty(40, dtype=F64).uniform_(*log_range, generator=gen))
    v = torch.randn(40, 5, dtype=F64, generator=gen)
    v = v / v.norm(dim=-1, keepdim=True) * (0.2 + 4 * torch.rand(40, 1, dtype=F64, generator=gen))
    m1, m3 = L.expmap0(v, c=c1[:, None]), L.expmap0(v, c=c3[:, None])
    oracle = 0.5 * L.inner(m1 - m3, m1 - m3) + 0.5 / c1
    official = IC.manifold_distance(c1=c1, c3=c3, r=v.norm(dim=-1))
    # the Lorentz form cancels terms of size |m1|^2 + |m3|^2
    scale = (m1 * m1).sum(-1) + (m3 * m3).sum(-1)
    assert bool(((official - oracle).abs() < 1e-12 * scale).all())
    paper = IC.manifold_distance(c1=c1, c3=c3, r=v.norm(dim=-1), variant="paper")
    visible = ((c3.sqrt() - 1) * oracle).abs() > 1e-6 * scale  # where the two can differ
    assert visible.sum() > 20
    assert bool(((paper - oracle).abs() > 1e-7 * scale)[visible].all())


@pytest.mark.parametrize("variant", VARIANTS)
def test_distance_depends_on_r_only_through_rho(variant):
    # c1·D_official and sqrt(c1)·D_paper are functions of c3/c1 and rho = r sqrt(c1).
    ratio = t64([0.5, 0.9, 1.0, 1.3, 2.5])
    power = 1.0 if variant == "official" else 0.5
    values = []
    for c1 in [0.01, 0.3, 4.0]:
        d = IC.manifold_distance(c1=c1, c3=ratio * c1, r=2.0 / math.sqrt(c1), variant=variant)
        values.append(d * c1**power)
    torch.testing.assert_close(values[0], values[1], **TOL[F64])
    torch.testing.assert_close(values[0], values[2], **TOL[F64])


@pytest.mark.parametrize("variant", VARIANTS)
def test_closed_form_derivative_matches_autograd(variant, gen):
    c1 = torch.rand(40, dtype=F64, generator=gen) * 2 + 0.01
    c3 = (torch.rand(40, dtype=F64, generator=gen) * 2 + 0.01).requires_grad_(True)
    r = torch.rand(40, dtype=F64, generator=gen) * 20 + 0.1
    d = IC.manifold_distance(c1=c1, c3=c3, r=r, variant=variant)
    (auto,) = torch.autograd.grad(d.sum(), c3)
    closed = IC.manifold_distance_dc3(c1=c1, c3=c3.detach(), r=r, variant=variant)
    torch.testing.assert_close(closed, auto, **TOL[F64])


@pytest.mark.parametrize("c1", [0.01, 0.05, 0.5, 3.0])
@pytest.mark.parametrize("rho", [0.5, 1.0, 2.0, 10.0])
def test_proposition_1_stationarity(c1, rho):
    r = rho / math.sqrt(c1)
    # official: dD/dc3 = 0 at c3 = c1 for every r, second derivative (r² c1 - 1)/(4 c1³) (central differences)
    at = IC.manifold_distance_dc3(c1=t64(c1), c3=t64(c1), r=r, variant="official")
    assert abs(at.item()) < 1e-12 / c1**2
    h = 1e-5 * c1
    up = IC.manifold_distance_dc3(c1=t64(c1), c3=t64(c1 + h), r=r).item()
    down = IC.manifold_distance_dc3(c1=t64(c1), c3=t64(c1 - h), r=r).item()
    second = (up - down) / (2 * h)
    expected = (r * r * c1 - 1) / (4 * c1**3)
    assert abs(second - expected) <= 1e-6 * (abs(expected) + 1 / c1**2)
    # paper: dD/dc3 = 1/(4 c1^{3/2}) > 0 at c3 = c1: never stationary there
    paper = IC.manifold_distance_dc3(c1=t64(c1), c3=t64(c1), r=r, variant="paper").item()
    assert paper == pytest.approx(1 / (4 * c1**1.5), rel=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_objective_is_symmetric_and_unbounded_below(variant):
    kw = dict(c1=0.05, c2=0.2, r1=8.0, r2=3.0, variant=variant)
    c3 = t64([0.01, 0.05, 0.1, 0.3])
    f = IC.objective(c3=c3, **kw)
    swapped = IC.objective(c3=c3, c1=0.2, c2=0.05, r1=3.0, r2=8.0, variant=variant)
    torch.testing.assert_close(f, swapped, rtol=0, atol=0)
    # f -> -inf as c3 -> 0: no global minimum on (0, inf)
    tiny = IC.objective(c3=t64([1e-4, 1e-6, 1e-8]), **kw)
    assert (tiny.diff() < 0).all() and tiny[-1] < -1e3


def test_distance_saturates_instead_of_overflowing():
    c3 = torch.tensor([4.0], requires_grad=True)  # float32, (sqrt(c3) - sqrt(c1))·r = 1.9e3
    d = IC.manifold_distance(c1=0.01, c3=c3, r=1000.0)
    d.backward()
    assert torch.isfinite(d).all() and torch.isfinite(c3.grad).all()


# ----------------------------------------------------------------------------
# golden-section search
# ----------------------------------------------------------------------------
def test_golden_section_finds_a_quadratic_minimum_and_shrinks_by_phi():
    m = t64([0.1, 0.37, 0.5, 0.99])
    lo, hi = torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64)
    res = IC.golden_section_search(lambda x: (x - m) ** 2, lo, hi, tol=1e-10, max_iter=200)
    assert ((res.a <= m) & (m <= res.b)).all()
    assert ((res.b - res.a) < 1e-10).all()
    # the width after k steps is phi^k exactly (up to rounding): k = first k with phi^k < tol
    k = math.ceil(math.log(1e-10) / math.log(IC.GOLDEN))
    assert (res.iterations == k).all()
    torch.testing.assert_close(res.b - res.a, torch.full((4,), IC.GOLDEN**k, dtype=F64), rtol=1e-6, atol=0)


def test_golden_section_keeps_the_end_of_a_monotone_function():
    lo, hi = t64([0.2]), t64([0.9])
    up = IC.golden_section_search(lambda x: x**3, lo, hi)
    down = IC.golden_section_search(lambda x: -x, lo, hi)
    assert up.a.item() == 0.2 and up.b.item() > 0.2
    assert down.b.item() == 0.9 and down.a.item() < 0.9


def test_golden_section_stops_at_max_iter():
    res = IC.golden_section_search(lambda x: x**2, t64([-1.0]), t64([1.0]), tol=1e-12, max_iter=5)
    assert res.iterations.item() == 5
    assert (res.b - res.a).item() == pytest.approx(2 * IC.GOLDEN**5, rel=1e-12)


def test_batched_search_equals_elementwise_search():
    c1 = t64([0.446171, 0.05, 0.5, 0.01, 2.0])
    c2 = t64([0.454308, 0.025, 0.5, 0.2, 0.3])
    r1 = t64([2.0, 4.4721, 1.5, 30.0, 1.0])
    r2 = t64([10.0, 8.9443, 1.5, 3.0, 5.0])
    batch = IC.find_intermediate_curvature(c1=c1, c2=c2, r1=r1, r2=r2)
    for i in range(5):
        one = IC.find_intermediate_curvature(c1=c1[i], c2=c2[i], r1=r1[i], r2=r2[i])
        assert one.c3.item() == batch.c3[i].item()
        assert one.iterations.item() == batch.iterations[i].item()


@pytest.mark.parametrize("variant", VARIANTS)
def test_solution_is_symmetric_in_the_two_manifolds(variant):
    a = IC.find_intermediate_curvature(c1=0.05, c2=0.2, r1=8.0, r2=3.0, variant=variant)
    b = IC.find_intermediate_curvature(c1=0.2, c2=0.05, r1=3.0, r2=8.0, variant=variant)
    assert a.c3.item() == b.c3.item()


# ----------------------------------------------------------------------------
# worked examples (official code's comments; an independent float64 re-implementation)
# ----------------------------------------------------------------------------
C_I, C_T = 0.446171, 0.454308
# (r_i, r_t, c_m* float64, dc/dc_i, dc/dc_t, official code's float32 comments: c_m*, dc/dc_i, dc/dc_t)
WORKED = [
    (2, 2, 0.450232, 0.5017, 0.4983, (0.450436, 0.501852, 0.498446)),
    (5, 5, 0.450222, 0.5043, 0.4957, (0.450214, 0.504300, 0.495705)),
    (10, 10, 0.450222, 0.5045, 0.4956, (0.450206, 0.504450, 0.495522)),
    (2, 10, 0.454161, 0.0182, 0.9814, (0.454229, 0.018185, 0.981723)),
    (10, 50, 0.453999, 0.0384, 0.9616, (0.454004, 0.038396, 0.961622)),
]


@pytest.mark.parametrize("row", WORKED, ids=lambda r: f"r={r[0]},{r[1]}")
def test_worked_examples_float64(row):
    ri, rt, c_m, g_i, g_t, _ = row
    ci, ct = t64(C_I).requires_grad_(True), t64(C_T).requires_grad_(True)
    c3 = IC.optimal_curvature(c1=ci, c2=ct, r1=float(ri), r2=float(rt))
    c3.backward()
    # c_m* is printed to 6 decimals (rounding 5e-7) and the default search stops at a bracket
    # narrower than tol = 1e-6, whose midpoint is within 5e-7 of the minimiser: 1e-6 in all,
    # doubled for safety.
    assert abs(c3.item() - c_m) < 2e-6
    # the gradients are printed to 4 decimals (rounding 5e-5); evaluating them at a c3 that is
    # off by <= 5e-7 moves them by < 1e-5 (their derivative in c3 is O(10) here).
    assert abs(ci.grad.item() - g_i) < 6e-5 and abs(ct.grad.item() - g_t) < 6e-5


@pytest.mark.parametrize("row", WORKED, ids=lambda r: f"r={r[0]},{r[1]}")
def test_worked_examples_float32_search_agrees_with_the_code_comments(row):
    ri, rt, _, _, _, (c_m, g_i, g_t) = row
    ci = torch.tensor(C_I, requires_grad=True)
    ct = torch.tensor(C_T, requires_grad=True)
    c3 = IC.optimal_curvature(c1=ci, c2=ct, r1=float(ri), r2=float(rt), search_dtype=None)
    c3.backward()
    # A float32 search resolves the minimiser of this flat f only to ~sqrt(eps32)·c ≈ 1.5e-4
    # (float64 and the code's float32 comments differ by 2e-4 for r = 2); different
    # float32 rounding sequences can land anywhere in that flat band.
    assert abs(c3.item() - c_m) < 3e-4
    assert abs(ci.grad.item() - g_i) < 5e-4 and abs(ct.grad.item() - g_t) < 5e-4


# ----------------------------------------------------------------------------
# implicit gradients
# ----------------------------------------------------------------------------
INTERIOR = [  # (c1, c2, r1, r2, variant): interior solutions
    (0.446171, 0.454308, 2.0, 10.0, "official"),
    (0.05, 0.2, 12.0, 6.0, "official"),
    (0.5, 0.1, 3.0, 9.0, "official"),
    (0.05, 0.2, 60.0, 30.0, "paper"),
    (1.0, 2.0, 9.0, 7.0, "paper"),
]


def _implicit_grads(c1, c2, r1, r2, variant, **kw):
    xs = [t64(v).requires_grad_(True) for v in (c1, c2, r1, r2)]
    c3 = IC.optimal_curvature(c1=xs[0], c2=xs[1], r1=xs[2], r2=xs[3], variant=variant, **kw)
    c3.backward()
    return c3.item(), [x.grad.item() for x in xs]


@pytest.mark.parametrize("case", INTERIOR)
def test_implicit_gradient_matches_central_differences_of_the_root(case):
    c1, c2, r1, r2, variant = case
    info = IC.find_intermediate_curvature(c1=t64(c1), c2=t64(c2), r1=t64(r1), r2=t64(r2), variant=variant)
    assert not info.at_lower and not info.at_upper
    root = root_c3(c1, c2, r1, r2, variant, info.c3.item())
    formula = IC.implicit_gradients(c3=t64(root), c1=t64(c1), c2=t64(c2), r1=t64(r1), r2=t64(r2), variant=variant)
    c3, grads = _implicit_grads(*case, tol=1e-13, max_iter=200)
    args = [c1, c2, r1, r2]
    for i in range(4):
        h = 1e-6 * args[i]
        plus, minus = list(args), list(args)
        plus[i] += h
        minus[i] -= h
        fd = (root_c3(*plus, variant, root) - root_c3(*minus, variant, root)) / (2 * h)
        # Brent's roots of g are accurate to ~1e-15 relative, so the central difference has an
        # error ~1e-9 + O(h²): the formula at the exact root must agree to 1e-6.
        assert fd == pytest.approx(formula[i].item(), rel=1e-6, abs=1e-9), (i, fd, formula[i])
        # The autograd function evaluates it at the searched c3, which a float64 golden-section
        # search puts within ~1e-8 (relative) of the root (f is flat to rounding there).
        assert abs(c3 - root) < 1e-7 * root
        assert fd == pytest.approx(grads[i], rel=1e-5, abs=1e-8), (i, fd, grads[i])


@pytest.mark.parametrize("case", INTERIOR[:3])
def test_implicit_gradient_matches_central_differences_of_the_search(case):
    c1, c2, r1, r2, variant = case
    _, grads = _implicit_grads(*case)
    args = [c1, c2, r1, r2]
    for i, grad in enumerate(grads[:2]):
        h = 1e-3 * args[i]
        plus, minus = list(args), list(args)
        plus[i] += h
        minus[i] -= h
        kw = dict(variant=variant, tol=1e-12, max_iter=200)
        fd = (solve64(*plus, **kw) - solve64(*minus, **kw)) / (2 * h)
        # the float64 search locates the flat minimum to ~1e-8·c (f is flat to rounding over
        # sqrt(eps64) relative width); divided by 2h = 2e-3·c that is ~1e-5, plus O(h²) curvature.
        assert fd == pytest.approx(grad, abs=2e-4), (i, fd, grad)


@pytest.mark.parametrize("case", INTERIOR)
def test_implicit_gradient_equals_a_differentiated_newton_step(case):
    # One Newton step c3 - g/g' from the (detached) minimiser, differentiated by autograd:
    # at g = 0 its derivative is exactly -(∂g/∂θ)/(∂g/∂c3), the implicit-function formula.
    c1, c2, r1, r2, variant = case
    c3, grads = _implicit_grads(*case, tol=1e-13, max_iter=200)
    xs = [t64(v).requires_grad_(True) for v in (c1, c2, r1, r2)]
    c3t = t64(c3).requires_grad_(True)
    g = IC.objective_dc3(c3=c3t, c1=xs[0], c2=xs[1], r1=xs[2], r2=xs[3], variant=variant)
    (gp,) = torch.autograd.grad(g, c3t, create_graph=True)
    newton = c3t.detach() - g / gp
    newton_grads = torch.autograd.grad(newton, xs)
    for a, b in zip(grads, newton_grads):
        # the search leaves c3 ~1e-8 (relative) from the root; g(c3) = O(1e-8·g'·c3) then enters
        # the Newton step's derivative through the g·∂(1/g')/∂θ term
        assert b.item() == pytest.approx(a, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("c1", [0.01, 0.2, 3.0])
@pytest.mark.parametrize("kappa", [1.3, 4.0])
def test_implicit_gradient_is_scale_invariant(c1, kappa, variant):
    # c3*(λ c1, λ c2, r1/sqrt λ, r2/sqrt λ) = λ c3*: the derivative along that direction is c3*.
    c2, r1, r2 = kappa * c1, 8.0 / math.sqrt(c1), 6.0 / math.sqrt(kappa * c1)
    info = IC.find_intermediate_curvature(c1=t64(c1), c2=t64(c2), r1=t64(r1), r2=t64(r2), variant=variant)
    assert not info.at_lower and not info.at_upper  # an interior case, where the IFT applies
    c3, (g1, g2, gr1, gr2) = _implicit_grads(c1, c2, r1, r2, variant, tol=1e-13 * c1, max_iter=200)
    assert c1 * g1 + c2 * g2 - 0.5 * (r1 * gr1 + r2 * gr2) == pytest.approx(c3, rel=1e-7)


def test_unrolled_gradient_is_the_derivative_of_the_bracket():
    # Interior solution: the unrolled gradient is that of a fixed affine combination of lo and hi,
    # (1 - t)·0.9·min + t·1.1·max with t = (c3 - lo)/(hi - lo), and not dc3*/dc.
    kw = dict(r1=2.0, r2=2.0, tol=1e-12, max_iter=200)
    ci, ct = t64(C_I).requires_grad_(True), t64(C_T).requires_grad_(True)
    c3 = IC.optimal_curvature(c1=ci, c2=ct, gradient="unrolled", **kw)
    c3.backward()
    lo, hi = 0.9 * C_I, 1.1 * C_T
    t = (c3.item() - lo) / (hi - lo)
    assert ci.grad.item() == pytest.approx((1 - t) * 0.9, rel=1e-9)
    assert ct.grad.item() == pytest.approx(t * 1.1, rel=1e-9)
    _, implicit = _implicit_grads(C_I, C_T, 2.0, 2.0, "official")
    assert abs(ci.grad.item() - implicit[0]) > 1e-2  # 0.454 vs 0.502


@pytest.mark.parametrize(
    "case",
    [
        (0.5, 0.5, math.sqrt(2), math.sqrt(2), "official"),  # the reference's caveat: c3* = 0.45
        (0.05, 0.025, 4.4721, 8.9443, "official"),  # c3* = 0.9·0.025 = 0.0225
        (0.3, 0.1, 1.0, 1.0, "paper"),
        (0.1, 0.3, 0.5, 0.5, "official"),  # upper boundary
    ],
)
def test_boundary_gradient_is_that_of_the_boundary_and_matches_unrolling(case):
    c1, c2, r1, r2, variant = case
    info = IC.find_intermediate_curvature(c1=c1, c2=c2, r1=r1, r2=r2, variant=variant)
    assert bool(info.at_lower) != bool(info.at_upper)
    xs = [t64(v).requires_grad_(True) for v in (c1, c2)]
    c3 = IC.optimal_curvature(c1=xs[0], c2=xs[1], r1=r1, r2=r2, variant=variant)
    (3.0 * c3).backward()  # grad_output = 3 must multiply the boundary derivative
    if info.at_lower:
        assert c3.item() == pytest.approx(0.9 * min(c1, c2), rel=1e-15)
        weights = [0.5, 0.5] if c1 == c2 else [float(c1 < c2), float(c2 < c1)]
        expected = [3 * 0.9 * w for w in weights]
    else:
        assert c3.item() == pytest.approx(1.1 * max(c1, c2), rel=1e-15)
        expected = [3 * 1.1 * float(c1 > c2), 3 * 1.1 * float(c2 > c1)]
    assert [x.grad.item() for x in xs] == pytest.approx(expected, rel=1e-12)
    # unrolled autograd through a long search converges to the same boundary derivative
    ys = [t64(v).requires_grad_(True) for v in (c1, c2)]
    u = IC.optimal_curvature(
        c1=ys[0], c2=ys[1], r1=r1, r2=r2, variant=variant, gradient="unrolled", tol=1e-13, max_iter=300
    )
    (3.0 * u).backward()
    assert [y.grad.item() for y in ys] == pytest.approx(expected, abs=1e-9)
    if c1 != c2:  # central differences: the boundary moves with the smaller (larger) curvature
        h = 1e-6
        for i in range(2):
            p, m = [c1, c2], [c1, c2]
            p[i] += h
            m[i] -= h
            fd = (solve64(*p, r1, r2, variant=variant) - solve64(*m, r1, r2, variant=variant)) / (2 * h)
            assert 3 * fd == pytest.approx(expected[i], abs=1e-6)


def test_minmax_interval_with_equal_curvatures():
    c = t64(0.3).requires_grad_(True)
    d = t64(0.3).requires_grad_(True)
    c3 = IC.optimal_curvature(c1=c, c2=d, r1=2.0, r2=5.0, interval="minmax")
    c3.backward()
    assert c3.item() == 0.3 and c.grad.item() == 0.5 and d.grad.item() == 0.5


@given(
    c1=st.floats(1e-3, 10.0),
    kappa=st.floats(1.0, 20.0),
    r1=st.floats(0.05, 30.0),
    r2=st.floats(0.05, 30.0),
    variant=st.sampled_from(VARIANTS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    interval=st.sampled_from(["official", "minmax"]),
)
def test_solution_in_interval_and_gradients_finite(c1, kappa, r1, r2, variant, dtype, interval):
    xs = [torch.tensor(v, dtype=dtype, requires_grad=True) for v in (c1, kappa * c1, r1, r2)]
    c3 = IC.optimal_curvature(c1=xs[0], c2=xs[1], r1=xs[2], r2=xs[3], variant=variant, interval=interval)
    c3.backward()
    lo, hi = IC.search_interval(c1=xs[0].detach(), c2=xs[1].detach(), interval=interval)
    assert c3.dtype == dtype and lo.item() <= c3.item() <= hi.item()
    assert all(torch.isfinite(x.grad) for x in xs)


def test_half_precision_inputs_are_computed_in_float32():
    c3 = IC.optimal_curvature(c1=torch.tensor(0.5, dtype=torch.float16), c2=0.25, r1=3.0, r2=4.0)
    assert c3.dtype == torch.float32


# ----------------------------------------------------------------------------
# the official code's r
# ----------------------------------------------------------------------------
def test_rescale_radii_example_and_properties(gen):
    r1, r2 = IC.rescale_radii(0.4, 0.8, c1=0.05, c2=0.025)
    assert r1.item() == pytest.approx(math.sqrt(20), rel=1e-6) and r2.item() == pytest.approx(math.sqrt(80), rel=1e-6)
    raw1 = torch.rand(100, dtype=F64, generator=gen) + 0.01
    raw2 = torch.rand(100, dtype=F64, generator=gen) + 0.01
    c1 = torch.rand(100, dtype=F64, generator=gen) * 0.5 + 0.005
    c2 = torch.rand(100, dtype=F64, generator=gen) * 0.5 + 0.005
    s1, s2 = IC.rescale_radii(raw1, raw2, c1=c1, c2=c2)
    torch.testing.assert_close(s1 / s2, raw1 / raw2, **TOL[F64])
    rho = torch.stack([s1 * c1.sqrt(), s2 * c2.sqrt()])
    assert (rho >= 1 - 1e-12).all()
    torch.testing.assert_close(rho.min(0).values, torch.ones(100, dtype=F64), **TOL[F64])


def test_mean_feature_norm():
    e = torch.eye(3, dtype=F64)
    same = e[0].expand(4, 2, 3)
    assert IC.mean_feature_norm(same).item() == pytest.approx(1.0)
    opposite = torch.stack([e[0], -e[0]])
    assert IC.mean_feature_norm(opposite).item() == 0.0
    padded = torch.stack([e[0], e[0], torch.zeros(3, dtype=F64)])  # zero-padded slot shrinks r
    assert IC.mean_feature_norm(padded).item() == pytest.approx(2 / 3)
    assert IC.mean_feature_norm(same.transpose(0, 2), dim=0).item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
GOOD = dict(c1=0.05, c2=0.2, r1=5.0, r2=5.0)


@pytest.mark.parametrize("name", ["c1", "c2"])
@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_curvature(name, bad):
    with pytest.raises(ValueError, match=rf"{name} must be finite and > 0"):
        IC.optimal_curvature(**{**GOOD, name: bad})
    with pytest.raises(ValueError, match=rf"{name} must be finite and > 0"):
        IC.find_intermediate_curvature(**{**GOOD, name: torch.tensor([0.1, bad])})


@pytest.mark.parametrize("name", ["r1", "r2"])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_radius(name, bad):
    with pytest.raises(ValueError, match=rf"{name} must be finite and > 0"):
        IC.optimal_curvature(**{**GOOD, name: bad})


def test_bad_distance_arguments():
    with pytest.raises(ValueError, match=r"c3 must be finite and > 0"):
        IC.manifold_distance(c1=0.1, c3=0.0, r=1.0)
    with pytest.raises(ValueError, match=r"r must be finite and > 0"):
        IC.manifold_distance_dc3(c1=0.1, c3=0.1, r=-1.0)
    with pytest.raises(ValueError, match=r"variant must be one of \('official', 'paper'\)"):
        IC.manifold_distance(c1=0.1, c3=0.1, r=1.0, variant="code")


@pytest.mark.parametrize("interval", [(1.1, 1.2), (0.9, 0.95), (0.0, 1.1), (float("nan"), 1.0)])
def test_interval_must_contain_the_curvatures(interval):
    with pytest.raises(ValueError, match=r"interval must contain the curvatures"):
        IC.optimal_curvature(**GOOD, interval=interval)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(interval="wide"), r"interval must be one of \('official', 'minmax'\)"),
        (dict(gradient="unroll"), r"gradient must be one of \('implicit', 'unrolled'\)"),
        (dict(tol=0.0), r"tol must be finite and > 0"),
        (dict(max_iter=0), r"max_iter must be an integer >= 1"),
        (dict(search_dtype=torch.float16), r"search_dtype must be"),
        (dict(r1=1e4), r"r1 is too large for these curvatures"),
        (dict(c1=torch.ones(2), c2=torch.ones(3)), r"c1, c2, r1, r2 must broadcast"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IC.optimal_curvature(**{**GOOD, **kwargs})
