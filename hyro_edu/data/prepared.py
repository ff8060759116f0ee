"""What the readers of prepared datasets share: data root, preparation command, completion marker, manifest.

A preparation (``python -m data_scripts.prepare``) writes a dataset under ``<root>/<name>/`` and,
last, the marker ``<root>/<name>/.prepared.json`` (:data:`hyro_edu.data.prepared.MARKER_NAME`):
a JSON object with at least ``layout_version`` and ``splits`` (split -> count).  A dataset counts
as prepared only when the marker exists, can be read, is of the layout version the reader expects
and lists the split asked for (:func:`hyro_edu.data.prepared.check_marker`); every file is
written atomically (:func:`hyro_edu.data.prepared.write_json`), so an interrupted preparation
never looks complete.  A reader that finds no complete preparation says how to make one
(:func:`hyro_edu.data.prepared.not_prepared_message`).

The readers of :mod:`hyro_edu.data.benchmarks` and :mod:`hyro_edu.data.hierarchical_datasets`
share this protocol, each with its own registry of datasets
(:func:`hyro_edu.data.prepared.lookup`); their segmentation readers read the ``(image, label)``
pairs that ``manifest.json`` lists in the same way (:class:`hyro_edu.data.prepared.ManifestPairs`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TypeVar, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hyro_edu.core.paths import data_root

__all__ = [
    "MARKER_NAME",
    "lookup",
    "resolve_root",
    "preparation_command",
    "not_prepared_message",
    "write_json",
    "clear_marker",
    "check_marker",
    "layout_check",
    "check_written",
    "read_manifest",
    "check_index",
    "read_image",
    "read_label",
    "ManifestPairs",
]

#: The completion marker's file name inside a prepared dataset's folder.
MARKER_NAME = ".prepared.json"

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str) -> T:
    """``registry[name]``; a ``ValueError`` listing the known keys when ``name`` is not one of them."""
    if name not in registry:
        raise ValueError(f"name must be one of {sorted(registry)}, got {name!r}")
    return registry[name]


def resolve_root(root: Union[str, Path, None]) -> Path:
    """The data root ``root`` as a path (``~`` expanded); ``None``: ``$HYRO_EDU_DATA``
    (:func:`hyro_edu.core.paths.data_root`)."""
    return data_root() if root is None else Path(root).expanduser()


def preparation_command(name: str, root: Union[str, Path, None]) -> str:
    """The command that prepares dataset ``name`` under the data root ``root``
    (:func:`hyro_edu.data.prepared.resolve_root`)."""
    return f"python -m data_scripts.prepare --datasets {name} --root {resolve_root(root)}"


def not_prepared_message(title: str, directory: Path, reason: str, command: str) -> str:
    """The message of a dataset ``title`` not (completely) prepared in ``directory``: the ``reason``
    and the ``command`` that prepares it."""
    return (f"{title} is not prepared under {directory} ({reason}). Prepare it with\n    {command}\n"
            "from the hyro-edu repository root (add --dry-run to list what is missing, --force to redo it).")


def write_json(path: Path, obj) -> None:
    """Write ``obj`` to ``path`` as indented JSON (non-ASCII kept), atomically: a ``.tmp`` file, then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def clear_marker(directory: Path) -> None:
    """Remove the completion marker in ``directory`` if there is one (the first step of every (re)preparation)."""
    marker = Path(directory) / MARKER_NAME
    if marker.exists():
        marker.unlink()


def check_marker(directory: Path, name: str, splits: Sequence[str], split: Optional[str], *,
                 version_problem: Callable[[dict], Optional[str]],
                 not_prepared: Callable[[str], Exception]) -> dict:
    """The completion marker in ``directory`` (of dataset ``name``), read as a ``dict``, once it is checked.

    ``splits``: the splits the dataset has; ``split``: the one asked for, or ``None`` for any.
    ``version_problem(marker)`` returns why the marker's layout is not the one the reader expects
    (or ``None`` when it is).  Raises ``ValueError`` when ``split`` is not one of ``splits``, and
    ``not_prepared(reason)`` when the marker is missing or unreadable, ``version_problem`` names a
    problem, or ``split`` was not prepared.
    """
    if split is not None and split not in splits:
        raise ValueError(f"split must be one of {list(splits)} for {name}, got {split!r}")
    marker = Path(directory) / MARKER_NAME
    if not marker.is_file():
        raise not_prepared(f"no completion marker {MARKER_NAME}: never prepared or interrupted")
    try:
        content = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise not_prepared(f"unreadable completion marker: {exc}") from None
    problem = version_problem(content)
    if problem is not None:
        raise not_prepared(problem)
    if split is not None and split not in content.get("splits", {}):
        raise not_prepared(f"split {split!r} was not prepared, only {sorted(content.get('splits', {}))}")
    return content


