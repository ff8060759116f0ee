r"""The T-product of third- and higher-order tensors: by definition, by the DFT, by a transform.

**Third order** (Kilmer & Martin 2011; H-CLIP supplement, Definition 4.1, Eq. S-1).  For
:math:`\mathcal A \in \mathbb R^{n_1\times n_2\times n_3}` and
:math:`\mathcal B \in \mathbb R^{n_2\times l\times n_3}` with frontal slices
:math:`A_k = \mathcal A(:, :, k)`,

.. math::
    \mathcal A * \mathcal B
    = \mathrm{fold}\big(\mathrm{circ}(\mathcal A)\cdot\mathrm{unfold}(\mathcal B)\big),
    \qquad (\mathcal A * \mathcal B)_k = \sum_{j} A_{(k-j) \bmod n_3}\, B_j ,

a circular convolution of the frontal slices with matrix products in place of scalar products.
The DFT along mode 3 block-diagonalises :math:`\mathrm{circ}(\mathcal A)` (supplement, Eqs.
S-3 to S-5), so
:math:`\mathcal A * \mathcal B = \mathrm{DFT}_3^{-1}(\bar{\mathcal A}\odot\bar{\mathcal B})` with
:math:`\odot` the facewise (slice-by-slice) matrix product: :func:`tproduct`.

**Higher order** (supplement, Definition 4.2, Eqs. S-2 and S-10 to S-12; Martin, Shafer & LaRue
2013): tensors :math:`n_1\times n_2\times n_3\times\dots\times n_p` are unfolded along the last
mode and multiplied recursively, which is a circular convolution over every mode :math:`\ge 3`
and is computed by DFTs along all of them.

**Invertible transforms** (Lu, Peng & Wei 2019; supplement, Eqs. S-8, S-9, S-13, S-14): replace
the DFT along mode :math:`k` by any invertible :math:`M_k`,
:math:`\mathcal A *_M \mathcal B
= (\bar{\mathcal A}\odot\bar{\mathcal B})\times_3 M_3^{-1}\cdots\times_p M_p^{-1}`
with :math:`\bar{\mathcal A} = \mathcal A\times_3 M_3\cdots\times_p M_p`.  The DFT matrix gives the
T-product back (tested).  Transposes, identities and orthogonal tensors are defined face by face
in the transform domain.

Conventions: tensors have order :math:`p \ge 3` and shape ``(n1, n2, n3, ..., np)``; mode 1 is
rows, mode 2 columns, modes ``>= 3`` are the *tube* modes.  There are no batch dimensions.  Mode
products follow Kolda & Bader:
:math:`(\mathcal A\times_k M)(\dots, i_k, \dots) = \sum_j M_{i_k j}\,\mathcal A(\dots, j, \dots)`;
the DFT matrix is :math:`F_{kj} = e^{-2\pi i kj/n}` (unnormalised, as ``torch.fft.fft``).
Real tensors go through the real FFT (``rfftn``), whose half spectrum
holds every face the product needs (conjugate symmetry); the result is real.  Half-precision
inputs are computed in float32.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from hyro_edu.geometry.cayley import solve
from hyro_edu.core.numerics import fp32_math

__all__ = [
    "unfold",
    "fold",
    "circ",
    "tproduct_definition",
    "tproduct",
    "facewise",
    "mode_product",
    "dft_matrix",
    "transform",
    "inverse_transform",
    "tproduct_transform",
    "t_transpose",
    "t_identity",
    "t_orthogonal",
]

Transforms = Optional[Union[torch.Tensor, Sequence[torch.Tensor]]]


# ----------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------
def _tensor(x, name: str, *, min_order: int = 3, exact: Optional[int] = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise ValueError(
            f"{name} must be a real floating-point or complex tensor, got dtype {x.dtype}"
        )
    if exact is not None and x.dim() != exact:
        raise ValueError(
            f"{name} must be a tensor of order {exact}, "
            f"got order {x.dim()} (shape {tuple(x.shape)})"
        )
    if x.dim() < min_order:
        raise ValueError(
            f"{name} must be a tensor of order p >= {min_order}, shape (n1, n2, n3, ...), "
            f"got order {x.dim()} (shape {tuple(x.shape)})"
        )
    if any(s == 0 for s in x.shape):
        raise ValueError(f"{name} must have no empty mode, got shape {tuple(x.shape)}")
    return x


def _pair(a, b):
    _tensor(a, "a")
    _tensor(b, "b")
    if b.dim() != a.dim() or b.shape[0] != a.shape[1] or b.shape[2:] != a.shape[2:]:
        raise ValueError(
            f"b must have shape (n2, l{''.join(', ' + str(n) for n in a.shape[2:])}) for a of "
            f"shape {tuple(a.shape)}: n2 = a.shape[1] = {a.shape[1]} rows and the same tube "
            f"modes; got shape {tuple(b.shape)}"
        )
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def _transforms(
    transforms: Transforms, a: torch.Tensor, name: str = "transforms"
) -> list[torch.Tensor]:
    """One invertible square matrix per tube mode of ``a``, validated."""
    tube = a.shape[2:]
    if isinstance(transforms, torch.Tensor):
        mats = [transforms]
        if len(tube) != 1:
            raise ValueError(
                f"{name} must be a sequence of {len(tube)} matrices (one per mode >= 3) "
                f"for a tensor of order {a.dim()}, got a single matrix"
            )
    else:
        try:
            mats = list(transforms)
        except TypeError:
            raise ValueError(
                f"{name} must be a matrix or a sequence of matrices, "
                f"got {type(transforms).__name__}"
            ) from None
        if len(mats) != len(tube):
            raise ValueError(
                f"{name} must hold {len(tube)} matrices (one per mode >= 3) "
                f"for a tensor of order {a.dim()}, got {len(mats)}"
            )
    for k, (m, n) in enumerate(zip(mats, tube)):
        label = name if isinstance(transforms, torch.Tensor) else f"{name}[{k}]"
        if not isinstance(m, torch.Tensor) or not (m.is_floating_point() or m.is_complex()):
            raise ValueError(f"{label} must be a floating-point or complex torch.Tensor")
        if m.shape != (n, n):
            raise ValueError(
                f"{label} must be a square matrix of size n{k + 3} = {n}, "
                f"got shape {tuple(m.shape)}"
            )
        cond = torch.linalg.cond(m.detach()).item()
        # A transform is usable when its inverse can be applied to working precision:
        # cond(M) * eps < 1.  Beyond that, M^{-1} M is not I in this dtype.
        limit = 1.0 / torch.finfo(m.dtype).eps
        if not (cond < limit):
            raise ValueError(
                f"{label} must be invertible (condition number < 1/eps = {limit:.3g}); "
                f"got cond = {cond:.3g}"
            )
    return mats


def _faces_last(x: torch.Tensor) -> torch.Tensor:
    """``(n1, n2, t...)`` -> ``(t..., n1, n2)``: a batch of faces for ``matmul``."""
    return x.movedim((0, 1), (-2, -1))


def _faces_first(x: torch.Tensor) -> torch.Tensor:
    return x.movedim((-2, -1), (0, 1))


# ----------------------------------------------------------------------------
# the definition (third order) and its recursion (higher order)
# ----------------------------------------------------------------------------
def unfold(a: torch.Tensor) -> torch.Tensor:
    r"""Stack the frontal slices: :math:`\mathrm{unfold}(\mathcal A) = [A_0; \dots; A_{n_3-1}]`.

    ``(n1, n2, n3)`` -> ``(n3·n1, n2)``; :func:`fold` inverts it.  Kilmer & Martin (2011).
    """
    _tensor(a, "a", exact=3)
    n1, n2, n3 = a.shape
    return a.permute(2, 0, 1).reshape(n3 * n1, n2)


def fold(m: torch.Tensor, n3: int) -> torch.Tensor:
    r"""Inverse of :func:`unfold`: ``(n3·n1, n2)`` -> ``(n1, n2, n3)``."""
    if not isinstance(n3, int) or isinstance(n3, bool) or n3 < 1:
        raise ValueError(f"n3 must be a positive integer, got {n3!r}")
    if not isinstance(m, torch.Tensor) or m.dim() != 2 or m.shape[0] % n3:
        shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
        raise ValueError(f"m must be a matrix with a multiple of n3 = {n3} rows, got {shape}")
    rows, n2 = m.shape
    return m.reshape(n3, rows // n3, n2).permute(1, 2, 0)


def circ(a: torch.Tensor) -> torch.Tensor:
    r"""The block-circulant matrix: block ``(i, j)`` of it is :math:`A_{(i-j)\bmod n_3}`.

    .. math::
        \mathrm{circ}(\mathcal A) = \begin{bmatrix} A_0 & A_{n_3-1} & \cdots & A_1\\
        A_1 & A_0 & \cdots & A_2\\ \vdots & & \ddots & \vdots\\
        A_{n_3-1} & \cdots & A_1 & A_0\end{bmatrix}

    ``(n1, n2, n3)`` -> ``(n3·n1, n3·n2)``.  Kilmer & Martin (2011).
    """
    _tensor(a, "a", exact=3)
    n1, n2, n3 = a.shape
    k = torch.arange(n3, device=a.device)
    idx = (k.unsqueeze(1) - k.unsqueeze(0)) % n3  # block (i, j) holds slice (i - j) mod n3
    blocks = a[:, :, idx]  # (n1, n2, n3 [i], n3 [j])
    return blocks.permute(2, 0, 3, 1).reshape(n3 * n1, n3 * n2)


def tproduct_definition(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""The T-product by its definition, fold(circ(A) · unfold(B)).

    .. math:: \mathcal A * \mathcal B
        = \mathrm{fold}(\mathrm{circ}(\mathcal A)\,\mathrm{unfold}(\mathcal B))

    Order 3: one explicit block-circulant matrix product (H-CLIP supplement, Eq. S-1).  Order
    :math:`p > 3` (Eq. S-2): unfold along the last mode into :math:`n_p` order-:math:`(p-1)`
    tensors, multiply the block-circulant arrangement with order-:math:`(p-1)` T-products,
    recursively.  Costs :math:`O(n_1 n_2 l\,(n_3\cdots n_p)^2)`; it is the oracle for
    :func:`tproduct`.

    Shapes: ``a (n1, n2, n3, ..., np)``, ``b (n2, l, n3, ..., np)`` -> ``(n1, l, n3, ..., np)``.
    """
    a, b = _pair(a, b)
    return _tproduct_definition(a, b)


