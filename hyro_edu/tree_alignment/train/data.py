r"""Tree alignment's data: few-shot training sets, the base / novel / full evaluation trees, the toy world.

.. math::
    \mathcal D_{\rm train} = \bigcup_{k \in \mathcal C} \{x_{k,\pi_k(1)}, \dots, x_{k,\pi_k(n)}\},
    \qquad \pi_k = \mathrm{randperm}(N_k;\ \text{seed} + k)

(few-shot sampling of the official ``NshotSampler``,
:func:`hyro_edu.tree_alignment.train.data.few_shot_indices`: class ``k`` keeps the first
``shots`` items of a permutation seeded by ``seed + k``).  Batches are ``{"input": images (B, 3, S, S)
normalised with the CLIP mean and std, "target": leaf labels (B,)}``, labels of the **training
tree** (:class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree`, depth-first numbering).  Training
reads an endless stream of positions, epoch ``e`` a permutation drawn from ``(seed, e)``
(:class:`hyro_edu.training.stream.ResumableSampler`), so a resumed run sees the batches of the
uninterrupted one (the official sampler reuses one order every epoch; a documented deviation).

**The toy world** (design notes §7): ``ToyWorld(toy_image_size, seed=0)``; the training images of
class ``k`` are the single-object scenes ``scene(1000 k + j, split="train", classes=[k])``,
``j < shots``; the test images are ``toy_test_per_class`` single-object "test" scenes of each of the 54
classes.  Scenes are rendered once and cached under ``$HYRO_EDU_CACHE/tree_alignment_toy``. The
evaluation trees are the base tree (the 36 seen leaves, 49 nodes), the novel tree (the 18 unseen
leaves) and the full 54-leaf tree (:func:`hyro_edu.tree_alignment.train.data.subtree`), each scored
on the test images of its own leaves.

**Full-size datasets** (CIFAR-100, SUN, ImageNet, Rare Species) are read by the readers of the data
scripts once they are prepared; this module names them,
:func:`hyro_edu.tree_alignment.train.data.build_data` does not read them yet.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from hyro_edu.core import paths
from hyro_edu.core.images import CLIP_MEAN, CLIP_STD
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree
from hyro_edu.hierarchy.taxonomies import toyworld_hierarchy
from hyro_edu.hierarchy.trees import Tree
from hyro_edu.training.stream import ResumableSampler
from hyro_edu.tree_alignment.train.config import TreeAlignmentTrainConfig

__all__ = ["ResumableSampler", "few_shot_indices", "subtree", "toy_images", "ImageTensors", "EvalSet",
           "TreeAlignmentData", "build_data"]

_SCENE_STRIDE = 1000


def few_shot_indices(labels: torch.Tensor, shots: int, *, seed: int = 0) -> torch.Tensor:
    """Indices of ``shots`` items per class: class ``k``'s items in a ``randperm`` seeded by
    ``seed + k``, the first ``shots`` kept (all when fewer); classes in increasing order.

    ``labels (N,)`` integer class of each item.  Returns int64 indices.  The official
    ``NshotSampler`` rule (reference 6, seed 0).
    """
    labels = torch.as_tensor(labels).long()
    out = []
    for k in torch.unique(labels).tolist():
        items = torch.nonzero(labels == k).flatten()
        perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(int(seed) + int(k)))
        out.append(items[perm[:shots]])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def subtree(tree: Tree, leaf_names: Sequence[str]) -> TaxonomicTree:
    """The :class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree` of ``tree`` restricted to
    ``leaf_names`` and their ancestors, children in ``tree``'s order (the official base/novel trees
    keep the depth-first order).  ``ValueError`` for a name that is not a leaf of ``tree``."""
    leaves = {tree.names[v]: v for v in tree.leaves}
    keep = set()
    for i, name in enumerate(leaf_names):
        if name not in leaves:
            raise ValueError(f"leaf_names[{i}] must be a leaf of the tree, got {name!r}")
        v = leaves[name]
        while v >= 0 and v not in keep:
            keep.add(v)
            v = tree.parents[v] if v else -1
    kids = {v: [] for v in keep}
    for v in sorted(keep):
        if v:
            kids[tree.parents[v]].append(v)

    def nest(v):
        return None if not kids[v] else {tree.names[c]: nest(c) for c in kids[v]}

    return TaxonomicTree.from_nested(tree.names[0], nest(0))


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


def _normalise(images: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


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


class EvalSet:
    """One evaluation tree and its test images: ``tree``, ``data`` (an
    :class:`hyro_edu.tree_alignment.train.data.ImageTensors` whose targets are labels of ``tree``)."""

    def __init__(self, tree: TaxonomicTree, data: ImageTensors):
        self.tree, self.data = tree, data


class TreeAlignmentData:
    """The data of one config: ``train`` (an
    :class:`hyro_edu.tree_alignment.train.data.ImageTensors`), ``tree`` (the training tree)
    and ``evals`` (``{"base": EvalSet, "novel": EvalSet, "full": EvalSet}``, the novel set absent
    when every class is trained on)."""

    def __init__(self, train: ImageTensors, tree: TaxonomicTree, evals: dict):
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


def build_data(config: TreeAlignmentTrainConfig, *, data_root=None) -> TreeAlignmentData:
    """The training set, training tree and evaluation sets of ``config`` (module docstring).

    Full-size datasets raise ``NotImplementedError`` until their readers exist (their preparation
    is checked first by :func:`hyro_edu.tree_alignment.train.config.check_data`).
    """
    if config.dataset != "toy":
        raise NotImplementedError(
            f"dataset {config.dataset!r}: the full-size readers plug in with the data scripts "
            f"(python -m data_scripts.prepare --datasets {config.dataset}); only 'toy' trains for now")
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
