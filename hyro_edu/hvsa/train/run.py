"""Train, resume or load an HVSA run; evaluate it and write its metrics.

:func:`train` is "load if present, else train": ``<run>/result.pt`` of the same config is read
back (``loaded=True``); otherwise training starts, or resumes from ``<run>/checkpoints/last.ckpt``
(``resumed=True``).  A run directory belongs to one config key (``run.json``,
:func:`hyro_edu.training.runs.claim_run`).  SIGINT and SIGTERM stop training after the current
step with a checkpoint of that step and raise :class:`~hyro_edu.training.runs.TrainingInterrupted`
(a ``KeyboardInterrupt``); calling :func:`train` again resumes.  Every config error -- a key, a
value, a dataset that is not prepared -- is raised before the data or a model is built.
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
from hyro_edu.hvsa.train.config import HVSATrainConfig, check_data, check_run_dir, load_config, run_dir
from hyro_edu.hvsa.train.data import build_data
from hyro_edu.hvsa.train.task import HVSADataModule, HVSAModel, HVSATask, build_model, evaluate
from hyro_edu.training import lightning as engine
from hyro_edu.training.runs import (METRICS_FILE, InterruptGuard, RunConflict, TrainingInterrupted,
                                    claim_run, write_json)

__all__ = ["TrainingInterrupted", "RunConflict", "train", "load_result", "load_trained", "format_metrics",
           "format_summary", "write_metrics"]

RESULT_FILE = "result.pt"


def load_result(config: HVSATrainConfig, root: Optional[Union[str, Path]] = None) -> Optional[dict]:
    """The finished run of ``config`` (its ``result.pt``, ``loaded=True``), or ``None``.  Never
    trains; :class:`~hyro_edu.training.runs.RunConflict` when the directory holds another config."""
    config = config.resolved()
    directory = check_run_dir(config, root)
    path = directory / RESULT_FILE
    if not path.is_file():
        return None
    start = time.perf_counter()
    result = torch.load(path, map_location="cpu", weights_only=False)
    if result.get("key") != config.key():
        raise RunConflict(path, config.name)
    result.update(loaded=True, resumed=False, run_dir=directory, seconds=time.perf_counter() - start)
    return result


def format_metrics(metrics: dict) -> str:
    """One line in percent: ``MAP 71.2 %, CMAP ..., CV ...`` or ``mIoU per level (finest first) ...``."""
    def pct(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"

    if "miou_levels" in metrics:
        levels = ", ".join(pct(v) for v in metrics["miou_levels"])
        return f"mIoU per level (finest first): {levels} ({metrics['num_samples']} images)"
    line = (f"MAP {pct(metrics['map'])}, CMAP {pct(metrics['cmap'])}, CV {pct(metrics['cv'])} "
            f"(edges {pct(metrics['cv_edges'])}), MAP per level (finest first) "
            + ", ".join(pct(v) for v in metrics["map_per_level"]))
    if "top1_error" in metrics:
        line += f", top-1 error {pct(metrics['top1_error'])}"
    return line + f" ({metrics['num_samples']} samples)"


def format_summary(result: dict) -> str:
    """``trained 400 steps in 6 s``, ``resumed at 45, 355 steps in 5 s (400 in total)`` or
    ``loaded finished run (400 steps)``."""
    steps = int(result["steps"])
    if result.get("loaded"):
        return f"loaded finished run ({steps} steps)"
    start = result.get("resumed_from")
    if start:
        return f"resumed at {start}, {steps - start} steps in {result['train_seconds']:.1f} s ({steps} in total)"
    return f"trained {steps} steps in {result['train_seconds']:.1f} s"


def write_metrics(directory: Path, config: HVSATrainConfig, result: dict) -> Path:
    """``<directory>/metrics.json``: name, key, steps and the metrics (fractions; NaN as null)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return write_json(Path(directory) / METRICS_FILE, {
        "name": config.name, "key": config.key(), "steps": int(result["steps"]), "unit": "fraction",
        "metrics": {k: clean(v) for k, v in result["metrics"].items()},
    })


def train(config: Optional[HVSATrainConfig] = None, *, root: Optional[Union[str, Path]] = None,
          data_root=None, device=None, evaluate: bool = True, retrain: bool = False) -> dict:
    """Train ``config`` (default: the ``toy`` config) and return its result, or load it.

    Returns ``dict(config, key, metrics, run_dir, resumed, loaded, seconds, train_seconds, steps,
    resumed_from, losses, state, ...)``: ``metrics`` as :func:`hyro_edu.hvsa.train.task.evaluate`
    computes them (fractions), ``seconds`` the wall time of this call, ``state`` the model's
    tensors.  A finished run of the same config is loaded (``loaded=True``, nothing trains;
    ``retrain=True`` removes it and trains afresh); an interrupted one resumes from its checkpoint
    (``resumed=True``).  ``root``: the runs folder (default ``$HYRO_EDU_CHECKPOINTS``);
    ``data_root``: the prepared datasets (default ``$HYRO_EDU_DATA``).

    Raises, before any data or model is built: :class:`~hyro_edu.hvsa.train.config.DataNotPrepared`
    (a ``ValueError`` naming ``dataset`` and the preparation command) and
    :class:`~hyro_edu.training.runs.RunConflict`.  SIGINT (Ctrl-C, "interrupt kernel") or SIGTERM
    ends the current step, writes ``last.ckpt`` at that step and raises
    :class:`~hyro_edu.training.runs.TrainingInterrupted`; calling ``train`` again resumes.
    """
    start = time.perf_counter()
    config = (load_config() if config is None else config).resolved()
    directory = run_dir(config, root)
    if not retrain:
        result = load_result(config, root)
        if result is not None:
            return result
    check_data(config, data_root)
    with InterruptGuard() as guard:
        result = _train(config, directory, guard=guard, device=device, data_root=data_root,
                        evaluate=evaluate, retrain=retrain)
    result["seconds"] = time.perf_counter() - start
    return result


