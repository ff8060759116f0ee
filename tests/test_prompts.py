"""MaPLe on open_clip (hyro_edu.tree_alignment.prompts): oracles against open_clip, gradients, counts, errors.

Oracles, exact up to float rounding:

* ``depth = 0`` (vanilla) is open_clip's own ``encode_image`` / ``encode_text``;
* with prompts, open_clip's own forward passes (``model.encode_image``, ``model.encode_text``)
  with the prompts inserted by forward hooks, an independent path to the same computation;
* the text tower with prompts that equal what plain CLIP computes at the prompted rows:
  ``P_0`` = embeddings of "a photo" (MaPLe's initialisation), ``P_j`` = plain CLIP's hidden
  states at rows 1..n before block j, which the causal mask makes the same for every class.
  Then the prompted text tower *is* plain CLIP on "a photo of a {name}.".  No such construction
  exists for the image tower: appended tokens are attended to by every token.
"""
from __future__ import annotations

import contextlib

import open_clip
import pytest
import torch
from torch import nn

from hyro_edu.clip.backbone import ClipBackbone
from hyro_edu.clip.tiny import build_tiny_clip
from hyro_edu.tree_alignment import prompts as P

NAMES = ["red circle", "blue star", "green square"]
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_clip(seed=0).eval()


@pytest.fixture(scope="module")
def vit_b16():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return open_clip.CLIP(**open_clip.get_model_config("ViT-B-16")).eval()


@pytest.fixture
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _frozen_state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------
# open_clip's own forward passes with the prompts inserted by hooks (the oracle)
# ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _hooked(model: open_clip.CLIP, text_prompts, vision_prompts, n: int):
    """Hooks that make open_clip's encode_image / encode_text MaPLe's forward passes."""
    assert model.transformer.batch_first and model.visual.transformer.batch_first
    handles = []

    def replace(x, rows, start):
        x = x.clone()
        x[:, start:start + n] = rows.to(x.dtype)
        return x

    def append_first_vision_prompt(module, args):
        (x,) = args
        return (torch.cat([x, vision_prompts[0].expand(x.shape[0], -1, -1)], 1),)

    def vision_block(j):
        return lambda module, args: (replace(args[0], vision_prompts[j], args[0].shape[1] - n), *args[1:])

    def text_block(j):
        return lambda module, args: (replace(args[0], text_prompts[j], 1), *args[1:])

    try:
        if vision_prompts:
            handles.append(model.visual.ln_pre.register_forward_pre_hook(append_first_vision_prompt))
            handles.append(
                model.token_embedding.register_forward_hook(lambda m, a, out: replace(out, text_prompts[0], 1))
            )
        for j in range(1, len(vision_prompts)):
            handles.append(model.visual.transformer.resblocks[j].register_forward_pre_hook(vision_block(j)))
            handles.append(model.transformer.resblocks[j].register_forward_pre_hook(text_block(j)))
        yield
    finally:
        for h in handles:
            h.remove()


def _oracle(wrapper: P.MaPLeCLIP, images, names, blocks=()):
    model = wrapper.model
    text, vision = wrapper.prompt_learner()
    captured = {}
    hooks = [
        model.visual.transformer.resblocks[b].register_forward_hook(
            lambda m, a, out, b=b: captured.__setitem__(b, out[:, 0])
        )
        for b in blocks
    ]
    try:
        with _hooked(model, text, vision, wrapper.n_ctx):
            img = model.encode_image(images)
            txt = model.encode_text(wrapper.tokenize(names))
    finally:
        for h in hooks:
            h.remove()
    layers = torch.stack([captured[b] for b in blocks], 1) if blocks else None
    return img, txt, layers


