"""The results table shared by the benchmark scripts (imported as ``_table``: the scripts run from this folder)."""
from __future__ import annotations

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
