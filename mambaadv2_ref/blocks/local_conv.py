"""Local convolution paths shared by MambaAD's LSS module and MambaADv2's frequency branch.

Glossary: `C` channels, `k` depthwise kernel size, IN = InstanceNorm2d, SiLU = x * sigmoid(x).
All tensors here are channels-first (B, C, H, W).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def conv_in_silu(in_channels: int, out_channels: int, kernel_size: int = 1,
                 groups: int = 1, bias: bool = True) -> nn.Sequential:
    """Conv2d (same padding) -> InstanceNorm2d -> SiLU, MambaAD's `ConvBNAct`-style unit.

    Args:
        in_channels, out_channels: channels in and out.
        kernel_size: odd kernel size k (padding k // 2 keeps H, W).
        groups: conv groups (= channels for a depthwise conv).
        bias: conv bias (MambaAD: False for the depthwise kxk conv).

    Returns:
        nn.Sequential mapping (B, in, H, W) -> (B, out, H, W).

    Implements: one stage of the LSS local branch (book appendix A.1.2).
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                     groups=groups, bias=bias)
    fan_out = kernel_size * kernel_size * out_channels // groups
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / fan_out))
    if bias:
        nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, nn.InstanceNorm2d(out_channels), nn.SiLU())


class DepthwiseConvPath(nn.Module):
    """[1x1 conv-IN-SiLU] -> [kxk depthwise conv-IN-SiLU] -> [1x1 conv-IN-SiLU].

    Args:
        channels: C (kept throughout).
        kernel_size: k of the depthwise conv (MambaAD: 5 and 7).

    Implements: the LSS local branch of MambaAD (book appendix A.1.2).
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.pre = conv_in_silu(channels, channels, 1)
        self.depthwise = conv_in_silu(channels, channels, kernel_size, groups=channels, bias=False)
        self.post = conv_in_silu(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W). Returns (B, C, H, W)."""
        return self.post(self.depthwise(self.pre(x)))
