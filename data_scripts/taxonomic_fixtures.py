"""Miniature raw files of tree alignment's datasets in their real on-disk formats, for tests and offline trials.

:func:`build_taxonomic_sources` writes, under one folder, every file the preparations of
:mod:`data_scripts.taxonomic` read, with the real names and formats but tiny trees and images:

* per dataset ``<key>_tree.npy`` (``numpy.save`` of a pickled ``treelibs.Tree``, built from
  :class:`FixtureTree`/:class:`FixtureNode`, minimal stand-ins with the attributes of ProTeCt's
  classes, pickled under the module name ``treelibs`` as the real files are),
  ``<key>_leaf_nodes.npy`` (name -> label), ``<key>_gt_{train,test}.txt``
  ("path,label,index"), ``<key>_treecuts_25_multi[_base|_novel].pkl`` (``torch.save`` of
  ``{idx: [prompt texts, tgt_mapping]}``, the texts cleaned as ``prepro_node_name`` cleans
  them: "physical_entity" is stored as "physical entity") and ``<key>_relabeler_{base,novel}.npy``;
* ``cifar-100-python.tar.gz`` (``cifar-100-python/{meta,train,test}``, pickled dicts with
  byte-string keys, as the real Python-2 pickles read with ``encoding="bytes"``; the training
  batch repeats a file name, as the real one does);
* ``SUN397.tar.gz`` (``SUN397/<letter>/<class>[/<sub>]/sun_*.jpg``);
* ``imagenet/`` (``train/<wnid>/*.JPEG``; ``val/`` with one class in ``<wnid>/`` and the others
  flat) and ``rare_species/`` (a Hugging Face copy: ``metadata.csv`` and ``dataset/.../*.jpg``).

The CIFAR tree is the design notes' 7-node example with CIFAR names: root -> {physical_entity,
forest}; physical_entity -> {mountain, object}; object -> {plain, cloud} (depth-first ids 0-6,
labels mountain 0, plain 1, cloud 2, forest 3; forest is a depth-1 leaf). Its base/novel split,
worked by hand: 4 leaves, quota 2; parents in order of their first leaf physical_entity (1 leaf),
object (2), root (1) start at round(0.5) = 0, round(1) = 1, round(0.5) = 0 (halves to even), total
1; one more goes to the largest group, object: base = {plain, cloud} = labels (1, 2), novel =
(0, 3). Try the pipeline offline::

    python -m data_scripts.taxonomic_fixtures /tmp/ta_sources
    python -m data_scripts.prepare --datasets tree_alignment --root /tmp/ta_root \\
        --mirror file:///tmp/ta_sources --skip-checksums --imagenet-root /tmp/ta_sources/imagenet \\
        --rare-species-root /tmp/ta_sources/rare_species
"""
from __future__ import annotations

import csv
import pickle
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_scripts.fixture_files import jpeg_bytes, write_tar

__all__ = [
    "FixtureNode", "FixtureTree", "CIFAR_TREE", "CIFAR_BASE_NOVEL", "treelibs_tree", "save_treelibs_tree",
    "TaxonomicFixtures", "build_taxonomic_sources",
]


class FixtureNode:
    """A minimal stand-in for ``treelibs.TreeNode``: the attributes the real pickles carry."""

    def __init__(self, name, path, depth, node_id, child_idx=-1, parent=None):
        self.name, self.path, self.depth, self.node_id = name, path, depth, node_id
        self.children, self.child_idx, self.param_list = {}, child_idx, []
        self.parent, self.codeword = parent, None


class FixtureTree:
    """A minimal stand-in for ``treelibs.Tree``: ``root``, ``depth``, ``nodes``, ``nid2name``,
    ``intnl_nodes``, ``leaf_nodes`` and ``sublabels``, filled as ProTeCt fills them."""


