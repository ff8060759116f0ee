"""Accuracy of the Poincaré-ball operations near the boundary, against 40-digit references.

Near the boundary the textbook formulas for Möbius addition, the log map and the
gyration cancel catastrophically: with ``a = 1 - c‖x‖²`` of order ``1e-3`` (float32)
or ``1e-6`` (float64), ``(-x) ⊕ y`` for nearby ``x, y`` lost every digit of its
first coordinate.  The package's forms are cancellation-free, so their relative
error stays within a small multiple of the conditioning of the problem itself,
``eps / min(a, b)`` (rounding ``x`` and ``y`` to ``dtype`` alone perturbs ``a`` and
``b`` by that much).  The references are computed with mpmath from the *stored*
(rounded) inputs, with the textbook formulas, which are exact at 40 digits.
"""
from __future__ import annotations

import math

import mpmath
import pytest
import torch

from hyro_edu import poincare as P
from hyro_edu import wrapped_normal as W

mpmath.mp.dps = 40

# The measured worst case of the cancellation-free forms is about 2 x eps/min(a, b) over the
# pairs below; the textbook forms exceeded it by factors of 1e4 (float32) and 3e6 (float64).
CONDITION_FACTOR = 8.0


def _mp(t: torch.Tensor) -> list:
    return [mpmath.mpf(float(v)) for v in t.tolist()]


def _dot(x, y):
    return mpmath.fsum(a * b for a, b in zip(x, y))


def _ref_add(x: list, y: list, c) -> list:
    """The defining formula of x ⊕_c y (Ungar 2008), evaluated at 40 digits."""
    c = mpmath.mpf(c)
    xy, x2, y2 = _dot(x, y), _dot(x, x), _dot(y, y)
    den = 1 + 2 * c * xy + c * c * x2 * y2
    return [((1 + 2 * c * xy + c * y2) * a + (1 - c * x2) * b) / den for a, b in zip(x, y)]


def _ref_log(x: list, y: list, c) -> list:
    """log_x y = (2 / (sqrt(c) λ_x)) artanh(sqrt(c)‖w‖) w/‖w‖, w = (-x) ⊕ y (Ganea et al. 2018, Lemma 1)."""
    c = mpmath.mpf(c)
    w = _ref_add([-a for a in x], y, c)
    wn = mpmath.sqrt(_dot(w, w))
    factor = (1 - c * _dot(x, x)) / mpmath.sqrt(c) * mpmath.atanh(mpmath.sqrt(c) * wn) / wn
    return [factor * a for a in w]


def _ref_transport(x: list, y: list, v: list, c) -> list:
    """P_{x->y}(v) = (λ_x/λ_y) gyr[y, -x] v, the gyration by its definition
    gyr[u, v]w = -(u ⊕ v) ⊕ (u ⊕ (v ⊕ w)) applied to t·v (linear in w, t tiny).

    The nested sums cancel to O(t) and amplify rounding by up to 1/a²: 100 digits
    with t = 1e-40 leave more than 40 correct digits of the linear part."""
    with mpmath.workdps(100):
        c = mpmath.mpf(c)
        t = mpmath.mpf(10) ** -40
        mx = [-a for a in x]
        inner = _ref_add(y, _ref_add(mx, [t * a for a in v], c), c)
        g = _ref_add([-a for a in _ref_add(y, mx, c)], inner, c)
        ratio = (1 - c * _dot(y, y)) / (1 - c * _dot(x, x))
        return [a / t * ratio for a in g]


def _rel_err(got: torch.Tensor, ref: list) -> float:
    ref = [float(r) for r in ref]
    err = math.sqrt(sum((float(a) - b) ** 2 for a, b in zip(got.tolist(), ref)))
    return err / math.sqrt(sum(b * b for b in ref))


