"""PASCAL VOC-20 and VOC-20b (Everingham et al., IJCV 2010), on the VOC2012 val images.

The labels come from ``SegmentationClassAug`` (the SBD-augmented masks that DeepLab distributes;
palette PNGs with 0 = background, 1-20 the classes, 255 = object boundary), for the 1,449 ids of
``ImageSets/Segmentation/val.txt``. CAT-Seg's ``prepare_voc.py``:

* VOC-20: 0 -> 255, 1-20 -> 0-19, 255 -> 255; images whose converted label is all 255 are dropped;
* VOC-20b: the same, but background 0 -> 20 (21 classes).

Class names: the VOC devkit's class files ``ImageSets/Main/<class>_trainval.txt``, sorted (the
devkit's class order, which is alphabetical, is the order of the label indices 1-20). The model
is given CAT-Seg's vocabularies (:mod:`data_scripts.vocabularies`): ``voc20.json`` for VOC-20, and
for VOC-20b the 59 names of ``voc20b.json`` (the 20 VOC names, then 39 PASCAL-Context names
standing for background), both read at preparation time.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .common import ConversionResult, Context, FormatError, Preparer, lookup_table, parallel_map, rel, save_label
from .download import Download
from .vocabularies import VOCABULARIES, read_vocabulary

__all__ = [
    "VOC20", "VOC20b", "VOC2012", "SEGMENTATION_CLASS_AUG", "VOC20B_VOCABULARY", "voc_lut", "read_voc_class_names",
]

VOC2012 = Download(
    "VOCtrainval_11-May-2012.tar",
    (
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    ),
    md5="6cd6e144f989b92b3379bac3b3de84fd",
    extract_to="",
    description="PASCAL VOC2012 train/val (md5 from torchvision.datasets.VOCSegmentation)",
)
SEGMENTATION_CLASS_AUG = Download(
    "SegmentationClassAug.zip",
    ("https://www.dropbox.com/s/oeu149j8qtbs1x0/SegmentationClassAug.zip?dl=1",),
    extract_to="VOCdevkit/VOC2012",
    description="SBD-augmented VOC masks (DeepLab's Dropbox link, as in CAT-Seg's README)",
)
#: CAT-Seg's PAS-20b vocabulary (59 names); kept under this name for existing imports.
VOC20B_VOCABULARY = VOCABULARIES["voc20b"][0]


def voc_lut(background: int) -> np.ndarray:
    """SegmentationClassAug value -> label: 0 -> ``background``, k -> k - 1 (k = 1..20), else 255."""
    mapping = {0: background, **{k: k - 1 for k in range(1, 21)}}
    return lookup_table(mapping, 256, 255, np.uint8)


def read_voc_class_names(voc_dir) -> list[str]:
    """The 20 VOC class names from the devkit's ``ImageSets/Main/<class>_trainval.txt`` files, in index order."""
    main = voc_dir / "ImageSets" / "Main"
    names = sorted(p.name[: -len("_trainval.txt")] for p in main.glob("*_trainval.txt"))
    if len(names) != 20:
        raise FormatError(f"{main} should hold 20 <class>_trainval.txt files, found {len(names)}: {names}")
    return names


def _convert(job):
    src, dst, background = job
    with Image.open(src) as im:
        array = np.asarray(im)  # palette indices for the 'P' images
    if array.ndim != 2 or array.dtype != np.uint8:
        raise FormatError(
            f"{src}: SegmentationClassAug masks are single-channel uint8, got {array.dtype} {array.shape}"
        )
    out = voc_lut(background)[array]
    if (out == 255).all():
        return False  # the official script writes no file for an all-ignore label
    save_label(out, dst)
    return True


class VOC20(Preparer):
    key = "voc20"
    background = 255

    def downloads(self, ctx):
        return [VOC2012, SEGMENTATION_CLASS_AUG, VOCABULARIES[self.key][0]]

    def _pairs(self, ctx: Context):
        voc = ctx.raw / "VOCdevkit" / "VOC2012"
        val_list = voc / "ImageSets" / "Segmentation" / "val.txt"
        if not val_list.is_file():
            raise FormatError(f"{val_list} is missing: is {VOC2012.filename} complete?")
        ids = [line.strip() for line in val_list.read_text(encoding="utf-8").splitlines() if line.strip()]
        out = ctx.out(self.key) / "labels" / "val"
        jobs, todo = [], []
        for stem in ids:
            src = voc / "SegmentationClassAug" / f"{stem}.png"
            if not src.is_file():
                raise FormatError(f"{src} is missing: is {SEGMENTATION_CLASS_AUG.filename} complete?")
            if not (out / f"{stem}.png").is_file():  # a rerun keeps the labels already written
                jobs.append((str(src), str(out / f"{stem}.png"), self.background))
                todo.append(stem)
        converted = dict(zip(todo, parallel_map(_convert, jobs, ctx, f"{self.key} val")))
        pairs = []
        for stem in ids:
            if converted.get(stem, True):  # False: an all-ignore label, which is not written
                image = voc / "JPEGImages" / f"{stem}.jpg"
                if not image.is_file():
                    raise FormatError(f"{image} is missing: is {VOC2012.filename} complete?")
                pairs.append((rel(image, ctx), rel(out / f"{stem}.png", ctx)))
        return voc, pairs

    def convert(self, ctx: Context) -> ConversionResult:
        voc, pairs = self._pairs(ctx)
        vocabulary, vocabulary_sources = read_vocabulary(self.key, ctx)
        return ConversionResult(
            {"val": pairs}, read_voc_class_names(voc), eval_class_names=vocabulary,
            sources={"class_names": "VOC2012 ImageSets/Main/<class>_trainval.txt",
                     "mapping": "CAT-Seg datasets/prepare_voc.py", **vocabulary_sources},
        )


class VOC20b(VOC20):
    key = "voc20b"
    background = 20

    def convert(self, ctx: Context) -> ConversionResult:
        voc, pairs = self._pairs(ctx)
        names = read_voc_class_names(voc)
        vocab, vocabulary_sources = read_vocabulary(self.key, ctx)
        if vocab[:20] != names:
            raise FormatError(
                f"{VOCABULARIES[self.key][0].filename} must list 59 names starting with the 20 "
                f"VOC classes {names}"
            )
        return ConversionResult(
            {"val": pairs}, names + ["background"], eval_class_names=vocab,
            sources={"class_names": "VOC2012 ImageSets/Main/<class>_trainval.txt, "
                                    "plus 'background' (label 20)",
                     "mapping": "CAT-Seg datasets/prepare_voc.py", **vocabulary_sources},
        )