#: The CIFAR fixture tree (nested, children in order).
CIFAR_TREE = {"physical_entity": {"mountain": None, "object": {"plain": None, "cloud": None}}, "forest": None}
#: Its base/novel split, worked by hand (module docstring): old label -> new label.
CIFAR_BASE_NOVEL = {"base": {1: 0, 2: 1}, "novel": {0: 0, 3: 1}}


def treelibs_tree(children: dict) -> FixtureTree:
    """A :class:`FixtureTree` of the nested ``children`` (name -> sub-dict or None), ids depth-first."""
    tree = FixtureTree()
    tree.root = FixtureNode("root", "root", 0, 0)
    tree.nodes, tree.nid2name, tree.depth = {"root": tree.root}, {0: "root"}, 0

    def build(node, sub, depth):
        for name, grand in (sub or {}).items():
            child = FixtureNode(name, f"{node.path}/{name}", depth + 1, len(tree.nodes), len(node.children), node.name)
            node.children[len(node.children)] = name
            tree.nodes[name] = child
            tree.nid2name[child.node_id] = name
            tree.depth = max(tree.depth, depth + 1)
            build(child, grand, depth + 1)

    build(tree.root, children, 0)
    ordered = sorted(tree.nodes.values(), key=lambda n: n.node_id)
    tree.intnl_nodes = {i: n.name for i, n in enumerate(n for n in ordered if n.children)}
    tree.leaf_nodes = {i: n.name for i, n in enumerate(n for n in ordered if not n.children)}
    inid = {name: i for i, name in tree.intnl_nodes.items()}
    tree.sublabels = -np.ones([len(tree.leaf_nodes), len(tree.intnl_nodes)])
    for label, name in tree.leaf_nodes.items():
        node = tree.nodes[name]
        while node.parent is not None:
            tree.sublabels[label, inid[node.parent]] = node.child_idx
            node = tree.nodes[node.parent]
    return tree


def save_treelibs_tree(tree: FixtureTree, path: Path) -> None:
    """``numpy.save`` ``tree`` as ProTeCt does, its classes pickled as ``treelibs.Tree``/``treelibs.TreeNode``."""
    module = types.ModuleType("treelibs")
    saved = {cls: (cls.__module__, cls.__qualname__) for cls in (FixtureTree, FixtureNode)}
    module.Tree, module.TreeNode = FixtureTree, FixtureNode
    previous = sys.modules.get("treelibs")
    sys.modules["treelibs"] = module
    try:
        for cls, name in ((FixtureTree, "Tree"), (FixtureNode, "TreeNode")):
            cls.__module__, cls.__qualname__ = "treelibs", name
        array = np.empty((), dtype=object)
        array[()] = tree
        np.save(path, array, allow_pickle=True)
    finally:
        for cls, (mod, qual) in saved.items():
            cls.__module__, cls.__qualname__ = mod, qual
        if previous is None:
            sys.modules.pop("treelibs", None)
        else:
            sys.modules["treelibs"] = previous


def _save_cuts(entries, path: Path) -> None:
    """``torch.save`` of ``{idx: [prompt texts, tgt_mapping]}`` as ``sample_treecuts.py`` writes it
    (the texts are the node names cleaned by ``prepro_node_name``)."""
    from hyro_edu.hierarchy.taxonomic_tree import clean_name

    torch.save({i: [tuple(clean_name(n) for n in names), list(m)] for i, (names, m) in enumerate(entries)}, path)


def _save_dict(obj: dict, path: Path) -> None:
    array = np.empty((), dtype=object)
    array[()] = obj
    np.save(path, array, allow_pickle=True)


@dataclass
class TaxonomicFixtures:
    """``files``: download file name -> path; ``expected``: per dataset what the preparation must produce."""

    files: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    imagenet_root: Path = None
    rare_species_root: Path = None


