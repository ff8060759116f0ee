"""Training-step time and peak memory of the five fine-tuning modes, side by side in one process.

One training step of :class:`hyro_edu.segmentation.model.OpenVocabSegmenter` is what CAT-Seg, HyperCLIP,
HyRo and H-CLIP train with::

    logits = model(images, class_names)          # CLIP (both towers, adapted) + CAT-Seg decoder
    loss = segmentation_loss(logits, target, T)   # BCE (or --loss ce) at the label resolution
    loss.backward(); AdamW.step()                 # adapters + decoder

for each ``mode`` of :data:`hyro_edu.clip.finetune.MODES` (``frozen``, ``attention``, ``hyperclip``,
``rotation``, ``hyro``, ``hclip``; ``frozen`` trains the decoder alone).  ``--loss ce`` times the
HyRo paper's softmax cross-entropy instead of CAT-Seg's BCE; ``--prompts imagenet`` encodes the
80 ImageNet templates per class (P = 80) instead of one; ``--matmul-precision`` is passed to
``torch.set_float32_matmul_precision`` (default ``high``, what the official ``train_net.py`` sets:
TF32 matrix products on Ampere and newer GPUs, no effect on a CPU).  The CLIP has random weights
(``load_clip(..., pretrained=None)``: no download; the cost of a step does not depend on the
weights); images, labels and the ``T`` class names are synthetic (every prompt is padded to the
text tower's context length, so the text cost does not depend on the names either).  Each mode gets a freshly built model; the timed steps
follow ``--warmup`` untimed ones and the table reports the median.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` before the
mode's model is built (weights, optimizer state, activations and the batch; not the caching
allocator's reserve).  On a CPU, the peak resident set size (RSS) above the RSS before the model
is built, sampled every 2 ms by a thread when ``psutil`` is installed; before each mode the
previous mode's freed memory is handed back to the OS (glibc ``malloc_trim``), else the next mode
would reuse it without raising the RSS.  Without psutil the script falls back to
``resource.getrusage(...).ru_maxrss``, a process-wide high-water mark: a later mode then shows
only what it needs *beyond* the largest earlier peak (often 0), so compare modes with psutil, or
run one mode per process.  Sampled RSS misses spikes shorter than 2 ms: CPU numbers are approximate.

``--amp bf16|fp16`` runs the forward pass under ``torch.autocast`` (fp16 with a ``GradScaler``);
the hyperbolic maths of the adapters stays in float32 inside the library
(:func:`hyro_edu.core.numerics.fp32_math`), the loss is computed in float32.

Usage::

    python benchmarks/bench_training_step.py                  # GPU: ViT-B/16, 384², batch 4, 171 classes
    python benchmarks/bench_training_step.py --amp bf16
    python benchmarks/bench_training_step.py --steps 10 --warmup 3 --out hyro_step.json   # and the JSON record
    python benchmarks/bench_training_step.py --device cpu     # tiny CLIP, 64², batch 4, 171 classes, 1 thread
    python benchmarks/bench_training_step.py --device cpu --threads 0 --modes attention hyro   # torch's threads
    python benchmarks/bench_training_step.py --model vit-b16 --device cpu --image-size 384 \\
        --batch 1 --classes 171 --steps 1 --warmup 0 --modes attention hyro

Targets (issue; one H100, ViT-B/16 at 384², batch 4, 171 classes): ``hyro`` at most 0.15 s per
step; the adapters add at most 5 % step time over ``attention`` (CAT-Seg's own fine-tuning);
peak memory at most 20 GB.  Checked only on CUDA at that size.
"""

from __future__ import annotations

import argparse
import math
import statistics
import warnings

import torch

from _memory import PeakMemory, memory_method  # benchmarks/_memory.py: the script's folder is on sys.path
from _report import make_record, target, write_record
from _table import print_header, ratio_cell
from _timing import timed_steps

from hyro_edu.segmentation.catseg import LOSSES, segmentation_loss
from hyro_edu.clip.tiny import TINY_CLIP_NAME
from hyro_edu.clip.weights import load_clip
from hyro_edu.clip.finetune import MODES, FinetuneConfig
from hyro_edu.segmentation.model import PROMPT_ENSEMBLES, build_segmenter

MODELS = {"vit-b16": "ViT-B-16", "tiny": TINY_CLIP_NAME}
#: Block sizes that divide the tiny CLIP's width 64 (the official 128/256/128 need 512 or 768).
TINY_BLOCKS = dict(scale_block=32, rotation_block=64, hclip_block=32)
TARGET_SECONDS = 0.15  # hyro, s/step
TARGET_OVERHEAD = 1.05  # hyro / attention
TARGET_PEAK_BYTES = 20e9
GB = 1e9


