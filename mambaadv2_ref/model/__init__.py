"""The anomaly detection models: frozen encoder -> fusion bottleneck -> state space decoder.

    encoder      frozen timm backbone (resnet34, wide_resnet50_2, efficientnet_lite0)
    fusion       MambaAD's half-FPN bottleneck
    decoder      4 stages of DSS (v2) or LSS (v1) modules with patch expansion
    anomaly_map  1 - cosine per scale, upsample, sum, Gaussian sigma 4, max score
    loss         5 x MSE summed over scales
    factory      ADModel, build_model, model_summary
    detectors    build_detector / load_detector by name (mambaadv2, mambaad, patchcore)
    export       compact trained-detector files (no frozen encoder, no optimizer) to ship
    patchcore    the PatchCore-style baseline

The model config and the profile table live in `mambaadv2_ref.config`.
"""

from mambaadv2_ref.config import ModelConfig, preset
from mambaadv2_ref.model.anomaly_map import anomaly_maps, gaussian_blur
from mambaadv2_ref.model.factory import ADModel, build_model, model_summary
from mambaadv2_ref.model.loss import reconstruction_loss

__all__ = ["ADModel", "ModelConfig", "anomaly_maps", "build_model", "gaussian_blur",
           "model_summary", "preset", "reconstruction_loss"]
