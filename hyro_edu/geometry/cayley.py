r"""Orthogonal matrices from unconstrained parameters: the Cayley transform, dense and block-diagonal.

.. math::
    A = \Theta - \Theta^\top, \qquad R = (I + A)(I - A)^{-1}.

For skew-symmetric ``A`` the matrix ``I - A`` is always invertible (its
eigenvalues are ``1 - iλ`` with real ``λ``), ``R`` is orthogonal with
``det R = +1``, and ``R`` never has the eigenvalue ``-1``.  ``(I + A)`` and
``(I - A)^{-1}`` commute, so ``R = (I - A)^{-1}(I + A)`` is one linear solve.

HyRo (Truong et al. 2026; the construction as its third-party summary reports it and its
released code implements it) builds its rotation this way, in ``K = d / n``
independent blocks of size ``n`` (``R = diag(R_1, ..., R_K)``), which costs
``K`` solves of size ``n`` (``O(d n^2)``) instead of one of size ``d``
(``O(d^3)``); block-diagonal Cayley blocks are also the parametrisation of orthogonal
fine-tuning (Qiu et al., NeurIPS 2023).  The map turns an unconstrained ``Θ`` into a rotation, so
any optimiser can train ``Θ``; it is not cheaper per step than the matrix exponential of ``A``
(both ``O(n^3)``).  H-CLIP's code (as found in the HPS-Seg repository) uses the opposite sign,
``Q = (I - S)(I + S)^{-1}`` with ``S = (X - X^T)/2``; that is
``cayley(-S)``, see :func:`cayley_hclip`.

Shapes: matrices are ``(..., n, n)`` (any batch of blocks); block-diagonal
parameters are ``(K, n, n)``; feature vectors are ``(..., K·n)``.
"""
from __future__ import annotations

import torch

from hyro_edu.core import checks as _checks

__all__ = [
    "skew",
    "cayley",
    "cayley_hclip",
    "inverse_cayley",
    "block_cayley",
    "block_diagonal",
    "block_matvec",
    "num_blocks",
    "solve",
]


def _square(m: torch.Tensor, name: str) -> torch.Tensor:
    _checks.tensor(m, name)
    if m.dim() < 2 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"{name} must be a square matrix or a batch of them (..., n, n), got shape {tuple(m.shape)}")
    return m


def skew(theta: torch.Tensor) -> torch.Tensor:
    r"""The skew-symmetric part used by HyRo: :math:`A = \Theta - \Theta^\top` (batched, ``(..., n, n)``)."""
    _square(theta, "theta")
    return theta - theta.transpose(-1, -2)


def cayley(a: torch.Tensor, *, check: bool = True) -> torch.Tensor:
    r"""Cayley transform :math:`R = (I + A)(I - A)^{-1}` of skew-symmetric ``a`` (batched ``(..., n, n)``).

    Properties (tested): ``R^T R = I``; ``det R = 1``; ``cayley(0) = I``;
    ``cayley(-A) = R^T``; :func:`inverse_cayley` undoes it.  Computed as one
    batched solve ``(I - A) R = I + A``.  With ``check`` (default), ``a`` must be
    skew-symmetric to within ``100·eps`` of its scale, else ``ValueError``: for
    other matrices ``I - A`` can be singular and ``R`` is not orthogonal.
    """
    _square(a, "a")
    if check:
        scale = a.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(1.0)
        asym = (a + a.transpose(-1, -2)).abs().amax(dim=(-1, -2), keepdim=True)
        if bool((asym > 100 * torch.finfo(a.dtype).eps * scale).any()):
            raise ValueError(
                "a must be skew-symmetric (a = -a^T) for the Cayley transform to be orthogonal; "
                f"got max |a + a^T| = {asym.max().item():.3g}. Use skew(theta) to build it from free parameters."
            )
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    return solve(eye - a, eye + a)


