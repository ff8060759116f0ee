"""The seven open-vocabulary segmentation benchmarks as PyTorch datasets, read from a prepared layout.

``python -m data_scripts.prepare`` (run from the repository root) downloads and converts the raw
datasets with the official id mappings (CAT-Seg's preparation scripts, reused unchanged by
HyperCLIP, HyRo and H-CLIP) and writes, for each benchmark, under the data root
(``$HYRO_EDU_DATA``, default ``~/hyro_edu_data``; see :mod:`hyro_edu.core.paths`)::

    <root>/<benchmark>/
        labels/<split>/<stem>.png|.tif   converted label maps (the official encodings)
        images/<split>/<stem>.jpg        only where the official preparation rewrites images (ADE-847)
        classes.json                     class names (metadata), the model's vocabulary (CAT-Seg)
        manifest.json                    per split: [image path, label path] relative to <root>
        .prepared.json                   completion marker, written last

A benchmark counts as prepared only when ``.prepared.json`` exists: the preparation writes it after
every label, the class list and the manifest are on disk, so an interrupted run never looks complete.
:class:`SegmentationBenchmark` checks the marker and, if it is missing, says which command to run.

======================  ==========  =======  ============  =============================================
benchmark (key)         classes     ignore   label file    label encoding of the prepared layout
======================  ==========  =======  ============  =============================================
``coco_stuff``          171         255      uint8 PNG     stuffthingmap ids 0-181 minus 11 unused -> 0-170
``ade20k_150``          150         255      uint8 PNG     ADEChallenge label - 1 (0 "other" -> 255)
``ade20k_847``          847         65535    uint16 TIFF   (R // 10) * 256 + G of ``_seg.png`` -> 847 ids
``pascal_context_59``   59          255      uint8 PNG     459-id mask, 59 ids -> 0-58, rest -> 255
``pascal_context_459``  459         459      uint16 TIFF   LabelMap - 1
``voc20``               20          255      uint8 PNG     SegmentationClassAug 1-20 -> 0-19, 0 -> 255
``voc20b``              21          255      uint8 PNG     as voc20 but background 0 -> 20
======================  ==========  =======  ============  =============================================

Class names are never hard-coded here. ``classes.json`` holds two lists:

* ``class_names``, in label order, read from each dataset's metadata (COCO-Stuff ``labels.txt``,
  ADE20K ``objectInfo150.txt``, the ADE20K-full 847-class list, the PASCAL-Context
  ``trainval_merged.json`` categories and ``labels.txt``, the VOC devkit class files);
* ``eval_class_names``, the vocabulary given to the model: CAT-Seg's name lists
  ``datasets/{coco,ade150,ade847,pc59,pc459,voc20,voc20b}.json``, which the official training
  (``coco.json``) and evaluation (``eval.sh``) use. The preparation downloads them from a pinned
  commit and checks their canonical SHA-256 (``data_scripts.vocabularies``); ``sources`` records
  the file and the checksum. They differ from the metadata names in places: PC-59 says
  "diningtable" where PASCAL-Context says "table", ADE20K-150 keeps only first synonyms.

PAS-20b is evaluated with a 59-name vocabulary (the 20 VOC classes, then 39 PASCAL-Context
classes standing for "background"); its predictions >= 20 are collapsed into background
(:func:`hyro_edu.segmentation.evaluation.collapse_background`).

Reference: CAT-Seg :cite:`cho2024catseg` and its released code (CAT-Seg repository,
``datasets/prepare_*.py``, ``cat_seg/data/datasets/register_*.py``, ``eval.sh`` and ``train_net.py``
(``VOCbEvaluator``)); the datasets: COCO-Stuff :cite:`caesar2018cocostuff`, ADE20K
:cite:`zhou2019ade20k`, PASCAL VOC :cite:`everingham2010pascal`, PASCAL-Context
:cite:`mottaghi2014context`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from hyro_edu.data.prepared import (MARKER_NAME, ManifestPairs, check_marker, clear_marker, lookup,
                                    not_prepared_message, preparation_command, read_image, read_label, read_manifest,
                                    resolve_root, write_json)

__all__ = [
    "BenchmarkInfo",
    "BENCHMARKS",
    "LAYOUT_VERSION",
    "MARKER_NAME",
    "DatasetNotPreparedError",
    "benchmark_info",
    "benchmark_dir",
    "prepare_command",
    "check_prepared",
    "write_prepared",
    "clear_prepared",
    "class_names",
    "prompt_name",
    "read_image",
    "read_label",
    "SegmentationBenchmark",
]

#: 2: ``eval_class_names`` are CAT-Seg's vocabulary files (1: the metadata names). The labels did
#: not change, so re-running the preparation command reuses them.
LAYOUT_VERSION = 2


@dataclass(frozen=True)
class BenchmarkInfo:
    """What a benchmark is: its key, names, class count, ignore value, label format and splits."""

    key: str
    title: str
    short: str  # the name used in the papers' tables
    num_classes: int
    ignore_index: int
    label_suffix: str
    splits: tuple[str, ...]
    collapse_background_at: Optional[int] = None
    # images per split in the full dataset, where a source states the exact number
    expected_images: dict = field(default_factory=dict)


BENCHMARKS: dict[str, BenchmarkInfo] = {
    info.key: info
    for info in (
        BenchmarkInfo("coco_stuff", "COCO-Stuff-171", "COCO-Stuff", 171, 255, ".png", ("train", "val"),
                      expected_images={"train": 118_287}),
        BenchmarkInfo("ade20k_150", "ADE20K-150", "A-150", 150, 255, ".png", ("val",),
                      expected_images={"val": 2_000}),
        BenchmarkInfo("ade20k_847", "ADE20K-847", "A-847", 847, 65535, ".tif", ("val",),
                      expected_images={"val": 2_000}),
        BenchmarkInfo("pascal_context_59", "PASCAL-Context-59", "PC-59", 59, 255, ".png", ("val",)),
        BenchmarkInfo("pascal_context_459", "PASCAL-Context-459", "PC-459", 459, 459, ".tif", ("val",),
                      expected_images={"val": 5_104}),
        BenchmarkInfo("voc20", "PASCAL VOC-20", "PAS-20", 20, 255, ".png", ("val",)),
        BenchmarkInfo("voc20b", "PASCAL VOC-20b", "PAS-20b", 21, 255, ".png", ("val",),
                      collapse_background_at=20),
    )
}


class DatasetNotPreparedError(FileNotFoundError):
    """A benchmark (or one of its splits) has no completed preparation under the data root."""


def benchmark_info(name: str) -> BenchmarkInfo:
    """The :class:`BenchmarkInfo` of ``name``; ``ValueError`` listing the known keys otherwise."""
    return lookup(BENCHMARKS, name)


def benchmark_dir(name: str, root=None) -> Path:
    """``<root>/<name>``, where the prepared benchmark lives (``root`` defaults to ``$HYRO_EDU_DATA``)."""
    benchmark_info(name)
    return resolve_root(root) / name


def prepare_command(name: str, root=None, split: Optional[str] = None) -> str:
    """The command that prepares ``name`` under ``root`` (for a COCO-Stuff ``split``: both splits)."""
    cmd = preparation_command(name, root)
    if name == "coco_stuff" and split is not None:
        cmd += " --coco-stuff-splits train val"  # the marker lists the splits of the last run: ask for both
    return cmd


def _not_prepared(name: str, root, reason: str, split: Optional[str] = None) -> DatasetNotPreparedError:
    return DatasetNotPreparedError(not_prepared_message(benchmark_info(name).title, benchmark_dir(name, root), reason,
                                                        prepare_command(name, root, split)))


def check_prepared(name: str, split: Optional[str] = None, root=None) -> dict:
    """Return the completion marker of ``name``; raise :class:`DatasetNotPreparedError` if absent.

    Also raised when the marker is from another layout version, or when ``split`` was not prepared.
    The message names the command to run.
    """
    info = benchmark_info(name)

    def version_problem(content: dict) -> Optional[str]:
        version = content.get("layout_version")
        if version == LAYOUT_VERSION:
            return None
        if version == 1:
            how = ("version 1 used the metadata names as the vocabulary; run the command below "
                   "again (the converted labels are reused, the vocabulary is downloaded)")
        else:
            how = "rerun with --force"
        return f"prepared with layout version {version}, this code reads {LAYOUT_VERSION}; {how}"

    return check_marker(benchmark_dir(name, root), name, info.splits, split, version_problem=version_problem,
                        not_prepared=lambda reason: _not_prepared(name, root, reason, split))


def clear_prepared(name: str, root=None) -> None:
    """Remove the completion marker of ``name`` (the first step of every (re)preparation)."""
    clear_marker(benchmark_dir(name, root))


def write_prepared(
    name: str,
    root,
    *,
    manifest: dict[str, Sequence[tuple[str, str]]],
    class_names: Sequence[str],
    eval_class_names: Optional[Sequence[str]] = None,
    sources: Optional[dict] = None,
) -> Path:
    """Write ``classes.json`` and ``manifest.json``, then the completion marker (last). Returns the marker path.

    ``manifest`` maps each split to ``(image, label)`` paths relative to ``root`` (POSIX form); every
    file must exist. ``class_names`` must have ``num_classes`` entries; ``eval_class_names`` (the
    vocabulary given to the model, default ``class_names``) may be longer only where the benchmark
    collapses predictions (PAS-20b).
    """
    info = benchmark_info(name)
    root = resolve_root(root)
    names = [str(n) for n in class_names]
    if len(names) != info.num_classes:
        raise ValueError(f"class_names must have {info.num_classes} entries for {name}, got {len(names)}")
    vocab = names if eval_class_names is None else [str(n) for n in eval_class_names]
    if info.collapse_background_at is None and len(vocab) != info.num_classes:
        raise ValueError(f"eval_class_names must have {info.num_classes} entries for {name}, got {len(vocab)}")
    if not manifest or any(split not in info.splits for split in manifest):
        raise ValueError(f"manifest must map splits among {list(info.splits)}, got {sorted(manifest)}")
    for split, pairs in manifest.items():
        for image, label in pairs:
            for rel in (image, label):
                if not (root / rel).is_file():
                    raise ValueError(f"manifest[{split!r}] names {rel}, which does not exist under {root}")
    directory = benchmark_dir(name, root)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "classes.json", {"class_names": names, "eval_class_names": vocab, "sources": sources or {}})
    write_json(directory / "manifest.json", {split: [list(p) for p in pairs] for split, pairs in manifest.items()})
    marker = {
        "benchmark": name,
        "layout_version": LAYOUT_VERSION,
        "num_classes": info.num_classes,
        "ignore_index": info.ignore_index,
        "splits": {split: len(pairs) for split, pairs in manifest.items()},
    }
    write_json(directory / MARKER_NAME, marker)
    return directory / MARKER_NAME


def _classes(name: str, root) -> dict:
    path = benchmark_dir(name, root) / "classes.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _not_prepared(name, root, f"cannot read {path.name}: {exc}") from None


def class_names(name: str, root=None) -> tuple[str, ...]:
    """The class names of a prepared benchmark, in label order (as the dataset's metadata spells them)."""
    check_prepared(name, root=root)
    return tuple(_classes(name, root)["class_names"])


def prompt_name(name: str) -> str:
    """The name CAT-Seg puts in the prompt: the part of ``name`` before the first ``", "``.

    ADE-847's vocabulary spells classes as WordNet synonym lists ("person, individual, someone,
    ..."); CAT-Seg's ``get_text_embeds`` (``cat_seg_predictor.py``) splits a name on ``", "``
    (comma *and* space) and keeps the first part, and uses a name without ``", "`` as it is. So
    does this function: ``"a,b"`` stays ``"a,b"``, and whitespace is kept (``ade150.json``'s
    ``"bed "`` stays ``"bed "``; CLIP's tokenizer collapses whitespace, so the tokens do not
    change). None of the official vocabularies has a comma without a space after it.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    return name.split(", ", 1)[0]


class SegmentationBenchmark(ManifestPairs):
    """One prepared benchmark split as a map-style dataset of ``{"image", "label", "name"}`` samples.

    ``image`` is uint8 (3, H, W), ``label`` int64 (H, W) with values in ``[0, num_classes)`` or
    ``ignore_index``; ``name`` is the file stem. ``transform``, if given, is applied to the sample
    dict. Construction checks the completion marker (:func:`check_prepared`) and raises
    :class:`DatasetNotPreparedError` with the command to run if the preparation is missing or
    unfinished.

    Attributes: ``info`` (:class:`BenchmarkInfo`), ``class_names`` (label order, from the dataset's
    metadata), ``eval_class_names`` (the vocabulary given to the model: CAT-Seg's JSON list, for
    PAS-20b the 59-name one), ``prompt_names`` (:func:`prompt_name` of ``eval_class_names``),
    ``num_classes``, ``ignore_index``, ``collapse_background_at`` (20 for PAS-20b, else None).

    Example::

        ds = SegmentationBenchmark("ade20k_150")          # root from $HYRO_EDU_DATA
        sample = ds[0]; sample["image"].shape, ds.class_names[:3]
    """

    def __init__(self, name: str, split: Optional[str] = None, root=None, transform: Optional[Callable] = None):
        self.info = benchmark_info(name)
        self._select(name, self.info.splits, split, root, transform)
        marker = check_prepared(name, self.split, self.root)
        classes = _classes(name, self.root)
        self._pairs = read_manifest(benchmark_dir(name, self.root), self.split, marker,
                                    lambda reason: _not_prepared(name, self.root, reason, self.split))
        self.class_names = tuple(classes["class_names"])
        self.eval_class_names = tuple(classes.get("eval_class_names") or self.class_names)
        self.prompt_names = tuple(prompt_name(n) for n in self.eval_class_names)
        self.num_classes = self.info.num_classes
        self.ignore_index = self.info.ignore_index
        self.collapse_background_at = self.info.collapse_background_at

    def __repr__(self) -> str:
        return f"SegmentationBenchmark({self.name!r}, split={self.split!r}, {len(self)} images, root={str(self.root)!r})"
