"""The CLIP interface: shapes, positional-embedding interpolation, the dense path, hooks, Q/K/V adapters, loading."""
from __future__ import annotations

import open_clip
import pytest
import torch
from torch import nn

from hyro_edu.clip import backbone as B
from hyro_edu.clip import tiny as T
from hyro_edu.clip import weights as W


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return W.load_clip(T.TINY_CLIP_NAME, None, device="cpu")


@pytest.fixture
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


class ScaleQK(nn.Module):
    """W_q -> a W_q, W_k -> W_k / a: attention logits, hence outputs, are unchanged."""

    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, q, k, v):
        return self.a * q, k / self.a, v


class ScaleV(nn.Module):
    def __init__(self, a: float):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, q, k, v):
        return q, k, self.a * v


def test_tiny_clip_is_open_clip_and_our_image_path_matches_it(tiny, images):
    assert isinstance(tiny.model, open_clip.CLIP)
    assert tiny.native_grid == (8, 8) and tiny.patch_size == 8 and tiny.embed_dim == 64
    with torch.no_grad():
        ours = tiny.encode_image(images, normalize=False)
        theirs = tiny.model.encode_image(images)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        text = tiny.encode_text(["a photo of a red circle.", "a blue star."])
    assert text.shape == (2, 64)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))


def test_tokenizer_works_offline(tiny):
    tokens = tiny.tokenize(["a photo of a red circle.", "a blue star."])
    assert tokens.shape == (2, tiny.context_length) == (2, 24)
    assert bool((tokens[:, 0] == 49406).all())  # start of text
    assert bool(((tokens == 49407).sum(1) == 1).all())  # one end of text each


def test_interpolate_pos_embed_keeps_cls_and_is_identity_on_the_native_grid():
    pe = torch.randn(1 + 14 * 14, 32)
    assert B.interpolate_pos_embed(pe, (14, 14)) is pe
    big = B.interpolate_pos_embed(pe, (24, 24))
    assert big.shape == (1 + 24 * 24, 32)
    assert torch.equal(big[0], pe[0])
    const = torch.ones(1 + 14 * 14, 4)
    torch.testing.assert_close(B.interpolate_pos_embed(const, (24, 20)), torch.ones(1 + 24 * 20, 4))
    # a linear field f(s) = s/13 on source columns s = 0..13 is reproduced away from the border:
    # output column j samples s = (j + 1/2)·14/28 - 1/2 (align_corners=False)
    ramp = torch.linspace(0, 1, 14).repeat(14, 1)  # varies along x
    pe = torch.cat([torch.zeros(1, 1), ramp.reshape(-1, 1)])
    j = torch.arange(4, 24)
    expected = ((j + 0.5) / 2 - 0.5) / 13
    up = B.interpolate_pos_embed(pe, (28, 28), mode="bilinear")[1:].reshape(28, 28)
    torch.testing.assert_close(up[10, 4:24], expected, atol=1e-6, rtol=0)
    up = B.interpolate_pos_embed(pe, (28, 28))[1:].reshape(28, 28)  # bicubic: nearly linear
    torch.testing.assert_close(up[10, 4:24], expected, atol=5e-3, rtol=0)
    with pytest.raises(ValueError, match="square grid"):
        B.interpolate_pos_embed(torch.zeros(1 + 12, 4), (3, 3))


def test_dense_features_at_other_input_sizes(tiny):
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        fmap = tiny.dense_features(x)
        feats = tiny.forward_visual(x, blocks=[1, 3], dense=False)
    assert fmap.shape == (2, 64, 12, 10)
    assert feats.grid == (12, 10) and feats.tokens.shape == (2, 120, 64)
    assert {i: t.shape for i, t in feats.blocks.items()} == {1: (2, 121, 64), 3: (2, 121, 64)}
    with pytest.raises(ValueError, match="multiples of the patch size 8"):
        tiny.dense_features(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match=r"images must be a tensor \(B, 3, H, W\)"):
        tiny.encode_image(torch.randn(3, 64, 64))


def test_dense_block_equals_the_ordinary_block_when_there_is_nothing_to_mix(tiny):
    block = tiny.model.visual.transformer.resblocks[-1]
    x = torch.randn(3, 1, 64)  # the CLS token alone: attention over one token is the identity
    with torch.no_grad():
        torch.testing.assert_close(B.dense_block_forward(block, x), block(x), rtol=1e-5, atol=1e-6)