def solve(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``X`` with ``lhs @ X = rhs``: ``torch.linalg.solve``, made safe for batches on the CPU.

    With torch 2.14's MKL build, batched LU on the CPU returns wrong results (or
    raises "Pivots given to lu_solve ...") once ``torch.set_num_threads(k)``
    with ``k >= 2`` has been called in the process, for matrices larger than
    about 150 (pytorch/pytorch#142815); unbatched solves, forward and backward,
    are unaffected.  So on the CPU a batch is solved one matrix at a time; on
    other devices it is one batched call.  Every Cayley transform in the package
    (:func:`cayley`, :func:`inverse_cayley`, :func:`hyro_edu.geometry.tproduct.t_orthogonal`)
    goes through it.

    Shapes: ``lhs (..., n, n)`` (or ``(n, n)``), ``rhs`` broadcasting to ``lhs``'s shape
    -> ``(..., n, n)``.  Inputs are not validated (the callers have).
    """
    if lhs.dim() == 2 or lhs.device.type != "cpu":
        return torch.linalg.solve(lhs, rhs)
    n = lhs.shape[-1]
    rhs = rhs.expand_as(lhs)
    solved = [torch.linalg.solve(l, r) for l, r in zip(lhs.reshape(-1, n, n), rhs.reshape(-1, n, n))]
    return torch.stack(solved).reshape(lhs.shape)


def cayley_hclip(x: torch.Tensor) -> torch.Tensor:
    r"""H-CLIP's convention: :math:`Q = (I - S)(I + S)^{-1}` with :math:`S = (X - X^\top)/2`; equals ``cayley(-S)``."""
    _square(x, "x")
    return cayley(-(x - x.transpose(-1, -2)) / 2, check=False)


def inverse_cayley(r: torch.Tensor) -> torch.Tensor:
    r"""The skew matrix :math:`A = (R - I)(R + I)^{-1}` with ``cayley(A) = R``.

    Defined for orthogonal ``R`` without the eigenvalue ``-1``; raises
    ``ValueError`` when ``R + I`` is singular (to working precision).
    """
    _square(r, "r")
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device).expand_as(r)
    cond = torch.linalg.cond(r + eye)
    if bool((~torch.isfinite(cond) | (cond > 1 / torch.finfo(r.dtype).eps)).any()):
        raise ValueError("r has the eigenvalue -1 (R + I is singular): it is not the Cayley transform of any skew matrix")
    # (R - I)(R + I)^{-1}: the factors commute, so solve (R + I) A = R - I.
    return solve(r + eye, r - eye)


def num_blocks(d: int, n: int, *, name: str = "block_size") -> int:
    """``d // n``, or a ``ValueError`` naming ``name`` when ``n`` does not divide ``d``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    if not isinstance(d, int) or d < 1 or d % n:
        raise ValueError(f"{name} must divide the feature dimension {d}; got {name} = {n} (d / {name} = {d / n:.3g})")
    return d // n


def block_cayley(theta: torch.Tensor) -> torch.Tensor:
    r"""Orthogonal blocks :math:`R_k = \mathrm{cayley}(\Theta_k - \Theta_k^\top)` for ``theta`` of shape ``(K, n, n)``.

    All ``K`` blocks are transformed in one batched solve (one solve per block
    on the CPU, see :func:`solve`).  ``theta = 0`` gives identity blocks
    (HyRo's initialisation).
    """
    _square(theta, "theta")
    if theta.dim() != 3:
        raise ValueError(f"theta must have shape (K, n, n) (one n x n block per row), got {tuple(theta.shape)}")
    return cayley(skew(theta), check=False)


def block_diagonal(blocks: torch.Tensor) -> torch.Tensor:
    """The dense ``(K·n, K·n)`` matrix ``diag(blocks[0], ..., blocks[K-1])`` of ``blocks (K, n, n)``."""
    _square(blocks, "blocks")
    if blocks.dim() != 3:
        raise ValueError(f"blocks must have shape (K, n, n), got {tuple(blocks.shape)}")
    return torch.block_diag(*blocks.unbind(0))


def block_matvec(blocks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""Apply the block-diagonal matrix ``diag(blocks)`` to the rows of ``x``: :math:`x \mapsto \mathrm{diag}(B_1..B_K)\,x`.

    ``blocks (K, n, n)``, ``x (..., K·n)`` -> ``(..., K·n)``; never forms the
    dense matrix.  (Row convention of ``torch.nn.functional.linear``:
    the result is ``x @ block_diagonal(blocks).T``.)
    """
    _square(blocks, "blocks")
    _checks.tensor(x, "x")
    if blocks.dim() != 3:
        raise ValueError(f"blocks must have shape (K, n, n), got {tuple(blocks.shape)}")
    k, n, _ = blocks.shape
    if x.shape[-1] != k * n:
        raise ValueError(f"x must have K·n = {k * n} features in its last dimension for {k} blocks of size {n}, got {x.shape[-1]}")
    xb = x.reshape(*x.shape[:-1], k, n)
    return torch.einsum("kij,...kj->...ki", blocks, xb).reshape(x.shape)
