"""What the preparations of tree alignment's datasets share: reading ProTeCt's files safely, and the driver.

ProTeCt :cite:`wu2024protect` and HypModalAlign :cite:`wu2026modality` ship each dataset's
annotations as files of their repositories (``prepro/data/<dataset>/``):

* ``gt_<split>.txt``: one image a line, ``relative_path,leaf_label,index``;
* ``tree.npy``: ``numpy.save`` of a pickled ``treelibs.Tree`` (a 0-d object array). Its
  attributes: ``nodes`` (name -> ``TreeNode`` with ``name``, ``node_id``, ``depth``, ``parent``
  (a name), ``children`` (child index -> name), ...), ``leaf_nodes`` (label -> name),
  ``intnl_nodes``, ``sublabels``, ``nid2name``; node ids are depth-first, the root is 0;
* ``leaf_nodes.npy``: a pickled dict leaf name -> label;
* ``treecuts_25_multi[_base|_novel].pkl``: ``torch.save`` of ``{idx: [names, tgt_mapping]}``,
  the names being the cut nodes' prompt texts (``prepro_node_name``: digits dropped, "_" -> " ")
  in parameter order (:func:`match_cut` finds the nodes again);
* ``relabeler_{base,novel}.npy`` (HypModalAlign): a pickled dict old label -> new label.

A pickle runs whatever code its globals name, so :func:`load_npy_object` reads these files with
:class:`RestrictedUnpickler`, which resolves only the names in :data:`ALLOWED_GLOBALS`: the
treelibs classes (``Tree``, ``TreeNode``, ``TreeForRareSpecies`` of the modules ``treelibs``,
``loader.treelibs`` and Deep-RTC's ``libs``, mapped to inert stand-ins that only hold attributes), NumPy's array reconstruction, ``collections.defaultdict`` and
``set``; any other global stops the read with :class:`ForbiddenPickleError`. The cut files are
read with ``torch.load(weights_only=True)`` (plain containers only).

:func:`run_taxonomic` drives one preparation as :func:`data_scripts.common.run` does: remove the
old completion marker, fetch or check the downloads, convert (files written under temporary
names, then renamed), write the completion marker last.
"""
from __future__ import annotations

import collections
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from hyro_edu.data import taxonomic_datasets as td
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree, clean_name
from hyro_edu.hierarchy.tree_cuts import TreeCut, save_cuts
from hyro_edu.hierarchy.trees import Tree

from .common import Context, FormatError, ensure_downloads
from .download import Download, ManualStepRequired

__all__ = [
    "TreelibsNode",
    "TreelibsTree",
    "ALLOWED_GLOBALS",
    "ForbiddenPickleError",
    "RestrictedUnpickler",
    "load_npy_object",
    "taxonomy_from_treelibs",
    "read_leaf_nodes",
    "read_relabeler",
    "read_cut_file",
    "match_cut",
    "write_text",
    "write_cuts",
    "TaxonomicResult",
    "TaxonomicPreparer",
    "run_taxonomic",
]


class TreelibsNode:
    """Inert stand-in for ``treelibs.TreeNode``: the unpickled attributes, nothing else."""


class TreelibsTree:
    """Inert stand-in for ``treelibs.Tree`` (and ``TreeForRareSpecies``): the unpickled attributes."""


def _numpy_global(name: str):
    try:
        from numpy._core import multiarray  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core import multiarray
    return getattr(multiarray, name)


