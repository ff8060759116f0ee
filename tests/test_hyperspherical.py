"""Hyperspherical energy, block-orthogonal fine-tuning, H-CLIP's two forms of relation mixing."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from hyro_edu import cayley as C
from hyro_edu import hyperspherical as H
from hyro_edu import tproduct as T

from .conftest import TOL

F64 = torch.float64
SMALL = H.HCLIPLayout(block_size=4, num_layers=2, text_width=8, vision_width=12)  # K = 2 + 3


def loose(dtype, scale):
    return {k: v * scale for k, v in TOL[dtype].items()}


def energy_by_loop(w, s, normalize=True):
    if normalize:
        w = w / w.norm(dim=-1, keepdim=True)
    total = 0.0
    for i, j in itertools.permutations(range(w.shape[0]), 2):
        z = (w[i] - w[j]).norm()
        total = total + (torch.log(1 / z) if s == 0 else z ** (-s))
    return total


# ----------------------------------------------------------------------------
# hyperspherical energy
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("s", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("normalize", [True, False])
def test_energy_equals_the_double_sum(s, normalize, gen):
    w = torch.randn(9, 5, dtype=F64, generator=gen)
    torch.testing.assert_close(
        H.hyperspherical_energy(w, s=s, normalize=normalize),
        energy_by_loop(w, s, normalize),
        **loose(F64, 100),
    )
    torch.testing.assert_close(
        H.hyperspherical_energy(w.T, s=s, neurons="columns", normalize=normalize),
        energy_by_loop(w, s, normalize),
        **loose(F64, 100),
    )


def test_energy_of_a_regular_simplex():
    # n unit vectors with pairwise cosines -1/(n-1): every distance is sqrt(2n/(n-1)).
    n = 5
    w = torch.eye(n, dtype=F64) - 1.0 / n
    dist = (2 * n / (n - 1)) ** 0.5
    torch.testing.assert_close(
        H.hyperspherical_energy(w, s=1.0), torch.tensor(n * (n - 1) / dist, dtype=F64)
    )


def test_energy_is_invariant_under_right_orthogonal_maps_and_row_scaling(dtype, gen):
    w = torch.randn(16, 12, dtype=dtype, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(12, 12, dtype=F64, generator=gen))
    q = q.to(dtype)
    e = H.hyperspherical_energy(w)
    torch.testing.assert_close(H.hyperspherical_energy(w @ q), e, **loose(dtype, 10))
    scale = torch.rand(16, 1, dtype=dtype, generator=gen) * 10 + 0.1
    torch.testing.assert_close(H.hyperspherical_energy(w * scale), e, **loose(dtype, 10))
    # left multiplication keeps the column energy, and changes the row energy
    torch.testing.assert_close(
        H.hyperspherical_energy(q.T @ w.T, neurons="columns"),
        H.hyperspherical_energy(w.T, neurons="columns"),
        **loose(dtype, 10),
    )
    q16, _ = torch.linalg.qr(torch.randn(16, 16, dtype=F64, generator=gen))
    assert (H.hyperspherical_energy(q16.to(dtype) @ w) - e).abs() / e > 1e-3
    # a generic (non-orthogonal) right factor changes it
    m = torch.eye(12, dtype=dtype) + 0.3 * torch.randn(12, 12, dtype=dtype, generator=gen)
    assert (H.hyperspherical_energy(w @ m) - e).abs() / e > 1e-3


def test_energy_is_finite_for_coincident_neurons(dtype):
    w = torch.tensor(
        [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=dtype, requires_grad=True
    )
    e = H.hyperspherical_energy(w)
    assert torch.isfinite(e)
    assert (
        e > 1 / torch.finfo(dtype).eps ** 0.5
    )  # dominated by the coincident pair, as it should be
    e.backward()
    assert torch.isfinite(w.grad).all()


def test_energy_gradient_matches_finite_differences(gen):
    w = torch.randn(6, 4, dtype=F64, generator=gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: H.hyperspherical_energy(x, s=1.5), (w,))


@given(n=st.integers(2, 8), d=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_energy_hypothesis_against_loop(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, d, dtype=F64, generator=g)
    pair = min(
        (w[i] / w[i].norm() - w[j] / w[j].norm()).norm()
        for i, j in itertools.combinations(range(n), 2)
    )
    if pair < 1e-6:  # the floor acts; the loop would be inf
        return
    torch.testing.assert_close(
        H.hyperspherical_energy(w), energy_by_loop(w, 1.0), rtol=1e-7, atol=1e-9
    )


# ----------------------------------------------------------------------------
# block-diagonal orthogonal re-parametrisation
# ----------------------------------------------------------------------------
def test_oft_weight_equals_the_dense_products(dtype, gen):
    blocks = C.cayley_hclip(torch.randn(3, 4, 4, dtype=dtype, generator=gen))
    dense = C.block_diagonal(blocks)
    w = torch.randn(7, 12, dtype=dtype, generator=gen)
    torch.testing.assert_close(H.oft_weight(w, blocks), w @ dense, **TOL[dtype])
    torch.testing.assert_close(H.oft_weight(w.T, blocks, side="left"), dense @ w.T, **TOL[dtype])
    # right: keeps W W^T (row norms and angles); left: keeps W^T W
    wr = H.oft_weight(w, blocks)
    torch.testing.assert_close(wr @ wr.T, w @ w.T, **loose(dtype, 10))
    wl = H.oft_weight(w.T, blocks, side="left")
    torch.testing.assert_close(wl.T @ wl, w @ w.T, **loose(dtype, 10))
    torch.testing.assert_close(
        H.hyperspherical_energy(wr), H.hyperspherical_energy(w), **loose(dtype, 10)
    )


def test_oft_weight_batched_and_gradcheck(gen):
    blocks = torch.randn(2, 3, 3, dtype=F64, generator=gen).requires_grad_(True)
    w = torch.randn(2, 5, 6, dtype=F64, generator=gen).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda b, x: H.oft_weight(x, C.cayley_hclip(b)), (blocks, w))
    dense = C.block_diagonal(blocks.detach())
    torch.testing.assert_close(H.oft_weight(w.detach(), blocks.detach()), w.detach() @ dense)


def test_reparametrise_attention(gen):
    d = 8
    w_in, w_out = torch.randn(3 * d, d, dtype=F64, generator=gen), torch.randn(
        d, d, dtype=F64, generator=gen
    )
    blocks = C.cayley_hclip(torch.randn(4, 2, 4, 4, dtype=F64, generator=gen))
    new_in, new_out = H.reparametrise_attention(w_in, w_out, blocks)
    dense = [C.block_diagonal(blocks[i]) for i in range(4)]
    for i in range(3):
        torch.testing.assert_close(
            new_in[i * d : (i + 1) * d], w_in[i * d : (i + 1) * d] @ dense[i]
        )
    torch.testing.assert_close(new_out, dense[3] @ w_out)


def test_orthogonality_error(gen):
    q = C.cayley_hclip(torch.randn(5, 6, 6, dtype=F64, generator=gen))
    assert H.orthogonality_error(q).max() < 1e-13
    assert H.orthogonality_error(q + 0.01).min() > 1e-3


# ----------------------------------------------------------------------------
# layout and parameter counts
# ----------------------------------------------------------------------------
def test_vit_b16_parameter_counts_from_shapes_on_the_meta_device():
    vitb = H.HCLIPLayout()
    assert vitb.shape == (128, 128, 48, 10)
    official = H.HCLIPRelation(vitb, device="meta")
    assert all(p.is_meta for p in official.parameters())
    count = sum(p.numel() for p in official.parameters())
    assert (
        count
        == vitb.parameter_count("official")
        == 128**2 * 48 * 10 + 48**2 + 12 * 10**2
        == 7_867_824
    )
    v2 = H.HCLIPLayout(block_size=256)
    gated = H.HCLIPRelation(v2, relation="gated", vision_free_last=3, device="meta")
    assert sum(p.numel() for p in gated.parameters()) == v2.parameter_count("gated") == 15_730_993
    for tubes in ("full", "scalar"):
        m = H.HCLIPRelation(vitb, relation="tproduct", tubes=tubes, device="meta")
        assert sum(p.numel() for p in m.parameters()) == vitb.parameter_count(
            "tproduct", tubes=tubes
        )


def test_free_mask():
    mask = SMALL.free_mask()
    assert mask.shape == (8, 5)
    assert not mask[:, :2].any() and mask[:, 2:].all()
    last = SMALL.free_mask(1)
    assert not last[:4].any() and last[4:, 2:].all() and not last[:, :2].any()
    assert not SMALL.free_mask(0).any()


# ----------------------------------------------------------------------------
# relation mixing
# ----------------------------------------------------------------------------
def code_order_official(params, block_maps, layer_map, layer, modality, text_blocks):
    """The order of operations of the official code, written independently: flatten, block map of
    this layer on the last mode, slice the modality, move blocks first, layer map, the 4 slots.
    """
    b, _, s, k = params.shape
    t = params.reshape(b, b * s, k) @ block_maps[layer].T
    t = t[..., :text_blocks] if modality == "text" else t[..., text_blocks:]
    t = t.reshape(b, b, s, -1).permute(3, 0, 1, 2)  # (K_mod, b, b, 4L)
    t = t @ layer_map.T
    return t[..., 4 * layer : 4 * layer + 4].permute(3, 0, 1, 2)  # (4, K_mod, b, b)


def perturbed_maps(layout, gen, scale=0.3):
    k, s, n = layout.num_blocks, layout.num_slots, layout.num_layers
    block_maps = torch.eye(k, dtype=F64) + scale * torch.randn(n, k, k, dtype=F64, generator=gen)
    layer_map = torch.eye(s, dtype=F64) + scale * torch.randn(s, s, dtype=F64, generator=gen)
    return block_maps, layer_map


def test_mix_official_follows_the_code_order(gen):
    params = torch.randn(SMALL.shape, dtype=F64, generator=gen)
    block_maps, layer_map = perturbed_maps(SMALL, gen)
    mixed = H.mix_official(params, block_maps, layer_map)
    for layer in range(SMALL.num_layers):
        for modality in ("text", "vision"):
            ours = mixed[:, :, 4 * layer : 4 * layer + 4, SMALL.block_range(modality)].permute(
                2, 3, 0, 1
            )
            code = code_order_official(
                params, block_maps, layer_map, layer, modality, SMALL.text_blocks
            )
            torch.testing.assert_close(ours, code, **TOL[F64])


def test_mix_gated_is_a_residual_with_per_layer_gates(gen):
    params = torch.randn(SMALL.shape, dtype=F64, generator=gen)
    block_map = torch.eye(5, dtype=F64) + 0.2 * torch.randn(5, 5, dtype=F64, generator=gen)
    layer_map = torch.eye(8, dtype=F64) + 0.2 * torch.randn(8, 8, dtype=F64, generator=gen)
    zero = torch.zeros(2, 2, dtype=F64)
    assert torch.equal(H.mix_gated(params, block_map, layer_map, zero, text_blocks=2), params)
    gates = torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=F64)
    out = H.mix_gated(params, block_map, layer_map, gates, text_blocks=2)
    full = H.mix_official(params, block_map, layer_map)
    torch.testing.assert_close(out[:, :, 4:, 3], params[:, :, 4:, 3] + 0.4 * full[:, :, 4:, 3])
    torch.testing.assert_close(out[:, :, :4, 0], params[:, :, :4, 0] + 0.1 * full[:, :, :4, 0])


def test_scalar_tproduct_is_a_two_dimensional_circular_convolution(gen):
    params = torch.randn(SMALL.shape, dtype=F64, generator=gen)
    g = torch.randn(8, 5, dtype=F64, generator=gen)
    out = H.mix_tproduct(params, H.scalar_relation(g, 4))
    expected = torch.zeros_like(params)
    for s, k, s2, k2 in itertools.product(range(8), range(5), range(8), range(5)):
        expected[:, :, s, k] += g[(s - s2) % 8, (k - k2) % 5] * params[:, :, s2, k2]
    torch.testing.assert_close(out, expected, **TOL[F64])


VARIANTS = [
    dict(relation="official"),
    dict(relation="gated"),
    dict(relation="tproduct"),
    dict(relation="tproduct", tubes="scalar"),
    dict(relation="tproduct", transforms="real"),
    dict(relation="none"),
]


def build(gen, mix="parameters", vision_free_last=None, transforms=None, **kw):
    if transforms == "real":
        transforms = [
            torch.randn(8, 8, dtype=F64, generator=gen) + 3 * torch.eye(8, dtype=F64),
            torch.randn(5, 5, dtype=F64, generator=gen) + 3 * torch.eye(5, dtype=F64),
        ]
    return H.HCLIPRelation(
        SMALL, mix=mix, vision_free_last=vision_free_last, transforms=transforms, dtype=F64, **kw
    )


def perturb(module, gen, scale=0.3):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, dtype=p.dtype, generator=gen))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
@pytest.mark.parametrize("mix", ["parameters", "matrices"])
def test_every_variant_starts_at_the_identity(variant, mix, gen):
    blocks = build(gen, mix=mix, **variant)()
    assert blocks.shape == (8, 5, 4, 4)
    torch.testing.assert_close(blocks, torch.eye(4, dtype=F64).expand(8, 5, 4, 4), **TOL[F64])


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_mixing_parameters_keeps_text_blocks_orthogonal_and_the_energy(variant, gen):
    module = build(gen, **variant)
    perturb(module, gen)
    blocks = module()
    text, vision = blocks[:, SMALL.block_range("text")], blocks[:, SMALL.block_range("vision")]
    assert H.orthogonality_error(text).max() < 1e-12
    assert H.orthogonality_error(vision).max() > 1e-2  # free vision blocks (HPS code)
    w = torch.randn(10, 8, dtype=F64, generator=gen)
    for slot in range(SMALL.num_slots):  # the q, k, v slots (o multiplies on the left)
        if slot % 4 == 3:
            continue
        torch.testing.assert_close(
            H.hyperspherical_energy(H.oft_weight(w, text[slot])),
            H.hyperspherical_energy(w),
            **TOL[F64],
        )


@pytest.mark.parametrize(
    "variant", VARIANTS[:-1], ids=lambda v: "-".join(str(x) for x in v.values())
)
def test_mixing_matrices_breaks_orthogonality_and_the_energy(variant, gen):
    module = build(gen, mix="matrices", vision_free_last=0, **variant)
    perturb(module, gen)
    text = module()[:, SMALL.block_range("text")]
    assert H.orthogonality_error(text).max() > 1e-2
    w = torch.randn(10, 8, dtype=F64, generator=gen)
    change = max(
        (H.hyperspherical_energy(H.oft_weight(w, text[s])) / H.hyperspherical_energy(w) - 1)
        .abs()
        .item()
        for s in range(SMALL.num_slots)
    )
    assert change > 1e-3


def test_all_orthogonal_when_no_vision_layer_is_free(gen):
    module = build(gen, vision_free_last=0)
    perturb(module, gen)
    assert H.orthogonality_error(module()).max() < 1e-12
    module = build(gen, vision_free_last=1)
    perturb(module, gen)
    blocks = module()
    assert H.orthogonality_error(blocks[:4]).max() < 1e-12  # layer 0: orthogonal everywhere
    assert H.orthogonality_error(blocks[4:, 2:]).max() > 1e-2  # layer 1 vision: free


def test_float32_text_blocks_stay_orthogonal(gen):
    module = H.HCLIPRelation(SMALL, dtype=torch.float32)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    text = module()[:, SMALL.block_range("text")]
    assert H.orthogonality_error(text).max() < 50 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_gradients_reach_every_parameter(variant, gen):
    module = build(gen, **variant)
    perturb(module, gen, 0.1)
    w = torch.randn(6, 8, dtype=F64, generator=gen)
    loss = sum((H.oft_weight(w, module()[s, :2]) ** 2).sum() for s in range(8))
    loss = loss + (module()[:, 2:] ** 3).sum()
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name


def test_mixing_then_cayley_gradcheck(gen):
    tiny = H.HCLIPLayout(block_size=2, num_layers=1, text_width=2, vision_width=2)
    free = tiny.free_mask()
    params = (0.3 * torch.randn(tiny.shape, dtype=F64, generator=gen)).requires_grad_(True)
    maps = torch.eye(2, dtype=F64).repeat(1, 1, 1) + 0.1 * torch.randn(
        1, 2, 2, dtype=F64, generator=gen
    )
    layer_map = torch.eye(4, dtype=F64) + 0.1 * torch.randn(4, 4, dtype=F64, generator=gen)
    maps.requires_grad_(True)
    layer_map.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, m, l: H.to_blocks(H.mix_official(p, m, l), free), (params, maps, layer_map)
    )
    rel = (0.3 * torch.randn(tiny.shape, dtype=F64, generator=gen)).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, r: H.to_blocks(H.mix_tproduct(p, r), free), (params, rel)
    )


def test_layer_blocks(gen):
    module = build(gen)
    perturb(module, gen)
    blocks = module()
    assert torch.equal(module.layer_blocks(1, "vision", blocks), blocks[4:8, 2:])
    assert module.layer_blocks(0, "text").shape == (4, 2, 4, 4)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def test_bad_input(gen):
    w = torch.randn(4, 6, dtype=F64, generator=gen)
    with pytest.raises(ValueError, match="s must be a finite number >= 0"):
        H.hyperspherical_energy(w, s=-1.0)
    with pytest.raises(ValueError, match="neurons must be 'rows' or 'columns'"):
        H.hyperspherical_energy(w, neurons="cols")
    with pytest.raises(ValueError, match="neuron of norm 0"):
        H.hyperspherical_energy(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="weight must be a matrix"):
        H.hyperspherical_energy(torch.ones(3))
    with pytest.raises(
        ValueError, match=r"weight must have K·b = 8 columns for 2 blocks of size 4"
    ):
        H.oft_weight(w, torch.zeros(2, 4, 4, dtype=F64))
    with pytest.raises(ValueError, match="side must be 'right'"):
        H.oft_weight(w, torch.zeros(2, 3, 3, dtype=F64), side="up")
    with pytest.raises(ValueError, match=r"blocks must have shape \(K, b, b\)"):
        H.oft_weight(w, torch.zeros(2, 3, 4, dtype=F64))
    with pytest.raises(ValueError, match="block_size must divide the feature dimension 512"):
        H.HCLIPLayout(block_size=100)
    with pytest.raises(ValueError, match="num_layers must be an integer >= 1"):
        H.HCLIPLayout(num_layers=0)
    with pytest.raises(ValueError, match=r"vision_free_last must be an integer in \[0, 2\]"):
        SMALL.free_mask(3)
    with pytest.raises(ValueError, match="relation must be 'official'"):
        H.HCLIPRelation(SMALL, relation="fft")
    with pytest.raises(ValueError, match="relation must be 'official'"):
        SMALL.parameter_count("fft")
    with pytest.raises(ValueError, match="mix must be 'parameters' or 'matrices'"):
        H.HCLIPRelation(SMALL, mix="weights")
    params = torch.zeros(SMALL.shape, dtype=F64)
    with pytest.raises(ValueError, match=r"layer_map must have shape \(4L, 4L\) = \(8, 8\)"):
        H.mix_official(params, torch.eye(5, dtype=F64), torch.eye(7, dtype=F64))
    with pytest.raises(ValueError, match=r"block_maps must have shape \(L, K, K\)"):
        H.mix_official(params, torch.zeros(3, 5, 5, dtype=F64), torch.eye(8, dtype=F64))
    with pytest.raises(ValueError, match=r"params must have shape \(b, b, 4L, K\)"):
        H.mix_official(torch.zeros(4, 3, 8, 5), torch.eye(5), torch.eye(8))
    with pytest.raises(ValueError, match="transforms must be real matrices"):
        H.mix_tproduct(params, params, [T.dft_matrix(8), T.dft_matrix(5)])
    with pytest.raises(ValueError, match=r"transforms\[0\] must be invertible"):
        H.mix_tproduct(params, params, [torch.zeros(8, 8, dtype=F64), torch.eye(5, dtype=F64)])
    with pytest.raises(ValueError, match="layer must be an integer in \\[0, 1\\]"):
        H.HCLIPRelation(SMALL).layer_blocks(2, "text")
    with pytest.raises(ValueError, match="modality must be 'text' or 'vision'"):
        SMALL.block_range("audio")


def test_tproduct_relation_transforms_follow_the_module():
    """The transforms are buffers: .double() converts them and state_dict() stores them."""
    from hyro_edu.nn.hyperspherical import HCLIPLayout, HCLIPRelation

    layout = HCLIPLayout(block_size=4, num_layers=2, text_width=4, vision_width=8)
    gen = torch.Generator().manual_seed(0)
    s, k = layout.shape[2], layout.shape[3]
    transforms = [torch.randn(s, s, dtype=torch.float64, generator=gen) + 3 * torch.eye(s, dtype=torch.float64),
                  torch.randn(k, k, dtype=torch.float64, generator=gen) + 3 * torch.eye(k, dtype=torch.float64)]
    module = HCLIPRelation(layout, relation="tproduct", transforms=transforms, dtype=torch.float32)
    assert all(m.dtype == torch.float32 for m in module.transforms)
    assert any(name.startswith("transform_") for name in module.state_dict())
    module = module.double()
    assert all(m.dtype == torch.float64 for m in module.transforms)
    reference = HCLIPRelation(layout, relation="tproduct", transforms=transforms, dtype=torch.float64)
    reference.load_state_dict(module.state_dict())
    torch.testing.assert_close(module(), reference())


def test_t_identity_honours_dtype_with_transforms():
    from hyro_edu.geometry.tproduct import t_identity

    m = torch.eye(5, dtype=torch.float64) * 2
    assert t_identity(3, (5,), [m], dtype=torch.float32).dtype == torch.float32
