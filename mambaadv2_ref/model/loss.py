"""Training loss: feature reconstruction, 5 x MSE summed over the 3 scales (MambaAD's L2Loss).

    loss = sum_k lambda * mean_u,c (f_k - g_k)^2,   lambda = 5                   (1)

Implements book appendix A.1.4 (computed on raw features, not a cosine loss).
Glossary: `enc` -> f_k (encoder, no gradient), `dec` -> g_k (decoder), `weight` -> lambda.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(enc: list[torch.Tensor], dec: list[torch.Tensor],
                        weight: float = 5.0) -> torch.Tensor:
    """Sum over scales of weight x MSE(enc_k, dec_k).

    Args:
        enc, dec: lists of (B, C_k, H_k, W_k), same shapes pairwise.
        weight: lambda (MambaAD: 5).

    Returns:
        scalar tensor.

    Implements: eq. (1).
    """
    if len(enc) != len(dec) or not enc:
        raise ValueError(f"enc and dec must be non-empty lists of equal length, got {len(enc)} "
                         f"and {len(dec)}")
    for f, g in zip(enc, dec, strict=True):
        if f.shape != g.shape:
            raise ValueError(f"enc/dec shapes differ: {tuple(f.shape)} vs {tuple(g.shape)}")
    return sum(weight * F.mse_loss(g, f.detach()) for f, g in zip(enc, dec, strict=True))