# ----------------------------------------------------------------------------
# one mode
# ----------------------------------------------------------------------------
def build(args, mode: str):
    """A fresh segmenter of ``mode`` on a randomly initialised CLIP, in training mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone = load_clip(MODELS[args.model], pretrained=None, device=args.device)
    blocks = TINY_BLOCKS if args.model == "tiny" else {}
    templates = PROMPT_ENSEMBLES[args.prompts]
    config = FinetuneConfig(mode=mode, **blocks)
    return build_segmenter(backbone, config, template=templates).train()


def run_mode(args, mode: str, images, target, names) -> dict:
    memory = PeakMemory(args.device)
    torch.manual_seed(0)
    model = build(args, mode)
    params = [p for _, p in model.trainable_named_parameters()]
    optimizer = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-4)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    scaler = torch.amp.GradScaler(args.device) if args.amp == "fp16" else None

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images, names)
        loss = segmentation_loss(logits.float(), target, len(names), loss=args.loss)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.item()

    losses, times = timed_steps(step, warmup=args.warmup, steps=args.steps, device=args.device)
    peak = memory.stop()
    result = dict(
        mode=mode,
        seconds=statistics.median(times),
        peak=peak,
        trainable=sum(p.numel() for p in params),
        finite=all(math.isfinite(v) for v in losses),
        first_loss=losses[0],
        last_loss=losses[-1],
    )
    del model, optimizer, params
    return result


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    parser.add_argument("--model", choices=list(MODELS), default=None,
                        help="default: vit-b16 on cuda, tiny on cpu")
    parser.add_argument("--image-size", type=int, default=None, help="default: 384 (vit-b16), 64 (tiny)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, default=171, help="class names per step (COCO-Stuff: 171)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on cuda, 3 on cpu)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 on cuda, 1 on cpu)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--loss", choices=LOSSES, default="bce",
                        help="bce (CAT-Seg's code) or ce (the HyRo paper)")
    parser.add_argument("--prompts", choices=list(PROMPT_ENSEMBLES), default="single",
                        help="single (P = 1, the released configs) or imagenet (P = 80 templates "
                        "per class)")
    parser.add_argument("--matmul-precision", choices=["highest", "high", "medium"],
                        default="high",
                        help="torch.set_float32_matmul_precision (official train_net.py: high)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch.set_num_threads (default: 1 on a CPU, where a thread pool stalls whenever another "
        "process holds a core; 0 keeps torch's choice). Warning: with torch's MKL builds "
        "set_num_threads(k >= 2) can make batched LU (the Cayley rotations) wrong",
    )
    parser.add_argument("--out", default=None, help="write the results as JSON to this path")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not cuda:
        parser.error("--device cuda requested but CUDA is not available")
    full = args.device == "cuda"
    if args.model is None:
        args.model = "vit-b16" if full else "tiny"
    if args.image_size is None:
        args.image_size = 384 if args.model == "vit-b16" else 64
    if args.steps is None:
        args.steps = 20 if full else 3
    if args.warmup is None:
        args.warmup = 5 if full else 1
    for name in ("batch", "classes", "steps", "image_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.threads is None and not full:
        args.threads = 1
    if args.threads is not None and args.threads < 0:
        parser.error("--threads must be >= 0 (0: torch's choice)")
    return args


def synthetic_batch(args, generator):
    s, b, t = args.image_size, args.batch, args.classes
    images = torch.randn(b, 3, s, s, generator=generator).to(args.device)  # already "normalised"
    target = torch.randint(0, t, (b, s, s), generator=generator)
    target[torch.rand(b, s, s, generator=generator) < 0.1] = 255  # some ignored pixels, as in COCO-Stuff
    names = [f"thing number {i}" for i in range(t)]
    return images, target.to(args.device), names


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    cuda = args.device == "cuda"
    images, target, names = synthetic_batch(args, torch.Generator().manual_seed(0))
    where = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {args.device} ({where}), amp {args.amp}, "
          f"matmul precision {args.matmul_precision}")
    print(
        f"model {MODELS[args.model]} (random weights), {args.image_size}x{args.image_size}, batch {args.batch}, "
        f"{args.classes} classes, P = {len(PROMPT_ENSEMBLES[args.prompts])}, loss {args.loss}; "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"peak memory: {memory_method(args.device)}")

    results = []
    for mode in args.modes:
        r = run_mode(args, mode, images, target, names)
        results.append(r)
        print(f"  {mode:<9} done: {r['seconds']:.3f} s/step, loss {r['first_loss']:.4f} -> {r['last_loss']:.4f}",
              flush=True)

    ref = next((r for r in results if r["mode"] == "attention"), None)
    header = (f"{'mode':<10} {'trainable':>11} {'s/step':>9} {'/attention':>10} "
              f"{'peak GB':>9} {'/attention':>10}  finite")
    print_header(header)
    for r in results:
        t_ratio = ratio_cell(r["seconds"] / ref["seconds"] if ref else None, 10)
        m_ratio = ratio_cell(r["peak"] / ref["peak"] if ref and ref["peak"] > 0 else None, 10)
        print(f"{r['mode']:<10} {r['trainable']:>11,} {r['seconds']:9.3f} {t_ratio} "
              f"{r['peak'] / GB:9.3f} {m_ratio}  {'yes' if r['finite'] else 'NO (NaN/inf loss)'}")

    full_size = (args.model, args.image_size, args.batch, args.classes) == ("vit-b16", 384, 4, 171)
    hyro = next((r for r in results if r["mode"] == "hyro"), None)
    worst = max(results, key=lambda r: r["peak"])
    ratio = hyro["seconds"] / ref["seconds"] if hyro is not None and ref is not None else None
    print()
    if not cuda:
        print("targets (one H100, ViT-B/16, 384², batch 4, 171 classes): not evaluated on a CPU")
    else:
        if not full_size:
            print("note: the targets are stated for ViT-B/16, 384², batch 4, 171 classes; this run differs")
        checks = []
        if hyro is not None:
            checks.append((f"hyro <= {TARGET_SECONDS} s/step", hyro["seconds"] <= TARGET_SECONDS,
                           f"{hyro['seconds']:.3f} s"))
            if ratio is not None:
                checks.append((f"hyro adapter overhead <= {100 * (TARGET_OVERHEAD - 1):.0f}% over attention",
                               ratio <= TARGET_OVERHEAD, f"{100 * (ratio - 1):+.1f}%"))
        checks.append((f"peak memory <= {TARGET_PEAK_BYTES / GB:.0f} GB (every mode)",
                       worst["peak"] <= TARGET_PEAK_BYTES, f"max {worst['peak'] / GB:.2f} GB ({worst['mode']})"))
        for what, ok, value in checks:
            print(f"target {what}: {'PASS' if ok else 'FAIL'} ({value})")
    if args.out:
        write_record(args.out, json_record(args, results, ref, hyro, worst, ratio, evaluate=cuda))
    return results


def json_record(args, results, ref, hyro, worst, ratio, *, evaluate: bool) -> dict:
    """The ``--out`` record (``_report.make_record``); targets' ``met`` is ``None`` on a CPU (not evaluated)."""
    rows = [dict(r, peak_bytes=r["peak"], time_ratio=r["seconds"] / ref["seconds"] if ref else None,
                 memory_ratio=r["peak"] / ref["peak"] if ref and ref["peak"] > 0 else None) for r in results]
    for r in rows:
        del r["peak"]

    def verdict(ok):
        return bool(ok) if evaluate and ok is not None else None

    seconds = hyro["seconds"] if hyro else None
    targets = [
        target(f"hyro s/step <= {TARGET_SECONDS} (one H100-class GPU)", seconds, TARGET_SECONDS, unit="s",
               met=verdict(None if seconds is None else seconds <= TARGET_SECONDS)),
        target(f"hyro step time <= {TARGET_OVERHEAD}x attention", ratio, TARGET_OVERHEAD, unit="x",
               met=verdict(None if ratio is None else ratio <= TARGET_OVERHEAD)),
        target(f"peak memory <= {TARGET_PEAK_BYTES / GB:.0f} GB (every mode)", worst["peak"], TARGET_PEAK_BYTES,
               unit="bytes", met=verdict(worst["peak"] <= TARGET_PEAK_BYTES)),
    ]
    headline = dict(hyro_seconds=seconds, hyro_over_attention=ratio,
                    attention_seconds=ref["seconds"] if ref else None,
                    max_peak_bytes=worst["peak"], max_peak_mode=worst["mode"])
    return make_record(
        "bench_training_step.py", args.device, amp=args.amp, loss=args.loss, prompts=args.prompts,
        matmul_precision=args.matmul_precision, reference="attention", memory=memory_method(args.device),
        sizes=dict(model=MODELS[args.model], image_size=args.image_size, batch=args.batch, classes=args.classes,
                   steps=args.steps, warmup=args.warmup, modes=args.modes),
        results=rows, targets=targets, headline=headline,
    )


if __name__ == "__main__":
    main()
