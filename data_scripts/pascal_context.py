"""PASCAL-Context-59 and PASCAL-Context-459 (Mottaghi et al., CVPR 2014), on the VOC2010 images.

**PC-59.** The annotations are the PASCAL-in-Detail file ``trainval_merged.json``: images with
``phase`` train/val, per-category masks in ``annos_segmentation`` as COCO run-length encodings, and
``categories`` (``category_id``, ``name``) for 459 ids. CAT-Seg's ``prepare_pascal_context_59.py``
paints each val image's masks, in file order, into a 459-id map (0 where nothing is painted), then
maps the sorted list of 60 ids ``[0, 2, 259, 260, ...]`` to ``arange(60) - 1`` in uint8, so id 0
becomes 255 (ignore) and the 59 classes 0-58; every other id becomes 255. The run-length decoding
is implemented here (:func:`rle_decode`), so pycocotools is not needed.

**PC-459.** The annotations are ``trainval.tar.gz`` (one MATLAB ``.mat`` file per image holding
``LabelMap``, 1-459, and ``labels.txt`` with ``index: name``). CAT-Seg's
``prepare_pascal_context_459.py`` converts the val images listed in its ``pascalcontext_val.txt``
(5,104 in the maintainers' log) to ``LabelMap - 1`` saved as 16-bit TIFF; the benchmark's ignore
value 459 never occurs. Reading ``.mat`` files needs SciPy.

The vocabularies given to the model are CAT-Seg's ``datasets/pc59.json`` and
``datasets/pc459.json`` (:mod:`data_scripts.vocabularies`), not the names above: ``pc59.json``
calls the class of id 397 "diningtable", which ``labels.txt`` calls "table".
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import (
    ConversionResult, Context, FormatError, Preparer, lookup_table, parallel_map, parse_indexed_names, rel,
    save_label,
)
from .download import Download
from .vocabularies import VOCABULARIES, read_vocabulary

__all__ = [
    "PC59",
    "PC459",
    "PC59_IDS",
    "VOC2010",
    "MERGED_JSON",
    "CONTEXT_MATS",
    "VAL_LIST",
    "rle_decode",
    "rle_encode",
    "rle_counts_from_string",
    "rle_string_from_counts",
]

#: The 60 PASCAL-Context ids of PC-59 (0 = unlabelled first), as listed in CAT-Seg's script.
PC59_IDS = (
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284,
    158, 159, 416, 33, 162, 420, 454, 295, 296, 427, 44, 45, 46, 308, 59,
    440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80, 355,
    85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
)
_SORTED = sorted(PC59_IDS)
_TRAIN_IDS = {k: (i - 1) % 256 for i, k in enumerate(_SORTED)}  # arange(60) - 1 in uint8: 0 -> 255

VOC2010 = Download(
    "VOCtrainval_03-May-2010.tar",
    (
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
        "https://thor.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
    ),
    md5="da459979d0c395079b5c75ee67908abb",
    extract_to="",
    description="PASCAL VOC2010 train/val images (md5 from torchvision.datasets.VOCSegmentation)",
)
MERGED_JSON = Download(
    "trainval_merged.json",
    ("https://codalabuser.blob.core.windows.net/public/trainval_merged.json",),
    description="PASCAL-in-Detail annotations (PC-59 masks and category names)",
)
CONTEXT_MATS = Download(
    "trainval.tar.gz",
    (
        "https://roozbehm.info/pascal-context/trainval.tar.gz",
        "https://www.cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",
    ),
    extract_to="VOCdevkit/VOC2010",
    description="PASCAL-Context full annotations: trainval/*.mat (LabelMap) and labels.txt",
)
VAL_LIST = Download(
    "pascalcontext_val.txt",
    (
        "https://raw.githubusercontent.com/cvlab-kaist/CAT-Seg/dc295eeb751821dfdbe49fc19285d588c8a5b71f/"
        "datasets/pascalcontext_val.txt",
        "https://raw.githubusercontent.com/cvlab-kaist/CAT-Seg/main/datasets/pascalcontext_val.txt",
    ),
    size_note="60 KB",
    description="CAT-Seg's list of the PC-459 validation images",
)


# ----------------------------------------------------------------------------
# COCO run-length encoding (column-major runs, alternating 0s and 1s, starting with 0s)
# ----------------------------------------------------------------------------
def rle_counts_from_string(s) -> list[int]:
    """Decode COCO's compressed RLE string: 5-bit groups (+48), continuation bit 0x20, sign bit 0x10;
    from the third count on, each value is stored as the difference to the count two places back."""
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(data):
        value, shift, more = 0, 0, True
        while more:
            if p >= len(data):
                raise FormatError("RLE string ends inside a number")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise FormatError(f"RLE string has the invalid character {chr(data[p])!r}")
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift  # negative number: sign-extend
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_string_from_counts(counts) -> str:
    """Inverse of :func:`rle_counts_from_string`."""
    out = []
    for i, x in enumerate(int(c) for c in counts):
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if c & 0x10 else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_decode(segmentation: dict) -> np.ndarray:
    """A boolean (H, W) mask from ``{"size": [H, W], "counts": str | bytes | list}``."""
    try:
        h, w = (int(v) for v in segmentation["size"])
        counts = segmentation["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"an RLE segmentation needs 'size' [H, W] and 'counts', got {exc!r}") from None
    counts = [int(c) for c in counts] if isinstance(counts, list) else rle_counts_from_string(counts)
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise FormatError(f"RLE counts sum to {sum(counts)}, expected {h} x {w} = {h * w} pixels")
    values = np.arange(len(counts)) % 2
    flat = np.repeat(values.astype(bool), counts)
    return flat.reshape(w, h).T  # runs go down the columns


def rle_encode(mask: np.ndarray) -> dict:
    """The compressed RLE of a boolean (H, W) mask (the format of ``trainval_merged.json``)."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": rle_string_from_counts(counts)}


