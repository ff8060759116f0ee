"""COCO-Stuff-171 (train and val): the training set of every method here, and a benchmark.

Raw data (Caesar et al., COCO-Stuff, CVPR 2018; https://github.com/nightrome/cocostuff): the COCO
2017 images and ``stuffthingmaps_trainval2017.zip``, one uint8 PNG per image with the 0-indexed
COCO-Stuff ids 0-181 (80 things with COCO's gaps, then 91 stuff classes) and 255 for unlabeled.
Eleven thing ids have no segmentation annotations and never occur: 11, 25, 28, 29, 44, 65, 67, 68,
70, 82 and 90 (0-indexed). CAT-Seg's ``prepare_coco_stuff.py`` maps the remaining 171 ids, in
increasing order, to 0-170 and everything else to 255; so do we.

Class names come from the dataset's ``labels.txt`` (``index: name`` with 1-indexed ids, 0 =
unlabeled): pixel value ``v`` is label ``v + 1`` there. The vocabulary given to the model, for
training as for evaluation, is CAT-Seg's ``datasets/coco.json`` (:mod:`data_scripts.vocabularies`).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .common import (
    ConversionResult, Context, FormatError, Preparer, lookup_table, parallel_map, parse_indexed_names, rel,
    save_label,
)
from .download import Download
from .vocabularies import VOCABULARIES, read_vocabulary

__all__ = ["UNUSED_IDS", "COCO_STUFF_IDS", "TRAIN_IDS", "CocoStuff", "LABELS", "STUFFTHINGMAPS", "IMAGES"]

#: 0-indexed stuffthingmap ids of the 11 COCO thing classes without annotations (cocostuff README).
UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
#: the 171 ids that occur, in increasing order; ``TRAIN_IDS[v]`` is the trainId of pixel value ``v``.
COCO_STUFF_IDS = tuple(v for v in range(182) if v not in UNUSED_IDS)
TRAIN_IDS = {v: i for i, v in enumerate(COCO_STUFF_IDS)}
IGNORE = 255

_SIZES = "cocostuff README"
IMAGES = {
    "train": Download(
        "train2017.zip", ("http://images.cocodataset.org/zips/train2017.zip",), extract_to="coco-stuff/images",
        size_note=f"18 GB, {_SIZES}", description="COCO 2017 train images (118K)",
    ),
    "val": Download(
        "val2017.zip", ("http://images.cocodataset.org/zips/val2017.zip",), extract_to="coco-stuff/images",
        size_note=f"1 GB, {_SIZES}", description="COCO 2017 val images (5K)",
    ),
}
STUFFTHINGMAPS = Download(
    "stuffthingmaps_trainval2017.zip",
    ("http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip",),
    extract_to="coco-stuff/annotations", size_note=f"659 MB, {_SIZES}",
    description="stuff+thing label maps for train2017 and val2017",
)
LABELS = Download(
    "cocostuff_labels.txt",
    (
        "https://raw.githubusercontent.com/nightrome/cocostuff/cad94560af961375160d9e9e55a1612bc319cd5b/labels.txt",
        "https://raw.githubusercontent.com/nightrome/cocostuff/master/labels.txt",
    ),
    size_note="<10 KB", description="the COCO-Stuff class list (labels.txt)",
)

_LUT = lookup_table(TRAIN_IDS, 256, IGNORE, np.uint8)


def convert_label(array: np.ndarray) -> np.ndarray:
    """Stuffthingmap ids -> trainIds 0-170, everything else (gaps, 255) -> 255."""
    if array.dtype != np.uint8 or array.ndim != 2:
        raise FormatError(f"a stuffthingmap must be a single-channel uint8 image, got {array.dtype} {array.shape}")
    return _LUT[array]


def _convert_one(job: tuple[str, str]) -> None:
    src, dst = job
    with Image.open(src) as im:
        array = np.asarray(im)
    try:
        save_label(convert_label(array), dst)
    except FormatError as exc:
        raise FormatError(f"{src}: {exc}") from None


def class_names_from_labels(path) -> list[str]:
    """The 171 names in trainId order, from COCO-Stuff's ``labels.txt`` (1-indexed)."""
    names = parse_indexed_names(path)
    missing = [v + 1 for v in range(182) if v + 1 not in names]
    if missing:
        raise FormatError(f"{path} lacks the ids {missing[:10]}; expected 'k: name' for k = 0..182")
    return [names[v + 1] for v in COCO_STUFF_IDS]


class CocoStuff(Preparer):
    key = "coco_stuff"

    def splits(self, ctx: Context) -> tuple[str, ...]:
        return tuple(ctx.coco_stuff_splits)

    def downloads(self, ctx: Context):
        return [IMAGES[s] for s in self.splits(ctx)] + [STUFFTHINGMAPS, LABELS,
                                                        VOCABULARIES[self.key][0]]

    def convert(self, ctx: Context) -> ConversionResult:
        base = ctx.raw / "coco-stuff"
        out = ctx.out(self.key) / "labels"
        manifest = {}
        for split in self.splits(ctx):
            ann_dir, img_dir = base / "annotations" / f"{split}2017", base / "images" / f"{split}2017"
            if not ann_dir.is_dir():
                raise FormatError(f"{ann_dir} is missing: stuffthingmaps_trainval2017.zip did not contain {split}2017/")
            pairs, jobs = [], []
            for label in sorted(ann_dir.glob("*.png")):
                image = img_dir / f"{label.stem}.jpg"
                if not image.is_file():
                    continue  # detectron2 uses the images that have both files
                dst = out / split / label.name
                if not dst.is_file():
                    jobs.append((str(label), str(dst)))
                pairs.append((rel(image, ctx), rel(dst, ctx)))
            parallel_map(_convert_one, jobs, ctx, f"coco_stuff {split}")
            manifest[split] = pairs
        vocabulary, vocabulary_sources = read_vocabulary(self.key, ctx)
        return ConversionResult(
            manifest=manifest,
            class_names=class_names_from_labels(ctx.file(LABELS)),
            eval_class_names=vocabulary,
            sources={"class_names": "COCO-Stuff labels.txt",
                     "mapping": "CAT-Seg datasets/prepare_coco_stuff.py", **vocabulary_sources},
        )
