"""ADE20K-150 and ADE20K-847 (Zhou et al., "Semantic understanding of scenes through the ADE20K dataset", IJCV 2019).

**ADE20K-150** is the SceneParsing challenge release ``ADEChallengeData2016.zip``: 2,000 validation
images, uint8 PNG labels with 0 = "other" and 1-150 the classes. CAT-Seg's ``prepare_ade20k_150.py``
subtracts 1 in uint8, so 0 wraps to 255 (ignore) and 1-150 become 0-149. Class names: the
release's ``objectInfo150.txt`` (tab-separated ``Idx Ratio Train Val Name``).

**ADE20K-847** is the full ADE20K release ``ADE20K_2021_17_01`` (download after registration). Each
``*_seg.png`` encodes the object class of a pixel as ``(R // 10) * 256 + G``. The preparation of
MaskFormer, reused by CAT-Seg (``prepare_ade20k_full.py``), keeps the validation images, resizes
those whose shorter side exceeds 512 so that it is 512 (image bilinear, label nearest), maps the
847 frequency-sorted class ids of its list to 0-846 and everything else to 65535, and writes the
label as uint16 TIFF and the image as JPEG. The 847-entry list (name, ADE id, trainId) is read at
preparation time from MaskFormer's ``datasets/prepare_ade20k_full_sem_seg.py`` (parsed as data,
never executed). Resampling: bilinear as OpenCV's ``INTER_LINEAR`` (half-pixel centres, no
antialiasing; values may differ from OpenCV's fixed-point result by one grey level), nearest as
OpenCV's ``INTER_NEAREST`` (source index ``floor(i * in / out)``).

The vocabularies given to the model are CAT-Seg's ``datasets/ade150.json`` (the first synonym of
each class) and ``datasets/ade847.json`` (the synonym lists), :mod:`data_scripts.vocabularies`.
"""
from __future__ import annotations

import ast
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .common import (
    ConversionResult, Context, FormatError, Preparer, lookup_table, parallel_map, rel, save_jpeg, save_label,
)
from .download import Download
from .vocabularies import VOCABULARIES, read_vocabulary

__all__ = [
    "ADE150",
    "ADE847",
    "ADE_CHALLENGE",
    "OBJECT_INFO",
    "ADE_FULL",
    "ADE847_CATEGORIES",
    "decode_seg",
    "resize_shape",
    "resize_nearest",
    "resize_bilinear",
    "read_object_info",
    "read_847_categories",
    "read_index",
]

ADE_CHALLENGE = Download(
    "ADEChallengeData2016.zip",
    ("http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip",),
    extract_to="",
    description="SceneParsing release: 20,210 train + 2,000 val images, 150 classes",
)
OBJECT_INFO = Download(
    "objectInfo150.txt",
    (
        "https://raw.githubusercontent.com/CSAILVision/sceneparsing/4ce20bd9115d415d545b26eaa0387a0740838ba5/objectInfo150.txt",
        "https://raw.githubusercontent.com/CSAILVision/sceneparsing/master/objectInfo150.txt",
    ),
    satisfied_by=("raw/ADEChallengeData2016/objectInfo150.txt",),
    size_note="6 KB",
    description="the 150 class names (only fetched if the release lacks it)",
)
ADE_FULL = Download(
    "ADE20K_2021_17_01.zip",
    (),
    extract_to="",
    satisfied_by=("raw/ADE20K_2021_17_01/index_ade20k.pkl",),
    manual=(
        "The full ADE20K release needs a free registration: request it at "
        "https://groups.csail.mit.edu/vision/datasets/ADE20K/request_data/ , download ADE20K_2021_17_01.zip "
        "and put it in the downloads folder (or unpack it so that raw/ADE20K_2021_17_01/index_ade20k.pkl exists)."
    ),
    description="ADE20K full release 2021_17_01 (images, *_seg.png, index_ade20k.pkl)",
)
ADE847_CATEGORIES = Download(
    "maskformer_prepare_ade20k_full_sem_seg.py",
    (
        "https://raw.githubusercontent.com/facebookresearch/MaskFormer/f2d27b2e2f8d2919df27336b51454beffd0cf2e1/"
        "datasets/prepare_ade20k_full_sem_seg.py",
        "https://raw.githubusercontent.com/facebookresearch/MaskFormer/main/datasets/prepare_ade20k_full_sem_seg.py",
    ),
    size_note="50 KB",
    description="MaskFormer's ADE20K-full preparation script: the 847-class list (read as data)",
)

MAX_SHORT_SIDE = 512
IGNORE_847 = 65535


