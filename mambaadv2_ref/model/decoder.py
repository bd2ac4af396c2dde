"""The decoder: 4 stages of DSS modules (MambaADv2) or LSS modules (MambaAD), deepest first.

    stage 0: modules at S/32 on the fused bottleneck (dims[0] channels)
    stage s > 0: PatchExpand(dims[s-1] -> dims[s]), x2 resolution, then its modules
    outputs: stages 3, 2, 1 at S/4, S/8, S/16, projected (1x1) to the encoder's widths when they
    differ, aligned with the encoder's 3 scales; stage 0 is not supervised.

Implements book appendix A.1.1 item 3 (MambaUPNet), with v2's DSS modules and a
per-stage scanning plan. Init as MambaAD: trunc_normal(0.02) on Linear weights, zero biases,
LayerNorm (1, 0).
"""

from __future__ import annotations

import torch
from torch import nn

from mambaadv2_ref.blocks.common import PatchExpand, drop_path_rates
from mambaadv2_ref.blocks.dss import DSSModule
from mambaadv2_ref.blocks.lss import LSSModule
from mambaadv2_ref.config import ModelConfig, modules_per_stage


def _build_module(cfg: ModelConfig, dim: int, num_blocks: int, plan, drop_path: float):
    module = LSSModule if cfg.model == "mambaad" else DSSModule
    return module(dim, num_blocks, plan, cfg, drop_path)


class Decoder(nn.Module):
    """Four decoder stages with patch expansion; returns features at the encoder's 3 scales.

    Args:
        cfg: ModelConfig (dims, depths, scan plan, block settings).
        out_channels: encoder widths [C_1, C_2, C_3] at strides 4, 8, 16.
    """

    def __init__(self, cfg: ModelConfig, out_channels: list[int]):
        super().__init__()
        plan = cfg.plan()
        splits = [modules_per_stage(d) for d in cfg.depths]
        # MambaAD: one rate per block, linspace(0, max, sum(depths)) reversed; module i of a
        # stage takes the i-th rate of its stage's slice
        rates = drop_path_rates(cfg.drop_path, sum(cfg.depths))
        starts = [sum(cfg.depths[:s]) for s in range(len(cfg.depths))]
        self.expands = nn.ModuleList([nn.Identity()] + [
            PatchExpand(cfg.dims[s - 1], cfg.dims[s]) for s in range(1, len(cfg.dims))])
        self.stages = nn.ModuleList([
            nn.Sequential(*[_build_module(cfg.stage_config(s), dim, m, plan.stages[s],
                                          rates[starts[s] + i])
                            for i, m in enumerate(split)])
            for s, (dim, split) in enumerate(zip(cfg.dims, splits, strict=True))])
        # outputs of stages 3, 2, 1 go to encoder scales 1, 2, 3
        self.projections = nn.ModuleList([
            nn.Identity() if cfg.dims[-1 - k] == c else nn.Linear(cfg.dims[-1 - k], c)
            for k, c in enumerate(out_channels)])
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x (B, dims[0], H/32, W/32) channels-first bottleneck.
        Returns [(B, C_k, H_k, W_k)] for the encoder scales k = 1, 2, 3 (strides 4, 8, 16)."""
        x = x.permute(0, 2, 3, 1)  # channels-last (B, H, W, C)
        outs = []
        for expand, stage in zip(self.expands, self.stages, strict=True):
            x = stage(expand(x))
            outs.append(x)
        feats = [proj(o) for proj, o in zip(self.projections, outs[::-1], strict=False)]
        return [f.permute(0, 3, 1, 2).contiguous() for f in feats]


def _init_weights(m: nn.Module) -> None:
    """MambaAD's init: trunc_normal(std 0.02) Linear weights, zero biases; LayerNorm (1, 0)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
