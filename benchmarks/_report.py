"""The JSON record of a benchmark run (imported as ``_report``: the scripts run from this folder).

Every script's ``--out PATH`` writes one JSON object with the same top-level keys, so that
``gpu_check.py`` (and a person) can read any of them alike::

    {"script": "bench_cayley.py",
     "device": "cuda", "device_name": "NVIDIA H200", "torch": "2.x", "python": "3.11.x",
     "threads": 16, ...                     # environment(): where it ran
     "sizes": {...},                        # what was measured (the script's own keys)
     "results": [{...}, ...],               # one row per measured case: medians in seconds, ratios
     "targets": [{"what": ..., "value": ..., "limit": ..., "unit": ..., "met": true|false|null}],
     "headline": {...}}                     # the few numbers the summary shows

``met`` is ``null`` where the script does not evaluate the target (a CPU run, another size).
Seconds are seconds, memory is bytes.
"""
from __future__ import annotations

import platform
from typing import Optional

import torch

from _table import write_record

__all__ = ["cpu_name", "environment", "target", "make_record", "write_record"]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    """Where the run happened: device, its name, torch, Python, CUDA and CPU threads."""
    cuda = device == "cuda"
    return dict(
        device=device,
        device_name=torch.cuda.get_device_name() if cuda else cpu_name(),
        torch=torch.__version__,
        cuda=torch.version.cuda if cuda else None,
        python=platform.python_version(),
        threads=torch.get_num_threads(),
    )


def target(what: str, value: Optional[float], limit: float, *, unit: str, met: Optional[bool],
           direction: str = "<=") -> dict:
    """One target: ``value`` against ``limit`` (``value <= limit`` or ``>=``), ``met`` ``None`` when
    not evaluated here."""
    return dict(what=what, value=value, limit=limit, direction=direction, unit=unit, met=met)


def make_record(script: str, device: str, *, sizes: dict, results: list, targets: list,
                headline: dict, **extra) -> dict:
    """The record: ``script``, :func:`environment`, ``sizes``, ``results``, ``targets``, ``headline``
    and any ``extra`` keys."""
    return dict(script=script, **environment(device), sizes=sizes, results=results, targets=targets,
                headline=headline, **extra)
