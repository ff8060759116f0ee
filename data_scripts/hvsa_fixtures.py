"""Miniature raw files of HVSA's datasets in their real on-disk formats, for tests and offline trials.

:func:`build_hvsa_sources` writes, under one folder, the files the HVSA preparations read, with
the real names and internal layouts but a handful of tiny samples:

* ``ImCLEF07{A,D}_{Train,Test}.arff``: the ARFF syntax of C-HMCNN's files (``@RELATION ehd``,
  80 ``@ATTRIBUTE argK NUMERIC``, ``@ATTRIBUTE class hierarchical`` with repeated, unsorted node
  paths including letters, ``@DATA`` rows ending in ``@``-joined label paths), 20 training and 5
  test rows; one row lists only a leaf, so that the closure under ancestors is exercised;
* ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``: the Cityscapes folder and
  file naming (``gtFine/train/<city>/<city>_000000_000019_gtFine_labelIds.png`` and its
  ``_color``, ``_instanceIds``, ``_polygons.json`` siblings, ``leftImg8bit/...``), with a test
  split that the preparation must skip;
* ``TrainVal_images.zip``, ``TrainVal_parsing_annotations.zip`` (LIP) and
  ``pascal_person_part.zip``;
* ``splits_tiered.zip`` (``splits_tieredImageNet-H/<split>/<wnid>.txt``), a six-node
  ``tiered_imagenet_isa.txt`` and a miniature ILSVRC-2012 folder ``imagenet/`` (``train/<wnid>/``;
  ``val/`` with some images flat and some in ``<wnid>/``).

The expected outputs (``expected``) are written out by hand: worked examples of the mappings,
not computed by the preparation code. Try the pipeline without downloading anything::

    python -m data_scripts.hvsa_fixtures /tmp/hvsa_sources
    python -m data_scripts.prepare --datasets hvsa --root /tmp/hvsa_root \\
        --mirror file:///tmp/hvsa_sources --skip-checksums --imagenet-root /tmp/hvsa_sources/imagenet
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from data_scripts.fixture_files import jpeg_bytes, png_bytes, write_zip

__all__ = ["HvsaFixtures", "IMCLEF_NODES", "arff_text", "build_hvsa_sources"]

#: The fixture hierarchy in C-HMCNN order (depth, then path string) with each node's parent index.
IMCLEF_NODES = (
    ("2", -1), ("4", -1), ("2/1", 0), ("4/1", 1), ("4/a", 1),
    ("2/1/3", 2), ("2/1/5", 2), ("4/1/1", 3), ("4/a/0", 4),
)
#: The header's node list as the real files write it: unsorted, with repeats.
_HEADER = "2,2/1,2/1/3,4,4/1,4/1/1,2,2/1,2/1/5,4,4/a,4/a/0"
#: Label fields of the rows (cycled), and the closed node sets they stand for.
_ROW_LABELS = (
    ("2@2/1@2/1/3", {"2", "2/1", "2/1/3"}),
    ("4@4/1@4/1/1", {"4", "4/1", "4/1/1"}),
    ("2@2/1@2/1/5", {"2", "2/1", "2/1/5"}),
    ("4/a/0", {"4", "4/a", "4/a/0"}),  # only the leaf: the preparation adds the ancestors
)


@dataclass
class HvsaFixtures:
    """``files``: download file name -> path; ``expected``: per dataset what the preparation must produce."""

    files: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    imagenet_root: Optional[Path] = None  # the miniature ILSVRC-2012 folder (train/, val/)


def arff_text(rows, labels, header: str = _HEADER) -> str:
    """An HMC ARFF file: ``rows`` (N, 80) integers, ``labels`` the class fields, ``header`` the node list."""
    lines = ["@RELATION ehd", ""]
    lines += [f"@ATTRIBUTE arg{k} NUMERIC" for k in range(1, 81)]
    lines += [f"@ATTRIBUTE class hierarchical {header}", "", "@DATA"]
    lines += [",".join(str(int(v)) for v in row) + "," + label for row, label in zip(rows, labels)]
    return "\n".join(lines) + "\n"


def _imclef(dest: Path, rng, fs: HvsaFixtures) -> None:
    names = [n for n, _ in IMCLEF_NODES]
    for axis in ("A", "D"):
        expected = {"names": names, "parents": [p for _, p in IMCLEF_NODES]}
        for part, count in (("Train", 20), ("Test", 5)):
            rows = rng.integers(0, 8, (count, 80))
            picks = [_ROW_LABELS[(i + (part == "Test")) % len(_ROW_LABELS)] for i in range(count)]
            header = _HEADER if part == "Train" else ",".join(reversed(_HEADER.split(",")))
            path = dest / f"ImCLEF07{axis}_{part}.arff"
            path.write_text(arff_text(rows, [p[0] for p in picks], header), encoding="utf-8")
            fs.files[path.name] = path
            multi_hot = np.array([[n in p[1] for n in names] for p in picks], dtype=np.uint8)
            expected[part.lower()] = (rows.astype(np.float32), multi_hot)
        fs.expected[f"imclef07{axis.lower()}"] = expected


def _tile(values, height: int, width: int) -> np.ndarray:
    flat = np.resize(np.asarray(values, dtype=np.uint8), height * width)
    return flat.reshape(height, width)


#: Cityscapes labelIds and the trainIds helpers/labels.py gives them (worked examples).
CITYSCAPES_EXAMPLES = {0: 255, 6: 255, 7: 0, 8: 1, 11: 2, 17: 5, 23: 10, 24: 11, 26: 13, 29: 255,
                       31: 16, 33: 18}


def _cityscapes(dest: Path, rng, fs: HvsaFixtures) -> None:
    images, labels = {"README": b"fixture\n", "license.txt": b"fixture\n"}, {"README": b"fixture\n"}
    ids = np.array(list(CITYSCAPES_EXAMPLES), dtype=np.uint8)
    expected = {}
    for split, city, frames in (("train", "aachen", (19, 20)), ("val", "frankfurt", (294,)),
                                ("test", "berlin", (19,))):
        for k, frame in enumerate(frames):
            stem = f"{city}_{k:06d}_{frame:06d}"
            h, w = 6, 8
            raw = _tile(np.roll(ids, k), h, w)
            images[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = png_bytes(
                rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            gt = f"gtFine/{split}/{city}/{stem}_gtFine"
            labels[f"{gt}_labelIds.png"] = png_bytes(raw if split != "test" else np.zeros_like(raw))
            labels[f"{gt}_color.png"] = png_bytes(rng.integers(0, 256, (h, w, 4), dtype=np.uint8))
            labels[f"{gt}_instanceIds.png"] = png_bytes(raw.astype(np.uint16) * 1000)
            labels[f"{gt}_polygons.json"] = json.dumps({"imgHeight": h, "imgWidth": w, "objects": []}).encode()
            if split != "test":
                expected[stem] = (split, np.vectorize(CITYSCAPES_EXAMPLES.get)(raw).astype(np.uint8))
    fs.files["leftImg8bit_trainvaltest.zip"] = write_zip(dest / "leftImg8bit_trainvaltest.zip", images)
    fs.files["gtFine_trainvaltest.zip"] = write_zip(dest / "gtFine_trainvaltest.zip", labels)
    fs.expected["cityscapes"] = expected


def _parsing(rng, num_classes: int, stems_by_split: dict, image_dir, label_dir, fs_expected: dict):
    images, labels = {}, {}
    for split, stems in stems_by_split.items():
        for k, stem in enumerate(stems):
            raw = _tile([(k + j) % num_classes for j in range(num_classes)] + [255], 5, 7)
            images[f"{image_dir(split)}/{stem}.jpg"] = jpeg_bytes(rng, 5, 7)
            labels[f"{label_dir(split)}/{stem}.png"] = png_bytes(raw)
            fs_expected[stem] = (split, raw)
    return images, labels


def _lip(dest: Path, rng, fs: HvsaFixtures) -> None:
    expected = {}
    stems = {"train": ["77_471474", "100034_483681"], "val": ["100034_483681_val"]}
    images, labels = _parsing(rng, 20, stems, lambda s: f"TrainVal_images/{s}_images",
                              lambda s: f"TrainVal_parsing_annotations/{s}_segmentations", expected)
    images["TrainVal_images/train_id.txt"] = "\n".join(stems["train"]).encode()
    images["TrainVal_images/val_id.txt"] = "\n".join(stems["val"]).encode()
    fs.files["TrainVal_images.zip"] = write_zip(dest / "TrainVal_images.zip", images)
    fs.files["TrainVal_parsing_annotations.zip"] = write_zip(dest / "TrainVal_parsing_annotations.zip", labels)
    fs.expected["lip"] = expected


def _ppp(dest: Path, rng, fs: HvsaFixtures) -> None:
    expected = {}
    stems = {"train": ["2008_000003", "2008_000008"], "test": ["2008_000034"]}
    images, labels = _parsing(rng, 7, stems, lambda s: "pascal_person_part/JPEGImages",
                              lambda s: "pascal_person_part/SegmentationPart", expected)
    extra = {"pascal_person_part/train_id.txt": "\n".join(stems["train"]) + "\n",
             "pascal_person_part/val_id.txt": "\n".join(stems["test"]) + "\n"}
    members = {**images, **labels, **{k: v.encode() for k, v in extra.items()}}
    fs.files["pascal_person_part.zip"] = write_zip(dest / "pascal_person_part.zip", members)
    fs.expected["pascal_person_part"] = expected


#: The fixture isa file (lines deliberately not sorted) and its tree, breadth-first with sorted children.
TIERED_ISA = "n00001930 n00020827\nn00002684 n01443537\nn00001930 n00002684\nn00020827 n07565083\n" \
             "n00002684 n01440764\n"
TIERED_TREE = (("n00001930", "n00002684", "n00020827", "n01440764", "n01443537", "n07565083"),
               (-1, 0, 0, 1, 1, 2))


def _tiered(dest: Path, rng, fs: HvsaFixtures) -> None:
    classes = ["n01440764", "n01443537", "n07565083"]
    imagenet = dest / "imagenet"
    members, expected = {}, {"train": [], "val": [], "test": []}
    val_number = 0
    for label, wnid in enumerate(classes):
        train_files = [f"{wnid}_{k}.JPEG" for k in (10026, 10027)]
        for f in train_files:
            (imagenet / "train" / wnid).mkdir(parents=True, exist_ok=True)
            (imagenet / "train" / wnid / f).write_bytes(jpeg_bytes(rng, 9, 13))
            expected["train"].append((f"train/{wnid}/{f}", label))
        members[f"splits_tieredImageNet-H/train/{wnid}.txt"] = "\n".join(train_files) + "\n"
        for split in ("val", "test"):
            val_number += 1
            f = f"ILSVRC2012_val_{val_number:08d}.JPEG"
            # the first class's val images are sorted into val/<wnid>/, the others lie flat in val/
            where = f"val/{wnid}/{f}" if label == 0 else f"val/{f}"
            (imagenet / where).parent.mkdir(parents=True, exist_ok=True)
            (imagenet / where).write_bytes(jpeg_bytes(rng, 7, 5))
            members[f"splits_tieredImageNet-H/{split}/{wnid}.txt"] = f + "\n"
            expected[split].append((where, label))
    fs.files["splits_tiered.zip"] = write_zip(dest / "splits_tiered.zip", members)
    (dest / "tiered_imagenet_isa.txt").write_text(TIERED_ISA, encoding="utf-8")
    fs.files["tiered_imagenet_isa.txt"] = dest / "tiered_imagenet_isa.txt"
    fs.imagenet_root = imagenet
    fs.expected["tiered_imagenet_h"] = expected


def build_hvsa_sources(dest, *, seed: int = 0) -> HvsaFixtures:
    """Write every HVSA fixture file into ``dest``; return their paths and the expected outputs."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fs = HvsaFixtures()
    for build in (_imclef, _cityscapes, _lip, _ppp, _tiered):
        build(dest, rng, fs)
    return fs


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m data_scripts.hvsa_fixtures DEST", file=sys.stderr)
        sys.exit(2)
    files = build_hvsa_sources(sys.argv[1]).files
    print(f"wrote {len(files)} files into {sys.argv[1]}")
