"""One attempt of a run with Lightning: resume, fit, stop on a signal with a checkpoint, read the result.

A run of ``max_steps`` optimiser steps lives in a directory (:mod:`hyro_edu.training.runs`)::

    <run>/run.json               the owner record (claim_run), written when an attempt starts
    <run>/checkpoints/last.ckpt  every checkpoint_every steps, and at the step a signal stopped
    <run>/logs/csv/version_<attempt>/metrics.csv
    <run>/result.pt              what the system saves once the run is finished

:func:`hyro_edu.training.fit.fit` runs one attempt: it resumes from ``last.ckpt`` when that holds the same config key
(:func:`hyro_edu.training.fit.resume_step`), trains to ``max_steps`` and evaluates.  A SIGINT or SIGTERM (with
:class:`~hyro_edu.training.runs.InterruptGuard`) during training stops after the current step
with a checkpoint of that step; during evaluation it checkpoints the step reached; both raise
:class:`~hyro_edu.training.runs.TrainingInterrupted`.  :func:`hyro_edu.training.fit.read_result` reads a finished
run's ``result.pt`` back.

Several processes (``devices × num_nodes > 1`` in the config,
:class:`hyro_edu.training.config.DistributedConfig`): every process runs the same script and the
same :func:`hyro_edu.training.fit.fit` (Lightning's launcher starts the other local ranks by
running the command again; ``torchrun`` or ``srun`` start them all), with Lightning's ``ddp``
strategy.  Lightning does not replace the samplers (``use_distributed_sampler=False``): each
data module gives its :class:`hyro_edu.training.stream.ResumableSampler` the process's rank, so
every step reads the global batch of the one-process run, split across the processes and the
accumulated micro-batches.  Rank zero alone writes ``run.json``, the checkpoints and the logs
(and, in the systems, ``result.pt`` and ``metrics.json``: :func:`hyro_edu.training.fit.is_global_zero`);
a checkpoint of the last step is written before the evaluation, which every process runs (a
system shards it or runs it on rank zero).  On the CPU each process uses
``cpu_count // devices`` threads.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from hyro_edu.core.distributed import all_reduce, global_rank
from hyro_edu.training import lightning as engine
from hyro_edu.training.runs import (RESULT_FILE, InterruptGuard, RunConflict, TrainingInterrupted, check_run,
                                    claim_run)

__all__ = ["LAST_CHECKPOINT", "Fitted", "read_result", "load_finished", "load_or_train", "resume_step", "fit",
           "is_global_zero"]

#: The checkpoint an interrupted run resumes from, relative to the run directory.
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


class Fitted(NamedTuple):
    """What :func:`hyro_edu.training.fit.fit` returns.

    ``task``: the trained ``LightningModule``; ``steps``: the optimiser steps completed (all
    attempts); ``train_seconds``: the wall time of ``Trainer.fit`` in this attempt;
    ``resumed_from``: the step this attempt resumed at (``None`` for a fresh start); ``device``:
    the ``torch.device`` trained on; ``metrics``: what ``evaluate(task, datamodule)`` returned.
    """

    task: Any
    steps: int
    train_seconds: float
    resumed_from: Optional[int]
    device: torch.device
    metrics: Any


def is_global_zero() -> bool:
    """Whether this process writes the run's files: rank zero of an initialised process group,
    else :func:`hyro_edu.core.distributed.global_rank` ``== 0``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return global_rank() == 0


def read_result(path: Path, key: str, name: str) -> Optional[dict]:
    """The finished run's result saved at ``path`` (a ``dict``, read on the CPU), or ``None`` if absent.

    Raises :class:`~hyro_edu.training.runs.RunConflict` when the result holds another config
    ``key`` (``name``: the run name the message gives).
    """
    path = Path(path)
    if not path.is_file():
        return None
    result = torch.load(path, map_location="cpu", weights_only=False)
    if result.get("key") != key:
        raise RunConflict(path, name)
    return result


def load_finished(directory: Path, key: str, name: str) -> Optional[dict]:
    """The finished run in ``directory`` (its ``result.pt``, :func:`hyro_edu.training.fit.read_result`)
    with ``loaded=True``, ``resumed=False``, ``run_dir`` and ``seconds`` (the time to read it) set,
    or ``None``; never trains.

    Raises :class:`~hyro_edu.training.runs.RunConflict` when the result holds another config ``key``.
    """
    start = time.perf_counter()
    result = read_result(Path(directory) / RESULT_FILE, key, name)
    if result is None:
        return None
    result.update(loaded=True, resumed=False, run_dir=directory, seconds=time.perf_counter() - start)
    return result


