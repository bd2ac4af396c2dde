"""The whole anomaly detection model and the public factory shared by the book and the CLI.

    enc = Encoder(images)                 frozen, 3 scales (strides 4, 8, 16)
    dec = Decoder(Fusion(enc))            4 stages, outputs aligned with enc
    loss = reconstruction_loss(enc, dec);  maps, scores = anomaly_maps(enc, dec)

`build_model(model="mambaadv2" | "mambaad", profile="tiny", encoder=None, pretrained=True,
**overrides)` returns an `ADModel`; `model_summary` reports parameters, FLOPs and scan costs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mambaadv2_ref.blocks.hss import HSS
from mambaadv2_ref.blocks.ss2d import SS2D
from mambaadv2_ref.config import ModelConfig, preset, stage_sizes
from mambaadv2_ref.model.anomaly_map import anomaly_maps
from mambaadv2_ref.model.decoder import Decoder
from mambaadv2_ref.model.encoder import FrozenEncoder
from mambaadv2_ref.model.fusion import HalfFPNBottleneck
from mambaadv2_ref.scanning import plan_cost

# MambaAD (NeurIPS'24) Tab. 3/6, whole model at 256 px
MAMBAAD_PAPER = {"params_M": 25.7, "GFLOPs": 8.3}


class ADModel(nn.Module):
    """Frozen encoder -> half-FPN fusion -> state space decoder (MambaADv2 or MambaAD).

    Args:
        config: ModelConfig.

    Attributes:
        config, encoder (FrozenEncoder), fusion (HalfFPNBottleneck), decoder (Decoder).

    Implements: the whole model of chapter 10 (book appendix A.1.1, with v2's DSS decoder).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = FrozenEncoder(config.encoder, config.pretrained)
        self.fusion = HalfFPNBottleneck(self.encoder.channels, config.dims[0])
        self.decoder = Decoder(config, self.encoder.channels)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Args: images (B, 3, H, W) ImageNet-normalised, H and W multiples of 32.
        Returns (enc, dec): two lists of (B, C_k, H / r_k, W / r_k), r_k = 4, 8, 16."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % 32 or images.shape[3] % 32:
            raise ValueError(f"images must be (B, 3, H, W) with H, W multiples of 32, got "
                             f"{tuple(images.shape)}")
        enc = self.encoder(images)
        return enc, self.decoder(self.fusion(enc))

    @torch.no_grad()
    def anomaly_map(self, images: torch.Tensor, sigma: float = 4.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps and image scores, in eval mode and without gradients.

        Args:
            images: (B, 3, H, W) normalised.  sigma: Gaussian smoothing (MambaAD: 4).
        Returns:
            (maps (B, H, W), scores (B,)).
        """
        was_training = self.training
        self.eval()
        try:
            enc, dec = self(images)
            return anomaly_maps(enc, dec, tuple(images.shape[-2:]), sigma)
        finally:
            self.train(was_training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with requires_grad (fusion and decoder; never the encoder)."""
        return [p for p in self.parameters() if p.requires_grad]


def build_model(model: str = "mambaadv2", profile: str = "tiny", encoder: str | None = None,
                pretrained: bool = True, **overrides) -> ADModel:
    """Build MambaADv2 or MambaAD at a profile's sizes.

    Args:
        model: "mambaadv2" | "mambaad".
        profile: "tiny" | "small" | "paper" (config.PROFILES).
        encoder: timm backbone name (None: the profile's; see model.encoder.ENCODERS).
        pretrained: ImageNet encoder weights (a clear error if unavailable; False knowingly).
        **overrides: any ModelConfig field (e.g. path_mode="matrix", scan_plan="decay_deep").

    Returns:
        ADModel.

    Raises:
        ValueError naming a bad setting; encoder.PretrainedWeightsUnavailable.
    """
    if encoder is not None:
        overrides["encoder"] = encoder
    return ADModel(preset(profile, model, pretrained=pretrained, **overrides))


def count_flops(model: nn.Module, images: torch.Tensor) -> int:
    """FLOPs of one forward (torch.utils.flop_counter: 2 per multiply-add of matmuls and convs;
    element-wise ops and FFTs are not counted)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(images)
    return counter.get_total_flops()


def model_summary(model: ADModel, image_size: int | tuple[int, int] | None = None) -> dict:
    """Parameters, FLOPs and scanning cost of a model at one image size.

    Args:
        model: ADModel.
        image_size: side (or (H, W)); None: the config's image_size.

    Returns:
        dict with params (total, trainable, encoder, in millions), GFLOPs per image (whole model,
        2 FLOPs per multiply-add; GMACs = half), the per-stage scan/matrix cost rows, the config,
        and MambaAD's published numbers for comparison (its GFLOPs are likely multiply-adds as
        counted by fvcore: compare with GMACs).
    """
    H, W = ((image_size, image_size) if isinstance(image_size, int) else
            image_size or (model.config.image_size, model.config.image_size))
    device = next(model.parameters()).device
    n_total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.trainable_parameters())
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    was_training = model.training
    model.eval()
    flops = count_flops(model, torch.zeros(1, 3, H, W, device=device))
    model.train(was_training)
    sizes = stage_sizes((H, W), len(model.config.dims))
    stages = plan_cost(model.config.plan(), sizes)
    for row, stage, size in zip(stages, model.decoder.stages, sizes, strict=False):
        hss = [m for m in stage.modules() if isinstance(m, HSS)]
        row["blocks"] = len(hss) or sum(isinstance(m, SS2D) for m in stage.modules())
        row["matrix_entries"] = sum(m.cost(*size)["matrix_entries"] for m in hss)
    return {"model": model.config.model, "profile": model.config.profile,
            "image_size": [H, W], "params_M": n_total / 1e6, "trainable_params_M": n_train / 1e6,
            "encoder_params_M": n_enc / 1e6, "GFLOPs": flops / 1e9, "GMACs": flops / 2e9,
            "stages": stages, "config": model.config.to_dict(), "mambaad_paper": MAMBAAD_PAPER}
