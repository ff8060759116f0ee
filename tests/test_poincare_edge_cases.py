"""Hypothesis-driven edge cases: zero vectors, points within 1e-6 of the boundary,
tangent vectors of norm up to 1e4, curvatures over six decades.  Nothing may be
NaN or Inf, forward or backward."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hyro_edu import poincare as P
from hyro_edu.core.numerics import max_ball_norm

DIM = 5

curvatures = st.floats(min_value=1e-3, max_value=1e3)
dtypes = st.sampled_from([torch.float32, torch.float64])


@st.composite
def directions(draw, dtype):
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(3, DIM, dtype=torch.float64, generator=g)
    return (u / u.norm(dim=-1, keepdim=True)).to(dtype)


@st.composite
def points(draw, c, dtype):
    """Points of every kind: zero, interior, and within 1e-6 (relative) of the boundary."""
    u = draw(directions(dtype))
    kind = draw(st.sampled_from(["zero", "interior", "boundary"]))
    if kind == "zero":
        return torch.zeros_like(u)
    if kind == "interior":
        frac = draw(st.floats(min_value=0.0, max_value=0.99))
    else:
        frac = 1.0 - draw(st.floats(min_value=0.0, max_value=1e-6))
    # Computed in float64 and rounded: in float32 this can land on or just past the boundary.
    return (u.double() * frac / math.sqrt(c)).to(dtype)


@st.composite
def tangents(draw, dtype):
    u = draw(directions(dtype))
    scale = draw(st.sampled_from([0.0, 1e-30, 1e-8, 1.0, 1e2, 1e4]))
    return u * scale


def ops(c):
    """Every public function as f(x, y, v) -> tensor, with projection on (the default)."""
    m = torch.eye(DIM) * 3 - 0.5  # a fixed invertible matrix
    return {
        "project": lambda x, y, v: P.project(v, c=c),
        "conformal_factor": lambda x, y, v: P.conformal_factor(x, c=c),
        "inner": lambda x, y, v: P.inner(x, v, v, c=c),
        "tangent_norm": lambda x, y, v: P.tangent_norm(x, v, c=c),
        "mobius_add": lambda x, y, v: P.mobius_add(x, y, c=c),
        "mobius_sub": lambda x, y, v: P.mobius_sub(x, y, c=c),
        "mobius_scalar_mul": lambda x, y, v: P.mobius_scalar_mul(3.0, x, c=c),
        "mobius_scalar_mul_small": lambda x, y, v: P.mobius_scalar_mul(1e-3, x, c=c),
        "mobius_matvec": lambda x, y, v: P.mobius_matvec(m.to(x.dtype), x, c=c),
        "expmap0": lambda x, y, v: P.expmap0(v, c=c),
        "logmap0": lambda x, y, v: P.logmap0(x, c=c),
        "expmap": lambda x, y, v: P.expmap(x, v, c=c),
        "logmap": lambda x, y, v: P.logmap(x, y, c=c),
        "dist": lambda x, y, v: P.dist(x, y, c=c),
        "radius": lambda x, y, v: P.radius(x, c=c),
        "geodesic": lambda x, y, v: P.geodesic(0.3, x, y, c=c),
        "gyration": lambda x, y, v: P.gyration(x, y, v, c=c),
        "parallel_transport": lambda x, y, v: P.parallel_transport(x, y, v, c=c),
    }


OP_NAMES = sorted(ops(1.0))


def _assert_finite_forward_backward(fn, x, y, v):
    leaves = [t.clone().requires_grad_(True) for t in (x, y, v)]
    out = fn(*leaves)
    assert torch.isfinite(out).all(), "forward produced NaN/Inf"
    out.sum().backward()
    for name, leaf in zip("xyv", leaves):
        assert leaf.grad is None or torch.isfinite(leaf.grad).all(), f"gradient wrt {name} has NaN/Inf"


@pytest.mark.parametrize("name", OP_NAMES)
@given(data=st.data(), c=curvatures, dtype=dtypes)
def test_no_nan_or_inf_with_projection(name, data, c, dtype):
    x = data.draw(points(c, dtype), label="x")
    y = data.draw(points(c, dtype), label="y")
    v = data.draw(tangents(dtype), label="v")
    _assert_finite_forward_backward(ops(c)[name], x, y, v)


@pytest.mark.parametrize("name", OP_NAMES)
@given(data=st.data(), c=curvatures, dtype=dtypes)
def test_no_nan_or_inf_without_projection_for_points_strictly_inside(name, data, c, dtype):
    x = data.draw(points(c, dtype), label="x")
    y = data.draw(points(c, dtype), label="y")
    v = data.draw(tangents(dtype), label="v")
    # Points within a few ulps of the boundary are on it or not depending on how the
    # norm is rounded (vector_norm vs a dot product); project=False may reject them.
    slack = 1 - 8 * torch.finfo(dtype).eps
    inside = lambda p: bool((p.norm(dim=-1) * math.sqrt(c) < slack).all())  # noqa: E731
    if not (inside(x) and inside(y)):
        return  # on or past the boundary: project=False must reject it (next test)
    unprojected = {
        "logmap0": lambda x, y, v: P.logmap0(x, c=c, project=False),
        "dist": lambda x, y, v: P.dist(x, y, c=c, project=False),
        "logmap": lambda x, y, v: P.logmap(x, y, c=c, project=False),
        "radius": lambda x, y, v: P.radius(x, c=c, project=False),
        "expmap": lambda x, y, v: P.expmap(x, v, c=c, project=False),
        "mobius_add": lambda x, y, v: P.mobius_add(x, y, c=c, project=False),
        "parallel_transport": lambda x, y, v: P.parallel_transport(x, y, v, c=c, project=False),
    }
    if name in unprojected:
        _assert_finite_forward_backward(unprojected[name], x, y, v)


@given(c=curvatures, dtype=dtypes)
def test_points_on_or_outside_the_boundary_are_rejected_without_projection(c, dtype):
    x = torch.zeros(2, DIM, dtype=dtype)
    x[0, 0] = 1 / math.sqrt(c)
    x[1, 1] = 2 / math.sqrt(c)
    with pytest.raises(ValueError, match="inside the Poincare ball"):
        P.dist(x, torch.zeros_like(x), c=c, project=False)


@given(data=st.data(), c=curvatures, dtype=dtypes)
def test_outputs_stay_inside_the_ball(data, c, dtype):
    x = data.draw(points(c, dtype), label="x")
    y = data.draw(points(c, dtype), label="y")
    v = data.draw(tangents(dtype), label="v")
    limit = max_ball_norm(c, dtype) * (1 + 8 * torch.finfo(dtype).eps)
    for out in (
        P.expmap0(v, c=c),
        P.expmap(x, v, c=c),
        P.mobius_add(x, y, c=c),
        P.mobius_scalar_mul(1e3, x, c=c),
        P.geodesic(5.0, x, y, c=c),
    ):
        assert torch.all(out.norm(dim=-1) <= limit)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [1e-3, 1.0, 1e3])
def test_jacobians_at_zero(c, dtype):
    """exp0 and log0 have Jacobian I at 0; r ⊗ · has Jacobian r·I; distances have a zero subgradient."""
    zero = torch.zeros(DIM, dtype=dtype)
    eye = torch.eye(DIM, dtype=dtype)
    jac = torch.autograd.functional.jacobian
    torch.testing.assert_close(jac(lambda v: P.expmap0(v, c=c), zero), eye)
    torch.testing.assert_close(jac(lambda y: P.logmap0(y, c=c), zero), eye)
    torch.testing.assert_close(jac(lambda x: P.mobius_scalar_mul(2.5, x, c=c), zero), 2.5 * eye)
    torch.testing.assert_close(jac(lambda x: P.mobius_matvec(3 * eye, x, c=c), zero), 3 * eye)
    torch.testing.assert_close(jac(lambda x: P.radius(x, c=c), zero), torch.zeros(DIM, dtype=dtype))
    torch.testing.assert_close(jac(lambda x: P.dist(x, x.detach(), c=c), zero), torch.zeros(DIM, dtype=dtype))


def test_repeated_large_steps_never_leave_the_ball():
    """geoopt's 'add infinity and beyond' stress pattern, in float32."""
    g = torch.Generator().manual_seed(0)
    c = 1.0
    x = P.expmap0(torch.randn(64, DIM, generator=g), c=c)
    for _ in range(100):
        v = torch.randn(64, DIM, generator=g) * 1e4
        x = P.expmap(x, v, c=c)
        x = P.mobius_scalar_mul(1000.0, x, c=c)
        x = P.parallel_transport(x, P.project(-x, c=c), x, c=c)
        x = P.project(x, c=c)
        assert torch.isfinite(x).all()
        assert torch.all(x.norm(dim=-1) * math.sqrt(c) < 1)
