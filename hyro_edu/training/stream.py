"""The resumable training stream: which item each position of an endless stream reads.

Training reads positions ``start .. stop - 1`` of an endless stream over ``n`` items, epoch ``e``
being the permutation drawn from ``(seed, e)``.  A run resumed at step ``k`` starts at position
``k × batch_size``, so it draws exactly the batches the uninterrupted run would have drawn from
step ``k`` on.

Several processes share the stream: with ``W`` processes and per-process micro-batches of ``b``
positions, the stream is cut into blocks of ``b`` and process ``r`` takes blocks ``r, r + W,
r + 2W, ...``.  A global batch of ``B = A × W × b`` positions (``A`` accumulated micro-batches)
is therefore read whole, by the ``W`` processes together: micro-batch ``m`` of the step on
process ``r`` holds positions ``k·B + (m·W + r)·b .. + b - 1``.  The examples of a step, and so
the trained weights up to summation order, do not depend on ``W`` or ``A``.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from hyro_edu.core import checks

__all__ = ["ResumableSampler", "training_sampler"]


class ResumableSampler(Sampler):
    """Yields ``(index, position)`` for positions ``start .. stop - 1`` of an endless stream over
    ``n`` items: epoch ``e`` is ``permutation(seed, e)`` (or ``0..n-1`` when ``shuffle`` is False).

    Training resumes at ``start = global_step × batch_size``, so an interrupted run continues with
    exactly the batches the uninterrupted run would have drawn.

    ``rank``, ``num_replicas``, ``block``: process ``rank`` of ``num_replicas`` yields only the
    positions ``p`` with ``(p // block) % num_replicas == rank``, i.e. every ``num_replicas``-th
    block of ``block`` positions (``block``: the per-process micro-batch; see the module
    docstring).  ``start`` and ``stop`` are positions of the whole stream, multiples of
    ``block × num_replicas``.  Defaults: one process, which reads every position.
    """

    def __init__(self, n: int, *, start: int, stop: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, num_replicas: int = 1, block: int = 1):
        self.n = checks.integer(n, "n", 1)
        self.start, self.stop = checks.integer(start, "start", 0), checks.integer(stop, "stop", 0)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.num_replicas = checks.integer(num_replicas, "num_replicas", 1)
        self.rank = checks.integer(rank, "rank", 0, self.num_replicas - 1)
        self.block = checks.integer(block, "block", 1)
        group = self.block * self.num_replicas
        if self.num_replicas > 1 and (self.start % group or self.stop % group):
            raise ValueError(f"start and stop must be multiples of block x num_replicas = {group} "
                             f"(whole global batches), got {self.start} and {self.stop}")

    def _epoch(self, e: int) -> np.ndarray:
        return np.random.default_rng([self.seed, e]).permutation(self.n)

    def positions(self) -> Iterator[int]:
        """The stream positions this process reads, in order."""
        if self.num_replicas == 1:
            yield from range(self.start, self.stop)
            return
        group = self.block * self.num_replicas
        for base in range(self.start + self.rank * self.block, self.stop, group):
            yield from range(base, min(base + self.block, self.stop))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if not self.shuffle:  # no array: n may be astronomically large (the toy world's stream)
            for pos in self.positions():
                yield pos % self.n, pos
            return
        epoch, order = None, None
        for pos in self.positions():
            e = pos // self.n
            if e != epoch:
                epoch, order = e, self._epoch(e)
            yield int(order[pos - e * self.n]), pos

    def __len__(self) -> int:
        total = max(0, self.stop - self.start)
        return total // self.num_replicas if self.num_replicas > 1 else total


def training_sampler(n: int, trainer, *, batch_size: int, max_steps: int, seed: int = 0,
                     shuffle: bool = True) -> tuple[ResumableSampler, int]:
    """``(sampler, per-process micro-batch)`` for a Lightning ``trainer`` at its ``global_step``:
    positions from ``global_step × batch_size`` (the resumed step) for ``max_steps`` global
    batches, this process's blocks of ``batch_size / (world_size × accumulate_grad_batches)``
    positions (``ValueError`` unless that divides).  Lightning stops the epoch after
    ``len(loader)`` micro-batches, so the loader is ``max_steps`` steps long; ``max_steps``
    ends the run."""
    world = int(getattr(trainer, "world_size", 1) or 1)
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
    if batch_size % (world * accumulate):
        raise ValueError(f"batch_size {batch_size} must be divisible by the processes x accumulate_grad_batches = "
                         f"{world} x {accumulate}")
    block = batch_size // (world * accumulate)
    start = int(trainer.global_step) * batch_size
    sampler = ResumableSampler(n, start=start, stop=start + max_steps * batch_size, seed=seed, shuffle=shuffle,
                               rank=int(getattr(trainer, "global_rank", 0) or 0), num_replicas=world, block=block)
    return sampler, block
