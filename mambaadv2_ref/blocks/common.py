"""Pieces shared by the v1 (SS2D / LSS) and v2 (HSS / DSS) blocks: direction scanning around a
state space scan, stochastic depth, patch expansion.

Glossary: B batch, (H, W) grid, C channels, K scan directions, L = H * W tokens,
`orders` (K, L) scan orders from `mambaadv2_ref.scanning`.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from mambaadv2_ref.scanning import StagePlan, inverse, scan, unscan

__all__ = ["DirectionScanner", "DropPath", "PatchExpand", "drop_path_rates"]


class DirectionScanner(nn.Module):
    """Read a grid along the K scan orders of a stage plan and merge the K outputs back.

    The orders of each grid size are built once and cached on the module (per device).

    Args:
        plan: StagePlan (curve, num_directions).

    Implements: the HS encoder / decoder of MambaAD (book appendix A.1.3) through
    `scanning.scan` / `scanning.unscan` (eqs. (1)-(2) of chapter 6).
    """

    def __init__(self, plan: StagePlan):
        super().__init__()
        self.plan = plan
        self.num_directions = plan.num_directions
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def orders(self, H: int, W: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(orders, inverse orders), both LongTensor (K, H*W) on `device`."""
        key = (H, W, str(device))
        if key not in self._cache:
            orders = self.plan.orders(H, W).to(device)
            self._cache[key] = (orders, inverse(orders))
        return self._cache[key]

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns (B, K, L, C): y[:, k, t] = x at orders[k, t]."""
        if x.ndim != 4:
            raise ValueError(f"x must be (B, H, W, C), got {tuple(x.shape)}")
        orders, _ = self.orders(x.shape[1], x.shape[2], x.device)
        return scan(x, orders)

    def merge(self, y: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Args: y (B, K, L, C) along the orders. Returns (B, H, W, C), the sum over directions."""
        orders, inverse_orders = self.orders(H, W, y.device)
        return unscan(y, orders, inverse_orders).unflatten(1, (H, W))


def drop_path_rates(max_rate: float, count: int) -> list[float]:
    """MambaAD's stochastic-depth schedule: linspace(0, max_rate, count) reversed (the deepest
    decoder block gets the largest rate)."""
    return torch.linspace(0, max_rate, count).flip(0).tolist() if count else []


class PatchExpand(nn.Module):
    """Double the resolution: Linear(C_in -> 4 C_out, no bias), depth-to-space x2, LayerNorm.

    Args:
        in_dim: C_in (MambaAD: 2 C_out).
        out_dim: C_out.

    Implements: MambaAD's `PatchExpand2D` (book appendix A.1.1 item 3), with C_in free.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.expand = nn.Linear(in_dim, 4 * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C_in). Returns (B, 2H, 2W, C_out)."""
        B, H, W, _ = x.shape
        x = self.expand(x).view(B, H, W, 2, 2, self.out_dim)  # (b, h, w, p1, p2, c)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, 2 * H, 2 * W, self.out_dim)
        return self.norm(x)
