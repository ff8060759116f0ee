"""HVSA's datasets as PyTorch datasets, read from the layouts that ``data_scripts.prepare`` writes.

HVSA :cite:`hvsa` is evaluated on hierarchical multi-label data (ImCLEF07A/D,
:cite:`dimitrovski2011imclef`), hierarchical classification (tieredImageNet-H) and hierarchical
segmentation (Cityscapes :cite:`cordts2016cityscapes`, LIP :cite:`gong2017lip`,
PASCAL-Person-Part :cite:`chen2014pascalpart`, with HSSN's hierarchies :cite:`li2022hssn`).
``python -m data_scripts.prepare --datasets imclef07a cityscapes ...`` (or ``--datasets hvsa``;
run from the repository root) downloads or takes the raw files, converts them and writes, under
the data root
(``$HYRO_EDU_DATA``, default ``~/hyro_edu_data``)::

    <root>/imclef07a/  (and imclef07d/)
        features_<split>.npy   float32 (N, 80), the ARFF's 80 edge-histogram attributes (0-7)
        labels_<split>.npy     uint8 (N, L) multi-hot over the L non-root nodes, path-closed
        hierarchy.json         node names (C-HMCNN order) and parents (-1: a top-level node)
        .prepared.json         completion marker, written last
    <root>/cityscapes/  (and lip/, pascal_person_part/)
        labels/<split>/<stem>.png   uint8 label maps: class ids 0..K-1, 255 ignored
        classes.json, manifest.json (per split: [image, label] relative to <root>; the images
                                     stay where the archives were unpacked, under <root>/raw/)
        .prepared.json              completion marker, written last
    <root>/tiered_imagenet_h/
        hierarchy.json              the isa tree (names, parents), the 608 classes, their tree nodes
        classes.json, manifest.json (per split: [path under the ImageNet folder, class index])
        .prepared.json              completion marker (records the ImageNet folder), written last

The segmentation layout is that of :mod:`hyro_edu.data.benchmarks` (same file names, same
marker), but the datasets are not open-vocabulary benchmarks and are registered here
(:data:`DATASETS`), so :class:`HierarchicalSegmentation` reads them instead of
``SegmentationBenchmark``. A dataset counts as prepared only when ``.prepared.json`` exists and
carries this module's :data:`LAYOUT_VERSION`; otherwise the readers raise
:class:`DatasetNotPreparedError` naming the command that prepares it.

**Label ids.** ImCLEF07: the nodes declared by the ARFF header (``@ATTRIBUTE class
hierarchical``), without the implicit root, sorted by depth and then by path string (C-HMCNN's
order); label ``j`` is tree node ``j + 1`` of ``ImCLEF07(...).tree``, whose node 0 is a virtual
root ``"root"`` (a :class:`~hyro_edu.hierarchy.trees.Tree` has one root). Cityscapes: the 19
trainIds of cityscapesScripts ``helpers/labels.py``. LIP: the 20 ids of the dataset (0
background ... 19 right shoe). PASCAL-Person-Part: HSSN's order (0 background, 1 head, 2 torso,
3 upper-arm, 4 lower-arm, 5 upper-leg, 6 lower-leg). tieredImageNet-H: the 608 leaf wnids
sorted; its tree (:func:`isa_tree` of making-better-mistakes' isa file, breadth-first with sorted
children, real root, no virtual one) is ``TieredImageNetH(...).tree``. The segmentation hierarchies (super-classes)
are not defined here but in :mod:`hyro_edu.hierarchy.taxonomies`; this module provides label ids
and class names only.

**Splits.** ImCLEF07's public training file has 10,000 rows, which HVSA splits into 7,000 train
and 3,000 validation; no source gives the split, so the preparation draws it deterministically
(:func:`imclef07_split`: a seeded permutation, seed 0, of the row order), writes ``train`` (7,000),
``val`` (3,000) and ``test`` (the 1,006 rows of the test file), and also ``trainval`` (all 10,000,
in file order). Cityscapes, LIP: ``train`` and ``val`` (the test labels are withheld).
PASCAL-Person-Part: ``train`` and ``test`` (HSSN's config calls the test split ``val``).
tieredImageNet-H: ``train``, ``val``, ``test`` of making-better-mistakes' split files.

One module (a little over 500 lines) because its three readers are one concept, "an HVSA
dataset from its prepared layout": they share the registry, the completion marker and its error.

References: the ImCLEF07 ARFF files of C-HMCNN's repository (``HMC_data/others``) and the Clus
HMC datasets; cityscapesScripts ``helpers/labels.py``; the LIP dataset page; HSSN (unofficial
port ``HSSN_pytorch``) for the PASCAL-Person-Part ids; making-better-mistakes (Bertinetto et
al., CVPR 2020) for tieredImageNet-H's splits and hierarchy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hyro_edu.data import benchmarks as _benchmarks
from hyro_edu.data.prepared import (MARKER_NAME, ManifestPairs, check_index, check_marker, check_written, clear_marker,
                                    layout_check, lookup, not_prepared_message, preparation_command, read_manifest,
                                    resolve_root, write_json)
from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "LAYOUT_VERSION",
    "MARKER_NAME",
    "VIRTUAL_ROOT",
    "DatasetInfo",
    "DATASETS",
    "CITYSCAPES_CLASSES",
    "LIP_CLASSES",
    "LIP_FLIP_PAIRS",
    "PASCAL_PERSON_PART_CLASSES",
    "DatasetNotPreparedError",
    "dataset_info",
    "dataset_dir",
    "prepare_command",
    "check_prepared",
    "write_prepared",
    "clear_prepared",
    "imclef07_split",
    "sort_paths",
    "path_parents",
    "tree_with_virtual_root",
    "flip_permutation",
    "isa_tree",
    "ImCLEF07",
    "HierarchicalSegmentation",
    "TieredImageNetH",
]

LAYOUT_VERSION = 1
#: Name of the node added above ImCLEF07's top-level nodes (the ARFF's implicit root).
VIRTUAL_ROOT = "root"

#: The 19 Cityscapes trainIds 0-18 (cityscapesScripts ``helpers/labels.py``, names as there).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
#: LIP's 20 ids (the dataset's label list).
LIP_CLASSES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks",
    "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg",
    "right-leg", "left-shoe", "right-shoe",
)
#: The id pairs a horizontal flip swaps in LIP (left/right arm, leg, shoe).
LIP_FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))
#: PASCAL-Person-Part in HSSN's order (other redistributions order the parts differently).
PASCAL_PERSON_PART_CLASSES = (
    "background", "head", "torso", "upper-arm", "lower-arm", "upper-leg", "lower-leg",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What an HVSA dataset is: key, title, kind, splits, class names, ignore value, sizes.

    ``kind`` is ``"multilabel"`` (feature vectors with path-closed multi-hot labels),
    ``"segmentation"`` (images with label maps) or ``"classification"`` (images with one leaf
    label). ``class_names`` is empty for ImCLEF07 and tieredImageNet-H, whose nodes are read from
    the prepared files. ``expected`` gives the number of samples per split in
    the full dataset where a source states it.
    """

    key: str
    title: str
    kind: str
    splits: tuple[str, ...]
    class_names: tuple[str, ...] = ()
    ignore_index: Optional[int] = None
    flip_pairs: tuple[tuple[int, int], ...] = ()
    expected: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> Optional[int]:
        return len(self.class_names) or None


