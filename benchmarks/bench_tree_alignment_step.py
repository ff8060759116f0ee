"""Training-step time and peak memory of tree alignment: full vs ProTeCt vs one shared curvature.

One training step of ``hyro_edu.tree_alignment.model.TreeAlignmentModel`` is::

    text = MaPLe text tower(every non-root node's prompt)        # (K, E)
    scores, fused = levels + cross-attention, per node            # (B, K), (B, K, E)
    loss = DTL + 0.5 NCL [+ 0.5 L_align on the two trees]         # curvatures, golden-section c_m
    loss.backward(); optimizer.step()

timed for three variants on the same CLIP weights, tree and synthetic batch:

* ``full``    -- learned c_i and c_t, c_m derived by the golden-section search with implicit
  gradients (``learn2derive1``);
* ``hypv1``   -- one shared learned curvature (``learn_common``, the paper's single-curvature
  row). The ratios are taken to this variant: the paper reports 74 s vs 74.5 s per batch and
  10,400 MB for both (single vs multiple curvatures; a claim of the seed summary, unchecked);
* ``protect`` -- MaPLe + ProTeCt (final class token, no level features, no alignment).

Sizes (``--size``):

* ``tiny`` (the default on a CPU): the tiny CLIP (``hyro_edu.clip.tiny``, random weights), 64 px,
  prompt depth 2, levels after blocks (1, 2, 3), the toy world's 67-node tree, batch 32, SGD
  momentum 0.9 (the toy config).
* ``full`` (the default on CUDA): ViT-B/16 with random weights (no download; the cost of a step
  does not depend on them), 224 px, prompt depth 3, levels after blocks (4, 7, 11), CIFAR-100's
  two-level tree (``hyro_edu.hierarchy.taxonomies.cifar100_hierarchy``, 121 nodes: the paper's
  WordNet tree has 148 and depth 10, which the package does not ship), batch 8, SGD.

Memory: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` before the
variant's model is built; on a CPU the peak RSS increase (``_memory.py``, approximate).

Usage::

    python benchmarks/bench_tree_alignment_step.py                 # CPU: --size tiny
    python benchmarks/bench_tree_alignment_step.py --size full     # GPU: ViT-B/16, 224 px
    python benchmarks/bench_tree_alignment_step.py --size full --amp bf16 --out ta_step.json
"""

from __future__ import annotations

import math
import statistics

import torch

from _memory import PeakMemory, memory_method  # benchmarks/_memory.py: the script's folder is on sys.path
from _report import make_record, target
from _table import add_ratios, print_header, ratio_cell, write_record
from _timing import step_args, step_parser, timed_steps
from hyro_edu.hierarchy.taxonomic_tree import TaxonomicTree
from hyro_edu.hierarchy.taxonomies import cifar100_hierarchy, toyworld_hierarchy
from hyro_edu.tree_alignment.model import TreeAlignmentModel

VARIANTS = ("full", "hypv1", "protect")
REFERENCE = "hypv1"
TARGET_RATIO = 1.05  # full / hypv1 step time, full size on a GPU
PAPER_RATIO = 74.5 / 74.0
MB = 2 ** 20

SIZES = {
    "tiny": dict(image=64, batch=32, depth=2, layers=(1, 2, 3), tree="toy world (67 nodes)", steps=5, warmup=2,
                 momentum=0.9),
    "full": dict(image=224, batch=8, depth=3, layers=(4, 7, 11), tree="CIFAR-100 two-level (121 nodes)", steps=10,
                 warmup=3, momentum=0.0),
}


def build_clip(size: str):
    torch.manual_seed(0)
    if size == "tiny":
        from hyro_edu.clip.tiny import build_tiny_clip

        return build_tiny_clip(seed=0)
    import open_clip

    return open_clip.create_model("ViT-B-16", pretrained=None)


def build_tree(size: str) -> TaxonomicTree:
    return TaxonomicTree(toyworld_hierarchy() if size == "tiny" else cifar100_hierarchy())