def load_or_train(load: Callable[[], Optional[dict]], check: Callable[[], Any],
                  attempt: Callable[[InterruptGuard], dict], *, retrain: bool = False) -> dict:
    """Load if present, else train: ``load()`` (unless ``retrain``) when it finds a finished run;
    otherwise ``check()`` (the data, before anything is built), then ``attempt(guard)`` inside an
    :class:`~hyro_edu.training.runs.InterruptGuard`, with ``result["seconds"]`` the wall time of this call.
    """
    start = time.perf_counter()
    if not retrain:
        result = load()
        if result is not None:
            return result
    check()
    with InterruptGuard() as guard:
        result = attempt(guard)
    result["seconds"] = time.perf_counter() - start
    return result


def resume_step(last: Path, key: str, name: str) -> Optional[int]:
    """The step of the checkpoint ``last`` to resume from, or ``None`` when there is none.

    Raises :class:`~hyro_edu.training.runs.RunConflict` when the checkpoint's hyper-parameters
    hold another config ``key``.
    """
    if not last.is_file():
        return None
    meta = torch.load(last, map_location="cpu", weights_only=False)
    if meta.get("hyper_parameters", {}).get("key") != key:
        raise RunConflict(last, name)
    return int(meta.get("global_step", 0))


def fit(directory: Path, *, key: str, name: str, config: dict, guard: InterruptGuard,
        build: Callable[[Any], tuple], evaluate: Callable[[Any, Any], Any], max_steps: int,
        checkpoint_every: int, precision, grad_clip, progress: bool, device=None, retrain: bool = False,
        callbacks: Sequence[L.Callback] = (), trainer_options: Optional[dict] = None) -> Fitted:
    """Train the run in ``directory`` to ``max_steps`` (fresh, or resumed from ``last.ckpt``) and evaluate it.

    * ``key``, ``name``, ``config``: the config's key, run name and values (``run.json``);
    * ``guard``: the entered :class:`~hyro_edu.training.runs.InterruptGuard` of this attempt;
    * ``build(device)``: returns ``(task, datamodule)``, the ``LightningModule`` (whose
      hyper-parameters hold ``key``) and its data, given ``device`` as passed (default ``"cuda"``
      when available, else ``"cpu"``);
    * ``evaluate(task, datamodule)``: the metrics, computed after the last step (and interruptible);
    * ``max_steps``, ``checkpoint_every``, ``precision``, ``grad_clip``, ``progress``: the
      ``Trainer``'s budget, checkpoint period, precision, gradient clipping value and progress bar;
    * ``retrain``: remove the run's ``result.pt`` and ``last.ckpt`` first, and overwrite a
      ``run.json`` of another config;
    * ``callbacks``: run before the checkpoint callback; ``trainer_options``: more
      ``L.Trainer`` arguments.

    ``config``'s ``devices``, ``num_nodes``, ``strategy`` and ``accumulate_grad_batches``
    (:class:`hyro_edu.training.config.DistributedConfig`; absent: one process) go to the
    ``Trainer``; ``max_steps`` counts optimiser steps.  With several processes only rank zero
    writes files, and the data module must build rank-aware samplers.

    Returns :class:`hyro_edu.training.fit.Fitted`.  Raises :class:`~hyro_edu.training.runs.RunConflict` for a run
    directory or checkpoint of another key (unless ``retrain``), ``RuntimeError`` when training
    ended before ``max_steps``, and :class:`~hyro_edu.training.runs.TrainingInterrupted` after a
    signal, with ``last.ckpt`` at the step reached.
    """
    directory = Path(directory)
    result_path = directory / RESULT_FILE
    last = directory / LAST_CHECKPOINT
    devices, num_nodes = int(config.get("devices", 1)), int(config.get("num_nodes", 1))
    accumulate = int(config.get("accumulate_grad_batches", 1))
    world = devices * num_nodes
    zero = global_rank(devices) == 0
    if retrain and zero:  # the run starts afresh: a stale result or checkpoint must not be resumed
        result_path.unlink(missing_ok=True)
        last.unlink(missing_ok=True)
    # with retrain, no process resumes (another rank may look before rank zero has removed it)
    resumed_from = None if retrain else resume_step(last, key, name)
    if zero:
        claim_run(directory, key, name, config, retrain=retrain)
    elif not retrain:
        check_run(directory, key, name)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world > 1 and str(device) == "cuda":  # each process builds on its own GPU
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
    threads = torch.get_num_threads()
    if world > 1 and torch.device(device).type == "cpu":  # the processes share the node's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // devices))
    stopper = engine.StopOnSignal(guard, last)
    stopper.saved_step = resumed_from
    trainer, stage = None, "building the model"

    def interrupted(signum: int) -> TrainingInterrupted:
        step = stopper.step if stopper.step is not None else (resumed_from or 0)
        if trainer is not None and stage == "evaluation" and world == 1 and (
                stopper.saved_step != trainer.global_step or not last.is_file()):
            tmp = last.with_name(last.name + ".tmp")  # a checkpoint of the step reached, atomically
            trainer.save_checkpoint(tmp)
            tmp.replace(last)
            stopper.saved_step = trainer.global_step
        checkpoint = last if last.is_file() else None
        return TrainingInterrupted(signum, step, checkpoint, stopper.saved_step,
                                   during="training" if stage == "training" else stage)

    try:
        task, datamodule = build(device)
        checkpointing = ModelCheckpoint(dirpath=last.parent, filename="last", every_n_train_steps=checkpoint_every,
                                        save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True)
        all_callbacks = [*callbacks, checkpointing]
        if progress:
            all_callbacks.append(engine.StepProgressBar())
        all_callbacks.append(stopper)  # after the checkpoint callback: a step it saved is not saved twice
        device = torch.device(device)
        log_every = max(1, min(50, max_steps // 10))
        if world > 1:
            from lightning.pytorch.strategies import DDPStrategy

            # find_unused_parameters: a variant may train tensors its loss does not reach every step
            # (HVSA's decoder with components "cls"); one process simply leaves their gradient None
            placement = dict(devices=devices, num_nodes=num_nodes, use_distributed_sampler=False,
                             strategy=DDPStrategy(find_unused_parameters=True))
        else:
            placement = dict(devices=[device.index] if device.type == "cuda" and device.index is not None else 1)
        all_callbacks.insert(0, _AccumulationResume(accumulate))  # Lightning counts micro-batches
        with engine.quiet():
            trainer = L.Trainer(
                max_steps=max_steps, max_epochs=1, accelerator="gpu" if device.type == "cuda" else "cpu",
                precision=precision, gradient_clip_val=grad_clip, accumulate_grad_batches=accumulate,
                logger=engine.csv_loggers(directory, flush_every=log_every), callbacks=all_callbacks,
                enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
                limit_val_batches=0, log_every_n_steps=log_every, default_root_dir=directory,
                **placement, **(trainer_options or {}),
            )
            if world > 1:
                # the processes agree on a signal after every step (StopOnSignal); Lightning's own
                # SIGTERM handler would broadcast from inside the handler and kill the other ranks
                trainer._signal_connector.register_signal_handlers = lambda: None
            stage = "training"
            wall = time.perf_counter()
            trainer.fit(task, datamodule=datamodule, ckpt_path=None if resumed_from is None else last)
            wall = time.perf_counter() - wall
            if world > 1 and trainer.global_step >= max_steps and stopper.saved_step != trainer.global_step:
                _save(trainer, last)  # every process takes part: the evaluation needs no checkpoint of its own
                stopper.saved_step = trainer.global_step
        stage = "evaluation"
        if world > 1:  # a signal after the last step's check: every process stops, or none
            agreed = int(all_reduce(torch.tensor([guard.received or 0]), "max")[0])
            if agreed and guard.received is None:
                guard.received = agreed
        if guard.received is not None:  # the signal came after the last step's check
            raise TrainingInterrupted(guard.received)
        if trainer.global_step < max_steps:
            raise RuntimeError(f"training stopped at step {trainer.global_step} of {max_steps}; "
                               f"run again to resume from {last}")
        metrics = evaluate(task, datamodule)
    except engine.StopRequested:
        raise interrupted(guard.received or stopper.signal) from None
    except (TrainingInterrupted, SystemExit):
        if guard.received is None:  # not a signal of ours: Lightning's own exit, or the caller's
            raise
        raise interrupted(guard.received) from None
    finally:
        torch.set_num_threads(threads)
    return Fitted(task, trainer.global_step, wall, resumed_from, device, metrics)


def _save(trainer, last: Path) -> None:
    """A checkpoint of the step reached at ``last``, written atomically by rank zero (every
    process calls it: Lightning synchronises the processes)."""
    last.parent.mkdir(parents=True, exist_ok=True)
    tmp = last.with_name(last.name + ".tmp")
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        tmp.replace(last)


class _AccumulationResume(L.Callback):
    """Resume a checkpoint written with another ``accumulate_grad_batches``: Lightning's loop
    counts micro-batches, and decides when to step from that count, so the counts of the
    checkpoint are shifted to ``global_step × accumulate`` (the micro-batches this accumulation
    would have run)."""

    def __init__(self, accumulate: int):
        self.accumulate = int(accumulate)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        try:
            progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
        except KeyError:
            return
        old = int(checkpoint.get("hyper_parameters", {}).get("config", {}).get("accumulate_grad_batches", 1))
        shift = int(checkpoint.get("global_step", 0)) * (self.accumulate - old)
        if shift:
            for part in ("total", "current"):
                for counter in ("ready", "started", "processed", "completed"):
                    if counter in progress.get(part, {}):
                        progress[part][counter] += shift
