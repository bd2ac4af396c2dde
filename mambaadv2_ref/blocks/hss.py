"""MambaADv2's HSS block: multi-head SSD (Mamba-2) with Mamba-3 position awareness and the two
computational paths of state space duality, run along K scan directions of the feature map.

What the abstract fixes: an HSS block in the SSD (Mamba-2) lineage, with Mamba-3-style
position-aware state space modelling, that uses both the linear recurrence ("local continuity")
and the parallel matrix form ("global contextual comparison"). Everything else is our reading,
following Mamba-2/3 and MambaAD's SS2D (mambaad_family.md section 2):

    u = LN(x);  [z, x, B, C, dt, trap, theta] = in_proj(u)         projections per pixel    (1)
    x <- SiLU(DWConv3x3(x))                                        optional (`dwconv`)      (2)
    B, C <- RMSNorm_N(B), RMSNorm_N(C); bias b_B, b_C (h, N), init 1   optional (`bc_norm`)  (3)
    Delta = softplus(dt + dt_bias),  A_h = -exp(A_log_h)           Mamba-2: A per head      (4)
    per direction k, along orders[k] (K folded into the batch):
      y_rec = Mamba3(x, Delta, A, B, C, trap, theta)   chunked causal recurrence           (5)
              (SSD recurrence when position awareness is off)
      y_mat = (M o C B^T) (w x),  M causal or two-sided decay mask  materialised matrix   (6)
      y = fuse(y_rec, y_mat) + D x      sum | sigma(g) y_rec + (1 - sigma(g)) y_mat | one   (7)
    y = sum_k unscan_k(y);  out = x_in + DropPath(out_proj(RMSNormGated(y, z)))           (8)

Choices we made (the paper body is not public):
- A is a learned scalar per head (Mamba-2's A_log), not Mamba-3's data-dependent A_t: both paths
  then share one decay per head, and the matrix path stays a plain SSD matrix.
- The projections (1) are shared by the K directions (computed once per pixel, then gathered),
  unlike SS2D's per-direction x_proj; the directions differ by their order and causality.
- The matrix path uses the same rotated B, C and trapezoid weights as the recurrence (Mamba-3's
  parallel form); with `matrix_causal=False` its decay mask is two-sided,
  M_ts = exp(-|sum_{r in (s, t]} Delta_r A|), so every token is compared with every other one.
- O(L^2) memory: above `matrix_max_tokens` tokens the matrix path runs on consecutive windows
  of that many tokens along the scan order (a block-diagonal M); a Hilbert window is a compact
  patch of the image. `matrix_cost` reports the resulting size. In training the masks are not
  kept for the backward pass but recomputed (`checkpoint_matrix`, activation checkpointing):
  they are the largest tensors of the model, several per block. `checkpoint_block` recomputes
  the whole block instead (scans, both paths, merge): it keeps only the block's input, for small
  GPUs, at the price of one more forward of every block per step.

Glossary (code -> symbol): h heads, p headdim, N d_state, g ngroups, K directions, L = H W,
`A_log` -> log(-A_h), `dt_bias` -> Delta bias, `B_bias`/`C_bias` -> b_B, b_C, `trap` -> lambda
logit, `angles` -> theta (rotary angles, shared by heads), `gate` -> g (d_inner,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mambaadv2_ref import scans
from mambaadv2_ref.blocks.common import DirectionScanner, DropPath
from mambaadv2_ref.blocks.norms import RMSNorm, RMSNormGated
from mambaadv2_ref.blocks.ss2d import dt_bias_init
from mambaadv2_ref.scanning import StagePlan

# "attention" is not MambaADv2: softmax attention in place of both paths, the quadratic baseline
# of the resolution-scaling study (mambaadv2_ref.studies.scaling)
PATH_MODES = ("sum", "gate", "recurrence", "matrix", "attention")


def recomputed(enabled: bool, fn, *args) -> torch.Tensor:
    """fn(*args); with `enabled` and autograd recording, its activations are not stored but
    recomputed in the backward pass (activation checkpointing: same values and gradients)."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def windows(t: torch.Tensor, size: int) -> torch.Tensor:
    """Cut the time axis (dim 1) into windows: (b, L, ...) -> (b * ceil(L / size), size, ...),
    zero-padding the last window."""
    b, L = t.shape[:2]
    n = -(-L // size)
    t = F.pad(t, [0, 0] * (t.dim() - 2) + [0, n * size - L])
    return t.reshape(b * n, size, *t.shape[2:])


def unwindows(t: torch.Tensor, b: int, L: int) -> torch.Tensor:
    """Inverse of `windows`: (b * n, size, ...) -> (b, L, ...)."""
    return t.reshape(b, -1, *t.shape[2:])[:, :L]


def matrix_cost(L: int, max_tokens: int) -> int:
    """Entries of the matrix path's mask per head and sequence: L * min(L, window)."""
    return L * min(L, max_tokens) if L > max_tokens else L * L


class HSS(nn.Module):
    """The HSS mixer (eqs. 1-8 without the residual): K-direction dual-path SSD / Mamba-3.

    Args:
        dim: C, model width.
        plan: StagePlan (curve, num_directions) of the stage.
        d_state: N.  headdim: p.  expand: d_inner = expand * C.  ngroups: g.
        chunk_size: Q of the chunked recurrence.
        path_mode: "sum" | "gate" | "recurrence" | "matrix" | "attention" (baseline, see
            `attention`).
        matrix_causal: causal (True) or two-sided (False) decay mask in the matrix path.
        matrix_max_tokens: window of the matrix path for longer sequences.
        checkpoint_matrix: recompute the matrix path in the backward pass instead of storing
            its (window x window) masks (same gradients, far less memory, ~1 more forward).
        checkpoint_block: recompute the whole block in the backward pass (keeps only its input;
            same gradients; one more forward of the block).
        position_aware: rotary angles + trapezoid (Mamba-3); off: Mamba-2 SSD.
        rope_fraction: fraction of N turned by rotary angles (Mamba-3: 0.5).
        dwconv: depthwise 3x3 conv + SiLU on x.  bc_norm: RMSNorm + bias on B and C.
        backend: scan backend "auto" | "torch" | "mamba_ssm".
    """

    def __init__(self, dim: int, plan: StagePlan, d_state: int = 16, headdim: int = 32,
                 expand: int = 2, ngroups: int = 1, chunk_size: int = 64,
                 path_mode: str = "sum", matrix_causal: bool = False,
                 matrix_max_tokens: int = 1024, checkpoint_matrix: bool = True,
                 checkpoint_block: bool = False, position_aware: bool = True,
                 rope_fraction: float = 0.5, dwconv: bool = True, bc_norm: bool = True,
                 backend: str = "auto"):
        super().__init__()
        d_inner = expand * dim
        if path_mode not in PATH_MODES:
            raise ValueError(f"path_mode must be one of {list(PATH_MODES)}, got {path_mode!r}")
        if d_inner % headdim or (d_inner // headdim) % ngroups:
            raise ValueError(f"headdim={headdim} must divide expand * dim = {d_inner} into a "
                             f"number of heads divisible by ngroups={ngroups}")
        h = d_inner // headdim
        self.d_inner, self.heads, self.headdim, self.d_state, self.ngroups = (
            d_inner, h, headdim, d_state, ngroups)
        self.chunk_size, self.path_mode, self.matrix_causal = chunk_size, path_mode, matrix_causal
        self.matrix_max_tokens, self.position_aware, self.backend = (
            matrix_max_tokens, position_aware, backend)
        self.checkpoint_matrix, self.checkpoint_block = checkpoint_matrix, checkpoint_block
        self.num_angles = int(d_state * rope_fraction) // 2 if position_aware else 0
        self.split_sizes = [d_inner, ngroups * d_state, ngroups * d_state, h,
                            h if position_aware else 0, self.num_angles]  # x, B, C, dt, trap, th
        self.scanner = DirectionScanner(plan)
        self.in_proj = nn.Linear(dim, d_inner + sum(self.split_sizes), bias=False)  # z first
        self.conv2d = (nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
                       if dwconv else None)
        self.bc_norm = bc_norm
        if bc_norm:
            self.B_norm, self.C_norm = RMSNorm(d_state), RMSNorm(d_state)
            self.B_bias = nn.Parameter(torch.ones(h, d_state))
            self.C_bias = nn.Parameter(torch.ones(h, d_state))
        self.A_log = nn.Parameter(torch.log(torch.empty(h).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(dt_bias_init((h,)))
        self.D = nn.Parameter(torch.ones(h))
        self.gate = nn.Parameter(torch.zeros(d_inner)) if path_mode == "gate" else None
        self.norm = RMSNormGated(d_inner, group_size=d_inner // ngroups)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Args: u (B, H, W, C), already layer-normed. Returns (B, H, W, C)."""
        if u.ndim != 4:
            raise ValueError(f"u must be (B, H, W, C), got {tuple(u.shape)}")
        return recomputed(self.checkpoint_block, self.block, u)

    def block(self, u: torch.Tensor) -> torch.Tensor:
        """Equations (1)-(8) on u (B, H, W, C); returns (B, H, W, C)."""
        Bsz, H, W, _ = u.shape
        h, p, g, N = self.heads, self.headdim, self.ngroups, self.d_state
        z, x, rest = self.in_proj(u).split([self.d_inner, self.d_inner, sum(self.split_sizes[1:])],
                                           dim=-1)  # eq. (1)
        if self.conv2d is not None:  # eq. (2)
            x = F.silu(self.conv2d(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        seq = self.scanner.scan(torch.cat([x, rest], dim=-1)).flatten(0, 1)  # (B K, L, .)
        x, B, C, dt, trap, angles = seq.split(self.split_sizes, dim=-1)
        x = x.unflatten(-1, (h, p))  # (BK, L, h, p)
        B, C = B.unflatten(-1, (g, N)), C.unflatten(-1, (g, N))  # (BK, L, g, N)
        if self.bc_norm:  # eq. (3); the biases are added per head below
            B, C = self.B_norm(B), self.C_norm(C)
        delta = F.softplus(dt + self.dt_bias)  # eq. (4), (BK, L, h)
        A = -torch.exp(self.A_log)
        if self.path_mode == "attention":
            y = self.attention(x, B, C)
        else:
            y_rec = y_mat = None
            if self.path_mode != "matrix":
                y_rec = self.recurrence(x, delta, A, B, C, trap, angles)  # eq. (5)
            if self.path_mode != "recurrence":
                y_mat = self.matrix(x, delta, A, B, C, trap, angles)  # eq. (6)
            y = self.fuse(y_rec, y_mat)
        y = y + self.D[:, None] * x  # eq. (7)
        y = y.reshape(Bsz, -1, H * W, self.d_inner)  # (B, K, L, d_inner)
        y = self.scanner.merge(y, H, W)  # eq. (8)
        return self.out_proj(self.norm(y, z))

    def _biased(self, B: torch.Tensor, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B + b_B, C + b_C per head: (BK, L, g, N) -> (BK, L, h, N) (unchanged without bc_norm)."""
        if not self.bc_norm:
            return B, C
        rep = self.heads // self.ngroups
        return (B.repeat_interleave(rep, dim=2) + self.B_bias,
                C.repeat_interleave(rep, dim=2) + self.C_bias)

    def _mamba3_args(self, x, delta, A, B, C, trap, angles) -> dict:
        """Keyword arguments of scans.mamba3_* (Q = C, K = B, V = x; time-last scalars)."""
        zeros = B.new_zeros(self.heads, self.d_state)
        return dict(Q=C, K=B, V=x, ADT=(delta * A).transpose(1, 2),
                    DT=delta.transpose(1, 2), Trap=trap.transpose(1, 2),
                    Q_bias=self.C_bias if self.bc_norm else zeros,
                    K_bias=self.B_bias if self.bc_norm else zeros,
                    Angles=angles[:, :, None, :].expand(-1, -1, self.heads, -1))

    def recurrence(self, x, delta, A, B, C, trap, angles) -> torch.Tensor:
        """Linear-recurrence path (eq. 5): Mamba-3 chunked scan, or SSD when position awareness
        is off. Args as produced in forward: x (BK, L, h, p), delta (BK, L, h), A (h,),
        B, C (BK, L, g, N), trap (BK, L, h), angles (BK, L, n_angles). Returns (BK, L, h, p)."""
        if self.position_aware:
            return scans.mamba3_scan(**self._mamba3_args(x, delta, A, B, C, trap, angles),
                                     chunk_size=self.chunk_size, backend=self.backend)
        B, C = self._biased(B, C)
        return scans.ssd_scan(x, delta, A, B, C, self.chunk_size, backend=self.backend)

    def matrix(self, x, delta, A, B, C, trap, angles) -> torch.Tensor:
        """Parallel matrix path (eq. 6), materialised, in windows of `matrix_max_tokens` tokens
        when the sequence is longer; recomputed in the backward pass when `checkpoint_matrix`.
        Args as `recurrence`. Returns (BK, L, h, p)."""
        b, L = x.shape[:2]
        tensors = [x, delta, B, C, trap, angles]
        if L > self.matrix_max_tokens:
            tensors = [windows(t, self.matrix_max_tokens) for t in tensors]
        y = recomputed(self.checkpoint_matrix and not self.checkpoint_block, self.matrix_form,
                       *tensors[:2], A, *tensors[2:])
        return unwindows(y, b, L) if L > self.matrix_max_tokens else y

    def matrix_form(self, x, delta, A, B, C, trap, angles) -> torch.Tensor:
        """(M o C B^T)(w x) on one sequence or window batch: Mamba-3's matrix form, or SSD's
        when position awareness is off. Args as `recurrence`. Returns (b, L, h, p)."""
        if self.position_aware:
            y = scans.mamba3_matrix(**self._mamba3_args(x, delta, A, B, C, trap, angles),
                                    causal=self.matrix_causal)
        else:
            B, C = self._biased(B, C)
            y = scans.ssd_matrix(x, delta, A, B, C, causal=self.matrix_causal)
        return y.to(x.dtype)

    def attention(self, x, B, C) -> torch.Tensor:
        """Softmax attention in place of both SSM paths (not MambaADv2: the quadratic baseline
        of the scaling study), per head y = softmax(C B^T / sqrt(N)) x over all L tokens, with
        the same projections, so the decoder keeps its width.

        Args: x (BK, L, h, p); B, C (BK, L, g, N). Returns (BK, L, h, p).
        """
        B, C = self._biased(B, C)
        rep = self.heads // B.shape[2]  # without bc_norm B, C still have g groups
        q, k = (M.repeat_interleave(rep, dim=2).transpose(1, 2) for M in (C, B))
        y = F.scaled_dot_product_attention(q, k, x.transpose(1, 2).to(q.dtype))
        return y.transpose(1, 2).to(x.dtype)

    def fuse(self, y_rec: torch.Tensor | None, y_mat: torch.Tensor | None) -> torch.Tensor:
        """Fusion of the two paths (eq. 7 without D x): sum, per-channel gate, or one path."""
        if y_mat is None:
            return y_rec
        if y_rec is None:
            return y_mat
        if self.gate is None:
            return y_rec + y_mat
        g = torch.sigmoid(self.gate).view(self.heads, self.headdim)
        return g * y_rec + (1 - g) * y_mat

    def cost(self, H: int, W: int) -> dict:
        """Sizes of one forward at grid H x W: tokens, directions, scanned tokens and the
        number of entries of the matrix path's mask (per head, summed over directions)."""
        L, K = H * W, self.scanner.num_directions
        return {"tokens": L, "directions": K, "scanned_tokens": L * K,
                "matrix_window": min(L, self.matrix_max_tokens),
                "matrix_entries": (K * matrix_cost(L, self.matrix_max_tokens)
                                   if self.path_mode != "recurrence" else 0)}


class HSSBlock(nn.Module):
    """HSS block with its residual: x + DropPath(HSS(LayerNorm(x))) (eq. 8).

    Args:
        dim: C.  drop_path: stochastic-depth rate.  **hss_kwargs: see HSS.
    """

    def __init__(self, dim: int, plan: StagePlan, drop_path: float = 0.0, **hss_kwargs):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.hss = HSS(dim, plan, **hss_kwargs)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns (B, H, W, C)."""
        return x + self.drop_path(self.hss(self.norm(x)))
