"""hyro_edu.hvsa.backbones: shapes, out_dim/dense, parameter counts from the architecture,
gradients, the pretrained flag reaching torchvision's ``weights`` argument, bad input."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision

from hyro_edu.hvsa.backbones import BACKBONES, TOY_CHANNELS, build_backbone


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k  # no bias: every conv here is followed by a BatchNorm


def _bn(c: int) -> int:
    return 2 * c  # affine weight and bias (running statistics are buffers)


def _resnet_trunk_params(blocks=(3, 4, 23, 3)) -> int:
    """ResNet-50/101 (bottleneck, expansion 4) without fc, counted from He et al.'s layer table."""
    total = _conv(3, 64, 7) + _bn(64)
    inplanes = 64
    for planes, count in zip((64, 128, 256, 512), blocks):
        for i in range(count):
            total += _conv(inplanes, planes, 1) + _bn(planes)
            total += _conv(planes, planes, 3) + _bn(planes)
            total += _conv(planes, 4 * planes, 1) + _bn(4 * planes)
            if i == 0:  # projection shortcut
                total += _conv(inplanes, 4 * planes, 1) + _bn(4 * planes)
            inplanes = 4 * planes
    return total


def _deeplabv3plus_head_params() -> int:
    aspp = (_conv(2048, 256, 1) + _bn(256)  # 1x1 branch
            + 3 * (_conv(2048, 256, 3) + _bn(256))  # rates 12, 24, 36
            + _conv(2048, 256, 1) + _bn(256)  # image pooling branch
            + _conv(5 * 256, 256, 1) + _bn(256))  # projection of the 5 branches
    low = _conv(256, 48, 1) + _bn(48)
    fuse = _conv(256 + 48, 256, 3) + _bn(256) + _conv(256, 256, 3) + _bn(256)
    return aspp + low + fuse


@pytest.fixture(scope="module")
def deeplab():
    torch.manual_seed(0)
    return build_backbone("deeplabv3plus_resnet101")


# ---------------------------------------------------------------------------
# shapes, out_dim, dense
# ---------------------------------------------------------------------------
def test_toy_cnn_pools_to_64():
    net = build_backbone("toy_cnn")
    assert (net.out_dim, net.dense) == (64, False)
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 64)
    assert net(torch.randn(2, 3, 64, 48)).shape == (2, 64)  # any size: global average pool


@pytest.mark.parametrize("size, expected", [(32, 8), (64, 16), (30, 8), (33, 9)])
def test_toy_fcn_is_dense_at_quarter_resolution(size, expected):
    net = build_backbone("toy_fcn")
    assert (net.out_dim, net.dense) == (64, True)
    assert net(torch.randn(2, 3, size, size)).shape == (2, 64, expected, expected)
    assert expected == math.ceil(size / 4)


def test_toy_fcn_receptive_field_is_39_pixels():
    """Strides 2/2/1/1, dilations 1/1/2/2: 1 + 2(1 + 2 + 2*4 + 2*4) = 39 input pixels."""
    torch.manual_seed(0)
    net = build_backbone("toy_fcn").eval()  # eval: BatchNorm is per-channel affine, no coupling
    x = torch.randn(1, 3, 96, 96, requires_grad=True)
    net(x)[0, :, 12, 12].sum().backward()  # the feature centred on input pixel 48
    rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero().flatten()
    cols = x.grad.abs().sum(dim=(0, 1, 2)).nonzero().flatten()
    assert int(rows.max() - rows.min()) + 1 == 39
    assert int(cols.max() - cols.min()) + 1 == 39


def test_identity_returns_its_input():
    net = build_backbone("identity", in_dim=80)
    assert (net.out_dim, net.dense) == (80, False)
    x = torch.randn(5, 80)
    assert torch.equal(net(x), x)
    assert _params(net) == 0


def test_resnet18_pools_to_512():
    net = build_backbone("resnet18")
    assert (net.out_dim, net.dense) == (512, False)
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 512)


def test_deeplabv3plus_is_dense_at_stride_4(deeplab):
    assert (deeplab.out_dim, deeplab.dense) == (256, True)
    assert deeplab(torch.randn(2, 3, 64, 64)).shape == (2, 256, 16, 16)
    # output stride 8 at layer4 (dilated layer3/layer4): the ASPP input is 1/8 of the image
    with torch.no_grad():
        x = deeplab.stem(torch.randn(2, 3, 64, 64))
        deep = deeplab.layer4(deeplab.layer3(deeplab.layer2(deeplab.layer1(x))))
    assert deep.shape == (2, 2048, 8, 8)


# ---------------------------------------------------------------------------
# parameter counts, from the layer sizes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["toy_cnn", "toy_fcn"])
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_toy_parameter_count(name, norm):
    chans = (3,) + TOY_CHANNELS
    weights = sum(_conv(a, b, 3) for a, b in zip(chans[:-1], chans[1:]))
    extra = sum(TOY_CHANNELS) * (1 if norm == "none" else 2)  # conv biases, or norm affines
    assert _params(build_backbone(name, norm=norm)) == weights + extra
    assert weights + 2 * sum(TOY_CHANNELS) == 65_760


