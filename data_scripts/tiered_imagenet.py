"""tieredImageNet-H (Bertinetto et al., CVPR 2020, "Making Better Mistakes"): 608 ILSVRC-2012 classes.

Two files come from the making-better-mistakes repository (raw.githubusercontent.com, pinned
commit, ``master`` as fallback; no checksum known): ``dataset_splits/splits_tiered.zip`` and
``data/tiered_imagenet_isa.txt``. The zip unpacks into ``splits_tieredImageNet-H/<split>/<wnid>.txt``
(``train``, ``val``, ``test``), each file listing the JPEG file names of one class: ``train`` from
the ILSVRC-2012 training images (425,600, 700 per class), ``val`` and ``test`` from the ILSVRC-2012
validation images (15,200 each, 25 per class). The isa file has one ``parent child`` line per edge
(842 for the real file: 843 nodes, root ``n00001930``, 608 leaves).

The images come from an ImageNet the user provides (an image-net.org account and the
non-commercial terms are needed): ``--imagenet-root DIR``, a folder with ``train/<wnid>/*.JPEG``
(as ``ILSVRC2012_img_train.tar`` unpacks, with its per-class tars unpacked) and ``val/`` holding
the 50,000 validation JPEGs either flat (``val/ILSVRC2012_val_00000001.JPEG``, as
``ILSVRC2012_img_val.tar`` unpacks) or sorted into ``val/<wnid>/``. Nothing is copied or resized:
``manifest.json`` lists, per split, ``[path relative to the ImageNet folder, class index]``, and
:class:`hyro_edu.data.hierarchical_datasets.TieredImageNetH` stretches each image to 224 x 224
when it reads it (making-better-mistakes resized by stretching).

Classes are the wnids of the split files, sorted; each must be a leaf of the isa tree (otherwise
the preparation stops: a label outside the hierarchy). ``hierarchy.json`` holds the tree
(breadth-first, children sorted: :func:`~hyro_edu.data.hierarchical_datasets.isa_tree`), the
classes and their tree nodes. The LCA distances the repository also ships are not used; tree
distances come from the tree (``Tree.distances``).
"""
from __future__ import annotations

from pathlib import Path

from hyro_edu.data import hierarchical_datasets as hd

from .common import Context, FormatError
from .download import Download, ManualStepRequired
from .hvsa_common import HierarchicalPreparer, HierarchicalResult, out_dir, save_json

__all__ = ["MBM_COMMIT", "SPLITS", "ISA", "IMAGENET_MANUAL", "read_isa", "read_splits", "TieredImageNetH"]

