"""Data-parallel training: two CPU processes (Lightning's ``ddp`` with the gloo backend) train the
weights of one process with the same global batch, and a two-process run stopped by a signal to
rank zero resumes (on two processes with accumulated micro-batches) to the same weights.

Each multi-process run is the command line in a subprocess (Lightning's launcher starts rank 1 by
running the same command again; pytest itself cannot be re-run), with ``devices=2`` on the CPU and
one thread per process.  The one-process references run in this process.  The runs are tiny (a
random-weight tiny CLIP, 32-px images, a global batch of 4, 6 steps): the comparison is about the
data split and the gradient reduction, not about learning anything.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from hyro_edu.segmentation.train import load_config as seg_config
from hyro_edu.segmentation.train import train as seg_train
from hyro_edu.training.stream import ResumableSampler, training_sampler

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not torch.distributed.is_available(),
                                reason="POSIX signals and torch.distributed (gloo)")

#: float32 on different summation orders: the weights agree to about 1e-6 after 6 Adam steps
ATOL, RTOL = 5e-5, 1e-4
SEG = dict(pretrained=None, image_size=32, batch_size=4, max_steps=6, checkpoint_every=3, toy_eval_images=8,
           toy_objects=[1, 2], progress=False)
#: ``vanilla``: the leaf cross-entropy, a mean over the images.  ProTeCt's node-centric loss averages
#: over the nodes that have images in the batch, and the alignment derives the curvatures from the
#: radius of the batch's mean node features: both are statistics of each process's micro-batch, so
#: those variants train alike in distribution, not to the same weights.
TREE = dict(variant="vanilla", shots=1, batch_size=12, steps=5, toy_test_per_class=1, clip_pretrained=None,
            progress=False, checkpoint_every=100, eval_batch_size=64)
TIMEOUT = 300


def _env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ, HYRO_EDU_CHECKPOINTS=str(tmp_path / "runs"), HYRO_EDU_DATA=str(tmp_path / "data"),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _sets(values: dict) -> list[str]:
    out = []
    for key, value in values.items():
        text = "null" if value is None else str(value).replace(" ", "") if isinstance(value, list) else str(value)
        out += ["--set", f"{key}={text.lower() if isinstance(value, bool) else text}"]
    return out


def _run(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    done = subprocess.run(args, env=_env(tmp_path, **env), capture_output=True, text=True, timeout=TIMEOUT)
    done.seconds = time.perf_counter() - start
    return done


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _assert_close(a: dict, b: dict) -> None:
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=ATOL, rtol=RTOL, msg=lambda m: f"{k}: {m}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("distributed_cache")


@pytest.fixture(autouse=True)
def _cache_here(cache, monkeypatch):
    monkeypatch.setenv("HYRO_EDU_CACHE", str(cache))  # the in-process references too


# ----------------------------------------------------------------------------- the sampler
def test_the_processes_read_the_global_batch_of_one_process_between_them():
    """Two processes x two micro-batches of 2 read, step by step, the 8 positions one process reads."""
    one = list(ResumableSampler(10, start=16, stop=40, seed=3))
    parts = [list(ResumableSampler(10, start=16, stop=40, seed=3, rank=r, num_replicas=2, block=2)) for r in (0, 1)]
    assert [len(p) for p in parts] == [12, 12]
    for step in range(3):
        batch = one[8 * step: 8 * step + 8]
        micro = [p[4 * step + 2 * m: 4 * step + 2 * m + 2] for m in range(2) for p in parts]
        assert sum(micro, []) == batch  # micro-batch m of rank r: positions (m W + r) b onwards
    with pytest.raises(ValueError, match="multiples of block x num_replicas"):
        ResumableSampler(10, start=2, stop=40, rank=0, num_replicas=2, block=2)

    class Trainer:
        world_size, accumulate_grad_batches, global_step, global_rank = 2, 2, 2, 1

    sampler, block = training_sampler(10, Trainer(), batch_size=8, max_steps=3, seed=3)
    assert block == 2 and list(sampler) == parts[1]
    with pytest.raises(ValueError, match="batch_size 6 must be divisible"):
        training_sampler(10, Trainer(), batch_size=6, max_steps=3)


def test_the_placement_fields_are_checked_and_left_out_of_the_key():
    base = seg_config(None, SEG)
    placed = seg_config(None, {**SEG, "devices": 2, "accumulate_grad_batches": 2})
    assert placed.per_device_batch_size == 1 and base.per_device_batch_size == 4
    assert placed.key() == base.key() and list(placed.to_dict())[-4:] == [
        "devices", "num_nodes", "strategy", "accumulate_grad_batches"]
    with pytest.raises(ValueError, match=r"batch_size 4 .* devices x num_nodes x accumulate_grad_batches = 3 x 1 x 1"):
        seg_config(None, {**SEG, "devices": 3})
    for key, value, message in (("devices", 0, "devices must be an integer >= 1"),
                                ("num_nodes", "two", "num_nodes must be an integer >= 1"),
                                ("accumulate_grad_batches", 1.5, "accumulate_grad_batches must be an integer"),
                                ("strategy", "dp", "strategy must be one of")):
        with pytest.raises(ValueError, match=message):
            seg_config(None, {**SEG, key: value})


def test_the_command_line_shortcuts_are_overrides(capsys):
    from hyro_edu.segmentation.train.__main__ import main
    from hyro_edu.training.cli import config_parser, overrides_of

    parser = config_parser("x", "y", configs=["toy"], default="toy")
    args = parser.parse_args(["--set", "seed=1", "--devices", "2", "--num-nodes", "3", "--strategy", "ddp",
                              "--accumulate-grad-batches", "4"])
    assert overrides_of(args) == ["seed=1", "devices=2", "num_nodes=3", "strategy=ddp", "accumulate_grad_batches=4"]
    assert main(["--print-config", "--devices", "2", "--accumulate-grad-batches", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith("devices: 2\nnum_nodes: 1\nstrategy: auto\naccumulate_grad_batches: 2")
    with pytest.raises(SystemExit) as stop:
        main(["--devices", "3"])  # batch 8 of the toy config does not split in 3
    assert stop.value.code == 2 and "divisible by devices x num_nodes x accumulate_grad_batches = 3" in \
        capsys.readouterr().err


# ----------------------------------------------------------------------------- the segmenter
_STOPPER = """
import os, signal, sys
import lightning as L
from hyro_edu.segmentation.train import run
from hyro_edu.segmentation.train.__main__ import main