def test_dense_block_does_not_mix_patch_tokens(tiny):
    block = tiny.model.visual.transformer.resblocks[-1]
    x = torch.randn(1, 10, 64)
    y = x.clone()
    y[:, 4] += torch.randn(64)  # perturb one patch token
    with torch.no_grad():
        out_x, out_y = B.dense_block_forward(block, x), B.dense_block_forward(block, y)
        std_x, std_y = block(x), block(y)
    changed = (out_x - out_y).abs().amax(-1)[0] > 1e-6
    assert changed.tolist() == [i == 4 for i in range(10)]
    assert bool(((std_x - std_y).abs().amax(-1)[0] > 1e-6).all())  # the ordinary block mixes


def test_hooks_capture_block_outputs_and_are_removed(tiny, images):
    blocks = tiny.model.visual.transformer.resblocks
    with torch.no_grad():
        feats = tiny.forward_visual(images, blocks=[0, 2])
        with tiny.capture("visual", [0, 2]) as store:
            tiny.model.encode_image(images)  # open_clip's own forward fills it too
        x = store[0]
        torch.testing.assert_close(feats.blocks[0], x)
        torch.testing.assert_close(blocks[2](blocks[1](x)), store[2], rtol=1e-5, atol=1e-6)
        with tiny.capture("text", [1]) as text_store:
            tiny.encode_text(["a red circle"])
    assert text_store[1].shape == (1, 24, 64)
    assert all(not b._forward_hooks for b in blocks)
    assert all(not b._forward_hooks for b in tiny.model.transformer.resblocks)
    with pytest.raises(ValueError, match=r"blocks must be integers in \[-4, 3\]"):
        tiny.forward_visual(images, blocks=[4])
    with pytest.raises(ValueError, match="tower must be one of"):
        tiny.attention_layers("audio")


