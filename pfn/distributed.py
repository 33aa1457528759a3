"""Data-parallel prior-fitting with torch.distributed (launched by ``torchrun``).

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`start` joins the process group
(gloo on CPU, nccl on GPU) and returns a :class:`Processes` describing this rank. Without those
variables (a plain ``pfn train``) it returns a single process and never touches
torch.distributed, so one code path serves both.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pfn.config import ConfigError

BACKENDS = ("auto", "gloo", "nccl")


@dataclass(frozen=True)
class Processes:
    """This process's place in a run: rank of world_size; backend None for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes checkpoints."""
        return self.rank == 0

    def shard(self, batch_size: int) -> range:
        """Indices (in the global batch) of the datasets this rank draws: a contiguous slice."""
        per_rank = batch_size // self.world_size
        return range(self.rank * per_rank, (self.rank + 1) * per_rank)

    def sum(self, value: float, device: torch.device) -> float:
        """The sum of ``value`` over all ranks."""
        if self.backend is None:
            return value
        t = torch.tensor([value], dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device)
        dist.all_reduce(t)
        return float(t.item())

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of ``value`` over all ranks."""
        return self.sum(value, device) / self.world_size

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a resumed state reaches ranks without shared storage)."""
        if self.backend is None:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def replica_digests(self, model: nn.Module) -> list[str]:
        """sha256 of every rank's parameters, rank order: all equal when the replicas agree."""
        digest = hashlib.sha256()
        for value in model.state_dict().values():
            digest.update(value.detach().float().cpu().numpy().tobytes())
        if self.backend is None:
            return [digest.hexdigest()]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, digest.hexdigest())
        return gathered

    def close(self, wait: bool) -> None:
        """Leave the process group; ``wait``: after every rank got here (a run that finished)."""
        if self.backend is not None:
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def start(device: str, backend: str = "auto") -> tuple[Processes, torch.device]:
    """Join the process group torchrun set up (if any) and pick this rank's device.

    backend: "auto" (nccl for device "cuda", gloo for "cpu"), "gloo" or "nccl". Raises
    ConfigError before any training when the backend cannot run here (nccl without enough GPUs).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes(), torch.device(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = ("nccl" if device == "cuda" else "gloo") if backend == "auto" else backend
    if chosen == "nccl":
        if device != "cuda":
            raise ConfigError("the nccl backend runs on GPUs only; use --device cuda, or --backend gloo on CPU")
        if not dist.is_nccl_available():
            raise ConfigError("this torch build has no nccl backend; use --backend gloo")
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1)))
        if per_node > torch.cuda.device_count():
            raise ConfigError(
                f"{per_node} processes on this node need a GPU each but torch sees {torch.cuda.device_count()}; "
                "start at most as many processes per node as there are GPUs (torchrun --nproc_per_node)"
            )
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=chosen)
    dev = torch.device(f"cuda:{local_rank}") if device == "cuda" else torch.device("cpu")
    return Processes(rank=rank, world_size=world_size, local_rank=local_rank, backend=chosen), dev
