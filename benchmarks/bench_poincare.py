"""hyro_edu.geometry.poincare against geoopt, side by side in one process.

Times expmap0, logmap0, mobius_add, mobius_matvec and dist on N x D float32
points (default 65,536 x 512, the issue's size) and prints, for each op,
ours / geoopt as a ratio of median wall times (< 1 means we are faster).

Two pairings are measured:

* ``safe``: what a user gets by default. hyro_edu with ``project=True``
  against geoopt's ``PoincareBall`` methods, which also project their outputs.
* ``raw``: the bare formulas. hyro_edu with ``project=False`` (which validates
  that points lie in the ball) against geoopt's functional core
  (``geoopt.manifolds.stereographic.math``), which neither projects nor checks.

Usage::

    python benchmarks/bench_poincare.py                 # CPU, 65,536 x 512
    python benchmarks/bench_poincare.py --device cuda   # on a GPU
    python benchmarks/bench_poincare.py --n 8192 --repeats 5   # quick look
    python benchmarks/bench_poincare.py --device cuda --out poincare.json   # and the JSON record

Target (issue 3): no op slower than geoopt.
"""
from __future__ import annotations

import argparse
import warnings

import torch

from _report import make_record, target, write_record
from _timing import median_seconds  # benchmarks/_timing.py: the script's folder is on sys.path
from hyro_edu import poincare as P
from hyro_edu.core.curvature import to_geoopt_k

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # geoopt's torch.jit.script at import
    import geoopt
    import geoopt.manifolds.stereographic.math as gm


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=65_536, help="number of points (default 65,536)")
    parser.add_argument("--d", type=int, default=512, help="dimension (default 512)")
    parser.add_argument("--c", type=float, default=1.0, help="curvature parameter c > 0 (curvature -c)")
    parser.add_argument("--repeats", type=int, default=9, help="timed runs per op (median reported)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")

    torch.manual_seed(0)
    dev, c = args.device, args.c
    k = torch.tensor(to_geoopt_k(c), device=dev)
    ball = geoopt.PoincareBall(c=c).to(dev)
    v = torch.randn(args.n, args.d, device=dev) / args.d**0.5
    w = torch.randn(args.n, args.d, device=dev) / args.d**0.5
    x = P.expmap0(v, c=c)
    y = P.expmap0(w, c=c)
    m = torch.randn(args.d, args.d, device=dev) / args.d**0.5

    ops = {
        "expmap0": (
            lambda: P.expmap0(v, c=c),
            lambda: ball.expmap0(v),
            lambda: P.expmap0(v, c=c, project=False),
            lambda: gm.expmap0(v, k=k),
        ),
        "logmap0": (
            lambda: P.logmap0(x, c=c),
            lambda: ball.logmap0(x),
            lambda: P.logmap0(x, c=c, project=False),
            lambda: gm.logmap0(x, k=k),
        ),
        "mobius_add": (
            lambda: P.mobius_add(x, y, c=c),
            lambda: ball.mobius_add(x, y),
            lambda: P.mobius_add(x, y, c=c, project=False),
            lambda: gm.mobius_add(x, y, k=k),
        ),
        "mobius_matvec": (
            lambda: P.mobius_matvec(m, x, c=c),
            lambda: ball.mobius_matvec(m, x),
            lambda: P.mobius_matvec(m, x, c=c, project=False),
            lambda: gm.mobius_matvec(m, x, k=k),
        ),
        "dist": (
            lambda: P.dist(x, y, c=c),
            lambda: ball.dist(x, y),
            lambda: P.dist(x, y, c=c, project=False),
            lambda: gm.dist(x, y, k=k),
        ),
    }

    print(f"# hyro_edu.geometry.poincare vs geoopt {geoopt.__version__}: {args.n} x {args.d} float32, c = {c}, "
          f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'op':14s} {'ours safe':>10s} {'geoopt safe':>12s} {'ratio':>6s}   "
          f"{'ours raw':>9s} {'geoopt raw':>11s} {'ratio':>6s}")
    worst = 0.0
    rows = []
    with torch.no_grad():
        for name, (ours_safe, theirs_safe, ours_raw, theirs_raw) in ops.items():
            t = [median_seconds(f, repeats=args.repeats, device=dev) for f in (ours_safe, theirs_safe, ours_raw, theirs_raw)]
            r_safe, r_raw = t[0] / t[1], t[2] / t[3]
            worst = max(worst, r_safe, r_raw)
            rows.append(dict(op=name, ours_safe=t[0], geoopt_safe=t[1], ratio_safe=r_safe,
                             ours_raw=t[2], geoopt_raw=t[3], ratio_raw=r_raw))
            print(f"{name:14s} {t[0] * 1e3:8.1f}ms {t[1] * 1e3:10.1f}ms {r_safe:6.2f}   "
                  f"{t[2] * 1e3:7.1f}ms {t[3] * 1e3:9.1f}ms {r_raw:6.2f}")
    verdict = "met" if worst <= 1.0 else "NOT met"
    print(f"# largest ratio ours/geoopt: {worst:.2f} -> target 'no op slower than geoopt' {verdict}")
    if args.out:
        record = make_record(
            "bench_poincare.py", dev, geoopt=geoopt.__version__, repeats=args.repeats,
            sizes=dict(n=args.n, d=args.d, c=c, dtype="float32"), results=rows,
            targets=[target("largest ours/geoopt time ratio (no op slower than geoopt)", worst, 1.0,
                            unit="ratio", met=worst <= 1.0)],
            headline=dict(worst_ratio=worst, worst_op=max(rows, key=lambda r: max(r["ratio_safe"], r["ratio_raw"]))["op"]),
        )
        write_record(args.out, record)
    return rows


if __name__ == "__main__":
    main()
