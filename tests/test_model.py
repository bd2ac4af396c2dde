"""Tests of mambaadv2_ref.model: config, fusion, decoder, anomaly map, loss, factory, summary.

Random encoder weights (pretrained=False) everywhere: the pretrained weights are tested in
test_model_encoder.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from conftest import skip_unless_kernel

from mambaadv2_ref.config import modules_per_stage
from mambaadv2_ref.model import (
    ModelConfig,
    anomaly_maps,
    build_model,
    gaussian_blur,
    model_summary,
    preset,
    reconstruction_loss,
)
from mambaadv2_ref.model.anomaly_map import cosine_distance_maps
from mambaadv2_ref.model.fusion import HalfFPNBottleneck

# smaller than tiny so that the 256 px and 224 x 320 shape tests stay fast
MINI = dict(dims=(32, 16, 16, 8), headdim=8, d_state=8, chunk_size=32)


@pytest.fixture(scope="module")
def tiny_v2():
    torch.manual_seed(0)
    return build_model("mambaadv2", "tiny", pretrained=False)



# ---- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    (dict(curve="spiral"), "curve"),
    (dict(num_directions=3), "num_directions"),
    (dict(headdim=24), "headdim"),
    (dict(path_mode="both"), "path_mode"),
    (dict(model="mambaadv3"), "model"),
    (dict(scan_plan="random"), "plan"),
    (dict(image_size=100), "image_size"),
    (dict(dims=(64, 32, 16)), "dims"),
    (dict(colour="red"), "colour"),
    (dict(checkpoint_stages=(4,)), "checkpoint_stages"),
    (dict(checkpoint_stages=(2, 1)), "checkpoint_stages"),
    (dict(checkpoint_stages=(True,)), "checkpoint_stages"),
    (dict(checkpoint_stages=(1,), checkpoint_block=True), "checkpoint_stages"),
    (dict(model="mambaad", checkpoint_block=True), "checkpoint_block"),
    (dict(compile_mixer="reduce-overhead", checkpoint_block=True), "reduce-overhead"),
    (dict(compile_mixer="reduce-overhead", checkpoint_stages=(1, 2)), "reduce-overhead"),
    (dict(compile_memory_budget=0.5), "compile_memory_budget=0.5 with compile_mixer='off'"),
    (dict(compile_mixer="default", compile_memory_budget=2.0), "compile_memory_budget must"),
    (dict(compile_mixer="default", compile_memory_budget=False), "compile_memory_budget must"),
    (dict(model="mambaad", compile_memory_budget=0.5), "compile_memory_budget=0.5 sets"),
])
def test_bad_config_raises_naming_the_setting(bad, match):
    with pytest.raises(ValueError, match=match):
        preset("tiny", **bad)


def test_rebuilt_detector_runs_eagerly_without_a_memory_budget():
    """A run trained with compiled mixers under a memory budget rebuilds eagerly: compile_mixer
    "off" and compile_memory_budget None (compute settings: the stored config still matches)."""
    from mambaadv2_ref.model.detectors import rebuild_detector

    trained = preset("tiny", pretrained=False, compile_mixer="reduce-overhead",
                     compile_memory_budget=0.5)
    model = rebuild_detector({"model": "mambaadv2", "model_config": trained.to_dict()},
                             pretrained=False, source="run")
    assert model.config.compile_mixer == "off" and model.config.compile_memory_budget is None


def test_config_round_trip_and_presets():
    for profile in ("tiny", "small", "paper"):
        for model in ("mambaadv2", "mambaad"):
            cfg = preset(profile, model)
            assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    paper = preset("paper")
    assert paper.dims == (512, 256, 128, 64) and paper.depths == (3, 4, 6, 3)
    assert [modules_per_stage(d) for d in paper.depths] == [[3], [2, 2], [3, 3], [3]]
    assert preset("tiny", curve="snake").plan().stages[0].curve == "snake"
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"nope": 1})



def test_drop_path_schedule_follows_mambaad():
    """linspace(0, 0.2, 16) reversed; module i of a stage takes rate i of its stage's slice."""
    from mambaadv2_ref.model.decoder import Decoder
    cfg = preset("tiny", "mambaad", depths=(3, 4, 6, 3), dims=MINI["dims"])
    decoder = Decoder(cfg, [8, 16, 16])
    rates = [[m.blocks[0].drop_path.drop_prob for m in stage] for stage in decoder.stages]
    dpr = torch.linspace(0, 0.2, 16).flip(0).tolist()
    assert rates == [[dpr[0]], [dpr[3], dpr[4]], [dpr[7], dpr[8]], [dpr[13]]]