def _near_boundary_pairs(dtype, count=40, seed=0):
    """Pairs (x, y, c) with x within a relative gap of 1e-3 (float32) or 1e-6 (float64) of the
    boundary; half with y close to x (the cancelling case), half with y anywhere near the boundary."""
    g = torch.Generator().manual_seed(seed)
    decades = 3 if dtype == torch.float32 else 6
    out = []
    while len(out) < count:
        n = int(torch.randint(2, 6, (1,), generator=g))
        c = float(10 ** (2 * torch.rand(1, generator=g) - 1))
        gap = float(10 ** (-decades * torch.rand(1, generator=g)))
        u = torch.randn(n, dtype=torch.float64, generator=g)
        x = u / u.norm() * (1 - gap) / math.sqrt(c)
        if len(out) % 2 == 0:
            y = x + torch.randn(n, dtype=torch.float64, generator=g) * gap * float(torch.rand(1, generator=g))
        else:
            v = torch.randn(n, dtype=torch.float64, generator=g)
            y = v / v.norm() * (1 - float(10 ** (-3 * torch.rand(1, generator=g)))) / math.sqrt(c)
        x, y = x.to(dtype), y.to(dtype)
        # keep pairs whose stored values are strictly inside the ball
        if max(x.double().norm(), y.double().norm()) * math.sqrt(c) < 1:
            out.append((x, y, c))
    return out


def _condition(x, y, c, dtype) -> float:
    a = 1 - c * float(x.double().norm() ** 2)
    b = 1 - c * float(y.double().norm() ** 2)
    return torch.finfo(dtype).eps / min(a, b)


DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mobius_add_near_the_boundary_is_accurate(dtype):
    worst = 0.0
    for x, y, c in _near_boundary_pairs(dtype):
        got = P.mobius_add(-x, y, c=c, project=False)
        worst = max(worst, _rel_err(got, _ref_add(_mp(-x), _mp(y), c)) / _condition(x, y, c, dtype))
    assert worst < CONDITION_FACTOR


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_logmap_near_the_boundary_is_accurate(dtype):
    worst = 0.0
    for x, y, c in _near_boundary_pairs(dtype, seed=1):
        got = P.logmap(x, y, c=c, project=False)
        worst = max(worst, _rel_err(got, _ref_log(_mp(x), _mp(y), c)) / _condition(x, y, c, dtype))
    assert worst < CONDITION_FACTOR


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_parallel_transport_between_nearby_points_near_the_boundary_is_accurate(dtype):
    g = torch.Generator().manual_seed(2)
    worst = 0.0
    for x, y, c in _near_boundary_pairs(dtype, seed=2)[::2]:  # the nearby pairs
        v = torch.randn(x.shape, dtype=dtype, generator=g)
        got = P.parallel_transport(x, y, v, c=c, project=False)
        ref = _ref_transport(_mp(x), _mp(y), _mp(v), c)
        worst = max(worst, _rel_err(got, ref) / _condition(x, y, c, dtype))
    assert worst < CONDITION_FACTOR


def test_the_reported_float32_cases():
    """The two float32 cases of the independent float64 check (issue 11)."""
    x = torch.tensor([0.999, 0.0])
    y = torch.tensor([-0.5994, 0.7992])
    # ‖log_x y‖_x = d(x, y): 15.131 against 14.978 before
    length = P.conformal_factor(x, c=1.0) * P.logmap(x, y, c=1.0).norm()
    assert abs(length.item() / P.dist(x, y, c=1.0).item() - 1) < 1e-5
    assert _rel_err(P.logmap(x, y, c=1.0), _ref_log(_mp(x), _mp(y), 1)) < 1e-5
    # (-x) ⊕ y for nearby points: [0, 0.05006] against [-0.00249, 0.04990] before
    y = torch.tensor([0.999, 1e-4])
    got = P.mobius_add(-x, y, c=1.0)
    ref = [float(v) for v in _ref_add(_mp(-x), _mp(y), 1)]
    assert abs(got[0].item() - ref[0]) < 1e-4 * abs(ref[0])
    assert _rel_err(got, _ref_add(_mp(-x), _mp(y), 1)) < 1e-5


