"""The whole model computes the same function on its fast paths as on their slow twins (same
weights, float64): the O(L) matrix path against the materialised one, and the stacked
causal+anticausal scan calls against one call per scan; detector features, anomaly maps and
gradients."""

from __future__ import annotations

import pytest
import torch

from mambaadv2_ref.model.factory import build_model


def outputs_of_twins(fast: dict, slow: dict, **settings) -> list[list[torch.Tensor]]:
    """Decoder features, parameter gradients (training mode), anomaly maps and scores (eval) of
    two tiny models on the same weights and images, built with `fast` and `slow` settings."""
    torch.manual_seed(0)
    nets = [build_model("mambaadv2", profile="tiny", pretrained=False, drop_path=0.0,
                        **settings, **twin).double() for twin in (fast, slow)]
    nets[1].load_state_dict(nets[0].state_dict())
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outputs = []
    for net in nets:
        net.train()
        enc, dec = net(images)
        sum(d.square().mean() for d in dec).backward()
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        net.eval()
        maps, scores = net.anomaly_map(images)
        outputs.append([*dec, maps, scores, *grads])
    assert len(outputs[0]) == len(outputs[1])
    return outputs


@pytest.mark.parametrize("plan", ["decay_deep", "uniform"])
def test_scanned_matrix_path_gives_the_same_model(plan):
    fast, slow = outputs_of_twins(dict(matrix_impl="scan"), dict(matrix_impl="materialised"),
                                  scan_plan=plan, checkpoint_matrix=False)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("checkpoint_matrix", [False, True])
def test_stacked_scans_give_the_same_model(checkpoint_matrix):
    """stack_scans (TS.5) against one call per scan: at 64 px the tiny model's stages hold 4, 16
    and 64 tokens (one window of 64: one call for both paths) and 256 (four windows: the
    windowed pair in one call); with the matrix path recomputed in the backward pass or not."""
    fast, slow = outputs_of_twins(dict(stack_scans=True), dict(stack_scans=False),
                                  checkpoint_matrix=checkpoint_matrix)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_chunk_size_gives_the_same_model():
    """chunk_size (Q of the chunked scans) is a compute setting: chunks of 16 against 64 give
    the same features, maps, scores and gradients (float64, windows of 64 tokens: 4 chunks of
    16 or one of 64 in each)."""
    fast, slow = outputs_of_twins(dict(chunk_size=16), dict(chunk_size=64), backend="torch")
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("checkpoint_block", [False, True])
def test_compiled_mixers_give_the_same_model(checkpoint_block):
    """compile_mixer (torch.compile of every HSS mixer, `blocks.compiled`) against eager
    PyTorch: the same features, maps, scores and gradients (float64, 64 px: the four stages'
    grids of 4 to 256 tokens, windows and the recomputed matrix path included); also with every
    HSS block recomputed in the backward pass around the compiled mixer (checkpoint_block)."""
    fast, slow = outputs_of_twins(dict(compile_mixer="default", checkpoint_block=checkpoint_block),
                                  dict(compile_mixer="off"), backend="torch")
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_checkpointed_stages_give_the_same_model():
    """checkpoint_stages (the HSS blocks of some decoder stages recomputed in the backward
    pass) against no block recomputation: the same features, maps, scores and gradients."""
    fast, slow = outputs_of_twins(dict(checkpoint_stages=(1, 2)), dict(), backend="torch")
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_checkpointed_stages_resolve_per_stage():
    """Only the listed stages' blocks recompute; the others keep their activations."""
    net = build_model("mambaadv2", profile="tiny", pretrained=False, checkpoint_stages=(0, 2))
    flags = [{b.checkpointed for b in stage.modules() if hasattr(b, "checkpointed")}
             for stage in net.decoder.stages]
    assert flags == [{True}, {False}, {True}, {False}]
