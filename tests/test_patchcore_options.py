"""PatchCore options that follow the paper / anomalib: each does what its docstring says, the
defaults are today's behaviour, and the options survive (or are absent from) a checkpoint."""

import math

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from sklearn.random_projection import johnson_lindenstrauss_min_dim

from mambaadv2_ref.checkpoint import save_checkpoint
from mambaadv2_ref.model.anomaly_map import gaussian_blur
from mambaadv2_ref.model.detectors import load_detector
from mambaadv2_ref.model.patchcore import (
    ADDED_FIELDS,
    PatchCore,
    PatchCoreConfig,
    coreset_indices,
    jl_dimension,
    kcenter_greedy,
    local_patch_features,
    nearest_distance,
    reweighted_score,
    sparse_projection,
)


def test_reweighted_score_equals_hand_computation():
    # 1-D bank: the query 4.2 is nearest to m* = 3.0 (1.2; 5.5 is at 1.3), and the b = 2
    # neighbours of m* are {3.0, 2.9}, not the query's own two nearest {3.0, 5.5}
    bank = torch.tensor([[0.0], [2.9], [3.0], [5.5]], dtype=torch.float64)
    query = torch.tensor([4.2], dtype=torch.float64)
    s_star, d_other = 1.2, 4.2 - 2.9
    weight = 1 - math.exp(s_star) / (math.exp(s_star) + math.exp(d_other))
    assert float(reweighted_score(query, bank, 2)) == pytest.approx(weight * s_star, rel=1e-12)
    # b = 3 adds m = 5.5 (at 2.5 from m*; 0.0 is at 3.0) to N_b(m*)
    weight3 = 1 - math.exp(s_star) / sum(math.exp(d) for d in (s_star, d_other, 1.3))
    assert float(reweighted_score(query, bank, 3)) == pytest.approx(weight3 * s_star, rel=1e-12)
    # b larger than the bank: the whole bank
    weight_all = 1 - math.exp(s_star) / sum(math.exp(abs(4.2 - m)) for m in (0, 2.9, 3, 5.5))
    assert float(reweighted_score(query, bank, 9)) == pytest.approx(weight_all * s_star,
                                                                   rel=1e-12)
    with pytest.raises(ValueError, match="M >= 2"):
        reweighted_score(query, bank[:1], 2)


def _fitted(**options) -> tuple[PatchCore, torch.Tensor]:
    torch.manual_seed(0)
    cfg = PatchCoreConfig(encoder="resnet34", image_size=64, coreset_ratio=0.25, **options)
    model = PatchCore(cfg, pretrained=False)
    g = torch.Generator().manual_seed(6)
    model.fit([0.1 * torch.randn(4, 3, 64, 64, generator=g)])
    test = 0.1 * torch.randn(3, 3, 64, 64, generator=g)
    test[1, :, 16:32, 40:56] = 3.0
    return model, test


def _with(model: PatchCore, **options) -> PatchCore:
    """A copy of `model` (same encoder weights and memory bank) with other scoring options."""
    other = PatchCore(PatchCoreConfig(**{**model.config.to_dict(), **options}), pretrained=False)
    other.load_state_dict(model.state_dict())
    return other


def test_image_score_options_on_a_fitted_model():
    model, test = _fitted()
    f = model.patch_features(test)
    b, c, h, w = f.shape
    patches = f.permute(0, 2, 3, 1).reshape(b, h * w, c)
    bank = model.memory_bank.double()
    dist = torch.cdist(patches.double(), bank[None].expand(b, -1, -1))      # (B, hw, M)
    s = dist.amin(dim=2)                                                    # patch scores
    maps, default = model.anomaly_map(test)
    torch.testing.assert_close(default, maps.flatten(1).amax(1))           # map_max
    maps_pm, patch_max = _with(model, image_score="patch_max").anomaly_map(test)
    torch.testing.assert_close(maps_pm, maps)                              # maps untouched
    torch.testing.assert_close(patch_max.double(), s.amax(1), rtol=1e-5, atol=1e-5)
    _, rew = _with(model, image_score="reweighted", num_neighbors=3).anomaly_map(test)
    for i in range(b):  # eq. (PC-5) by hand, in float64, from the full distance matrix
        p = int(s[i].argmax())
        nearest = int(dist[i, p].argmin())
        support = (bank - bank[nearest]).norm(dim=1).argsort()[:3]
        weight = 1 - torch.exp(dist[i, p, nearest]) / torch.exp(dist[i, p, support]).sum()
        assert float(rew[i]) == pytest.approx(float(weight * s[i, p]), rel=1e-4)
    assert rew[1] > rew[0] and rew[1] > rew[2]                             # planted square
    assert torch.all(rew < patch_max)                                      # weights < 1


