"""What every benchmark preparation shares: the context, the download/extract step, atomic writes.

A preparation (a :class:`Preparer` subclass in a dataset-family module) declares the files it needs
(:class:`~data_scripts.download.Download`) and converts the unpacked raw data into the layout of
:mod:`hyro_edu.data.benchmarks`. :func:`run` drives one preparation: remove the old completion
marker, fetch and verify the downloads, unpack the archives, convert, then write the class list,
the manifest and, last, the marker. Every converted label is written to a temporary name and renamed,
so an interrupted conversion leaves only complete files, and a rerun skips the files that exist.

On-disk layout under the data root::

    downloads/   the archives and metadata files, as downloaded (.part while incomplete)
    raw/         the unpacked archives (coco-stuff/, ADEChallengeData2016/, ADE20K_2021_17_01/, VOCdevkit/)
    <benchmark>/ the prepared benchmark (see hyro_edu.data.benchmarks)
"""
from __future__ import annotations

import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from hyro_edu.data import benchmarks as sd

from .archives import extract, is_extracted
from .download import DataPreparationError, Download, DownloadError, ManualStepRequired, fetch_any, human_size, verify

__all__ = [
    "FormatError",
    "Context",
    "ConversionResult",
    "Preparer",
    "download_status",
    "ensure_downloads",
    "run",
    "save_label",
    "save_jpeg",
    "lookup_table",
    "parse_indexed_names",
    "parallel_map",
    "rel",
]


class FormatError(DataPreparationError):
    """A raw file does not have the format the official preparation expects."""


@dataclass
class Context:
    """Where and how to prepare: the data root, download mirror and switches."""

    root: Path
    mirror: Optional[str] = None
    download: bool = True
    verify_checksums: bool = True
    progress: bool = True
    workers: int = 1
    coco_stuff_splits: tuple[str, ...] = ("train", "val")
    log: Callable[[str], None] = field(default=print)
    imagenet_root: Optional[Path] = None  # tieredImageNet-H, imagenet_protect: an ILSVRC-2012 folder with train/ and val/
    rare_species_root: Optional[Path] = None  # rare_species: a copy of the Hugging Face dataset imageomics/rare-species

    def __post_init__(self):
        self.root = Path(self.root).expanduser()
        if self.imagenet_root is not None:
            self.imagenet_root = Path(self.imagenet_root).expanduser()
        if self.rare_species_root is not None:
            self.rare_species_root = Path(self.rare_species_root).expanduser()

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    def file(self, download: Download) -> Path:
        return self.downloads / download.filename

    def out(self, key: str) -> Path:
        return sd.benchmark_dir(key, self.root)


@dataclass
class ConversionResult:
    """What a conversion produced: per split ``(image, label)`` paths relative to the root, the names."""

    manifest: dict
    class_names: list
    eval_class_names: Optional[list] = None
    sources: dict = field(default_factory=dict)


class Preparer:
    """Base class: ``key`` (a :data:`hyro_edu.data.benchmarks.BENCHMARKS` key), the downloads, the conversion."""

    key: str = ""

    def downloads(self, ctx: Context) -> Sequence[Download]:
        raise NotImplementedError

    def convert(self, ctx: Context) -> ConversionResult:
        raise NotImplementedError

    def splits(self, ctx: Context) -> tuple[str, ...]:
        return sd.benchmark_info(self.key).splits


def rel(path: Path, ctx: Context) -> str:
    """``path`` relative to the data root, POSIX form (what the manifest stores)."""
    return Path(path).relative_to(ctx.root).as_posix()


# ----------------------------------------------------------------------------
# downloads
# ----------------------------------------------------------------------------
def _satisfied(d: Download, ctx: Context) -> Optional[str]:
    for p in d.satisfied_by:
        if (ctx.root / p).exists():
            return f"present as {p}"
    if d.extract_to is not None and is_extracted(d.filename, ctx.raw / d.extract_to):
        return f"unpacked in raw/{d.extract_to}"
    if ctx.file(d).is_file():
        return "downloaded"
    return None


def download_status(d: Download, ctx: Context) -> tuple[bool, str]:
    """``(present, description)`` of one download, for ``--dry-run``."""
    done = _satisfied(d, ctx)
    if done:
        return True, done
    part = ctx.file(d).with_name(d.filename + ".part")
    resume = f", {human_size(part.stat().st_size)} already in {part.name}" if part.exists() else ""
    if d.is_manual:
        return False, f"MANUAL STEP{resume}: {d.manual}"
    size = f" ({d.size_note})" if d.size_note else ""
    return False, f"will download{size} from {d.urls[0]}{resume}"


def _urls(d: Download, ctx: Context) -> list[str]:
    urls = list(d.urls)
    if ctx.mirror:
        urls.insert(0, ctx.mirror.rstrip("/") + "/" + d.filename)
    return urls


