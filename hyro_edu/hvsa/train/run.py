"""Train, resume or load an HVSA run; evaluate it and write its metrics.

:func:`train` is "load if present, else train": ``<run>/result.pt`` of the same config is read
back (``loaded=True``); otherwise training starts, or resumes from ``<run>/checkpoints/last.ckpt``
(``resumed=True``).  A run directory belongs to one config key (``run.json``,
:func:`hyro_edu.training.runs.claim_run`).  SIGINT and SIGTERM stop training after the current
step with a checkpoint of that step and raise :class:`~hyro_edu.training.runs.TrainingInterrupted`
(a ``KeyboardInterrupt``); calling :func:`train` again resumes.  Every config error -- a key, a
value, a dataset that is not prepared -- is raised before the data or a model is built.

Several processes (``devices``, ``num_nodes``: :class:`hyro_edu.training.config.DistributedConfig`)
train data-parallel through :func:`hyro_edu.training.fit.fit`; rank zero evaluates and writes the
run's files, the other processes return their result without metrics.  The random draws of a step
are seeded by ``(seed, step)`` in every process for its own micro-batch, so a multi-process run
trains like the one-process run in distribution, not to the same weights.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import torch

from hyro_edu.core import paths
from hyro_edu.hvsa.train.config import HVSATrainConfig, check_data, check_run_dir, load_config, run_dir
from hyro_edu.hvsa.train.data import build_data
from hyro_edu.hvsa.train.task import HVSADataModule, HVSAModel, HVSATask, build_model, evaluate
from hyro_edu.training.fit import fit, is_global_zero, load_finished, load_or_train
from hyro_edu.training.runs import (METRICS_FILE, RESULT_FILE, InterruptGuard, RunConflict, TrainingInterrupted,
                                    summary_line, write_json)

__all__ = ["TrainingInterrupted", "RunConflict", "train", "load_result", "load_trained", "format_metrics",
           "format_summary", "write_metrics"]


def load_result(config: HVSATrainConfig, root: Optional[Union[str, Path]] = None) -> Optional[dict]:
    """The finished run of ``config`` (its ``result.pt``, ``loaded=True``), or ``None``.  Never
    trains; :class:`~hyro_edu.training.runs.RunConflict` when the directory holds another config."""
    config = config.resolved()
    return load_finished(check_run_dir(config, root), config.key(), config.name)


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
    """``trained 400 steps in 6.0 s``, ``resumed at 45, 355 steps in 5.0 s (400 in total)`` or
    ``loaded finished run (400 steps)`` (:func:`hyro_edu.training.runs.summary_line`)."""
    return summary_line(result, decimals=1)


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
    config = (load_config() if config is None else config).resolved()
    directory = run_dir(config, root)
    return load_or_train(
        lambda: load_result(config, root), lambda: check_data(config, data_root),
        lambda guard: _train(config, directory, guard=guard, device=device, data_root=data_root,
                             evaluate=evaluate, retrain=retrain),
        retrain=retrain)


def _train(config: HVSATrainConfig, directory: Path, *, guard: InterruptGuard, device, data_root,
           evaluate: bool, retrain: bool) -> dict:
    def build(device):
        torch.device(device)  # an unknown device fails before the data is built
        data = build_data(config, data_root=data_root)
        model = build_model(config, data.tree, in_dim=data.in_dim)
        return HVSATask(model, config), HVSADataModule(data, config)

    def metrics_of(task: HVSATask, datamodule: HVSADataModule) -> dict:
        # rank zero evaluates (the other processes of a multi-process run return no metrics)
        return evaluate_model(task.model, datamodule.data, config) if evaluate and is_global_zero() else {}

    fitted = fit(directory, key=config.key(), name=config.name, config=config.to_dict(), guard=guard,
                 build=build, evaluate=metrics_of, max_steps=config.steps,
                 checkpoint_every=config.checkpoint_every, precision=config.precision,
                 grad_clip=config.grad_clip, progress=config.progress, device=device, retrain=retrain)
    task, resumed_from = fitted.task, fitted.resumed_from
    result = {
        "config": config.to_dict(), "key": config.key(), "name": config.name, "metrics": fitted.metrics,
        "state": {k: v.detach().cpu() for k, v in task.model.state_dict().items()},
        "losses": task.losses, "train_seconds": fitted.train_seconds, "steps": fitted.steps,
        "resumed_from": resumed_from, "device": fitted.device.type, "versions": {"torch": str(torch.__version__)},
    }
    if is_global_zero():  # one process writes the run's files
        if evaluate:
            write_metrics(directory, config, result)
        paths.atomic_torch_save(result, directory / RESULT_FILE)
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