# ----------------------------------------------------------------------------
# PC-59
# ----------------------------------------------------------------------------
def paint_context_mask(height: int, width: int, annotations) -> np.ndarray:
    """The 459-id map of one image: each annotation's mask painted with its category id, in order."""
    mask = np.zeros((height, width), dtype=np.int32)
    for ann in annotations:
        m = rle_decode(ann["segmentation"])
        if m.shape != mask.shape:
            raise FormatError(f"a mask of image {ann.get('image_id')} is {m.shape}, the image {mask.shape}")
        mask[m] = int(ann["category_id"])
    return mask


_LUT59 = lookup_table(_TRAIN_IDS, 1 << 16, 255, np.uint8)


def convert_59(mask: np.ndarray) -> np.ndarray:
    """459-id map -> PC-59 trainIds (uint8; id 0 and the 400 other ids -> 255)."""
    if mask.min() < 0 or mask.max() >= _LUT59.size:
        raise FormatError(f"PASCAL-Context ids must lie in [0, {_LUT59.size - 1}]")
    return _LUT59[mask]


def _convert_59(job):
    height, width, annotations, dst = job
    save_label(convert_59(paint_context_mask(height, width, annotations)), Path(dst))


class PC59(Preparer):
    key = "pascal_context_59"

    def downloads(self, ctx):
        return [VOC2010, MERGED_JSON, VOCABULARIES[self.key][0]]

    def convert(self, ctx: Context) -> ConversionResult:
        with open(ctx.file(MERGED_JSON), encoding="utf-8") as f:
            data = json.load(f)
        try:
            val = {img["image_id"]: img for img in data["images"] if img["phase"] == "val"}
            categories = {int(c["category_id"]): str(c["name"]) for c in data["categories"]}
            annotations: dict = {}
            for ann in data["annos_segmentation"]:
                if ann["image_id"] in val:
                    annotations.setdefault(ann["image_id"], []).append(ann)
        except (KeyError, TypeError) as exc:
            raise FormatError(
                f"{MERGED_JSON.filename} lacks the field {exc} (images/annos_segmentation/categories)"
            ) from None
        missing = [k for k in _SORTED[1:] if k not in categories]
        if missing:
            raise FormatError(f"{MERGED_JSON.filename} has no category names for the PC-59 ids {missing}")
        img_dir = ctx.raw / "VOCdevkit" / "VOC2010" / "JPEGImages"
        out = ctx.out(self.key) / "labels" / "val"
        pairs, jobs = [], []
        for image_id, img in sorted(val.items(), key=lambda kv: kv[1]["file_name"]):
            image = img_dir / img["file_name"]
            if not image.is_file():
                raise FormatError(f"{image} is missing: is {VOC2010.filename} complete?")
            dst = out / f"{Path(img['file_name']).stem}.png"
            if not dst.is_file():
                jobs.append((int(img["height"]), int(img["width"]), annotations.get(image_id, []), str(dst)))
            pairs.append((rel(image, ctx), rel(dst, ctx)))
        parallel_map(_convert_59, jobs, ctx, "pascal_context_59 val")
        vocabulary, vocabulary_sources = read_vocabulary(self.key, ctx)
        return ConversionResult(
            {"val": pairs}, [categories[k] for k in _SORTED[1:]], eval_class_names=vocabulary,
            sources={"class_names": "trainval_merged.json categories",
                     "mapping": "CAT-Seg datasets/prepare_pascal_context_59.py",
                     **vocabulary_sources},
        )


