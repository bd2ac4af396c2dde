"""Locality statistics of scan orders: how well a 1-D sequence keeps 2-D neighbours together.

For an order seq over an H x W grid, with pixel p at (r_p, c_p) and time position t_p:

    step length        s_t = || (r, c)[seq[t+1]] - (r, c)[seq[t]] ||_2               (6.3)
    neighbour distance N = mean over 4-adjacent pixel pairs (p, q) of |t_p - t_q|      (6.4)
    geometric version  N_geo = exp(mean over the same pairs of log |t_p - t_q|)       (6.5)

Small steps mean consecutive tokens are spatial neighbours (good for the recurrence's local
continuity); a small N means spatial neighbours are close in time (the state has not decayed
much between them). The plain mean is dominated by the far pairs (raster: every vertical pair
is W steps apart), whose coupling a^gap has decayed to about zero whether the gap is 16 or 32;
the geometric mean weighs a gap of 2 vs 1 as much as 32 vs 16, so it looks at the near pairs,
where the order makes a difference. With K directions, N_K takes, per pair, the
smallest |t_p - t_q| over the K orders: the best any direction does for that pair.

Glossary: H, W grid; L = H*W; seq / order (L,) flat indices in visiting order; t time step.
"""

from __future__ import annotations

import torch

from mambaadv2_ref.scanning.curves import CURVES
from mambaadv2_ref.scanning.directions import build_orders, inverse


def step_lengths(order: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Euclidean length of every step of a scan order.

    Args:
        order: LongTensor (L,), L = H*W, a permutation of row-major flat indices.
        H, W: grid height and width.
    Returns:
        float tensor (L-1,): s_t of eq. (6.3).
    Implements: eq. (6.3).
    """
    _check_order(order, H, W)
    rc = torch.stack([order // W, order % W], dim=-1).double()  # (L, 2) row, col
    return (rc[1:] - rc[:-1]).norm(dim=-1)


def neighbour_distance(orders: torch.Tensor, H: int, W: int, reduce: str = "mean") -> float:
    """Mean time gap between 4-adjacent pixels, best over the given directions.

    Args:
        orders: LongTensor (L,) for one order or (K, L) for K directions.
        H, W: grid height and width.
        reduce: "mean" (eq. 6.4) or "geomean" (eq. 6.5).
    Returns:
        N for (L,); N_K (per pair the minimum gap over the K orders) for (K, L).
        0.0 for a single pixel (no pairs).
    Implements: eqs. (6.4)-(6.5).
    """
    if reduce not in ("mean", "geomean"):
        raise ValueError(f"reduce must be 'mean' or 'geomean', got {reduce!r}")
    orders = orders.reshape(-1, orders.shape[-1])
    for order in orders:
        _check_order(order, H, W)
    t = inverse(orders).reshape(-1, H, W)  # (K, H, W): time at which each pixel is read
    gaps = [(t[:, :, 1:] - t[:, :, :-1]).abs().reshape(t.shape[0], -1),  # horizontal pairs
            (t[:, 1:, :] - t[:, :-1, :]).abs().reshape(t.shape[0], -1)]  # vertical pairs
    gaps = torch.cat(gaps, dim=1)  # (K, number of adjacent pairs)
    if gaps.shape[1] == 0:
        return 0.0
    best = gaps.min(dim=0).values.double()  # (pairs,) best gap over the K orders
    return (best.mean() if reduce == "mean" else best.log().mean().exp()).item()


def locality_stats(order: torch.Tensor, H: int, W: int) -> dict[str, float]:
    """All locality statistics of one order.

    Returns:
        dict with mean_step, max_step (eq. 6.3), frac_adjacent (share of steps of length 1),
        neighbour_distance (eq. 6.4) and neighbour_distance_geo (eq. 6.5); steps are 0 when
        L = 1.
    Implements: eqs. (6.3)-(6.5).
    """
    steps = step_lengths(order, H, W)
    if steps.numel() == 0:
        return {"mean_step": 0.0, "max_step": 0.0, "frac_adjacent": 1.0,
                "neighbour_distance": 0.0, "neighbour_distance_geo": 0.0}
    return {
        "mean_step": steps.mean().item(),
        "max_step": steps.max().item(),
        "frac_adjacent": (steps == 1).double().mean().item(),
        "neighbour_distance": neighbour_distance(order, H, W),
        "neighbour_distance_geo": neighbour_distance(order, H, W, reduce="geomean"),
    }


def locality_table(H: int, W: int, num_directions: int = 8,
                   curves: tuple[str, ...] = CURVES) -> dict[str, dict[str, float]]:
    """Locality statistics of every curve at one grid size, for the book's tables and plots.

    Args:
        H, W: grid height and width.
        num_directions: K for the multi-direction neighbour distance.
        curves: curve names to include.
    Returns:
        {curve: locality_stats of its first direction, plus "neighbour_distance_k" and
        "neighbour_distance_geo_k" (N_K over the K directions of build_orders) and
        "num_directions" (K)}.
    Implements: eqs. (6.3)-(6.5) for all curves.
    """
    table = {}
    for curve in curves:
        orders = build_orders(curve, H, W, num_directions)
        table[curve] = {**locality_stats(orders[0], H, W),
                        "neighbour_distance_k": neighbour_distance(orders, H, W),
                        "neighbour_distance_geo_k": neighbour_distance(orders, H, W, "geomean"),
                        "num_directions": num_directions}
    return table


def _check_order(order: torch.Tensor, H: int, W: int) -> None:
    if order.dim() != 1 or order.numel() != H * W:
        raise ValueError(f"order must have shape (H*W,)=({H * W},), got {tuple(order.shape)}")
