"""Data-parallel training is one-process training on the same global batch (2 processes, gloo,
CPU): the same weights after a few steps, and the ranks' batches partition the global one.

The fusion's BatchNorm is put in eval mode here: on CPUs its statistics cannot be synchronised
(SyncBatchNorm needs GPUs; `train` converts to it when data-parallel on GPUs), and everything
else of a step (DDP's gradient averaging, clipping, AdamW) is what is compared.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mambaadv2_ref.model.factory import build_model
from mambaadv2_ref.recipe import make_optimizer
from mambaadv2_ref.sampler import StepBatchSampler
from mambaadv2_ref.train import train_step

STEPS, GLOBAL_BATCH = 3, 4


def _model_and_batches():
    torch.manual_seed(0)
    net = build_model("mambaadv2", profile="tiny", pretrained=False, drop_path=0.0,
                      image_size=64).double()
    images = torch.randn(STEPS, GLOBAL_BATCH, 3, 64, 64, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(1))
    return net, images


def _train(net, images, rank: int, world_size: int):
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    model = net if world_size == 1 else torch.nn.parallel.DistributedDataParallel(net)
    optimizer = make_optimizer(net, 1e-3, 1e-4)
    for step in range(STEPS):
        train_step(model, optimizer, images[step, rank::world_size])
    return [p.detach().clone() for p in net.parameters()]


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        net, images = _model_and_batches()
        weights = _train(net, images, rank, 2)
        if rank == 0:
            torch.save(weights, out)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_equals_one_process_on_the_global_batch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_rank, args=(port, out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    single = _train(*_model_and_batches(), rank=0, world_size=1)
    initial = [p.detach() for p in _model_and_batches()[0].parameters()]
    assert len(ddp) == len(single) == len(initial)
    for a, b in zip(ddp, single, strict=True):
        # float64; AdamW divides by sqrt(v): where a gradient is ~0, DDP's reassociated sums
        # (~1e-16) move a weight by up to ~1e-6 (measured), a thousandth of an lr-1e-3 step
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)
    moved = sum(not torch.equal(a, p0) for a, p0 in zip(ddp, initial, strict=True))
    assert moved > len(initial) // 2  # the steps trained the decoder (the encoder is frozen)


def test_rank_batches_partition_the_global_batch():
    single = list(StepBatchSampler(20, 4, 6, seed=3))
    ranks = [list(StepBatchSampler(20, 2, 6, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    for t in range(6):
        assert sorted(ranks[0][t] + ranks[1][t]) == sorted(single[t])