_IMCLEF_SPLITS = ("train", "val", "test", "trainval")
DATASETS: dict[str, DatasetInfo] = {
    info.key: info
    for info in (
        DatasetInfo("imclef07a", "ImCLEF07A (anatomy)", "multilabel", _IMCLEF_SPLITS,
                    expected={"train": 7_000, "val": 3_000, "test": 1_006, "trainval": 10_000}),
        DatasetInfo("imclef07d", "ImCLEF07D (direction)", "multilabel", _IMCLEF_SPLITS,
                    expected={"train": 7_000, "val": 3_000, "test": 1_006, "trainval": 10_000}),
        DatasetInfo("cityscapes", "Cityscapes (19 trainIds)", "segmentation", ("train", "val"),
                    CITYSCAPES_CLASSES, 255, expected={"train": 2_975, "val": 500}),
        DatasetInfo("lip", "LIP (Look Into Person)", "segmentation", ("train", "val"), LIP_CLASSES,
                    255, LIP_FLIP_PAIRS, expected={"train": 30_462, "val": 10_000}),
        DatasetInfo("pascal_person_part", "PASCAL-Person-Part", "segmentation", ("train", "test"),
                    PASCAL_PERSON_PART_CLASSES, 255, expected={"train": 1_716, "test": 1_817}),
        DatasetInfo("tiered_imagenet_h", "tieredImageNet-H (608 classes)", "classification",
                    ("train", "val", "test"), expected={"train": 425_600, "val": 15_200, "test": 15_200}),
    )
}


