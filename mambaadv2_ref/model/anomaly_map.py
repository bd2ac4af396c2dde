"""Anomaly maps and image scores from encoder/decoder feature pairs.

Per scale k the map is one minus the cosine similarity of the features over channels; the maps are
upsampled bilinearly to the image size, summed, smoothed by a Gaussian and the image score is the
maximum of the smoothed map:

    a_k(u) = 1 - <f_k(u), g_k(u)> / (|f_k(u)| |g_k(u)|)                           (1)
    A = G_sigma * sum_k Up(a_k),   sigma = 4                                       (2)
    score = max_u A(u)                                                             (3)

MambaAD divides A by a constant (9); that changes no metric, so we leave it out.
Implements book appendix A.1.5. Glossary: `enc` -> f_k, `dec` -> g_k, `maps` -> A.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_distance_maps(enc: list[torch.Tensor], dec: list[torch.Tensor],
                         size: tuple[int, int],
                         weights: tuple[float, ...] | None = None) -> torch.Tensor:
    """Sum over scales of the upsampled per-scale cosine distances.

    Args:
        enc, dec: lists of (B, C_k, H_k, W_k), same shapes pairwise.
        size: (H, W) output size.
        weights: None (every w_k = 1: MambaAD's sum) or one weight w_k per scale (the
            scale-balanced readout of `model.readout` uses w_k = 1 / m_k).

    Returns:
        (B, H, W) sum_k w_k Up(a_k).

    Implements: eq. (1) and the sum of eq. (2); bilinear upsampling with align_corners=True.
    """
    if len(enc) != len(dec):
        raise ValueError(f"enc and dec must have as many scales, got {len(enc)} and {len(dec)}")
    if weights is not None and len(weights) != len(enc):
        raise ValueError(f"weights must hold one value per scale ({len(enc)}), got "
                         f"{len(weights)}")
    total = None
    for k, (f, g) in enumerate(zip(enc, dec, strict=True)):
        if f.shape != g.shape:
            raise ValueError(f"enc/dec shapes differ: {tuple(f.shape)} vs {tuple(g.shape)}")
        a = 1.0 - F.cosine_similarity(f, g, dim=1)  # (B, H_k, W_k)
        a = F.interpolate(a[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
        if weights is not None:
            a = weights[k] * a
        total = a if total is None else total + a
    return total


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian weights exp(-x^2 / (2 sigma^2)), x = -r..r, r = int(truncate *
    sigma + 0.5) (scipy.ndimage's radius). Returns (2r + 1,)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype)


def _reflect_index(n: int, radius: int, device) -> torch.Tensor:
    """Indices of a length-n axis padded by `radius` in scipy's 'reflect' mode
    (d c b a | a b c d)."""
    idx = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _mirror_index(n: int, radius: int, device) -> torch.Tensor:
    """Indices of a length-n axis (n >= 2) padded by `radius` in scipy's 'mirror' mode
    (d c b | a b c d: the edge sample is not repeated), which is torch's `F.pad(mode='reflect')`
    and kornia's / anomalib's 'reflect' border."""
    idx = torch.arange(-radius, n + radius, device=device) % (2 * n - 2)
    return torch.where(idx >= n, 2 * n - 2 - idx, idx)


BLUR_MODES = ("reflect", "mirror")


def gaussian_blur(maps: torch.Tensor, sigma: float = 4.0, truncate: float = 4.0,
                  mode: str = "reflect") -> torch.Tensor:
    """Separable Gaussian smoothing matching `scipy.ndimage.gaussian_filter(mode=mode)`.

    Args:
        maps: (B, H, W).
        sigma, truncate: as scipy (radius = int(truncate * sigma + 0.5)).
        mode: border, in scipy's names: "reflect" (d c b a | a b c d, the default) or "mirror"
            (d c b | a b c d; torch's and kornia's "reflect", used by anomalib).

    Returns:
        (B, H, W) smoothed maps.

    Implements: G_sigma * of eq. (2).
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W), got {tuple(maps.shape)}")
    if mode not in BLUR_MODES:
        raise ValueError(f"mode must be one of {BLUR_MODES}, got {mode!r}")
    if mode == "mirror" and min(maps.shape[-2:]) < 2:
        raise ValueError(f"mode 'mirror' needs maps of at least 2 x 2, got {tuple(maps.shape)}")
    pad = _reflect_index if mode == "reflect" else _mirror_index
    w = gaussian_kernel1d(sigma, truncate, maps.dtype).to(maps.device)
    radius = (w.numel() - 1) // 2
    B, H, W = maps.shape
    x = maps[:, pad(H, radius, maps.device)]  # (B, H + 2r, W)
    x = x[:, :, pad(W, radius, maps.device)]  # (B, H + 2r, W + 2r)
    x = F.conv2d(x[:, None], w.view(1, 1, -1, 1))  # along H
    x = F.conv2d(x, w.view(1, 1, 1, -1))  # along W
    return x[:, 0]


def anomaly_maps(enc: list[torch.Tensor], dec: list[torch.Tensor], size: tuple[int, int],
                 sigma: float = 4.0, weights: tuple[float, ...] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly maps and image scores.

    Args:
        enc, dec: lists of (B, C_k, H_k, W_k).
        size: (H, W) of the image.
        sigma: Gaussian smoothing (MambaAD: 4; 0 turns smoothing off).
        weights: per-scale weights w_k of the sum (None: all 1, MambaAD's map).

    Returns:
        (maps (B, H, W), scores (B,)) with scores = max over pixels of the maps.

    Implements: eqs. (1)-(3).
    """
    maps = cosine_distance_maps(enc, dec, size, weights)
    if sigma > 0:
        maps = gaussian_blur(maps, sigma)
    return maps, maps.flatten(1).amax(dim=1)
