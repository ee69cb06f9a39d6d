"""The distributed helpers: one process is a world of one, two gloo processes gather in
rank order with the gradient on the local slice only (scaled by the world size), and a
SLURM task without a master address is a clear error."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from test_torchrun import _free_port

from cpt_embed.errors import InputError
from cpt_embed.train.distributed import (
    barrier,
    data_parallel,
    gather,
    init_distributed,
    scale_grad_by_world,
    world,
)


def test_one_process_is_a_world_of_one(monkeypatch):
    for name in ("WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    assert init_distributed() == world() == (0, 1)
    barrier()  # nothing to wait for
    local = torch.ones(2, 3, requires_grad=True)
    assert gather(scale_grad_by_world(local)) is local
    module = torch.nn.Linear(2, 2)
    assert data_parallel(module, torch.device("cpu")) is module


def _worker(rank: int, size: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size)
    )
    torch.set_num_threads(1)
    try:
        assert init_distributed() == (rank, size)
        local = torch.full((2, 3), float(rank), requires_grad=True)
        rows = gather(scale_grad_by_world(local))
        expected = torch.cat([torch.full((2, 3), float(r)) for r in range(size)])
        torch.testing.assert_close(rows.detach(), expected)
        (rows * torch.arange(1.0, 2 * size + 1)[:, None]).sum().backward()
        # d/d(local) of the whole sum is this slice's row weights, times the world size
        weights = torch.arange(1.0, 2 * size + 1)[2 * rank : 2 * rank + 2, None]
        torch.testing.assert_close(local.grad, (weights * size).expand(2, 3))
        assert isinstance(
            data_parallel(torch.nn.Linear(2, 2), torch.device("cpu")),
            torch.nn.parallel.DistributedDataParallel,
        )
        barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_gather_in_rank_order_with_the_local_gradient_scaled():
    mp.spawn(_worker, args=(2, _free_port()), nprocs=2)


def test_a_slurm_task_without_master_address_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(InputError, match="MASTER_ADDR"):
        init_distributed()
