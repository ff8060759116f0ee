"""Miniature raw datasets in the real on-disk formats, for tests and for trying the pipeline offline.

:func:`build_sources` writes, under one folder, every file the preparations download, with the real
file names and internal layouts but a handful of tiny images: COCO-Stuff stuffthingmaps with the
id gaps, ADEChallenge labels, ADE20K-full ``*_seg.png`` with the R/G class encoding and an
``index_ade20k.pkl``, a PASCAL-in-Detail JSON with compressed RLE masks, PASCAL-Context ``.mat``
label maps, VOC ``SegmentationClassAug`` palette PNGs and the devkit lists. Class names are
synthetic ("fixture-...") so that a test can tell names read from metadata from names written in
code. CAT-Seg's vocabulary files (``coco.json``, ``ade150.json``, ``ade847.json``,
``pc59.json``, ``pc459.json``, ``voc20.json``, ``voc20b.json``) are JSON lists in the real format
whose synthetic names differ from the metadata names where the real ones do (PC-59's "table" is
"diningtable" in ``pc59.json``; ADE20K-150 keeps only first synonyms, one with a trailing space)
and elsewhere, so a test can tell which source the preparation used. Each label uses hand-picked
raw values whose converted values are listed in ``expected`` (worked examples of the official
mappings, not computed by the preparation code).

Try the pipeline without downloading anything::

    python -m data_scripts.fixtures /tmp/fixture_sources
    python -m data_scripts.prepare --datasets all --root /tmp/fixture_root \\
        --mirror file:///tmp/fixture_sources --skip-checksums
"""
from __future__ import annotations

import io
import json
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_scripts.fixture_files import jpeg_bytes, png_bytes, write_tar, write_zip

__all__ = ["FixtureSet", "build_sources", "PC59_EXAMPLES", "PC59_RENAMED_ID"]

#: PASCAL-Context id -> PC-59 trainId, worked examples of CAT-Seg's mapping (sorted 60-id list, minus 1).
PC59_EXAMPLES = {0: 255, 2: 0, 9: 1, 458: 58, 3: 255}
#: The PASCAL-Context id named "table" in the metadata and "diningtable" in ``pc59.json``.
PC59_RENAMED_ID = 397


@dataclass
class FixtureSet:
    """``files``: download file name -> path; ``expected[benchmark][stem]``: the converted label;
    ``class_names``: what the preparation must read from the metadata; ``eval_class_names``: what
    it must read from the vocabulary JSON; ``vocabularies``: JSON file name -> its names."""

    files: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    class_names: dict = field(default_factory=dict)
    eval_class_names: dict = field(default_factory=dict)
    vocabularies: dict = field(default_factory=dict)
    image_sizes: dict = field(default_factory=dict)


def _vocabulary(dest: Path, fs: FixtureSet, key: str, filename: str, names: list) -> None:
    """Write a CAT-Seg style vocabulary file (one-line JSON list, final newline)."""
    (dest / filename).write_text(json.dumps(names) + "\n", encoding="utf-8")
    fs.files[filename] = dest / filename
    fs.vocabularies[filename] = list(names)
    fs.eval_class_names[key] = list(names)


def _tile(values, height: int, width: int) -> np.ndarray:
    flat = np.resize(np.asarray(values), height * width)
    return flat.reshape(height, width)


