"""Data-parallel training is one-process training on the same global batch (2 processes, gloo,
CPU): the same gradients after DDP's all-reduce, the same weights after a few steps, the ranks'
batches partition the global one, and a resumed 2-process `train` run continues exactly.

The fusion's BatchNorm is put in eval mode in the one-process comparisons: on CPUs its statistics
cannot be synchronised (SyncBatchNorm needs GPUs; `train` converts to it when data-parallel on
GPUs), and everything else of a step (DDP's gradient averaging, clipping, AdamW) is what is
compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mambaadv2_ref import train as train_module
from mambaadv2_ref.checkpoint import load_checkpoint
from mambaadv2_ref.data import make_tiny_dataset
from mambaadv2_ref.model.factory import build_model
from mambaadv2_ref.model.loss import reconstruction_loss
from mambaadv2_ref.recipe import make_optimizer
from mambaadv2_ref.sampler import StepBatchSampler
from mambaadv2_ref.train import train, train_step
from mambaadv2_ref.train_config import TrainConfig

STEPS, GLOBAL_BATCH = 3, 4
# the tiny profile shrunk further (as TRAIN_FAST / TRAIN_SMALL in test_bad_input.py)
TRAIN_FAST = {"image_size": 64, "batch_size": 2, "pretrained": False, "log_every": 1,
              "checkpoint_minutes": 0.0}
TRAIN_SMALL = {"dims": (16, 8, 8, 8), "headdim": 8, "d_state": 4, "num_directions": 2}


def _free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now (all bound at once, then closed)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _model_and_batches():
    """The float64 tiny model (seeded) and STEPS global batches (GLOBAL_BATCH, 3, 64, 64)."""
    torch.manual_seed(0)
    net = build_model("mambaadv2", profile="tiny", pretrained=False, drop_path=0.0,
                      image_size=64).double()
    images = torch.randn(STEPS, GLOBAL_BATCH, 3, 64, 64, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(1))
    return net, images


def _gradients(model, net, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss gradient of every trainable parameter of `net` on `images`, by name (after DDP's
    all-reduce when `model` is the DDP wrapper of `net`)."""
    enc, dec = model(images)
    net.zero_grad(set_to_none=True)
    reconstruction_loss(enc, dec).backward()
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.requires_grad}


def _train(rank: int, world_size: int) -> dict:
    """This rank's share of every global batch: the first batch's gradients, then STEPS
    `train_step`s; returns {"grads": {name: tensor}, "weights": [one tensor per parameter]}."""
    net, images = _model_and_batches()
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    model = net if world_size == 1 else torch.nn.parallel.DistributedDataParallel(net)
    grads = _gradients(model, net, images[0, rank::world_size])
    optimizer = make_optimizer(net, 1e-3, 1e-4)
    for step in range(STEPS):
        train_step(model, optimizer, images[step, rank::world_size])
    return {"grads": grads, "weights": [p.detach().clone() for p in net.parameters()]}


