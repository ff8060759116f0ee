r"""Backbones for HVSA: the feature extractor :math:`h` under the head, built by name.

.. math::
    h : \mathbb R^{B\times 3\times H\times W} \to \mathbb R^{B\times D}
    \quad\text{(image level)}\qquad\text{or}\qquad
    \mathbb R^{B\times D\times H'\times W'} \quad\text{(pixel level, dense)}.

:func:`~hyro_edu.hvsa.backbones.build_backbone` returns a ``torch.nn.Module`` with two attributes
the HVSA head (:class:`~hyro_edu.hvsa.head.HVSAHead`) and the trainers read: ``out_dim`` (``D``,
the head's ``in_dim``) and ``dense`` (``True``: features ``(B, D, H', W')``, scored per pixel;
``False``: features ``(B, D)``).  The names (:data:`~hyro_edu.hvsa.backbones.BACKBONES`):

* ``"toy_cnn"`` — the toy world's image-level CNN (the paper's sizes divided by 16): four 3x3
  convolutions with 32/32/64/64 channels and strides 2/2/2/1, each followed by a normalisation
  and a ReLU, then a global average pool: ``D = 64``.  Normalisation (keyword ``norm``):
  ``"batch"`` (default, ``torch.nn.BatchNorm2d``; the convolutions then have no bias),
  ``"group"`` (``torch.nn.GroupNorm`` with 8 groups: no batch statistics, so a single image in
  training mode works and ``train()``/``eval()`` compute the same function) or ``"none"``
  (convolutions with a bias).  Parameters: :math:`\sum_i 9\,c_{i-1}c_i` = 65,376 weights plus
  384 normalisation parameters = 65,760 (``"batch"`` and ``"group"``), or 65,568 with biases
  (``"none"``).  An earlier estimate of "74k" is not this count; the count here is what the tests
  assert, from the layer sizes.
* ``"toy_fcn"`` — its pixel-level twin: the same four convolutions with strides 2/2/1/1 and
  dilations 1/1/2/2 (the stride of the third layer turned into a dilation, as DeepLab does, so
  each feature still sees a 39-pixel receptive field), no pooling: features ``(B, 64, H/4, W/4)``
  (8x8 for 32-pixel images; ``ceil(H/4)`` in general), ``dense``.  Same parameter count as
  ``toy_cnn``.  The head scores at this resolution; upsampling the logits to the image (x4) is
  the trainer's job, not the backbone's.
* ``"identity"`` — ``h(x) = x`` for precomputed features (ImCLEF07's 80-d vectors); keyword
  ``in_dim`` (required) is ``out_dim``; inputs must be ``(B, in_dim)``.  No parameters.
* ``"resnet18"`` — ``torchvision.models.resnet18`` with its classifier removed: the pooled
  512-d feature (tieredImageNet-H).  ``pretrained=True`` passes
  ``weights=ResNet18_Weights.IMAGENET1K_V1`` to torchvision (a download on first use).
* ``"deeplabv3plus_resnet101"`` — DeepLabV3+ (Chen et al. :cite:`chen2018deeplabv3plus`, arXiv:1802.02611) on ``torchvision.models.resnet101`` with
  ``replace_stride_with_dilation=[False, True, True]`` (output stride 8; ``pretrained=True``:
  ``weights=ResNet101_Weights.IMAGENET1K_V1``).  Encoder: ASPP on ``layer4``
  (``torchvision.models.segmentation.deeplabv3.ASPP``, rates (12, 24, 36), 256 channels: a 1x1
  branch, three 3x3 atrous branches, an image-pooling branch, a 1x1 projection with dropout 0.5).
  Decoder: ``layer1``'s stride-4 feature (256 channels) projected to 48 channels (1x1 conv,
  BatchNorm, ReLU), concatenated with the ASPP output upsampled bilinearly to its size, then two
  3x3 convolutions of 256 channels (each with BatchNorm and ReLU): per-pixel 256-d features at
  stride 4, ``dense``, ``out_dim = 256``.  DeepLabV3+'s own 1x1 classifier and its final x4
  upsampling are not part of the backbone: the HVSA head scores the features, the trainer
  upsamples the scores.
  Differences from the paper [choice]: plain (not depthwise-separable) atrous convolutions,
  as in torchvision's ASPP; the ResNet-101 is torchvision's (a 7x7 stem), not ResNet-101-v1d.
  Because of the image-pooling branch's BatchNorm, a batch of one image fails in training mode
  (torch's "Expected more than 1 value per channel"); use ``eval()`` or two images or more.

Inputs of the image backbones are float tensors ``(B, 3, H, W)``; anything else raises
``ValueError`` naming ``images``.  Parameter counts of every backbone are printed by
``benchmarks/bench_hvsa_step.py`` and checked in ``tests/test_hvsa_backbones.py``.
HVSA :cite:`hvsa`, Sec. 5.1 (backbones per dataset); ResNet: He et al., CVPR 2016.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as _tv_models
from torchvision.models.segmentation.deeplabv3 import ASPP

from hyro_edu.core import checks as _checks

__all__ = [
    "BACKBONES",
    "TOY_CHANNELS",
    "NORMS",
    "build_backbone",
    "ToyConvNet",
    "IdentityBackbone",
    "ResNet18Pool",
    "DeepLabV3Plus",
]

#: The names :func:`~hyro_edu.hvsa.backbones.build_backbone` accepts.
BACKBONES = ("toy_cnn", "toy_fcn", "identity", "resnet18", "deeplabv3plus_resnet101")
#: Channels of the toy backbones' four convolutions.
TOY_CHANNELS = (32, 32, 64, 64)
#: Values of the toy backbones' ``norm`` keyword.
NORMS = ("batch", "group", "none")

# the keywords each name accepts besides ``pretrained``
_KWARGS = {
    "toy_cnn": ("norm",),
    "toy_fcn": ("norm",),
    "identity": ("in_dim",),
    "resnet18": (),
    "deeplabv3plus_resnet101": (),
}


def _check_images(images) -> torch.Tensor:
    """``images`` as a float ``(B, 3, H, W)`` tensor, else ``ValueError``."""
    _checks.tensor(images, "images")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    return images


class ToyConvNet(nn.Module):
    """Four 3x3 conv + norm + ReLU layers: ``toy_cnn`` (pooled) and ``toy_fcn`` (``dense``).

    ``strides`` and ``dilations`` are four integers each; ``norm`` one of
    :data:`~hyro_edu.hvsa.backbones.NORMS`.  Shapes: ``(B, 3, H, W)`` -> ``(B, 64)`` or
    ``(B, 64, H', W')``.
    """

    def __init__(self, strides, dilations, *, dense: bool, norm: str):
        super().__init__()
        _checks.choice(norm, "norm", NORMS)
        layers, previous = [], 3
        for channels, stride, dilation in zip(TOY_CHANNELS, strides, dilations):
            layers.append(nn.Conv2d(previous, channels, 3, stride=stride, padding=dilation,
                                    dilation=dilation, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(channels))
            elif norm == "group":
                layers.append(nn.GroupNorm(8, channels))
            layers.append(nn.ReLU(inplace=True))
            previous = channels
        self.features = nn.Sequential(*layers)
        self.out_dim = TOY_CHANNELS[-1]
        self.dense = dense

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(_check_images(images))
        return x if self.dense else x.mean(dim=(2, 3))


class IdentityBackbone(nn.Module):
    """``h(x) = x`` on features ``(B, in_dim)``: ``out_dim = in_dim``, not ``dense``.

    Inputs of another shape raise ``ValueError`` naming ``features``.
    """

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = _checks.integer(in_dim, "in_dim")
        self.dense = False

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _checks.tensor(features, "features")
        if features.dim() != 2 or features.shape[1] != self.out_dim:
            raise ValueError(
                f"features must have shape (B, {self.out_dim}), got {tuple(features.shape)}"
            )
        return features


class ResNet18Pool(nn.Module):
    """torchvision's ResNet-18 without its classifier: ``(B, 3, H, W) -> (B, 512)``."""

    def __init__(self, pretrained: bool):
        super().__init__()
        weights = _tv_models.ResNet18_Weights.IMAGENET1K_V1 if pretrained else None
        self.net = _tv_models.resnet18(weights=weights)
        self.net.fc = nn.Identity()
        self.out_dim = 512
        self.dense = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(_check_images(images))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ on a dilated ResNet-101 (module docstring): ``(B, 3, H, W) -> (B, 256, H', W')``.

    ``H' = ceil(H/4)``, ``W' = ceil(W/4)`` (``layer1``'s resolution).  Submodules: ``stem``
    (conv1, bn1, relu, maxpool), ``layer1`` ... ``layer4`` (torchvision's), ``aspp``,
    ``low_level`` (1x1 conv to 48 channels), ``fuse`` (two 3x3 convs of 256 channels).
    Chen et al. 2018 (arXiv:1802.02611), Sec. 3.1 and Fig. 2.
    """

    LOW_LEVEL_CHANNELS = 48
    ASPP_RATES = (12, 24, 36)

    def __init__(self, pretrained: bool):
        super().__init__()
        weights = _tv_models.ResNet101_Weights.IMAGENET1K_V1 if pretrained else None
        trunk = _tv_models.resnet101(
            weights=weights, replace_stride_with_dilation=[False, True, True]
        )
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
        self.layer1, self.layer2 = trunk.layer1, trunk.layer2
        self.layer3, self.layer4 = trunk.layer3, trunk.layer4
        self.aspp = ASPP(2048, list(self.ASPP_RATES), 256)
        low = self.LOW_LEVEL_CHANNELS
        self.low_level = nn.Sequential(
            nn.Conv2d(256, low, 1, bias=False), nn.BatchNorm2d(low), nn.ReLU(inplace=True)
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(256 + low, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
        )
        self.out_dim = 256
        self.dense = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(_check_images(images))
        low = self.layer1(x)  # (B, 256, H/4, W/4)
        deep = self.aspp(self.layer4(self.layer3(self.layer2(low))))  # (B, 256, H/8, W/8)
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([deep, self.low_level(low)], dim=1))


def build_backbone(name: str, *, pretrained: bool = False, **kwargs) -> nn.Module:
    """The backbone ``name`` (one of :data:`~hyro_edu.hvsa.backbones.BACKBONES`; module docstring).

    The module has ``out_dim`` (int) and ``dense`` (bool): ``dense`` modules map ``(B, 3, H, W)``
    to ``(B, out_dim, H', W')``, the others to ``(B, out_dim)`` (``identity``: ``(B, in_dim)`` to
    itself).  ``pretrained=True`` loads torchvision's ImageNet weights (``resnet18``,
    ``deeplabv3plus_resnet101``; the ASPP and decoder stay random); the toy backbones and
    ``identity`` have none to load and raise ``ValueError``.  Keywords: ``norm`` (toy backbones:
    ``"batch"``, ``"group"``, ``"none"``), ``in_dim`` (``identity``, required).  An unknown
    ``name`` or keyword raises ``ValueError`` listing the allowed ones.
    """
    _checks.choice(name, "name", BACKBONES)
    if not isinstance(pretrained, bool):
        raise ValueError(f"pretrained must be True or False, got {pretrained!r}")
    unknown = sorted(set(kwargs) - set(_KWARGS[name]))
    if unknown:
        raise ValueError(
            f"build_backbone({name!r}) accepts the keywords {_KWARGS[name] or '()'} besides "
            f"pretrained, got {unknown}"
        )
    if pretrained and name in ("toy_cnn", "toy_fcn", "identity"):
        raise ValueError(
            f"pretrained must be False for {name!r} (no pretrained weights exist); pretrained "
            f"weights: 'resnet18', 'deeplabv3plus_resnet101'"
        )
    if name == "toy_cnn":
        return ToyConvNet((2, 2, 2, 1), (1, 1, 1, 1), dense=False, norm=kwargs.get("norm", "batch"))
    if name == "toy_fcn":
        return ToyConvNet((2, 2, 1, 1), (1, 1, 2, 2), dense=True, norm=kwargs.get("norm", "batch"))
    if name == "identity":
        if "in_dim" not in kwargs:
            raise ValueError("in_dim is required for build_backbone('identity'): an integer >= 1")
        return IdentityBackbone(kwargs["in_dim"])
    if name == "resnet18":
        return ResNet18Pool(pretrained)
    return DeepLabV3Plus(pretrained)
