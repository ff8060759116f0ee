"""Timing shared by the benchmark scripts (imported as ``_timing``: the scripts run from this folder)."""
from __future__ import annotations

import statistics
import time

import torch


def median_seconds(fn, *, repeats: int, device: str) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after two warm-up runs (CUDA synchronised)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
