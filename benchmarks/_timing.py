"""Timing shared by the benchmark scripts (imported as ``_timing``: the scripts run from this folder)."""
from __future__ import annotations

import statistics
import time
from typing import Callable

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


def timed_steps(step: Callable[[], float], *, warmup: int, steps: int, device: str) -> tuple[list, list]:
    """Run ``step()`` ``warmup + steps`` times; return ``(values, times)``: what every call returned
    (e.g. the losses, ``warmup + steps`` of them) and the wall times in seconds of the last
    ``steps`` calls, each between two CUDA synchronisations on ``device == "cuda"``."""
    cuda = device == "cuda"
    values, times = [], []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        values.append(step())  # a loss's .item() synchronises as well
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return values, times
