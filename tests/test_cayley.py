"""The Cayley transform: orthogonality, determinant, inverse, blocks, and bad input."""
from __future__ import annotations

import pytest
import torch

from hyro_edu import cayley as C

from .conftest import TOL


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_cayley_is_special_orthogonal(n, dtype, gen):
    theta = torch.randn(4, n, n, dtype=dtype, generator=gen)
    r = C.cayley(C.skew(theta))
    eye = torch.eye(n, dtype=dtype).expand(4, n, n)
    torch.testing.assert_close(r.transpose(-1, -2) @ r, eye, **{k: 10 * v for k, v in TOL[dtype].items()})
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(4, dtype=dtype), **{k: 10 * v for k, v in TOL[dtype].items()})


def test_cayley_identities(dtype, gen):
    a = C.skew(torch.randn(3, 6, 6, dtype=dtype, generator=gen))
    r = C.cayley(a)
    torch.testing.assert_close(C.cayley(torch.zeros_like(a)), torch.eye(6, dtype=dtype).expand(3, 6, 6))
    torch.testing.assert_close(C.cayley(-a), r.transpose(-1, -2), **TOL[dtype])
    torch.testing.assert_close(C.inverse_cayley(r), a, **{k: 100 * v for k, v in TOL[dtype].items()})
    # the two orders of the factors agree: (I + A)(I - A)^-1 = (I - A)^-1 (I + A)
    eye = torch.eye(6, dtype=dtype)
    other = (eye + a) @ torch.linalg.inv(eye - a)
    torch.testing.assert_close(r, other, **{k: 10 * v for k, v in TOL[dtype].items()})


def test_hclip_convention_is_the_transpose_for_the_same_skew_part(gen):
    x = torch.randn(5, 5, dtype=torch.float64, generator=gen)
    s = (x - x.T) / 2
    torch.testing.assert_close(C.cayley_hclip(x), C.cayley(-s))
    torch.testing.assert_close(C.cayley_hclip(x), C.cayley(s).T)


def test_block_cayley_and_block_matvec_match_the_dense_matrix(dtype, gen):
    theta = 0.3 * torch.randn(4, 8, 8, dtype=dtype, generator=gen)
    blocks = C.block_cayley(theta)
    dense = C.block_diagonal(blocks)
    assert dense.shape == (32, 32)
    x = torch.randn(7, 32, dtype=dtype, generator=gen)
    torch.testing.assert_close(C.block_matvec(blocks, x), x @ dense.T, **TOL[dtype])
    torch.testing.assert_close(dense.T @ dense, torch.eye(32, dtype=dtype), **{k: 10 * v for k, v in TOL[dtype].items()})
    # rotations keep norms
    torch.testing.assert_close(C.block_matvec(blocks, x).norm(dim=-1), x.norm(dim=-1), **TOL[dtype])


def test_zero_parameters_give_the_identity():
    assert torch.equal(C.block_cayley(torch.zeros(3, 4, 4)), torch.eye(4).expand(3, 4, 4))


def test_gradients_are_finite_and_match_finite_differences():
    theta = (0.2 * torch.randn(2, 3, 3, dtype=torch.float64)).requires_grad_(True)
    x = torch.randn(5, 6, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: C.block_matvec(C.block_cayley(t), x), (theta,))


def test_bad_input():
    with pytest.raises(ValueError, match="a must be skew-symmetric"):
        C.cayley(torch.eye(3))
    with pytest.raises(ValueError, match=r"a must be a square matrix"):
        C.cayley(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"block_size must divide the feature dimension 768; got block_size = 100"):
        C.num_blocks(768, 100)
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        C.num_blocks(768, 0)
    with pytest.raises(ValueError, match="theta must have shape \\(K, n, n\\)"):
        C.block_cayley(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="x must have K·n = 8 features"):
        C.block_matvec(torch.zeros(2, 4, 4), torch.zeros(3, 6))
    with pytest.raises(ValueError, match="eigenvalue -1"):
        C.inverse_cayley(-torch.eye(2))
    assert C.num_blocks(768, 256) == 3


def test_blocks_stay_orthogonal_after_set_num_threads(tmp_path):
    """Regression: batched CPU solves break after torch.set_num_threads(2) (pytorch#142815).

    The broken state is process-wide, so the check runs in a fresh interpreter.
    """
    import subprocess
    import sys

    script = tmp_path / "check.py"
    script.write_text(
        "import torch\n"
        "from hyro_edu.geometry.cayley import block_cayley\n"
        "torch.set_num_threads(2)\n"
        "theta = (0.1 * torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0))).requires_grad_()\n"
        "r = block_cayley(theta)\n"
        "err = (r.transpose(-1, -2) @ r - torch.eye(256)).abs().max().item()\n"
        "r.sum().backward()\n"
        "assert err < 1e-5, err\n"
        "assert torch.isfinite(theta.grad).all()\n"
        "print('ok', err)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stdout + out.stderr