def _labels_and_paths(tree: FixtureTree):
    """Leaf label -> name, and name -> parent-path folder (the hierarchical folder of the leaf)."""
    def folder(name):
        parts = []
        node = tree.nodes[name]
        while node.parent is not None:
            parts.append(node.name)
            node = tree.nodes[node.parent]
        return "/".join(reversed(parts))
    return tree.leaf_nodes, {n: folder(n) for n in tree.leaf_nodes.values()}


def _annotations(dest: Path, key: str, tree: FixtureTree, lists: dict, cuts: dict, relabel: dict,
                 fs: TaxonomicFixtures) -> None:
    """Write the annotation files of ``key``: tree, leaf nodes, lists, cut files, relabelers."""
    def put(name, writer):
        path = dest / f"{key}_{name}"
        writer(path)
        fs.files[path.name] = path

    put("tree.npy", lambda p: save_treelibs_tree(tree, p))
    put("leaf_nodes.npy", lambda p: _save_dict({v: k for k, v in tree.leaf_nodes.items()}, p))
    for split, pairs in lists.items():
        put(f"gt_{split}.txt", lambda p, pairs=pairs: p.write_text(
            "".join(f"{path},{label},{i}\n" for i, (path, label) in enumerate(pairs)), encoding="utf-8"))
    for suffix, entries in cuts.items():
        put(f"treecuts_25_multi{suffix}.pkl", lambda p, entries=entries: _save_cuts(entries, p))
    for subset, mapping in relabel.items():
        put(f"relabeler_{subset}.npy", lambda p, mapping=mapping: _save_dict(dict(mapping), p))


def _cuts_of(leaves: list, groups: list) -> list:
    """Two cuts of a tree: all leaves, and ``groups`` (names, one mapping entry per leaf, worked by hand)."""
    return [(leaves, list(range(len(leaves)))), groups]


def _cifar(dest: Path, rng, fs: TaxonomicFixtures) -> None:
    tree = treelibs_tree(CIFAR_TREE)
    labels, folders = _labels_and_paths(tree)
    fine = [f"filler_{i}" for i in range(100)]
    positions = {"mountain": 49, "plain": 60, "cloud": 23, "forest": 33}
    for name, pos in positions.items():
        fine[pos] = name
    batches, lists, expected = {}, {}, {}
    for split, count in (("train", 3), ("test", 2)):
        data, names, fine_labels, pairs = [], [], [], []
        for label, leaf in labels.items():
            for k in range(count):
                image = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
                cifar_name = f"{leaf}_s_{k:06d}.png"
                data.append(image.reshape(-1))
                names.append(cifar_name.encode())
                fine_labels.append(positions[leaf])
                rel = f"{folders[leaf]}/{split}_{cifar_name}"
                pairs.append((rel, label))
                expected[rel] = image.transpose(1, 2, 0)
        if split == "train":
            # a repeated file name: an entry of another class first, then the leaf's own entry
            dup = names[0]
            data.insert(0, rng.integers(0, 256, 3072, dtype=np.uint8))
            names.insert(0, dup)
            fine_labels.insert(0, positions["forest"])
        batches[split] = {b"batch_label": f"{split} batch".encode(), b"filenames": names,
                          b"fine_labels": fine_labels, b"coarse_labels": [0] * len(names),
                          b"data": np.stack(data)}
        lists[split] = pairs
    batches["meta"] = {b"fine_label_names": [n.encode() for n in fine],
                       b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)]}
    # protocol 3 keeps bytes as bytes (protocol 2 from Python 3 would name _codecs.encode, which the
    # real Python-2 files do not and the restricted reader refuses)
    members = {f"cifar-100-python/{name}": pickle.dumps(batch, protocol=3) for name, batch in batches.items()}
    fs.files["cifar-100-python.tar.gz"] = write_tar(dest / "cifar-100-python.tar.gz", members, "w:gz")
    leaves = ["mountain", "plain", "cloud", "forest"]
    cuts = {"": _cuts_of(leaves, (("physical_entity", "forest"), [0, 0, 0, 1])),
            "_base": _cuts_of(["plain", "cloud"], (("physical_entity",), [0, 0])),
            "_novel": _cuts_of(["mountain", "forest"], (("physical_entity", "forest"), [0, 1]))}
    _annotations(dest, "cifar100_protect", tree, lists, cuts, CIFAR_BASE_NOVEL, fs)
    fs.expected["cifar100_protect"] = {"images": expected, "lists": lists}


