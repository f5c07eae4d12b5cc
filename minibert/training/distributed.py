"""Data parallelism with torch.distributed: the only module that reads RANK / WORLD_SIZE.

Started by torchrun (`torchrun --nproc_per_node=N train.py ...`), every process runs the same
script on its own device: NCCL between GPUs, gloo between CPU processes. Without torchrun the
script runs as one process and nothing here changes its behaviour.

How the work is split (the scripts follow these rules):
- Batches: all ranks build the same global batches of world_size * batch_size examples (same seed,
  same length grouping) and rank r takes the r-th slice of each. With equal slices the mean of the
  ranks' mean losses, which DistributedDataParallel's gradient averaging computes, is the global
  batch's mean: N ranks x batch b train exactly as 1 process x batch N*b.
  Deviation from single-process training: a last global batch too small to give every rank at
  least one example is dropped, so all ranks take the same number of steps.
- Gradient accumulation: the all-reduce runs only on each optimizer step's last micro-batch
  (DistributedDataParallel.no_sync on the others).
- Evaluation: rank r scores examples r, r + N, ...; the scores are gathered so every example counts
  exactly once.
- Files: rank 0 alone writes checkpoints, metrics, plots and results; the others wait at a barrier.
"""

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from minibert.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this call created the process group (so it also ends it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Distributed:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    device_type: "cuda" uses NCCL and the GPU numbered LOCAL_RANK; "cpu" uses gloo. Without
    torchrun's variables (or with WORLD_SIZE=1) this returns the single-process setting.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} GPUs; "
                              "start at most that many processes per node")
        torch.cuda.set_device(local_rank)
    owns_group = not dist.is_initialized()  # a script run from another (multi-task stage 2) joins its group
    if owns_group:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, owns_group)


def device_for(setup: Distributed, device: torch.device) -> torch.device:
    """Each process's own GPU; CPU processes share the CPU."""
    return torch.device("cuda", setup.local_rank) if device.type == "cuda" and setup.enabled else device


def shard_batches(batches: list[list[int]], setup: Distributed) -> list[list[int]]:
    """This rank's slice of every global batch (see the module notes); all ranks get as many."""
    if not setup.enabled:
        return batches
    shards = []
    for batch in batches:
        if len(batch) < setup.world_size:
            continue  # too small to give every rank an example: dropped (module notes)
        size = len(batch) // setup.world_size  # equal slices; an uneven remainder goes to the last ranks
        extra = len(batch) - size * setup.world_size
        start = setup.rank * size + max(0, setup.rank - (setup.world_size - extra))
        shards.append(batch[start:start + size + (setup.rank >= setup.world_size - extra)])
    return shards


def no_sync(model: torch.nn.Module, last_micro_batch: bool):
    """Skip DDP's gradient all-reduce on every micro-batch but an optimizer step's last."""
    if last_micro_batch or not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def eval_shard(count: int, setup: Distributed) -> list[int]:
    """Indices of the examples this rank scores: rank, rank + N, ... (each example on one rank)."""
    return list(range(setup.rank, count, setup.world_size))


def gather_rows(rows: torch.Tensor, indices: list[int], count: int, setup: Distributed) -> torch.Tensor:
    """Every rank's rows (one per index in `indices`) put back in example order, on every rank."""
    if not setup.enabled:
        return rows
    pieces = [None] * setup.world_size
    dist.all_gather_object(pieces, (indices, rows.cpu()))
    width = rows.shape[1:] if rows.dim() > 1 else ()
    merged = torch.empty((count, *width), dtype=rows.dtype)
    for shard_indices, shard_rows in pieces:
        if shard_indices:
            merged[torch.tensor(shard_indices)] = shard_rows
    return merged


def gather_objects(value, setup: Distributed) -> list:
    """[value of rank 0, value of rank 1, ...] on every rank (e.g. RNG states for a checkpoint)."""
    if not setup.enabled:
        return [value]
    values = [None] * setup.world_size
    dist.all_gather_object(values, value)
    return values


def all_reduce_sum(tensor: torch.Tensor, setup: Distributed) -> torch.Tensor:
    """The sum of `tensor` over all ranks (a copy; the input is left as it is)."""
    if not setup.enabled:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def barrier(setup: Distributed) -> None:
    if setup.enabled:
        dist.barrier()


def broadcast_object(value, setup: Distributed):
    """Rank 0's value on every rank (e.g. whether a check passed, so all ranks stop together)."""
    if not setup.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shutdown(setup: Distributed) -> None:
    """End the process group, if this script's init_distributed created it."""
    if setup.enabled and setup.owns_group and dist.is_initialized():
        dist.destroy_process_group()
