"""T-products: FFT vs definition, algebra, invertible transforms, orthogonal tensors, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hyro_edu import tproduct as T

from .conftest import TOL

F64 = torch.float64
TIGHT = dict(rtol=1e-12, atol=1e-12)


def randn(*shape, gen, dtype=F64):
    return torch.randn(*shape, dtype=dtype, generator=gen)


def loose(dtype, scale):
    return {k: v * scale for k, v in TOL[dtype].items()}


# ----------------------------------------------------------------------------
# the definition and its pieces
# ----------------------------------------------------------------------------
def test_unfold_fold_circ_by_hand():
    a = torch.tensor(
        [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]
    )  # frontal slices A0=[1,4], A1=[2,5], A2=[3,6]
    assert torch.equal(T.unfold(a), torch.tensor([[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]))
    assert torch.equal(T.fold(T.unfold(a), 3), a)
    expected = torch.tensor(
        [
            [1.0, 4.0, 3.0, 6.0, 2.0, 5.0],  # A0 A2 A1
            [2.0, 5.0, 1.0, 4.0, 3.0, 6.0],  # A1 A0 A2
            [3.0, 6.0, 2.0, 5.0, 1.0, 4.0],  # A2 A1 A0
        ]
    )
    assert torch.equal(T.circ(a), expected)


def test_scalar_tubes_give_circular_convolution(gen):
    # n1 = n2 = l = 1: the T-product of two tubes is their circular convolution.
    x, y = randn(7, gen=gen), randn(7, gen=gen)
    conv = torch.stack([sum(x[(k - j) % 7] * y[j] for j in range(7)) for k in range(7)])
    out = T.tproduct(x.reshape(1, 1, 7), y.reshape(1, 1, 7)).reshape(7)
    torch.testing.assert_close(out, conv, **TIGHT)
    torch.testing.assert_close(
        T.tproduct_definition(x.reshape(1, 1, 7), y.reshape(1, 1, 7)).reshape(7), conv, **TIGHT
    )


@pytest.mark.parametrize("n3", [1, 2, 5, 8, 13])
def test_fft_equals_definition_third_order(n3, gen):
    a, b = randn(4, 3, n3, gen=gen), randn(3, 5, n3, gen=gen)
    torch.testing.assert_close(T.tproduct(a, b), T.tproduct_definition(a, b), **TIGHT)


def test_fft_equals_definition_float32(gen):
    a, b = randn(6, 5, 16, gen=gen, dtype=torch.float32), randn(
        5, 4, 16, gen=gen, dtype=torch.float32
    )
    exact = T.tproduct_definition(a.double(), b.double())
    fast = T.tproduct(a, b)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.double(), exact, **loose(torch.float32, 10))


def test_order_one_tube_is_the_matrix_product(gen):
    a, b = randn(3, 4, 1, 1, gen=gen), randn(4, 2, 1, 1, gen=gen)
    torch.testing.assert_close(T.tproduct(a, b)[..., 0, 0], a[..., 0, 0] @ b[..., 0, 0], **TIGHT)


@pytest.mark.parametrize("tube", [(3, 4), (2, 3, 2), (5, 1)])
def test_fft_equals_definition_higher_order(tube, gen):
    a, b = randn(3, 2, *tube, gen=gen), randn(2, 4, *tube, gen=gen)
    torch.testing.assert_close(T.tproduct(a, b), T.tproduct_definition(a, b), **TIGHT)


def test_higher_order_is_a_multidimensional_circular_convolution(gen):
    a, b = randn(2, 3, 3, 4, gen=gen), randn(3, 2, 3, 4, gen=gen)
    out = torch.zeros(2, 2, 3, 4, dtype=F64)
    for k3 in range(3):
        for k4 in range(4):
            for j3 in range(3):
                for j4 in range(4):
                    out[:, :, k3, k4] += a[:, :, (k3 - j3) % 3, (k4 - j4) % 4] @ b[:, :, j3, j4]
    torch.testing.assert_close(T.tproduct_definition(a, b), out, **TIGHT)


@given(
    n1=st.integers(1, 4),
    n2=st.integers(1, 4),
    l=st.integers(1, 4),
    tube=st.lists(st.integers(1, 6), min_size=1, max_size=2),
    seed=st.integers(0, 2**31 - 1),
)
def test_fft_equals_definition_hypothesis(n1, n2, l, tube, seed):
    g = torch.Generator().manual_seed(seed)
    a, b = randn(n1, n2, *tube, gen=g), randn(n2, l, *tube, gen=g)
    torch.testing.assert_close(T.tproduct(a, b), T.tproduct_definition(a, b), **TIGHT)


def test_complex_inputs(gen):
    a = torch.complex(randn(3, 3, 6, gen=gen), randn(3, 3, 6, gen=gen))
    b = torch.complex(randn(3, 2, 6, gen=gen), randn(3, 2, 6, gen=gen))
    torch.testing.assert_close(T.tproduct(a, b), T.tproduct_definition(a, b), **TIGHT)


def test_half_precision_is_computed_in_float32(gen):
    a, b = randn(3, 3, 8, gen=gen).half(), randn(3, 2, 8, gen=gen).half()
    out = T.tproduct(a, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        out.double(), T.tproduct_definition(a.double(), b.double()), rtol=1e-3, atol=1e-3
    )


# ----------------------------------------------------------------------------
# algebra
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("tube", [(6,), (3, 4)])
def test_associativity_identity_and_distributivity(tube, gen):
    a, b, c = randn(3, 4, *tube, gen=gen), randn(4, 2, *tube, gen=gen), randn(2, 5, *tube, gen=gen)
    torch.testing.assert_close(
        T.tproduct(T.tproduct(a, b), c), T.tproduct(a, T.tproduct(b, c)), **TIGHT
    )
    torch.testing.assert_close(
        T.tproduct_definition(T.tproduct_definition(a, b), c),
        T.tproduct_definition(a, T.tproduct_definition(b, c)),
        **TIGHT,
    )
    eye3, eye4 = T.t_identity(3, tube, dtype=F64), T.t_identity(4, tube, dtype=F64)
    torch.testing.assert_close(T.tproduct(eye3, a), a, **TIGHT)
    torch.testing.assert_close(T.tproduct(a, eye4), a, **TIGHT)
    torch.testing.assert_close(T.tproduct_definition(eye3, a), a, **TIGHT)
    b2 = randn(4, 2, *tube, gen=gen)
    torch.testing.assert_close(
        T.tproduct(a, b + b2), T.tproduct(a, b) + T.tproduct(a, b2), **TIGHT
    )


def test_not_commutative_even_for_square_faces(gen):
    a, b = randn(3, 3, 5, gen=gen), randn(3, 3, 5, gen=gen)
    assert (T.tproduct(a, b) - T.tproduct(b, a)).abs().max() > 0.1


def test_t_transpose_by_hand_and_laws(gen):
    a = randn(2, 3, 4, gen=gen)
    at = T.t_transpose(a)
    assert at.shape == (3, 2, 4)
    for k, src in enumerate([0, 3, 2, 1]):  # slice 0 stays, slices 1..3 reversed
        assert torch.equal(at[:, :, k], a[:, :, src].T)
    assert torch.equal(T.t_transpose(at), a)


@pytest.mark.parametrize("tube", [(5,), (4,), (3, 4)])
def test_transpose_reverses_products(tube, gen):
    a, b = randn(3, 4, *tube, gen=gen), randn(4, 2, *tube, gen=gen)
    lhs = T.t_transpose(T.tproduct_definition(a, b))
    rhs = T.tproduct_definition(T.t_transpose(b), T.t_transpose(a))
    torch.testing.assert_close(lhs, rhs, **TIGHT)


def test_gradients_match_finite_differences(gen):
    a = randn(2, 3, 4, gen=gen).requires_grad_(True)
    b = randn(3, 2, 4, gen=gen).requires_grad_(True)
    assert torch.autograd.gradcheck(T.tproduct, (a, b))
    a4 = randn(2, 2, 3, 2, gen=gen).requires_grad_(True)
    b4 = randn(2, 1, 3, 2, gen=gen).requires_grad_(True)
    assert torch.autograd.gradcheck(T.tproduct, (a4, b4))


# ----------------------------------------------------------------------------
# the DFT diagonalisation (supplement, Eq. S-3)
# ----------------------------------------------------------------------------
def test_dft_block_diagonalises_circ(gen):
    n1, n2, n3 = 3, 2, 5
    a = randn(n1, n2, n3, gen=gen)
    f = T.dft_matrix(n3) / n3**0.5  # unitary: F* = F^{-1}
    left = torch.kron(f, torch.eye(n1, dtype=torch.complex128))
    right = torch.kron(f.mH.resolve_conj().contiguous(), torch.eye(n2, dtype=torch.complex128))
    d = left @ T.circ(a).to(torch.complex128) @ right
    a_bar = torch.fft.fft(a, dim=2)
    expected = torch.block_diag(*[a_bar[:, :, k] for k in range(n3)])
    torch.testing.assert_close(d, expected, **TIGHT)


def test_dft_matrix_matches_fft(gen):
    x = randn(10, gen=gen).to(torch.complex128)
    torch.testing.assert_close(T.dft_matrix(10) @ x, torch.fft.fft(x), **TIGHT)


# ----------------------------------------------------------------------------
# invertible transforms (Lu et al. 2019)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("tube", [(6,), (3, 4)])
def test_transform_with_dft_matrix_equals_fft(tube, gen):
    a, b = randn(3, 4, *tube, gen=gen), randn(4, 2, *tube, gen=gen)
    mats = [T.dft_matrix(n) for n in tube]
    out = T.tproduct_transform(a, b, mats[0] if len(tube) == 1 else mats)
    assert out.is_complex()
    assert out.imag.abs().max() < 1e-12
    torch.testing.assert_close(out.real, T.tproduct(a, b), **TIGHT)


def test_transform_round_trip_and_mode_product(gen):
    a = randn(2, 3, 4, 5, gen=gen)
    mats = [randn(4, 4, gen=gen), randn(5, 5, gen=gen)]
    torch.testing.assert_close(
        T.inverse_transform(T.transform(a, mats), mats), a, **loose(F64, 100)
    )
    # the mode-3 product mixes frontal slices: A x_3 M = sum_j M[k, j] A_j
    m = mats[0]
    by_hand = torch.stack([sum(m[k, j] * a[:, :, j] for j in range(4)) for k in range(4)], dim=2)
    torch.testing.assert_close(T.mode_product(a, m, 2), by_hand, **TIGHT)


def test_real_transform_product_laws(gen):
    tube = (4, 3)
    mats = [
        randn(4, 4, gen=gen) + 3 * torch.eye(4, dtype=F64),
        randn(3, 3, gen=gen) + 3 * torch.eye(3, dtype=F64),
    ]
    a, b, c = randn(3, 2, *tube, gen=gen), randn(2, 4, *tube, gen=gen), randn(4, 2, *tube, gen=gen)
    ab = T.tproduct_transform(a, b, mats)
    assert not ab.is_complex()
    tol = loose(F64, 1000)
    torch.testing.assert_close(
        T.tproduct_transform(ab, c, mats),
        T.tproduct_transform(a, T.tproduct_transform(b, c, mats), mats),
        **tol,
    )
    eye = T.t_identity(3, tube, mats, dtype=F64)
    torch.testing.assert_close(T.tproduct_transform(eye, a, mats), a, **tol)
    lhs = T.t_transpose(ab, mats)
    rhs = T.tproduct_transform(T.t_transpose(b, mats), T.t_transpose(a, mats), mats)
    torch.testing.assert_close(lhs, rhs, **tol)
    # a different transform is a different product
    assert (ab - T.tproduct(a, b)).abs().max() > 0.1


def test_scalar_tubes_under_a_transform_mix_slices_by_m_inverse_diag_m(gen):
    n3 = 5
    m = randn(n3, n3, gen=gen) + 3 * torch.eye(n3, dtype=F64)
    a, g = randn(3, 3, n3, gen=gen), randn(n3, gen=gen)
    rel = torch.eye(3, dtype=F64).unsqueeze(-1) * g  # tube g on the diagonal
    mixing = torch.linalg.solve(m, torch.diag(m @ g) @ m)
    torch.testing.assert_close(
        T.tproduct_transform(a, rel, m), T.mode_product(a, mixing, 2), **loose(F64, 1000)
    )
    # with the DFT the mixing matrix is circulant: row k is g shifted by k
    circulant = torch.stack([torch.roll(g.flip(0), k + 1) for k in range(n3)])
    torch.testing.assert_close(T.tproduct(a, rel), T.mode_product(a, circulant, 2), **TIGHT)


# ----------------------------------------------------------------------------
# orthogonal tensors
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("tube", [(6,), (5,), (3, 4)])
def test_t_orthogonal_satisfies_qtq_identity_by_the_definition(tube, gen):
    q = T.t_orthogonal(randn(4, 4, *tube, gen=gen))
    assert not q.is_complex()
    eye = T.t_identity(4, tube, dtype=F64)
    # checked without any FFT: the definition and the index-reversal transpose
    torch.testing.assert_close(T.tproduct_definition(T.t_transpose(q), q), eye, **loose(F64, 10))
    torch.testing.assert_close(T.tproduct_definition(q, T.t_transpose(q)), eye, **loose(F64, 10))
    # ... while its frontal slices are not orthogonal matrices
    first = q[(slice(None), slice(None)) + (0,) * len(tube)]
    assert (first.T @ first - torch.eye(4, dtype=F64)).abs().max() > 1e-3


def test_orthogonal_tensors_keep_the_frobenius_norm(gen):
    q = T.t_orthogonal(randn(5, 5, 8, gen=gen))
    a = randn(5, 3, 8, gen=gen)
    torch.testing.assert_close(T.tproduct(q, a).norm(), a.norm(), **TIGHT)
    assert (T.tproduct(randn(5, 5, 8, gen=gen), a).norm() - a.norm()).abs() > 0.1


def test_orthogonal_tensor_from_facewise_orthogonal_matrices_under_a_real_transform(gen):
    n, tube = 4, (5, 3)
    mats = [
        randn(5, 5, gen=gen) + 2 * torch.eye(5, dtype=F64),
        randn(3, 3, gen=gen) + 2 * torch.eye(3, dtype=F64),
    ]
    faces, _ = torch.linalg.qr(randn(*tube, n, n, gen=gen))  # an orthogonal matrix in every face
    q = T.inverse_transform(faces.movedim((-2, -1), (0, 1)), mats)
    eye = T.t_identity(n, tube, mats, dtype=F64)
    tol = loose(F64, 1000)
    torch.testing.assert_close(T.tproduct_transform(T.t_transpose(q, mats), q, mats), eye, **tol)
    torch.testing.assert_close(T.t_orthogonal(randn(n, n, *tube, gen=gen), mats).shape, q.shape)
    q2 = T.t_orthogonal(randn(n, n, *tube, gen=gen), mats)
    torch.testing.assert_close(T.tproduct_transform(T.t_transpose(q2, mats), q2, mats), eye, **tol)


def test_dft_matrix_transforms_reproduce_transpose_and_identity(gen):
    tube = (4, 3)
    mats = [T.dft_matrix(n) for n in tube]
    a = randn(2, 3, *tube, gen=gen)
    at = T.t_transpose(a, mats)
    assert at.imag.abs().max() < 1e-12
    torch.testing.assert_close(at.real, T.t_transpose(a), **TIGHT)
    eye = T.t_identity(3, tube, mats, dtype=F64)
    assert eye.imag.abs().max() < 1e-12
    torch.testing.assert_close(eye.real, T.t_identity(3, tube, dtype=F64), **TIGHT)


def test_t_orthogonal_gradients(gen):
    x = (0.3 * randn(2, 2, 3, gen=gen)).requires_grad_(True)
    assert torch.autograd.gradcheck(T.t_orthogonal, (x,))
    m = randn(3, 3, gen=gen) + 3 * torch.eye(3, dtype=F64)
    assert torch.autograd.gradcheck(lambda t: T.t_orthogonal(t, m), (x,))
    zero = torch.zeros(3, 3, 4, dtype=F64, requires_grad=True)  # the identity tensor, an edge case
    q = T.t_orthogonal(zero)
    torch.testing.assert_close(q, T.t_identity(3, (4,), dtype=F64))
    q.sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_orthogonal_tensor_float32(gen):
    q = T.t_orthogonal(randn(6, 6, 16, gen=gen, dtype=torch.float32))
    eye = T.t_identity(6, (16,), dtype=torch.float32)
    torch.testing.assert_close(T.tproduct(T.t_transpose(q), q), eye, **loose(torch.float32, 10))


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_input(gen):
    a3, b3 = randn(3, 4, 5, gen=gen), randn(4, 2, 5, gen=gen)
    with pytest.raises(ValueError, match=r"a must be a tensor of order p >= 3"):
        T.tproduct(randn(3, 4, gen=gen), b3)
    with pytest.raises(ValueError, match=r"b must have shape \(n2, l, 5\).*n2 = a.shape\[1\] = 4"):
        T.tproduct(a3, randn(3, 2, 5, gen=gen))
    with pytest.raises(ValueError, match=r"b must have shape"):
        T.tproduct_definition(a3, randn(4, 2, 6, gen=gen))
    with pytest.raises(ValueError, match=r"b must have shape"):
        T.tproduct(a3, randn(4, 2, 5, 1, gen=gen))
    with pytest.raises(ValueError, match="a must be a real floating-point or complex tensor"):
        T.tproduct(torch.ones(3, 4, 5, dtype=torch.long), b3)
    with pytest.raises(ValueError, match=r"a must be a tensor of order 3"):
        T.circ(randn(2, 2, 2, 2, gen=gen))
    singular = torch.ones(5, 5, dtype=F64)
    with pytest.raises(ValueError, match=r"transforms must be invertible \(condition number"):
        T.tproduct_transform(a3, b3, singular)
    with pytest.raises(ValueError, match=r"transforms\[1\] must be invertible"):
        T.tproduct_transform(
            randn(2, 2, 3, 4, gen=gen),
            randn(2, 2, 3, 4, gen=gen),
            [torch.eye(3), torch.zeros(4, 4)],
        )
    with pytest.raises(ValueError, match=r"transforms must be a square matrix of size n3 = 5"):
        T.tproduct_transform(a3, b3, torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match=r"transforms must hold 2 matrices"):
        T.transform(randn(2, 2, 3, 4, gen=gen), [torch.eye(3, dtype=F64)])
    with pytest.raises(ValueError, match=r"x must have square faces"):
        T.t_orthogonal(a3)
    with pytest.raises(ValueError, match=r"tube must be a non-empty sequence"):
        T.t_identity(3, ())
    with pytest.raises(ValueError, match=r"m must be a matrix with a.shape\[2\] = 5 columns"):
        T.mode_product(a3, torch.eye(4), 2)
    with pytest.raises(ValueError, match=r"mode must be an integer in \[0, 2\]"):
        T.mode_product(a3, torch.eye(5), 3)
    with pytest.raises(ValueError, match=r"m must be a matrix with a multiple of n3 = 4 rows"):
        T.fold(torch.zeros(6, 2), 4)