def ensure_downloads(downloads: Iterable[Download], ctx: Context) -> None:
    """Fetch (or check) every download, then unpack the archives; raise with instructions if one is missing."""
    for d in downloads:
        if d.satisfied_by and _satisfied(d, ctx) and not ctx.file(d).is_file():
            continue
        path = ctx.file(d)
        extracted = d.extract_to is not None and is_extracted(d.filename, ctx.raw / d.extract_to)
        if extracted and not path.is_file():
            continue  # unpacked earlier; the archive may have been deleted to save space
        sums = dict(md5=d.md5, sha256=d.sha256, names_sha256=d.names_sha256)
        if not ctx.verify_checksums:
            sums = {}
        if path.is_file():
            try:
                verify(path, **sums)
            except DownloadError as exc:
                raise DownloadError(f"{exc}. Delete {path} and run again to download it anew.") from None
        elif d.is_manual or (not ctx.download and not ctx.mirror):
            how = d.manual if d.is_manual else f"Download it from {d.urls[0]}"
            message = (
                f"{d.filename} is missing from {ctx.downloads}. {how}\n"
                f"Expected file: {path}" + (f" (or unpacked: {', '.join(d.satisfied_by)})" if d.satisfied_by else "")
            )
            if not ctx.mirror:
                raise ManualStepRequired(message)
            try:
                fetch_any(_urls(d, ctx), path, progress=ctx.progress, **sums)
            except DownloadError as exc:
                raise ManualStepRequired(f"{message}\n(the mirror does not have it either: {exc})") from None
        else:
            ctx.log(f"downloading {d.filename}" + (f" ({d.size_note})" if d.size_note else ""))
            fetch_any(_urls(d, ctx), path, progress=ctx.progress, **sums)
        if d.extract_to is not None and not extracted:
            ctx.log(f"unpacking {d.filename} into raw/{d.extract_to}")
            extract(path, ctx.raw / d.extract_to)


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------
def _atomic_save(image: Image.Image, path: Path, fmt: str, **params) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    image.save(tmp, format=fmt, **params)
    os.replace(tmp, path)


def save_label(array: np.ndarray, path: Path) -> None:
    """Write a label map atomically: uint8 as PNG (``.png``), uint16 as 16-bit TIFF (``.tif``)."""
    path = Path(path)
    if path.suffix == ".png":
        if array.dtype != np.uint8:
            raise ValueError(f"a .png label must be uint8, got {array.dtype}")
        _atomic_save(Image.fromarray(array), path, "PNG")
    elif path.suffix == ".tif":
        if array.dtype != np.uint16:
            raise ValueError(f"a .tif label must be uint16, got {array.dtype}")
        _atomic_save(Image.fromarray(array), path, "TIFF")
    else:
        raise ValueError(f"label path must end in .png or .tif, got {path.name}")


def save_jpeg(array: np.ndarray, path: Path) -> None:
    """Write an RGB uint8 image atomically as JPEG (Pillow's default quality, as the official script)."""
    _atomic_save(Image.fromarray(array), Path(path), "JPEG")


def lookup_table(mapping: dict, size: int, fill: int, dtype) -> np.ndarray:
    """A lookup array ``lut`` with ``lut[k] = mapping[k]`` and ``fill`` elsewhere."""
    lut = np.full(size, fill, dtype=dtype)
    for k, v in mapping.items():
        lut[k] = v
    return lut


_INDEXED = re.compile(r"^\s*(\d+)\s*:\s*(.*?)\s*$")


def parse_indexed_names(path: Path) -> dict[int, str]:
    """Parse ``index: name`` lines (COCO-Stuff and PASCAL-Context ``labels.txt``) into a dict."""
    names = {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        match = _INDEXED.match(line)
        if match:
            names[int(match.group(1))] = match.group(2)
    if not names:
        raise FormatError(f"{path} contains no 'index: name' lines")
    return names


def parallel_map(fn, items: Sequence, ctx: Context, desc: str) -> list:
    """``[fn(x) for x in items]`` with a progress bar, in ``ctx.workers`` processes when > 1."""
    bar = None
    if ctx.progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(items), desc=desc, unit="img")
        except ImportError:  # progress is optional
            ctx.log(f"{desc}: {len(items)} images")
    results = []
    try:
        if ctx.workers > 1 and len(items) > 1:
            with ProcessPoolExecutor(max_workers=ctx.workers) as pool:
                for r in pool.map(fn, items, chunksize=max(1, len(items) // (ctx.workers * 16))):
                    results.append(r)
                    if bar is not None:
                        bar.update(1)
        else:
            for x in items:
                results.append(fn(x))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return results


# ----------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------
def run(preparer: Preparer, ctx: Context, *, force: bool = False) -> Optional[Path]:
    """Prepare one benchmark; return the marker path, or None if it was already prepared."""
    key = preparer.key
    wanted = set(preparer.splits(ctx))
    marker = ctx.out(key) / sd.MARKER_NAME
    if marker.exists() and not force:
        try:
            done = set(sd.check_prepared(key, root=ctx.root)["splits"])
        except sd.DatasetNotPreparedError:
            done = set()
        if wanted <= done:
            ctx.log(f"{key}: already prepared ({ctx.out(key)}); use --force to redo it")
            return None
    sd.clear_prepared(key, ctx.root)
    if force and ctx.out(key).exists():
        shutil.rmtree(ctx.out(key))
    ensure_downloads(preparer.downloads(ctx), ctx)
    ctx.log(f"{key}: converting")
    result = preparer.convert(ctx)
    info = sd.benchmark_info(key)
    for split, pairs in result.manifest.items():
        expected = info.expected_images.get(split)
        if not pairs:
            raise FormatError(f"{key}: no {split} images were found in {ctx.raw}; is the archive complete?")
        if expected is not None and len(pairs) != expected:
            ctx.log(f"note: {key} {split} has {len(pairs)} images; the full dataset has {expected}")
    path = sd.write_prepared(
        key,
        ctx.root,
        manifest=result.manifest,
        class_names=result.class_names,
        eval_class_names=result.eval_class_names,
        sources=result.sources,
    )
    ctx.log(f"{key}: done, " + ", ".join(f"{s}: {len(p)} images" for s, p in result.manifest.items()))
    return path
