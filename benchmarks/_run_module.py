"""Run a training command line as ``python -m MODULE ARGS...`` would, then record what it did.

Used by ``gpu_check.py`` for the smoke parts::

    python benchmarks/_run_module.py RECORD.json RUNS_ROOT MODULE [ARGS...]

runs ``MODULE`` as ``__main__`` in this process (so that the peak GPU memory of the whole run,
training and evaluation, can be read afterwards), then writes ``RECORD.json``: the exit code, the
wall seconds, the peak GPU memory (``torch.cuda.max_memory_allocated`` and ``..._reserved``; null
on a CPU), and from the one run folder under ``RUNS_ROOT`` that holds a ``result.pt`` the steps,
the training seconds (``Trainer.fit``, in-training validation included), the last loss and the
metrics of its ``metrics.json``.  Exits with the module's exit code.
"""
from __future__ import annotations

import json
import math
import runpy
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _exit_code(err: SystemExit) -> int:
    if err.code is None:
        return 0
    return err.code if isinstance(err.code, int) else 1


def _finished_run(runs_root: Path) -> dict:
    """What the run under ``runs_root`` stored: steps, train seconds, last loss, metrics."""
    import torch

    found = sorted(runs_root.glob("*/result.pt"))
    if len(found) != 1:
        return dict(run_dir=None, run_error=f"expected one */result.pt under {runs_root}, found {len(found)}")
    run = found[0].parent
    result = torch.load(found[0], map_location="cpu", weights_only=False)
    losses = [float(x) for x in result.get("losses", []) if x is not None]
    steps = int(result.get("steps") or 0)
    train_seconds = float(result.get("train_seconds") or 0.0)
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else None
    return dict(
        run_dir=str(run), steps=steps, train_seconds=train_seconds,
        seconds_per_step=train_seconds / steps if steps else None,
        first_loss=losses[0] if losses else None, final_loss=losses[-1] if losses else None,
        losses_finite=all(math.isfinite(x) for x in losses) if losses else None,
        metrics=metrics.get("metrics") if metrics else None,
        metrics_unit=metrics.get("unit") if metrics else None,
        metrics_file=str(metrics_file) if metrics else None,
    )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    record_path, runs_root, module, args = Path(argv[0]), Path(argv[1]), argv[2], argv[3:]
    sys.path.insert(0, str(ROOT))  # as `python -m` from the repository root would
    sys.argv = [module, *args]
    start = time.perf_counter()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as err:
        code = _exit_code(err)
    except BaseException:  # noqa: BLE001 - recorded, then reported by the exit code
        traceback.print_exc()
        code = 1
    wall = time.perf_counter() - start
    sys.stdout.flush()

    import torch

    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    record = dict(
        module=module, args=args, exit_code=code, wall_seconds=wall,
        device="cuda" if cuda else "cpu",
        device_name=torch.cuda.get_device_name() if cuda else None,
        torch=torch.__version__,
        peak_gpu_bytes=torch.cuda.max_memory_allocated() if cuda else None,
        peak_gpu_reserved_bytes=torch.cuda.max_memory_reserved() if cuda else None,
    )
    try:
        record.update(_finished_run(runs_root))
    except Exception as err:  # noqa: BLE001 - a damaged run is reported, not fatal here
        record.update(run_dir=None, run_error=f"{type(err).__name__}: {err}")
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