# ----------------------------------------------------------------------------
# ADE20K-150
# ----------------------------------------------------------------------------
def read_object_info(path) -> list[str]:
    """The 150 class names from ``objectInfo150.txt``, in label order (Idx 1..150)."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    names = {}
    for line in lines[1:]:
        cols = line.split("\t")
        if len(cols) >= 5 and cols[0].strip().isdigit():
            names[int(cols[0].strip())] = cols[-1].strip()
    missing = [i for i in range(1, 151) if i not in names]
    if missing:
        raise FormatError(f"{path} lacks the class indices {missing[:10]} (expected a header, then Idx 1..150)")
    return [names[i] for i in range(1, 151)]


def _convert_150(job):
    src, dst = job
    with Image.open(src) as im:
        array = np.asarray(im)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise FormatError(f"{src}: an ADE20K-150 label must be single-channel uint8, got {array.dtype} {array.shape}")
    save_label(array - np.uint8(1), dst)  # uint8 arithmetic: 0 ("other") wraps to 255


class ADE150(Preparer):
    key = "ade20k_150"

    def downloads(self, ctx):
        return [ADE_CHALLENGE, OBJECT_INFO, VOCABULARIES[self.key][0]]

    def convert(self, ctx: Context) -> ConversionResult:
        base = ctx.raw / "ADEChallengeData2016"
        ann_dir, img_dir = base / "annotations" / "validation", base / "images" / "validation"
        if not ann_dir.is_dir():
            raise FormatError(f"{ann_dir} is missing: is ADEChallengeData2016.zip complete?")
        out = ctx.out(self.key) / "labels" / "val"
        pairs, jobs = [], []
        for label in sorted(ann_dir.glob("*.png")):
            image = img_dir / f"{label.stem}.jpg"
            if not image.is_file():
                continue
            dst = out / label.name
            if not dst.is_file():
                jobs.append((str(label), str(dst)))
            pairs.append((rel(image, ctx), rel(dst, ctx)))
        parallel_map(_convert_150, jobs, ctx, "ade20k_150 val")
        info = base / "objectInfo150.txt"
        names = read_object_info(info if info.is_file() else ctx.file(OBJECT_INFO))
        vocabulary, vocabulary_sources = read_vocabulary(self.key, ctx)
        return ConversionResult(
            {"val": pairs}, names, eval_class_names=vocabulary,
            sources={"class_names": "ADEChallengeData2016 objectInfo150.txt",
                     "mapping": "CAT-Seg datasets/prepare_ade20k_150.py", **vocabulary_sources},
        )


# ----------------------------------------------------------------------------
# ADE20K-847
# ----------------------------------------------------------------------------
def read_847_categories(path) -> list[dict]:
    """The 847 ``{"name", "id", "trainId"}`` entries of ``ADE20K_SEM_SEG_FULL_CATEGORIES``, parsed as data.

    The file is MaskFormer's preparation script; its list literal is read with :mod:`ast` and
    never executed. Checks: 847 entries, trainIds 0..846 in order, distinct ids.
    """
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "ADE20K_SEM_SEG_FULL_CATEGORIES" for t in node.targets
        ):
            try:
                cats = ast.literal_eval(node.value)
            except ValueError as exc:
                raise FormatError(f"{path}: ADE20K_SEM_SEG_FULL_CATEGORIES is not a literal ({exc})") from None
            break
    else:
        raise FormatError(f"{path} does not define ADE20K_SEM_SEG_FULL_CATEGORIES")
    if not isinstance(cats, list) or len(cats) != 847:
        raise FormatError(f"{path}: expected 847 categories, got {len(cats) if isinstance(cats, list) else type(cats)}")
    if [c.get("trainId") for c in cats] != list(range(847)):
        raise FormatError(f"{path}: trainIds must run 0..846 in order")
    ids = [c["id"] for c in cats]
    if len(set(ids)) != 847 or min(ids) < 0:
        raise FormatError(f"{path}: the 847 ADE ids must be distinct and non-negative")
    return cats


class _IndexUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only (index_ade20k.pkl); anything else is refused."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"index_ade20k.pkl refers to {module}.{name}, which is not allowed")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy.core alias under NumPy 2
            return super().find_class(module, name)


def read_index(path) -> list[tuple[str, str]]:
    """``(folder, filename)`` of every image listed in ``index_ade20k.pkl`` (restricted unpickling)."""
    with open(path, "rb") as f:
        index = _IndexUnpickler(f).load()
    try:
        folders, files = list(index["folder"]), list(index["filename"])
    except (TypeError, KeyError) as exc:
        raise FormatError(f"{path} has no 'folder'/'filename' lists ({exc!r})") from None
    if len(folders) != len(files):
        raise FormatError(f"{path}: 'folder' and 'filename' have different lengths")
    return [(str(a), str(b)) for a, b in zip(folders, files)]


def decode_seg(rgb: np.ndarray) -> np.ndarray:
    """ADE20K full-release class map from a ``*_seg.png`` (H, W, 3): ``(R // 10) * 256 + G`` (int32)."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise FormatError(f"a *_seg.png must be an RGB image, got shape {rgb.shape}")
    r, g = rgb[..., 0].astype(np.int32), rgb[..., 1].astype(np.int32)
    return (r // 10) * 256 + g


def resize_shape(height: int, width: int, max_short: int = MAX_SHORT_SIDE):
    """New (height, width) if the shorter side exceeds ``max_short`` (then it becomes ``max_short``), else None."""
    if width >= height > max_short:
        return max_short, round(width / float(height) * max_short)
    if height >= width > max_short:
        return round(height / float(width) * max_short), max_short
    return None


def resize_nearest(label: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize as OpenCV ``INTER_NEAREST``: source index ``floor(i * in / out)``."""
    h, w = label.shape[:2]
    new_h, new_w = size
    rows = np.minimum((np.arange(new_h) * (h / new_h)).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(new_w) * (w / new_w)).astype(np.int64), w - 1)
    return label[rows[:, None], cols[None, :]]


def resize_bilinear(image: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of a uint8 (H, W, 3) image with half-pixel centres and no antialiasing."""
    t = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float()  # copy: writable
    out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _convert_847(job):
    image_path, seg_path, image_out, label_out, lut_items = job
    with Image.open(image_path) as im:
        image = np.asarray(im.convert("RGB"))
    with Image.open(seg_path) as im:
        label = decode_seg(np.asarray(im.convert("RGB")))
    if label.shape != image.shape[:2]:
        raise FormatError(f"{seg_path} is {label.shape}, its image {image.shape[:2]}")
    size = resize_shape(*label.shape)
    if size is not None:
        image, label = resize_bilinear(image, size), resize_nearest(label, size)
    ids, train_ids = lut_items
    lut = lookup_table(dict(zip(ids, train_ids)), max(int(label.max()), max(ids)) + 1, IGNORE_847, np.uint16)
    save_jpeg(image, image_out)
    save_label(lut[label], label_out)


class ADE847(Preparer):
    key = "ade20k_847"

    def downloads(self, ctx):
        return [ADE_FULL, ADE847_CATEGORIES, VOCABULARIES[self.key][0]]

    def _validation_images(self, ctx: Context) -> list[Path]:
        base = ctx.raw / "ADE20K_2021_17_01"
        index = base / "index_ade20k.pkl"
        try:
            listed = read_index(index)
        except (pickle.UnpicklingError, FormatError) as exc:
            ctx.log(f"note: cannot read {index.name} ({exc}); listing images/ADE/validation instead")
            return sorted((base / "images" / "ADE" / "validation").rglob("ADE_val_*.jpg"))
        paths = []
        for folder, name in listed:
            parts = name.split("_")
            if len(parts) < 2 or parts[1] != "val":
                continue  # the official script keeps the validation images only
            path = ctx.raw / folder / name
            if not path.is_file():
                raise FormatError(f"index_ade20k.pkl lists {folder}/{name}, which is not under {ctx.raw}")
            paths.append(path)
        return paths

    def convert(self, ctx: Context) -> ConversionResult:
        cats = read_847_categories(ctx.file(ADE847_CATEGORIES))
        lut_items = ([c["id"] for c in cats], [c["trainId"] for c in cats])
        out = ctx.out(self.key)
        pairs, jobs = [], []
        for image in self._validation_images(ctx):
            seg = image.with_name(image.stem + "_seg.png")
            if not seg.is_file():
                raise FormatError(f"{seg} is missing (every ADE20K image has a *_seg.png next to it)")
            image_out, label_out = out / "images" / "val" / image.name, out / "labels" / "val" / f"{image.stem}.tif"
            if not (image_out.is_file() and label_out.is_file()):
                jobs.append((str(image), str(seg), str(image_out), str(label_out), lut_items))
            pairs.append((rel(image_out, ctx), rel(label_out, ctx)))
        parallel_map(_convert_847, jobs, ctx, "ade20k_847 val")
        vocabulary, vocabulary_sources = read_vocabulary(self.key, ctx)
        return ConversionResult(
            {"val": pairs}, [c["name"] for c in cats], eval_class_names=vocabulary,
            sources={"class_names": "MaskFormer datasets/prepare_ade20k_full_sem_seg.py "
                                    "(847-class list)",
                     "mapping": "MaskFormer/CAT-Seg prepare_ade20k_full.py", **vocabulary_sources},
        )