def test_map_upsample_nearest_fills_each_cell():
    model, test = _fitted(sigma=0.0)
    f = model.patch_features(test)
    b, c, h, w = f.shape
    d = nearest_distance(f.permute(0, 2, 3, 1).reshape(-1, c), model.memory_bank).view(b, h, w)
    maps, _ = _with(model, map_upsample="nearest").anomaly_map(test)
    stride = 64 // h
    cells = d.repeat_interleave(stride, dim=1).repeat_interleave(stride, dim=2)
    torch.testing.assert_close(maps, cells)
    bilinear, _ = model.anomaly_map(test)  # the default: corners pinned to the corner patches
    torch.testing.assert_close(bilinear[:, 0, 0], d[:, 0, 0])
    torch.testing.assert_close(bilinear[:, -1, -1], d[:, -1, -1])
    assert not torch.allclose(bilinear, cells)


@pytest.mark.parametrize("mode", ["reflect", "mirror"])
def test_blur_modes_match_scipy(mode):
    maps = torch.rand(2, 23, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = gaussian_blur(maps, sigma=4.0, mode=mode).numpy()
    ref = np.stack([scipy.ndimage.gaussian_filter(m, 4.0, mode=mode, truncate=4.0)
                    for m in maps.numpy()])
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="mode"):
        gaussian_blur(maps, mode="wrap")


def test_pool_include_pad_counts_the_zero_padding():
    ones = torch.ones(1, 2, 5, 5)
    torch.testing.assert_close(local_patch_features([ones]), ones)          # default
    padded = local_patch_features([ones], include_pad=True)[0, 0]
    assert float(padded[0, 0]) == pytest.approx(4 / 9)
    assert float(padded[0, 2]) == pytest.approx(6 / 9)
    assert float(padded[2, 2]) == pytest.approx(1.0)
    model, test = _fitted()
    pooled = _with(model, pool_include_pad=True).patch_features(test)
    plain = model.patch_features(test)
    fine = slice(0, 128)  # resnet34's stride-8 channels: pooled on this grid, not upsampled
    torch.testing.assert_close(pooled[:, fine, 1:-1, 1:-1], plain[:, fine, 1:-1, 1:-1])
    assert not torch.allclose(pooled[:, fine, 0], plain[:, fine, 0])             # border row


def test_jl_dimension_and_sparse_projection():
    for n, eps in ((124928, 0.9), (1000, 0.5), (10, 0.1)):
        assert jl_dimension(n, eps) == int(johnson_lindenstrauss_min_dim(n, eps=eps))
    assert jl_dimension(122 * 32 * 32, 0.9) == 289
    g = torch.Generator().manual_seed(0)
    c, d = 152, 289
    p = sparse_projection(c, d, g)
    scale = math.sqrt(math.sqrt(c)) / math.sqrt(d)
    nonzero = p[p != 0]
    torch.testing.assert_close(nonzero.abs(), torch.full_like(nonzero, scale))
    assert 0.4 < float((nonzero > 0).float().mean()) < 0.6                  # signs balanced
    assert abs(float((p != 0).float().mean()) - 1 / math.sqrt(c)) < 0.01
    x = torch.randn(2000, c, generator=g)  # norms kept on average: E ||x P||^2 = ||x||^2
    ratio = (x @ p).pow(2).sum(1) / x.pow(2).sum(1)
    assert abs(float(ratio.mean()) - 1.0) < 0.05


