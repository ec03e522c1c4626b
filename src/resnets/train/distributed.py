"""PyTorch DistributedDataParallel set-up from torchrun's environment variables.

``torchrun --nproc_per_node N -m resnets.train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK;
we start gloo on CPU and nccl on GPU. Without them training runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..devices import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # a device that is not there is an error, as in one process (not gloo on the CPU)
    use_cuda = resolve_device(device).type == "cuda"
    if use_cuda and str(device) not in ("auto", "cuda"):
        raise ValueError(f"under torchrun each process uses the GPU of its LOCAL_RANK: ask "
                         f"for device cuda (or auto), got {str(device)!r}")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local_rank, dev)
