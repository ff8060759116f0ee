"""Lightning's chatter, silenced where hyro_edu trains (tiny CLIP pretraining, segmenter training)."""
from __future__ import annotations

import contextlib
import logging
import warnings

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
)


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