def test_coreset_sparse_jl_runs_k_center_on_the_sparse_projection():
    x = torch.randn(400, 24, generator=torch.Generator().manual_seed(2))
    idx = coreset_indices(x, 0.05, seed=3, projection="sparse_jl", jl_eps=0.9)
    g = torch.Generator().manual_seed(3)  # the same draws in the same order
    y = x @ sparse_projection(24, jl_dimension(400, 0.9), g)
    start = int(torch.randint(400, (1,), generator=g))
    assert torch.equal(idx, kcenter_greedy(y, 20, start))
    assert not torch.equal(idx, coreset_indices(x, 0.05, num_projections=16, seed=3))
    with pytest.raises(ValueError, match="projection"):
        coreset_indices(x, 0.05, projection="dense")


def test_config_validates_options():
    for bad in ({"image_score": "mean"}, {"map_upsample": "bicubic"}, {"blur_mode": "wrap"},
                {"projection": "pca"}, {"num_neighbors": 1}, {"jl_eps": 1.0}):
        with pytest.raises(ValueError):
            PatchCoreConfig(**bad)


OPTIONS = {"image_score": "reweighted", "num_neighbors": 5, "map_upsample": "nearest",
           "blur_mode": "mirror", "pool_include_pad": True, "projection": "sparse_jl",
           "jl_eps": 0.8}


def _save(model: PatchCore, run_dir, config: dict) -> None:
    save_checkpoint(run_dir, model, None, step=0,
                    meta={"model": "patchcore", "model_config": config, "train": {}})


def test_options_round_trip_through_a_checkpoint(tmp_path):
    assert set(OPTIONS) == set(ADDED_FIELDS)
    model, test = _fitted(**OPTIONS)
    assert PatchCoreConfig.from_dict(model.config.to_dict()) == model.config
    _save(model, tmp_path, model.config.to_dict())
    loaded, meta = load_detector(tmp_path)
    assert loaded.config == model.config
    for a, b in zip(loaded.anomaly_map(test), model.anomaly_map(test), strict=True):
        torch.testing.assert_close(a, b)


def test_checkpoint_without_the_new_keys_loads_with_the_defaults(tmp_path):
    model, test = _fitted()
    old = {k: v for k, v in model.config.to_dict().items() if k not in ADDED_FIELDS}
    _save(model, tmp_path, old)
    loaded, _ = load_detector(tmp_path)
    assert loaded.config == model.config
    for name in ADDED_FIELDS:
        assert getattr(loaded.config, name) == PatchCoreConfig.__dataclass_fields__[name].default
    torch.testing.assert_close(loaded.anomaly_map(test)[1], model.anomaly_map(test)[1])
    # a key this code does not know is still refused
    _save(model, tmp_path / "other", {**old, "image_scoring": "reweighted"})
    with pytest.raises(ValueError, match="unknown PatchCoreConfig keys"):
        load_detector(tmp_path / "other")


def test_default_scores_unchanged_by_the_options_code():
    # today's behaviour, written out: bilinear (align_corners) upsampling, scipy-reflect blur,
    # image score = map max, pooling without the padding
    model, test = _fitted()
    f = model.patch_features(test)
    b, c, h, w = f.shape
    d = nearest_distance(f.permute(0, 2, 3, 1).reshape(-1, c), model.memory_bank).view(b, 1, h, w)
    up = F.interpolate(d, size=(64, 64), mode="bilinear", align_corners=True)[:, 0]
    ref = torch.from_numpy(np.stack([scipy.ndimage.gaussian_filter(m, 4.0, mode="reflect")
                                     for m in up.double().numpy()])).float()
    maps, scores = model.anomaly_map(test)
    torch.testing.assert_close(maps, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores, ref.flatten(1).amax(1), rtol=1e-4, atol=1e-5)
