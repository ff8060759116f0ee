"""Bad input raises ValueError naming the argument and the allowed range."""
from __future__ import annotations

import math

import pytest
import torch

from hyro_edu import curvature as K
from hyro_edu import poincare as P

X = torch.tensor([[0.1, 0.2, 0.3]])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), -1e-9])
def test_bad_curvature_is_rejected(bad):
    with pytest.raises(ValueError, match=r"c must be finite and > 0"):
        P.expmap0(X, c=bad)
    with pytest.raises(ValueError, match=r"c must be finite and > 0"):
        P.dist(X, X, c=torch.tensor(bad))


@pytest.mark.parametrize("bad", ["1", None, True, [1.0]])
def test_non_numeric_curvature_is_rejected(bad):
    with pytest.raises(ValueError, match=r"^c must be"):
        P.radius(X, c=bad)


def test_integer_tensor_curvature_is_rejected():
    with pytest.raises(ValueError, match="c must be a floating-point tensor"):
        P.radius(X, c=torch.tensor(1))


def test_shape_mismatch_names_both_arguments():
    with pytest.raises(ValueError, match=r"x and y must have the same size along dim=-1"):
        P.mobius_add(X, torch.zeros(1, 4), c=1.0)
    with pytest.raises(ValueError, match=r"x and y must broadcast"):
        P.dist(torch.zeros(2, 3), torch.zeros(3, 3), c=1.0)
    with pytest.raises(ValueError, match=r"m must be a matrix \(\.\.\., p, n\)"):
        P.mobius_matvec(torch.zeros(4, 4), X, c=1.0)
    with pytest.raises(ValueError, match=r"x and v must have the same size"):
        P.expmap(X, torch.zeros(1, 2), c=1.0)
    with pytest.raises(ValueError, match=r"x and y must be matrices"):
        P.pairwise_dist(torch.zeros(2, 3), torch.zeros(2, 4), c=1.0)


def test_points_outside_the_ball_without_projection():
    outside = torch.tensor([[0.8, 0.8, 0.0]])
    with pytest.raises(ValueError, match=r"x must lie inside the Poincare ball: sqrt\(c\)\*\|\|x\|\| < 1"):
        P.mobius_add(outside, X, c=1.0, project=False)
    with pytest.raises(ValueError, match=r"y must lie inside the Poincare ball.*got sqrt\(c\)\*\|\|y\|\| = 1\.13"):
        P.dist(X, outside, c=1.0, project=False)
    # The same point is fine for a flatter ball (radius 1/sqrt(0.5) = 1.41), and with projection on.
    assert torch.isfinite(P.dist(X, outside, c=0.5, project=False)).all()
    assert torch.isfinite(P.dist(X, outside, c=1.0)).all()


def test_nan_points_are_rejected_without_projection():
    with pytest.raises(ValueError, match="x must lie inside"):
        P.radius(torch.tensor([[float("nan"), 0.0]]), c=1.0, project=False)


def test_bad_dim_and_non_tensors():
    with pytest.raises(ValueError, match=r"dim must be an integer in \[-2, 1\]"):
        P.expmap0(X, c=1.0, dim=2)
    with pytest.raises(ValueError, match="v must be a torch.Tensor"):
        P.expmap0([0.1, 0.2], c=1.0)
    with pytest.raises(ValueError, match="v must be a floating-point tensor"):
        P.expmap0(torch.tensor([[1, 2]]), c=1.0)
    with pytest.raises(ValueError, match="must have at least one dimension"):
        P.expmap0(torch.tensor(1.0), c=1.0)


def test_bad_scalars():
    with pytest.raises(ValueError, match="r must be a finite number or a tensor"):
        P.mobius_scalar_mul(float("nan"), X, c=1.0)
    with pytest.raises(ValueError, match="r must broadcast"):
        P.mobius_scalar_mul(torch.ones(5, 2), X, c=1.0)
    with pytest.raises(ValueError, match="t must be a finite number or a tensor"):
        P.geodesic("half", X, X, c=1.0)


def test_curvature_converters_reject_bad_values():
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        K.to_geoopt_k(-1.0)
    with pytest.raises(ValueError, match=r"k must be a finite number < 0"):
        K.from_geoopt_k(0.5)
    with pytest.raises(ValueError, match="k must be finite and > 0"):
        K.from_geoopt_lorentz_k(0.0)
    with pytest.raises(ValueError, match="value must be a finite number"):
        K.from_hypll_value(math.inf)


def test_angle_at_origin_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="x and y must have the same size"):
        P.angle_at_origin(torch.zeros(2, 3), torch.zeros(2, 4))
