"""The T-product through the FFT against its definition fold(circ(A) · unfold(B)), side by side.

For A (n1, n2, n3) and B (n2, l, n3) in float32, times

* ``definition``: ``hyro_edu.geometry.tproduct.tproduct_definition`` -- builds the (n1·n3) x (n2·n3)
  block-circulant matrix and multiplies it with the (n2·n3) x l unfolding of B;
  O(n1 n2 l n3²) flops;
* ``fft``: ``hyro_edu.geometry.tproduct.tproduct`` -- real FFT along mode 3, n3//2 + 1 complex facewise
  products, inverse real FFT; O(n1 n2 l n3 + (n1 n2 + n2 l + n1 l) n3 log n3),

and prints the median wall times (after warm-up runs) and their ratio definition / fft (> 1
means the FFT is faster), with the largest difference between the two results.

Usage::

    python benchmarks/bench_tproduct.py                 # CPU
    python benchmarks/bench_tproduct.py --device cuda   # on a GPU
    python benchmarks/bench_tproduct.py --repeats 3 --sizes 32x32x32   # quick look
    python benchmarks/bench_tproduct.py --threads 1     # steadier on a busy machine
    python benchmarks/bench_tproduct.py --device cuda --out tproduct.json   # and the JSON record

Target (issue 3): the FFT at least 10x faster than the definition at n3 = 64.
"""

from __future__ import annotations

import argparse
import os

import torch

from _report import make_record, target, write_record
from _timing import median_seconds  # benchmarks/_timing.py: the script's folder is on sys.path
from hyro_edu.geometry.tproduct import tproduct, tproduct_definition


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        n1, n2, l = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a size is n1xn2xl, e.g. 64x64x16; got {text!r}"
        ) from None
    if min(n1, n2, l) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return n1, n2, l


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--sizes",
        type=parse_size,
        nargs="+",
        default=[(32, 32, 32), (64, 64, 64)],
        help="(n1, n2, l) as n1xn2xl (default 32x32x32 64x64x64)",
    )
    parser.add_argument(
        "--n3", type=int, nargs="+", default=[8, 16, 32, 64], help="tube lengths n3"
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed runs per case (median reported)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# T-product, float32, device {dev}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} after 2 warm-ups; "
        f"load average {load:.1f} on {os.cpu_count()} CPUs (a busy machine: try --threads 1)"
    )
    print(
        f"{'n1 x n2 x l':>13s} {'n3':>4s} {'definition':>11s} {'fft':>9s} {'def/fft':>8s} "
        f"{'max |diff|':>10s}"
    )
    at_64, rows = [], []
    with torch.no_grad():
        for n1, n2, l in args.sizes:
            for n3 in args.n3:
                a = torch.randn(n1, n2, n3, device=dev)
                b = torch.randn(n2, l, n3, device=dev)
                t_def = median_seconds(
                    lambda: tproduct_definition(a, b), repeats=args.repeats, device=dev
                )
                t_fft = median_seconds(lambda: tproduct(a, b), repeats=args.repeats, device=dev)
                diff = (tproduct(a, b) - tproduct_definition(a, b)).abs().max().item()
                ratio = t_def / t_fft
                if n3 == 64:
                    at_64.append(ratio)
                rows.append(dict(n1=n1, n2=n2, l=l, n3=n3, definition=t_def, fft=t_fft, ratio=ratio,
                                 max_abs_diff=diff))
                print(
                    f"{f'{n1}x{n2}x{l}':>13s} {n3:4d} {t_def * 1e3:9.2f}ms {t_fft * 1e3:7.2f}ms "
                    f"{ratio:8.1f} {diff:10.1e}"
                )
    what = "FFT >= 10x faster than the definition at n3 = 64 (smallest ratio over the sizes)"
    worst = min(at_64) if at_64 else None
    if at_64:
        verdict = "met" if worst >= 10 else "NOT met"
        print(
            f"# smallest definition/fft ratio at n3 = 64: {worst:.1f} -> target '>= 10x' {verdict}"
        )
    if args.out:
        record = make_record(
            "bench_tproduct.py", dev, repeats=args.repeats,
            sizes=dict(sizes=[list(s) for s in args.sizes], n3=args.n3, dtype="float32"),
            results=rows,
            targets=[target(what, worst, 10.0, unit="x", met=None if worst is None else worst >= 10,
                            direction=">=")],
            headline=dict(min_ratio_at_n3_64=worst, max_abs_diff=max(r["max_abs_diff"] for r in rows)),
        )
        write_record(args.out, record)
    return rows


if __name__ == "__main__":
    main()