class DatasetNotPreparedError(_benchmarks.DatasetNotPreparedError):
    """An HVSA dataset (or one of its splits) has no completed preparation under the data root."""


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; ``ValueError`` listing the known keys otherwise."""
    return lookup(DATASETS, name)


def dataset_dir(name: str, root=None) -> Path:
    """``<root>/<name>``, where the prepared dataset lives."""
    dataset_info(name)
    return resolve_root(root) / name


def prepare_command(name: str, root=None) -> str:
    """The command that prepares ``name`` under ``root``."""
    return preparation_command(name, root)


def _not_prepared(name: str, root, reason: str) -> DatasetNotPreparedError:
    return DatasetNotPreparedError(not_prepared_message(dataset_info(name).title, dataset_dir(name, root), reason,
                                                        prepare_command(name, root)))


def check_prepared(name: str, split: Optional[str] = None, root=None) -> dict:
    """The completion marker of ``name``; :class:`DatasetNotPreparedError` (naming the command) if absent.

    Also raised for a marker of another layout version, or when ``split`` was not prepared.
    """
    info = dataset_info(name)

    return check_marker(dataset_dir(name, root), name, info.splits, split,
                        version_problem=layout_check(name, LAYOUT_VERSION),
                        not_prepared=lambda reason: _not_prepared(name, root, reason))


def clear_prepared(name: str, root=None) -> None:
    """Remove the completion marker of ``name`` (the first step of every (re)preparation)."""
    clear_marker(dataset_dir(name, root))


def write_prepared(name: str, root, *, splits: dict, files: Sequence[str], sources: Optional[dict] = None) -> Path:
    """Write the completion marker of ``name`` (last step); every path in ``files`` must exist.

    ``splits`` maps each split to its number of samples; ``files`` are the written files,
    relative to the dataset folder. Returns the marker path.
    """
    info = dataset_info(name)
    directory = dataset_dir(name, root)
    check_written(directory, info.splits, splits, files)
    marker = {
        "dataset": name,
        "layout_version": LAYOUT_VERSION,
        "kind": info.kind,
        "splits": {s: int(n) for s, n in splits.items()},
        "sources": sources or {},
    }
    write_json(directory / MARKER_NAME, marker)
    return directory / MARKER_NAME


# ----------------------------------------------------------------------------
# ImCLEF07: hierarchy helpers and the reader
# ----------------------------------------------------------------------------
def imclef07_split(num_rows: int = 10_000, num_val: int = 3_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """HVSA's train/validation split of ImCLEF07's training rows: ``(train_rows, val_rows)``, each sorted.

    A NumPy ``default_rng(seed).permutation(num_rows)``; its last ``num_val`` entries are the
    validation rows (3,000 of 10,000, the paper's sizes). A documented choice: the paper does not
    give its split.
    """
    for arg, value in (("num_rows", num_rows), ("num_val", num_val), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{arg} must be an integer >= 0, got {value!r}")
    if num_val > num_rows:
        raise ValueError(f"num_val must be at most num_rows={num_rows}, got {num_val}")
    order = np.random.default_rng(seed).permutation(num_rows)
    return np.sort(order[: num_rows - num_val]), np.sort(order[num_rows - num_val:])


def sort_paths(paths) -> list[str]:
    """Node paths (``"2"``, ``"2/1"``, ``"2/1/3"``) in C-HMCNN order: by depth, then by string; duplicates dropped."""
    return sorted(set(paths), key=lambda p: (p.count("/"), p))


def path_parents(paths: Sequence[str]) -> list[int]:
    """For each path of ``paths``, the index of its prefix path (its parent); -1 for a top-level path.

    ``ValueError`` if a prefix is not in ``paths`` (a header that skips a level).
    """
    index = {p: i for i, p in enumerate(paths)}
    parents = []
    for p in paths:
        if "/" not in p:
            parents.append(-1)
            continue
        prefix = p.rsplit("/", 1)[0]
        if prefix not in index:
            raise ValueError(f"paths must contain the parent {prefix!r} of {p!r}")
        parents.append(index[prefix])
    return parents


def tree_with_virtual_root(names: Sequence[str], parents: Sequence[int], root: str = VIRTUAL_ROOT) -> Tree:
    """A :class:`~hyro_edu.hierarchy.trees.Tree` with node 0 = ``root`` and node ``j + 1`` = ``names[j]``.

    ``parents[j]`` is the label index of the parent of label ``j``, -1 for a top-level label
    (which becomes a child of the virtual root). Parents must precede children (depth order).
    """
    if root in names:
        raise ValueError(f"root must not be one of the names, got {root!r}")
    return Tree((root, *[str(n) for n in names]), (-1, *[int(p) + 1 for p in parents]))


class ImCLEF07(Dataset):
    """One prepared ImCLEF07 split (``"imclef07a"`` or ``"imclef07d"``) as ``(features, labels)`` pairs.

    ``features`` float32 (80,), the ARFF's attribute values unscaled (integers 0-7); ``labels``
    float32 (L,) multi-hot over the L non-root hierarchy nodes, path-closed (every positive node's
    ancestors are positive). Attributes: ``features`` (N, 80) and ``labels`` (N, L) tensors,
    ``node_names`` (the ARFF paths, label order), ``parents`` (label index of each node's parent,
    -1 for top-level nodes), ``tree`` (:func:`tree_with_virtual_root`: node ``j + 1`` is label
    ``j``), ``depths`` (1 for top-level nodes). Raises :class:`DatasetNotPreparedError` with the
    command to run when the preparation is missing or unfinished.

    Example::

        ds = ImCLEF07("imclef07a", "train")      # root from $HYRO_EDU_DATA
        x, y = ds[0]; x.shape, y.shape, ds.tree.names[1:4]
    """

    def __init__(self, name: str = "imclef07a", split: str = "train", root=None):
        info = dataset_info(name)
        if info.kind != "multilabel":
            raise ValueError(f"name must be 'imclef07a' or 'imclef07d', got {name!r}")
        self.name, self.split, self.root = name, split, resolve_root(root)
        marker = check_prepared(name, split, self.root)
        directory = dataset_dir(name, self.root)
        try:
            hierarchy = json.loads((directory / "hierarchy.json").read_text(encoding="utf-8"))
            features = np.load(directory / f"features_{split}.npy")
            labels = np.load(directory / f"labels_{split}.npy")
        except (OSError, ValueError, KeyError) as exc:
            raise _not_prepared(name, self.root, f"cannot read the prepared files: {exc!r}") from None
        if len(features) != marker["splits"][split] or labels.shape != (len(features), len(hierarchy["names"])):
            raise _not_prepared(name, self.root, "files and completion marker disagree; rerun with --force")
        self.node_names = tuple(hierarchy["names"])
        self.parents = tuple(int(p) for p in hierarchy["parents"])
        self.tree = tree_with_virtual_root(self.node_names, self.parents)
        self.depths = tuple(self.tree.depths[1:])
        self.features = torch.from_numpy(features.astype(np.float32))
        self.labels = torch.from_numpy(labels.astype(np.float32))

    @property
    def num_nodes(self) -> int:
        """L, the number of labels (hierarchy nodes without the root)."""
        return len(self.node_names)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int):
        check_index(index, len(self))
        return self.features[index], self.labels[index]

    def __repr__(self) -> str:
        return f"ImCLEF07({self.name!r}, split={self.split!r}, {len(self)} rows, {self.num_nodes} nodes)"


# ----------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------
def flip_permutation(name: str) -> torch.Tensor:
    """``perm`` (int64, 256 entries) with ``perm[k]`` the id that class ``k`` becomes under a horizontal flip.

    The identity except for the dataset's ``flip_pairs`` (LIP: 14<->15, 16<->17, 18<->19);
    ``perm[255] = 255``. Apply as ``perm[label.flip(-1)]``.
    """
    perm = torch.arange(256)
    for a, b in dataset_info(name).flip_pairs:
        perm[a], perm[b] = b, a
    return perm


class HierarchicalSegmentation(ManifestPairs):
    """One prepared split of Cityscapes, LIP or PASCAL-Person-Part as ``{"image", "label", "name"}`` samples.

    ``image`` uint8 (3, H, W); ``label`` int64 (H, W) with class ids in ``[0, num_classes)`` or
    ``ignore_index`` (255); ``name`` the file stem. ``transform``, if given, is applied to the
    sample dict. Attributes: ``info``, ``class_names``, ``num_classes``, ``ignore_index``,
    ``flip_pairs``. The super-class hierarchies live in :mod:`hyro_edu.hierarchy.taxonomies`.
    Raises :class:`DatasetNotPreparedError` with the command to run when not prepared.
    """

    def __init__(self, name: str, split: Optional[str] = None, root=None, transform: Optional[Callable] = None):
        self.info = dataset_info(name)
        if self.info.kind != "segmentation":
            raise ValueError(f"name must be one of {[k for k, i in DATASETS.items() if i.kind == 'segmentation']}, "
                             f"got {name!r}")
        self._select(name, self.info.splits, split, root, transform)
        marker = check_prepared(name, self.split, self.root)
        self._pairs = read_manifest(dataset_dir(name, self.root), self.split, marker,
                                    lambda reason: _not_prepared(name, self.root, reason))
        self.class_names = self.info.class_names
        self.num_classes = len(self.class_names)
        self.ignore_index = self.info.ignore_index
        self.flip_pairs = self.info.flip_pairs

    def __repr__(self) -> str:
        return f"HierarchicalSegmentation({self.name!r}, split={self.split!r}, {len(self)} images)"


# ----------------------------------------------------------------------------
# tieredImageNet-H
# ----------------------------------------------------------------------------
def isa_tree(edges: Sequence[tuple[str, str]]) -> Tree:
    """The :class:`~hyro_edu.hierarchy.trees.Tree` of ``(parent, child)`` edges (an "isa" file).

    Nodes are numbered breadth-first from the single root, children in sorted name order, so the
    numbering does not depend on the order of the lines. ``ValueError`` if the edges do not form
    one tree (several roots, a node with two parents, a cycle).
    """
    children: dict[str, list[str]] = {}
    parent_of: dict[str, str] = {}
    for parent, child in edges:
        if child in parent_of and parent_of[child] != parent:
            raise ValueError(f"edges must form a tree: {child!r} has the parents {parent_of[child]!r} and {parent!r}")
        if child in parent_of:
            continue  # a repeated line
        parent_of[child] = parent
        children.setdefault(parent, []).append(child)
    roots = sorted({p for p in children if p not in parent_of})
    if len(roots) != 1:
        raise ValueError(f"edges must form a tree with one root, found roots {roots[:5]}")
    names, parents = [roots[0]], [-1]
    queue, head = [roots[0]], 0
    while head < len(queue):
        node = queue[head]
        for child in sorted(children.get(node, ())):
            names.append(child)
            parents.append(head)
            queue.append(child)
        head += 1
    if len(names) != len(parent_of) + 1:
        raise ValueError("edges must form a tree: some nodes are not reachable from the root (a cycle)")
    return Tree(tuple(names), tuple(parents))


class TieredImageNetH(Dataset):
    """One prepared tieredImageNet-H split as ``{"image", "label", "name"}`` samples.

    ``image`` uint8 (3, ``image_size``, ``image_size``): the ILSVRC-2012 JPEG stretched to a
    square (bilinear; making-better-mistakes resize to 224 x 224 by stretching); ``label`` the leaf
    class index (int, classes = the 608 leaf wnids sorted); ``name`` the file name. Attributes:
    ``classes`` (wnids), ``tree`` (:func:`isa_tree` of the isa file, 843 nodes for the real file),
    ``leaf_nodes`` (tree node of each class), ``imagenet_root`` (where the JPEGs are read; default
    the folder given to the preparation). Raises :class:`DatasetNotPreparedError` when not prepared.
    """

    def __init__(self, split: str = "train", root=None, transform: Optional[Callable] = None,
                 image_size: Optional[int] = 224, imagenet_root=None):
        name = "tiered_imagenet_h"
        self.info = dataset_info(name)
        if split not in self.info.splits:
            raise ValueError(f"split must be one of {list(self.info.splits)}, got {split!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable or None, got {type(transform).__name__}")
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                       or image_size < 1):
            raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
        self.split, self.root, self.transform, self.image_size = split, resolve_root(root), transform, image_size
        marker = check_prepared(name, split, self.root)
        directory = dataset_dir(name, self.root)
        try:
            hierarchy = json.loads((directory / "hierarchy.json").read_text(encoding="utf-8"))
            samples = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))[split]
        except (OSError, ValueError, KeyError) as exc:
            raise _not_prepared(name, self.root, f"cannot read the prepared files: {exc!r}") from None
        if len(samples) != marker["splits"][split]:
            raise _not_prepared(name, self.root, "manifest and completion marker disagree; rerun with --force")
        self.tree = Tree(tuple(hierarchy["names"]), tuple(hierarchy["parents"]))
        self.classes = tuple(hierarchy["classes"])
        self.leaf_nodes = tuple(int(i) for i in hierarchy["leaf_nodes"])
        self.imagenet_root = Path(imagenet_root if imagenet_root is not None
                                  else marker["sources"]["imagenet_root"]).expanduser()
        self._samples = [(str(path), int(label)) for path, label in samples]

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> dict:
        check_index(index, len(self))
        path, label = self._samples[index]
        with Image.open(self.imagenet_root / path) as im:
            im = im.convert("RGB")
            if self.image_size is not None:
                im = im.resize((self.image_size, self.image_size), Image.BILINEAR)
            array = np.asarray(im)
        sample = {"image": torch.from_numpy(array.copy()).permute(2, 0, 1), "label": label, "name": Path(path).name}
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return f"TieredImageNetH(split={self.split!r}, {len(self)} images, {len(self.classes)} classes)"
