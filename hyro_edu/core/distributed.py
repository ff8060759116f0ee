"""Process-group helpers for evaluation and bookkeeping that runs in every training process.

When several processes train one run (``torch.distributed`` initialised by Lightning's ``ddp``,
``torchrun`` or ``srun``), an evaluation can split its items across them
(:func:`hyro_edu.core.distributed.shard`: process ``r`` of ``W`` takes items ``r, r + W, ...``)
and add up what they counted (:func:`hyro_edu.core.distributed.all_reduce`).  In a plain process
both do nothing, so the same code serves one process and many.
"""
from __future__ import annotations

import os

import torch

__all__ = ["global_rank", "rank_and_world", "shard", "all_reduce"]


def global_rank(devices: int = 1) -> int:
    """This process's rank among all training processes, from the environment the launchers set
    (``RANK``: torchrun and Lightning's launcher; ``SLURM_PROCID`` under ``srun``; else
    ``NODE_RANK × devices + LOCAL_RANK``); 0 in a plain process.  Known before the process
    group exists, so files are written once from the start of a run."""
    env = os.environ
    if env.get("RANK", "").isdigit():
        return int(env["RANK"])
    if env.get("SLURM_PROCID", "").isdigit() and int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(env["SLURM_PROCID"])
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")) or 0)
    return node * int(devices) + int(env.get("LOCAL_RANK", "0") or 0)


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, or ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int) -> range:
    """The items ``0 .. n - 1`` this process takes: ``range(rank, n, world size)``."""
    rank, world = rank_and_world()
    return range(rank, int(n), world)


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` summed (``op="sum"``) or maximised (``"max"``) over the process group, returned
    as a new tensor on ``tensor``'s device; ``tensor`` itself when no group is initialised.  With
    the NCCL backend the reduction runs on this process's GPU."""
    import torch.distributed as dist

    if rank_and_world()[1] == 1:
        return tensor
    device = tensor.device
    work = tensor.detach().clone()
    if dist.get_backend() == "nccl" and work.device.type != "cuda":
        work = work.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return work.to(device)