_TREELIBS = {"TreeNode": TreelibsNode, "Tree": TreelibsTree, "TreeForRareSpecies": TreelibsTree}
#: ``(module, name)`` -> what it resolves to; every other global is refused.
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    # ProTeCt and HypModalAlign pickle loader/treelibs.py's classes; Deep-RTC (ImageNet's tree) prepro/libs.py's
    **{(module, name): cls for module in ("treelibs", "loader.treelibs", "libs") for name, cls in _TREELIBS.items()},
    **{(module, "_reconstruct"): _numpy_global("_reconstruct")
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _numpy_global("scalar") for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class ForbiddenPickleError(FormatError):
    """A pickle names a global that :data:`ALLOWED_GLOBALS` does not allow."""


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`; anything else raises
    :class:`ForbiddenPickleError` before it is imported."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenPickleError(
                f"the pickle names {module}.{name}, which is not allowed (only ProTeCt's treelibs classes, "
                "NumPy arrays, defaultdict and set are); refusing to load it"
            ) from None


def load_npy_object(path):
    """The object in a ``.npy`` file written by ``numpy.save`` of a pickled object, read safely.

    The header is parsed with ``numpy.lib.format``; the pickled payload is read with
    :class:`RestrictedUnpickler`. A 0-d object array is unwrapped (``.item()``).
    :class:`FormatError` if the file is not such an ``.npy`` file, :class:`ForbiddenPickleError`
    if it names a global that is not allowed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            if not dtype.hasobject:
                raise FormatError(f"{path.name} holds a plain {dtype} array, not a pickled object")
            array = RestrictedUnpickler(f).load()
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise FormatError(f"{path} is not a readable .npy file of a pickled object ({exc})") from None
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise FormatError(f"{path.name}: the payload is not the array its header announces")
    return array.item() if array.shape == () else array


def taxonomy_from_treelibs(obj, source: str = "tree.npy") -> TaxonomicTree:
    """The :class:`hyro_edu.hierarchy.taxonomic_tree.TaxonomicTree` of an unpickled ``treelibs.Tree``.

    Nodes in ``node_id`` order (ProTeCt's depth-first ids; checked), parents from each node's
    ``parent`` name; the labels must be the ``leaf_nodes`` in order. :class:`FormatError` naming
    ``source`` otherwise.
    """
    nodes = getattr(obj, "nodes", None)
    leaf_nodes = getattr(obj, "leaf_nodes", None)
    if not isinstance(obj, TreelibsTree) or not isinstance(nodes, dict) or not isinstance(leaf_nodes, dict):
        raise FormatError(f"{source} does not hold a treelibs.Tree with nodes and leaf_nodes")
    try:
        ordered = sorted(nodes.values(), key=lambda n: int(n.node_id))
        if [int(n.node_id) for n in ordered] != list(range(len(ordered))):
            raise FormatError(f"{source}: node ids are not 0..{len(ordered) - 1}")
        names = tuple(str(n.name) for n in ordered)
        parents = tuple(-1 if n.parent is None else int(nodes[n.parent].node_id) for n in ordered)
        tree = TaxonomicTree(Tree(names, parents))
        labels = [str(leaf_nodes[k]) for k in range(len(leaf_nodes))]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{source}: the treelibs.Tree is inconsistent ({exc!r})") from None
    if tree.tree_of_dfs != tuple(range(len(tree))):
        raise FormatError(f"{source}: the node ids are not depth-first")
    if tuple(labels) != tree.label_names:
        raise FormatError(f"{source}: leaf_nodes are not the leaves in node-id order")
    return tree


def read_leaf_nodes(path) -> dict[str, int]:
    """``leaf_nodes.npy``: leaf name -> label; :class:`FormatError` if it is not such a dict."""
    obj = load_npy_object(path)
    if not isinstance(obj, dict) or not all(isinstance(k, str) and int(v) == v for k, v in obj.items()):
        raise FormatError(f"{Path(path).name} must hold a dict leaf name -> label")
    return {k: int(v) for k, v in obj.items()}


def read_relabeler(path) -> dict[int, int]:
    """``relabeler_{base,novel}.npy``: old label -> new label; :class:`FormatError` otherwise."""
    obj = load_npy_object(path)
    if not isinstance(obj, dict):
        raise FormatError(f"{Path(path).name} must hold a dict old label -> new label")
    return {int(k): int(v) for k, v in obj.items()}


def read_cut_file(path) -> list[tuple[tuple[str, ...], list[int]]]:
    """A ``treecuts_*.pkl`` file: per cut (in key order) its names and stored ``tgt_mapping``.

    Read with ``torch.load(weights_only=True)``, which admits plain containers only.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        cuts = [(tuple(str(n) for n in data[k][0]), [int(m) for m in data[k][1]]) for k in sorted(data)]
    except Exception as exc:  # torch raises several types for a foreign or unsafe file
        raise FormatError(f"{Path(path).name} is not a tree-cut file ({type(exc).__name__}: {exc})") from None
    return cuts


def write_text(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) atomically: a temporary name, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def match_cut(tree: TaxonomicTree, names: Sequence[str], mapping: Sequence[int], source: str = "the cut") -> TreeCut:
    """The cut of ``tree`` that a stored ProTeCt cut describes: prompt ``names`` and ``tgt_mapping``.

    ProTeCt stores a cut as the prompt texts of its nodes
    (:func:`hyro_edu.hierarchy.taxonomic_tree.clean_name` of the node names, in parameter order)
    and the cut index of every leaf label. The ``k``-th node is the one whose leaves are exactly
    the labels mapped to ``k`` and whose prompt text is ``names[k]`` (several nodes of a chain
    share their leaves; the text tells them apart). :class:`FormatError` naming ``source`` when no
    node or several fit, or when the rebuilt cut's mapping differs from the stored one.
    """
    mapping = [int(m) for m in mapping]
    if len(mapping) != tree.num_labels or sorted(set(mapping)) != list(range(len(names))):
        raise FormatError(f"{source}: the stored mapping must send the {tree.num_labels} leaves onto "
                          f"{len(names)} cut indices")
    by_leaves: dict = {}
    for v, row in enumerate(tree.codewords.tolist(), start=1):
        by_leaves.setdefault(frozenset(l for l, bit in enumerate(row) if bit), []).append(v)
    nodes = []
    for k, name in enumerate(names):
        group = frozenset(l for l, m in enumerate(mapping) if m == k)
        fits = [v for v in by_leaves.get(group, []) if clean_name(tree.names[v]) == name]
        if len(fits) != 1:
            raise FormatError(f"{source}: {len(fits)} nodes of the tree fit cut entry {k} ({name!r})")
        nodes.append(fits[0])
    try:
        cut = TreeCut.from_nodes(tree, nodes)
    except ValueError as exc:
        raise FormatError(f"{source}: {exc}") from None
    if list(cut.mapping) != mapping or [clean_name(n) for n in cut.names] != list(names):
        raise FormatError(f"{source}: the stored mapping differs from the one its names give")
    return cut


def write_cuts(cut_file: Path, tree: TaxonomicTree, out: Path, source: str) -> int:
    """Convert a ``treecuts_*.pkl`` on ``tree`` into ``out`` (JSON, atomically); return the cut count.

    Every stored cut is matched to the tree's nodes by :func:`match_cut` (which checks the stored
    mapping) and saved with :func:`hyro_edu.hierarchy.tree_cuts.save_cuts` (node names as in the tree).
    """
    cuts = [match_cut(tree, names, mapping, f"{source}, cut {k}")
            for k, (names, mapping) in enumerate(read_cut_file(cut_file))]
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    save_cuts(tmp, cuts, tree)
    os.replace(tmp, out)
    return len(cuts)


@dataclass
class TaxonomicResult:
    """What a conversion produced: samples per split, the files written, the image folder, sources."""

    splits: dict
    files: list
    image_root: str
    image_root_relative: bool
    sources: dict = field(default_factory=dict)


class TaxonomicPreparer:
    """Base class: ``key`` (a :data:`hyro_edu.data.taxonomic_datasets.DATASETS` key), downloads, conversion."""

    key: str = ""

    def downloads(self, ctx: Context) -> Sequence[Download]:
        raise NotImplementedError

    def required_downloads(self, ctx: Context) -> Sequence[Download]:
        """The downloads without which the preparation cannot start (default: all of them)."""
        return self.downloads(ctx)

    def convert(self, ctx: Context) -> TaxonomicResult:
        raise NotImplementedError

    def splits(self, ctx: Context) -> tuple[str, ...]:
        return td.dataset_info(self.key).splits

    def manual_steps(self, ctx: Context) -> list[str]:
        """Unmet requirements other than the downloads (listed by ``--dry-run``); none by default."""
        return []


def run_taxonomic(preparer: TaxonomicPreparer, ctx: Context, *, force: bool = False) -> Optional[Path]:
    """Prepare one taxonomic dataset; return the marker path, or None if it was already prepared."""
    key = preparer.key
    wanted = set(preparer.splits(ctx))
    directory = td.dataset_dir(key, ctx.root)
    if (directory / td.MARKER_NAME).exists() and not force:
        try:
            done = set(td.check_prepared(key, root=ctx.root)["splits"])
        except td.DatasetNotPreparedError:
            done = set()
        if wanted <= done:
            ctx.log(f"{key}: already prepared ({directory}); use --force to redo it")
            return None
    td.clear_prepared(key, ctx.root)
    if force and directory.exists():
        shutil.rmtree(directory)
    steps = preparer.manual_steps(ctx)
    if steps:
        raise ManualStepRequired("\n".join(steps))
    ensure_downloads(preparer.required_downloads(ctx), ctx)
    ctx.log(f"{key}: converting")
    result = preparer.convert(ctx)
    info = td.dataset_info(key)
    for split, count in result.splits.items():
        if not count:
            raise FormatError(f"{key}: the {split} list is empty; is the annotation file complete?")
        expected = info.expected.get(split)
        if expected is not None and count != expected:
            ctx.log(f"note: {key} {split} has {count} samples; the full dataset has {expected}")
    path = td.write_prepared(key, ctx.root, splits=result.splits, files=result.files, image_root=result.image_root,
                             image_root_relative=result.image_root_relative, sources=result.sources)
    ctx.log(f"{key}: done, " + ", ".join(f"{s}: {n}" for s, n in result.splits.items()))
    return path
