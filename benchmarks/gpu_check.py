"""Measure everything on one GPU with one command; on a CPU, the same parts at tiny sizes.

    python benchmarks/gpu_check.py OUTDIR            # a GPU: full sizes, under 8 minutes
    python benchmarks/gpu_check.py OUTDIR --cpu      # tiny sizes on the CPU (CI), about a minute
    bash benchmarks/gpu_check.sh OUTDIR [--cpu]      # the same

Runs each part as a subprocess from the repository root, with its own time limit, and writes
``OUTDIR/<part>.json`` for every part and ``OUTDIR/summary.json``; each part's full output goes
to ``OUTDIR/logs/<part>.log``.  A part that fails or runs out of time writes its JSON with
``"status": "failed"`` or ``"timeout"`` and the tail of its output, and the next part runs.

Parts (``--parts`` selects some; ``--list`` prints them with their sizes):

* ``poincare``, ``cayley``, ``tproduct``, ``hyro_step``, ``hvsa_step``, ``tree_alignment_step``:
  the ``bench_*.py`` scripts with ``--out``; the part's JSON is the script's record (``_report.py``)
  plus the part's status;
* ``smoke_hyro``, ``smoke_hvsa``, ``smoke_tree_alignment``: a few training steps and the final
  evaluation of each trainer's command line (``python -m hyro_edu.<system>.train``) at full model
  size on a GPU, on fixture datasets in the real on-disk formats (prepared offline here) or the toy
  world; through ``_run_module.py``, which records the exit code, wall seconds, s/step, peak GPU
  memory and the final metrics.

Everything the commands write goes under ``OUTDIR/scratch`` (``HYRO_EDU_DATA``, ``HYRO_EDU_CACHE``,
``HYRO_EDU_CHECKPOINTS``, ``XDG_CACHE_HOME``, ``TORCH_HOME``, ``HF_HOME``, ``MPLCONFIGDIR``), which is
deleted at the end unless ``--keep-scratch``.  On a CPU (no CUDA, or ``--cpu``, which also hides
any GPU from the parts) every part runs with one thread.  Exit status: 0 when every part's status
is ``ok`` (a missed speed target is reported, not an error), 1 otherwise.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
TAIL = 4000  # characters of output kept in a failed part's JSON


# ----------------------------------------------------------------------------------------------
# the parts
# ----------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    out: Path
    scratch: Path
    gpu: bool

    @property
    def data(self) -> Path:
        return self.scratch / "data"

    def runs(self, part: str) -> Path:
        return self.scratch / "runs" / part


@dataclass
class Part:
    name: str
    what: str
    gpu_seconds: int  # time limit on a GPU; the limits add up to under 8 minutes
    cpu_seconds: int  # time limit on a CPU
    commands: Callable[[Ctx], list]  # a list of argv lists, run in order
    kind: str = "bench"  # "bench": the last command wrote OUT/<name>.raw.json; "smoke": _run_module's record
    sizes: dict = field(default_factory=dict)


def bench(script: str, gpu_args: list, cpu_args: list):
    def commands(ctx: Ctx) -> list:
        args = gpu_args if ctx.gpu else cpu_args
        return [[PY, str(HERE / script), *args]]

    return commands


def _set(overrides: dict) -> list:
    """``--set key=value`` for each override (booleans in YAML's spelling)."""
    def text(v):
        return str(v).lower() if isinstance(v, bool) else str(v)

    return [x for k, v in overrides.items() for x in ("--set", f"{k}={text(v)}")]


def _runner(ctx: Ctx, name: str, module: str, args: list) -> list:
    runs = ctx.runs(name)
    return [PY, str(HERE / "_run_module.py"), str(ctx.out / f"{name}.raw.json"), str(runs), module,
            *args, "--root", str(runs), "--retrain"]


#: HyRo's gpu_smoke config; on a CPU the test suite's tiny overrides (tests/test_seg_training.py).
SMOKE_HYRO_GPU = dict(max_steps=10, val_every=5, checkpoint_every=10, progress=False)
SMOKE_HYRO_CPU = dict(model="hyro-tiny", image_size=64, clip_resolution=64, scale_block=32, rotation_block=64,
                      hclip_block=32, max_steps=2, val_every=2, val_limit=1, checkpoint_every=2, batch_size=2,
                      eval_limit=1, num_workers=0, progress=False, eval_data="[voc20,pascal_context_59]")


def _smoke_on_fixtures(ctx: Ctx, name: str, fixtures: str, datasets: str, module: str, config: str,
                       overrides: dict) -> list:
    """Write the fixture sources, prepare ``datasets`` from them, then train ``config`` on them."""
    src = ctx.scratch / f"{name}_sources"
    prepare = [PY, "-m", "data_scripts.prepare", "--datasets", datasets, "--root", str(ctx.data),
               "--mirror", src.as_uri(), "--skip-checksums"]
    train = ["--config", config, "--data-root", str(ctx.data), *_set(overrides)]
    return [[PY, "-m", fixtures, str(src)], prepare, _runner(ctx, name, module, train)]


def smoke_hyro(ctx: Ctx) -> list:
    return _smoke_on_fixtures(ctx, "smoke_hyro", "data_scripts.fixtures", "all", "hyro_edu.segmentation.train",
                              "gpu_smoke", SMOKE_HYRO_GPU if ctx.gpu else SMOKE_HYRO_CPU)


#: HVSA's cityscapes config (DeepLabV3+-R101, the paper's head and recipe) with random weights on
#: the Cityscapes fixture, on a GPU and on a CPU alike.  The fixture's images are 8 x 6 pixels:
#: scaled x3 and cropped to 16 x 16 they need no padding.  Padded into the config's 512 x 1024
#: crops they are mostly zeros, the BatchNorm statistics collapse and the random-weight model
#: failed on a CPU (128 x 256 crops: NaN at the evaluation after 2 steps, loss 1e26 by step 6), so the step
#: at 512 x 1024 is timed by the hvsa_step part instead.
SMOKE_HVSA = dict(pretrained=False, crop_size="[16,16]", scale_range="[3.0,3.0]", batch_size=2, steps=6,
                  warmup_steps=2, eval_limit=2, checkpoint_every=6, progress=False)
SMOKE_HVSA_GPU = dict(SMOKE_HVSA, num_workers=2)
SMOKE_HVSA_CPU = dict(SMOKE_HVSA, num_workers=0)


def smoke_hvsa(ctx: Ctx) -> list:
    return _smoke_on_fixtures(ctx, "smoke_hvsa", "data_scripts.hvsa_fixtures", "cityscapes", "hyro_edu.hvsa.train",
                              "cityscapes", SMOKE_HVSA_GPU if ctx.gpu else SMOKE_HVSA_CPU)


#: Tree alignment's toy config (the toy world, rendered into the scratch cache) with ViT-B/16
#: (random weights) on a GPU, the tiny CLIP (random weights) on a CPU.
SMOKE_TA_GPU = dict(clip_model="ViT-B-16", clip_pretrained="null", steps=6, warmup_epochs=0,
                    toy_test_per_class=4, checkpoint_every=6, progress=False)
SMOKE_TA_CPU = dict(clip_model="hyro-tiny", clip_pretrained="null", shots=1, batch_size=12, steps=3,
                    warmup_epochs=0, toy_test_per_class=1, eval_batch_size=64, checkpoint_every=3,
                    progress=False)


def smoke_tree_alignment(ctx: Ctx) -> list:
    train = ["--config", "toy", "--data-root", str(ctx.data), *_set(SMOKE_TA_GPU if ctx.gpu else SMOKE_TA_CPU)]
    return [_runner(ctx, "smoke_tree_alignment", "hyro_edu.tree_alignment.train", train)]


PARTS = [
    Part("poincare", "Poincaré ops vs geoopt", 25, 120,
         bench("bench_poincare.py", ["--device", "cuda"], ["--n", "2048", "--d", "64", "--repeats", "3"]),
         sizes=dict(gpu="65,536 x 512, median of 9", cpu="2,048 x 64, median of 3")),
    Part("cayley", "block vs dense Cayley", 25, 120,
         bench("bench_cayley.py", ["--device", "cuda", "--repeats", "9"],
               ["--dims", "768", "--blocks", "256", "--repeats", "3", "--threads", "1"]),
         sizes=dict(gpu="d 512/768/1024 x n 32..256, median of 9", cpu="d 768, n 256, median of 3")),
    Part("tproduct", "FFT T-product vs its definition", 20, 120,
         bench("bench_tproduct.py", ["--device", "cuda"],
               ["--sizes", "16x16x16", "--n3", "8", "64", "--repeats", "3", "--threads", "1"]),
         sizes=dict(gpu="32^3 and 64^3 x n3 8..64, median of 7", cpu="16^3 x n3 8, 64, median of 3")),
    Part("hyro_step", "HyRo training step, all fine-tuning modes", 110, 240,
         bench("bench_training_step.py", ["--device", "cuda", "--steps", "10", "--warmup", "3"],
               ["--device", "cpu", "--image-size", "32", "--batch", "2", "--classes", "16", "--steps", "2",
                "--warmup", "1"]),
         sizes=dict(gpu="ViT-B/16, 384², batch 4, 171 classes, 10 steps + 3 warm-up",
                    cpu="tiny CLIP, 32², batch 2, 16 classes, 2 steps + 1 warm-up")),
    Part("hvsa_step", "HVSA training step", 70, 180,
         bench("bench_hvsa_step.py", ["--device", "cuda", "--size", "full", "--steps", "10", "--warmup", "3"],
               ["--device", "cpu", "--size", "small", "--steps", "2", "--warmup", "1"]),
         sizes=dict(gpu="DeepLabV3+-R101, 512x1024, batch 2, 10 steps + 3 warm-up",
                    cpu="toy FCN, 32², batch 8, 2 steps + 1 warm-up")),
    Part("tree_alignment_step", "tree-alignment training step", 60, 180,
         bench("bench_tree_alignment_step.py", ["--device", "cuda", "--size", "full", "--steps", "10",
                                                "--warmup", "3"],
               ["--device", "cpu", "--size", "tiny", "--batch", "8", "--steps", "2", "--warmup", "1"]),
         sizes=dict(gpu="ViT-B/16, 224², batch 8, 10 steps + 3 warm-up",
                    cpu="tiny CLIP, 64², batch 8, 2 steps + 1 warm-up")),
    Part("smoke_hyro", "HyRo trainer: gpu_smoke config, train + validate + evaluate", 70, 240, smoke_hyro,
         kind="smoke", sizes=dict(gpu="gpu_smoke: ViT-B/16 (random), 384², batch 4, 10 steps, six benchmarks",
                                  cpu="gpu_smoke with hyro-tiny, 64², batch 2, 2 steps, voc20 + PC-59")),
    Part("smoke_hvsa", "HVSA trainer: cityscapes config on the fixture, train + evaluate", 45, 180, smoke_hvsa,
         kind="smoke", sizes=dict(gpu="DeepLabV3+-R101 (random), the paper's head, 16x16 crops, batch 2, 6 steps",
                                  cpu="the same as on a GPU")),
    Part("smoke_tree_alignment", "tree-alignment trainer: toy config, train + evaluate", 40, 180,
         smoke_tree_alignment, kind="smoke",
         sizes=dict(gpu="ViT-B/16 (random), toy world 16-shot, 6 steps",
                    cpu="tiny CLIP (random), toy world 1-shot, 3 steps")),
]
PART_NAMES = [p.name for p in PARTS]


# ----------------------------------------------------------------------------------------------
# running one part
# ----------------------------------------------------------------------------------------------
def child_env(ctx: Ctx) -> dict:
    env = dict(os.environ)
    s = ctx.scratch
    env.update(HYRO_EDU_DATA=str(s / "data"), HYRO_EDU_CACHE=str(s / "cache"),
               HYRO_EDU_CHECKPOINTS=str(s / "runs"), XDG_CACHE_HOME=str(s / "xdg_cache"),
               TORCH_HOME=str(s / "torch"), HF_HOME=str(s / "hf"), MPLCONFIGDIR=str(s / "mpl"),
               PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if not ctx.gpu:  # one thread (a pool stalls on a shared CPU) and no GPU, even where one exists
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def run_command(argv: list, *, env: dict, log, timeout: float) -> tuple:
    """Run ``argv`` in its own process group, output appended to ``log``; ``(returncode, timed_out)``."""
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        return proc.wait(timeout=max(timeout, 1.0)), False
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        return proc.returncode, True


def tail(path: Path, n: int = TAIL) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    return text[-n:]


def first_nonfinite(value, where: str = "") -> str:
    """The key path of the first NaN or infinite number in ``value`` (nested), or ``""``."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "(the value)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = first_nonfinite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return ""


def smoke_headline(raw: dict) -> dict:
    return {k: raw.get(k) for k in ("exit_code", "run_wall_seconds", "steps", "train_seconds", "seconds_per_step",
                                    "peak_gpu_bytes", "final_loss")}


def run_part(part: Part, ctx: Ctx, *, timeout_scale: float) -> dict:
    limit = (part.gpu_seconds if ctx.gpu else part.cpu_seconds) * timeout_scale
    log_path = ctx.out / "logs" / f"{part.name}.log"
    raw_path = ctx.out / f"{part.name}.raw.json"
    raw_path.unlink(missing_ok=True)
    shutil.rmtree(ctx.runs(part.name), ignore_errors=True)
    commands = part.commands(ctx)
    if part.kind == "bench":
        commands[-1] = commands[-1] + ["--out", str(raw_path)]
    env = child_env(ctx)
    start = time.perf_counter()
    status, code = "ok", 0
    with log_path.open("w", encoding="utf-8") as log:
        for argv in commands:
            left = limit - (time.perf_counter() - start)
            code, timed_out = run_command(argv, env=env, log=log, timeout=left)
            if timed_out:
                status = "timeout"
                break
            if code != 0:
                status = "failed"
                break
    seconds = time.perf_counter() - start
    record = dict(part=part.name, what=part.what, status=status, wall_seconds=seconds, time_limit_seconds=limit,
                  returncode=code, commands=[" ".join(a) for a in commands], log=str(log_path.relative_to(ctx.out)),
                  sizes=part.sizes["gpu" if ctx.gpu else "cpu"])
    raw = None
    if raw_path.is_file():
        try:
            raw = json.loads(raw_path.read_text(encoding="utf-8"))
        except ValueError as err:
            status, record["error"] = "failed", f"unreadable record {raw_path.name}: {err}"
        raw_path.unlink()
    if status == "ok" and raw is None:
        status, record["error"] = "failed", "the part wrote no record"
    if raw is not None:
        if part.kind == "bench":
            record["sizes"] = raw.pop("sizes", record["sizes"])
            record.update({k: v for k, v in raw.items() if k not in record})
        else:
            raw["run_wall_seconds"] = raw.pop("wall_seconds")  # the training command alone
            record.update({k: v for k, v in raw.items() if k not in ("module", "args")})
            record.update(targets=[], headline=smoke_headline(raw))
            if status == "ok" and raw.get("run_error"):
                status, record["error"] = "failed", raw["run_error"]
            elif status == "ok" and not raw.get("metrics"):
                status, record["error"] = "failed", "the run stored no metrics"
    bad = first_nonfinite(record) if status == "ok" else ""
    if bad:
        status, record["error"] = "failed", f"a measured number is NaN or infinite: {bad}"
    record["status"] = status
    if status != "ok":
        record["output_tail"] = tail(log_path)
    return record


def gpu_name(ctx: Ctx) -> str:
    """``torch.cuda.get_device_name()``, asked in a child process: this one holds no CUDA context
    (a GPU in exclusive-process mode admits one process at a time)."""
    code = "import torch; print(torch.cuda.get_device_name())"
    try:
        proc = subprocess.run([PY, "-c", code], cwd=ROOT, env=child_env(ctx), capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired:
        return "unknown (the query timed out)"
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if proc.returncode == 0 and lines else f"unknown ({proc.stderr.strip()[-200:]})"


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", nargs="?", help="folder for the JSON files (created)")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU, even where a GPU exists")
    parser.add_argument("--parts", nargs="+", choices=PART_NAMES, default=PART_NAMES, metavar="PART",
                        help=f"run only these parts (default: all): {', '.join(PART_NAMES)}")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="multiply every part's time limit (a slower GPU; default 1)")
    parser.add_argument("--keep-scratch", action="store_true",
                        help="keep OUTDIR/scratch (fixture data, caches, run folders)")
    parser.add_argument("--list", action="store_true", help="print the parts, their sizes and limits, and exit")
    args = parser.parse_args(argv)
    if not args.list and not args.outdir:
        parser.error("OUTDIR is required")
    if args.timeout_scale <= 0:
        parser.error("--timeout-scale must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for p in PARTS:
            print(f"{p.name:<21} {p.what}\n{'':<21} GPU ({p.gpu_seconds:>3} s): {p.sizes['gpu']}\n"
                  f"{'':<21} CPU ({p.cpu_seconds:>3} s): {p.sizes['cpu']}")
        print(f"GPU limits add up to {sum(p.gpu_seconds for p in PARTS)} s")
        return 0

    import torch  # after --help / --list, which need no torch

    gpu = torch.cuda.is_available() and not args.cpu
    out = Path(args.outdir).resolve()
    ctx = Ctx(out=out, scratch=out / "scratch", gpu=gpu)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ctx.scratch.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc)
    device_name = gpu_name(ctx) if gpu else None
    if not gpu:
        sys.path.insert(0, str(HERE))
        from _report import cpu_name

        device_name = cpu_name()
    print(f"gpu_check: {'GPU' if gpu else 'CPU'} ({device_name}), torch {torch.__version__}; writing {out}",
          flush=True)

    t0 = time.perf_counter()
    parts = {}
    for part in (p for p in PARTS if p.name in args.parts):
        print(f"--- {part.name}: {part.what} ...", flush=True)
        record = run_part(part, ctx, timeout_scale=args.timeout_scale)
        (out / f"{part.name}.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        parts[part.name] = dict(status=record["status"], wall_seconds=record["wall_seconds"],
                                json=f"{part.name}.json", headline=record.get("headline"),
                                targets=record.get("targets", []))
        verdicts = " ".join("met" if t["met"] else "NOT met" for t in record.get("targets", [])
                            if t.get("met") is not None)
        print(f"    {record['status']} in {record['wall_seconds']:.1f} s"
              + (f"; targets: {verdicts}" if verdicts else "")
              + ("" if record["status"] == "ok" else f"; see {record['log']}"), flush=True)
    total = time.perf_counter() - t0
    summary = dict(
        device="cuda" if gpu else "cpu", device_name=device_name, torch=torch.__version__,
        cuda=torch.version.cuda if gpu else None, date=started.isoformat(timespec="seconds"),
        total_seconds=total, all_ok=all(p["status"] == "ok" for p in parts.values()),
        targets_missed=[f"{name}: {t['what']}" for name, p in parts.items() for t in p["targets"]
                        if t.get("met") is False],
        targets_note=("the targets are stated for the GPU sizes" if gpu else
                      "tiny CPU sizes: the targets are stated for the GPU sizes, so the verdicts here say "
                      "nothing about them"),
        parts=parts,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if not args.keep_scratch:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    print(f"gpu_check: {sum(p['status'] == 'ok' for p in parts.values())}/{len(parts)} parts ok in {total:.0f} s;"
          f" {len(summary['targets_missed'])} target(s) missed; {out / 'summary.json'}", flush=True)
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
