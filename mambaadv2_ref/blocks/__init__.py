"""Building blocks of the decoders, v2 first, then MambaAD v1's.

    hss        HSS block of MambaADv2: SSD + Mamba-3 position awareness, recurrence + matrix paths
    freq_conv  frequency-enhanced convolution (depthwise paths + learnable FFT filter)
    dss        DSS module = HSS chain || frequency conv, 1x1 fusion, residual
    ss2d, lss  MambaAD v1: SS2D (Mamba-1 selective scan, K directions) and the LSS module
    norms, local_conv, common   RMSNorm / gated RMSNorm, conv paths, direction scanner,
               drop path, patch expand (shared by v1 and v2)
"""

from mambaadv2_ref.blocks.common import DirectionScanner, DropPath, PatchExpand
from mambaadv2_ref.blocks.dss import DSSModule
from mambaadv2_ref.blocks.freq_conv import FFTPath, FrequencyEnhancedConv, fft_filter
from mambaadv2_ref.blocks.hss import HSS, HSSBlock
from mambaadv2_ref.blocks.lss import LSSModule
from mambaadv2_ref.blocks.norms import RMSNorm, RMSNormGated, rms_norm
from mambaadv2_ref.blocks.ss2d import SS2D, SS2DBlock

__all__ = [
    "DSSModule", "DirectionScanner", "DropPath", "FFTPath", "FrequencyEnhancedConv", "HSS",
    "HSSBlock", "LSSModule", "PatchExpand", "RMSNorm", "RMSNormGated", "SS2D", "SS2DBlock",
    "fft_filter", "rms_norm",
]
