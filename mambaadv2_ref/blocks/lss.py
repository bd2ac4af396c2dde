"""MambaAD v1's LSS module (Locality-enhanced State Space).

    g = HSS_M(...HSS_1(x))                     global branch: M cascaded SS2D blocks    (1)
    l_k = DWPath_k(x),  k in {5, 7}            local branch (1x1, kxk depthwise, 1x1)    (2)
    out = x + Conv1x1(concat(g, l_5, l_7))     3C -> C                                   (3)

Implements book appendix A.1.2. Tensors are channels-last (B, H, W, C) at the module's
boundary, as in MambaAD.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mambaadv2_ref.blocks.freq_conv import FrequencyEnhancedConv
from mambaadv2_ref.blocks.ss2d import SS2DBlock
from mambaadv2_ref.scanning import StagePlan


def fuse_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The 1x1 conv that fuses the concatenated branches; init normal(0, sqrt(2 / fan_out))."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / out_channels))
    nn.init.zeros_(conv.bias)
    return conv


def fuse_branches(x: torch.Tensor, global_branch: torch.Tensor, local: torch.Tensor,
                  fuse: nn.Conv2d) -> torch.Tensor:
    """x + Conv1x1(concat(global, local)) over channels.

    Args:
        x: (B, H, W, C) module input; global_branch: (B, H, W, C); local: (B, C_loc, H, W).
        fuse: Conv2d(C + C_loc -> C, 1x1).

    Returns:
        (B, H, W, C).

    Implements: eq. (3) (LSS) and the DSS merge.
    """
    merged = torch.cat([global_branch.permute(0, 3, 1, 2), local], dim=1)
    return x + fuse(merged).permute(0, 2, 3, 1)


class LSSModule(nn.Module):
    """LSS: a chain of SS2D blocks beside 5x5 / 7x7 depthwise paths, fused by a 1x1 conv.

    Args:
        dim: C.
        num_blocks: M, SS2D blocks in the global branch.
        plan: StagePlan of the stage (MambaAD: Hilbert x 8).
        cfg: the model config: d_state, expand, backend (SS2D settings) and local_kernels
            (local depthwise kernels, MambaAD: 5 and 7).
        drop_path: rate shared by the module's SS2D blocks.

    Implements: eqs. (1)-(3).
    """

    def __init__(self, dim: int, num_blocks: int, plan: StagePlan, cfg, drop_path: float = 0.0):
        super().__init__()
        self.blocks = nn.Sequential(*[
            SS2DBlock(dim, plan, cfg.d_state, cfg.expand, drop_path, cfg.backend)
            for _ in range(num_blocks)])
        self.local = FrequencyEnhancedConv(dim, cfg.local_kernels, use_fft=False)
        self.fuse = fuse_conv(dim + self.local.out_channels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns (B, H, W, C)."""
        local = self.local(x.permute(0, 3, 1, 2))
        return fuse_branches(x, self.blocks(x), local, self.fuse)
