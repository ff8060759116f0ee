"""What the preparations of HVSA's datasets share: the driver and the segmentation output files.

HVSA's datasets (ImCLEF07A/D, Cityscapes, LIP, PASCAL-Person-Part) are not open-vocabulary
benchmarks, so they are registered in :mod:`hyro_edu.data.hierarchical_datasets` rather than in
:mod:`hyro_edu.data.benchmarks`, and :func:`run_hierarchical` drives them the way
:func:`data_scripts.common.run` drives the benchmarks: remove the old completion marker, fetch or
check the downloads (:func:`data_scripts.common.ensure_downloads`: resume, checksums, manual
steps, complete extraction), convert (every file written under a temporary name and renamed),
then write the completion marker last.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from hyro_edu.data import hierarchical_datasets as hd

from .common import Context, FormatError, ensure_downloads
from .download import Download, ManualStepRequired

__all__ = [
    "HierarchicalResult",
    "HierarchicalPreparer",
    "out_dir",
    "save_npy",
    "save_json",
    "segmentation_files",
    "run_hierarchical",
]


@dataclass
class HierarchicalResult:
    """What a conversion produced: samples per split, the files written (relative to the dataset folder)."""

    splits: dict
    files: list = field(default_factory=list)
    sources: dict = field(default_factory=dict)


class HierarchicalPreparer:
    """Base class: ``key`` (a :data:`hyro_edu.data.hierarchical_datasets.DATASETS` key), downloads, conversion."""

    key: str = ""

    def downloads(self, ctx: Context) -> Sequence[Download]:
        raise NotImplementedError

    def convert(self, ctx: Context) -> HierarchicalResult:
        raise NotImplementedError

    def splits(self, ctx: Context) -> tuple[str, ...]:
        return hd.dataset_info(self.key).splits

    def manual_steps(self, ctx: Context) -> list[str]:
        """Unmet requirements other than the downloads (listed by ``--dry-run``); none by default."""
        return []


def out_dir(key: str, ctx: Context) -> Path:
    """``<root>/<key>``, the prepared dataset's folder."""
    return hd.dataset_dir(key, ctx.root)


def save_npy(array: np.ndarray, path: Path) -> None:
    """Write ``array`` as ``.npy`` atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def save_json(obj, path: Path, indent: Optional[int] = 1) -> None:
    """Write ``obj`` as UTF-8 JSON atomically (``indent=None``: compact, for long manifests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with io.open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
    os.replace(tmp, path)


def segmentation_files(key: str, ctx: Context, manifest: dict, sources: dict) -> HierarchicalResult:
    """Write ``classes.json`` and ``manifest.json`` of a segmentation dataset; return the result.

    ``manifest`` maps each split to ``(image, label)`` paths relative to the data root, each of
    which must exist.
    """
    info = hd.dataset_info(key)
    for split, pairs in manifest.items():
        for pair in pairs:
            for rel in pair:
                if not (ctx.root / rel).is_file():
                    raise FormatError(f"{key}: {rel} does not exist under {ctx.root}")
    directory = out_dir(key, ctx)
    save_json({"class_names": list(info.class_names), "ignore_index": info.ignore_index,
               "flip_pairs": [list(p) for p in info.flip_pairs], "sources": sources},
              directory / "classes.json")
    save_json({s: [list(p) for p in pairs] for s, pairs in manifest.items()}, directory / "manifest.json")
    return HierarchicalResult({s: len(p) for s, p in manifest.items()}, ["classes.json", "manifest.json"], sources)


def run_hierarchical(preparer: HierarchicalPreparer, ctx: Context, *, force: bool = False) -> Optional[Path]:
    """Prepare one HVSA dataset; return the marker path, or None if it was already prepared."""
    key = preparer.key
    wanted = set(preparer.splits(ctx))
    directory = out_dir(key, ctx)
    if (directory / hd.MARKER_NAME).exists() and not force:
        try:
            done = set(hd.check_prepared(key, root=ctx.root)["splits"])
        except hd.DatasetNotPreparedError:
            done = set()
        if wanted <= done:
            ctx.log(f"{key}: already prepared ({directory}); use --force to redo it")
            return None
    hd.clear_prepared(key, ctx.root)
    if force and directory.exists():
        shutil.rmtree(directory)
    steps = preparer.manual_steps(ctx)
    if steps:
        raise ManualStepRequired("\n".join(steps))
    ensure_downloads(preparer.downloads(ctx), ctx)
    ctx.log(f"{key}: converting")
    result = preparer.convert(ctx)
    info = hd.dataset_info(key)
    for split, count in result.splits.items():
        if not count:
            raise FormatError(f"{key}: no {split} samples were found in {ctx.raw}; is the archive complete?")
        expected = info.expected.get(split)
        if expected is not None and count != expected:
            ctx.log(f"note: {key} {split} has {count} samples; the full dataset has {expected}")
    path = hd.write_prepared(key, ctx.root, splits=result.splits, files=result.files, sources=result.sources)
    ctx.log(f"{key}: done, " + ", ".join(f"{s}: {n}" for s, n in result.splits.items()))
    return path
