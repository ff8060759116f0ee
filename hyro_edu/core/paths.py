"""Where hyro_edu reads data and writes caches and checkpoints: one environment variable each.

=========================  =============================  ==================================
what                       environment variable           default
=========================  =============================  ==================================
prepared datasets          ``HYRO_EDU_DATA``              ``~/hyro_edu_data``
caches (weights, tiny      ``HYRO_EDU_CACHE``             ``~/.cache/hyro_edu``
models trained on first
use)
training checkpoints/logs  ``HYRO_EDU_CHECKPOINTS``       ``~/hyro_edu_checkpoints``
=========================  =============================  ==================================

Each function creates nothing; call ``.mkdir(parents=True, exist_ok=True)`` where you write.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["data_root", "cache_dir", "checkpoint_dir", "atomic_torch_save", "load_cached"]


def _from_env(var: str, default: str) -> Path:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else Path(default).expanduser()


def data_root() -> Path:
    """Root of the prepared datasets: ``$HYRO_EDU_DATA`` or ``~/hyro_edu_data``."""
    return _from_env("HYRO_EDU_DATA", "~/hyro_edu_data")


def cache_dir() -> Path:
    """Cache for downloaded weights and models trained on first use: ``$HYRO_EDU_CACHE`` or ``~/.cache/hyro_edu``."""
    return _from_env("HYRO_EDU_CACHE", "~/.cache/hyro_edu")


def checkpoint_dir() -> Path:
    """Training checkpoints and logs: ``$HYRO_EDU_CHECKPOINTS`` or ``~/hyro_edu_checkpoints``."""
    return _from_env("HYRO_EDU_CHECKPOINTS", "~/hyro_edu_checkpoints")


def atomic_torch_save(obj, path) -> None:
    """``torch.save(obj, path)`` such that ``path`` is never half-written.

    The object goes to a temporary file in the same folder, is flushed to disk, and replaces
    ``path`` with ``os.replace`` (atomic on POSIX and Windows): a reader, or a run restarted after
    a crash, sees the old file or the new one, never a truncated one.  Creates the parent folder.
    """
    import torch  # lazy: this module is imported by tools that need no torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; caches and runs are shared like any other file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_cached(path):
    """What :func:`hyro_edu.core.paths.atomic_torch_save` wrote at ``path`` (tensors only, on the
    CPU), or ``None`` when there is no file or it cannot be read (a damaged cache entry is rebuilt
    by the caller, never trusted)."""
    import torch  # lazy: this module is imported by tools that need no torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file counts as absent
        return None
