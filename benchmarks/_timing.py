"""Timing shared by the benchmark scripts (imported as ``_timing``: the scripts run from this folder)."""
from __future__ import annotations

import argparse
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


def step_parser(description: str, sizes: dict, *, variants, cpu_size: str, batch_help: str,
                steps_help: str) -> argparse.ArgumentParser:
    """The command line of a training-step benchmark: ``--device``, ``--size`` (one of ``sizes``; default: full on
    cuda, ``cpu_size`` on cpu), ``--batch``, ``--steps``, ``--warmup``, ``--variants``, ``--amp``,
    ``--threads`` and ``--out``; read it with :func:`step_args`."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    parser.add_argument("--size", choices=list(sizes), default=None,
                        help=f"default: full on cuda, {cpu_size} on cpu")
    parser.add_argument("--batch", type=int, default=None, help=batch_help)
    parser.add_argument("--steps", type=int, default=None, help=steps_help)
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (2, 3)")
    parser.add_argument("--variants", nargs="+", choices=variants, default=list(variants))
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: 1 on a CPU; 0 keeps torch's choice)")
    parser.add_argument("--out", default=None, help="write the results as JSON to this path")
    return parser


def step_args(parser: argparse.ArgumentParser, argv, sizes: dict, *, cpu_size: str,
              check=None) -> argparse.Namespace:
    """Parse ``argv`` with a :func:`step_parser`: fill ``--size`` and the step counts in from
    ``sizes[size]`` (also kept as ``args.cfg``), check them (``parser.error``; ``check(args)``
    may add its own), and default ``--threads`` to 1 on a CPU."""
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if args.size is None:
        args.size = "full" if args.device == "cuda" else cpu_size
    args.cfg = sizes[args.size]
    for name in ("batch", "steps", "warmup"):
        if getattr(args, name) is None:
            setattr(args, name, args.cfg[name])
    for name, low in (("batch", 1), ("steps", 1), ("warmup", 0)):
        if getattr(args, name) < low:
            parser.error(f"--{name} must be >= {low}, got {getattr(args, name)}")
    if check is not None:
        check(args)
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads is not None and args.threads < 0:
        parser.error("--threads must be >= 0 (0: torch's choice)")
    return args