STOP = int(os.environ.get("STOP_AT_STEP", "-1"))


class Stop(L.Callback):
    sent = False

    def on_train_batch_end(self, trainer, *args):
        # SIGTERM to rank zero alone: the processes must agree to stop after this step
        if trainer.global_step == STOP and trainer.is_global_zero and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


fit = run.fit
run.fit = lambda *a, callbacks=(), **k: fit(*a, callbacks=(*callbacks, Stop()), **k)
sys.exit(main())
"""


def test_two_processes_train_the_weights_of_one_and_resume_after_a_signal(tmp_path, cache):
    start = time.perf_counter()
    reference = seg_train(seg_config(None, {**SEG, "name": "one"}), root=tmp_path / "runs")
    one_seconds = time.perf_counter() - start
    script = tmp_path / "stopper.py"
    script.write_text(textwrap.dedent(_STOPPER))
    command = [sys.executable, str(script), *_sets({**SEG, "devices": 2, "strategy": "ddp"})]

    # two processes, uninterrupted
    two = _run(command + ["--set", "name=two"], tmp_path, HYRO_EDU_CACHE=str(cache))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("trained 6 steps") == 1  # rank 1 prints nothing
    run = tmp_path / "runs" / "two"
    result = _state(run / "result.pt")
    difference = _max_difference(reference["state"], result["state"])
    print(f"\nsegmenter, 6 steps of 4 images: 1 process {one_seconds:.1f} s (in pytest), 2 processes "
          f"{two.seconds:.1f} s (command line); max |weight difference| {difference:.2e}")
    _assert_close(reference["state"], result["state"])
    assert result["losses"] == pytest.approx(reference["losses"], rel=1e-4)
    assert result["metrics"]["toy"]["num_images"] == 8  # every image counted once, across the ranks
    assert result["metrics"]["toy"]["pixel_accuracy"] == pytest.approx(
        reference["metrics"]["toy"]["pixel_accuracy"], abs=0.02)
    assert sorted(p.name for p in (run / "logs" / "csv").iterdir()) == ["version_0"]
    assert result["key"] == reference["key"]

    # two processes stopped by a SIGTERM to rank zero after step 2, then resumed on two processes
    # with two accumulated micro-batches of 1 image each: the same global batches
    stopped = _run(command + ["--set", "name=stop"], tmp_path, HYRO_EDU_CACHE=str(cache), STOP_AT_STEP="2")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "interrupted at step 2;" in stopped.stderr
    ckpt = torch.load(tmp_path / "runs" / "stop" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    assert ckpt["global_step"] == 2
    resumed = _run([sys.executable, "-m", "hyro_edu.segmentation.train",
                    *_sets({**SEG, "name": "stop", "devices": 2, "accumulate_grad_batches": 2})], tmp_path,
                   HYRO_EDU_CACHE=str(cache))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at 2, 4 steps" in resumed.stdout
    again = _state(tmp_path / "runs" / "stop" / "result.pt")
    print(f"interrupted at 2 (2 processes) and resumed (2 processes x 2 micro-batches): max |weight difference| "
          f"{_max_difference(reference['state'], again['state']):.2e}")
    _assert_close(reference["state"], again["state"])


# ----------------------------------------------------------------------------- tree alignment
def test_two_processes_train_the_tree_alignment_weights_of_one(tmp_path, cache):
    from hyro_edu.tree_alignment.train import load_config, train

    start = time.perf_counter()
    reference = train(load_config(None, {**TREE, "name": "one"}), root=tmp_path / "runs")
    one_seconds = time.perf_counter() - start
    two = _run([sys.executable, "-m", "hyro_edu.tree_alignment.train",
                *_sets({**TREE, "name": "two", "devices": 2, "strategy": "ddp"})], tmp_path,
               HYRO_EDU_CACHE=str(cache))
    assert two.returncode == 0, two.stderr[-3000:]
    result = _state(tmp_path / "runs" / "two" / "result.pt")
    difference = _max_difference(reference["state"], result["state"])
    print(f"\ntree alignment, 5 steps of 12 images: 1 process {one_seconds:.1f} s (in pytest), 2 processes "
          f"{two.seconds:.1f} s (command line); max |weight difference| {difference:.2e}")
    _assert_close(reference["state"], result["state"])
    assert result["losses"] == pytest.approx(reference["losses"], rel=1e-4)
    assert result["metrics"]["base"]["num_samples"] == reference["metrics"]["base"]["num_samples"]


# ----------------------------------------------------------------------------- HVSA
def test_two_hvsa_processes_train_and_write_the_run_once(tmp_path, cache):
    """HVSA draws its samples (posterior, labels, negatives) from a generator seeded per step, in
    each process for its own micro-batch: two processes train like one in distribution, not to the
    same weights.  Checked: the run trains, rank zero writes it once, and the first step's loss
    (before any update) is that of the one-process run up to those draws."""
    from hyro_edu.hvsa.train import load_config, train

    values = dict(components="cls", toy_train=96, toy_test=48, batch_size=16, steps=6, warmup_steps=2,
                  eval_batch_size=24, progress=False, toy_pretrain_steps=0)
    reference = train(load_config("toy", {**values, "name": "one"}), root=tmp_path / "runs")
    two = _run([sys.executable, "-m", "hyro_edu.hvsa.train", *_sets({**values, "name": "two", "devices": 2})],
               tmp_path, HYRO_EDU_CACHE=str(cache))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("trained 6 steps") == 1
    result = _state(tmp_path / "runs" / "two" / "result.pt")
    assert len(result["losses"]) == 6 and result["steps"] == 6
    assert result["losses"][0] == pytest.approx(reference["losses"][0], rel=1e-2)
    assert result["metrics"]["num_samples"] == 48 and 0 <= result["metrics"]["map"] <= 1
