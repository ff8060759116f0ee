r"""HVSA's training and evaluation data: a resumable stream, the toy world, and the prepared datasets.

Every dataset returns batches as ``{"input": x, "target": y}``: ``x`` is what the backbone takes
(images ``(B, 3, H, W)`` or ImCLEF07's 80-d features), ``y`` what
:class:`hyro_edu.hvsa.head.HVSAHead` takes as ``targets`` -- path-closed label vectors ``(B, L)``
for multi-label images, one label index per image ``(B,)`` for tieredImageNet-H, one label index
per pixel ``(B, H, W)`` (255 ignored) for segmentation.  Labels are the non-root nodes of the
dataset's tree (label ``l`` = node ``l + 1``, :mod:`hyro_edu.hvsa.taxonomy`), and evaluation
batches also carry ``"classes"``, the finest-level class map the per-level mIoU reads.

**The stream.**  Training reads positions ``start .. stop - 1`` of an endless stream over the
``N`` training items, epoch ``e`` being the permutation drawn from ``(seed, e)``
(:class:`~hyro_edu.training.stream.ResumableSampler`).  A run resumed at step ``k`` starts at
position ``k × batch_size``, so it sees the batches the uninterrupted run would have seen; the
augmentation of a position is seeded by ``(seed, position)``.

**The toy world**: :class:`hyro_edu.data.toyworld.ToyWorld` scenes at
``toy_image_size`` px with ``toy_objects`` objects of any of the 54 classes, ``toy_train`` scenes
of the train split and ``toy_test`` of the test split, rendered once and cached as ``uint8``
tensors under ``$HYRO_EDU_CACHE/hvsa_toy`` (:func:`toy_tensors`); the scenes do not depend on the
run's seed.  Image level: 66 path-closed labels (:func:`hyro_edu.hierarchy.taxonomies.toyworld_hierarchy`);
pixel level: 67 labels (background added as a root child, :func:`hyro_edu.hierarchy.taxonomies.toyworld_levels`).

**Prepared datasets** (:mod:`hyro_edu.data.hierarchical_datasets`): ImCLEF07A/D (features as
read), tieredImageNet-H (224 px, ImageNet normalisation, horizontal flip in training) and the
segmentation benchmarks (random scale in ``scale_range``, random crop ``crop_size`` padded with
label 255, horizontal flip -- with LIP's left/right ids swapped -- in training; whole images in
evaluation).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hyro_edu.core import paths
from hyro_edu.core.images import CLIP_MEAN, CLIP_STD
from hyro_edu.hierarchy.taxonomies import (LevelTaxonomy, cityscapes_levels, lip_levels,
                                           pascal_person_part_levels, toyworld_hierarchy,
                                           toyworld_levels, toyworld_pixel_classes)
from hyro_edu.hierarchy.trees import Tree
from hyro_edu.hvsa.taxonomy import label_taxonomy
from hyro_edu.hvsa.train.config import HVSATrainConfig
from hyro_edu.training.stream import ResumableSampler

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IGNORE",
    "ResumableSampler",
    "toy_tensors",
    "TensorData",
    "ImageData",
    "SegmentationData",
    "HVSAData",
    "build_data",
    "downsample_labels",
]

#: torchvision's ImageNet normalisation (the ResNet backbones' weights expect it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Label of ignored pixels.
IGNORE = 255
_LEVELS = {"cityscapes": cityscapes_levels, "lip": lip_levels, "pascal_person_part": pascal_person_part_levels,
           "toy_pixel": toyworld_levels}


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """``uint8 (B, 3, H, W)`` -> float, ``(x / 255 - mean) / std``."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


# ----------------------------------------------------------------------------
# the toy world
# ----------------------------------------------------------------------------
def toy_tensors(split: str, count: int, *, image_size: int = 32, objects=(1, 2)) -> dict:
    """``count`` toy scenes of ``split``: ``images`` uint8 ``(N, 3, S, S)``, ``masks`` uint8
    ``(N, S, S)`` (leaf classes 0-53, 255 background), ``classes`` ``(N, 54)`` bool (objects in
    the scene).  Rendered once (about 1.3 ms a scene at 32 px) and cached under
    ``$HYRO_EDU_CACHE/hvsa_toy``; scene ``i`` is scene ``i`` of ``ToyWorld(image_size, seed=0)``."""
    from hyro_edu.data.toyworld import ToyWorld

    lo, hi = (int(v) for v in objects)
    path = paths.cache_dir() / "hvsa_toy" / f"{split}_{image_size}px_{count}_{lo}-{hi}.pt"
    cached = paths.load_cached(path)
    if cached is not None:
        return cached
    world = ToyWorld(image_size, seed=0)
    images = torch.empty(count, 3, image_size, image_size, dtype=torch.uint8)
    masks = torch.empty(count, image_size, image_size, dtype=torch.uint8)
    classes = torch.zeros(count, world.num_classes, dtype=torch.bool)
    for i in range(count):
        scene = world.scene(i, split=split, classes="all", num_objects=(lo, hi))
        images[i] = scene.image
        masks[i] = scene.mask.to(torch.uint8)  # 255 stays 255
        classes[i, scene.classes] = True
    out = {"images": images, "masks": masks, "classes": classes}
    paths.atomic_torch_save(out, path)
    return out


