"""PatchCore baseline: coreset and nearest-neighbour fast paths vs brute-force twins, planted
outliers get the highest scores, memory bank round trip through a state dict."""

import pytest
import torch

from mambaadv2_ref.model.patchcore import (
    PatchCore,
    PatchCoreConfig,
    coreset_indices,
    kcenter_greedy,
    kcenter_greedy_brute,
    local_patch_features,
    nearest_distance,
    nearest_distance_brute,
)


def test_kcenter_greedy_matches_brute_force():
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fast = kcenter_greedy(x, 25, start=7)
    slow = kcenter_greedy_brute(x, 25, start=7)
    assert torch.equal(fast, slow)
    assert len(set(fast.tolist())) == 25


def test_kcenter_greedy_covers_clusters():
    # three tight, far apart clusters: 3 centres must hit one point of each
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    x = torch.cat([c + 0.1 * torch.randn(30, 2, generator=g) for c in centres])
    chosen = kcenter_greedy(x, 3, start=0) // 30
    assert sorted(chosen.tolist()) == [0, 1, 2]


def test_coreset_ratio_size_and_projection():
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(2))
    idx = coreset_indices(x, 0.1, num_projections=16, seed=3)
    assert idx.shape == (30,) and len(set(idx.tolist())) == 30
    assert torch.equal(idx, coreset_indices(x, 0.1, num_projections=16, seed=3))
    assert torch.equal(coreset_indices(x, 1.0), torch.arange(300))
    with pytest.raises(ValueError, match="ratio"):
        coreset_indices(x, 0.0)


def test_nearest_distance_chunked_matches_brute_force():
    g = torch.Generator().manual_seed(4)
    q, bank = torch.randn(103, 9, generator=g), torch.randn(41, 9, generator=g)
    torch.testing.assert_close(nearest_distance(q, bank, chunk_size=10),
                               nearest_distance_brute(q, bank))
    with pytest.raises(ValueError, match="share C"):
        nearest_distance(q, bank[:, :5])


def test_planted_outlier_patch_has_highest_distance():
    g = torch.Generator().manual_seed(5)
    bank = torch.randn(500, 16, generator=g)
    queries = torch.randn(64, 16, generator=g)
    queries[37] += 12.0
    assert int(torch.argmax(nearest_distance(queries, bank))) == 37


def test_local_patch_features_shape():
    f1, f2 = torch.randn(2, 5, 8, 8), torch.randn(2, 7, 4, 4)
    assert local_patch_features([f1, f2]).shape == (2, 12, 8, 8)


def test_patchcore_end_to_end_finds_planted_square():
    torch.manual_seed(0)
    cfg = PatchCoreConfig(encoder="resnet34", image_size=64, coreset_ratio=0.5)
    model = PatchCore(cfg, pretrained=False)
    g = torch.Generator().manual_seed(6)
    normal = 0.1 * torch.randn(8, 3, 64, 64, generator=g)
    model.fit([normal[:4], normal[4:]])
    assert model.memory_bank.shape[0] == round(0.5 * 8 * 8 * 8)
    test = 0.1 * torch.randn(2, 3, 64, 64, generator=g)
    test[1, :, 16:32, 40:56] = 3.0
    maps, scores = model.anomaly_map(test)
    assert maps.shape == (2, 64, 64) and scores.shape == (2,)
    assert scores[1] > scores[0]
    y, x = divmod(int(torch.argmax(maps[1])), 64)
    assert 8 <= y < 40 and 32 <= x < 64
    # the memory bank (whose size only the checkpoint knows) survives a state-dict round trip
    clone = PatchCore(cfg, pretrained=False)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.anomaly_map(test)[0], maps)
