"""Tree alignment's four taxonomic datasets, read from the layout that ``data_scripts.prepare`` writes.

ProTeCt :cite:`wu2024protect` classifies images into the leaves of a taxonomy and scores every
level of it; the alignment across trees :cite:`wu2026modality` trains on the same data. Four
datasets, each with its taxonomy (facts of ProTeCt's and HypModalAlign's annotation files):

======================  ===============================================  =====  ======  =====  ==========
key                     images and tree                                  nodes  labels  depth  base/novel
======================  ===============================================  =====  ======  =====  ==========
``cifar100_protect``    CIFAR-100, ProTeCt's WordNet tree                  148     100     10  50/50
``sun324``              324 SUN397 classes, 3 -> 15 -> 324                 343     324      3  162/162
``imagenet_protect``    ILSVRC-2012 (the user's copy), WordNet tree       1368    1000     15  500/500
``rare_species``        ``imageomics/rare-species``, phylum to species    1024     400      6  200/200
======================  ===============================================  =====  ======  =====  ==========

CIFAR-100 has two trees in the package, named apart: ``cifar100_superclass`` (Krizhevsky's 20
superclasses, :func:`hyro_edu.hierarchy.taxonomies.cifar100_hierarchy`, 121 nodes, depth 2) and
``cifar100_wordnet`` (ProTeCt's WordNet tree of the prepared ``cifar100_protect``, 148 nodes,
depth 10, whose leaf "forest" hangs from the root);
:func:`~hyro_edu.data.taxonomic_datasets.cifar100_tree` returns either.

``python -m data_scripts.prepare --datasets tree_alignment`` (or one key) writes, under the data
root (``$HYRO_EDU_DATA``, default ``~/hyro_edu_data``)::

    <root>/<key>/
        tree.json             the taxonomy: "names" and "parents" in ProTeCt's depth-first order
                              (node ids; the root is 0), "labels" (the node of each leaf label)
        gt_<split>.txt        one sample a line: "path,label,index" (ProTeCt's list format), the
                              path relative to the image folder
        base_novel.json       the base/novel split of the leaves (``base_novel_split``, seed 42)
        tree_base.json, tree_novel.json    the two subtrees
        cuts_25.json, cuts_25_base.json, cuts_25_novel.json   the stored 25 tree cuts of each
                              tree (:func:`hyro_edu.hierarchy.tree_cuts.save_cuts`)
        images/               CIFAR-100 only: the PNG files the lists name
        .prepared.json        completion marker, written last (records the image folder)

**Image folders.** CIFAR-100: ``<root>/cifar100_protect/images`` (written from Krizhevsky's
python archive). SUN: ``<root>/raw/sun324/SUN397`` (the unpacked SUN397 archive). ImageNet: the
user's ILSVRC-2012 folder (``--imagenet-root``). Rare Species: the user's copy of the Hugging
Face dataset (``--rare-species-root``). The readers take ``image_root`` to read from elsewhere.

**Pure functions** (tested on small trees):
:func:`~hyro_edu.data.taxonomic_datasets.few_shot_indices` (ProTeCt's ``NshotSampler``: per
class ``i`` a ``torch.randperm`` seeded with ``seed + i``, the first ``shots`` kept),
:func:`~hyro_edu.data.taxonomic_datasets.base_novel_split` (HypModalAlign's
``gen_base_novel_trees.py``: a parent with ``m`` of the ``n`` leaves gets the quota
``round(ceil(n / 2) * m / n)``, adjusted to ``ceil(n / 2)`` in total, and ``random.sample`` draws
from ``random.Random(42)``) and :func:`~hyro_edu.data.taxonomic_datasets.subtree`.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from hyro_edu.data import benchmarks as _benchmarks
from hyro_edu.data.prepared import (MARKER_NAME, check_index, check_marker, check_written, clear_marker, layout_check,
                                    lookup, not_prepared_message, preparation_command, resolve_root, write_json)
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree
from hyro_edu.hierarchy.taxonomies import cifar100_hierarchy
from hyro_edu.hierarchy.tree_cuts import TreeCut, load_cuts
from hyro_edu.hierarchy.trees import Tree

__all__ = [
    "LAYOUT_VERSION",
    "MARKER_NAME",
    "SUBSETS",
    "BASE_NOVEL_SEED",
    "TaxonomicInfo",
    "DATASETS",
    "CIFAR100_TREES",
    "DatasetNotPreparedError",
    "dataset_info",
    "dataset_dir",
    "prepare_command",
    "check_prepared",
    "clear_prepared",
    "write_prepared",
    "tree_to_json",
    "tree_from_json",
    "read_tree",
    "read_cuts",
    "cifar100_tree",
    "read_samples",
    "few_shot_indices",
    "few_shot_order",
    "FewShotSampler",
    "base_novel_quotas",
    "BaseNovelSplit",
    "base_novel_split",
    "subtree",
    "TaxonomicDataset",
]

LAYOUT_VERSION = 1
#: The label sets a reader can serve: every leaf, the base leaves or the novel leaves.
SUBSETS = ("all", "base", "novel")
#: ``gen_base_novel_trees.py``'s default seed.
BASE_NOVEL_SEED = 42


@dataclass(frozen=True)
class TaxonomicInfo:
    """What a taxonomic dataset is: key, title, splits, tree facts and sizes.

    ``num_nodes``, ``num_labels`` and ``depth`` describe the full tree (root included);
    ``base_novel`` the sizes of the base/novel label split; ``expected`` the number of samples
    per split where a source states it; ``tree_name`` the name the package gives the tree.
    """

    key: str
    title: str
    tree_name: str
    num_nodes: int
    num_labels: int
    depth: int
    base_novel: tuple[int, int]
    splits: tuple[str, ...] = ("train", "test")
    expected: dict = field(default_factory=dict)


#: The four datasets by key (their :class:`~hyro_edu.data.taxonomic_datasets.TaxonomicInfo`).
DATASETS: dict[str, TaxonomicInfo] = {
    info.key: info
    for info in (
        TaxonomicInfo("cifar100_protect", "CIFAR-100 (ProTeCt's WordNet tree)", "cifar100_wordnet", 148, 100, 10,
                      (50, 50), expected={"train": 49_900, "test": 10_000}),
        TaxonomicInfo("sun324", "SUN-324 (3 -> 15 -> 324)", "sun324", 343, 324, 3, (162, 162),
                      expected={"train": 16_200, "test": 16_200}),
        TaxonomicInfo("imagenet_protect", "ImageNet (ProTeCt's WordNet tree)", "imagenet_wordnet", 1368, 1000, 15,
                      (500, 500), expected={"test": 50_000}),
        TaxonomicInfo("rare_species", "Rare Species (phylum -> species)", "rare_species", 1024, 400, 6, (200, 200),
                      expected={"train": 9_586, "test": 2_397}),
    )
}

#: The two CIFAR-100 trees of the package, by name (:func:`~hyro_edu.data.taxonomic_datasets.cifar100_tree`).
CIFAR100_TREES = ("cifar100_superclass", "cifar100_wordnet")


class DatasetNotPreparedError(_benchmarks.DatasetNotPreparedError):
    """A taxonomic dataset (or one of its splits) has no completed preparation under the data root."""


def dataset_info(name: str) -> TaxonomicInfo:
    """The :class:`~hyro_edu.data.taxonomic_datasets.TaxonomicInfo` of ``name``; ``ValueError`` listing the known keys otherwise."""
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
    """The completion marker of ``name``, read as a ``dict``.

    :class:`~hyro_edu.data.taxonomic_datasets.DatasetNotPreparedError` (naming the command) if absent.

    Also raised for a marker of another layout version or dataset, or when ``split`` was not prepared.
    """
    info = dataset_info(name)

    return check_marker(dataset_dir(name, root), name, info.splits, split,
                        version_problem=layout_check(name, LAYOUT_VERSION),
                        not_prepared=lambda reason: _not_prepared(name, root, reason))


def clear_prepared(name: str, root=None) -> None:
    """Remove the completion marker of ``name`` (the first step of every (re)preparation)."""
    clear_marker(dataset_dir(name, root))


def write_prepared(name: str, root, *, splits: dict, files: Sequence[str], image_root: str,
                   image_root_relative: bool, sources: Optional[dict] = None) -> Path:
    """Write the completion marker of ``name`` (last step); every path in ``files`` must exist.

    ``splits`` maps each split to its number of samples; ``files`` are the written files,
    relative to the dataset folder; ``image_root`` the folder the sample paths are relative to,
    itself relative to the data root when ``image_root_relative``. Returns the marker path.
    """
    info = dataset_info(name)
    directory = dataset_dir(name, root)
    check_written(directory, info.splits, splits, files)
    marker = {
        "dataset": name,
        "layout_version": LAYOUT_VERSION,
        "splits": {s: int(n) for s, n in splits.items()},
        "image_root": str(image_root),
        "image_root_relative": bool(image_root_relative),
        "files": list(files),
        "sources": sources or {},
    }
    write_json(directory / MARKER_NAME, marker)
    return directory / MARKER_NAME


# ----------------------------------------------------------------------------
# trees
# ----------------------------------------------------------------------------
def tree_to_json(tree: TaxonomicTree) -> dict:
    """The JSON object of ``tree.json``: ``names`` and ``parents`` in depth-first order, ``labels``
    (the dfs id of each leaf label), ``depth`` and ``nodes_per_depth`` (root included)."""
    if not isinstance(tree, TaxonomicTree):
        raise ValueError(f"tree must be a hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree, got {type(tree).__name__}")
    counts = Counter(tree.depths)
    return {"names": list(tree.names), "parents": list(tree.parents), "labels": list(tree.leaves),
            "depth": max(tree.depths), "nodes_per_depth": [counts[d] for d in range(max(tree.depths) + 1)]}


def tree_from_json(obj: dict) -> TaxonomicTree:
    """The :class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree` of a ``tree.json`` object.

    The stored order is depth-first, so the tree ids of the wrapped
    :class:`hyro_edu.hierarchy.trees.Tree` are the dfs ids. ``ValueError`` if the names and
    parents are not a depth-first numbered tree or ``labels`` are not its leaves in order.
    """
    try:
        tree = TaxonomicTree(Tree(tuple(str(n) for n in obj["names"]), tuple(int(p) for p in obj["parents"])))
        labels = tuple(int(v) for v in obj["labels"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"obj must hold names, parents and labels, got {exc!r}") from None
    if tree.tree_of_dfs != tuple(range(len(tree))):
        raise ValueError("obj must list the nodes in depth-first (pre-)order")
    if labels != tree.leaves:
        raise ValueError("obj's labels must be the leaves in depth-first order")
    return tree


def _tree_file(subset: str) -> str:
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    return "tree.json" if subset == "all" else f"tree_{subset}.json"


def read_tree(name: str, subset: str = "all", root=None) -> TaxonomicTree:
    """The taxonomy of the prepared dataset ``name`` (``subset`` ``"all"``, ``"base"`` or ``"novel"``).

    Raises :class:`~hyro_edu.data.taxonomic_datasets.DatasetNotPreparedError` with the command to run when it is not prepared.
    """
    filename = _tree_file(subset)
    check_prepared(name, root=root)
    path = dataset_dir(name, root) / filename
    try:
        return tree_from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise _not_prepared(name, root, f"cannot read {filename}: {exc}") from None


def read_cuts(name: str, subset: str = "all", root=None) -> tuple[TreeCut, ...]:
    """The 25 stored tree cuts of the prepared dataset ``name`` on its ``subset`` tree (for MTA).

    Read with :func:`hyro_edu.hierarchy.tree_cuts.load_cuts`, which recomputes every mapping.
    """
    tree = read_tree(name, subset, root)
    filename = "cuts_25.json" if subset == "all" else f"cuts_25_{subset}.json"
    try:
        return load_cuts(dataset_dir(name, root) / filename, tree)
    except (OSError, ValueError, KeyError) as exc:
        raise _not_prepared(name, root, f"cannot read {filename}: {exc}") from None


def cifar100_tree(kind: str = "cifar100_wordnet", root=None) -> TaxonomicTree:
    """One of the two CIFAR-100 trees, by name (:data:`~hyro_edu.data.taxonomic_datasets.CIFAR100_TREES`).

    ``"cifar100_superclass"``: the 20 superclasses
    (:func:`hyro_edu.hierarchy.taxonomies.cifar100_hierarchy`, shipped, 121 nodes);
    ``"cifar100_wordnet"``: ProTeCt's WordNet tree :cite:`wu2024protect`, read from the prepared
    ``cifar100_protect`` under ``root`` (148 nodes).
    """
    if kind not in CIFAR100_TREES:
        raise ValueError(f"kind must be one of {CIFAR100_TREES}, got {kind!r}")
    if kind == "cifar100_superclass":
        return TaxonomicTree(cifar100_hierarchy())
    return read_tree("cifar100_protect", "all", root)


# ----------------------------------------------------------------------------
# sample lists
# ----------------------------------------------------------------------------
def read_samples(path) -> list[tuple[str, int]]:
    """The ``(path, label)`` pairs of a ``gt_<split>.txt`` list ("path,label,index" lines).

    The path may contain commas (the line is split at its last two). ``ValueError`` naming the
    line when a label or index is not an integer, or the index is not the line's position.
    """
    out = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.rsplit(",", 2)
        try:
            if len(parts) != 3 or not parts[0]:
                raise ValueError
            label, index = int(parts[1]), int(parts[2])
        except ValueError:
            raise ValueError(f"{Path(path).name}, line {number}: expected 'path,label,index', got {line[:80]!r}") from None
        if index != len(out):
            raise ValueError(f"{Path(path).name}, line {number}: index {index}, expected {len(out)}")
        out.append((parts[0], label))
    return out


# ----------------------------------------------------------------------------
# few-shot sampling
# ----------------------------------------------------------------------------
def _labels(labels, name: str = "labels") -> np.ndarray:
    array = np.asarray(labels.tolist() if isinstance(labels, torch.Tensor) else labels)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-d sequence of integer labels, got shape {array.shape}, dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} must be labels >= 0, got {int(array.min())}")
    return array.astype(np.int64)


def few_shot_indices(labels, shots: int, seed: int = 0) -> list[int]:
    """The sample indices of a ``shots``-shot subset, by ProTeCt's ``NshotSampler`` rule :cite:`wu2024protect`.

    For each class ``i`` present in ``labels`` (increasing), the positions of its samples (in
    dataset order) are permuted by ``torch.randperm`` from a ``torch.Generator`` seeded with
    ``seed + i`` and the first ``shots`` are kept; the result lists class 0's picks, then class
    1's, and so on. ``ValueError`` if a class has fewer than ``shots`` samples (the reference
    asserts).
    """
    array = _labels(labels)
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise ValueError(f"shots must be an integer >= 1, got {shots!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    out: list[int] = []
    for i in np.unique(array).tolist():
        positions = np.flatnonzero(array == i)
        if len(positions) < shots:
            raise ValueError(f"labels must hold at least shots={shots} samples per class; class {i} has {len(positions)}")
        generator = torch.Generator().manual_seed(int(seed) + int(i))
        picks = torch.randperm(len(positions), generator=generator)[:shots].numpy()
        out.extend(int(p) for p in positions[picks])
    return out


def few_shot_order(num: int, seed: int = 0) -> list[int]:
    """The order ``NshotSampler`` visits ``num`` picked samples in: ``torch.randperm(num)`` from a
    generator seeded with ``seed``, the same every epoch (the reference reseeds at each ``__iter__``)."""
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"num must be an integer >= 0, got {num!r}")
    return torch.randperm(int(num), generator=torch.Generator().manual_seed(int(seed))).tolist()


class FewShotSampler(Sampler):
    """A ``torch.utils.data.Sampler`` over a ``shots``-shot subset of a labelled dataset.

    ``labels`` are the dataset's labels in order (for example ``TaxonomicDataset.labels``).
    Yields :func:`~hyro_edu.data.taxonomic_datasets.few_shot_indices` in
    :func:`~hyro_edu.data.taxonomic_datasets.few_shot_order`, the same order every epoch, as
    ProTeCt's ``NshotSampler``.
    """

    def __init__(self, labels, shots: int, seed: int = 0):
        self.indices = few_shot_indices(labels, shots, seed)
        self.seed = int(seed)

    def __iter__(self):
        return (self.indices[i] for i in few_shot_order(len(self.indices), self.seed))

    def __len__(self) -> int:
        return len(self.indices)


# ----------------------------------------------------------------------------
# base / novel split
# ----------------------------------------------------------------------------
def _check_tree(tree) -> TaxonomicTree:
    if not isinstance(tree, TaxonomicTree):
        raise ValueError(f"tree must be a hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree, got {type(tree).__name__}")
    return tree


def _leaf_groups(tree: TaxonomicTree) -> dict[int, list[int]]:
    """Parent dfs id -> its leaf labels, parents in order of their first leaf (label order)."""
    groups: dict[int, list[int]] = {}
    for label, leaf in enumerate(tree.leaves):
        groups.setdefault(tree.parents[leaf], []).append(label)
    return groups


def base_novel_quotas(tree: TaxonomicTree) -> dict[int, int]:
    """How many base leaves each parent of leaves gets (dfs id of the parent -> quota).

    The rule of ``gen_base_novel_trees.py`` :cite:`wu2026modality`: with ``n`` leaves and
    ``q = ceil(n / 2)``, a parent with ``m`` leaf children starts with ``round(q m / n)`` (Python's
    ``round``: halves go to the even integer); while the total differs from ``q``, parents in order
    of decreasing ``m`` (ties: order of their first leaf) gain one (when below ``m``) or lose one
    (when above 0). The reference makes one such pass; more passes are only taken where the
    reference would have ended with a wrong total or a negative quota.
    """
    tree = _check_tree(tree)
    groups = _leaf_groups(tree)
    n = tree.num_labels
    target = (n + 1) // 2
    quotas = {p: round(target * len(leaves) / n) for p, leaves in groups.items()}
    order = sorted(groups, key=lambda p: len(groups[p]), reverse=True)  # stable, like the reference
    diff = target - sum(quotas.values())
    while diff:
        moved = False
        for p in order:
            if diff > 0 and quotas[p] < len(groups[p]):
                quotas[p] += 1
                diff -= 1
                moved = True
            elif diff < 0 and quotas[p] > 0:
                quotas[p] -= 1
                diff += 1
                moved = True
            if diff == 0:
                break
        if not moved:  # pragma: no cover - impossible: 0 <= target <= n
            raise RuntimeError("the quotas cannot reach ceil(n/2)")
    return quotas


@dataclass(frozen=True)
class BaseNovelSplit:
    """A split of a tree's leaf labels: ``base`` and ``novel`` (old labels, increasing), the
    ``quotas`` per parent (dfs id -> count) and the ``seed`` of the draws."""

    base: tuple[int, ...]
    novel: tuple[int, ...]
    quotas: dict
    seed: int

    @property
    def relabel_base(self) -> dict[int, int]:
        """Old label -> label in the base subtree (``relabeler_base``)."""
        return {old: new for new, old in enumerate(self.base)}

    @property
    def relabel_novel(self) -> dict[int, int]:
        """Old label -> label in the novel subtree (``relabeler_novel``)."""
        return {old: new for new, old in enumerate(self.novel)}


def base_novel_split(tree: TaxonomicTree, seed: int = BASE_NOVEL_SEED) -> BaseNovelSplit:
    """Split the leaves into base and novel classes as ``gen_base_novel_trees.py`` does :cite:`wu2026modality`.

    :func:`~hyro_edu.data.taxonomic_datasets.base_novel_quotas` gives each parent of leaves its quota; then, parents in order of
    their first leaf, ``random.sample(leaves, quota)`` draws the base leaves from one
    ``random.Random(seed)`` (the reference seeds the global generator with ``random.seed(42)``;
    the draws are the same). The base labels are sorted; the novel ones are the rest. With the
    real trees: 50/50, 162/162, 500/500 and 200/200 leaves.
    """
    tree = _check_tree(tree)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    quotas = base_novel_quotas(tree)
    rng = random.Random(int(seed))
    base: list[int] = []
    for parent, leaves in _leaf_groups(tree).items():
        base.extend(rng.sample(leaves, quotas[parent]))
    chosen = set(base)
    return BaseNovelSplit(tuple(sorted(chosen)), tuple(l for l in range(tree.num_labels) if l not in chosen),
                          quotas, int(seed))


def subtree(tree: TaxonomicTree, labels: Sequence[int]) -> tuple[TaxonomicTree, dict[int, int]]:
    """The subtree spanned by the leaf ``labels`` and the map old label -> new label.

    It keeps those leaves and their ancestors, in the original depth-first order (so the new
    numbering is again depth-first, as ``extract_sub_tree`` of :cite:`wu2026modality`), and
    relabels the kept leaves in that order. ``ValueError`` for an empty, repeated or unknown label.
    """
    tree = _check_tree(tree)
    labels = [int(l) for l in labels]
    if not labels or len(set(labels)) != len(labels) or not all(0 <= l < tree.num_labels for l in labels):
        raise ValueError(f"labels must be distinct leaf labels in [0, {tree.num_labels - 1}], got {labels[:10]}")
    keep = set()
    for l in labels:
        leaf = tree.leaves[l]
        keep.add(leaf)
        keep.update(tree.ancestors(leaf))
    order = sorted(keep)
    new_id = {old: new for new, old in enumerate(order)}
    sub = TaxonomicTree(Tree(tuple(tree.names[v] for v in order),
                             tuple(-1 if v == 0 else new_id[tree.parents[v]] for v in order)))
    relabel = {old: new for new, old in enumerate(sorted(labels))}
    return sub, relabel


# ----------------------------------------------------------------------------
# the reader
# ----------------------------------------------------------------------------
class TaxonomicDataset(Dataset):
    """One prepared split of a taxonomic dataset as ``(image, label)`` pairs, with its tree.

    ``image`` is a uint8 tensor (3, H, W) as stored (``transform``, if given, is applied to it);
    ``label`` the leaf label (int) in the ``subset`` tree: ``"all"`` (every class), ``"base"`` or
    ``"novel"`` (only the samples of those classes, relabelled by the split's relabeler).
    Attributes: ``tree`` (:class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree`), ``labels``
    (every sample's label, for :class:`~hyro_edu.data.taxonomic_datasets.FewShotSampler`), ``paths``, ``image_root``.
    ``image_root`` overrides where the images are read (default: the folder the preparation
    recorded). Raises :class:`~hyro_edu.data.taxonomic_datasets.DatasetNotPreparedError` with the command to run when not prepared.

    Example::

        ds = TaxonomicDataset("cifar100_protect", "train", subset="base")
        sampler = FewShotSampler(ds.labels, shots=16)
        image, label = ds[0]; ds.tree.label_names[label]
    """

    def __init__(self, name: str, split: str = "train", root=None, *, subset: str = "all",
                 transform: Optional[Callable] = None, image_root=None):
        self.info = dataset_info(name)
        if split not in self.info.splits:
            raise ValueError(f"split must be one of {list(self.info.splits)} for {name}, got {split!r}")
        _tree_file(subset)
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable or None, got {type(transform).__name__}")
        self.name, self.split, self.subset, self.transform = name, split, subset, transform
        self.root = resolve_root(root)
        marker = check_prepared(name, split, self.root)
        directory = dataset_dir(name, self.root)
        try:
            samples = read_samples(directory / f"gt_{split}.txt")
            relabel = None
            if subset != "all":
                split_info = json.loads((directory / "base_novel.json").read_text(encoding="utf-8"))
                relabel = {int(k): int(v) for k, v in split_info[f"relabel_{subset}"].items()}
        except (OSError, ValueError, KeyError) as exc:
            raise _not_prepared(name, self.root, f"cannot read the prepared files: {exc!r}") from None
        if len(samples) != marker["splits"][split]:
            raise _not_prepared(name, self.root, "sample list and completion marker disagree; rerun with --force")
        self.tree = read_tree(name, subset, self.root)
        if relabel is not None:
            samples = [(p, relabel[l]) for p, l in samples if l in relabel]
        bad = [l for _, l in samples if not 0 <= l < self.tree.num_labels]
        if bad:
            raise _not_prepared(name, self.root, f"labels {sorted(set(bad))[:5]} are not leaves of the tree")
        if image_root is not None:
            self.image_root = Path(image_root).expanduser()
        elif marker.get("image_root_relative"):
            self.image_root = self.root / marker["image_root"]
        else:
            self.image_root = Path(marker["image_root"]).expanduser()
        self.paths = tuple(p for p, _ in samples)
        self.labels = tuple(l for _, l in samples)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        check_index(index, len(self))
        with Image.open(self.image_root / self.paths[index]) as im:
            array = np.asarray(im.convert("RGB"))
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def __repr__(self) -> str:
        return (f"TaxonomicDataset({self.name!r}, split={self.split!r}, subset={self.subset!r}, "
                f"{len(self)} images, {self.tree.num_labels} classes)")