def _tproduct_definition(a, b):
    if a.dim() == 3:
        return fold(circ(a) @ unfold(b), a.shape[2])
    n = a.shape[-1]
    slices = []
    for k in range(n):  # block row k of circ: A_{(k - j) mod n} against B_j
        terms = [_tproduct_definition(a[..., (k - j) % n], b[..., j]) for j in range(n)]
        slices.append(torch.stack(terms).sum(0))
    return torch.stack(slices, dim=-1)


# ----------------------------------------------------------------------------
# the fast T-product: DFT along every mode >= 3
# ----------------------------------------------------------------------------
def facewise(a_bar: torch.Tensor, b_bar: torch.Tensor) -> torch.Tensor:
    r"""The facewise product :math:`\bar C(:, :, i) = \bar A(:, :, i)\,\bar B(:, :, i)` (Eq. S-12).

    ``(n1, n2, t...)``, ``(n2, l, t...)`` -> ``(n1, l, t...)``; real or complex.
    """
    a_bar, b_bar = _pair(a_bar, b_bar)
    return _faces_first(_faces_last(a_bar) @ _faces_last(b_bar))


@fp32_math
def tproduct(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""The T-product by the DFT along every mode >= 3.

    .. math:: \mathcal A * \mathcal B
        = \mathrm{DFT}^{-1}(\mathrm{DFT}(\mathcal A)\odot\mathrm{DFT}(\mathcal B))

    The DFT runs along every mode :math:`\ge 3` (H-CLIP supplement, Eqs. S-5 and S-10 to S-12);
    real inputs use the real FFT and only the :math:`\lfloor n_p/2\rfloor + 1` faces of the half
    spectrum, so the result is real by construction.  Cost
    :math:`O(n_1 n_2 l\, N + (n_1 n_2 + n_2 l + n_1 l)\, N\log N)` with :math:`N = n_3\cdots n_p`,
    against :math:`O(n_1 n_2 l\,N^2)` for :func:`tproduct_definition`.

    Properties (tested): equals :func:`tproduct_definition`; associative;
    :func:`t_identity` is neutral;
    :math:`(\mathcal A*\mathcal B)^\top = \mathcal B^\top * \mathcal A^\top`;
    for :math:`n_3 = \dots = n_p = 1` it is the matrix product; linear, with finite gradients.

    Shapes: ``a (n1, n2, n3, ..., np)``, ``b (n2, l, n3, ..., np)`` -> ``(n1, l, n3, ..., np)``.
    """
    a, b = _pair(a, b)
    modes = tuple(range(2, a.dim()))
    if a.is_complex():
        fc = facewise(torch.fft.fftn(a, dim=modes), torch.fft.fftn(b, dim=modes))
        return torch.fft.ifftn(fc, dim=modes)
    fc = facewise(torch.fft.rfftn(a, dim=modes), torch.fft.rfftn(b, dim=modes))
    return torch.fft.irfftn(fc, s=a.shape[2:], dim=modes)


# ----------------------------------------------------------------------------
# invertible transforms
# ----------------------------------------------------------------------------
def mode_product(a: torch.Tensor, m: torch.Tensor, mode: int) -> torch.Tensor:
    r"""The mode-k product (Kolda & Bader).

    .. math:: (\mathcal A\times_k M)(\dots, i, \dots) = \sum_j M_{ij}\,\mathcal A(\dots, j, \dots)

    ``mode`` is 0-based (``mode=2`` is the third mode); ``m (r, n_k)``; the result has ``r`` in
    that mode.  Real ``a`` with complex ``m`` gives a complex result.
    """
    if (
        not isinstance(a, torch.Tensor)
        or not (a.is_floating_point() or a.is_complex())
        or a.dim() == 0
    ):
        raise ValueError("a must be a floating-point or complex tensor with at least one mode")
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode < a.dim():
        raise ValueError(
            f"mode must be an integer in [0, {a.dim() - 1}] for a of order {a.dim()}, got {mode!r}"
        )
    if not isinstance(m, torch.Tensor) or m.dim() != 2 or m.shape[1] != a.shape[mode]:
        shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
        raise ValueError(
            f"m must be a matrix with a.shape[{mode}] = {a.shape[mode]} columns, got {shape}"
        )
    dtype = torch.promote_types(a.dtype, m.dtype)
    return (a.to(dtype).movedim(mode, -1) @ m.to(dtype).T).movedim(-1, mode)


def dft_matrix(n: int, *, dtype: torch.dtype = torch.complex128, device=None) -> torch.Tensor:
    r"""The unnormalised DFT matrix :math:`F_{kj} = e^{-2\pi i\,kj/n}`; :math:`F^{-1} = F^*/n`.

    ``F @ x`` equals ``torch.fft.fft(x)`` (tested).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not dtype.is_complex:
        raise ValueError(f"dtype must be a complex dtype, got {dtype}")
    k = torch.arange(n, dtype=torch.float64, device=device)
    # kj mod n before the multiplication by 2π/n keeps the phase exact for large n.
    phase = (-2 * torch.pi / n) * ((k.unsqueeze(1) * k.unsqueeze(0)) % n)
    return torch.polar(torch.ones_like(phase), phase).to(dtype)


def transform(a: torch.Tensor, transforms: Transforms = None) -> torch.Tensor:
    r""":math:`\bar{\mathcal A} = \mathcal A \times_3 M_3 \cdots \times_p M_p` (Eqs. S-8, S-13).

    ``None``: the DFT along every mode ``>= 3`` (``fftn``).

    Shapes: ``a (n1, n2, n3, ..., np)``; ``transforms`` one ``(n_k, n_k)`` invertible matrix
    per mode ``k >= 3`` (a single matrix for order 3).
    """
    _tensor(a, "a")
    if transforms is None:
        return torch.fft.fftn(a, dim=tuple(range(2, a.dim())))
    for k, m in enumerate(_transforms(transforms, a), start=2):
        a = mode_product(a, m, k)
    return a


def inverse_transform(a_bar: torch.Tensor, transforms: Transforms = None) -> torch.Tensor:
    r""":math:`\mathcal A = \bar{\mathcal A}\times_3 M_3^{-1}\cdots\times_p M_p^{-1}` (S-9, S-14).

    Computed by linear solves (no explicit inverse); ``None``: ``ifftn``.

    For ``None`` the result is complex; take ``.real`` for real data (or use :func:`tproduct`).
    """
    _tensor(a_bar, "a_bar")
    if transforms is None:
        return torch.fft.ifftn(a_bar, dim=tuple(range(2, a_bar.dim())))
    for k, m in enumerate(_transforms(transforms, a_bar), start=2):
        dtype = torch.promote_types(a_bar.dtype, m.dtype)
        x = a_bar.to(dtype).movedim(k, 0)
        # M^{-1} X as a solve: no explicit inverse, backward-stable.
        sol = torch.linalg.solve(m.to(dtype), x.reshape(x.shape[0], -1))
        a_bar = sol.reshape(x.shape).movedim(0, k)
    return a_bar


def tproduct_transform(a: torch.Tensor, b: torch.Tensor, transforms: Transforms) -> torch.Tensor:
    r"""The :math:`M`-product :math:`\tilde S^{-1}(\tilde S(\mathcal A)\odot\tilde S(\mathcal B))`.

    Lu, Peng & Wei (2019); H-CLIP supplement, Eq. S-12.

    :math:`\tilde S(\mathcal A) = \mathcal A\times_3 M_3\cdots\times_p M_p` (:func:`transform`).
    Real ``a``, ``b`` and real transforms give a real result; a complex transform gives a complex
    one (for the DFT matrix its imaginary part is rounding noise, tested).  Properties (tested): with
    :func:`dft_matrix` it equals :func:`tproduct`; associative; :func:`t_identity` with the same
    transforms is neutral; transposes reverse products.  A singular transform raises
    ``ValueError``.

    Shapes as :func:`tproduct`; ``transforms`` one ``(n_k, n_k)`` matrix per mode ``k >= 3``.
    """
    a, b = _pair(a, b)
    mats = _transforms(transforms, a)
    return inverse_transform(facewise(transform(a, mats), transform(b, mats)), mats)


# ----------------------------------------------------------------------------
# transpose, identity, orthogonal tensors
# ----------------------------------------------------------------------------
def t_transpose(a: torch.Tensor, transforms: Transforms = None) -> torch.Tensor:
    r"""The t-transpose: transpose every frontal slice, reverse the order of slices ``2..n3``.

    With the DFT (``transforms=None``): :math:`\mathcal A^\top(j, i, k_3, \dots, k_p) =
    \overline{\mathcal A(i, j, -k_3 \bmod n_3, \dots, -k_p \bmod n_p)}` (conjugated only for
    complex ``a``), which is the conjugate transpose of every face in the Fourier domain (Kilmer &
    Martin 2011; recursively for order :math:`p`, Martin et al. 2013).  With a transform :math:`M`, it is
    defined in the transform domain: :math:`\tilde S^{-1}(\bar A_i^{H}\ \text{facewise})`.

    Properties (tested): :math:`(\mathcal A^\top)^\top = \mathcal A`;
    :math:`(\mathcal A * \mathcal B)^\top = \mathcal B^\top * \mathcal A^\top` (with the same
    transforms).  Shapes: ``(n1, n2, t...)`` -> ``(n2, n1, t...)``.
    """
    _tensor(a, "a")
    if transforms is None:
        out = a.transpose(0, 1)
        for k in range(2, a.dim()):  # index -k mod n: keep slice 0, reverse slices 1..n-1
            out = torch.roll(torch.flip(out, dims=(k,)), shifts=1, dims=k)
        return out.conj() if a.is_complex() else out
    mats = _transforms(transforms, a)
    faces = transform(a, mats)
    return inverse_transform(faces.transpose(0, 1).conj(), mats)


def t_identity(
    n: int,
    tube: Sequence[int],
    transforms: Transforms = None,
    *,
    dtype: Optional[torch.dtype] = None,
    device=None,
) -> torch.Tensor:
    r"""The identity tensor: every face of :math:`\tilde S(\mathcal I)` is :math:`I_n`.

    With the DFT: the first frontal slice is :math:`I_n`, all others are zero.  With transforms
    :math:`M_k`: :math:`\mathcal I = (I_n \text{ in every face}) \times_3 M_3^{-1}\cdots`.
    Properties (tested): :math:`\mathcal I * \mathcal A = \mathcal A * \mathcal I = \mathcal A`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    tube = tuple(tube)
    if not tube or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in tube):
        raise ValueError(
            f"tube must be a non-empty sequence of positive integers (n3, ..., np), got {tube!r}"
        )
    dtype = dtype or torch.get_default_dtype()
    eye = torch.eye(n, dtype=dtype, device=device)
    if transforms is None:
        out = torch.zeros((n, n) + tube, dtype=dtype, device=device)
        out[(slice(None), slice(None)) + (0,) * len(tube)] = eye
        return out
    faces = eye.reshape((n, n) + (1,) * len(tube)).expand((n, n) + tube)
    out = inverse_transform(faces, transforms)
    # The solve promotes to the transforms' dtype: cast back to the (real) dtype asked for,
    # unless the transforms are complex (then so is the identity tensor).
    return out if out.is_complex() else out.to(dtype)


def _cayley_faces(s: torch.Tensor) -> torch.Tensor:
    """``(I - S)(I + S)^{-1}`` of skew-Hermitian faces ``(..., n, n)``: ``(I + S) Q = I - S``."""
    eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device).expand_as(s)
    # I + S is invertible for skew-Hermitian S (eigenvalues 1 + iλ), so the solve never fails.
    # cayley.solve: batched CPU solves can be wrong after set_num_threads(k >= 2).
    return solve(eye + s, eye - s)


def t_orthogonal(x: torch.Tensor, transforms: Transforms = None) -> torch.Tensor:
    r"""An orthogonal tensor from free parameters: a Cayley map in every transform-domain face.

    .. math::
        \bar S_i = \tfrac12(\bar X_i - \bar X_i^{H}), \qquad
        \bar Q_i = (I - \bar S_i)(I + \bar S_i)^{-1}, \qquad
        \mathcal Q = \tilde S^{-1}(\bar{\mathcal Q}),

    H-CLIP's Cayley convention, face by face.  Each :math:`\bar Q_i` is unitary, so
    :math:`\mathcal Q^\top * \mathcal Q = \mathcal Q * \mathcal Q^\top = \mathcal I` (tested), and
    :math:`\|\mathcal Q * \mathcal A\|_F = \|\mathcal A\|_F` for the DFT (tested).  For real ``x``
    and the DFT, conjugate symmetry of the faces survives the Cayley map, so :math:`\mathcal Q` is
    real.  The frontal slices of :math:`\mathcal Q` are *not* orthogonal matrices in general.

    Shapes: ``x (n, n, n3, ..., np)`` -> same.
    """
    _tensor(x, "x")
    if x.shape[0] != x.shape[1]:
        raise ValueError(f"x must have square faces (n, n, n3, ...), got shape {tuple(x.shape)}")
    modes = tuple(range(2, x.dim()))
    if transforms is None and not x.is_complex():
        faces = _faces_last(torch.fft.rfftn(x, dim=modes))
        q = _cayley_faces((faces - faces.mH) / 2)
        return torch.fft.irfftn(_faces_first(q), s=x.shape[2:], dim=modes)
    faces = _faces_last(transform(x, transforms))
    q = _faces_first(_cayley_faces((faces - faces.mH) / 2))
    return inverse_transform(q, transforms)
