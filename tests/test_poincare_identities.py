"""Gyrovector identities and Riemannian properties of the Poincaré ball (curvature -c, c > 0)."""
from __future__ import annotations

import math

import pytest
import torch

from hyro_edu import poincare as P

from .conftest import TOL, ball_points

N, D = 32, 6


@pytest.fixture
def pts(c, dtype, gen):
    return (
        ball_points(N, D, c, dtype, generator=gen),
        ball_points(N, D, c, dtype, generator=gen),
        ball_points(N, D, c, dtype, generator=gen),
    )


def close(a, b, dtype, scale=1.0):
    tol = {k: v * scale for k, v in TOL[dtype].items()}
    torch.testing.assert_close(a, b, **tol)


def test_mobius_add_neutral_and_inverse(pts, c, dtype):
    a, _, _ = pts
    zero = torch.zeros_like(a)
    close(P.mobius_add(a, zero, c=c), a, dtype)
    close(P.mobius_add(zero, a, c=c), a, dtype)
    close(P.mobius_add(-a, a, c=c), zero, dtype)


def test_left_cancellation(pts, c, dtype):
    a, b, _ = pts
    close(P.mobius_add(-a, P.mobius_add(a, b, c=c), c=c), b, dtype, scale=10)


def test_gyrocommutativity(pts, c, dtype):
    a, b, _ = pts
    lhs = P.mobius_add(a, b, c=c)
    rhs = P.gyration(a, b, P.mobius_add(b, a, c=c), c=c)
    close(lhs, rhs, dtype, scale=10)


def test_gyration_closed_form_equals_its_definition(pts, c, dtype):
    u, v, w = pts
    w = 0.5 * w  # a point, so the definition through Möbius additions applies
    definition = P.mobius_add(-P.mobius_add(u, v, c=c), P.mobius_add(u, P.mobius_add(v, w, c=c), c=c), c=c)
    close(P.gyration(u, v, w, c=c), definition, dtype, scale=20)


def test_gyration_is_orthogonal_and_trivial_at_zero(pts, c, dtype, gen):
    u, v, _ = pts
    w1 = torch.randn(N, D, dtype=dtype, generator=gen)
    w2 = torch.randn(N, D, dtype=dtype, generator=gen)
    g1, g2 = P.gyration(u, v, w1, c=c), P.gyration(u, v, w2, c=c)
    close((g1 * g2).sum(-1), (w1 * w2).sum(-1), dtype, scale=10)
    close(P.gyration(u, torch.zeros_like(v), w1, c=c), w1, dtype)
    close(P.gyration(torch.zeros_like(u), v, w1, c=c), w1, dtype)


def test_scalar_multiplication_laws(pts, c, dtype):
    x, _, _ = pts
    close(P.mobius_scalar_mul(1.0, x, c=c), x, dtype)
    r, s = 0.7, -1.3
    close(P.mobius_scalar_mul(r * s, x, c=c), P.mobius_scalar_mul(r, P.mobius_scalar_mul(s, x, c=c), c=c), dtype, 10)
    # scalar distributive law: (r + s) ⊗ x = (r ⊗ x) ⊕ (s ⊗ x)
    lhs = P.mobius_scalar_mul(r + s, x, c=c)
    rhs = P.mobius_add(P.mobius_scalar_mul(r, x, c=c), P.mobius_scalar_mul(s, x, c=c), c=c)
    close(lhs, rhs, dtype, 10)


def test_repeated_addition_is_scalar_multiplication(c, dtype, gen):
    x = ball_points(N, D, c, dtype, max_frac=0.3, generator=gen)
    total = x
    for _ in range(2):
        total = P.mobius_add(total, x, c=c)
    close(total, P.mobius_scalar_mul(3.0, x, c=c), dtype, 10)


def test_matvec_is_exp_of_linear_map_of_log(pts, c, dtype, gen):
    x, _, _ = pts
    m = torch.randn(4, D, dtype=dtype, generator=gen) / math.sqrt(D)
    expected = P.expmap0(P.logmap0(x, c=c) @ m.T, c=c)
    close(P.mobius_matvec(m, x, c=c), expected, dtype, 10)


def test_matvec_composes_and_commutes_with_orthogonal_maps(pts, c, dtype, gen):
    x, _, _ = pts
    m = torch.randn(D, D, dtype=dtype, generator=gen) / math.sqrt(D)
    n = torch.randn(D, D, dtype=dtype, generator=gen) / math.sqrt(D)
    lhs = P.mobius_matvec(m @ n, x, c=c)
    rhs = P.mobius_matvec(m, P.mobius_matvec(n, x, c=c), c=c)
    close(lhs, rhs, dtype, 10)
    q, _ = torch.linalg.qr(torch.randn(D, D, dtype=dtype, generator=gen))
    close(P.mobius_matvec(q, x, c=c), x @ q.T, dtype, 10)
    close(P.mobius_matvec(torch.eye(D, dtype=dtype), x, c=c), x, dtype)


