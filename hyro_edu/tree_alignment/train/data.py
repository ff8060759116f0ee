r"""Tree alignment's data: few-shot training sets, the base / novel / full evaluation trees, toy and full-size.

.. math::
    \mathcal D_{\rm train} = \bigcup_{k \in \mathcal C} \{x_{k,\pi_k(1)}, \dots, x_{k,\pi_k(n)}\},
    \qquad \pi_k = \mathrm{randperm}(N_k;\ \text{seed} + k)

(few-shot sampling of the official ``NshotSampler``,
:func:`hyro_edu.data.taxonomic_datasets.few_shot_indices`, re-exported here: class ``k`` keeps the
first ``shots`` items of a permutation seeded by ``seed + k``).  Batches are ``{"input": float
images (B, 3, S, S) normalised with the CLIP mean and std, "target": leaf labels (B,)}``, labels
of the **training tree** (:class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree`, depth-first
numbering); ``S`` is :attr:`hyro_edu.tree_alignment.train.config.TreeAlignmentTrainConfig.image_size`.
Training reads an endless stream of positions, epoch ``e`` a permutation drawn from ``(seed, e)``
(:class:`hyro_edu.training.stream.ResumableSampler`), so a resumed run sees the batches of the
uninterrupted one (the official sampler reuses one order every epoch; a documented deviation).

**The toy world** (design notes §7): ``ToyWorld(toy_image_size, seed=0)``; the training images of
class ``k`` are the single-object scenes ``scene(1000 k + j, split="train", classes=[k])``,
``j < shots``; the test images are ``toy_test_per_class`` single-object "test" scenes of each of the 54
classes.  Scenes are rendered once and cached under ``$HYRO_EDU_CACHE/tree_alignment_toy``. The
evaluation trees are the base tree (the 36 seen leaves, 49 nodes), the novel tree (the 18 unseen
leaves) and the full 54-leaf tree (:func:`hyro_edu.tree_alignment.train.data.subtree`), each scored
on the test images of its own leaves, with cuts drawn by
:func:`hyro_edu.tree_alignment.train.task.stored_cuts`.

**The full-size datasets** (CIFAR-100, SUN, ImageNet, Rare Species; the prepared datasets of
:data:`hyro_edu.tree_alignment.train.config.TAXONOMIC_KEYS`, read with
:class:`hyro_edu.data.taxonomic_datasets.TaxonomicDataset`) have two settings of
:cite:`wu2026modality`, chosen by ``train_classes``:

* ``all`` (the shipped configs; the few-shot setting of the paper's main and ablation tables):
  ``shots`` images of every class of the ``train`` split, the full tree as training tree, and one
  evaluation set ``"full"``, the whole ``test`` split on the full tree;
* ``base`` (base-to-novel): ``shots`` images of each base class, the base tree as training tree,
  and ``"base"`` (the ``test`` split of the base subset on the base tree), ``"novel"`` (the novel
  subset on the novel tree) and ``"full"`` (the whole ``test`` split on the full tree).

The shots are drawn by :func:`hyro_edu.data.taxonomic_datasets.few_shot_indices` with the config's
``seed`` (an error when a class has fewer images).  Each evaluation tree is scored on the
dataset's stored 25 cuts (:func:`hyro_edu.data.taxonomic_datasets.read_cuts`;
``eval_cuts_per_rate`` does not apply); ``eval_limit`` keeps the first images of each test list,
in the list's order (as for the toy world, whose test images come class by class).

Images are read lazily (:class:`hyro_edu.tree_alignment.train.data.TaxonomicImages`).  Training
and evaluation resize the shorter side to ``S`` (bicubic, antialiased) and crop the centre
``S x S`` (the official ``clip`` transform).  With ``augment: true`` training takes a random
resized crop (scale 0.08-1, aspect ratio 3/4-4/3, bicubic) and a horizontal flip with probability
1/2 instead, the augmentation of CoOp's few-shot code, drawn from a generator seeded by
``(seed, epoch, index)`` so that a resumed run sees the same crops.  The images of ``image_root``
(a user's copy of ImageNet or Rare Species) replace the folder the preparation recorded.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hyro_edu.core import paths
from hyro_edu.core.images import CLIP_MEAN, CLIP_STD
from hyro_edu.data import taxonomic_datasets as td
from hyro_edu.data.taxonomic_datasets import few_shot_indices
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree
from hyro_edu.hierarchy.taxonomies import toyworld_hierarchy
from hyro_edu.hierarchy.trees import Tree
from hyro_edu.training.stream import ResumableSampler
from hyro_edu.tree_alignment.train.config import TAXONOMIC_KEYS, TreeAlignmentTrainConfig

__all__ = ["ResumableSampler", "few_shot_indices", "subtree", "toy_images", "ImageTensors", "TaxonomicImages",
           "EvalSet", "TreeAlignmentData", "build_data"]

_SCENE_STRIDE = 1000


def subtree(tree: Tree, leaf_names: Sequence[str]) -> TaxonomicTree:
    """The :class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree` of ``tree`` restricted to
    ``leaf_names`` and their ancestors, in ``tree``'s depth-first order (the official base/novel
    trees keep it): :func:`hyro_edu.data.taxonomic_datasets.subtree` by leaf names rather than
    labels.  ``ValueError`` for a name that is not a leaf of ``tree``."""
    taxonomic = tree if isinstance(tree, TaxonomicTree) else TaxonomicTree(tree)
    labels = []
    for i, name in enumerate(leaf_names):
        try:
            labels.append(taxonomic.label(taxonomic.node(name)))
        except ValueError:
            raise ValueError(f"leaf_names[{i}] must be a leaf of the tree, got {name!r}") from None
    return td.subtree(taxonomic, labels)[0]


def toy_images(split: str, per_class: int, *, image_size: int = 64) -> torch.Tensor:
    """uint8 ``(54, per_class, 3, S, S)``: scene ``1000 k + j`` of ``split`` with one object of class
    ``k``, for every class ``k`` and ``j < per_class``; rendered once and cached."""
    from hyro_edu.data.toyworld import ToyWorld

    path = paths.cache_dir() / "tree_alignment_toy" / f"{split}_{image_size}px_{per_class}.pt"
    cached = paths.load_cached(path)
    if cached is not None:
        return cached
    world = ToyWorld(image_size, seed=0)
    out = torch.empty(world.num_classes, per_class, 3, image_size, image_size, dtype=torch.uint8)
    for k in range(world.num_classes):
        for j in range(per_class):
            out[k, j] = world.scene(_SCENE_STRIDE * k + j, split=split, classes=[k], num_objects=(1, 1)).image
    paths.atomic_torch_save(out, path)
    return out


def _standardise(images: torch.Tensor) -> torch.Tensor:
    """float images in [0, 1] ``(B, 3, S, S)`` normalised with the CLIP mean and std."""
    m = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - m) / s


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return _standardise(images.float() / 255)


class ImageTensors(Dataset):
    """uint8 ``images (N, 3, S, S)`` and ``labels (N,)`` cut into batches by fancy indexing
    (``__getitems__``), normalised with the CLIP mean and std per batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if len(images) != len(labels):
            raise ValueError(f"images and labels must have the same length, got {len(images)} and {len(labels)}")
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitems__(self, items) -> dict:
        idx = torch.tensor([i if isinstance(i, int) else i[0] for i in items], dtype=torch.long)
        return {"input": _normalise(self.images[idx]), "target": self.labels[idx]}

    def __getitem__(self, item) -> dict:
        out = self.__getitems__([item])
        return {k: v[0] for k, v in out.items()}


def _crop_box(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random resized crop: area scale in [0.08, 1], aspect ratio in
    [3/4, 4/3] (log-uniform), 10 tries, else the centre crop of the clamped ratio (torchvision's
    ``RandomResizedCrop.get_params``, drawn from ``rng``)."""
    area = height * width
    low, high = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(low, high))
        w, h = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif ratio > 4 / 3:
        h, w = height, int(round(height * (4 / 3)))
    else:
        w, h = width, height
    h, w = min(h, height), min(w, width)
    return (height - h) // 2, (width - w) // 2, h, w


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float ``(3, H, W)`` in [0, 1] -> ``(3, *size)``: bicubic, antialiased, clamped to [0, 1]."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    return out.clamp_(0.0, 1.0)


class TaxonomicImages(Dataset):
    """A prepared split of a taxonomic dataset read lazily, batched like
    :class:`hyro_edu.tree_alignment.train.data.ImageTensors`: ``__getitems__(items)`` returns
    ``{"input": float (B, 3, S, S) normalised with the CLIP mean and std, "target": long (B,)}``.

    ``dataset``: a :class:`hyro_edu.data.taxonomic_datasets.TaxonomicDataset` (its labels are
    the targets); ``indices``: the positions of ``dataset`` served, in order (default all);
    ``image_size``: ``S``.  Items are positions ``i`` (evaluation) or ``(i, stream position)``
    pairs of :class:`hyro_edu.training.stream.ResumableSampler` (training).  Without ``augment``
    the shorter side is resized to ``S`` and the centre ``S x S`` kept; with ``augment`` a random
    resized crop and a horizontal flip, drawn from ``numpy.random.default_rng([seed, epoch, i])``
    with ``epoch = position // len(self)`` (module docstring).
    """

    def __init__(self, dataset: "td.TaxonomicDataset", indices: Optional[Sequence[int]] = None, *,
                 image_size: int, augment: bool = False, seed: int = 0):
        self.dataset = dataset
        self.indices = tuple(range(len(dataset))) if indices is None else tuple(int(i) for i in indices)
        if any(not 0 <= i < len(dataset) for i in self.indices):
            raise ValueError(f"indices must be positions of the dataset (0 to {len(dataset) - 1})")
        self.labels = torch.tensor([dataset.labels[i] for i in self.indices], dtype=torch.long)
        self.image_size, self.augment, self.seed = int(image_size), bool(augment), int(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def _image(self, i: int, position: Optional[int]) -> torch.Tensor:
        image, _ = self.dataset[self.indices[i]]
        image = image.float().div_(255)
        size = self.image_size
        height, width = image.shape[-2:]
        if self.augment:
            epoch = 0 if position is None else int(position) // len(self)
            rng = np.random.default_rng([self.seed, epoch, int(i)])
            top, left, h, w = _crop_box(height, width, rng)
            image = _resize(image[:, top:top + h, left:left + w], (size, size))
            if rng.random() < 0.5:
                image = image.flip(-1)
            return image
        scale = size / min(height, width)
        new = (max(size, int(round(height * scale))), max(size, int(round(width * scale))))
        image = _resize(image, new)
        top, left = (new[0] - size) // 2, (new[1] - size) // 2
        return image[:, top:top + size, left:left + size]

    def __getitems__(self, items) -> dict:
        pairs = [(int(i[0]), int(i[1])) if isinstance(i, (tuple, list)) else (int(i), None) for i in items]
        images = torch.stack([self._image(i, pos) for i, pos in pairs])
        idx = torch.tensor([i for i, _ in pairs], dtype=torch.long)
        return {"input": _standardise(images), "target": self.labels[idx]}

    def __getitem__(self, item) -> dict:
        out = self.__getitems__([item])
        return {k: v[0] for k, v in out.items()}

    def __repr__(self) -> str:
        return f"TaxonomicImages({self.dataset!r}, {len(self)} items, {self.image_size} px, augment={self.augment})"


class EvalSet:
    """One evaluation tree and its test images: ``tree``, ``data`` (an
    :class:`hyro_edu.tree_alignment.train.data.ImageTensors` or
    :class:`hyro_edu.tree_alignment.train.data.TaxonomicImages` whose targets are labels of
    ``tree``) and ``cuts``: the tree cuts to score it on (a full-size dataset's stored 25), or
    ``None`` to draw them (:func:`hyro_edu.tree_alignment.train.task.stored_cuts`)."""

    def __init__(self, tree: TaxonomicTree, data: Dataset, cuts: Optional[Sequence] = None):
        self.tree, self.data = tree, data
        self.cuts = None if cuts is None else tuple(cuts)


class TreeAlignmentData:
    """The data of one config: ``train`` (an
    :class:`hyro_edu.tree_alignment.train.data.ImageTensors` for the toy world, a
    :class:`hyro_edu.tree_alignment.train.data.TaxonomicImages` for a full-size dataset), ``tree``
    (the training tree) and ``evals`` (``{"base": EvalSet, "novel": EvalSet, "full": EvalSet}``,
    the novel set absent when every class is trained on)."""

    def __init__(self, train: Dataset, tree: TaxonomicTree, evals: dict):
        self.train, self.tree, self.evals = train, tree, evals


def _toy_classes(config: TreeAlignmentTrainConfig):
    from hyro_edu.data.toyworld import ToyWorld

    world = ToyWorld(config.toy_image_size, seed=0)
    classes = config.train_classes
    if classes[0] == "seen" and len(classes) == 1:
        train = list(world.seen_classes)
    elif classes[0] == "all" and len(classes) == 1:
        train = list(range(world.num_classes))
    else:
        index = {n: k for k, n in enumerate(world.class_names)}
        train = sorted(index[n] for n in classes)
    return world, train


def _eval_set(tree_all: Tree, names, classes, images) -> EvalSet:
    tree = subtree(tree_all, [names[k] for k in classes])
    per_class = images.shape[1]
    x = images[classes].reshape(-1, *images.shape[2:])
    y = tree.labels_of([names[k] for k in classes]).repeat_interleave(per_class)
    return EvalSet(tree, ImageTensors(x, y))


def _full_data(config: TreeAlignmentTrainConfig, data_root) -> TreeAlignmentData:
    key, size = TAXONOMIC_KEYS[config.dataset], config.image_size

    def read(split: str, subset: str) -> "td.TaxonomicDataset":
        return td.TaxonomicDataset(key, split, data_root, subset=subset, image_root=config.image_root)

    base = tuple(config.train_classes) == ("base",)
    train = read("train", "base" if base else "all")
    try:
        picks = few_shot_indices(train.labels, config.shots, seed=config.seed)
    except ValueError as exc:
        raise ValueError(f"shots={config.shots} for dataset {config.dataset!r} ({key}, {'base' if base else 'all'} classes): {exc}") from None
    evals = {}
    for name, subset in ((("base", "base"), ("novel", "novel"), ("full", "all")) if base else (("full", "all"),)):
        test = read("test", subset)
        evals[name] = EvalSet(test.tree, TaxonomicImages(test, image_size=size),
                              cuts=td.read_cuts(key, subset, data_root))
    return TreeAlignmentData(TaxonomicImages(train, picks, image_size=size, augment=config.augment,
                                             seed=config.seed),
                             train.tree, evals)


def build_data(config: TreeAlignmentTrainConfig, *, data_root=None) -> TreeAlignmentData:
    """The training set, training tree and evaluation sets of ``config`` (module docstring).

    The toy world is rendered (and cached); a full-size dataset is read from its preparation
    under ``data_root`` (default ``$HYRO_EDU_DATA``): the few-shot training set of every class
    (``train_classes: all``, evaluated on the full tree) or of the base classes (``base``,
    evaluated on the base, novel and full trees), with the stored cuts.  Raises
    :class:`hyro_edu.data.taxonomic_datasets.DatasetNotPreparedError` when the dataset is not
    prepared (:func:`hyro_edu.tree_alignment.train.config.check_data` says so first in a run) and
    ``ValueError`` when a class has fewer than ``shots`` training images.
    """
    if config.dataset != "toy":
        return _full_data(config, data_root)
    world, train_classes = _toy_classes(config)
    full = toyworld_hierarchy()
    names = world.class_names
    train_images = toy_images("train", config.shots, image_size=config.toy_image_size)
    train_tree = subtree(full, [names[k] for k in train_classes])
    x = train_images[train_classes].reshape(-1, *train_images.shape[2:])
    y = train_tree.labels_of([names[k] for k in train_classes]).repeat_interleave(config.shots)
    test = toy_images("test", config.toy_test_per_class, image_size=config.toy_image_size)
    seen, unseen = list(world.seen_classes), list(world.unseen_classes)
    evals = {"base": _eval_set(full, names, seen, test)}
    novel = [k for k in range(world.num_classes) if k not in set(train_classes)]
    if novel:
        evals["novel"] = _eval_set(full, names, unseen if novel == unseen else novel, test)
    evals["full"] = _eval_set(full, names, list(range(world.num_classes)), test)
    return TreeAlignmentData(ImageTensors(x, y), train_tree, evals)
