"""The whole model computes the same function with the O(L) matrix path as with the materialised
one (same weights, float64): detector features, anomaly maps and gradients."""

from __future__ import annotations

import pytest
import torch

from mambaadv2_ref.model.factory import build_model


@pytest.mark.parametrize("plan", ["decay_deep", "uniform"])
def test_scanned_matrix_path_gives_the_same_model(plan):
    torch.manual_seed(0)
    nets = [build_model("mambaadv2", profile="tiny", pretrained=False, scan_plan=plan,
                        matrix_impl=impl, checkpoint_matrix=False, drop_path=0.0).double()
            for impl in ("scan", "materialised")]
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
    for a, b in zip(*outputs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