_SUN_TREE = {"indoor": {"shopping_and_dining": {"bakery_shop": None, "bar": None}},
             "outdoor_natural": {"forest,_field,_jungle": {"orchard": None, "forest_needleleaf": None}}}
_SUN_PATHS = {"bakery_shop": "b/bakery/shop", "bar": "b/bar", "orchard": "o/orchard",
              "forest_needleleaf": "f/forest/needleleaf"}


def _sun(dest: Path, rng, fs: TaxonomicFixtures) -> None:
    tree = treelibs_tree(_SUN_TREE)
    labels, _ = _labels_and_paths(tree)
    members, lists = {"SUN397/README.txt": b"fixture\n"}, {"train": [], "test": []}
    for label, leaf in labels.items():
        for split in ("train", "test"):
            for k in range(2):
                rel = f"{_SUN_PATHS[leaf]}/sun_{split}{k}{leaf[:4]}.jpg"
                members[f"SUN397/{rel}"] = jpeg_bytes(rng, 6, 9)
                lists[split].append((rel, label))
    fs.files["SUN397.tar.gz"] = write_tar(dest / "SUN397.tar.gz", members, "w:gz")
    leaves = list(labels.values())
    cuts = {"": _cuts_of(leaves, (("indoor", "outdoor_natural"), [0, 0, 1, 1]))}
    _annotations(dest, "sun324", tree, lists, cuts, {}, fs)
    fs.expected["sun324"] = {"lists": lists}


_IMAGENET_TREE = {"fish": {"tench": None, "goldfish": None}, "plate": None}
_WNIDS = {"tench": "n01440764", "goldfish": "n01443537", "plate": "n07579787"}


def _imagenet(dest: Path, rng, fs: TaxonomicFixtures) -> None:
    tree = treelibs_tree(_IMAGENET_TREE)
    labels, _ = _labels_and_paths(tree)
    root = dest / "imagenet"
    lists, expected, number = {"train": [], "test": []}, {"train": [], "test": []}, 0
    for label, leaf in labels.items():
        wnid = _WNIDS[leaf]  # the lists name ImageNet's folders (wnids), the tree its own node names
        for k in range(2):
            rel = f"train/{wnid}/{wnid}_{k}.JPEG"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(jpeg_bytes(rng, 7, 5))
            lists["train"].append((rel, label))
            expected["train"].append((rel, label))
            number += 1
            name = f"ILSVRC2012_val_{number:08d}.JPEG"
            where = f"val/{wnid}/{name}" if label == 0 else f"val/{name}"  # one class sorted, the others flat
            (root / where).parent.mkdir(parents=True, exist_ok=True)
            (root / where).write_bytes(jpeg_bytes(rng, 5, 7))
            lists["test"].append((f"val/{wnid}/{name}", label))
            expected["test"].append((where, label))
    leaves = list(labels.values())
    cuts = {"": _cuts_of(leaves, (("fish", "plate"), [0, 0, 1]))}
    _annotations(dest, "imagenet_protect", tree, lists, cuts, {}, fs)
    fs.imagenet_root = root
    fs.expected["imagenet_protect"] = expected


_SPECIES = (
    ("Chordata", "Aves", "Passeriformes", "Turdidae", "Myadestes", "obscurus"),
    ("Chordata", "Mammalia", "Primates", "Indriidae", "Propithecus", "deckenii"),
    ("Mollusca", "Bivalvia", "Unionida", "Unionidae", "Cyclonaias", "tuberculata"),
)


