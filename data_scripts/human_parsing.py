"""Human parsing: LIP (Gong et al., CVPR 2017) and PASCAL-Person-Part (Chen et al., CVPR 2014).

Both come as JPEG images with single-channel PNG label maps whose values are already the class
ids (LIP 0-19, PASCAL-Person-Part 0-6, see :mod:`hyro_edu.data.hierarchical_datasets`; 255 only
as padding/ignore). The conversion checks every label map (one channel, uint8, values in
``[0, K)`` or 255; anything else stops the preparation naming the file and the values), writes
it to ``<root>/<key>/labels/<split>/<stem>.png``, copies nothing else (the manifest points to
the unpacked JPEGs) and skips labels written by an earlier run.

**LIP** (manual download, no login; the files are linked from the LIP page, sysu-hcp.net/lip, on
Google Drive and Baidu): ``TrainVal_images.zip`` and ``TrainVal_parsing_annotations.zip`` into
``<root>/downloads/``. They unpack into ``<root>/raw/lip/``; the folders ``train_images``,
``val_images`` (JPEG) and ``train_segmentations``, ``val_segmentations`` (PNG) are found wherever
they sit inside the archives, and an image and its label share the file stem. 30,462 train and
10,000 val images; the test labels are withheld.

**PASCAL-Person-Part** (manual): the 6-part person labels of Xia et al. are distributed as
preprocessed redistributions of the PASCAL-Part annotations (roozbehm.info/pascal-parts) on the
VOC 2010 images; which one HVSA used is not known. The preparation reads a zip named
``pascal_person_part.zip`` (pack the redistribution's folder into it) holding, anywhere inside,
``JPEGImages/<id>.jpg``, ``SegmentationPart/<id>.png`` with the ids in HSSN's order (0
background, 1 head, 2 torso, 3 upper-arm, 4 lower-arm, 5 upper-leg, 6 lower-leg) and the lists
``train_id.txt`` and ``val_id.txt`` (one id per line; ``val_id.txt`` is the 1,817-image test
split, called ``val`` in HSSN's config; a ``test_id.txt`` is used instead when present). A
redistribution that orders the parts otherwise (the COCO-style JSON version used by detectron2
parsing code) must be remapped first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from hyro_edu.data import hierarchical_datasets as hd

from .common import Context, FormatError, parallel_map, rel, save_label
from .download import Download
from .hvsa_common import HierarchicalPreparer, HierarchicalResult, out_dir, segmentation_files

__all__ = ["LIP_IMAGES", "LIP_ANNOTATIONS", "PPP_ARCHIVE", "check_label", "find_dir", "LIP", "PascalPersonPart"]

_LIP_MANUAL = (
    "LIP is linked from its page, https://sysu-hcp.net/lip (Google Drive or Baidu, no login): download "
    "{name} (in 'TrainVal') and put it into <root>/downloads/."
)
LIP_IMAGES = Download("TrainVal_images.zip", manual=_LIP_MANUAL.format(name="TrainVal_images.zip"),
                      extract_to="lip", description="LIP train/val JPEG images")
LIP_ANNOTATIONS = Download(
    "TrainVal_parsing_annotations.zip", manual=_LIP_MANUAL.format(name="TrainVal_parsing_annotations.zip"),
    extract_to="lip", description="LIP train/val parsing label PNGs (ids 0-19)",
)
PPP_ARCHIVE = Download(
    "pascal_person_part.zip",
    manual=(
        "PASCAL-Person-Part is distributed as preprocessed redistributions of the PASCAL-Part annotations "
        "(https://roozbehm.info/pascal-parts/) on the VOC 2010 images. Pack one into pascal_person_part.zip "
        "holding JPEGImages/<id>.jpg, SegmentationPart/<id>.png (ids 0 background, 1 head, 2 torso, "
        "3 upper-arm, 4 lower-arm, 5 upper-leg, 6 lower-leg), train_id.txt and val_id.txt, and put it into "
        "<root>/downloads/ (see data_scripts/README.md)."
    ),
    extract_to="pascal_person_part", description="PASCAL-Person-Part images, part labels and split lists",
)


def check_label(array: np.ndarray, num_classes: int, source) -> np.ndarray:
    """``array`` if it is a single-channel uint8 map of ids in ``[0, num_classes)`` or 255.

    Raises :class:`FormatError` naming ``source`` and the offending values otherwise.
    """
    if array.ndim != 2 or array.dtype != np.uint8:
        raise FormatError(f"{source}: a label map must be single-channel uint8, got {array.dtype} {array.shape}")
    bad = np.setdiff1d(np.unique(array), np.r_[np.arange(num_classes), 255])
    if bad.size:
        raise FormatError(f"{source}: label values {bad.tolist()} are outside the {num_classes} class ids "
                          "(and 255); is it the right dataset/version?")
    return array


def _convert(job):
    src, dst, num_classes = job
    with Image.open(src) as im:
        array = np.asarray(im)
    save_label(check_label(array, num_classes, src), dst)
    return True


def find_dir(base: Path, name: str, archive: str) -> Path:
    """The one folder called ``name`` under ``base``; :class:`FormatError` if there is none or several."""
    found = sorted(p for p in base.rglob(name) if p.is_dir()) if base.is_dir() else []
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(str(p) for p in found)})"
        raise FormatError(f"{base} has {what} folder named {name!r}: is {archive} complete and the right archive?")
    return found[0]


def _find_file(base: Path, name: str) -> Path | None:
    found = sorted(p for p in base.rglob(name) if p.is_file()) if base.is_dir() else []
    if len(found) > 1:
        raise FormatError(f"{base} has several files named {name!r}: {', '.join(str(p) for p in found)}")
    return found[0] if found else None


def _labels(key: str, ctx: Context, split: str, stems, image_dir: Path, label_dir: Path, archive: str):
    """Convert the labels of ``stems``; return the manifest pairs."""
    num_classes = hd.dataset_info(key).num_classes
    out = out_dir(key, ctx) / "labels" / split
    jobs, pairs = [], []
    for stem in stems:
        image, label = image_dir / f"{stem}.jpg", label_dir / f"{stem}.png"
        for path in (image, label):
            if not path.is_file():
                raise FormatError(f"{path} is missing: is {archive} complete?")
        dst = out / f"{stem}.png"
        if not dst.is_file():  # a rerun keeps the labels already written
            jobs.append((str(label), str(dst), num_classes))
        pairs.append((rel(image, ctx), rel(dst, ctx)))
    parallel_map(_convert, jobs, ctx, f"{key} {split}")
    return pairs


class LIP(HierarchicalPreparer):
    key = "lip"

    def downloads(self, ctx):
        return [LIP_IMAGES, LIP_ANNOTATIONS]

    def convert(self, ctx: Context) -> HierarchicalResult:
        base = ctx.raw / "lip"
        manifest = {}
        for split in self.splits(ctx):
            images = find_dir(base, f"{split}_images", LIP_IMAGES.filename)
            labels = find_dir(base, f"{split}_segmentations", LIP_ANNOTATIONS.filename)
            stems = sorted(p.stem for p in labels.glob("*.png"))
            manifest[split] = _labels(self.key, ctx, split, stems, images, labels, LIP_ANNOTATIONS.filename)
        return segmentation_files(self.key, ctx, manifest, {
            "files": [LIP_IMAGES.filename, LIP_ANNOTATIONS.filename],
            "labels": "the dataset's ids 0-19, checked and copied",
        })


class PascalPersonPart(HierarchicalPreparer):
    key = "pascal_person_part"

    def downloads(self, ctx):
        return [PPP_ARCHIVE]

    def convert(self, ctx: Context) -> HierarchicalResult:
        base = ctx.raw / "pascal_person_part"
        images = find_dir(base, "JPEGImages", PPP_ARCHIVE.filename)
        labels = find_dir(base, "SegmentationPart", PPP_ARCHIVE.filename)
        lists = {"train": ("train_id.txt",), "test": ("test_id.txt", "val_id.txt")}
        manifest, used = {}, {}
        for split in self.splits(ctx):
            path = next((p for p in map(lambda n: _find_file(base, n), lists[split]) if p is not None), None)
            if path is None:
                raise FormatError(f"{base} has no {' or '.join(lists[split])}: is {PPP_ARCHIVE.filename} complete?")
            stems = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            manifest[split] = _labels(self.key, ctx, split, stems, images, labels, PPP_ARCHIVE.filename)
            used[split] = path.name
        return segmentation_files(self.key, ctx, manifest, {
            "files": [PPP_ARCHIVE.filename], "split_lists": used,
            "labels": "ids 0-6 in HSSN's order, checked and copied",
        })
