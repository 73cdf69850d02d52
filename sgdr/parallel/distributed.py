"""Devices and several processes (torchrun): which device, who is who, sums across processes, and
agreeing when to stop or refuse."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from sgdr.cli import UserError
from sgdr.parallel.devices import visible_gpus


@dataclass
class Team:
    """This process's place among the processes of one run (one process: rank 0 of 1).

    ``control`` is a Gloo group for the small host-side agreements (NCCL groups carry only
    GPU tensors); with Gloo as the main backend it is the default group.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    control: Any = None

    @property
    def is_main(self) -> bool:
        """Rank 0 prints and writes every file."""
        return self.rank == 0

    def sum(self, *tensors: torch.Tensor) -> None:
        """Add up ``tensors`` (in place) over the processes: exact totals, not averages of averages."""
        if self.world > 1:
            for tensor in tensors:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def agree(self, values: list[int]) -> list[int]:
        """The largest of each value over the processes, so that all of them take the same decision."""
        if self.world == 1:
            return values
        agreed = torch.tensor(values, dtype=torch.long)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX, group=self.control)
        return agreed.tolist()

    def from_main(self, value: int) -> int:
        """Rank 0's ``value`` in every process (a seed drawn once for the whole run)."""
        if self.world == 1:
            return value
        shared = torch.tensor([value], dtype=torch.long)
        dist.broadcast(shared, src=0, group=self.control)
        return int(shared.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier(group=self.control)

    def share_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) in every process. DDP sends rank 0's before
        each training forward, then each process updates them with its own share of the batch, so
        after the last batch they differ; with rank 0's, every process validates the network rank 0
        saves. A resumed run starts from those same buffers, so resuming stays exact."""
        if self.world > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    @contextmanager
    def refusals(self) -> Iterator[None]:
        """A stretch in which any process may refuse the run (a ``UserError``) while the others go on.

        At its end the processes agree: if any refused, every one raises a ``UserError`` with the
        message of the lowest-ranked refusing process (rank 0 alone prints it), so none is left
        waiting in a collective for a process that has gone. No collective may run inside.
        """
        error: UserError | None = None
        try:
            yield
        except UserError as caught:
            error = caught
        if self.world > 1:
            first = self.world - self.agree([self.world - self.rank if error is not None else 0])[0]
            if first < self.world:
                message = [str(error) if first == self.rank else None]
                dist.broadcast_object_list(message, src=first, group=self.control)
                if first != self.rank:
                    raise UserError(f"rank {first}: {message[0]}")
        if error is not None:
            raise error


def world_size() -> int:
    """How many processes torchrun started for this run (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's number on its machine under torchrun (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def join(device_name: str) -> tuple[Team, torch.device | None]:
    """Join the process group torchrun set up, if any: NCCL with CUDA, Gloo on the CPU.

    Returns the team and, under torchrun with CUDA, this process's GPU: cuda:LOCAL_RANK when the
    process sees its machine's GPUs, or cuda:0 when it sees one GPU only, as on clusters that bind a
    GPU to each task (SLURM's ``--gpus-per-task=1``); ``None`` leaves the choice of device to the caller.
    Under CUDA the processes then compare their GPUs' identities, so that two processes on one GPU
    are refused with the reason rather than failing inside NCCL.
    """
    world = world_size()
    if world == 1:
        return Team(), None
    rank, local = int(os.environ["RANK"]), local_rank()
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device_name}: CUDA is not available here; use --device cpu.")
    processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), local + 1)
    count = torch.cuda.device_count() if use_cuda else 0
    one_per_task = use_cuda and count == 1 and processes > 1  # one GPU bound to each process: its own
    if use_cuda and processes > count and not one_per_task:
        raise UserError(
            f"torchrun started {processes} processes on this machine, one per GPU, but there are "
            f"{visible_gpus(count)}: use --nproc_per_node={count} or fewer (or --device cpu)."
        )
    index = 0 if one_per_task else local
    if use_cuda and device_name.startswith("cuda:") and (processes > 1 or device_name != f"cuda:{local}"):
        raise UserError(
            f"--device {device_name}: under torchrun each process takes the GPU of its local rank "
            f"(this one cuda:{index}). Use --device cuda, and CUDA_VISIBLE_DEVICES to choose the GPUs."
        )
    device = None
    if use_cuda:
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    control = dist.new_group(backend="gloo") if use_cuda else None
    if use_cuda:
        try:
            check_own_gpus(world, device, control)
        except UserError:
            dist.destroy_process_group()
            raise
    return Team(rank, world, local, control), device


def check_own_gpus(world: int, device: torch.device, control: Any) -> None:
    """Refuse two processes on one GPU (NCCL cannot run them), in every process alike: each compares the
    identity (UUID) of its GPU with the others', so all reach the same verdict and none waits alone."""
    uuids: list[Any] = [None] * world
    dist.all_gather_object(uuids, str(torch.cuda.get_device_properties(device).uuid), group=control)
    shared = [[r for r, u in enumerate(uuids) if u == uuid] for uuid in dict.fromkeys(uuids)]
    if crowded := [ranks for ranks in shared if len(ranks) > 1]:
        raise UserError(
            f"ranks {', '.join(map(str, crowded[0][:-1]))} and {crowded[0][-1]} run on one GPU"
            f"{f' (and {len(crowded) - 1} more GPUs are shared)' if len(crowded) > 1 else ''}: every process "
            "needs a GPU of its own. Start at most as many processes a machine as it has GPUs, or give each "
            "task one GPU of its own (sbatch --gpus-per-task=1)."
        )


def leave(team: Team) -> None:
    if team.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
