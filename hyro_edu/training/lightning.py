"""Lightning pieces every trainer shares: quiet set-up, a step progress bar, stop-on-signal, loggers.

* :func:`quiet` silences Lightning's banner and advice that does not apply to these runs.
* :class:`StepProgressBar` counts optimiser steps against ``max_steps``: after a resume it keeps
  its total and its ETA (Lightning's bar shows ``11/?`` then, since it sizes the bar per epoch
  and a resume in the middle of the one epoch skips that).
* :class:`StopOnSignal` ends training cleanly on SIGINT/SIGTERM (with
  :class:`hyro_edu.training.runs.InterruptGuard`): after the current step it writes the
  checkpoint of that step atomically, flushes the loggers and raises :class:`StopRequested`,
  which the caller turns into :class:`~hyro_edu.training.runs.TrainingInterrupted`.  (Lightning
  2.6 itself turns a ``KeyboardInterrupt`` into ``sys.exit(1)`` and a SIGTERM into a
  ``SystemExit`` with status 0, both without a checkpoint of the current step.)  With several
  processes they agree after every optimiser step (an all-reduce of the signal number), so all
  stop after the same step and rank zero writes the one checkpoint; a signal that reaches one
  process only (``kill`` of rank zero, a scheduler) stops them all.
* :class:`hyro_edu.training.lightning.ConfigTask` is the ``LightningModule`` base of a system's
  task: its config's key in the hyperparameters (a checkpoint of another key is refused), the
  seeded per-step generator, the loss of every optimiser step and the optimiser with a per-step
  ``LambdaLR`` schedule.
* :class:`hyro_edu.training.lightning.StepLosses` turns the micro-batch losses Lightning hands
  ``on_train_batch_end`` into one loss per optimiser step: the mean over the step's
  micro-batches (``accumulate_grad_batches``) and over the processes, the loss of the whole
  global batch.
* :func:`csv_loggers` writes ``<run>/logs/csv/version_<attempt>/metrics.csv`` (and TensorBoard
  logs when ``tensorboard`` is installed), flushed every ``flush_every`` steps.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from hyro_edu.core.distributed import all_reduce
from hyro_edu.training.runs import InterruptGuard

__all__ = ["quiet", "StepProgressBar", "StopOnSignal", "StopRequested", "ConfigTask", "StepLosses", "csv_loggers"]

#: Advice Lightning gives that does not apply to these runs (single process, small in-memory data,
#: checkpoints written on purpose into an existing run folder, resumes in the middle of the one epoch).
_IGNORED_MESSAGES = (
    r".*does not have many workers.*",
    r".*resuming from a checkpoint that ended before the epoch.*",
    r".*GPU available but not used.*",
    r".*Checkpoint directory.*exists and is not empty.*",
    r".*The number of training batches.*",
    r".*LeafSpec.*",
    r".*TreeSpec.*",
    r".*tensorboardX.*",
    r".*sync_dist=True.*",
    r".*static graph.*",
)


def _all_reduce(trainer, values: list, op: str = "sum") -> list:
    """``values`` (floats) reduced over the processes of ``trainer`` (``"sum"`` or ``"max"``)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=trainer.strategy.root_device)
    return all_reduce(tensor, op).tolist()


def _distributed(trainer) -> bool:
    import torch.distributed as dist

    return trainer.world_size > 1 and dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def quiet():
    """Silence Lightning's banner (GPU available..., seed set...) and its advice warnings."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning(\..*)?")
            warnings.filterwarnings("ignore", module=r"pytorch_lightning(\..*)?")
            for pattern in _IGNORED_MESSAGES:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, counting optimiser steps ``global_step / max_steps``.

    The bar starts at the resumed step (tqdm's ``initial``), so its rate and ETA count only the
    steps of this attempt: ``45/60 [00:00<?]`` right after a resume at step 45, then
    ``50/60 [00:02<00:04]``.
    """

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        if trainer.max_steps is None or trainer.max_steps < 0:  # no step budget: Lightning's bar
            return super().init_train_tqdm()
        return Tqdm(desc=self.train_description, initial=trainer.global_step, total=trainer.max_steps,
                    position=2 * self.process_position, disable=self.is_disabled, leave=True,
                    dynamic_ncols=True, file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT)

    def on_train_epoch_start(self, trainer, *args) -> None:
        if trainer.max_steps is None or trainer.max_steps < 0:
            super().on_train_epoch_start(trainer, *args)  # the bar counts the epoch's batches

    def on_exception(self, trainer, pl_module, exception) -> None:
        try:
            bar = self.train_progress_bar
        except TypeError:  # the exception came before training started: no bar yet
            return
        bar.close()  # an interrupted run: leave its last frame now, not when the bar is collected

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable or trainer.max_steps is None or trainer.max_steps < 0:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = trainer.global_step
        if n % max(1, self.refresh_rate) == 0 or n >= trainer.max_steps:
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar


class StopRequested(Exception):
    """Raised inside ``Trainer.fit`` by :class:`StopOnSignal` after the checkpoint of ``step``.

    Not a ``KeyboardInterrupt``: Lightning would turn that into ``sys.exit(1)``.
    """

    def __init__(self, step: int, checkpoint: Path):
        self.step, self.checkpoint = int(step), Path(checkpoint)
        super().__init__(f"stop requested at step {step}; checkpoint {checkpoint}")


