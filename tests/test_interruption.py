"""Interruption with real signals: SIGINT and SIGTERM stop after the current step, write its
checkpoint, say how to resume and exit with 130 / 143; the same command then resumes and finishes
with the weights of an uninterrupted run.

The command line runs in a subprocess on the toy config at its smallest (a random-weight tiny
CLIP, 32-px images, batch 2), with temporary ``HYRO_EDU_CHECKPOINTS``/``HYRO_EDU_CACHE``.  The
test waits for the CSV log of a step (flushed every ``log_every_n_steps``), not a fixed time.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hyro_edu.segmentation.train import SegmentationTask, TrainingInterrupted, load_config, train

MAX_STEPS = 24
SETTINGS = dict(name="sig", pretrained="null", image_size=32, batch_size=2, max_steps=MAX_STEPS,
                checkpoint_every=1000, toy_eval_images=4, toy_objects="[1,2]", progress="true")
FAST = dict(pretrained=None, image_size=32, batch_size=2, max_steps=6, checkpoint_every=1000,
            toy_eval_images=4, toy_objects=[1, 2], progress=False)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _command() -> list[str]:
    args = [sys.executable, "-m", "hyro_edu.segmentation.train"]
    for key, value in SETTINGS.items():
        args += ["--set", f"{key}={value}"]
    return args


def _env(tmp_path: Path) -> dict:
    return dict(os.environ, HYRO_EDU_CHECKPOINTS=str(tmp_path / "runs"), HYRO_EDU_CACHE=str(tmp_path / "cache"),
                OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _logged_steps(run: Path, version: int) -> list[int]:
    path = run / "logs" / "csv" / f"version_{version}" / "metrics.csv"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    if not lines:
        return []
    column = lines[0].split(",").index("step")
    return [int(line.split(",")[column]) for line in lines[1:] if line.count(",") >= column]


def _interrupt(tmp_path: Path, sig: int, version: int) -> tuple[int, str, str]:
    """Start the command, wait until attempt ``version`` has logged a step, send ``sig``."""
    run = tmp_path / "runs" / "sig"
    proc = subprocess.Popen(_command(), env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not _logged_steps(run, version):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no step logged within 120 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _checkpoint_step(tmp_path: Path) -> int:
    ckpt = torch.load(tmp_path / "runs" / "sig" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=False)
    return int(ckpt["global_step"])


def _stopped_at(err: str) -> int:
    line = next(line for line in err.splitlines() if line.startswith("interrupted at step "))
    return int(line.split()[3].rstrip(";"))


def test_sigint_and_sigterm_checkpoint_report_and_resume(tmp_path):
    # 1. Ctrl-C: exit status 130, the message on stderr, a checkpoint at the step it names
    code, out, err = _interrupt(tmp_path, signal.SIGINT, version=0)
    assert code == 130, (out, err)
    first = _stopped_at(err)
    assert f"interrupted at step {first}; run the same command to resume (SIGINT" in err
    assert 0 < first < MAX_STEPS and _checkpoint_step(tmp_path) == first
    assert not (tmp_path / "runs" / "sig" / "result.pt").exists()

    # 2. the same command resumes; SIGTERM stops it later with status 143
    code, out, err = _interrupt(tmp_path, signal.SIGTERM, version=1)
    assert code == 143, (out, err)
    second = _stopped_at(err)
    assert f"interrupted at step {second}; run the same command to resume (SIGTERM" in err
    assert first < second < MAX_STEPS and _checkpoint_step(tmp_path) == second

    # 3. the same command finishes: it resumes at the second step, the bar keeps its total
    done = subprocess.run(_command(), env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resumed at {second}, {MAX_STEPS - second} steps in" in done.stdout
    assert f"({MAX_STEPS} in total)" in done.stdout
    frames = [f for f in done.stdout.replace("\r", "\n").splitlines() if f.startswith("Training")]
    assert frames and all(f"/{MAX_STEPS} " in f for f in frames), frames[:3]
    assert f"{second}/{MAX_STEPS}" in frames[0] and f"{MAX_STEPS}/{MAX_STEPS}" in frames[-1]
    assert "seen mIoU" in done.stdout and " %" in done.stdout  # metrics printed with their unit
    result = torch.load(tmp_path / "runs" / "sig" / "result.pt", weights_only=False)
    assert result["steps"] == MAX_STEPS and result["resumed_from"] == second
    metrics = json.loads((tmp_path / "runs" / "sig" / "metrics.json").read_text())
    assert metrics["steps"] == MAX_STEPS
    assert metrics["metrics"]["toy"]["seen_miou"]["unit"] == "%"
    assert metrics["metrics"]["toy"]["num_images"] == 4

    # the interrupted and resumed run ends with the weights of an uninterrupted one
    overrides = {**{k: v for k, v in SETTINGS.items()}, "pretrained": None, "toy_objects": [1, 2],
                 "progress": False, "name": "straight"}
    straight = train(load_config(None, overrides), root=tmp_path / "runs", evaluate=False)
    for k, v in straight["state"].items():
        torch.testing.assert_close(result["state"][k], v, rtol=1e-5, atol=1e-6)


def _signal_during_step(at: int, sig: int, times: int = 1):
    """Patch the training step to send ``sig`` to this process ``times`` times during step ``at + 1``."""
    original = SegmentationTask.training_step

    def step(self, batch, batch_idx):
        if self.trainer.global_step == at:
            for _ in range(times):
                os.kill(os.getpid(), sig)
        return original(self, batch, batch_idx)

    return original, step


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_train_raises_a_keyboard_interrupt_that_carries_the_checkpoint(tmp_path, sig):
    """From Python (Jupyter's "interrupt kernel" is a SIGINT): the step in flight finishes, its
    checkpoint is written, ``TrainingInterrupted`` (a ``KeyboardInterrupt``) says where; calling
    ``train`` again resumes there and reproduces the uninterrupted run."""
    before = signal.getsignal(sig)
    config = load_config(None, {**FAST, "name": "py"})
    original, patched = _signal_during_step(2, sig)
    SegmentationTask.training_step = patched
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            train(config, root=tmp_path, evaluate=False)
    finally:
        SegmentationTask.training_step = original
    err = caught.value
    assert isinstance(err, TrainingInterrupted)
    assert (err.step, err.checkpoint_step, err.signal) == (3, 3, sig)  # step 3 was in flight
    assert err.exit_code == 128 + sig and "call train() with the same config again" in str(err)
    assert err.checkpoint == tmp_path / "py" / "checkpoints" / "last.ckpt"
    assert torch.load(err.checkpoint, weights_only=False)["global_step"] == 3
    assert signal.getsignal(sig) == before  # the handlers are restored
    resumed = train(config, root=tmp_path, evaluate=False)
    straight = train(load_config(None, {**FAST, "name": "py-straight"}), root=tmp_path, evaluate=False)
    assert resumed["resumed_from"] == 3 and resumed["steps"] == 6
    for k, v in straight["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, rtol=1e-5, atol=1e-6)


def test_a_second_signal_stops_at_once_and_names_the_last_checkpoint(tmp_path):
    """Two Ctrl-C in one step: no waiting for the step; the message names the checkpoint that
    exists (step 2, written every 2 steps), not the step in flight."""
    config = load_config(None, {**FAST, "name": "twice", "checkpoint_every": 2})
    original, patched = _signal_during_step(2, signal.SIGINT, times=2)
    SegmentationTask.training_step = patched
    try:
        with pytest.raises(TrainingInterrupted) as caught:
            train(config, root=tmp_path, evaluate=False)
    finally:
        SegmentationTask.training_step = original
    err = caught.value
    assert err.step == 2 and err.checkpoint_step == 2 and err.checkpoint is not None
    assert torch.load(err.checkpoint, weights_only=False)["global_step"] == 2
    assert train(config, root=tmp_path, evaluate=False)["resumed_from"] == 2


def test_a_signal_during_the_evaluation_keeps_the_trained_steps(tmp_path, monkeypatch):
    """Training has finished (step 6, no periodic checkpoint there): the checkpoint of step 6 is
    written, so the next call only evaluates."""
    from hyro_edu.segmentation.train import run as R

    config = load_config(None, {**FAST, "name": "late"})
    original = R.evaluate_toy

    def interrupted_evaluation(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(R, "evaluate_toy", interrupted_evaluation)
    with pytest.raises(TrainingInterrupted) as caught:
        train(config, root=tmp_path)
    err = caught.value
    assert (err.step, err.checkpoint_step, err.during) == (6, 6, "evaluation")
    assert "interrupted at step 6, during evaluation; run the same command" in err.message()
    monkeypatch.setattr(R, "evaluate_toy", original)
    result = train(config, root=tmp_path)
    assert result["resumed_from"] == 6 and result["steps"] == 6 and result["losses"] == []
    assert "toy" in result["metrics"]