# ---------------------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------------------
def test_vanilla_mode_is_open_clip(tiny, images):
    before = _frozen_state(tiny)
    plain = P.MaPLeCLIP(tiny, depth=0)
    assert plain.vanilla and plain.num_prompt_parameters == 0
    assert plain.prompt_learner.text_prompts() == [] and plain.prompt_learner.vision_prompts() == []
    with torch.no_grad():
        torch.testing.assert_close(plain.encode_image(images), tiny.encode_image(images), rtol=0, atol=0)
        tokens = plain.tokenize(NAMES)
        assert plain.prompts_for(NAMES)[0] == "a photo of a red circle."
        torch.testing.assert_close(plain.encode_text(NAMES), tiny.encode_text(tokens), rtol=0, atol=0)
        torch.testing.assert_close(plain.encode_text(tokens), tiny.encode_text(tokens), rtol=0, atol=0)
        torch.testing.assert_close(
            plain.encode_text(NAMES, normalize=True), tiny.encode_text(tokens, normalize=True), rtol=0, atol=0
        )
        # the class tokens after blocks 1 and 3, against ClipBackbone's hook-based ones
        out = plain.encode_image(images, return_layers=(1, -1))
        ref = ClipBackbone(tiny).cls_tokens(images, [1, 3], project=False)
        torch.testing.assert_close(out.layer_tokens, ref, **TOL)
        torch.testing.assert_close(out.features, tiny.encode_image(images), rtol=0, atol=0)
        # logits as CLIP's
        logits = plain(images, NAMES)
        ref_logits, _ = tiny.get_logits(images, tokens)
        torch.testing.assert_close(logits, ref_logits, **TOL)
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())


def test_vanilla_mode_at_another_image_size_is_the_backbone(tiny):
    images = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(1))
    plain = P.MaPLeCLIP(ClipBackbone(tiny), depth=0)
    with torch.no_grad():
        ours = plain.encode_image(images)
        ref = ClipBackbone(tiny).encode_image(images, normalize=False)
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_prompted_towers_are_open_clip_with_the_prompts_inserted(tiny, images, depth):
    maple = P.MaPLeCLIP(tiny, depth=depth, seed=depth)
    with torch.no_grad():
        # non-trivial couplings and prompts (the deep copies start identical)
        for f in maple.prompt_learner.couplings():
            f.weight.normal_(0, 0.2)
        maple.prompt_learner.ctx.add_(0.1 * torch.randn_like(maple.prompt_learner.ctx))
        img_ref, txt_ref, layers_ref = _oracle(maple, images, NAMES, blocks=(1, 2, 3))
        out = maple.encode_image(images, return_layers=(1, 2, 3))
        txt = maple.encode_text(NAMES)
    torch.testing.assert_close(out.features, img_ref, **TOL)
    torch.testing.assert_close(out.layer_tokens, layers_ref, **TOL)
    torch.testing.assert_close(txt, txt_ref, **TOL)
    # and the prompts do change the image features
    with torch.no_grad():
        assert not torch.allclose(out.features, tiny.encode_image(images), atol=1e-3)


def test_text_prompts_equal_to_plain_clips_rows_reproduce_plain_clip(tiny):
    n = 2
    maple = P.MaPLeCLIP(tiny, n_ctx=n, depth=4, seed=0)
    learner = maple.prompt_learner
    tokens = maple.tokenize(NAMES)
    # P_0 is the embedding of "a photo", the prefix stays "a photo of a"
    assert maple.prefix == P.DEFAULT_CTX_INIT
    with torch.no_grad():
        torch.testing.assert_close(learner.ctx, tiny.token_embedding(tokens[0, 1:1 + n]), rtol=0, atol=0)
        # plain CLIP's hidden states before each block, rows 1..n: the same for every class
        captured = {}
        hooks = [
            blk.register_forward_pre_hook(lambda m, a, j=j: captured.__setitem__(j, a[0][:, 1:1 + n].clone()))
            for j, blk in enumerate(tiny.transformer.resblocks)
        ]
        try:
            ref = tiny.encode_text(tokens)
        finally:
            for h in hooks:
                h.remove()
        for j, p in enumerate(learner.compound_prompts_text, start=1):
            rows = captured[j]
            torch.testing.assert_close(rows, rows[:1].expand_as(rows), rtol=0, atol=0)
            p.copy_(rows[0])
        torch.testing.assert_close(maple.encode_text(NAMES), ref, **TOL)
        # with the random deep prompts of the initialisation it differs
        fresh = P.MaPLeCLIP(tiny, n_ctx=n, depth=4, seed=0)
        assert not torch.allclose(fresh.encode_text(NAMES), ref, atol=1e-4)
        # depth 1 (P_0 only) at initialisation is plain CLIP too
        torch.testing.assert_close(P.MaPLeCLIP(tiny, depth=1).encode_text(NAMES), ref, **TOL)


