"""Peak memory shared by the benchmark scripts (imported as ``_memory``: the scripts run from this folder).

On CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.  On a CPU, the
peak resident set size (RSS) above the RSS at the start (:class:`CpuPeak`), sampled every 2 ms by
a thread when ``psutil`` is installed, else ``ru_maxrss`` (a process-wide high-water mark); before
each measurement the freed heap memory is handed back to the OS (:func:`release_freed_memory`).
"""
from __future__ import annotations

import ctypes
import gc
import resource
import sys
import threading
import time

import torch

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None

__all__ = ["CpuPeak", "release_freed_memory", "PeakMemory", "memory_method"]


class CpuPeak:
    """Peak RSS above the RSS at ``start()``: sampled with psutil, else ``ru_maxrss``."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.method = "psutil RSS, sampled every 2 ms" if psutil is not None else "ru_maxrss (process-wide)"
        self._thread = None

    @staticmethod
    def _maxrss() -> int:
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def start(self) -> None:
        if psutil is None:
            self.base = self._maxrss()
            return
        proc = psutil.Process()
        self.base = self.peak = proc.memory_info().rss
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, proc.memory_info().rss)
                time.sleep(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        if psutil is None:
            return max(0, self._maxrss() - self.base)
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)
        return max(0, self.peak - self.base)


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so RSS baselines are honest."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS then keeps what the allocator caches
        pass


class PeakMemory:
    """Measures the peak memory (bytes) on ``device`` (``"cuda"`` or ``"cpu"``) from its creation to :meth:`stop`.

    Created: releases freed memory, then on CUDA empties the cache and resets the peak statistics,
    on a CPU starts a :class:`CpuPeak`.
    """

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        release_freed_memory()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.meter = CpuPeak()
            self.meter.start()

    def stop(self) -> int:
        """The peak bytes since the creation: ``torch.cuda.max_memory_allocated`` or the CPU's peak RSS increase."""
        return torch.cuda.max_memory_allocated() if self.cuda else self.meter.stop()


def memory_method(device: str) -> str:
    """How :class:`PeakMemory` measures on ``device``, for the scripts' headers."""
    return "torch.cuda.max_memory_allocated" if device == "cuda" else CpuPeak().method