# ---- fusion, anomaly map, loss -----------------------------------------------------------------

def test_fusion_gives_bottleneck_at_stride_32():
    torch.manual_seed(0)
    fusion = HalfFPNBottleneck([64, 128, 256], 512)
    feats = [torch.randn(1, c, 64 // 2 ** k, 80 // 2 ** k) for k, c in enumerate([64, 128, 256])]
    assert fusion(feats).shape == (1, 512, 8, 10)


def test_gaussian_blur_matches_scipy():
    maps = torch.rand(2, 40, 57, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = np.stack([scipy.ndimage.gaussian_filter(m, sigma=4) for m in maps.numpy()])
    np.testing.assert_allclose(gaussian_blur(maps, 4.0).numpy(), expected, atol=1e-12)
    small = maps[:, :9, :7]  # smaller than the radius: reflections repeat
    expected = np.stack([scipy.ndimage.gaussian_filter(m, sigma=4) for m in small.numpy()])
    np.testing.assert_allclose(gaussian_blur(small, 4.0).numpy(), expected, atol=1e-12)


def test_anomaly_maps_are_summed_cosine_distances():
    g = torch.Generator().manual_seed(0)
    enc = [torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 6, 4, 4, generator=g)]
    dec = [e + 0.3 * torch.randn(e.shape, generator=g) for e in enc]
    raw = cosine_distance_maps(enc, dec, (16, 16))
    a0 = 1 - F.cosine_similarity(enc[0], dec[0], dim=1)
    # align_corners=True keeps the corner values: the corner is the sum of the scales' corners
    corner = a0[:, 0, 0] + (1 - F.cosine_similarity(enc[1], dec[1], dim=1))[:, 0, 0]
    torch.testing.assert_close(raw[:, 0, 0], corner)
    maps, scores = anomaly_maps(enc, dec, (16, 16))
    assert maps.shape == (2, 16, 16)
    torch.testing.assert_close(scores, maps.flatten(1).max(1).values)
    same, _ = anomaly_maps(enc, enc, (16, 16), sigma=0)
    assert same.abs().max() < 1e-5
    weighted = cosine_distance_maps(enc, dec, (16, 16), weights=(0.5, 3.0))
    torch.testing.assert_close(weighted[:, 0, 0], 0.5 * a0[:, 0, 0] + 3.0 * (corner - a0[:, 0, 0]))
    with pytest.raises(ValueError, match="one value per scale"):
        cosine_distance_maps(enc, dec, (16, 16), weights=(1.0,))


def test_reconstruction_loss_is_five_times_mse_summed():
    g = torch.Generator().manual_seed(0)
    enc = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 2, 2, generator=g)]
    dec = [torch.randn(e.shape, generator=g) for e in enc]
    expected = sum(5 * ((e - d) ** 2).mean() for e, d in zip(enc, dec, strict=True))
    torch.testing.assert_close(reconstruction_loss(enc, dec), expected)
    with pytest.raises(ValueError, match="shapes differ"):
        reconstruction_loss(enc, dec[::-1])