def test_matvec_of_a_zero_image_is_zero(c, dtype):
    x = torch.tensor([[0.1, 0.2, 0.0]], dtype=dtype)
    m = torch.tensor([[0.0, 0.0, 1.0]], dtype=dtype)  # m x = 0
    out = P.mobius_matvec(m, x, c=c)
    assert torch.equal(out, torch.zeros(1, 1, dtype=dtype))


def test_exp_log_round_trips(pts, c, dtype, gen):
    x, y, _ = pts
    v = torch.randn(N, D, dtype=dtype, generator=gen) * 0.5 / c**0.5
    close(P.logmap0(P.expmap0(v, c=c), c=c), v, dtype, 20)
    close(P.expmap0(P.logmap0(x, c=c), c=c), x, dtype, 10)
    close(P.expmap(x, P.logmap(x, y, c=c), c=c), y, dtype, 50)
    u = torch.randn(N, D, dtype=dtype, generator=gen) * 0.1 / c**0.5
    close(P.logmap(x, P.expmap(x, u, c=c), c=c), u, dtype, 100)


def test_maps_at_origin_are_special_cases(pts, c, dtype, gen):
    x, _, _ = pts
    zero = torch.zeros_like(x)
    v = torch.randn(N, D, dtype=dtype, generator=gen)
    close(P.expmap(zero, v, c=c), P.expmap0(v, c=c), dtype)
    close(P.logmap(zero, x, c=c), P.logmap0(x, c=c), dtype)


def test_distance_is_norm_of_log(pts, c, dtype):
    x, y, _ = pts
    close(P.dist(x, y, c=c), P.tangent_norm(x, P.logmap(x, y, c=c), c=c), dtype, 20)
    close(P.radius(x, c=c), 2 * P.logmap0(x, c=c).norm(dim=-1), dtype, 10)
    close(P.radius(x, c=c), P.dist(torch.zeros_like(x), x, c=c), dtype)


def test_distance_matches_arcosh_formula(pts, c, dtype):
    x, y, _ = pts
    x64, y64 = x.double(), y.double()
    arg = 1 + 2 * c * ((x64 - y64) ** 2).sum(-1) / ((1 - c * (x64**2).sum(-1)) * (1 - c * (y64**2).sum(-1)))
    expected = torch.acosh(arg) / math.sqrt(c)
    close(P.dist(x, y, c=c), expected.to(dtype), dtype, 20)


def test_distance_is_a_metric_and_translation_invariant(pts, c, dtype):
    x, y, z = pts
    dxy, dyx = P.dist(x, y, c=c), P.dist(y, x, c=c)
    close(dxy, dyx, dtype, 10)
    assert torch.all(P.dist(x, x, c=c) <= 1e-3 if dtype == torch.float32 else P.dist(x, x, c=c) <= 1e-6)
    slack = 1e-4 if dtype == torch.float32 else 1e-9
    assert torch.all(P.dist(x, z, c=c) <= dxy + P.dist(y, z, c=c) + slack * (1 + dxy))
    a = 0.5 * z
    close(P.dist(P.mobius_add(a, x, c=c), P.mobius_add(a, y, c=c), c=c), dxy, dtype, 50)


def test_geodesic_has_constant_speed(pts, c, dtype):
    x, y, _ = pts
    d = P.dist(x, y, c=c)
    close(P.geodesic(0.0, x, y, c=c), x, dtype)
    close(P.geodesic(1.0, x, y, c=c), y, dtype, 50)
    for s, t in [(0.25, 0.5), (0.1, 0.9)]:
        gs, gt = P.geodesic(s, x, y, c=c), P.geodesic(t, x, y, c=c)
        close(P.dist(x, gt, c=c), t * d, dtype, 50)
        close(P.dist(gs, gt, c=c), (t - s) * d, dtype, 50)


def test_geodesic_midpoint_satisfies_triangle_equality(pts, c, dtype):
    x, y, _ = pts
    m = P.geodesic(0.5, x, y, c=c)
    close(P.dist(x, m, c=c) + P.dist(m, y, c=c), P.dist(x, y, c=c), dtype, 50)


