"""Frequency-enhanced convolution: depthwise local paths plus a learnable FFT filter.

The abstract of MambaADv2 says the DSS module pairs HSS blocks with a "frequency-enhanced
convolution" that models local and frequency information. The layout below is our reading: the
two depthwise paths of MambaAD's LSS (k = 5, 7) plus a global-filter path (as in GFNet):

    F = SiLU(IN(Conv1x1(x)))                                                     (1)
    G = irfft2( W(f_y, f_x) * rfft2(F) )        W complex, per channel           (2)
    out_fft = SiLU(IN(Conv1x1(G)))                                               (3)

W is stored on a fixed grid of normalised frequencies f_y in [-1/2, 1/2], f_x in [0, 1/2] and
sampled bilinearly at the input's own rfft frequencies, so one filter serves every H x W (our
choice). It starts as the identity filter W = 1.

Glossary: `filter_grid` -> W (C, 2, n_fy, n_fx) real/imag planes, `fy`, `fx` -> f_y, f_x (cycles
per pixel), `k` depthwise kernel size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mambaadv2_ref.blocks.local_conv import DepthwiseConvPath, conv_in_silu


def sample_filter(filter_grid: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Sample a per-channel complex filter, stored on normalised frequencies, at an rfft2 grid.

    Args:
        filter_grid: (C, 2, n_fy, n_fx) real and imaginary planes over f_y in [-1/2, 1/2]
            (rows) and f_x in [0, 1/2] (columns).
        H, W: spatial size of the signal whose rfft2 the filter multiplies.

    Returns:
        complex (C, H, W // 2 + 1) filter at f_y = fftfreq(H), f_x = rfftfreq(W).

    Implements: the resolution-free filter W(f_y, f_x) of eq. (2) (our reading).
    """
    device = filter_grid.device
    fy = torch.fft.fftfreq(H, device=device) * 2.0  # [-1, 1)
    fx = torch.fft.rfftfreq(W, device=device) * 4.0 - 1.0  # [0, 1/2] -> [-1, 1]
    grid = torch.stack(torch.broadcast_tensors(fx[None, :], fy[:, None]), dim=-1)  # (H, Wr, 2)
    C = filter_grid.shape[0]
    planes = F.grid_sample(filter_grid.reshape(1, 2 * C, *filter_grid.shape[2:]),
                           grid[None].to(filter_grid.dtype), mode="bilinear",
                           align_corners=True)  # (1, 2C, H, Wr)
    planes = planes.reshape(C, 2, H, -1)
    return torch.complex(planes[:, 0].float(), planes[:, 1].float())


def fft_filter(x: torch.Tensor, filter_grid: torch.Tensor) -> torch.Tensor:
    """Global frequency filter G = irfft2(W * rfft2(x)).

    Args:
        x: (B, C, H, W) real.
        filter_grid: (C, 2, n_fy, n_fx), see `sample_filter`.

    Returns:
        (B, C, H, W) real, in x's dtype.

    Implements: eq. (2).
    """
    H, W = x.shape[-2:]
    spectrum = torch.fft.rfft2(x.float(), norm="ortho")  # (B, C, H, W//2+1)
    spectrum = spectrum * sample_filter(filter_grid, H, W)
    return torch.fft.irfft2(spectrum, s=(H, W), norm="ortho").to(x.dtype)


class FFTPath(nn.Module):
    """Conv1x1-IN-SiLU -> learnable complex frequency filter -> Conv1x1-IN-SiLU.

    Args:
        channels: C.
        filter_size: (n_fy, n_fx) points of the stored filter grid (n_fy odd so f_y = 0 is a
            grid point).

    Implements: eqs. (1)-(3).
    """

    def __init__(self, channels: int, filter_size: tuple[int, int] = (17, 9)):
        super().__init__()
        n_fy, n_fx = filter_size
        if n_fy % 2 != 1 or n_fx < 2:
            raise ValueError(f"filter_size must be (odd n_fy, n_fx >= 2), got {filter_size}")
        self.pre = conv_in_silu(channels, channels, 1)
        grid = torch.zeros(channels, 2, n_fy, n_fx)
        grid[:, 0] = 1.0  # identity filter: real part 1, imaginary part 0
        self.filter_grid = nn.Parameter(grid)
        self.post = conv_in_silu(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W). Returns (B, C, H, W)."""
        return self.post(fft_filter(self.pre(x), self.filter_grid))


class FrequencyEnhancedConv(nn.Module):
    """Local (depthwise kxk) paths and an FFT path side by side; outputs are concatenated.

    Args:
        channels: C.
        kernel_sizes: depthwise kernel sizes of the local paths (MambaAD: (5, 7)).
        use_fft: add the FFT path (off: MambaAD's LSS local branch exactly).

    Attributes:
        out_channels: C * (len(kernel_sizes) + use_fft), the width of the concatenation.

    Implements: the frequency-enhanced convolution of the DSS module (abstract; layout ours).
    """

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...] = (5, 7), use_fft: bool = True,
                 filter_size: tuple[int, int] = (17, 9)):
        super().__init__()
        paths = [DepthwiseConvPath(channels, k) for k in kernel_sizes]
        if use_fft:
            paths.append(FFTPath(channels, filter_size))
        if not paths:
            raise ValueError("FrequencyEnhancedConv needs kernel_sizes or use_fft=True")
        self.paths = nn.ModuleList(paths)
        self.out_channels = channels * len(paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, C, H, W). Returns (B, out_channels, H, W)."""
        return torch.cat([path(x) for path in self.paths], dim=1)
