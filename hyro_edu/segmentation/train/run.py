"""Train, resume or load a run of the segmenter; write and report its metrics.

:func:`train` is "load if present, else train": ``<run>/result.pt`` of the same config is read
back; otherwise training starts, or resumes from ``<run>/checkpoints/last.ckpt``.  A run
directory belongs to one config key (``run.json``, :func:`hyro_edu.training.runs.claim_run`).
SIGINT and SIGTERM stop training after the current step with a checkpoint of that step and
raise :class:`~hyro_edu.training.runs.TrainingInterrupted` (a ``KeyboardInterrupt``);
``interrupt_after=k`` simulates a crash instead (:class:`SimulatedInterruption`, no checkpoint
beyond the periodic ones).  The evaluation metrics go to ``result.pt`` and, in percent, to
``<run>/metrics.json`` beside the logs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import lightning as L
import torch

from hyro_edu.core import paths
from hyro_edu.core.distributed import global_rank
from hyro_edu.segmentation.model import OpenVocabSegmenter
from hyro_edu.segmentation.train.config import (SegTrainConfig, check_run_dir, format_estimate, load_config,
                                                run_dir)
from hyro_edu.segmentation.train.task import (SegmentationDataModule, SegmentationTask, build_model, build_task,
                                              evaluate_benchmarks, evaluate_toy)
from hyro_edu.training.fit import fit, is_global_zero, read_result
from hyro_edu.training.runs import (METRICS_FILE, RESULT_FILE, InterruptGuard, RunConflict, TrainingInterrupted,
                                    summary_line, write_json)

__all__ = [
    "SimulatedInterruption",
    "TrainingInterrupted",
    "RunConflict",
    "train",
    "load_result",
    "load_trained",
    "evaluate_config",
    "metrics_record",
    "format_metrics",
    "format_summary",
    "write_metrics",
]

#: Metrics reported in percent (mIoU, hIoU, pixel accuracy); the rest are counts.
PERCENT_METRICS = ("miou", "seen_miou", "unseen_miou", "hiou", "pixel_accuracy")


class SimulatedInterruption(RuntimeError):
    """Raised by ``train(..., interrupt_after=k)`` to imitate a crash after step ``k``."""


class _StopAfter(L.Callback):
    """Raise :class:`SimulatedInterruption` when step ``step + 1`` begins (a crash, for tests and demos)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step:  # a crash in the middle of step ``step + 1``
            raise SimulatedInterruption(f"simulated crash after step {trainer.global_step}")


def load_result(config: SegTrainConfig, root: Optional[Union[str, Path]] = None) -> Optional[dict]:
    """The finished run of ``config`` (its ``result.pt``, ``loaded=True``), or ``None`` when there
    is none.  Never trains; raises :class:`~hyro_edu.training.runs.RunConflict` (a
    ``ValueError``) when the run directory holds another config's run."""
    config = config.resolved()
    result = read_result(check_run_dir(config, root) / RESULT_FILE, config.key(), config.name)
    if result is None:
        return None
    result["loaded"] = True
    return result


def metrics_record(metrics: dict) -> dict:
    """``{benchmark: {metric: {"value": v, "unit": "%"}, "num_images": n}}`` (mIoU etc. × 100;
    NaN as ``None``), what ``metrics.json`` holds."""
    out = {}
    for key, m in metrics.items():
        row = {}
        for name in PERCENT_METRICS:
            if name in m:
                value = float(m[name])
                row[name] = {"value": None if math.isnan(value) else round(100 * value, 4), "unit": "%"}
        if "num_images" in m:
            row["num_images"] = int(m["num_images"])
        out[key] = row
    return out


def format_metrics(metrics: dict) -> str:
    """One line per evaluation set, in percent: ``toy world: seen mIoU 41.2 %, ...``."""
    lines = []
    for key, m in metrics.items():
        if key == "toy":
            lines.append(f"toy world: seen mIoU {100 * m['seen_miou']:.1f} %, unseen mIoU "
                         f"{100 * m['unseen_miou']:.1f} %, hIoU {100 * m['hiou']:.1f} %, pixel accuracy "
                         f"{100 * m['pixel_accuracy']:.1f} % ({m['num_images']} images)")
        else:
            lines.append(f"{key}: mIoU {100 * m['miou']:.1f} % ({m['num_images']} images)")
    return "\n".join(lines)


def format_summary(result: dict) -> str:
    """``trained 60 steps in 10 s``, ``resumed at 45, 15 steps in 3 s (60 in total)`` or
    ``loaded finished run (60 steps)`` (:func:`hyro_edu.training.runs.summary_line`)."""
    return summary_line(result, decimals=0)


def write_metrics(directory: Path, config: SegTrainConfig, result: dict) -> Path:
    """``<directory>/metrics.json``: the run's name, key and steps, :func:`metrics_record` of
    ``result["metrics"]`` and the in-training validations, in percent."""
    return write_json(Path(directory) / METRICS_FILE, {
        "name": config.name, "key": config.key(), "steps": int(result["steps"]),
        "metrics": metrics_record(result["metrics"]),
        "validations": [{"step": int(s), "miou": {"value": round(100 * float(v), 4), "unit": "%"},
                         "data": config.val_data} for s, v in result.get("validations", [])],
    })


