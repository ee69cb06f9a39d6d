"""Training on several processes: joining the process group (torchrun or SLURM), this
process's place in it, the all-gather of embeddings, the gradient scaling that makes the
data-parallel average exact, the DistributedDataParallel wrapper and the barrier."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from cpt_embed.errors import InputError

# torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `srun` without torchrun sets these instead
SLURM_ENV = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_NTASKS", "LOCAL_RANK": "SLURM_LOCALID"}


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun (or SLURM's srun, with MASTER_ADDR and MASTER_PORT
    set) describes: gloo on CPU, NCCL on GPUs."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise InputError(
                f"SLURM task without {' and '.join(missing)}: export MASTER_ADDR=<first node> "
                "MASTER_PORT=29500 in the job script, or launch with torchrun"
            )
        os.environ.update({ours: os.environ[theirs] for ours, theirs in SLURM_ENV.items()})
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return world()


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait until every process gets here (no wait for a single process)."""
    if world()[1] > 1:
        dist.barrier()


def gather(local: torch.Tensor) -> torch.Tensor:
    """All processes' rows concatenated in rank order; only the local slice carries a
    gradient (all_gather returns constants)."""
    rank, size = world()
    if size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts)


def scale_grad_by_world(local: torch.Tensor) -> torch.Tensor:
    """Every process computes the whole loss but back-propagates only through its own
    slice; data-parallel averaging would then divide the true gradient by the world size.
    Multiplying the slice's gradient by the world size makes the average exact (tau, not
    averaged through embeddings, keeps its exact gradient)."""
    _, size = world()
    if size > 1 and local.requires_grad:
        local.register_hook(lambda grad: grad * size)
    return local


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` (on `device`) wrapped in DistributedDataParallel when several processes
    train; itself otherwise."""
    if world()[1] == 1:
        return module
    # find_unused_parameters: backbones carry layers pooling never reads (BERT's pooler)
    return torch.nn.parallel.DistributedDataParallel(
        module,
        find_unused_parameters=True,
        device_ids=[device.index] if device.type == "cuda" else None,
    )