def test_parallel_transport_is_an_isometry(pts, c, dtype, gen):
    x, y, _ = pts
    u = torch.randn(N, D, dtype=dtype, generator=gen)
    v = torch.randn(N, D, dtype=dtype, generator=gen)
    pu, pv = P.parallel_transport(x, y, u, c=c), P.parallel_transport(x, y, v, c=c)
    close(P.inner(y, pu, pv, c=c), P.inner(x, u, v, c=c), dtype, 20)
    close(P.parallel_transport(y, x, pu, c=c), u, dtype, 20)
    zero = torch.zeros_like(x)
    close(P.parallel_transport(zero, y, u, c=c), (1 - c * (y * y).sum(-1, keepdim=True)) * u, dtype, 10)


def test_conformal_factor_at_origin_is_two(c, dtype):
    assert torch.all(P.conformal_factor(torch.zeros(3, 4, dtype=dtype), c=c) == 2)


def test_angles_are_euclidean(pts, c, dtype, gen):
    """Conformality: the Riemannian angle between tangent vectors equals the Euclidean one."""
    x, _, _ = pts
    u = torch.randn(N, D, dtype=dtype, generator=gen)
    v = torch.randn(N, D, dtype=dtype, generator=gen)
    riem = P.inner(x, u, v, c=c) / (P.tangent_norm(x, u, c=c) * P.tangent_norm(x, v, c=c))
    eucl = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    close(riem, eucl, dtype, 10)


