"""Run directories, their owner check, metric files, and interruption by SIGINT or SIGTERM.

A run lives in ``<root>/<name>/`` and belongs to one config key (:meth:`TrainConfig.key
<hyro_edu.training.config.TrainConfig.key>`).  :func:`claim_run` writes ``run.json`` (name, key,
config) when a run starts; :func:`check_run` refuses a directory written by another config and
says how to go on (``--retrain`` / ``retrain=True``, or a new ``name``).  Both only read JSON, so
a command line can check before torch or Lightning loads.

Interruption (:class:`InterruptGuard`): the first SIGINT (Ctrl-C, Jupyter's "interrupt kernel") or
SIGTERM (``kill``, ``timeout``, a scheduler, a container stop) does not stop the process at once
while the training loop runs: it sets a flag, the current step finishes, a checkpoint of that
step is written (:class:`hyro_edu.training.lightning.StopOnSignal`) and :class:`TrainingInterrupted`
is raised.  A second signal, or a signal outside the loop, raises at once.  A command line exits
with ``128 + signal number``, the shells' convention: 130 for SIGINT, 143 for SIGTERM.
"""
from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Optional, Sequence, Union

__all__ = [
    "RUN_FILE",
    "METRICS_FILE",
    "RESULT_FILE",
    "RunConflict",
    "read_run",
    "check_run",
    "claim_run",
    "write_json",
    "summary_line",
    "TrainingInterrupted",
    "InterruptGuard",
    "exit_code",
]

#: The owner record of a run directory: ``{"name", "key", "config"}``.
RUN_FILE = "run.json"
#: Evaluation metrics of a finished run, beside the logs.
METRICS_FILE = "metrics.json"
#: The finished run: its metrics and trained tensors, written last.
RESULT_FILE = "result.pt"


class RunConflict(ValueError):
    """A run directory holds a run of another config (``path``: the file that says so)."""

    def __init__(self, path: Union[str, Path], name: str):
        self.path = Path(path)
        super().__init__(
            f"{self.path} was written by a different config than this one (run name {name!r}); "
            "train it again with --retrain (retrain=True in Python) to overwrite it, "
            "or give this config a new run name (--set name=NEW, or name= in the config)"
        )


def write_json(path: Union[str, Path], obj) -> Path:
    """Write ``obj`` as indented JSON atomically (a temporary file, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def summary_line(result: dict, *, decimals: int) -> str:
    """One line on a run's result: ``trained N steps in T s``, ``resumed at K, N - K steps in T s
    (N in total)`` or ``loaded finished run (N steps)``, from ``result["steps"]``, ``["loaded"]``,
    ``["resumed_from"]`` and ``["train_seconds"]`` (``T`` with ``decimals`` digits)."""
    steps = int(result["steps"])
    if result.get("loaded"):
        return f"loaded finished run ({steps} steps)"
    start = result.get("resumed_from")
    seconds = f"{result['train_seconds']:.{decimals}f}"
    if start:
        return f"resumed at {start}, {steps - start} steps in {seconds} s ({steps} in total)"
    return f"trained {steps} steps in {seconds} s"


def read_run(directory: Union[str, Path]) -> Optional[dict]:
    """The ``run.json`` of ``directory``, or ``None`` when there is none."""
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged record: the checkpoints' own keys decide


def check_run(directory: Union[str, Path], key: str, name: str) -> None:
    """Raise :class:`RunConflict` when ``directory``'s ``run.json`` names another key."""
    record = read_run(directory)
    if record is not None and record.get("key") != key:
        raise RunConflict(Path(directory) / RUN_FILE, name)


def claim_run(directory: Union[str, Path], key: str, name: str, config: dict, *,
              retrain: bool = False) -> Path:
    """Check (unless ``retrain``) and write ``run.json`` for the run about to start."""
    directory = Path(directory)
    if not retrain:
        check_run(directory, key, name)
    return write_json(directory / RUN_FILE, {"name": name, "key": key, "config": config})


def exit_code(signum: int) -> int:
    """``128 + signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by a signal (a ``KeyboardInterrupt``, so ``except KeyboardInterrupt`` sees it).

    ``signal``: the signal number (``signal.SIGINT`` or ``signal.SIGTERM``); ``step``: steps
    completed; ``checkpoint``: the checkpoint to resume from (``None`` if none was written yet);
    ``checkpoint_step``: its step; ``hint``: how to resume from Python; :attr:`exit_code`:
    ``128 + signal``.  :meth:`message` is the line a command line prints.
    """

    def __init__(self, signum: int, step: Optional[int] = None, checkpoint: Optional[Path] = None,
                 checkpoint_step: Optional[int] = None, *, during: str = "training",
                 hint: str = "call train() with the same config again to resume"):
        self.signal = int(signum)
        self.step, self.checkpoint = step, checkpoint
        self.checkpoint_step = checkpoint_step
        self.during, self.hint = during, hint
        super().__init__(self.message(hint))

    @property
    def exit_code(self) -> int:
        return exit_code(self.signal)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def message(self, hint: str = "run the same command to resume") -> str:
        """``"interrupted at step N; run the same command to resume"`` and where the checkpoint is."""
        where = f"at step {self.step}" if self.step is not None else "before the first step"
        if self.during != "training":
            where += f", during {self.during}"
        parts = [f"interrupted {where}"]
        if self.checkpoint is None:
            parts.append("no checkpoint yet, so it starts again from step 0")
        elif self.checkpoint_step is not None and self.checkpoint_step != self.step:
            parts.append(f"last checkpoint at step {self.checkpoint_step}")
        parts.append(hint)
        text = "; ".join(parts) + f" ({self.signal_name}"
        if self.checkpoint is not None:
            text += f"; checkpoint {self.checkpoint}"
        return text + ")"


class InterruptGuard:
    """Context manager that turns SIGINT/SIGTERM into a request to stop after the current step.

    While ``deferring`` is true (the training loop runs), the first signal only records
    itself in ``received``; the loop checks it after every step.  Otherwise, and for a second
    signal, the handler raises :class:`TrainingInterrupted` at once.  The previous handlers are
    restored on exit.  Outside the main thread (signals cannot be caught there) it does nothing;
    a SIGINT that the process ignores (``nohup``, a background job) stays ignored.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = tuple(signals)
        self.received: Optional[int] = None
        self.deferring = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        first = self.received is None
        if first:
            self.received = int(signum)
        if not (first and self.deferring):
            raise TrainingInterrupted(signum)

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                previous = signal.getsignal(signum)
                if previous is signal.SIG_IGN:
                    continue
                self._previous[signum] = previous
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
