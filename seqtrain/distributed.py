"""Several processes on PyTorch's own engine: `torch.distributed.run` launches, DDP syncs gradients.

seqtrain never starts workers itself. `trainer.devices=N` hands the command line to
`torch.distributed.run` (the code behind `torchrun`), whose workers find RANK, WORLD_SIZE and
LOCAL_RANK in their environment, exactly as under an outer multi-node `torchrun ... -m seqtrain`.
Every helper here is a no-op in a single process, so the trainer reads the same either way.
"""

from __future__ import annotations

import gc
import math
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from seqtrain.errors import Interrupted

Stats = dict[str, torch.Tensor]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints, TensorBoard, metrics.jsonl and progress."""
        return self.rank == 0


def launched() -> bool:
    """True in a worker started by torchrun (ours or an outer one): it must not launch again."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def main_process() -> bool:
    """Rank 0, or not distributed at all; readable before the process group exists and after it is gone."""
    return int(os.environ.get("RANK", "0")) == 0


def current() -> World:
    if not dist.is_available() or not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launch(devices: int, args: list[str]) -> int:
    """Run `python -m seqtrain ARGS` as `devices` local workers through torch.distributed.run; return
    the exit code of the first worker that failed (0 when all succeeded). `--standalone` picks a free
    rendezvous port on this machine."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    parsed = torchrun.get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={devices}", "--module", "seqtrain", *args]
    )
    try:
        torchrun.run(parsed)
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # killed by a signal: the shell's convention
    except SignalException as e:  # SIGTERM/SIGINT to the launcher: workers were told to save and stop
        return 128 + int(e.sigval)
    return 0


@contextmanager
def session(device: str) -> Iterator[World]:
    """Join the process group when torchrun started this process (nccl on GPU, gloo on CPU); leave it after."""
    if not launched() or int(os.environ["WORLD_SIZE"]) == 1 or dist.is_initialized():
        yield current()
        return
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield current()
        dist.barrier()  # no rank tears its connections down while another still talks
    except BaseException as e:
        release_frames(e)
        if isinstance(e, Interrupted):  # every rank stops at the same step: wait until rank 0's checkpoint is written
            dist.barrier()
        raise
    finally:
        # DDP's reducer holds the group: free it while the interpreter is whole, or gloo's threads meet
        # a half-finalised interpreter at exit and abort ("terminate called without an active exception").
        gc.collect()
        dist.destroy_process_group()


def release_frames(error: BaseException) -> None:
    """Drop the local variables of the frames an error (and its causes) passed through, so the models
    and optimisers they held can be freed before the process group is; the traceback still prints."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if current().size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def any_rank(*flags: bool) -> list[bool]:
    """Each flag is true if it is true on any rank: every rank then takes the same branch (a rank that
    stops alone leaves the others waiting in the next all-reduce forever)."""
    if current().size == 1:
        return list(flags)
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    values = torch.tensor([float(f) for f in flags], device=backend_device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def max_over_ranks(value: float) -> float:
    """The largest of each rank's value: one clock for all ranks, so a schedule over training time gives
    every rank the same LR (DDP averages gradients, not weights: different LRs would part the replicas)."""
    if current().size == 1:
        return value
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=backend_device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_sum(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor summed over ranks (one all-reduce for all of them); the tensors themselves in one process."""
    if current().size == 1:
        return list(tensors)
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]


def sum_stats(stats: Stats) -> Stats:
    """Sum additive statistics over ranks. Ranks may hold different keys (a rank with no validation
    batch holds none), so the dicts are gathered rather than all-reduced tensor by tensor."""
    if current().size == 1:
        return stats
    gathered = gather({k: v.detach().cpu() for k, v in stats.items()})
    total: Stats = {}
    for part in gathered:
        for k, v in part.items():
            total[k] = total[k] + v if k in total else v
    return total


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    world = current()
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if current().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def rescale_position(batch_in_epoch: int, saved_world: int, world: int) -> int:
    """A sampler position saved by `saved_world` ranks, for `world` ranks. Every rank takes every
    world-th batch of one global order, so `batch_in_epoch * saved_world` global batches were consumed;
    rounding up to whole rounds of the new world repeats none and skips fewer than `world` of them."""
    return math.ceil(batch_in_epoch * saved_world / world)


def lr_factor(rule: str, world: int) -> float:
    """How much to scale the learning rate for `world` ranks (the global batch is `world` times larger)."""
    return {"none": 1.0, "linear": float(world), "sqrt": math.sqrt(world)}[rule]
