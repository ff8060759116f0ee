"""Curvature converters agree with what the other libraries compute."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from hyro_edu import curvature as K
from hyro_edu import poincare as P

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import geoopt

CS = [0.01, 0.3, 1.0, 4.0]


@pytest.mark.parametrize("c", CS)
def test_geoopt_stereographic_k(c):
    ball = geoopt.Stereographic(k=K.to_geoopt_k(c))
    also = geoopt.PoincareBall(c=c)
    g = torch.Generator().manual_seed(0)
    x = P.expmap0(torch.randn(5, 3, dtype=torch.float64, generator=g), c=c)
    y = P.expmap0(torch.randn(5, 3, dtype=torch.float64, generator=g), c=c)
    torch.testing.assert_close(ball.dist(x, y), P.dist(x, y, c=c))
    # PoincareBall stores c as a float32 softplus parameter: agreement to float32 precision.
    torch.testing.assert_close(also.dist(x, y), P.dist(x, y, c=c), rtol=2e-6, atol=1e-7)
    assert K.from_geoopt_k(K.to_geoopt_k(c)) == c
    assert also.k.item() == pytest.approx(K.to_geoopt_k(c), rel=1e-5)  # float32 parameter


@pytest.mark.parametrize("c", CS)
def test_geoopt_lorentz_k(c):
    """Poincaré distances equal geoopt.Lorentz(k=1/c) distances of the mapped points."""
    lorentz = geoopt.Lorentz(k=K.to_geoopt_lorentz_k(c))
    g = torch.Generator().manual_seed(1)
    # Radii up to ~3/sqrt(c): further out the hyperboloid coordinates grow like
    # exp(sqrt(c)·Rad) and the check <x, x>_L = -1/c cancels catastrophically.
    p = P.expmap0(0.5 * torch.randn(6, 3, dtype=torch.float64, generator=g) / c**0.5, c=c)
    q = P.expmap0(0.5 * torch.randn(6, 3, dtype=torch.float64, generator=g) / c**0.5, c=c)

    def to_hyperboloid(z):  # x_t = (1 + c|z|²)/(sqrt(c)(1 - c|z|²)), x_s = 2z/(1 - c|z|²)
        z2 = (z * z).sum(-1, keepdim=True)
        return torch.cat([(1 + c * z2) / (math.sqrt(c) * (1 - c * z2)), 2 * z / (1 - c * z2)], dim=-1)

    a, b = to_hyperboloid(p), to_hyperboloid(q)
    torch.testing.assert_close(lorentz.inner(a, a, keepdim=False), torch.full((6,), -1 / c, dtype=torch.float64))
    torch.testing.assert_close(lorentz.dist(a, b), P.dist(p, q, c=c))
    assert K.from_geoopt_lorentz_k(K.to_geoopt_lorentz_k(c)) == pytest.approx(c)


@pytest.mark.parametrize("c", CS + [30.0, 1e-6])
def test_hypll_softplus_round_trip(c):
    value = K.to_hypll_value(c)
    assert torch.nn.functional.softplus(torch.tensor(value, dtype=torch.float64)).item() == pytest.approx(c, rel=1e-12)
    assert K.from_hypll_value(value) == pytest.approx(c, rel=1e-12)


def test_hypll_default_is_not_one():
    """HypLL's Curvature(1.0) means c = softplus(1) = 1.313, not 1 (a known trap)."""
    assert K.from_hypll_value(1.0) == pytest.approx(1.3133, abs=1e-4)


@pytest.mark.parametrize("c", CS)
def test_ball_radius(c):
    assert K.ball_radius(c) == pytest.approx(1 / math.sqrt(c))
