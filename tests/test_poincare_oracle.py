"""Every Poincaré-ball function against geoopt: values and gradients, float32 and float64, several c.

geoopt's functional core uses the sectional curvature k = -c
(hyro_edu.core.curvature.to_geoopt_k).
"""
from __future__ import annotations

import warnings

import pytest
import torch

from hyro_edu import poincare as P
from hyro_edu.core.curvature import to_geoopt_k

from .conftest import TOL, ball_points

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation inside geoopt
    import geoopt.manifolds.stereographic.math as gm

N, D = 40, 7


def _inputs(c, dtype, gen):
    return dict(
        x=ball_points(N, D, c, dtype, generator=gen),
        y=ball_points(N, D, c, dtype, generator=gen),
        v=torch.randn(N, D, dtype=dtype, generator=gen),
        w=torch.randn(N, D, dtype=dtype, generator=gen),
        m=torch.randn(5, D, dtype=dtype, generator=gen),
        r=torch.rand(N, 1, dtype=dtype, generator=gen) * 3 - 1.5,
        t=torch.rand(N, 1, dtype=dtype, generator=gen) * 1.4 - 0.2,
    )


# name -> (ours(inputs, c), geoopt(inputs, k), inputs used).  geoopt's functional
# core never projects, so ours runs with project=False; projection has its own test.
CASES = {
    "conformal_factor": (lambda a, c: P.conformal_factor(a["x"], c=c, keepdim=True, project=False), lambda a, k: gm.lambda_x(a["x"], k=k, keepdim=True), "x"),
    "mobius_add": (lambda a, c: P.mobius_add(a["x"], a["y"], c=c, project=False), lambda a, k: gm.mobius_add(a["x"], a["y"], k=k), "xy"),
    "mobius_sub": (lambda a, c: P.mobius_sub(a["x"], a["y"], c=c, project=False), lambda a, k: gm.mobius_sub(a["x"], a["y"], k=k), "xy"),
    "mobius_scalar_mul": (lambda a, c: P.mobius_scalar_mul(a["r"], a["x"], c=c, project=False), lambda a, k: gm.mobius_scalar_mul(a["r"], a["x"], k=k), "rx"),
    "mobius_matvec": (lambda a, c: P.mobius_matvec(a["m"], a["x"], c=c, project=False), lambda a, k: gm.mobius_matvec(a["m"], a["x"], k=k), "mx"),
    "expmap0": (lambda a, c: P.expmap0(a["v"], c=c, project=False), lambda a, k: gm.expmap0(a["v"], k=k), "v"),
    "logmap0": (lambda a, c: P.logmap0(a["x"], c=c, project=False), lambda a, k: gm.logmap0(a["x"], k=k), "x"),
    "expmap": (lambda a, c: P.expmap(a["x"], 0.3 * a["v"], c=c, project=False), lambda a, k: gm.expmap(a["x"], 0.3 * a["v"], k=k), "xv"),
    "logmap": (lambda a, c: P.logmap(a["x"], a["y"], c=c, project=False), lambda a, k: gm.logmap(a["x"], a["y"], k=k), "xy"),
    "dist": (lambda a, c: P.dist(a["x"], a["y"], c=c, project=False), lambda a, k: gm.dist(a["x"], a["y"], k=k), "xy"),
    "radius": (lambda a, c: P.radius(a["x"], c=c, project=False), lambda a, k: gm.dist0(a["x"], k=k), "x"),
    "geodesic": (lambda a, c: P.geodesic(a["t"], a["x"], a["y"], c=c, project=False), lambda a, k: gm.geodesic(a["t"], a["x"], a["y"], k=k), "txy"),
    "gyration": (lambda a, c: P.gyration(a["x"], a["y"], a["w"], c=c, project=False), lambda a, k: gm.gyration(a["x"], a["y"], a["w"], k=k), "xyw"),
    "parallel_transport": (lambda a, c: P.parallel_transport(a["x"], a["y"], a["v"], c=c, project=False), lambda a, k: gm.parallel_transport(a["x"], a["y"], a["v"], k=k), "xyv"),
    "inner": (lambda a, c: P.inner(a["x"], a["v"], a["w"], c=c, keepdim=True, project=False), lambda a, k: gm.inner(a["x"], a["v"], a["w"], k=k, keepdim=True), "xvw"),
    "tangent_norm": (lambda a, c: P.tangent_norm(a["x"], a["v"], c=c, keepdim=True, project=False), lambda a, k: gm.norm(a["x"], a["v"], k=k, keepdim=True), "xv"),
}



@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_match_geoopt(name, c, dtype, gen):
    ours_fn, theirs_fn, used = CASES[name]
    base = _inputs(c, dtype, gen)
    k = torch.tensor(to_geoopt_k(c), dtype=dtype)

    def run(fn, arg):
        leaves = {key: val.clone().requires_grad_(key in used) for key, val in base.items()}
        out = fn(leaves, arg)
        weights = torch.linspace(-1, 1, out.numel(), dtype=dtype).reshape(out.shape)
        (out * weights).sum().backward()
        return out.detach(), {key: leaves[key].grad for key in used}

    ours, our_grads = run(ours_fn, c)
    theirs, their_grads = run(theirs_fn, k)
    torch.testing.assert_close(ours, theirs, **TOL[dtype])
    for key in used:
        assert torch.isfinite(our_grads[key]).all()
        scale = their_grads[key].abs().max().clamp_min(1.0)
        torch.testing.assert_close(our_grads[key] / scale, their_grads[key] / scale, **TOL[dtype])


def test_pairwise_dist_matches_geoopt_dist(c, dtype, gen):
    x = ball_points(6, 3, c, dtype, generator=gen)
    y = ball_points(4, 3, c, dtype, generator=gen)
    k = torch.tensor(to_geoopt_k(c), dtype=dtype)
    expected = gm.dist(x[:, None], y[None], k=k)
    torch.testing.assert_close(P.pairwise_dist(x, y, c=c), expected, **TOL[dtype])


def test_projection_matches_geoopt_rule_with_our_margin(c, dtype, gen):
    from hyro_edu.core.numerics import ball_margin

    x = torch.randn(20, 5, dtype=dtype, generator=gen) * 3 / c**0.5
    eps = ball_margin(dtype)
    k = torch.tensor(to_geoopt_k(c), dtype=dtype)
    torch.testing.assert_close(P.project(x, c=c), gm.project(x, k=k, eps=eps), **TOL[dtype])


def test_tensor_curvature_gradient_matches_geoopt(dtype, gen):
    """A learnable curvature gets the same gradient as geoopt's learnable k = -c."""
    x = ball_points(10, 4, 1.0, dtype, max_frac=0.7, generator=gen)
    y = ball_points(10, 4, 1.0, dtype, max_frac=0.7, generator=gen)
    c = torch.tensor(0.8, dtype=dtype, requires_grad=True)
    P.dist(x, y, c=c).sum().backward()
    k = torch.tensor(-0.8, dtype=dtype, requires_grad=True)
    gm.dist(x, y, k=k).sum().backward()
    torch.testing.assert_close(c.grad, -k.grad, **TOL[dtype])