def _rank(rank: int, port: int, out: str) -> None:
    """Process `rank` of 2: `_train` in a gloo group, its result saved to `out` + rank."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.save(_train(rank, 2), f"{out}{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_and_single(tmp_path_factory):
    """(results of rank 0 and rank 1 of the 2-process run, result of the 1-process run)."""
    out = str(tmp_path_factory.mktemp("ddp") / "rank")
    mp.spawn(_rank, args=(_free_ports(1)[0], out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}{r}", weights_only=True) for r in (0, 1)]
    return ranks, _train(rank=0, world_size=1)


def test_ddp_gradients_are_the_one_process_gradients_of_the_global_batch(ddp_and_single):
    ranks, single = ddp_and_single
    grads = single["grads"]
    assert sum(bool(g.abs().sum() > 0) for g in grads.values()) > len(grads) // 2
    for result in ranks:  # every rank holds the mean over the global batch after all-reduce
        assert result["grads"].keys() == grads.keys()
        for name, g in grads.items():
            msg = f"{name}: {{}}".format
            if name.endswith("filter_grid"):
                # the FFT path runs in float32 by design (`blocks.freq_conv.fft_filter`): its
                # filter's gradient sums the batch in float32; measured 4e-8 x its largest entry
                torch.testing.assert_close(result["grads"][name], g, rtol=1e-5,
                                           atol=1e-6 * float(g.abs().max()), msg=msg)
            else:  # float64: the two half-batch means are added in another order than one mean
                torch.testing.assert_close(result["grads"][name], g, rtol=1e-9, atol=1e-15,
                                           msg=msg)


def test_two_process_ddp_equals_one_process_on_the_global_batch(ddp_and_single):
    ranks, single = ddp_and_single
    initial = [p.detach() for p in _model_and_batches()[0].parameters()]
    for result in ranks:
        assert len(result["weights"]) == len(single["weights"]) == len(initial)
        for a, b in zip(result["weights"], single["weights"], strict=True):
            # float64; AdamW divides by sqrt(v): where a gradient is ~0, DDP's reassociated sums
            # (~1e-16) move a weight by up to ~1e-6 (measured), a thousandth of an lr-1e-3 step
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-5)
    moved = sum(not torch.equal(a, p0) for a, p0 in zip(ranks[0]["weights"], initial,
                                                        strict=True))
    assert moved > len(initial) // 2  # the steps trained the decoder (the encoder is frozen)


def test_rank_batches_partition_the_global_batch():
    single = list(StepBatchSampler(20, 4, 6, seed=3))
    ranks = [list(StepBatchSampler(20, 2, 6, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    for t in range(6):
        assert sorted(ranks[0][t] + ranks[1][t]) == sorted(single[t])


RESUME_STEPS = 6  # 8 images, 2 ranks x batch 2: 2 steps per epoch; the split is mid-epoch 1


def _digest(model) -> str:
    """SHA-256 of the trainable parameters' bytes (the frozen encoder never changes; BatchNorm
    statistics are per process on CPUs, so buffers are left out)."""
    h = hashlib.sha256()
    for p in model.parameters():
        if p.requires_grad:
            h.update(p.detach().numpy().tobytes())
    return h.hexdigest()


def _train_runs(rank: int, ports: list[int], runs: list[dict], out: str) -> None:
    """Process `rank` of 2: `train(TrainConfig(**run))` for each run in turn, each with its own
    gloo group (`train` creates it from the torchrun variables set here and destroys it). The
    digest of this rank's weights after every step is written to `out` + rank (JSON, per run)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    digests, step = [], train_module.train_step

    def recorded_step(model, optimizer, *args):
        loss = step(model, optimizer, *args)
        digests[-1].append(_digest(model))
        return loss

    train_module.train_step = recorded_step
    for port, run in zip(ports, runs, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        digests.append([])
        train(TrainConfig(**run))
    Path(f"{out}{rank}").write_text(json.dumps(digests))


@pytest.mark.parametrize("balance_classes", [False, True])
def test_resumed_two_process_run_continues_exactly(tmp_path, balance_classes):
    data = make_tiny_dataset(tmp_path / "data", image_size=64, num_train=4)  # 2 classes
    base = {"data": str(data), "steps": RESUME_STEPS, "device": "cpu", "profile": "tiny",
            **TRAIN_FAST, "model_overrides": dict(TRAIN_SMALL), "balance_classes": balance_classes}
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    runs = [{**base, "out": straight}, {**base, "out": split, "stop_at": RESUME_STEPS // 2},
            {**base, "out": split, "resume": True}]
    out = str(tmp_path / "digests")
    mp.spawn(_train_runs, args=(_free_ports(3), runs, out), nprocs=2, join=True)
    ranks = [json.loads(Path(f"{out}{r}").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # the replicas stay identical, through the resume too
    whole, first, rest = ranks[0]
    assert len(whole) == RESUME_STEPS and len(set(whole)) == RESUME_STEPS  # every step trains
    assert first + rest == whole  # the resumed run's steps are the straight run's, bit for bit
    a = load_checkpoint(straight, with_optimizer=True)
    b = load_checkpoint(split, with_optimizer=True)
    assert a.step == b.step == RESUME_STEPS and a.meta["train"]["world_size"] == 2
    assert a.meta["train"]["balance_classes"] is balance_classes
    assert a.state.keys() == b.state.keys()
    for k in a.state:  # rank 0's saved state, BatchNorm statistics included
        assert torch.equal(a.state[k], b.state[k]), k
    for sa, sb in zip(a.optimizer_state["state"].values(), b.optimizer_state["state"].values(),
                      strict=True):
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    logged = [[(h["step"], h["loss"], h["lr"]) for h in m.meta["history"]] for m in (a, b)]
    assert logged[0] == logged[1] and [s for s, _, _ in logged[0]] == list(range(1, 7))