def evaluate_config(segmenter: OpenVocabSegmenter, config: SegTrainConfig, *, data_root=None) -> dict:
    """The metrics of ``segmenter`` on every set of ``config.eval_data``."""
    metrics = {}
    for key in config.eval_data:
        if key == "toy":
            metrics["toy"] = evaluate_toy(segmenter, n_images=config.toy_eval_images, image_size=config.image_size)
        else:
            metrics.update(evaluate_benchmarks(segmenter, [key], root=data_root, limit=config.eval_limit,
                                               progress=config.progress))
    return metrics


def train(config: Optional[SegTrainConfig] = None, *, root: Optional[Union[str, Path]] = None, device=None,
          data_root=None, evaluate: bool = True, retrain: bool = False,
          interrupt_after: Optional[int] = None) -> dict:
    """Train ``config`` (default: the embedded toy config) and return its result, or load it.

    Returns ``dict(config, key, state (trainable tensors), losses, train_seconds, steps, metrics,
    validations, resumed_from, loaded, ...)``.  If ``<run_dir>/result.pt`` exists for this config
    it is loaded and nothing trains (``loaded=True``; ``retrain=True`` ignores it and removes the
    run's result and checkpoint).  Otherwise training starts, or resumes from
    ``<run_dir>/checkpoints/last.ckpt``; ``resumed_from`` is that step and ``train_seconds``
    counts this attempt.  ``evaluate`` runs ``config.eval_data`` at the end and writes
    ``metrics.json``.  A full run (``train_data`` not ``"toy"``) first prints
    :func:`~hyro_edu.segmentation.train.config.format_estimate`.  The run uses
    ``torch.set_float32_matmul_precision(config.matmul_precision)``, restored when it returns.

    Interruption: SIGINT (Ctrl-C, "interrupt kernel") or SIGTERM ends the current step, writes
    ``last.ckpt`` at that step and raises :class:`~hyro_edu.training.runs.TrainingInterrupted`
    (``.step``, ``.checkpoint``, ``.hint``; a ``KeyboardInterrupt``); calling ``train`` again
    resumes.  ``interrupt_after=k`` raises :class:`SimulatedInterruption` when step ``k + 1``
    begins (a crash: the checkpoint on disk is the last multiple of ``checkpoint_every``).
    A run directory written by another config raises :class:`~hyro_edu.training.runs.RunConflict`.
    """
    config = (load_config() if config is None else config).resolved()
    directory = run_dir(config, root)
    if not retrain:
        result = load_result(config, root)
        if result is not None:
            return result
    if config.train_data != "toy" and global_rank(config.devices) == 0:  # a full run: say what it costs
        print(format_estimate(config), flush=True)
    previous_precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(config.matmul_precision)  # official train_net.py: "high"
    try:
        with InterruptGuard() as guard:
            return _train(config, directory, guard=guard, device=device, data_root=data_root,
                          evaluate=evaluate, retrain=retrain, interrupt_after=interrupt_after)
    finally:
        torch.set_float32_matmul_precision(previous_precision)


def _train(config: SegTrainConfig, directory: Path, *, guard: InterruptGuard, device, data_root,
           evaluate: bool, retrain: bool, interrupt_after: Optional[int]) -> dict:
    def build(device):
        task, data = build_task(config, device=device, data_root=data_root)
        return task, SegmentationDataModule(data, config)

    def metrics_of(task: SegmentationTask, datamodule: SegmentationDataModule) -> dict:
        return evaluate_config(task.segmenter, config, data_root=data_root) if evaluate else {}

    fitted = fit(directory, key=config.key(), name=config.name, config=config.to_dict(), guard=guard,
                 build=build, evaluate=metrics_of, max_steps=config.max_steps,
                 checkpoint_every=config.checkpoint_every, precision=config.precision,
                 grad_clip=config.grad_clip, progress=config.progress, device=device, retrain=retrain,
                 callbacks=() if interrupt_after is None else (_StopAfter(interrupt_after),),
                 trainer_options=dict(gradient_clip_algorithm="norm", deterministic=False))
    task = fitted.task
    segmenter = task.segmenter
    result = {
        "config": config.to_dict(), "key": config.key(), "mode": config.mode,
        "state": {k: v.detach().cpu() for k, v in segmenter.trainable_state_dict().items()},
        "losses": task.losses, "train_seconds": fitted.train_seconds, "steps": fitted.steps,
        "metrics": fitted.metrics, "validations": task.validations,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "parameter_counts": segmenter.parameter_counts(), "resumed_from": fitted.resumed_from,
        "device": fitted.device.type, "versions": {"torch": str(torch.__version__)},
    }
    if is_global_zero():  # one process writes the run's files
        if evaluate:
            write_metrics(directory, config, result)
        paths.atomic_torch_save(result, directory / RESULT_FILE)
    result["loaded"] = False
    return result


def load_trained(result: dict, *, device=None) -> OpenVocabSegmenter:
    """Rebuild the segmenter of a :func:`train` result with its trained tensors (eval mode)."""
    config = SegTrainConfig(**result["config"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    segmenter = build_model(config, device=device)
    segmenter.load_trainable_state_dict(result["state"])
    return segmenter.eval()