# ---------------------------------------------------------------------------------------
# gradients and the coupling
# ---------------------------------------------------------------------------------------
def test_only_the_prompts_train_and_their_gradients_are_finite(tiny, images):
    before = _frozen_state(tiny)
    maple = P.MaPLeCLIP(tiny, depth=3, seed=0)
    logits = maple(images, NAMES)
    out = maple.encode_image(images, return_layers=(1, 2))
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 2])) + out.layer_tokens.square().mean()
    loss.backward()
    trainable = {n for n, p in maple.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in maple.prompt_learner.named_parameters(prefix="prompt_learner")}
    assert all(n.startswith("prompt_learner.") for n in trainable)
    for name, p in maple.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert all(not p.requires_grad for p in tiny.parameters())
    assert all(torch.equal(v, before[k]) for k, v in tiny.state_dict().items())


def test_vision_prompts_are_the_couplings_of_the_text_prompts(tiny, images):
    maple = P.MaPLeCLIP(tiny, depth=3, seed=0)
    learner = maple.prompt_learner
    text, vision = learner()
    assert len(text) == len(vision) == 3
    for f, t, v in zip(learner.couplings(), text, vision):
        torch.testing.assert_close(v, t @ f.weight.T + f.bias)
        assert v.shape == (2, maple.vision_width)
    # F_1 and F_2 are copies of one layer: identical at initialisation, separate parameters
    f1, f2 = learner.compound_prompt_projections
    assert torch.equal(f1.weight, f2.weight) and torch.equal(f1.bias, f2.bias)
    assert f1.weight.data_ptr() != f2.weight.data_ptr()
    # an image-only loss reaches every text prompt (V-L coupling) ...
    maple.encode_image(images).square().sum().backward()
    for p in text:
        assert p.grad is not None and p.grad.abs().sum() > 0
    # ... while a text-only loss never reaches the couplings
    maple.zero_grad(set_to_none=True)
    maple.encode_text(NAMES).square().sum().backward()
    assert all(p.grad is None for f in learner.couplings() for p in f.parameters())
    assert all(p.grad is not None for p in text)


