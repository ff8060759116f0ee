"""Block Cayley vs dense Cayley vs torch's orthogonal parametrization, side by side in one process.

Builds a d x d rotation three ways and times building it (forward) and building it plus the
backward pass of a scalar loss ``(R * G).sum()`` (forward+backward):

* ``block``: HyRo's parametrisation, ``hyro_edu.geometry.cayley.block_cayley`` of ``Θ (d/n, n, n)``:
  K = d/n Cayley transforms ``(I - A_k)^{-1}(I + A_k)`` in one batched solve of size n.
  Cost O(d n^2).  The blocks are what ``block_matvec`` uses; no dense d x d matrix is formed.
* ``dense``: one Cayley transform of a full ``Θ (d, d)``: one d x d solve, O(d^3).
* ``torch``: ``torch.nn.utils.parametrizations.orthogonal`` on ``nn.Linear(d, d)`` with its
  default map for square real matrices, ``orthogonal_map="matrix_exp"`` (``Q = B·exp(A)``, A the
  skew part of the lower triangle, B a fixed orthogonal base: ``use_trivialization=True``).
  ``--torch-map cayley`` selects torch's own dense Cayley map instead.

All three start from the same random Θ (entries N(0, 0.1²/n)), so ``matrix_exp`` is not timed at
its zero-input fast path.  Each timing is the median of ``--repeats`` runs after two warm-up runs.
Ratios > 1 mean the block version is faster.

Usage::

    python benchmarks/bench_cayley.py                      # CPU, d in 512/768/1024, n in 32..256
    python benchmarks/bench_cayley.py --device cuda
    python benchmarks/bench_cayley.py --dims 768 --blocks 256 --repeats 21
    python benchmarks/bench_cayley.py --threads 1          # a shared / loaded CPU
    python benchmarks/bench_cayley.py --device cuda --out cayley.json   # and the JSON record

Target (issue 3): block Cayley at d = 768, n = 256 at least 5x faster than dense Cayley.  Under
the verdict the script prints the flop rate of both forward solves: the wall-clock ratio is the
flop ratio (d/n)^2 = 9 times the blocks' rate over the dense rate (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn.utils import parametrizations

from _report import make_record, target, write_record
from _timing import median_seconds  # benchmarks/_timing.py: the script's folder is on sys.path
from hyro_edu.geometry.cayley import block_cayley, cayley, skew


def block_fns(theta: torch.Tensor, g: torch.Tensor):
    """(forward, forward+backward) closures: block Cayley transform of ``theta (K, n, n)``."""
    k, n, _ = theta.shape
    gb = (
        g.reshape(k, n, k, n).diagonal(dim1=0, dim2=2).permute(2, 0, 1).contiguous()
    )  # G's diagonal blocks

    def forward():
        with torch.no_grad():
            return block_cayley(theta)

    def forward_backward():
        theta.grad = None
        (block_cayley(theta) * gb).sum().backward()

    return forward, forward_backward


def dense_fns(theta: torch.Tensor, g: torch.Tensor):
    """Closures for one dense Cayley transform of ``theta (d, d)``."""

    def forward():
        with torch.no_grad():
            return cayley(skew(theta), check=False)

    def forward_backward():
        theta.grad = None
        (cayley(skew(theta), check=False) * g).sum().backward()

    return forward, forward_backward


def torch_fns(theta: torch.Tensor, g: torch.Tensor, orthogonal_map: str):
    """Closures for ``parametrizations.orthogonal`` on ``Linear(d, d)``, started from ``theta``."""
    d = theta.shape[0]
    layer = nn.Linear(d, d, bias=False, device=theta.device, dtype=theta.dtype)
    parametrizations.orthogonal(layer, orthogonal_map=orthogonal_map)
    original = layer.parametrizations.weight.original
    with torch.no_grad():
        original.copy_(theta)  # same free parameters as the Cayley versions, not the zero init

    def forward():
        with torch.no_grad():
            return layer.weight

    def forward_backward():
        original.grad = None
        (layer.weight * g).sum().backward()

    return forward, forward_backward


def solve_gflops(d: int, n: int, ms: float) -> float:
    """Flop rate of building R from ``K = d/n`` solves of size ``n`` in ``ms`` milliseconds.

    Counts the solve only: LU (``2n^3/3``) plus ``n`` right-hand sides (``2n^3``) per block.
    """
    return (d // n) * (2 / 3 + 2) * n**3 / (ms * 1e-3) / 1e9


def orthogonality_error(r: torch.Tensor) -> float:
    """``max |R^T R - I|`` over a matrix or a batch of blocks: is the timed code right?"""
    eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    return (r.transpose(-1, -2) @ r - eye).abs().max().item()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 768, 1024])
    parser.add_argument("--blocks", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="call torch.set_num_threads (default: leave torch's choice). With torch's MKL "
        "builds, set_num_threads(k >= 2) can make batched CPU LU return wrong results "
        "(pytorch/pytorch#142815); block_cayley solves one block at a time on the CPU to stay "
        "clear of it, and the table flags any R that is not orthogonal",
    )
    parser.add_argument(
        "--torch-map",
        default="matrix_exp",
        choices=["matrix_exp", "cayley", "householder"],
        help="orthogonal_map of torch.nn.utils.parametrizations.orthogonal (default: its default "
        "for square matrices, matrix_exp)",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dev, dtype = args.device, getattr(torch, args.dtype)
    gen = torch.Generator(device=dev).manual_seed(0)
    time_it = lambda fn: 1e3 * median_seconds(fn, repeats=args.repeats, device=dev)  # noqa: E731
    print(
        f"torch {torch.__version__}, device {dev}"
        + (
            f" ({torch.cuda.get_device_name()})"
            if dev == "cuda"
            else f", {torch.get_num_threads()} threads"
        )
        + f", {args.dtype}, median of {args.repeats} runs; times in ms"
    )
    print(f"torch map: parametrizations.orthogonal(orthogonal_map={args.torch_map!r})")
    header = (
        f"{'d':>5} {'n':>4} {'K':>3} | {'block':>8} {'dense':>8} {'torch':>8} {'dense/blk':>9}"
        f" {'torch/blk':>9} | {'block':>8} {'dense':>8} {'torch':>8} {'dense/blk':>9}"
        f" {'torch/blk':>9}"
    )
    print(f"{'':15} | {'forward (build R)':^46} | {'forward + backward':^46}")
    print(header)
    print("-" * len(header))
    results = {}
    for d in args.dims:
        theta_d = (0.1 / d**0.5) * torch.randn(d, d, device=dev, dtype=dtype, generator=gen)
        g = torch.randn(d, d, device=dev, dtype=dtype, generator=gen)
        dense = [time_it(f) for f in dense_fns(theta_d.clone().requires_grad_(True), g)]
        torch_t = [time_it(f) for f in torch_fns(theta_d, g, args.torch_map)]
        for n in args.blocks:
            if d % n:
                print(f"{d:>5} {n:>4}   - | n does not divide d: skipped")
                continue
            theta_b = (0.1 / n**0.5) * torch.randn(
                d // n, n, n, device=dev, dtype=dtype, generator=gen
            )
            fns = block_fns(theta_b.requires_grad_(True), g)
            try:
                bad = orthogonality_error(fns[0]()) > 1e3 * torch.finfo(dtype).eps * n
            except RuntimeError as err:  # the batched LU can also fail outright (see --threads)
                print(f"{d:>5} {n:>4} {d // n:>3} | block Cayley failed: {str(err)[:60]}")
                continue
            block = [time_it(f) for f in fns]
            results[(d, n)] = dict(block=block, dense=dense, torch=torch_t, orthogonal=not bad)
            cells = []
            for i in range(2):
                cells.append(
                    f"{block[i]:8.2f} {dense[i]:8.2f} {torch_t[i]:8.2f}"
                    f" {dense[i] / block[i]:8.1f}x {torch_t[i] / block[i]:8.1f}x"
                )
            flag = "  <- WRONG R (not orthogonal): see --threads" if bad else ""
            print(f"{d:>5} {n:>4} {d // n:>3} | " + " | ".join(cells) + flag)
    targets, headline = [], {}
    what = "block Cayley >= 5x faster than dense at d = 768, n = 256 (forward and forward+backward)"
    if (768, 256) in results:
        r = results[(768, 256)]
        fwd, both = r["dense"][0] / r["block"][0], r["dense"][1] / r["block"][1]
        verdict = "met" if min(fwd, both) >= 5 else "NOT met"
        print(
            f"\ntarget (block >= 5x faster than dense at d=768, n=256): {verdict}"
            f" (forward {fwd:.1f}x, forward+backward {both:.1f}x;"
            f" flop ratio of the solves (d/n)^2 = {(768 / 256) ** 2:.0f}x)"
        )
        # wall-clock ratio = flop ratio x (block's flop rate / dense's flop rate)
        rate_dense = solve_gflops(768, 768, r["dense"][0])
        rate_block = solve_gflops(768, 256, r["block"][0])
        print(
            f"forward solve rate: dense {rate_dense:.1f} Gflop/s, blocks {rate_block:.1f} Gflop/s"
            f" ({rate_block / rate_dense:.2f} of dense; 5x needs >= {5 / 9:.2f})"
        )
        targets.append(target(what, min(fwd, both), 5.0, unit="x", met=min(fwd, both) >= 5, direction=">="))
        headline = dict(speedup_forward=fwd, speedup_forward_backward=both,
                        gflops_dense=rate_dense, gflops_block=rate_block)
    else:
        targets.append(target(what, None, 5.0, unit="x", met=None, direction=">="))
    if args.out:
        rows = []
        for (d, n), r in results.items():
            row = dict(d=d, n=n, blocks=d // n, orthogonal=r["orthogonal"])
            for i, kind in enumerate(("forward", "forward_backward")):
                for impl in ("block", "dense", "torch"):
                    row[f"{impl}_{kind}"] = r[impl][i] / 1e3  # seconds
                row[f"dense_over_block_{kind}"] = r["dense"][i] / r["block"][i]
                row[f"torch_over_block_{kind}"] = r["torch"][i] / r["block"][i]
            rows.append(row)
        record = make_record(
            "bench_cayley.py", dev, repeats=args.repeats, torch_map=args.torch_map,
            sizes=dict(dims=args.dims, blocks=args.blocks, dtype=args.dtype),
            results=rows, targets=targets, headline=headline,
        )
        write_record(args.out, record)
    return results


if __name__ == "__main__":
    main()