@pytest.mark.parametrize("sigma", [1.0, 0.3])
def test_wrapped_normal_log_density_near_the_boundary(sigma):
    """The log-density inherits the log map: float32 was 2.5 nats (sigma 1) and 26 nats (sigma 0.3)
    away from float64 at mu = (0.999, 0), z = (-0.5994, 0.7992)."""
    mu32, z32 = torch.tensor([0.999, 0.0]), torch.tensor([-0.5994, 0.7992])
    lp32 = W.poincare_log_prob(z32, mu32, sigma, c=1.0).item()
    lp64 = W.poincare_log_prob(z32.double(), mu32.double(), sigma, c=1.0).item()
    # float32 resolves a log-density of size |lp| to about |lp| * 1e-6; allow 10x that
    assert abs(lp32 - lp64) < 1e-5 * abs(lp64)


def test_near_boundary_gradients_are_finite_and_match_float64():
    x = torch.tensor([0.999, 0.0], dtype=torch.float64)
    y = torch.tensor([0.999, 1e-4], dtype=torch.float64)
    grads = {}
    for dtype in DTYPES:
        xd, yd = x.to(dtype).requires_grad_(), y.to(dtype).requires_grad_()
        P.logmap(xd, yd, c=1.0)[1].backward()
        grads[dtype] = torch.cat([xd.grad, yd.grad]).double()
        assert torch.isfinite(grads[dtype]).all()
    assert torch.allclose(grads[torch.float32], grads[torch.float64], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------
# mobius_matvec with one matrix per point
# ----------------------------------------------------------------------------
def test_mobius_matvec_batched_matrices_pair_each_point_with_its_matrix():
    g = torch.Generator().manual_seed(3)
    m = torch.randn(4, 3, 5, dtype=torch.float64, generator=g)
    x = 0.2 * torch.randn(4, 5, dtype=torch.float64, generator=g)
    out = P.mobius_matvec(m, x, c=0.7)
    assert out.shape == (4, 3)  # (4, 4, 3) before: every point with every matrix
    each = torch.stack([P.mobius_matvec(m[i], x[i], c=0.7) for i in range(4)])
    assert torch.allclose(out, each, atol=1e-14)
    # batch dimensions broadcast: one stack of matrices against a (2, 4, 5) batch of points
    xx = torch.stack([x, 0.5 * x])
    assert torch.allclose(P.mobius_matvec(m, xx, c=0.7)[0], out, atol=1e-14)
    with pytest.raises(ValueError, match="batch dimensions of m"):
        P.mobius_matvec(m, torch.zeros(3, 5, dtype=torch.float64), c=0.7)


# ----------------------------------------------------------------------------
# tensor curvatures must broadcast against the norms of the points
# ----------------------------------------------------------------------------
def test_a_curvature_per_point_needs_size_one_on_the_vector_axis():
    x = 0.1 * torch.randn(4, 3)
    y = 0.1 * torch.randn(4, 3)
    c = torch.tensor([0.5, 1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match=r"c must be .*shape \(4, 1\).*c.unsqueeze\(-1\)"):
        P.dist(x, y, c=c)  # (4, 4) before: every pair with every curvature
    per_point = P.dist(x, y, c=c.unsqueeze(-1))
    assert per_point.shape == (4,)
    for i in range(4):
        assert torch.allclose(per_point[i], P.dist(x[i], y[i], c=float(c[i])))


def test_a_curvature_that_does_not_broadcast_is_a_value_error_naming_c():
    x = 0.1 * torch.randn(4, 3)
    with pytest.raises(ValueError, match="c must be"):  # a bare RuntimeError before
        P.expmap0(x, c=torch.ones(5, 1))
    with pytest.raises(ValueError, match="c must be"):
        P.mobius_add(x, x, c=torch.ones(3))


def test_a_sweep_over_curvatures_in_leading_dimensions_is_allowed():
    x = 0.1 * torch.randn(4, 3)
    cs = torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1)
    out = P.radius(x, c=cs)
    assert out.shape == (3, 4)
    assert torch.allclose(out[2], P.radius(x, c=2.0))