def _resume_point(config: HVSATrainConfig, last: Path) -> Optional[int]:
    if not last.is_file():
        return None
    meta = torch.load(last, map_location="cpu", weights_only=False)
    if meta.get("hyper_parameters", {}).get("key") != config.key():
        raise RunConflict(last, config.name)
    return int(meta.get("global_step", 0))


def _train(config: HVSATrainConfig, directory: Path, *, guard: InterruptGuard, device, data_root,
           evaluate: bool, retrain: bool) -> dict:
    result_path = directory / RESULT_FILE
    last = directory / "checkpoints" / "last.ckpt"
    if retrain:
        result_path.unlink(missing_ok=True)
        last.unlink(missing_ok=True)
    resumed_from = _resume_point(config, last)
    claim_run(directory, config.key(), config.name, config.to_dict(), retrain=retrain)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    stopper = engine.StopOnSignal(guard, last)
    stopper.saved_step = resumed_from
    trainer, stage = None, "building the model"

    def interrupted(signum: int) -> TrainingInterrupted:
        step = stopper.step if stopper.step is not None else (resumed_from or 0)
        if trainer is not None and stage == "evaluation" and (stopper.saved_step != trainer.global_step
                                                               or not last.is_file()):
            tmp = last.with_name(last.name + ".tmp")
            trainer.save_checkpoint(tmp)
            tmp.replace(last)
            stopper.saved_step = trainer.global_step
        checkpoint = last if last.is_file() else None
        return TrainingInterrupted(signum, step, checkpoint, stopper.saved_step,
                                   during="training" if stage == "training" else stage)

    try:
        data = build_data(config, data_root=data_root)
        model = build_model(config, data.tree, in_dim=data.in_dim)
        task = HVSATask(model, config)
        callbacks = [ModelCheckpoint(dirpath=last.parent, filename="last", every_n_train_steps=config.checkpoint_every,
                                     save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True)]
        if config.progress:
            callbacks.append(engine.StepProgressBar())
        callbacks.append(stopper)  # after the checkpoint callback: a step it saved is not saved twice
        log_every = max(1, min(50, config.steps // 10))
        with engine.quiet():
            trainer = L.Trainer(
                max_steps=config.steps, max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu",
                devices=1, precision=config.precision, gradient_clip_val=config.grad_clip,
                logger=engine.csv_loggers(directory, flush_every=log_every), callbacks=callbacks,
                enable_progress_bar=config.progress, enable_model_summary=False, num_sanity_val_steps=0,
                limit_val_batches=0, log_every_n_steps=log_every, default_root_dir=directory,
            )
            stage = "training"
            wall = time.perf_counter()
            trainer.fit(task, datamodule=HVSADataModule(data, config),
                        ckpt_path=None if resumed_from is None else last)
            wall = time.perf_counter() - wall
        stage = "evaluation"
        if guard.received is not None:  # the signal came after the last step's check
            raise TrainingInterrupted(guard.received)
        if trainer.global_step < config.steps:
            raise RuntimeError(f"training stopped at step {trainer.global_step} of {config.steps}; "
                               f"run again to resume from {last}")
        metrics = evaluate_model(task.model, data, config) if evaluate else {}
    except engine.StopRequested:
        raise interrupted(guard.received) from None
    except (TrainingInterrupted, SystemExit):
        if guard.received is None:
            raise
        raise interrupted(guard.received) from None
    result = {
        "config": config.to_dict(), "key": config.key(), "name": config.name, "metrics": metrics,
        "state": {k: v.detach().cpu() for k, v in task.model.state_dict().items()},
        "losses": task.losses, "train_seconds": wall, "steps": trainer.global_step,
        "resumed_from": resumed_from, "device": device.type, "versions": {"torch": str(torch.__version__)},
    }
    if evaluate:
        write_metrics(directory, config, result)
    paths.atomic_torch_save(result, result_path)
    result.update(loaded=False, resumed=resumed_from is not None, run_dir=directory)
    return result


def evaluate_model(model: HVSAModel, data, config: HVSATrainConfig) -> dict:
    """:func:`hyro_edu.hvsa.train.task.evaluate` (kept here so tests and demos can wrap it)."""
    return evaluate(model, data, config)


def load_trained(result: dict, *, data_root=None, device=None) -> HVSAModel:
    """Rebuild the model of a :func:`train` result with its trained tensors (eval mode).  The label
    tree comes from the dataset (the toy world needs nothing prepared)."""
    config = HVSATrainConfig(**result["config"])
    data = build_data(config, data_root=data_root)
    model = build_model(config, data.tree, in_dim=data.in_dim)
    model.load_state_dict(result["state"])
    return model.to(device or "cpu").eval()