def _coco(dest: Path, rng, fs: FixtureSet) -> None:
    # 0-indexed stuffthingmap value -> expected trainId (CAT-Seg's COCO_CATEGORIES): person 0 -> 0,
    # the gaps 11/44/90 -> 255, stop sign 12 -> 11, wine glass 45 -> 40, banner 91 -> 80, wood 181 -> 170.
    table = {0: 0, 11: 255, 12: 11, 44: 255, 45: 40, 90: 255, 91: 80, 181: 170, 255: 255}
    lut = np.full(256, 255, dtype=np.uint8)
    for k, v in table.items():
        lut[k] = v
    maps, fs.expected["coco_stuff"] = {}, {}
    for split, stems in (("train", ["000000000009", "000000000025"]), ("val", ["000000000139", "000000000285"])):
        images = {}
        for j, stem in enumerate(stems):
            h, w = 12 + 2 * j, 10 + j
            values = _tile(rng.permutation(list(table)), h, w).astype(np.uint8)
            images[f"{split}2017/{stem}.jpg"] = jpeg_bytes(rng, h, w)
            maps[f"{split}2017/{stem}.png"] = png_bytes(values)
            fs.expected["coco_stuff"][stem] = lut[values]
        fs.files[f"{split}2017.zip"] = write_zip(dest / f"{split}2017.zip", images)
    fs.files["stuffthingmaps_trainval2017.zip"] = write_zip(dest / "stuffthingmaps_trainval2017.zip", maps)
    lines = ["0: unlabeled"] + [f"{k}: fixture-coco-{k}" for k in range(1, 183)]
    (dest / "cocostuff_labels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fs.files["cocostuff_labels.txt"] = dest / "cocostuff_labels.txt"
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
    fs.class_names["coco_stuff"] = [f"fixture-coco-{v + 1}" for v in range(182) if v not in unused]
    coco = [f"fixture-coco-json-{k}" for k in range(171)]
    _vocabulary(dest, fs, "coco_stuff", "coco.json", coco)


def _ade150(dest: Path, rng, fs: FixtureSet) -> None:
    table = {0: 255, 1: 0, 2: 1, 149: 148, 150: 149}
    base = "ADEChallengeData2016"
    members, fs.expected["ade20k_150"] = {}, {}
    for i in (1, 2):
        h, w = 9 + i, 13
        values = _tile(rng.permutation(list(table)), h, w).astype(np.uint8)
        stem = f"ADE_val_{i:08d}"
        members[f"{base}/images/validation/{stem}.jpg"] = jpeg_bytes(rng, h, w)
        members[f"{base}/annotations/validation/{stem}.png"] = png_bytes(values)
        fs.expected["ade20k_150"][stem] = np.vectorize(table.get)(values).astype(np.uint8)
    members[f"{base}/images/training/ADE_train_00000001.jpg"] = jpeg_bytes(rng, 8, 8)
    members[f"{base}/annotations/training/ADE_train_00000001.png"] = png_bytes(np.ones((8, 8), np.uint8))
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [
        f"{i}{' ' if i % 7 == 0 else ''}\t0.01\t10\t1\tfixture-ade-{i}, synonym {i} " for i in range(1, 151)
    ]
    members[f"{base}/objectInfo150.txt"] = ("\n".join(rows) + "\n").encode()
    fs.files["ADEChallengeData2016.zip"] = write_zip(dest / "ADEChallengeData2016.zip", members)
    fs.class_names["ade20k_150"] = [f"fixture-ade-{i}, synonym {i}" for i in range(1, 151)]
    # the real ade150.json keeps the first synonyms and spells class 8 "bed " (trailing space)
    firsts = [f"fixture-ade-{i}" + (" " if i == 8 else "") for i in range(1, 151)]
    _vocabulary(dest, fs, "ade20k_150", "ade150.json", firsts)


def _seg_png(classes: np.ndarray, rng) -> bytes:
    r = (classes // 256) * 10 + rng.integers(0, 10, classes.shape)  # R // 10 ignores the units digit
    g = classes % 256
    b = rng.integers(0, 256, classes.shape)  # instance ids, unused
    return png_bytes(np.stack([r, g, b], axis=-1).astype(np.uint8))


def _ade847(dest: Path, rng, fs: FixtureSet) -> None:
    # synthetic 847-class list: trainId i has ADE id 3 i + 7; ids 0 and 8 are not in it (-> 65535)
    cats = [{"name": f"fixture-full-{i}, alias", "id": 3 * i + 7, "trainId": i} for i in range(847)]
    script = (
        "# synthetic stand-in for MaskFormer's datasets/prepare_ade20k_full_sem_seg.py\n"
        "import os\n\nADE20K_SEM_SEG_FULL_CATEGORIES = " + json.dumps(cats) + "\n\n\ndef main():\n    pass\n"
    )
    (dest / "maskformer_prepare_ade20k_full_sem_seg.py").write_text(script, encoding="utf-8")
    fs.files["maskformer_prepare_ade20k_full_sem_seg.py"] = dest / "maskformer_prepare_ade20k_full_sem_seg.py"
    fs.class_names["ade20k_847"] = [c["name"] for c in cats]
    _vocabulary(dest, fs, "ade20k_847", "ade847.json",
                [f"fixture-full-{i}, json synonym, another" for i in range(847)])

    def train_id(c):
        return (c - 7) // 3 if c >= 7 and (c - 7) % 3 == 0 and (c - 7) // 3 < 847 else 65535

    base = "ADE20K_2021_17_01"
    folder = f"{base}/images/ADE/validation/abbey"
    members, folders, files = {}, [], []
    fs.expected["ade20k_847"] = {}
    small = _tile(rng.permutation([7, 10, 2545, 8, 0, 907]), 30, 40)
    # 520 x 600: the shorter side exceeds 512, so it is resized to 512 x round(600 / 520 * 512) = 512 x 591;
    # nearest neighbour keeps source column floor(j * 600 / 591), which is < 300 exactly for j <= 295.
    big = np.where(np.arange(600)[None, :] < 300, 10, 2545) * np.ones((520, 1), dtype=np.int64)
    big_expected = np.where(np.arange(591)[None, :] <= 295, 1, 846) * np.ones((512, 1), dtype=np.int64)
    for stem, classes, expected in (
        ("ADE_val_00000001", small, np.vectorize(train_id)(small)),
        ("ADE_val_00000002", big, big_expected),
    ):
        members[f"{folder}/{stem}.jpg"] = jpeg_bytes(rng, *classes.shape)
        members[f"{folder}/{stem}_seg.png"] = _seg_png(classes, rng)
        folders.append(folder)
        files.append(f"{stem}.jpg")
        fs.expected["ade20k_847"][stem] = expected.astype(np.uint16)
    fs.image_sizes["ade20k_847"] = {"ADE_val_00000001": (30, 40), "ADE_val_00000002": (512, 591)}
    train_folder = f"{base}/images/ADE/training/abbey"
    members[f"{train_folder}/ADE_train_00000001.jpg"] = jpeg_bytes(rng, 10, 10)
    members[f"{train_folder}/ADE_train_00000001_seg.png"] = _seg_png(np.full((10, 10), 7), rng)
    folders.append(train_folder)
    files.append("ADE_train_00000001.jpg")
    index = {"filename": files, "folder": folders, "objectnames": ["-"] * 3, "scene": np.array([1, 2, 3])}
    members[f"{base}/index_ade20k.pkl"] = pickle.dumps(index)
    fs.files["ADE20K_2021_17_01.zip"] = write_zip(dest / "ADE20K_2021_17_01.zip", members)


def _pascal_context(dest: Path, rng, fs: FixtureSet) -> None:
    from data_scripts.pascal_context import rle_encode  # the format writer; decoding is tested separately

    from scipy.io import savemat

    voc = "VOCdevkit/VOC2010"
    stems = {"2008_000002": (12, 16), "2008_000003": (10, 11), "2008_000004": (8, 8)}  # the last is a train image
    fs.files["VOCtrainval_03-May-2010.tar"] = write_tar(
        dest / "VOCtrainval_03-May-2010.tar",
        {f"{voc}/JPEGImages/{s}.jpg": jpeg_bytes(rng, *hw) for s, hw in stems.items()}
        | {f"{voc}/ImageSets/Segmentation/val.txt": b"2008_000002\n2008_000003\n"},
    )
    # PC-59: painted in file order, later masks overwrite earlier ones.
    images, annos, fs.expected["pascal_context_59"] = [], [], {}
    for n, (stem, (h, w)) in enumerate(stems.items()):
        images.append({"image_id": 100 + n, "file_name": f"{stem}.jpg", "phase": "train" if n == 2 else "val",
                       "height": h, "width": w})
        ids = np.zeros((h, w), dtype=np.int64)
        for k, (cat, (r0, r1, c0, c1)) in enumerate([(2, (0, h, 0, w // 2)), (458, (0, h, w // 2, w)),
                                                       (9, (1, h - 1, 2, w - 2)), (3, (0, 2, 0, 3))]):
            mask = np.zeros((h, w), dtype=bool)
            mask[r0:r1, c0:c1] = True
            ids[mask] = cat
            annos.append({"id": 1000 + 10 * n + k, "image_id": 100 + n, "category_id": cat,
                          "segmentation": rle_encode(mask)})
        fs.expected["pascal_context_59"][stem] = np.vectorize(PC59_EXAMPLES.get)(ids).astype(np.uint8)
    fs.expected["pascal_context_59"].pop("2008_000004")
    categories = [{"category_id": k, "name": f"fixture-context-{k}", "supercategory": "x"}
                  for k in range(1, 460)]
    categories[PC59_RENAMED_ID - 1]["name"] = "fixture-table"
    merged = {"info": {}, "images": images, "annos_segmentation": annos, "categories": categories}
    (dest / "trainval_merged.json").write_text(json.dumps(merged), encoding="utf-8")
    fs.files["trainval_merged.json"] = dest / "trainval_merged.json"
    sorted_ids = sorted((0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33,
                         162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68,
                         326, 72, 458, 34, 207, 80, 355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368,
                         113, 115))
    fs.class_names["pascal_context_59"] = [categories[k - 1]["name"] for k in sorted_ids[1:]]
    # pc59.json follows the same order; only the name of id 397 differs (as in the real files)
    pc59 = ["fixture-diningtable" if k == PC59_RENAMED_ID else categories[k - 1]["name"]
            for k in sorted_ids[1:]]
    _vocabulary(dest, fs, "pascal_context_59", "pc59.json", pc59)
    # PC-459: LabelMap 1..459 -> minus 1; 2008_000003 has no .mat and is skipped.
    label_map = _tile(rng.permutation([1, 2, 100, 459]), 12, 16).astype(np.uint16)
    buf = io.BytesIO()
    savemat(buf, {"LabelMap": label_map})
    labels = "\n".join(f"{k}: fixture-pc-{k}" for k in range(1, 460)) + "\n"
    fs.files["trainval.tar.gz"] = write_tar(
        dest / "trainval.tar.gz", {"trainval/2008_000002.mat": buf.getvalue(), "labels.txt": labels.encode()}, "w:gz"
    )
    fs.expected["pascal_context_459"] = {"2008_000002": (label_map.astype(np.int64) - 1).astype(np.uint16)}
    fs.class_names["pascal_context_459"] = [f"fixture-pc-{k}" for k in range(1, 460)]
    _vocabulary(dest, fs, "pascal_context_459", "pc459.json",
                ["fixture-pc-json-1"] + [f"fixture-pc-{k}" for k in range(2, 460)])
    (dest / "pascalcontext_val.txt").write_text("2008_000002\n2008_000003\n", encoding="utf-8")
    fs.files["pascalcontext_val.txt"] = dest / "pascalcontext_val.txt"


def _voc(dest: Path, rng, fs: FixtureSet) -> None:
    voc = "VOCdevkit/VOC2012"
    names = [f"fixture-voc-{k:02d}" for k in range(1, 21)]
    members = {f"{voc}/ImageSets/Main/{n}_trainval.txt": b"2007_000033  1\n" for n in names}
    members |= {f"{voc}/ImageSets/Main/{n}_train.txt": b"" for n in names}
    members[f"{voc}/ImageSets/Main/trainval.txt"] = b"2007_000033\n"
    members[f"{voc}/ImageSets/Segmentation/val.txt"] = b"2007_000033\n2007_000042\n"
    aug = {"__MACOSX/._SegmentationClassAug": b"junk"}
    voc20, voc20b = {0: 255, 1: 0, 15: 14, 20: 19, 255: 255, 21: 255}, {0: 20, 1: 0, 15: 14, 20: 19, 255: 255, 21: 255}
    fs.expected["voc20"], fs.expected["voc20b"] = {}, {}
    for stem, values in (("2007_000033", [0, 1, 15, 20, 255, 21]), ("2007_000042", [0, 255])):
        h, w = 11, 14
        raw = _tile(rng.permutation(values), h, w).astype(np.uint8)
        members[f"{voc}/JPEGImages/{stem}.jpg"] = jpeg_bytes(rng, h, w)
        aug[f"SegmentationClassAug/{stem}.png"] = png_bytes(raw, palette=True)
        fs.expected["voc20b"][stem] = np.vectorize(voc20b.get)(raw).astype(np.uint8)
        if stem == "2007_000033":  # the other one is background + boundary only: all 255 for VOC-20, dropped
            fs.expected["voc20"][stem] = np.vectorize(voc20.get)(raw).astype(np.uint8)
    fs.files["VOCtrainval_11-May-2012.tar"] = write_tar(dest / "VOCtrainval_11-May-2012.tar", members)
    fs.files["SegmentationClassAug.zip"] = write_zip(dest / "SegmentationClassAug.zip", aug)
    vocab = names + [f"fixture-bg-{k:02d}" for k in range(1, 40)]
    _vocabulary(dest, fs, "voc20", "voc20.json", names)  # the real voc20.json = the devkit names
    _vocabulary(dest, fs, "voc20b", "voc20b.json", vocab)
    fs.class_names["voc20"], fs.class_names["voc20b"] = names, names + ["background"]


_BUILDERS = {
    "coco_stuff": _coco,
    "ade20k_150": _ade150,
    "ade20k_847": _ade847,
    "pascal_context": _pascal_context,
    "voc": _voc,
}
_FAMILY = {"pascal_context_59": "pascal_context", "pascal_context_459": "pascal_context", "voc20": "voc",
           "voc20b": "voc"}


def build_sources(dest, datasets=("all",), *, seed: int = 0) -> FixtureSet:
    """Write the miniature download files for ``datasets`` (benchmark keys or ``"all"``) into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    families = []
    for name in datasets:
        for fam in (_BUILDERS if name == "all" else [_FAMILY.get(name, name)]):
            if fam not in _BUILDERS:
                raise ValueError(f"datasets must be benchmark keys or 'all', got {name!r}")
            if fam not in families:
                families.append(fam)
    rng = np.random.default_rng(seed)
    fs = FixtureSet()
    for fam in families:
        _BUILDERS[fam](dest, rng, fs)
    return fs


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m data_scripts.fixtures DEST_FOLDER")
    built = build_sources(sys.argv[1])
    print(f"wrote {len(built.files)} files to {sys.argv[1]}")
