"""Multi-scale feature fusion: MambaAD's half-FPN bottleneck (`MFF_OCE`), any encoder widths.

With encoder features f_1, f_2, f_3 (channels C_1, C_2, C_3 at strides 4, 8, 16):

    p_0 = ReLU(BN(Conv3x3_s2(f_1)))                      C_1 -> C_2, stride 8     (1)
    p_1 = ReLU(BN(Conv1x1(f_2))) + p_0                                           (2)
    p_2 = ReLU(BN(Conv3x3_s2(p_1))) + ReLU(BN(Conv1x1(f_3)))   C_2 -> C_3, stride 16  (3)
    b   = OCE(ReLU(BN(Conv1x1(p_2))))                    C_3 -> C_out, stride 32  (4)

OCE = 3 ResNet Bottleneck blocks (planes C_out / 4, expansion 4), the first with stride 2.
MambaAD (resnet34): 64/128/256 -> 512 @ S/32. Implements book appendix A.1.1 item 2.
"""

from __future__ import annotations

import torch
from timm.models.resnet import Bottleneck
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1) -> nn.Sequential:
    """Conv (3x3: no bias, as torchvision's conv3x3; 1x1: bias) -> BatchNorm -> ReLU."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2,
                     bias=kernel_size == 1)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class HalfFPNBottleneck(nn.Module):
    """Fuse three encoder scales into one bottleneck map of C_out channels at stride 32.

    Args:
        channels: [C_1, C_2, C_3] of the encoder.
        out_channels: C_out (the first decoder stage's width; MambaAD: 512).
        num_blocks: Bottleneck blocks in the OCE part (MambaAD: 3).

    Implements: eqs. (1)-(4) (MambaAD's `MFF_OCE`).
    """

    def __init__(self, channels: list[int], out_channels: int = 512, num_blocks: int = 3):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"channels must list 3 encoder widths, got {channels}")
        if out_channels % Bottleneck.expansion:
            raise ValueError(f"out_channels must be divisible by 4, got {out_channels}")
        c1, c2, c3 = channels
        self.down1 = conv_bn_relu(c1, c2, 3, stride=2)
        self.lateral2 = conv_bn_relu(c2, c2, 1)
        self.down2 = conv_bn_relu(c2, c3, 3, stride=2)
        self.lateral3 = conv_bn_relu(c3, c3, 1)
        self.merge = conv_bn_relu(c3, c3, 1)
        planes = out_channels // Bottleneck.expansion
        downsample = nn.Sequential(nn.Conv2d(c3, out_channels, 1, stride=2, bias=False),
                                   nn.BatchNorm2d(out_channels))
        blocks = [Bottleneck(c3, planes, stride=2, downsample=downsample)]
        blocks += [Bottleneck(out_channels, planes) for _ in range(num_blocks - 1)]
        self.oce = nn.Sequential(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Args: features [(B, C_k, H_k, W_k)] at strides 4, 8, 16.
        Returns (B, C_out, ceil(H_3 / 2), ceil(W_3 / 2))."""
        f1, f2, f3 = features
        p1 = self.lateral2(f2) + self.down1(f1)
        p2 = self.down2(p1) + self.lateral3(f3)
        return self.oce(self.merge(p2))