def test_cls_tokens_after_chosen_blocks(tiny, images):
    with torch.no_grad():
        cls = tiny.cls_tokens(images, [1, 3])
        raw = tiny.cls_tokens(images, [1, -1], project=False)
        pooled = tiny.encode_image(images, normalize=False)
    assert cls.shape == (2, 2, 64) and raw.shape == (2, 2, 64)
    torch.testing.assert_close(cls[:, 1], pooled, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(cls[:, 0], cls[:, 1])


def test_intermediate_features_are_maps(tiny):
    with torch.no_grad():
        feats = tiny.intermediate_features(torch.randn(1, 3, 128, 128), [0, 2])
    assert {i: tuple(t.shape) for i, t in feats.items()} == {0: (1, 64, 16, 16), 2: (1, 64, 16, 16)}


def test_qkv_weights_are_those_the_attention_uses(tiny):
    for tower in ("visual", "text"):
        assert len(tiny.attention_layers(tower)) == 4
        for layer in range(4):
            qkv = tiny.qkv_weights(tower, layer)
            assert qkv.q.shape == qkv.k.shape == qkv.v.shape == (64, 64)
            assert qkv.v_bias.shape == (64,)
    attn = tiny.attention_layers("visual")[1]
    x = torch.randn(1, 5, 64)
    qkv = tiny.qkv_weights("visual", 1)
    with torch.no_grad():
        # attention over a single token is out_proj(W_v x + b_v): the V rows are the ones used
        single = attn(x[:, :1], x[:, :1], x[:, :1], need_weights=False)[0]
        v = x[:, :1] @ qkv.v.T + qkv.v_bias
        torch.testing.assert_close(single, attn.out_proj(v), rtol=1e-5, atol=1e-6)


def test_qkv_adapters_reparametrise_every_forward_path(images):
    torch.manual_seed(1)
    bb = W.load_clip(T.TINY_CLIP_NAME, None, device="cpu")
    with torch.no_grad():
        ref_img, ref_dense = bb.encode_image(images), bb.dense_features(images)
        ref_txt = bb.encode_text(["a red circle", "a blue star"])
        original_q = bb.qkv_weights("visual", 0).q.clone()
    # scaling W_q by a and W_k by 1/a leaves attention unchanged: a real re-parametrisation
    for tower in ("visual", "text"):
        for layer in range(4):
            bb.register_qkv_adapter(tower, layer, ScaleQK(3.0))
    with torch.no_grad():
        torch.testing.assert_close(bb.encode_image(images), ref_img, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bb.encode_text(["a red circle", "a blue star"]), ref_txt, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bb.qkv_weights("visual", 0).q, 3.0 * original_q)
        torch.testing.assert_close(bb.qkv_weights("visual", 0, original=True).q, original_q)
    # an adapter on V changes the outputs, including the dense last layer and the text tower
    bb.register_qkv_adapter("visual", 3, ScaleV(0.5))
    bb.register_qkv_adapter("text", 0, ScaleV(0.5))
    with torch.no_grad():
        assert not torch.allclose(bb.dense_features(images), ref_dense, atol=1e-4)
        assert not torch.allclose(bb.encode_text(["a red circle", "a blue star"]), ref_txt, atol=1e-4)
    # gradients reach the adapters' parameters
    for p in bb.parameters():
        p.requires_grad_(False)
    adapters = [p for n, p in bb.named_parameters() if ".adapter." in n]
    assert len(adapters) == 8
    for p in adapters:
        p.requires_grad_(True)
    (bb.encode_image(images).sum() + bb.encode_text(["a red circle"]).sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in adapters)
    assert bb.remove_qkv_adapters() == 8
    with torch.no_grad():
        torch.testing.assert_close(bb.encode_image(images), ref_img)
        torch.testing.assert_close(bb.dense_features(images), ref_dense)
    with pytest.raises(ValueError, match="adapter must be an nn.Module"):
        bb.register_qkv_adapter("visual", 0, lambda q, k, v: (q, k, v))


def test_vit_b16_at_384_gives_a_24_by_24_grid_and_catseg_guidance_maps():
    torch.manual_seed(0)
    vit = W.load_clip("ViT-B-16", None, device="cpu")
    assert vit.native_grid == (14, 14) and vit.width("visual") == 768 and vit.width("text") == 512
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        feats = vit.forward_visual(x, blocks=[3, 7], dense=True)
    assert feats.grid == (24, 24)
    assert feats.dense_map().shape == (1, 512, 24, 24)
    assert {i: tuple(t.shape) for i, t in feats.blocks.items()} == {3: (1, 577, 768), 7: (1, 577, 768)}
    assert vit.qkv_weights("text", 11).q.shape == (512, 512)
    assert vit.qkv_weights("visual", 11).v.shape == (768, 768)
    assert vit.tokenize("a photo of a cat").shape == (1, 77)


def test_missing_weights_raise_a_clear_error(tmp_path):
    with pytest.raises(W.WeightsUnavailableError) as info:
        W.load_clip("ViT-B-16", "openai", cache_dir=tmp_path, allow_download=False, device="cpu")
    message = str(info.value)
    for part in ("'openai'", "'ViT-B-16'", str(tmp_path), "pretrained='/path/to/file'", "open_clip.create_model"):
        assert part in message
    with pytest.raises(W.WeightsUnavailableError, match="no file at"):
        W.load_clip("ViT-B-16", str(tmp_path / "nothing.pt"), device="cpu")
    with pytest.raises(W.WeightsUnavailableError, match="no file at"):
        W.load_clip(T.TINY_CLIP_NAME, str(tmp_path / "nothing.pt"), device="cpu")
    with pytest.raises(ValueError, match="one of the tags"):
        W.load_clip("ViT-B-16", "no-such-tag", cache_dir=tmp_path, allow_download=False)
    with pytest.raises(ValueError, match="model_name must be"):
        W.load_clip("ViT-Q-99", None)


def test_find_cached_weights_reads_open_clips_cache_layout(tmp_path):
    assert W.find_cached_weights("ViT-B-16", "openai", tmp_path) is None
    # the Hugging Face hub layout that open_clip's download leaves behind
    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"")
    assert W.find_cached_weights("ViT-B-16", "openai", tmp_path) == snap / "open_clip_model.safetensors"


def test_weights_load_from_a_local_file(tmp_path, images):
    torch.manual_seed(3)
    source = T.build_tiny_clip()
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    loaded = W.load_clip(T.TINY_CLIP_NAME, str(path), device="cpu")
    assert loaded.pretrained == str(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.encode_image(images), source.eval().encode_image(images))


def test_mode_selection(monkeypatch):
    monkeypatch.delenv("HYRO_EDU_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mode = W.select_mode()
    assert mode.name == "cpu-small" and not mode.full and mode.model_name == T.TINY_CLIP_NAME
    assert W.describe_mode().startswith("cpu-small: tiny CLIP on the toy world")
    monkeypatch.setenv("HYRO_EDU_MODE", "gpu-full")
    mode = W.select_mode()
    assert mode.full and (mode.model_name, mode.pretrained) == ("ViT-B-16", "openai")
    assert str(mode).startswith("gpu-full: ViT-B-16 openai")
    monkeypatch.setenv("HYRO_EDU_MODE", "fast")
    with pytest.raises(ValueError, match="HYRO_EDU_MODE must be"):
        W.select_mode()