# ----------------------------------------------------------------------------
# PC-459
# ----------------------------------------------------------------------------
def _require_scipy():
    try:
        from scipy.io import loadmat
    except ImportError:
        raise FormatError("reading PASCAL-Context .mat files needs SciPy: pip install scipy") from None
    return loadmat


def _loadmat(path):
    return _require_scipy()(path)


def convert_459(label_map: np.ndarray, source="LabelMap") -> np.ndarray:
    """``LabelMap - 1`` as uint16; labels must be 1..459 (the official script asserts >= 0 after the shift)."""
    shifted = np.asarray(label_map).astype(np.int64) - 1
    if shifted.ndim != 2:
        raise FormatError(f"{source}: LabelMap must be two-dimensional, got shape {shifted.shape}")
    if shifted.min() < 0 or shifted.max() > 458:
        raise FormatError(f"{source}: LabelMap values must lie in 1..459, got {shifted.min() + 1}..{shifted.max() + 1}")
    return shifted.astype(np.uint16)


def _convert_459(job):
    src, dst = job
    mat = _loadmat(src)
    if "LabelMap" not in mat:
        raise FormatError(f"{src} has no LabelMap")
    save_label(convert_459(mat["LabelMap"], src), Path(dst))


class PC459(Preparer):
    key = "pascal_context_459"

    def downloads(self, ctx):
        return [VOC2010, CONTEXT_MATS, VAL_LIST, VOCABULARIES[self.key][0]]

    def convert(self, ctx: Context) -> ConversionResult:
        _require_scipy()
        voc = ctx.raw / "VOCdevkit" / "VOC2010"
        candidates = [voc / "labels.txt", voc / "trainval" / "labels.txt"]
        labels = next((p for p in candidates if p.is_file()), None)
        if labels is None:
            raise FormatError(f"labels.txt is missing; looked in {', '.join(map(str, candidates))}")
        index = parse_indexed_names(labels)
        missing = [i for i in range(1, 460) if i not in index]
        if missing:
            raise FormatError(f"{labels} lacks the indices {missing[:10]} (expected 1..459)")
        ids = [line.strip() for line in ctx.file(VAL_LIST).read_text(encoding="utf-8").splitlines() if line.strip()]
        out = ctx.out(self.key) / "labels" / "val"
        pairs, jobs = [], []
        for stem in ids:
            mat = voc / "trainval" / f"{stem}.mat"
            image = voc / "JPEGImages" / f"{stem}.jpg"
            if not (mat.is_file() and image.is_file()):
                continue  # the official script skips ids without annotation
            dst = out / f"{stem}.tif"
            if not dst.is_file():
                jobs.append((str(mat), str(dst)))
            pairs.append((rel(image, ctx), rel(dst, ctx)))
        parallel_map(_convert_459, jobs, ctx, "pascal_context_459 val")
        vocabulary, vocabulary_sources = read_vocabulary(self.key, ctx)
        return ConversionResult(
            {"val": pairs}, [index[i] for i in range(1, 460)], eval_class_names=vocabulary,
            sources={"class_names": "PASCAL-Context labels.txt",
                     "mapping": "CAT-Seg datasets/prepare_pascal_context_459.py",
                     **vocabulary_sources},
        )