class TensorData(Dataset):
    """An in-memory dataset whose batches are cut by fancy indexing (``__getitems__``): ``inputs``
    ``(N, ...)`` and ``targets`` ``(N, ...)``; ``images`` are normalised per batch with
    ``mean``/``std`` when given; ``classes`` (optional) go along for evaluation."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, *, mean=None, std=None,
                 classes: Optional[torch.Tensor] = None):
        self.inputs, self.targets, self.classes = inputs, targets, classes
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitems__(self, items) -> dict:
        idx = torch.tensor([i if isinstance(i, int) else i[0] for i in items], dtype=torch.long)
        x = self.inputs[idx]
        if self.mean is not None:
            x = _normalise(x, self.mean, self.std)
        out = {"input": x, "target": self.targets[idx]}
        if self.classes is not None:
            out["classes"] = self.classes[idx]
        return out

    def __getitem__(self, item) -> dict:
        out = self.__getitems__([item])
        return {k: v[0] for k, v in out.items()}


def _toy_image(config: HVSATrainConfig, split: str, count: int) -> TensorData:
    data = toy_tensors(split, count, image_size=config.toy_image_size, objects=config.toy_objects)
    taxonomy = label_taxonomy(toyworld_hierarchy())
    leaf_labels = taxonomy.tree.leaves  # nodes 13..66 in class order
    leaf_index = torch.tensor([v - 1 for v in leaf_labels], dtype=torch.long)
    if leaf_index.tolist() != list(range(12, 66)):
        raise RuntimeError("the toy taxonomy's leaves are not nodes 13-66")  # pragma: no cover
    y = torch.zeros(count, taxonomy.num_labels, dtype=torch.bool)
    y[:, leaf_index] = data["classes"]
    y = (y.float() @ taxonomy.ancestors.float()) > 0  # switch on every ancestor: path-closed
    return TensorData(data["images"], y.float(), mean=CLIP_MEAN, std=CLIP_STD)


def _toy_pixel(config: HVSATrainConfig, split: str, count: int) -> TensorData:
    data = toy_tensors(split, count, image_size=config.toy_image_size, objects=config.toy_objects)
    levels = toyworld_levels()
    classes = toyworld_pixel_classes(data["masks"].long())  # 0..54, 54 background
    to_label = torch.tensor([v - 1 for v in levels.class_nodes], dtype=torch.long)
    return TensorData(data["images"], to_label[classes], mean=CLIP_MEAN, std=CLIP_STD, classes=classes)


# ----------------------------------------------------------------------------
# prepared datasets
# ----------------------------------------------------------------------------
class ImageData(Dataset):
    """tieredImageNet-H as ``{"input": (3, S, S) normalised, "target": leaf label index}``;
    training items (``(index, position)``) are flipped horizontally with probability 1/2."""

    def __init__(self, split: str, *, root=None, image_size: int = 224, train: bool = False, seed: int = 0):
        from hyro_edu.data.hierarchical_datasets import TieredImageNetH

        self.data = TieredImageNetH(split, root=root, image_size=image_size)
        self.to_label = [v - 1 for v in self.data.leaf_nodes]
        self.train, self.seed = train, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item) -> dict:
        index, position = item if isinstance(item, tuple) else (item, item)
        sample = self.data[index]
        image = sample["image"]
        if self.train and np.random.default_rng([self.seed, position, 7]).random() < 0.5:
            image = image.flip(-1)
        x = _normalise(image[None], IMAGENET_MEAN, IMAGENET_STD)[0]
        return {"input": x, "target": torch.tensor(self.to_label[sample["label"]])}


class SegmentationData(Dataset):
    """Cityscapes, LIP or PASCAL-Person-Part as ``{"input", "target", "classes"}``: ``target`` the
    label index of each pixel's class node (255 ignored), ``classes`` the class ids.  Training
    items are randomly scaled, cropped and flipped (module docstring)."""

    def __init__(self, name: str, split: str, *, root=None, train: bool = False, seed: int = 0,
                 crop_size=(512, 1024), scale_range=(0.5, 2.0), hflip: bool = True):
        from hyro_edu.data.hierarchical_datasets import HierarchicalSegmentation, flip_permutation

        self.data = HierarchicalSegmentation(name, split, root=root)
        self.levels = _LEVELS[name]()
        lut = torch.full((256,), IGNORE, dtype=torch.long)
        lut[: len(self.levels.class_nodes)] = torch.tensor([v - 1 for v in self.levels.class_nodes])
        self.lut, self.flip = lut, flip_permutation(name)
        self.train, self.seed = train, seed
        self.crop_size, self.scale_range, self.hflip = tuple(crop_size), tuple(scale_range), hflip

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item) -> dict:
        index, position = item if isinstance(item, tuple) else (item, item)
        sample = self.data[index]
        image, label = sample["image"], sample["label"].long()
        if self.train:
            rng = np.random.default_rng([self.seed, position, 11])
            scale = rng.uniform(*self.scale_range)
            h, w = label.shape
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
            label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
            ch, cw = self.crop_size
            ph, pw = max(0, ch - size[0]), max(0, cw - size[1])
            if ph or pw:
                image = F.pad(image, (0, pw, 0, ph), value=0.0)
                label = F.pad(label, (0, pw, 0, ph), value=IGNORE)
            top = int(rng.integers(0, label.shape[0] - ch + 1))
            left = int(rng.integers(0, label.shape[1] - cw + 1))
            image, label = image[:, top:top + ch, left:left + cw], label[top:top + ch, left:left + cw]
            if self.hflip and rng.random() < 0.5:
                image, label = image.flip(-1), self.flip[label.flip(-1)]
        x = _normalise(image[None].clamp(0, 255), IMAGENET_MEAN, IMAGENET_STD)[0]
        return {"input": x, "target": self.lut[label], "classes": label}


# ----------------------------------------------------------------------------
class HVSAData:
    """The data of one config: ``train`` and ``test`` datasets, the label ``tree`` (label ``l`` =
    node ``l + 1``), ``levels`` (a :class:`~hyro_edu.hierarchy.taxonomies.LevelTaxonomy` for the
    pixel datasets, else ``None``), ``in_dim`` (ImCLEF07's feature size, else ``None``) and
    ``batched`` (the datasets cut batches themselves, :class:`TensorData`)."""

    def __init__(self, train: Dataset, test: Dataset, tree: Tree, *, levels: Optional[LevelTaxonomy] = None,
                 in_dim: Optional[int] = None, batched: bool = False):
        self.train, self.test, self.tree, self.levels = train, test, tree, levels
        self.in_dim, self.batched = in_dim, batched


def build_data(config: HVSATrainConfig, *, data_root=None) -> HVSAData:
    """The training and evaluation data of ``config`` (see the module docstring)."""
    c = config
    split = c.split_to_evaluate
    if c.dataset == "toy":
        return HVSAData(_toy_image(c, "train", c.toy_train), _toy_image(c, split, c.toy_test),
                        toyworld_hierarchy(), batched=True)
    if c.dataset == "toy_pixel":
        return HVSAData(_toy_pixel(c, "train", c.toy_train), _toy_pixel(c, split, c.toy_test),
                        toyworld_levels().tree, levels=toyworld_levels(), batched=True)
    if c.dataset.startswith("imclef07"):
        from hyro_edu.data.hierarchical_datasets import ImCLEF07

        train, test = ImCLEF07(c.dataset, "train", data_root), ImCLEF07(c.dataset, split, data_root)
        return HVSAData(TensorData(train.features, train.labels), TensorData(test.features, test.labels),
                        train.tree, in_dim=train.features.shape[1], batched=True)
    if c.dataset == "tiered_imagenet_h":
        train = ImageData("train", root=data_root, image_size=c.image_size, train=True, seed=c.seed)
        test = ImageData(split, root=data_root, image_size=c.image_size)
        return HVSAData(train, test, train.data.tree)
    train = SegmentationData(c.dataset, "train", root=data_root, train=True, seed=c.seed, crop_size=c.crop_size,
                             scale_range=c.scale_range, hflip=c.hflip)
    test = SegmentationData(c.dataset, split, root=data_root)
    return HVSAData(train, test, train.levels.tree, levels=train.levels)


def downsample_labels(target: torch.Tensor, size) -> torch.Tensor:
    """Label maps ``(B, H, W)`` at ``size`` by nearest-neighbour sampling (labels are not averaged)."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    return F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()