def test_euclidean_limit_as_curvature_vanishes(gen):
    x = torch.randn(10, 3, dtype=torch.float64, generator=gen)
    y = torch.randn(10, 3, dtype=torch.float64, generator=gen)
    c = 1e-10
    torch.testing.assert_close(P.dist(x, y, c=c), 2 * (x - y).norm(dim=-1), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(P.mobius_add(x, y, c=c), x + y, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(P.expmap0(x, c=c), x, rtol=1e-6, atol=1e-8)


def test_hyperclip_radius_theorem(pts, c, dtype, gen):
    """HyperCLIP supplement: Rad(s ⊗ x) = |s| Rad(x) (S-4); Rad(S ⊗ x) = ‖Sx‖/‖x‖ Rad(x) (S-5)."""
    x, _, _ = pts
    x = 0.3 * x  # keep s ⊗ x away from the projection margin
    for s in (0.5, 1.7, -2.0):
        close(P.radius(P.mobius_scalar_mul(s, x, c=c), c=c), abs(s) * P.radius(x, c=c), dtype, 20)
    S = torch.eye(D, dtype=dtype) + 0.3 * torch.randn(D, D, dtype=dtype, generator=gen)
    ratio = (x @ S.T).norm(dim=-1) / x.norm(dim=-1)
    close(P.radius(P.mobius_matvec(S, x, c=c), c=c), ratio * P.radius(x, c=c), dtype, 20)
    q, _ = torch.linalg.qr(torch.randn(D, D, dtype=dtype, generator=gen))
    close(P.radius(x @ q.T, c=c), P.radius(x, c=c), dtype, 10)


def test_non_default_dim(c, dtype, gen):
    x = ball_points(N, D, c, dtype, generator=gen)
    y = ball_points(N, D, c, dtype, generator=gen)
    m = torch.randn(3, D, dtype=dtype, generator=gen)
    close(P.mobius_add(x.T, y.T, c=c, dim=0), P.mobius_add(x, y, c=c).T, dtype)
    close(P.dist(x.T, y.T, c=c, dim=0), P.dist(x, y, c=c), dtype)
    close(P.mobius_matvec(m, x.T, c=c, dim=0), P.mobius_matvec(m, x, c=c).T, dtype)
    close(P.expmap(x.T, y.T, c=c, dim=0), P.expmap(x, y, c=c).T, dtype)


def test_projection_leaves_interior_points_unchanged_and_is_idempotent(c, dtype, gen):
    from hyro_edu.core.numerics import max_ball_norm

    x = ball_points(N, D, c, dtype, generator=gen)
    assert torch.equal(P.project(x, c=c), x)
    far = torch.randn(N, D, dtype=dtype, generator=gen) * 10 / c**0.5
    once = P.project(far, c=c)
    assert torch.equal(P.project(once, c=c), once)
    assert torch.all(once.norm(dim=-1) <= max_ball_norm(c, dtype) * (1 + 4 * torch.finfo(dtype).eps))


def test_angle_at_origin_equals_riemannian_angle_and_euclidean_angle(pts, c, dtype):
    x, y, _ = pts
    angle = P.angle_at_origin(x, y)
    # Riemannian angle at 0 between the initial velocities log0(x), log0(y)
    u, v = P.logmap0(x, c=c), P.logmap0(y, c=c)
    zero = torch.zeros_like(x)
    cos_riem = P.inner(zero, u, v, c=c) / (P.tangent_norm(zero, u, c=c) * P.tangent_norm(zero, v, c=c))
    close(torch.cos(angle), cos_riem, dtype, 10)
    cos_eucl = (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))
    close(torch.cos(angle), cos_eucl, dtype, 10)


def test_angle_at_origin_invariances(pts, c, dtype, gen):
    x, y, _ = pts
    q, _ = torch.linalg.qr(torch.randn(D, D, dtype=dtype, generator=gen))
    close(P.angle_at_origin(x @ q.T, y @ q.T), P.angle_at_origin(x, y), dtype, 10)
    close(P.angle_at_origin(P.mobius_scalar_mul(2.5, x, c=c), y), P.angle_at_origin(x, y), dtype, 10)
    close(P.angle_at_origin(x, y), P.angle_at_origin(y, x), dtype)


def test_angle_at_origin_is_accurate_and_differentiable_at_0_and_pi(dtype):
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[1.0, 1e-6], [-1.0, 1e-6], [1.0, 0.0]], dtype=dtype)
    angle = P.angle_at_origin(x, y)
    torch.testing.assert_close(angle[0], torch.tensor(1e-6, dtype=dtype), rtol=1e-4, atol=0)
    torch.testing.assert_close(angle[1], torch.tensor(math.pi - 1e-6, dtype=dtype), rtol=1e-7, atol=0)
    assert angle[2] == 0
    angle.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_projected_calls_equal_project_compute_project(c, dtype, gen):
    """project=True folds the projections into each formula; it must equal doing them explicitly."""
    x = torch.randn(N, D, dtype=dtype, generator=gen) * torch.rand(N, 1, dtype=dtype, generator=gen) * 2 / c**0.5
    y = torch.randn(N, D, dtype=dtype, generator=gen) * torch.rand(N, 1, dtype=dtype, generator=gen) * 2 / c**0.5
    v = torch.randn(N, D, dtype=dtype, generator=gen) * 5
    m = torch.randn(4, D, dtype=dtype, generator=gen)
    px, py = P.project(x, c=c), P.project(y, c=c)
    assert bool((x.norm(dim=-1) * c**0.5 > 1).any()), "the test needs points outside the ball"
    pairs = [
        (P.mobius_add(x, y, c=c), P.project(P.mobius_add(px, py, c=c, project=False), c=c)),
        # (distances between two points clipped to the margin are at the precision limit,
        # where artanh(1 - δ) amplifies rounding: keep one point inside)
        (P.dist(x, 0.5 * py, c=c), P.dist(px, 0.5 * py, c=c, project=False)),
        (P.expmap0(v, c=c), P.project(P.expmap0(v, c=c, project=False), c=c)),
        (P.logmap0(x, c=c), P.logmap0(px, c=c, project=False)),
        (P.radius(x, c=c), P.radius(px, c=c, project=False)),
        (P.mobius_scalar_mul(2.5, x, c=c), P.project(P.mobius_scalar_mul(2.5, px, c=c, project=False), c=c)),
        (P.mobius_matvec(m, x, c=c), P.project(P.mobius_matvec(m, px, c=c, project=False), c=c)),
    ]
    for fused, explicit in pairs:
        close(fused, explicit, dtype, scale=50)


def test_float32_distance_of_nearby_points_far_from_the_origin():
    """Side by side at radius 8, 0.5 apart: float32 reaches the accuracy of the stored points.

    (The Möbius form loses ~eps·e^{2 sqrt(c) R}: about 1e-2 relative here.)
    """
    c, radius, gap = 1.0, 8.0, 0.5
    # angle with cosh(gap) = cosh²R - sinh²R cos θ (hyperbolic law of cosines)
    theta = math.acos((math.cosh(radius) ** 2 - math.cosh(gap)) / math.sinh(radius) ** 2)
    rho = math.tanh(radius / 2)
    x = torch.tensor([[rho, 0.0]], dtype=torch.float64)
    y = torch.tensor([[rho * math.cos(theta), rho * math.sin(theta)]], dtype=torch.float64)
    x32, y32 = x.float(), y.float()
    stored = P.dist(x32.double(), y32.double(), c=c, project=False)  # exact distance of the stored points
    got = P.dist(x32, y32, c=c, project=False).double()
    assert ((got - stored).abs() / stored).item() < 1e-3