def test_resnet_trunk_formula_matches_torchvision():
    """The bottleneck formula above against torchvision's ResNet-101 and ResNet-50 (fc removed)."""
    for builder, blocks in ((torchvision.models.resnet101, (3, 4, 23, 3)),
                            (torchvision.models.resnet50, (3, 4, 6, 3))):
        net = builder()
        assert _params(net) - _params(net.fc) == _resnet_trunk_params(blocks)


def test_resnet18_parameter_count():
    # basic blocks: two 3x3 convs; projection shortcut on the first block of layers 2-4
    total, inplanes = _conv(3, 64, 7) + _bn(64), 64
    for planes in (64, 128, 256, 512):
        for i in range(2):
            total += _conv(inplanes, planes, 3) + _conv(planes, planes, 3) + 2 * _bn(planes)
            if i == 0 and planes != 64:
                total += _conv(inplanes, planes, 1) + _bn(planes)
            inplanes = planes
    assert _params(build_backbone("resnet18")) == total == 11_176_512


def test_deeplabv3plus_parameter_count(deeplab):
    trunk, head = _resnet_trunk_params(), _deeplabv3plus_head_params()
    assert _params(deeplab) == trunk + head
    assert _params(deeplab.aspp) + _params(deeplab.low_level) + _params(deeplab.fuse) == head


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------
def _assert_gradients_reach_every_parameter(net, x):
    out = net(x)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["toy_cnn", "toy_fcn", "resnet18"])
def test_gradients_flow(name):
    torch.manual_seed(0)
    _assert_gradients_reach_every_parameter(build_backbone(name), torch.randn(2, 3, 32, 32))


def test_gradients_flow_deeplabv3plus(deeplab):
    torch.manual_seed(0)
    deeplab.zero_grad(set_to_none=True)
    _assert_gradients_reach_every_parameter(deeplab, torch.randn(2, 3, 64, 64))


def test_identity_gradient_is_the_identity():
    x = torch.randn(3, 7, requires_grad=True)
    g = torch.randn(3, 7)
    build_backbone("identity", in_dim=7)(x).backward(g)
    assert torch.equal(x.grad, g)


def test_group_norm_variant_is_batch_independent():
    """``norm="group"`` has no batch statistics: an image's features do not depend on its batch."""
    torch.manual_seed(0)
    net = build_backbone("toy_fcn", norm="group")
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(net(x)[:1], net(x[:1]))


# ---------------------------------------------------------------------------
# the pretrained flag reaches torchvision (no download: the builder is replaced)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, builder, weights",
    [
        ("resnet18", "resnet18", torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
        ("deeplabv3plus_resnet101", "resnet101",
         torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
    ],
)
@pytest.mark.parametrize("pretrained", [True, False])
def test_pretrained_requests_imagenet_weights(monkeypatch, name, builder, weights, pretrained):
    original = getattr(torchvision.models, builder)
    calls = []

    def recording_builder(*, weights=None, **kwargs):
        calls.append(dict(weights=weights, **kwargs))
        return original(weights=None, **kwargs)  # random weights: nothing is downloaded

    monkeypatch.setattr(torchvision.models, builder, recording_builder)
    net = build_backbone(name, pretrained=pretrained)
    assert len(calls) == 1
    assert calls[0]["weights"] is (weights if pretrained else None)
    if builder == "resnet101":
        assert calls[0]["replace_stride_with_dilation"] == [False, True, True]
    assert net.out_dim == (512 if name == "resnet18" else 256)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_bad_name_lists_the_allowed_names():
    with pytest.raises(ValueError, match="name must be one of") as info:
        build_backbone("resnet50")
    for name in BACKBONES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="identity"), "in_dim is required"),
        (dict(name="identity", in_dim=0), "in_dim must be an integer >= 1, got 0"),
        (dict(name="toy_cnn", norm="layer"), "norm must be one of"),
        (dict(name="toy_cnn", in_dim=3), r"accepts the keywords \('norm',\)"),
        (dict(name="resnet18", norm="batch"), "accepts the keywords"),
        (dict(name="toy_fcn", pretrained=True), "pretrained must be False for 'toy_fcn'"),
        (dict(name="resnet18", pretrained="yes"), "pretrained must be True or False"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(**kwargs)


@pytest.mark.parametrize("name", ["toy_cnn", "toy_fcn", "resnet18"])
def test_bad_images(name):
    net = build_backbone(name)
    with pytest.raises(ValueError,
                       match=r"images must have shape \(B, 3, H, W\), got \(2, 1, 32, 32\)"):
        net(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images must have shape .* got \(3, 32, 32\)"):
        net(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="images must be a floating-point tensor"):
        net(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_bad_features_for_identity():
    net = build_backbone("identity", in_dim=80)
    with pytest.raises(ValueError, match=r"features must have shape \(B, 80\), got \(4, 81\)"):
        net(torch.randn(4, 81))
