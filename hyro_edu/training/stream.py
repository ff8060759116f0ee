"""The resumable training stream: which item each position of an endless stream reads.

Training reads positions ``start .. stop - 1`` of an endless stream over ``n`` items, epoch ``e``
being the permutation drawn from ``(seed, e)``.  A run resumed at step ``k`` starts at position
``k × batch_size``, so it draws exactly the batches the uninterrupted run would have drawn from
step ``k`` on.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from hyro_edu.core import checks

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler):
    """Yields ``(index, position)`` for positions ``start .. stop - 1`` of an endless stream over
    ``n`` items: epoch ``e`` is ``permutation(seed, e)`` (or ``0..n-1`` when ``shuffle`` is False).

    Training resumes at ``start = global_step × batch_size``, so an interrupted run continues with
    exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, n: int, *, start: int, stop: int, seed: int = 0, shuffle: bool = True):
        self.n = checks.integer(n, "n", 1)
        self.start, self.stop = checks.integer(start, "start", 0), checks.integer(stop, "stop", 0)
        self.seed, self.shuffle = int(seed), bool(shuffle)

    def _epoch(self, e: int) -> np.ndarray:
        return np.random.default_rng([self.seed, e]).permutation(self.n)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = self.start
        if not self.shuffle:  # no array: n may be astronomically large (the toy world's stream)
            for pos in range(self.start, self.stop):
                yield pos % self.n, pos
            return
        while pos < self.stop:
            e = pos // self.n
            order = self._epoch(e)
            for i in range(pos - e * self.n, self.n):
                if pos >= self.stop:
                    return
                yield int(order[i]), pos
                pos += 1

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
