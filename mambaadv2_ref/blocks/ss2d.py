"""MambaAD v1's HSS block: VMamba's SS2D with the Mamba-1 selective scan over K directions.

    x_in, z = split(in_proj(LN(x)))                  Linear(C -> 2 d_inner), no bias      (1)
    u = SiLU(DWConv3x3(x_in))                                                             (2)
    per direction k along orders[k]:  [dt_k, B_k, C_k] = W_x[k] u_k,  delta_k = W_dt[k] dt_k  (3)
    y_k = S6(u_k, delta_k, A_k, B_k, C_k, D_k, delta_bias_k, softplus)                   (4)
    y = LN(sum_k unscan(y_k)) * SiLU(z);  out = x + DropPath(out_proj(y))                 (5)

Implements book appendix A.1.3 (d_state 16, d_conv 3, expand 2, dt_rank ceil(C/16),
Hilbert x 8). Glossary: `x_proj_weight` -> W_x (K, dt_rank + 2N, d_inner), `dt_projs_weight` ->
W_dt (K, d_inner, dt_rank), `A_logs` -> log(-A) (K d_inner, N), `Ds` -> D (K d_inner,).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mambaadv2_ref.blocks.common import DirectionScanner, DropPath
from mambaadv2_ref.scanning import StagePlan
from mambaadv2_ref.scans import selective_scan


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x such that softplus(x) = y (y > 0): x = y + log(-expm1(-y))."""
    return y + torch.log(-torch.expm1(-y))


def dt_bias_init(shape: tuple[int, ...], dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4) -> torch.Tensor:
    """Mamba's dt bias: inverse-softplus of dt drawn log-uniformly in [dt_min, dt_max]."""
    dt = torch.exp(torch.rand(shape) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    return inverse_softplus(dt.clamp(min=dt_init_floor))


class SS2D(nn.Module):
    """SS2D: K-direction Mamba-1 scan of a 2-D feature map (eqs. 1-5 without the residual).

    Args:
        dim: C.
        plan: StagePlan (MambaAD: Hilbert x 8).
        d_state: N (16).
        expand: d_inner = expand * C (2).
        backend: scan backend.
    """

    def __init__(self, dim: int, plan: StagePlan, d_state: int = 16, expand: int = 2,
                 backend: str = "auto"):
        super().__init__()
        d_inner, K = expand * dim, plan.num_directions
        self.d_state, self.dt_rank, self.backend = d_state, math.ceil(dim / 16), backend
        self.scanner = DirectionScanner(plan)
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=True)
        bound = d_inner ** -0.5  # nn.Linear's default init, as VMamba's stacked x_proj
        self.x_proj_weight = nn.Parameter(
            torch.empty(K, self.dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        bound = self.dt_rank ** -0.5
        self.dt_projs_weight = nn.Parameter(
            torch.empty(K, d_inner, self.dt_rank).uniform_(-bound, bound))
        self.dt_projs_bias = nn.Parameter(dt_bias_init((K, d_inner)))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(K * d_inner, 1)
        self.A_logs = nn.Parameter(torch.log(A))  # (K d_inner, N)
        self.Ds = nn.Parameter(torch.ones(K * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C), already layer-normed. Returns (B, H, W, C)."""
        B_, H, W, _ = x.shape
        x_in, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, d_inner) each; eq. (1)
        u = F.silu(self.conv2d(x_in.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)  # eq. (2)
        us = self.scanner.scan(u).transpose(2, 3)  # (B, K, d_inner, L)
        K, d_inner, L = us.shape[1:]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", us, self.x_proj_weight)  # eq. (3)
        dts, Bs, Cs = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = selective_scan(us.reshape(B_, K * d_inner, L), dts.reshape(B_, K * d_inner, L),
                           -torch.exp(self.A_logs.float()), Bs.contiguous(), Cs.contiguous(),
                           self.Ds.float(), delta_bias=self.dt_projs_bias.reshape(-1).float(),
                           delta_softplus=True, backend=self.backend)  # eq. (4)
        y = self.scanner.merge(y.view(B_, K, d_inner, L).transpose(2, 3), H, W)
        return self.out_proj(self.out_norm(y) * F.silu(z))  # eq. (5)


class SS2DBlock(nn.Module):
    """MambaAD's HSS block (VSSBlock): x + DropPath(SS2D(LayerNorm(x))).

    Args:
        dim: C.  plan: StagePlan.  d_state, expand, backend: see SS2D.
        drop_path: stochastic-depth rate.

    Implements: eq. (5) with the residual (book appendix A.1.3).
    """

    def __init__(self, dim: int, plan: StagePlan, d_state: int = 16, expand: int = 2,
                 drop_path: float = 0.0, backend: str = "auto"):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.ss2d = SS2D(dim, plan, d_state, expand, backend)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns (B, H, W, C)."""
        return x + self.drop_path(self.ss2d(self.norm(x)))