def layout_check(name: str, layout_version: int) -> Callable[[dict], Optional[str]]:
    """The ``version_problem`` of :func:`hyro_edu.data.prepared.check_marker` for a reader of dataset
    ``name`` in layout ``layout_version``: ``None`` for a marker of both, otherwise the reason (with
    "rerun with --force")."""
    def version_problem(content: dict) -> Optional[str]:
        if content.get("layout_version") == layout_version and content.get("dataset") == name:
            return None
        return (f"marker of layout version {content.get('layout_version')} for "
                f"{content.get('dataset')!r}, this code reads version {layout_version}; rerun with --force")

    return version_problem


def check_written(directory: Path, known_splits: Sequence[str], splits: Mapping, files: Sequence[str]) -> None:
    """Check a completion marker about to be written in ``directory``: ``ValueError`` unless ``splits``
    (split -> number of samples) is non-empty and among ``known_splits``, and every path in ``files``
    (relative to ``directory``) is a file."""
    if not splits or any(s not in known_splits for s in splits):
        raise ValueError(f"splits must be among {list(known_splits)}, got {sorted(splits)}")
    for rel in files:
        if not (Path(directory) / rel).is_file():
            raise ValueError(f"files names {rel}, which does not exist under {directory}")


def read_manifest(directory: Path, split: str, marker: dict,
                  not_prepared: Callable[[str], Exception]) -> list[tuple[str, str]]:
    """The ``(image, label)`` paths (relative to the data root) that ``<directory>/manifest.json``
    lists for ``split``; ``not_prepared(reason)`` is raised when the manifest cannot be read or its
    count differs from the completion ``marker``'s (:func:`hyro_edu.data.prepared.check_marker`)."""
    manifest_path = Path(directory) / "manifest.json"
    try:
        pairs = json.loads(manifest_path.read_text(encoding="utf-8"))[split]
    except (OSError, ValueError, KeyError) as exc:
        raise not_prepared(f"cannot read {manifest_path.name}: {exc!r}") from None
    if len(pairs) != marker["splits"][split]:
        raise not_prepared("manifest and completion marker disagree; rerun with --force")
    return [(str(a), str(b)) for a, b in pairs]


def check_index(index, length: int) -> None:
    """``IndexError`` unless ``index`` is an integer (not a ``bool``) in ``[-length, length)``: a
    reader's ``__getitem__`` check."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -length <= index < length:
        raise IndexError(f"index must be an integer in [{-length}, {length - 1}], got {index!r}")


def read_image(path) -> torch.Tensor:
    """An RGB image file as a uint8 tensor (3, H, W)."""
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def read_label(path) -> torch.Tensor:
    """A label map (uint8 PNG or uint16 TIFF) as an int64 tensor (H, W), values unchanged."""
    with Image.open(path) as im:
        array = np.asarray(im)
    if array.ndim != 2:
        raise ValueError(f"label file {path} must hold a single-channel label map, got shape {array.shape}")
    return torch.from_numpy(array.astype(np.int64))


class ManifestPairs(Dataset):
    """Base of the readers of one prepared split of ``(image, label)`` files as ``{"image", "label", "name"}`` samples.

    ``image`` uint8 (3, H, W) (:func:`hyro_edu.data.prepared.read_image`), ``label`` int64 (H, W)
    (:func:`hyro_edu.data.prepared.read_label`), ``name`` the label file's stem; ``transform``, if
    given, is applied to the sample dict.  A subclass's ``__init__`` calls ``_select``, checks
    the preparation and sets ``_pairs`` (:func:`hyro_edu.data.prepared.read_manifest`).
    """

    def _select(self, name: str, splits: Sequence[str], split: Optional[str], root,
                transform: Optional[Callable]) -> None:
        """Set ``name``, ``split`` (default: the last of ``splits``), ``root`` and ``transform``;
        ``ValueError`` for a split not in ``splits`` or a ``transform`` that is not callable."""
        split = splits[-1] if split is None else split
        if split not in splits:
            raise ValueError(f"split must be one of {list(splits)} for {name}, got {split!r}")
        if transform is not None and not callable(transform):
            raise ValueError(f"transform must be callable or None, got {type(transform).__name__}")
        self.name, self.split, self.root, self.transform = name, split, resolve_root(root), transform

    def __len__(self) -> int:
        return len(self._pairs)

    def __getitem__(self, index: int) -> dict:
        check_index(index, len(self))
        image_rel, label_rel = self._pairs[index]
        sample = {
            "image": read_image(self.root / image_rel),
            "label": read_label(self.root / label_rel),
            "name": Path(label_rel).stem,
        }
        return self.transform(sample) if self.transform is not None else sample
