"""MambaADv2's DSS module (Duality-enhanced State Space).

The abstract: "parallel-cascaded HSS blocks and frequency-enhanced convolution" that jointly
model global, local and frequency information. Our reading mirrors MambaAD's LSS module:

    g = HSS_M(...HSS_1(x))                    global branch: M cascaded HSS blocks        (1)
    f = FreqConv(x) = [l_5, l_7, fft]         local + frequency branch, in parallel       (2)
    out = x + Conv1x1(concat(g, f))                                                     (3)

Tensors are channels-last (B, H, W, C) at the module's boundary.
"""

from __future__ import annotations

import torch
from torch import nn

from mambaadv2_ref.blocks.freq_conv import FrequencyEnhancedConv
from mambaadv2_ref.blocks.hss import HSSBlock
from mambaadv2_ref.blocks.lss import fuse_branches, fuse_conv
from mambaadv2_ref.scanning import StagePlan


class DSSModule(nn.Module):
    """DSS: a chain of HSS blocks beside the frequency-enhanced convolution, fused by a 1x1 conv.

    Args:
        dim: C.
        num_blocks: M, HSS blocks in the global branch.
        plan: StagePlan of the stage.
        cfg: the model config: HSS settings (see HSS), local_kernels (depthwise kernels of the
            local paths, 5 and 7) and use_fft (the FFT path of the frequency branch).
        drop_path: rate shared by the module's HSS blocks.

    Implements: eqs. (1)-(3).
    """

    def __init__(self, dim: int, num_blocks: int, plan: StagePlan, cfg, drop_path: float = 0.0):
        super().__init__()
        self.blocks = nn.Sequential(*[HSSBlock(dim, plan, cfg, drop_path)
                                      for _ in range(num_blocks)])
        self.freq = FrequencyEnhancedConv(dim, cfg.local_kernels, cfg.use_fft)
        self.fuse = fuse_conv(dim + self.freq.out_channels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns (B, H, W, C)."""
        return fuse_branches(x, self.blocks(x), self.freq(x.permute(0, 3, 1, 2)), self.fuse)
