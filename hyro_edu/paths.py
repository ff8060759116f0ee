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

import os
from pathlib import Path

__all__ = ["data_root", "cache_dir", "checkpoint_dir"]


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