# ---- the whole model ---------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["mambaadv2", "mambaad"])
@pytest.mark.parametrize("size", [(256, 256), (224, 320)])
def test_shapes_square_and_non_square(model, size):
    torch.manual_seed(0)
    net = build_model(model, "tiny", pretrained=False, **MINI).eval()
    images = torch.randn(1, 3, *size)
    with torch.no_grad():
        enc, dec = net(images)
    assert [tuple(e.shape) for e in enc] == [tuple(d.shape) for d in dec]
    assert [e.shape[-2:] for e in enc] == [(size[0] // r, size[1] // r) for r in (4, 8, 16)]
    maps, scores = net.anomaly_map(images)
    assert maps.shape == (1, *size) and scores.shape == (1,)


def test_backward_reaches_every_trainable_parameter_and_no_encoder_one(tiny_v2):
    net = tiny_v2.train()
    assert not net.encoder.training and not net.encoder.backbone.training  # frozen BN
    enc, dec = net(torch.randn(2, 3, 128, 128))
    net.zero_grad()
    reconstruction_loss(enc, dec).backward()
    assert all(p.grad is None and not p.requires_grad for p in net.encoder.parameters())
    names = {id(p): n for n, p in net.named_parameters()}
    missing = [names[id(p)] for p in net.trainable_parameters()
               if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient reaches {missing}"
    assert len(net.trainable_parameters()) == sum(
        1 for n, _ in net.named_parameters() if not n.startswith("encoder."))


def test_encoder_stats_stay_frozen_in_training(tiny_v2):
    before = {k: v.clone() for k, v in tiny_v2.encoder.state_dict().items()}
    tiny_v2.train()
    tiny_v2(torch.randn(2, 3, 128, 128))
    for k, v in tiny_v2.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_determinism_under_a_seed():
    images = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = build_model("mambaadv2", "tiny", pretrained=False, **MINI)
        outs.append(net.anomaly_map(images))
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


def test_anomaly_map_restores_training_mode_and_checks_input(tiny_v2):
    tiny_v2.train()
    tiny_v2.anomaly_map(torch.randn(1, 3, 128, 128))
    assert tiny_v2.training and not tiny_v2.encoder.training
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_v2(torch.randn(1, 3, 100, 128))


@pytest.mark.parametrize("flags", [dict(path_mode="recurrence"), dict(path_mode="matrix"),
                                   dict(position_aware=False, path_mode="gate"),
                                   dict(use_fft=False, dwconv=False, bc_norm=False),
                                   dict(scan_plan="curve_decay"), dict(scan_plan="decay_shallow")],
                         ids=str)
def test_model_ablations_run(flags):
    torch.manual_seed(0)
    net = build_model("mambaadv2", "tiny", pretrained=False, **MINI, **flags)
    enc, dec = net(torch.randn(1, 3, 64, 64))
    loss = reconstruction_loss(enc, dec)
    loss.backward()
    assert torch.isfinite(loss)


def test_model_summary_reports_params_flops_and_scan_cost(tiny_v2):
    s = model_summary(tiny_v2)
    n = sum(p.numel() for p in tiny_v2.parameters())
    assert s["params_M"] == pytest.approx(n / 1e6)
    assert s["trainable_params_M"] + s["encoder_params_M"] == pytest.approx(s["params_M"])
    assert s["GFLOPs"] > 0 and s["GMACs"] == pytest.approx(s["GFLOPs"] / 2)
    stages = s["stages"]
    assert [r["size"] for r in stages[:4]] == ["4x4", "8x8", "16x16", "32x32"]
    assert [r["directions"] for r in stages[:4]] == [8, 8, 4, 2]  # tiny: decay_deep
    assert stages[3]["matrix_entries"] == 2 * 1024 * 64  # K * L * window (64)
    assert s["mambaad_paper"] == {"params_M": 25.7, "GFLOPs": 8.3}


# ---- GPU: torch vs mamba-ssm -------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("model", ["mambaadv2", "mambaad"])
def test_model_torch_matches_mamba_ssm(model):
    skip_unless_kernel("mamba_ssm_mamba3" if model == "mambaadv2" else "mamba_ssm_s6")
    images = torch.randn(2, 3, 256, 256, device="cuda")
    outs = {}
    for backend in ("torch", "mamba_ssm"):
        torch.manual_seed(0)
        net = build_model(model, "paper", pretrained=False, backend=backend).cuda()
        outs[backend] = net.anomaly_map(images)[0]
    err = (outs["mamba_ssm"] - outs["torch"]).abs().max() / outs["torch"].abs().max()
    assert err < 5e-2, f"max relative anomaly-map error {err:.3g}"
