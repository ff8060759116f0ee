r"""Train, resume or load a tree-alignment run; evaluate it on the base, novel and full trees.

.. math:: \text{result} = \begin{cases} \text{load}(\texttt{result.pt}) & \text{finished run of the same key} \\
          \text{fit}(\texttt{last.ckpt}) & \text{otherwise (resumed when a checkpoint exists)} \end{cases}

:func:`hyro_edu.tree_alignment.train.run.train` is "load if present, else train" on the shared
engine (:func:`hyro_edu.training.fit.fit`): ``<run>/result.pt`` of the same config is read back
(``loaded=True``); otherwise training starts, or resumes from ``<run>/checkpoints/last.ckpt``
(``resumed=True``).  SIGINT and SIGTERM stop after the current step with a checkpoint of that step
and raise :class:`~hyro_edu.training.runs.TrainingInterrupted`; calling
:func:`hyro_edu.tree_alignment.train.run.train` again resumes.  Every config error is raised before
the data or a model is built.

Files of a run: ``run.json``, ``checkpoints/last.ckpt``, ``logs/csv/version_<attempt>/metrics.csv``
(the loss terms, ``lr`` and the curvatures ``curv/c_i``, ``curv/c_t``, ``curv/c_m``, every
``min(50, steps/10)`` steps), ``curvatures.csv`` (``step, c_i, c_t, c_m`` of **every** step, the
hyperbolic variants),
``cuts_<tree>.json`` (the stored evaluation cuts of each tree,
:func:`hyro_edu.hierarchy.tree_cuts.save_cuts`), ``metrics.json`` and ``result.pt`` (metrics, the
trained tensors, the loss and curvature trajectories; written last).

Several processes (``devices``, ``num_nodes``: :class:`hyro_edu.training.config.DistributedConfig`)
train data-parallel through :func:`hyro_edu.training.fit.fit`; rank zero evaluates and writes the
run's files (``curvatures.csv`` holds rank zero's curvatures).  ``vanilla`` (a mean over the
images) trains the weights of the one-process run; ProTeCt's node-centric loss (a mean over the
nodes present in the batch) and the alignment's curvatures (from the radius of the batch's mean
features) are statistics of each process's micro-batch, so the other variants train alike in
distribution only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from hyro_edu.core import paths
from hyro_edu.hierarchy.tree_cuts import load_cuts, save_cuts
from hyro_edu.training.fit import fit, is_global_zero, load_finished, load_or_train
from hyro_edu.training.runs import (METRICS_FILE, RESULT_FILE, RunConflict, TrainingInterrupted,
                                    summary_line, write_json)
from hyro_edu.tree_alignment.model import TreeAlignmentModel
from hyro_edu.tree_alignment.train.config import (TreeAlignmentTrainConfig, check_data, check_run_dir, load_config,
                                                  run_dir)
from hyro_edu.tree_alignment.train.data import build_data
from hyro_edu.tree_alignment.train.task import (TreeAlignmentDataModule, TreeAlignmentTask, build_model, evaluate,
                                                stored_cuts)

__all__ = ["CURVATURES_FILE", "TrainingInterrupted", "RunConflict", "train", "load_result", "load_trained",
           "run_cuts", "format_metrics", "format_summary", "write_metrics", "write_curvatures"]

#: The per-step curvature trajectory of a run, relative to its directory.
CURVATURES_FILE = "curvatures.csv"


def load_result(config: TreeAlignmentTrainConfig, root: Optional[Union[str, Path]] = None) -> Optional[dict]:
    """The finished run of ``config`` (its ``result.pt``, ``loaded=True``), or ``None``; never trains."""
    config = config.resolved()
    return load_finished(check_run_dir(config, root), config.key(), config.name)


def format_metrics(metrics: dict) -> str:
    """One line per tree: ``base: LA 71.2, HCA 40.1, MTA 80.3 (± 9.1 over 25 cuts; 720 images)``."""
    lines = []
    for name, m in metrics.items():
        lines.append(f"{name}: LA {m['la']:.1f}, HCA {m['hca']:.1f}, MTA {m['mta']:.1f} "
                     f"(± {m['mta_std']:.1f} over {m['num_cuts']} cuts; {m['num_samples']} images)")
    return "\n".join(lines)


def format_summary(result: dict) -> str:
    """``trained 360 steps in 30.0 s`` and the like (:func:`hyro_edu.training.runs.summary_line`)."""
    return summary_line(result, decimals=1)


def write_metrics(directory: Path, config: TreeAlignmentTrainConfig, result: dict) -> Path:
    """``<directory>/metrics.json``: name, key, steps, the metrics (percent) and the last curvatures."""
    last = result["curvatures"][-1][1:] if result.get("curvatures") else None
    return write_json(Path(directory) / METRICS_FILE, {
        "name": config.name, "key": config.key(), "steps": int(result["steps"]), "unit": "percent",
        "metrics": result["metrics"], "curvatures": None if last is None else dict(zip(("c_i", "c_t", "c_m"), last)),
    })


def write_curvatures(path: Path, curvatures) -> Path:
    """``path`` as CSV with the header ``step,c_i,c_t,c_m`` and one row per step (a notebook plots it)."""
    lines = ["step,c_i,c_t,c_m"] + [f"{int(s)},{ci!r},{ct!r},{cm!r}" for s, ci, ct, cm in curvatures]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def run_cuts(directory: Path, data, config: TreeAlignmentTrainConfig) -> dict:
    """The stored evaluation cuts of each tree: read from ``<directory>/cuts_<tree>.json``, or taken
    from the evaluation set (a full-size dataset's stored 25 cuts,
    :func:`hyro_edu.data.taxonomic_datasets.read_cuts`) or drawn
    (:func:`hyro_edu.tree_alignment.train.task.stored_cuts`), and written there."""
    out = {}
    for name, ev in data.evals.items():
        path = Path(directory) / f"cuts_{name}.json"
        if path.is_file():
            out[name] = load_cuts(path, ev.tree)
        else:
            out[name] = getattr(ev, "cuts", None) or stored_cuts(ev.tree, config)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_cuts(path, out[name], ev.tree)
    return out


def train(config: Optional[TreeAlignmentTrainConfig] = None, *, root: Optional[Union[str, Path]] = None,
          data_root=None, device=None, evaluate: bool = True, retrain: bool = False, clip=None) -> dict:
    """Train ``config`` (default: the ``toy`` config) and return its result, or load it.

    Returns ``dict(config, key, name, metrics, state, losses, curvatures, train_seconds, steps,
    resumed_from, run_dir, resumed, loaded, seconds, ...)``: ``metrics`` as
    :func:`hyro_edu.tree_alignment.train.task.evaluate` computes them (percent, per tree),
    ``state`` the trained tensors (prompts, cross-attention, curvatures), ``curvatures`` the
    ``(step, c_i, c_t, c_m)`` of every step of the run (all attempts).  ``clip``: a CLIP to use instead of
    loading ``clip_model`` (tests).  A finished run is loaded unless ``retrain``; an interrupted one
    resumes.  Raises :class:`~hyro_edu.tree_alignment.train.config.DataNotPrepared` and
    :class:`~hyro_edu.training.runs.RunConflict` before anything is built, and
    :class:`~hyro_edu.training.runs.TrainingInterrupted` after SIGINT / SIGTERM (with a checkpoint).
    """
    config = (load_config() if config is None else config).resolved()
    directory = run_dir(config, root)
    return load_or_train(
        lambda: load_result(config, root), lambda: check_data(config, data_root),
        lambda guard: _train(config, directory, guard=guard, device=device, data_root=data_root,
                             evaluate=evaluate, retrain=retrain, clip=clip),
        retrain=retrain)


def _train(config, directory: Path, *, guard, device, data_root, evaluate: bool, retrain: bool, clip) -> dict:
    def build(device):
        torch.device(device)
        data = build_data(config, data_root=data_root)
        model = build_model(config, data.tree, clip=clip)
        return TreeAlignmentTask(model, config), TreeAlignmentDataModule(data, config)

    def metrics_of(task, datamodule) -> dict:
        if not evaluate or not is_global_zero():  # rank zero evaluates a multi-process run
            return {}
        return _evaluate(task.model, datamodule.data, config, run_cuts(directory, datamodule.data, config))

    fitted = fit(directory, key=config.key(), name=config.name, config=config.to_dict(), guard=guard,
                 build=build, evaluate=metrics_of, max_steps=config.total_steps,
                 checkpoint_every=config.checkpoint_every, precision=config.precision, grad_clip=None,
                 progress=config.progress, device=device, retrain=retrain)
    task = fitted.task
    result = {
        "config": config.to_dict(), "key": config.key(), "name": config.name, "metrics": fitted.metrics,
        "state": task.model.trainable_state(), "losses": task.losses, "curvatures": task.curvatures,
        "train_seconds": fitted.train_seconds, "steps": fitted.steps, "resumed_from": fitted.resumed_from,
        "device": fitted.device.type, "versions": {"torch": str(torch.__version__)},
    }
    if is_global_zero():  # one process writes the run's files
        if evaluate:
            write_metrics(directory, config, result)
        if task.curvatures:
            write_curvatures(directory / CURVATURES_FILE, task.curvatures)
        paths.atomic_torch_save(result, directory / RESULT_FILE)
    result.update(loaded=False, resumed=fitted.resumed_from is not None, run_dir=directory)
    return result


def _evaluate(model: TreeAlignmentModel, data, config, cuts) -> dict:
    return evaluate(model, data, config, cuts=cuts)


def load_trained(result: dict, *, data_root=None, device=None, clip=None) -> TreeAlignmentModel:
    """Rebuild the model of a :func:`hyro_edu.tree_alignment.train.run.train` result with its
    trained tensors (eval mode): the CLIP is loaded again (or ``clip``), then the trained tensors
    replace the initial ones."""
    config = TreeAlignmentTrainConfig(**result["config"])
    data = build_data(config, data_root=data_root)
    model = build_model(config, data.tree, clip=clip)
    missing = set(result["state"]) - set(model.state_dict())
    if missing:
        raise ValueError(f"result holds tensors the model does not have: {sorted(missing)[:5]}")
    model.load_state_dict(result["state"], strict=False)
    return model.to(device or "cpu").eval()
