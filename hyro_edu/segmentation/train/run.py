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
import time
from pathlib import Path
from typing import Optional, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from hyro_edu.core import paths
from hyro_edu.segmentation.model import OpenVocabSegmenter
from hyro_edu.segmentation.train.config import (SegTrainConfig, check_run_dir, format_estimate, load_config,
                                                run_dir)
from hyro_edu.segmentation.train.task import (SegmentationDataModule, build_model, build_task,
                                              evaluate_benchmarks, evaluate_toy)
from hyro_edu.training import lightning as engine
from hyro_edu.training.runs import (METRICS_FILE, InterruptGuard, RunConflict, TrainingInterrupted,
                                    claim_run, write_json)

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
    path = check_run_dir(config, root) / "result.pt"
    if not path.is_file():
        return None
    result = torch.load(path, map_location="cpu", weights_only=False)
    if result.get("key") != config.key():
        raise RunConflict(path, config.name)
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
    ``loaded finished run (60 steps)``."""
    steps = int(result["steps"])
    if result.get("loaded"):
        return f"loaded finished run ({steps} steps)"
    start = result.get("resumed_from")
    seconds = result["train_seconds"]
    if start:
        return f"resumed at {start}, {steps - start} steps in {seconds:.0f} s ({steps} in total)"
    return f"trained {steps} steps in {seconds:.0f} s"


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
    if config.train_data != "toy":  # a full run: say what it costs before it starts
        print(format_estimate(config), flush=True)
    previous_precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(config.matmul_precision)  # official train_net.py: "high"
    try:
        with InterruptGuard() as guard:
            return _train(config, directory, guard=guard, device=device, data_root=data_root,
                          evaluate=evaluate, retrain=retrain, interrupt_after=interrupt_after)
    finally:
        torch.set_float32_matmul_precision(previous_precision)


def _resume_point(config: SegTrainConfig, last: Path) -> Optional[int]:
    if not last.is_file():
        return None
    meta = torch.load(last, map_location="cpu", weights_only=False)
    if meta.get("hyper_parameters", {}).get("key") != config.key():
        raise RunConflict(last, config.name)
    return int(meta.get("global_step", 0))


def _save_now(trainer, stopper, last: Path) -> None:
    """A checkpoint of the current step, unless one exists (atomic: written, then renamed)."""
    if stopper.saved_step == trainer.global_step and last.is_file():
        return
    tmp = last.with_name(last.name + ".tmp")
    trainer.save_checkpoint(tmp)
    tmp.replace(last)
    stopper.saved_step = trainer.global_step


def _train(config: SegTrainConfig, directory: Path, *, guard: InterruptGuard, device, data_root,
           evaluate: bool, retrain: bool, interrupt_after: Optional[int]) -> dict:
    result_path = directory / "result.pt"
    last = directory / "checkpoints" / "last.ckpt"
    if retrain:  # the run starts afresh: a stale result or checkpoint must not be resumed
        result_path.unlink(missing_ok=True)
        last.unlink(missing_ok=True)
    resumed_from = _resume_point(config, last)
    claim_run(directory, config.key(), config.name, config.to_dict(), retrain=retrain)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    stopper = engine.StopOnSignal(guard, last)
    stopper.saved_step = resumed_from
    trainer, stage = None, "building the model"

    def interrupted(signum: int) -> TrainingInterrupted:
        step = stopper.step if stopper.step is not None else (resumed_from or 0)
        if trainer is not None and stage == "evaluation":
            _save_now(trainer, stopper, last)
        checkpoint = last if last.is_file() else None
        return TrainingInterrupted(signum, step, checkpoint, stopper.saved_step,
                                   during="training" if stage == "training" else stage)

    try:
        task, data = build_task(config, device=device, data_root=data_root)
        callbacks = [ModelCheckpoint(dirpath=last.parent, filename="last", every_n_train_steps=config.checkpoint_every,
                                     save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True)]
        if config.progress:
            callbacks.append(engine.StepProgressBar())
        callbacks.append(stopper)  # after the checkpoint callback: a step it saved is not saved twice
        if interrupt_after is not None:
            callbacks.insert(0, _StopAfter(interrupt_after))
        device = torch.device(device)
        log_every = max(1, min(50, config.max_steps // 10))
        with engine.quiet():
            trainer = L.Trainer(
                max_steps=config.max_steps, max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu",
                devices=1, precision=config.precision, gradient_clip_val=config.grad_clip,
                gradient_clip_algorithm="norm", logger=engine.csv_loggers(directory, flush_every=log_every),
                callbacks=callbacks, enable_progress_bar=config.progress, enable_model_summary=False,
                num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=log_every,
                default_root_dir=directory, deterministic=False,
            )
            stage = "training"
            wall = time.perf_counter()
            trainer.fit(task, datamodule=SegmentationDataModule(data, config),
                        ckpt_path=None if resumed_from is None else last)
            wall = time.perf_counter() - wall
        stage = "evaluation"
        if guard.received is not None:  # the signal came after the last step's check
            raise TrainingInterrupted(guard.received)
        if trainer.global_step < config.max_steps:
            raise RuntimeError(f"training stopped at step {trainer.global_step} of {config.max_steps}; "
                               f"run again to resume from {last}")
        segmenter = task.segmenter
        metrics = evaluate_config(segmenter, config, data_root=data_root) if evaluate else {}
    except engine.StopRequested:
        raise interrupted(guard.received) from None
    except (TrainingInterrupted, SystemExit) as err:
        if guard.received is None:  # not a signal of ours: Lightning's own exit, or the caller's
            raise
        raise interrupted(guard.received) from None
    result = {
        "config": config.to_dict(), "key": config.key(), "mode": config.mode,
        "state": {k: v.detach().cpu() for k, v in segmenter.trainable_state_dict().items()},
        "losses": task.losses, "train_seconds": wall, "steps": trainer.global_step, "metrics": metrics,
        "validations": task.validations, "matmul_precision": torch.get_float32_matmul_precision(),
        "parameter_counts": segmenter.parameter_counts(), "resumed_from": resumed_from,
        "device": device.type, "versions": {"torch": str(torch.__version__)},
    }
    if evaluate:
        write_metrics(directory, config, result)
    paths.atomic_torch_save(result, result_path)
    result["loaded"] = False
    return result


def load_trained(result: dict, *, device=None) -> OpenVocabSegmenter:
    """Rebuild the segmenter of a :func:`train` result with its trained tensors (eval mode)."""
    config = SegTrainConfig(**result["config"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    segmenter = build_model(config, device=device)
    segmenter.load_trainable_state_dict(result["state"])
    return segmenter.eval()