class StopOnSignal(L.Callback):
    """Stop after the current step when ``guard`` received a signal; checkpoint that step first.

    Sets ``guard.deferring`` while the training loop runs, so a first signal waits for the end of
    the step.  Records ``step`` (steps completed) and ``saved_step`` (the step of the latest
    checkpoint any callback wrote, or the resumed one).  Put it after the checkpoint callback,
    so a step that callback has just saved is not saved twice.

    It looks only at the end of an optimiser step (not between the micro-batches of
    ``accumulate_grad_batches``).  With several processes, the signal numbers are all-reduced
    (maximum) after every step, so every process stops after the same step; ``signal`` is the
    signal all of them stop for (the one this process received, or another's).
    """

    def __init__(self, guard: InterruptGuard, checkpoint: Path):
        self.guard, self.checkpoint = guard, Path(checkpoint)
        self.step: Optional[int] = None
        self.saved_step: Optional[int] = None
        self.signal: Optional[int] = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.step = trainer.global_step
        if self.saved_step is None and trainer.global_step > 0:
            self.saved_step = trainer.global_step  # resumed from that checkpoint
        self.guard.deferring = True

    def on_train_end(self, trainer, pl_module) -> None:
        self.guard.deferring = False

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.guard.deferring = False

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_step = int(checkpoint.get("global_step", trainer.global_step))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:  # between the micro-batches of one optimiser step
            return
        self.step = trainer.global_step
        received = self.guard.received
        if _distributed(trainer):  # every process stops after the same step
            agreed = int(_all_reduce(trainer, [float(received or 0)], "max")[0])
            received = agreed or None
        if received is None:
            return
        self.signal = received
        zero = trainer.is_global_zero
        if self.saved_step != trainer.global_step or not (self.checkpoint.is_file() or not zero):
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
            trainer.save_checkpoint(tmp)  # every process takes part; rank zero writes
            if zero:
                os.replace(tmp, self.checkpoint)
            self.saved_step = trainer.global_step
        for logger in trainer.loggers:
            logger.save()
        raise StopRequested(trainer.global_step, self.checkpoint)


class StepLosses:
    """The loss of each optimiser step from the micro-batch losses of ``on_train_batch_end``.

    Lightning hands ``on_train_batch_end`` the loss of one micro-batch divided by
    ``accumulate_grad_batches`` (:math:`A`); :meth:`hyro_edu.training.lightning.StepLosses.add`
    undoes that, and after the :math:`A`-th micro-batch returns their mean, averaged over the
    processes too (an all-reduce; the micro-batches are of equal size): the loss of the step's
    global batch, the same whether one process or several trained it.  ``None`` between
    micro-batches.
    """

    def __init__(self):
        self._total, self._count = 0.0, 0

    def add(self, trainer, loss) -> Optional[float]:
        accumulate = max(1, int(trainer.accumulate_grad_batches))
        self._total += float(loss) * accumulate
        self._count += 1
        if self._count < accumulate:
            return None
        mean = self._total / self._count
        self._total, self._count = 0.0, 0
        if _distributed(trainer):
            mean = _all_reduce(trainer, [mean])[0] / trainer.world_size
        return mean


class ConfigTask(L.LightningModule):
    """The ``LightningModule`` part every system's task shares: ``model`` and the resolved ``config``
    (a :class:`hyro_edu.training.config.TrainConfig`), whose ``to_dict()`` and ``key()`` go into the
    hyperparameters; ``losses`` lists the loss of every optimiser step this process ran (of the
    global batch: :class:`hyro_edu.training.lightning.StepLosses`).

    A subclass writes ``training_step`` and the two hooks
    :meth:`hyro_edu.training.lightning.ConfigTask.make_optimizer` and
    :meth:`hyro_edu.training.lightning.ConfigTask.lr_lambda`; the schedule steps every optimiser
    step, and ``lr`` is logged every step.  A checkpoint of another config key is refused on load.
    """

    def __init__(self, model, config):
        super().__init__()
        self.model = model
        self.config = config.resolved()
        self.save_hyperparameters({"config": self.config.to_dict(), "key": self.config.key()})
        self.losses: list[float] = []
        self.step_losses = StepLosses()

    def step_generator(self) -> torch.Generator:
        """The generator of the current step's random draws, seeded by ``(seed, step)``."""
        return torch.Generator().manual_seed(int(self.config.seed) * 1_000_003 + int(self.trainer.global_step))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        loss = self.step_losses.add(self.trainer, outputs["loss"])
        if loss is None:  # between the micro-batches of one optimiser step
            return
        self.losses.append(loss)
        sched = self.lr_schedulers()
        if sched is not None:
            self.log("lr", sched.optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    def make_optimizer(self, params: list) -> torch.optim.Optimizer:
        """The optimiser of the trainable ``params`` (a subclass's choice)."""
        raise NotImplementedError

    def lr_lambda(self) -> Callable[[int], float]:
        """The learning-rate factor of each step (``LambdaLR``'s ``lr_lambda``; a subclass's choice)."""
        raise NotImplementedError

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = self.make_optimizer(params)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_lambda())
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("hyper_parameters", {}).get("key") != self.config.key():
            raise ValueError(
                f"the checkpoint was written by a different config than run {self.config.name!r}; "
                "train it again with --retrain (retrain=True in Python), or give this config a new name"
            )


def csv_loggers(directory: Path, *, flush_every: int = 100) -> list:
    """A ``CSVLogger`` at ``<directory>/logs/csv`` (one ``version_<attempt>`` folder per attempt:
    a resumed run never overwrites the logs of the attempt that stopped), flushed to disk every
    ``flush_every`` steps, and a ``TensorBoardLogger`` at ``logs/tensorboard`` if ``tensorboard``
    is installed."""
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(Path(directory) / "logs", name="csv", flush_logs_every_n_steps=flush_every)]
    try:
        import tensorboard  # noqa: F401  (optional: pip install tensorboard)
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(Path(directory) / "logs", name="tensorboard"))
    except ImportError:
        pass
    return loggers