#: The commit of fiveai/making-better-mistakes fetched first.
MBM_COMMIT = "f1ab1ad7e0d8261c2a3c65a82994524d103a19f7"
_RAW = "https://raw.githubusercontent.com/fiveai/making-better-mistakes"
SPLITS = Download(
    "splits_tiered.zip",
    tuple(f"{_RAW}/{ref}/dataset_splits/splits_tiered.zip" for ref in (MBM_COMMIT, "master")),
    extract_to="tiered_imagenet_h",
    description="tieredImageNet-H splits (making-better-mistakes)",
)
ISA = Download(
    "tiered_imagenet_isa.txt",
    tuple(f"{_RAW}/{ref}/data/tiered_imagenet_isa.txt" for ref in (MBM_COMMIT, "master")),
    description="tieredImageNet-H hierarchy, one 'parent child' line per edge (making-better-mistakes)",
)
IMAGENET_MANUAL = (
    "tieredImageNet-H needs the ILSVRC-2012 train and val images: with an image-net.org account, download "
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, unpack them into DIR/train/<wnid>/*.JPEG (unpack "
    "the per-class tars too) and DIR/val/ (flat or in <wnid>/ folders), and pass --imagenet-root DIR."
)
_SPLIT_NAMES = ("train", "val", "test")


def read_isa(path) -> list[tuple[str, str]]:
    """The ``(parent, child)`` lines of an isa file; :class:`FormatError` for a line that is not two names."""
    edges = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise FormatError(f"{Path(path).name}, line {number}: expected 'parent child', got {line[:60]!r}")
        edges.append((parts[0], parts[1]))
    if not edges:
        raise FormatError(f"{path} holds no 'parent child' lines")
    return edges


def read_splits(folder: Path) -> dict[str, dict[str, list[str]]]:
    """``{split: {wnid: [file names]}}`` from ``splits_tieredImageNet-H/<split>/<wnid>.txt``."""
    found = sorted(p for p in folder.rglob("splits_tieredImageNet-H") if p.is_dir()) if folder.is_dir() else []
    if len(found) != 1:
        raise FormatError(f"{folder} should hold one splits_tieredImageNet-H folder, found {len(found)}: "
                          f"is {SPLITS.filename} complete?")
    splits = {}
    for split in _SPLIT_NAMES:
        files = sorted((found[0] / split).glob("*.txt"))
        if not files:
            raise FormatError(f"{found[0] / split} holds no <wnid>.txt files: is {SPLITS.filename} complete?")
        splits[split] = {
            f.stem: [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
            for f in files
        }
    return splits


class TieredImageNetH(HierarchicalPreparer):
    key = "tiered_imagenet_h"

    def downloads(self, ctx):
        return [SPLITS, ISA]

    def manual_steps(self, ctx: Context) -> list[str]:
        """What ``--dry-run`` lists besides the downloads: the ImageNet folder, if not given or incomplete."""
        root = ctx.imagenet_root
        if root is None:
            return [f"ImageNet (--imagenet-root): MANUAL STEP: {IMAGENET_MANUAL}"]
        if not (root / "train").is_dir() or not (root / "val").is_dir():
            return [f"ImageNet (--imagenet-root {root}): MANUAL STEP: {root} has no train/ and val/ folders. "
                    + IMAGENET_MANUAL]
        return []

    def convert(self, ctx: Context) -> HierarchicalResult:
        steps = self.manual_steps(ctx)
        if steps:
            raise ManualStepRequired(steps[0])
        try:
            tree = hd.isa_tree(read_isa(ctx.file(ISA)))
        except ValueError as exc:
            raise FormatError(f"{ISA.filename}: {exc}") from None
        splits = read_splits(ctx.raw / "tiered_imagenet_h")
        classes = sorted(splits["train"])
        leaves = {tree.names[i] for i in tree.leaves}
        for split, per_class in splits.items():
            outside = sorted(set(per_class) - leaves)
            if outside:
                raise FormatError(f"{SPLITS.filename}: {split} classes {outside[:5]} are outside the hierarchy "
                                  f"(not leaves of {ISA.filename})")
            if sorted(per_class) != classes:
                raise FormatError(f"{SPLITS.filename}: the {split} classes differ from the train classes")
        index = {name: i for i, name in enumerate(tree.names)}
        imagenet = ctx.imagenet_root
        manifest, missing = {}, []
        for split, per_class in splits.items():
            pairs = []
            for label, wnid in enumerate(classes):
                for file in per_class[wnid]:
                    candidates = ([f"train/{wnid}/{file}"] if split == "train"
                                  else [f"val/{wnid}/{file}", f"val/{file}"])
                    found = next((c for c in candidates if (imagenet / c).is_file()), None)
                    if found is None:
                        missing.append(candidates[0])
                    else:
                        pairs.append((found, label))
            manifest[split] = pairs
        if missing:
            raise FormatError(f"{len(missing)} tieredImageNet-H images are missing from {imagenet}, e.g. "
                              f"{', '.join(missing[:3])}. " + IMAGENET_MANUAL)
        out = out_dir(self.key, ctx)
        save_json({"names": list(tree.names), "parents": list(tree.parents), "classes": classes,
                   "leaf_nodes": [index[c] for c in classes]}, out / "hierarchy.json")
        save_json({"class_names": classes, "sources": "the wnids of splits_tieredImageNet-H/train, sorted"},
                  out / "classes.json")
        save_json({s: [list(p) for p in pairs] for s, pairs in manifest.items()}, out / "manifest.json",
                  indent=None)  # 455,000 entries
        sources = {"imagenet_root": str(imagenet), "files": [SPLITS.urls[0], ISA.urls[0]],
                   "tree": f"{len(tree)} nodes, {len(tree.leaves)} leaves, root {tree.names[0]}"}
        return HierarchicalResult({s: len(p) for s, p in manifest.items()},
                                  ["hierarchy.json", "classes.json", "manifest.json"], sources)