def test_initialisation(tiny):
    a = P.MaPLeCLIP(tiny, seed=3)
    b = P.MaPLeCLIP(tiny, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.prompt_learner.parameters(), b.prompt_learner.parameters()))
    std = torch.cat([p.detach().flatten() for p in a.prompt_learner.compound_prompts_text]).std()
    assert 0.01 < float(std) < 0.04
    # no initialisation text, or more context tokens than it has: random P_0, prefix "X X ..."
    for kwargs in (dict(ctx_init=None), dict(n_ctx=5)):
        m = P.MaPLeCLIP(tiny, seed=0, **kwargs)
        n = m.n_ctx
        assert m.prefix == " ".join(["X"] * n)
        assert m.prompts_for(["cat"]) == [" ".join(["X"] * n) + " cat."]
        assert m.prompt_learner.ctx.shape == (n, 64) and float(m.prompt_learner.ctx.detach().std()) < 0.05
    # n_ctx 4 takes all of "a photo of a"
    m = P.MaPLeCLIP(tiny, n_ctx=4)
    tokens = m.tokenize(["cat"])
    assert m.prefix == "a photo of a"
    torch.testing.assert_close(m.prompt_learner.ctx, tiny.token_embedding(tokens[0, 1:5]), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# parameter counts and shapes
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, count", [(0, 0), (1, 4288), (2, 8576), (3, 12864), (4, 17152)])
def test_parameter_counts_tiny(tiny, depth, count):
    maple = P.MaPLeCLIP(tiny, depth=depth)
    assert maple.num_prompt_parameters == count == P.prompt_parameter_count(2, depth, 64, 64)


def test_vit_b16_counts_and_shapes(vit_b16):
    # the design note's numbers: 1,185,024 (J = 3) and 3,555,072 (J = 9, MaPLe's default)
    assert P.MaPLeCLIP(vit_b16, depth=9).num_prompt_parameters == 3_555_072
    maple = P.MaPLeCLIP(vit_b16, depth=3, seed=0)
    assert maple.num_prompt_parameters == 1_185_024 == P.prompt_parameter_count(2, 3, 512, 768)
    assert (maple.text_width, maple.vision_width, maple.embed_dim, maple.num_layers) == (512, 768, 512, 12)
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = maple.encode_image(images, return_layers=(4, 7, 11))
        assert isinstance(out, P.ImageEncoding)
        assert out.features.shape == (1, 512) and out.layer_tokens.shape == (1, 3, 768)
        # the last entry is the class token that ln_post and proj turn into the features
        visual = vit_b16.visual
        torch.testing.assert_close(visual.ln_post(out.layer_tokens[:, -1]) @ visual.proj, out.features, **TOL)
        text = maple.encode_text(["cat", "dog"], normalize=True)
        assert text.shape == (2, 512)
        torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
        assert maple.tokenize(["cat"]).shape == (1, 77)
        # open_clip's own forward with the prompts hooked in, and plain CLIP for depth 0
        img_ref, _, layers_ref = _oracle(maple, images, ["cat"], blocks=(4, 7, 11))
        torch.testing.assert_close(out.features, img_ref, **TOL)
        torch.testing.assert_close(out.layer_tokens, layers_ref, **TOL)
        plain = P.MaPLeCLIP(vit_b16, depth=0)
        torch.testing.assert_close(plain.encode_image(images), vit_b16.encode_image(images), **TOL)


def test_layer_token_shapes_tiny(tiny, images):
    maple = P.MaPLeCLIP(tiny, depth=2)
    with torch.no_grad():
        assert maple.encode_image(images).shape == (2, 64)
        out = maple.encode_image(images, return_layers=(1, 2, 3))
        assert out.layer_tokens.shape == (2, 3, 64)
        assert maple.encode_image(images, return_layers=()).layer_tokens.shape == (2, 0, 64)
        # negative indices count from the end
        torch.testing.assert_close(
            maple.encode_image(images, return_layers=(-1, 1)).layer_tokens, out.layer_tokens[:, [2, 0]],
            rtol=0, atol=0,
        )
        assert maple(images, NAMES).shape == (2, 3)


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_ctx=0), r"n_ctx must be an integer in \[1, 22\], got 0"),
        (dict(n_ctx=True), r"n_ctx must be"),
        (dict(n_ctx=23), r"n_ctx must be an integer in \[1, 22\], got 23"),
        (dict(depth=5), r"depth must be at most 4, the number of blocks of the shallower tower"),
        (dict(depth=-1), r"depth must be an integer >= 0, got -1"),
        (dict(depth=2.0), r"depth must be"),
        (dict(ctx_init=3), r"ctx_init must be a string or None"),
    ],
)
def test_bad_construction(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.MaPLeCLIP(tiny, **kwargs)


def test_bad_model():
    with pytest.raises(ValueError, match="model must be an open_clip.CLIP"):
        P.MaPLeCLIP(nn.Linear(2, 2))


def test_bad_inputs(tiny, images):
    maple = P.MaPLeCLIP(tiny, depth=2)
    with pytest.raises(ValueError, match=r"return_layers\[1\] must be a block index in \[-4, 3\]"):
        maple.encode_image(images, return_layers=(3, 4))
    with pytest.raises(ValueError, match=r"return_layers\[0\] must be a block index"):
        maple.encode_image(images, return_layers=(-5,))
    with pytest.raises(ValueError, match="return_layers must be a sequence"):
        maple.encode_image(images, return_layers=3)
    with pytest.raises(ValueError, match=r"images must be a tensor \(B, 3, H, W\)"):
        maple.encode_image(images[0])
    with pytest.raises(ValueError, match="images must be a non-empty batch .* patch size 8"):
        maple.encode_image(images[..., :60])
    with pytest.raises(ValueError, match="class_names must be a non-empty sequence"):
        maple.encode_text([])
    with pytest.raises(ValueError, match="class_names must be a non-empty sequence"):
        maple.encode_text("cat")
    with pytest.raises(ValueError, match=r"class_names\[1\] must be a non-empty string"):
        maple.encode_text(["cat", ""])
    with pytest.raises(ValueError, match=r"token ids \(C, 24\)"):
        maple.encode_text(torch.zeros(2, 77, dtype=torch.long))
    with pytest.raises(ValueError, match=r"n_ctx must be an integer >= 1"):
        P.prompt_parameter_count(0, 3, 512, 768)
