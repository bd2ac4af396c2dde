"""State space scans in pure PyTorch, with mamba-ssm's GPU kernels as an optional fast path.

Public API (mamba-ssm signatures and semantics; keyword `backend`: "auto", "torch", "mamba_ssm"):
    selective_scan   Mamba-1 S6            (s6.py; mamba_ssm selective_scan_fn)
    ssd_scan         Mamba-2 SSD           (ssd.py; mamba_ssm mamba_chunk_scan_combined)
    ssd_matrix       SSD materialised matrix form, causal or two-sided (the HSS parallel path)
    mamba3_scan      Mamba-3 SISO          (mamba3.py; mamba_ssm mamba3_siso_combined)
    available_backends                     (backends.py)
Every fast path has a slow twin, by module: s6.selective_scan_sequential / selective_scan_chunked,
ssd.ssd_sequential / ssd_matrix / ssd_chunked, segsum.segsum / segsum_two_sided / decay_mask
(= exp(segsum), fast),
mamba3.mamba3_sequential / mamba3_matrix / mamba3_chunked / mamba3_complex_sequential.
"""

from .backends import available_backends
from .mamba3 import (
    mamba3_chunked,
    mamba3_complex_sequential,
    mamba3_matrix,
    mamba3_scan,
    mamba3_sequential,
)
from .s6 import selective_scan, selective_scan_chunked, selective_scan_sequential
from .segsum import decay_mask, segsum, segsum_two_sided
from .ssd import ssd_chunked, ssd_matrix, ssd_scan, ssd_sequential

__all__ = [
    "available_backends",
    "decay_mask",
    "mamba3_chunked",
    "mamba3_complex_sequential",
    "mamba3_matrix",
    "mamba3_scan",
    "mamba3_sequential",
    "selective_scan",
    "selective_scan_chunked",
    "selective_scan_sequential",
    "segsum",
    "segsum_two_sided",
    "ssd_chunked",
    "ssd_matrix",
    "ssd_scan",
    "ssd_sequential",
]