def _rare_species(dest: Path, rng, fs: TaxonomicFixtures) -> None:
    nested: dict = {}
    for ranks in _SPECIES:  # node names concatenate the path, as HypModalAlign's TreeForRareSpecies
        level = nested
        for depth in range(1, 6):
            level = level.setdefault("_".join(r.lower() for r in ranks[:depth]), {})
        level["_".join(r.lower() for r in ranks)] = None
    tree = treelibs_tree(nested)
    labels, _ = _labels_and_paths(tree)
    root = dest / "rare_species"
    rows, lists, expected = [], {"train": [], "test": []}, {"train": [], "test": []}
    for label, leaf in labels.items():
        ranks = next(r for r in _SPECIES if "_".join(x.lower() for x in r) == leaf)
        for k, split in enumerate(("train", "train", "test")):
            uid = f"{label:08d}-0000-4000-8000-{k:012d}"
            file_name = f"dataset/{ranks[4]}_{ranks[5]}/{uid}.jpg"
            (root / file_name).parent.mkdir(parents=True, exist_ok=True)
            (root / file_name).write_bytes(jpeg_bytes(rng, 8, 6))
            rows.append({"rarespecies_id": uid, "eol_content_id": str(1000 + k), "kingdom": "Animalia",
                         **dict(zip(("phylum", "class", "order", "family", "genus", "species"), ranks)),
                         "file_name": file_name})
            lists[split].append((f"{leaf}/{uid}.jpg", label))
            expected[split].append((file_name, label))
    with open(root / "metadata.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    leaves = list(labels.values())
    cuts = {"": _cuts_of(leaves, (("chordata", "mollusca"), [0, 0, 1]))}
    _annotations(dest, "rare_species", tree, lists, cuts, {}, fs)
    fs.rare_species_root = root
    fs.expected["rare_species"] = expected


def _base_novel_files(dest: Path, fs: TaxonomicFixtures) -> None:
    """HypModalAlign's relabelers and base/novel cut files of the SUN, ImageNet and Rare Species
    fixtures, from the split rule (:func:`hyro_edu.data.taxonomic_datasets.base_novel_split`) and
    two cuts per subtree (its leaves; its root's children)."""
    from data_scripts.taxonomic_common import load_npy_object, taxonomy_from_treelibs
    from hyro_edu.data import taxonomic_datasets as td
    from hyro_edu.hierarchy.tree_cuts import TreeCut

    for key in ("sun324", "imagenet_protect", "rare_species"):
        tree = taxonomy_from_treelibs(load_npy_object(fs.files[f"{key}_tree.npy"]))
        split = td.base_novel_split(tree)
        for subset, labels, mapping in (("base", split.base, split.relabel_base),
                                        ("novel", split.novel, split.relabel_novel)):
            path = dest / f"{key}_relabeler_{subset}.npy"
            _save_dict(mapping, path)
            fs.files[path.name] = path
            sub, _ = td.subtree(tree, labels)
            top = TreeCut.from_nodes(sub, sub.children(0))
            entries = [(sub.label_names, list(range(sub.num_labels))), (top.names, list(top.mapping))]
            path = dest / f"{key}_treecuts_25_multi_{subset}.pkl"
            _save_cuts(entries, path)
            fs.files[path.name] = path
        fs.expected[f"{key}_split"] = (split.base, split.novel)


def build_taxonomic_sources(dest, *, seed: int = 0) -> TaxonomicFixtures:
    """Write every fixture file of tree alignment's datasets into ``dest``; return their paths and
    the expected outputs."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fs = TaxonomicFixtures()
    for build in (_cifar, _sun, _imagenet, _rare_species):
        build(dest, rng, fs)
    _base_novel_files(dest, fs)
    return fs


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m data_scripts.taxonomic_fixtures DEST", file=sys.stderr)
        sys.exit(2)
    files = build_taxonomic_sources(sys.argv[1]).files
    print(f"wrote {len(files)} files into {sys.argv[1]}")
