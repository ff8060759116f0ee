"""Precision handling: margins from torch.finfo, fp32 under autocast, half inputs promoted."""
from __future__ import annotations

import math

import pytest
import torch

from hyro_edu import numerics
from hyro_edu import poincare as P


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_margins_come_from_finfo(dtype):
    fi = torch.finfo(dtype)
    assert numerics.ball_margin(dtype) == math.sqrt(fi.eps)
    assert numerics.norm_floor(dtype) == math.sqrt(fi.tiny)
    assert numerics.artanh_limit(dtype) == 1 - fi.eps
    # The margin is representable: 1 - margin differs from 1 in this dtype.
    assert torch.tensor(1 - numerics.ball_margin(dtype), dtype=dtype) < 1


def test_half_dtypes_use_float32_margins():
    for half in (torch.float16, torch.bfloat16):
        assert numerics.compute_dtype(half) == torch.float32
        assert numerics.ball_margin(half) == numerics.ball_margin(torch.float32)


def test_max_radius_table():
    """The capacity numbers quoted in the docs: 8.66 (float32) and 18.7 (float64) at c = 1."""
    assert numerics.max_radius(1.0, torch.float32) == pytest.approx(2 * math.atanh(1 - math.sqrt(2**-23)))
    assert round(numerics.max_radius(1.0, torch.float32), 2) == 8.66
    assert round(numerics.max_radius(1.0, torch.float64), 1) == 18.7
    assert numerics.max_radius(0.01, torch.float32) == pytest.approx(10 * numerics.max_radius(1.0, torch.float32))
    # A projected point reaches exactly that radius.
    far = P.project(torch.tensor([[1e6, 0.0]]), c=1.0)
    assert P.radius(far, c=1.0).item() == pytest.approx(numerics.max_radius(1.0, torch.float32), rel=1e-3)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(half):
    v = torch.tensor([[3.0, 4.0], [0.01, 0.02]])
    out = P.expmap0(v.to(half), c=1.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, P.expmap0(v.to(half).float(), c=1.0))
    # In half precision the boundary margin is not representable: 1 - 1.7e-4 rounds to 1.
    assert torch.isfinite(P.logmap0(out, c=1.0)).all()


def test_autocast_does_not_lower_precision():
    g = torch.Generator().manual_seed(0)
    x = P.expmap0(torch.randn(16, 8, generator=g), c=1.0)
    y = P.expmap0(torch.randn(16, 8, generator=g), c=1.0)
    m = torch.randn(8, 8, generator=g)
    reference = (P.dist(x, y, c=1.0), P.mobius_matvec(m, x, c=1.0), P.logmap(x, y, c=1.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        inside = (P.dist(x, y, c=1.0), P.mobius_matvec(m, x, c=1.0), P.logmap(x, y, c=1.0))
        # Sanity check that autocast is really on: a plain matmul is lowered.
        assert (x @ m).dtype == torch.bfloat16
    for ref, got in zip(reference, inside):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref)


def test_autocast_state_is_restored_after_a_call():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        P.expmap0(torch.ones(2, 3), c=1.0)
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")


def test_gradients_flow_through_promoted_half_inputs():
    v = torch.randn(4, 3).to(torch.bfloat16).requires_grad_(True)
    P.radius(P.expmap0(v, c=0.5), c=0.5).sum().backward()
    assert v.grad is not None and v.grad.dtype == torch.bfloat16
    assert torch.isfinite(v.grad.float()).all()
