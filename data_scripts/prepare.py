"""Prepare any subset of the seven benchmarks: ``python -m data_scripts.prepare``.

Usage (from the repository root)::

    python -m data_scripts.prepare --datasets ade20k_150 voc20 voc20b --dry-run   # what is missing?
    python -m data_scripts.prepare --datasets ade20k_150 voc20 voc20b             # download + prepare
    python -m data_scripts.prepare --datasets all --root /data/hyro               # everything
    python -m data_scripts.prepare --datasets coco_stuff --coco-stuff-splits val  # skip the 18 GB train images

The data root is ``--root``, else ``$HYRO_EDU_DATA``, else ``~/hyro_edu_data``. Downloads resume
after an interruption (run the same command again); archives that need a registration (ADE20K
full) are reported with the steps and the expected file name. ``--dry-run`` only lists the state
of every file (``--probe`` also asks the servers for the sizes) and exits with status 1 if
something is missing. Exit status 1 also reports a failed step, whose message says what to do.

HVSA's datasets (:mod:`hyro_edu.data.hierarchical_datasets`) are prepared by the same command:
``--datasets imclef07a imclef07d cityscapes lip pascal_person_part tiered_imagenet_h`` (the last
with ``--imagenet-root DIR``), or ``hvsa`` for all six.
Tree alignment's datasets (:mod:`hyro_edu.data.taxonomic_datasets`): ``--datasets cifar100_protect
sun324 imagenet_protect rare_species`` (ImageNet with ``--imagenet-root DIR``, Rare Species with
``--rare-species-root DIR``), or ``tree_alignment`` for all four.
``all`` still means the seven open-vocabulary benchmarks.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from hyro_edu.data import benchmarks as sd
from hyro_edu.data import hierarchical_datasets as hd
from hyro_edu.data import taxonomic_datasets as td
from hyro_edu.core.paths import data_root

from .ade20k import ADE150, ADE847
from .cityscapes import Cityscapes
from .coco_stuff import CocoStuff
from .common import Context, Preparer, download_status, run
from .download import DataPreparationError, human_size, probe_size
from .human_parsing import LIP, PascalPersonPart
from .hvsa_common import HierarchicalPreparer, run_hierarchical
from .imclef07 import ImCLEF07A, ImCLEF07D
from .pascal_context import PC59, PC459
from .taxonomic import Cifar100ProTeCt, ImageNetProTeCt, RareSpecies, Sun324
from .taxonomic_common import TaxonomicPreparer, run_taxonomic
from .tiered_imagenet import TieredImageNetH
from .voc import VOC20, VOC20b

__all__ = ["PREPARERS", "HVSA_PREPARERS", "TAXONOMIC_PREPARERS", "GROUPS", "resolve_names", "build_parser", "prepare",
           "dry_run", "main"]

#: The seven open-vocabulary segmentation benchmarks (``all``).
PREPARERS: dict[str, Preparer] = {
    p.key: p for p in (CocoStuff(), ADE150(), ADE847(), PC59(), PC459(), VOC20(), VOC20b())
}
#: HVSA's datasets (``hvsa``), read by :mod:`hyro_edu.data.hierarchical_datasets`.
HVSA_PREPARERS: dict[str, HierarchicalPreparer] = {
    p.key: p for p in (ImCLEF07A(), ImCLEF07D(), Cityscapes(), LIP(), PascalPersonPart(), TieredImageNetH())
}
#: Tree alignment's datasets (``tree_alignment``), read by :mod:`hyro_edu.data.taxonomic_datasets`.
TAXONOMIC_PREPARERS: dict[str, TaxonomicPreparer] = {
    p.key: p for p in (Cifar100ProTeCt(), Sun324(), ImageNetProTeCt(), RareSpecies())
}
#: Group names accepted by ``--datasets``.
GROUPS = {"all": tuple(PREPARERS), "hvsa": tuple(HVSA_PREPARERS), "tree_alignment": tuple(TAXONOMIC_PREPARERS)}


def _known() -> list[str]:
    return [*PREPARERS, *HVSA_PREPARERS, *TAXONOMIC_PREPARERS]


def resolve_names(datasets: Sequence[str]) -> list[str]:
    """The dataset keys ``datasets`` names, groups (``all``, ``hvsa``) expanded, duplicates dropped, in order.

    ``ValueError`` if a name is unknown.
    """
    names: list[str] = []
    for name in datasets:
        for n in GROUPS.get(name, [name]):
            if n not in PREPARERS and n not in HVSA_PREPARERS and n not in TAXONOMIC_PREPARERS:
                raise ValueError(f"datasets must be among {_known()} or 'all' (the seven benchmarks) or "
                                 f"'hvsa' (HVSA's datasets) or 'tree_alignment' (tree alignment's), got {name!r}")
            if n not in names:
                names.append(n)
    if not names:
        raise ValueError(f"datasets must name at least one of {_known()} or 'all' or 'hvsa' or 'tree_alignment'")
    return names


def _describe(name: str, ctx: Context) -> tuple[str, Optional[dict], object]:
    """``(title, completion marker or None, preparer)`` of a benchmark or an HVSA dataset."""
    if name in HVSA_PREPARERS:
        info, preparer = hd.dataset_info(name), HVSA_PREPARERS[name]
        title = info.title + (f", {info.num_classes} classes" if info.num_classes else "")
        check, error = hd.check_prepared, hd.DatasetNotPreparedError
    elif name in TAXONOMIC_PREPARERS:
        info, preparer = td.dataset_info(name), TAXONOMIC_PREPARERS[name]
        title = f"{info.title}, {info.num_labels} classes"
        check, error = td.check_prepared, td.DatasetNotPreparedError
    else:
        info, preparer = sd.benchmark_info(name), PREPARERS[name]
        title = f"{info.title}, {info.num_classes} classes"
        check, error = sd.check_prepared, sd.DatasetNotPreparedError
    try:
        marker = check(name, root=ctx.root)
    except error:
        marker = None
    return title, marker, preparer


def _context(root, **kwargs) -> Context:
    coco = tuple(kwargs.pop("coco_stuff_splits", ("train", "val")))
    if not coco or any(s not in ("train", "val") for s in coco):
        raise ValueError(f"coco_stuff_splits must be a non-empty subset of ('train', 'val'), got {coco}")
    workers = kwargs.pop("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return Context(root=Path(root).expanduser() if root is not None else data_root(), coco_stuff_splits=coco,
                   workers=workers, **kwargs)


def dry_run(datasets: Sequence[str], root=None, *, probe: bool = False, log: Callable[[str], None] = print,
            **options) -> int:
    """Print the state of every benchmark and file; return the number of missing files."""
    names = resolve_names(datasets)
    ctx = _context(root, log=log, **options)
    log(f"data root: {ctx.root}")
    missing = manual = 0
    seen: set[str] = set()
    for name in names:
        title, marker, preparer = _describe(name, ctx)
        if marker is not None and set(preparer.splits(ctx)) <= set(marker["splits"]):
            unit = " images" if name in PREPARERS else ""
            counts = ", ".join(f"{s}: {n}{unit}" for s, n in marker["splits"].items())
            log(f"{name} ({title}): prepared ({counts})")
            continue
        log(f"{name} ({title}): not prepared")
        for d in preparer.downloads(ctx):
            present, text = download_status(d, ctx)
            repeat = " (also needed above)" if d.filename in seen else ""
            if not present and d.filename not in seen:
                missing += 1
                manual += d.is_manual
                if probe and not d.is_manual:
                    size = probe_size(d.urls[0])
                    text += f" [server: {human_size(size)}]"
            seen.add(d.filename)
            log(f"  [{'ok' if present else 'missing'}] {d.filename}{repeat}: {text}")
        for step in preparer.manual_steps(ctx) if name not in PREPARERS else ():
            missing += 1
            manual += 1
            log(f"  [missing] {step}")
    if missing:
        log(f"{missing} file(s) missing ({manual} need a manual step). Run without --dry-run to download and prepare.")
    else:
        log("nothing is missing.")
    return missing


def prepare(datasets: Sequence[str], root=None, *, force: bool = False, log: Callable[[str], None] = print,
            **options) -> list[Path]:
    """Download and prepare ``datasets`` (benchmarks or HVSA datasets) under ``root``; return the markers written.

    ``options``: ``mirror`` (a base URL tried first for every file), ``download`` (False: use only
    files already in ``<root>/downloads``), ``verify_checksums``, ``progress``, ``workers``,
    ``coco_stuff_splits``, ``imagenet_root``, ``rare_species_root``. A benchmark whose step fails
    does not stop the others; at the end a :class:`~data_scripts.download.DataPreparationError`
    lists every failure with its instructions.
    """
    names = resolve_names(datasets)
    ctx = _context(root, log=log, **options)
    written, failed = [], []
    for name in names:
        try:
            if name in HVSA_PREPARERS:
                marker = run_hierarchical(HVSA_PREPARERS[name], ctx, force=force)
            elif name in TAXONOMIC_PREPARERS:
                marker = run_taxonomic(TAXONOMIC_PREPARERS[name], ctx, force=force)
            else:
                marker = run(PREPARERS[name], ctx, force=force)
        except DataPreparationError as exc:
            log(f"{name}: FAILED: {exc}")
            failed.append(f"{name}: {exc}")
            continue
        if marker is not None:
            written.append(marker)
    if failed:
        raise DataPreparationError(
            f"{len(failed)} of {len(names)} benchmark(s) not prepared (the others are):\n" + "\n".join(failed)
        )
    return written


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m data_scripts.prepare`` (the appendix checks its commands against it)."""
    p = argparse.ArgumentParser(
        prog="python -m data_scripts.prepare",
        description="Download and prepare the open-vocabulary segmentation benchmarks, HVSA's datasets and "
                    "tree alignment's datasets for hyro_edu.",
    )
    p.add_argument("--datasets", nargs="+", required=True, metavar="NAME",
                   help=f"any of {', '.join(_known())}; 'all' (the seven benchmarks), 'hvsa' "
                        f"({', '.join(HVSA_PREPARERS)}) or 'tree_alignment' ({', '.join(TAXONOMIC_PREPARERS)})")
    p.add_argument("--root", default=None, help="data root (default: $HYRO_EDU_DATA or ~/hyro_edu_data)")
    p.add_argument("--dry-run", action="store_true", help="only list what is prepared, present or missing")
    p.add_argument("--probe", action="store_true", help="with --dry-run: ask the servers for the download sizes")
    p.add_argument("--force", action="store_true", help="prepare again even if the completion marker exists")
    p.add_argument("--no-download", action="store_true", help="use only files already in <root>/downloads")
    p.add_argument("--mirror", default=None, help="base URL tried first for every file (<mirror>/<file name>)")
    p.add_argument("--skip-checksums", action="store_true", help="do not verify MD5 sums (for repacked archives)")
    p.add_argument("--coco-stuff-splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    p.add_argument("--workers", type=int, default=1, help="processes for the conversion (default 1)")
    p.add_argument("--imagenet-root", default=None,
                   help="tiered_imagenet_h, imagenet_protect: an ILSVRC-2012 folder with train/<wnid>/ and val/")
    p.add_argument("--rare-species-root", default=None,
                   help="rare_species: a copy of the Hugging Face dataset imageomics/rare-species (with metadata.csv)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    options = dict(
        mirror=args.mirror, download=not args.no_download, verify_checksums=not args.skip_checksums,
        progress=not args.quiet, workers=args.workers, coco_stuff_splits=tuple(args.coco_stuff_splits),
        imagenet_root=args.imagenet_root, rare_species_root=args.rare_species_root,
    )
    try:
        if args.dry_run:
            return 1 if dry_run(args.datasets, args.root, probe=args.probe, **options) else 0
        prepare(args.datasets, args.root, force=args.force, **options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataPreparationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
