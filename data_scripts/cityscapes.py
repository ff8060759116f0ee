"""Cityscapes (Cordts et al., CVPR 2016) with the 19 evaluation classes (trainIds).

Download needs an account: register at https://www.cityscapes-dataset.com/register/, log in, and
download ``leftImg8bit_trainvaltest.zip`` (the 8-bit left images) and ``gtFine_trainvaltest.zip``
(the fine annotations) from https://www.cityscapes-dataset.com/downloads/; put both into
``<root>/downloads/``. They unpack into ``<root>/raw/cityscapes/``::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   (and _color, _instanceIds, _polygons)

The conversion maps every ``*_gtFine_labelIds.png`` of ``train`` (2,975 images) and ``val``
(500) with :data:`LABEL_ID_TO_TRAIN_ID` (cityscapesScripts ``helpers/labels.py``: the 19 classes
with ``ignoreInEval`` False get trainIds 0-18, everything else 255) into
``<root>/cityscapes/labels/<split>/<city>_<seq>_<frame>.png`` (uint8). The images are not copied:
the manifest points to the unpacked PNGs. Test labels are withheld by the benchmark, so the test
split is not prepared.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .common import Context, FormatError, lookup_table, parallel_map, rel, save_label
from .download import Download
from .hvsa_common import HierarchicalPreparer, HierarchicalResult, out_dir, segmentation_files

__all__ = ["CITYSCAPES_LABELS", "LABEL_ID_TO_TRAIN_ID", "LEFT_IMG8BIT", "GT_FINE", "train_id_lut", "Cityscapes"]

#: ``(labelId, name, trainId)`` of cityscapesScripts ``helpers/labels.py`` (255: not evaluated).
#: ``license plate`` has labelId -1 there and never occurs in a labelIds PNG.
CITYSCAPES_LABELS = (
    (0, "unlabeled", 255), (1, "ego vehicle", 255), (2, "rectification border", 255),
    (3, "out of roi", 255), (4, "static", 255), (5, "dynamic", 255), (6, "ground", 255),
    (7, "road", 0), (8, "sidewalk", 1), (9, "parking", 255), (10, "rail track", 255),
    (11, "building", 2), (12, "wall", 3), (13, "fence", 4), (14, "guard rail", 255),
    (15, "bridge", 255), (16, "tunnel", 255), (17, "pole", 5), (18, "polegroup", 255),
    (19, "traffic light", 6), (20, "traffic sign", 7), (21, "vegetation", 8), (22, "terrain", 9),
    (23, "sky", 10), (24, "person", 11), (25, "rider", 12), (26, "car", 13), (27, "truck", 14),
    (28, "bus", 15), (29, "caravan", 255), (30, "trailer", 255), (31, "train", 16),
    (32, "motorcycle", 17), (33, "bicycle", 18),
)
LABEL_ID_TO_TRAIN_ID = {label_id: train_id for label_id, _, train_id in CITYSCAPES_LABELS}

_MANUAL = (
    "Cityscapes needs an account: register at https://www.cityscapes-dataset.com/register/, log in, "
    "download {name} from https://www.cityscapes-dataset.com/downloads/ and put it into <root>/downloads/."
)
LEFT_IMG8BIT = Download(
    "leftImg8bit_trainvaltest.zip", manual=_MANUAL.format(name="leftImg8bit_trainvaltest.zip"),
    extract_to="cityscapes", satisfied_by=("raw/cityscapes/leftImg8bit",),
    description="Cityscapes left 8-bit images, train/val/test",
)
GT_FINE = Download(
    "gtFine_trainvaltest.zip", manual=_MANUAL.format(name="gtFine_trainvaltest.zip"),
    extract_to="cityscapes", satisfied_by=("raw/cityscapes/gtFine",),
    description="Cityscapes fine annotations, train/val/test",
)


def train_id_lut() -> np.ndarray:
    """uint8 lookup table labelId -> trainId (256 entries; ids not in the table -> 255)."""
    return lookup_table({k: v for k, v in LABEL_ID_TO_TRAIN_ID.items() if k >= 0}, 256, 255, np.uint8)


def _convert(job):
    src, dst = job
    with Image.open(src) as im:
        array = np.asarray(im)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise FormatError(f"{src}: a gtFine labelIds PNG is single-channel uint8, got {array.dtype} {array.shape}")
    save_label(train_id_lut()[array], dst)
    return True


class Cityscapes(HierarchicalPreparer):
    key = "cityscapes"

    def downloads(self, ctx):
        return [LEFT_IMG8BIT, GT_FINE]

    def convert(self, ctx: Context) -> HierarchicalResult:
        base = ctx.raw / "cityscapes"
        out = out_dir(self.key, ctx) / "labels"
        manifest = {}
        for split in self.splits(ctx):
            gt = base / "gtFine" / split
            if not gt.is_dir():
                raise FormatError(f"{gt} is missing: is {GT_FINE.filename} complete?")
            sources = sorted(gt.glob("*/*_gtFine_labelIds.png"))
            jobs, pairs = [], []
            for src in sources:
                stem = src.name[: -len("_gtFine_labelIds.png")]
                image = base / "leftImg8bit" / split / src.parent.name / f"{stem}_leftImg8bit.png"
                if not image.is_file():
                    raise FormatError(f"{image} is missing: is {LEFT_IMG8BIT.filename} complete?")
                dst = out / split / f"{stem}.png"
                if not dst.is_file():  # a rerun keeps the labels already written
                    jobs.append((str(src), str(dst)))
                pairs.append((rel(image, ctx), rel(dst, ctx)))
            parallel_map(_convert, jobs, ctx, f"{self.key} {split}")
            manifest[split] = pairs
        return segmentation_files(self.key, ctx, manifest, {
            "mapping": "labelId -> trainId, cityscapesScripts helpers/labels.py (data_scripts.cityscapes)",
            "class_names": "the 19 trainId names of helpers/labels.py",
            "files": [LEFT_IMG8BIT.filename, GT_FINE.filename],
        })
