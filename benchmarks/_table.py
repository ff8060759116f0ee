"""The results table shared by the benchmark scripts (imported as ``_table``: the scripts run from this folder)."""
from __future__ import annotations

import json
from typing import Optional


def print_header(header: str) -> None:
    """Print a blank line, the table's ``header`` and a rule of dashes as long as it."""
    print()
    print(header)
    print("-" * len(header))


def ratio_cell(ratio: Optional[float], width: int) -> str:
    """``ratio`` as ``"  1.234x"`` (three decimals, ``width`` characters with the ``x``), or ``"-"``
    right-aligned in ``width`` characters when it is ``None``."""
    return f"{ratio:{width - 1}.3f}x" if ratio is not None else f"{'-':>{width}}"


def add_ratios(results: list, reference: str) -> Optional[dict]:
    """Set ``time_ratio`` and ``memory_ratio`` of every result (a ``dict`` with ``variant``,
    ``seconds`` and ``peak_bytes``) against the result of the variant ``reference`` (``None`` when
    that did not run, or for memory when its peak is 0); return that reference result or ``None``."""
    ref = next((r for r in results if r["variant"] == reference), None)
    for r in results:
        r["time_ratio"] = r["seconds"] / ref["seconds"] if ref else None
        r["memory_ratio"] = (r["peak_bytes"] / ref["peak_bytes"]
                             if ref and ref["peak_bytes"] else None)
    return ref


def write_record(path: str, record: dict) -> None:
    """Write ``record`` as indented JSON to ``path`` and say so."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {path}")