def run_variant(args, variant, clip, tree, images, labels) -> dict:
    memory = PeakMemory(args.device)
    model = TreeAlignmentModel(clip, tree, variant=variant, prompt_depth=args.cfg["depth"], layers=args.cfg["layers"],
                               seed=0).to(args.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=args.cfg["momentum"])
    amp = args.amp == "bf16"
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=amp):
            loss = model(images, labels, generator=generator)["loss"]
        loss.float().backward()
        optimizer.step()
        return loss.item()

    losses, times = timed_steps(step, warmup=args.warmup, steps=args.steps, device=args.device)
    peak = memory.stop()
    result = dict(variant=variant, seconds=statistics.median(times), times=times, peak_bytes=peak,
                  trainable=sum(p.numel() for p in params), finite=all(math.isfinite(v) for v in losses),
                  first_loss=losses[0], last_loss=losses[-1])
    del model, optimizer
    return result


def parse_args(argv=None):
    parser = step_parser(__doc__, SIZES, variants=VARIANTS, cpu_size="tiny", batch_help="default: 32 (tiny), 8 (full)",
                         steps_help="timed steps (tiny 5, full 10)")
    return step_args(parser, argv, SIZES, cpu_size="tiny")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    clip = build_clip(args.size).to(args.device)
    tree = build_tree(args.size)
    g = torch.Generator().manual_seed(0)
    s = args.cfg["image"]
    images = torch.randn(args.batch, 3, s, s, generator=g).to(args.device)
    labels = torch.randint(tree.num_labels, (args.batch,), generator=g).to(args.device)
    where = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {args.device} ({where}), amp {args.amp}")
    print(f"size {args.size}: {s} px, batch {args.batch}, prompt depth {args.cfg['depth']}, levels "
          f"{args.cfg['layers']}, tree {args.cfg['tree']}; median of {args.steps} steps after {args.warmup} warm-up")
    print(f"peak memory: {memory_method(args.device)}")

    results = []
    for variant in args.variants:
        r = run_variant(args, variant, clip, tree, images, labels)
        results.append(r)
        print(f"  {variant:<8} done: {r['seconds']:.4f} s/step, loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}",
              flush=True)

    ref = add_ratios(results, REFERENCE)
    header = f"{'variant':<9} {'trainable':>10} {'s/step':>9} {'/hypv1':>8} {'peak MB':>9} {'/hypv1':>8}  finite"
    print_header(header)
    for r in results:
        print(f"{r['variant']:<9} {r['trainable']:>10,} {r['seconds']:9.4f} {ratio_cell(r['time_ratio'], 8)} "
              f"{r['peak_bytes'] / MB:9.1f} {ratio_cell(r['memory_ratio'], 8)}  {'yes' if r['finite'] else 'NO'}")
    print("(hypv1 = one shared curvature; full = learned c_i, c_t and the derived c_m; protect = no tree alignment)")

    print()
    full = next((r for r in results if r["variant"] == "full"), None)
    verdict = None
    what = f"full <= {TARGET_RATIO:.2f}x the shared-curvature step (paper: {PAPER_RATIO:.3f}x)"
    if not (cuda and args.size == "full"):
        print(f"target ({what}, --size full on a GPU): not evaluated here")
    elif full is None or ref is None:
        print(f"target ({what}): not evaluated (needs the variants full and hypv1)")
    else:
        verdict = full["time_ratio"] <= TARGET_RATIO
        print(f"target {what}: {'PASS' if verdict else 'FAIL'} ({full['time_ratio']:.3f}x)")

    if args.out:
        sizes = dict(size=args.size, batch=args.batch, image=s, tree=args.cfg["tree"], steps=args.steps,
                     warmup=args.warmup)
        ratio = full["time_ratio"] if full is not None else None
        record = make_record(
            "bench_tree_alignment_step.py", args.device, **sizes, amp=args.amp, reference=REFERENCE,
            target_ratio=TARGET_RATIO, target_met=verdict, memory=memory_method(args.device), sizes=sizes,
            results=results, targets=[target(what, ratio, TARGET_RATIO, unit="x", met=verdict)],
            headline=dict(full_seconds=full["seconds"] if full else None, full_over_hypv1=ratio,
                          hypv1_seconds=ref["seconds"] if ref else None,
                          max_peak_bytes=max(r["peak_bytes"] for r in results)),
        )
        write_record(args.out, record)
    return results


if __name__ == "__main__":
    main()
