"""MambaADv2's HSS block: multi-head SSD (Mamba-2) with Mamba-3 position awareness and the two
computational paths of state space duality, run along K scan directions of the feature map.

What the abstract fixes: an HSS block in the SSD (Mamba-2) lineage, with Mamba-3-style
position-aware state space modelling, that uses both the linear recurrence ("local continuity")
and the parallel matrix form ("global contextual comparison"). Everything else is our reading,
following Mamba-2/3 and MambaAD's SS2D (book appendix A.2.2):

    u = LN(x);  [z, x, B, C, dt, trap, theta] = in_proj(u)         projections per pixel    (1)
    x <- SiLU(DWConv3x3(x))                                        optional (`dwconv`)      (2)
    B, C <- RMSNorm_N(B), RMSNorm_N(C); bias b_B, b_C (h, N), init 1   optional (`bc_norm`)  (3)
    Delta = softplus(dt + dt_bias),  A_h = -exp(A_log_h)           Mamba-2: A per head      (4)
    per direction k, along orders[k] (K folded into the batch), with the rotated keys/queries
    k_s, q_t and the trapezoid-weighted inputs xbar_s of Mamba-3 (M3.1, M3.4, M3.5):
      y_rec = causal scan of xbar along the whole sequence - trapezoid diagonal term        (5)
      y_mat = (M o q k^T) xbar - the same diagonal term, M the two-sided (or causal) decay
              mask, on windows of `matrix_max_tokens` tokens                              (6)
      y = fuse(y_rec, y_mat) + D x      sum | sigma(g) y_rec + (1 - sigma(g)) y_mat | one   (7)
    y = sum_k unscan_k(y);  out = out_proj(RMSNormGated(y, z)), block: x_in + DropPath(out) (8)

How (6) is computed: the two-sided mask is causal below the diagonal and mirrored above, so
(M o q k^T) xbar = causal scan + anticausal scan - diagonal (`scans.two_sided`, eq. TS.1): two
linear scans per window instead of a (window x window) matrix. Both paths then share one set of
inputs and, when the sequence fits in one window, the causal scan itself. With `stack_scans`
the causal and the anticausal scan of the same inputs run as one scan call, the sequence and its
reversal stacked along the batch (TS.5): one call for both paths when L <= W, one for the
windowed pair when L > W (beside the whole-sequence causal scan of (5)); off by default (slower
on CPUs, not yet timed on GPUs). The slow twins: one call per scan, and the materialised matrix
of chapter 7 (`matrix_impl="materialised"`), each the same function.

Choices we made (the paper body is not public):
- A is a learned scalar per head (Mamba-2's A_log), not Mamba-3's data-dependent A_t: both paths
  then share one decay per head, and the matrix path stays a plain SSD matrix.
- The projections (1) are shared by the K directions (computed once per pixel, then gathered),
  unlike SS2D's per-direction x_proj; the directions differ by their order and causality.
- The matrix path uses the same rotated B, C and trapezoid weights as the recurrence (Mamba-3's
  parallel form); with `matrix_causal=False` its decay mask is two-sided,
  M_ts = exp(-|sum_{r in (s, t]} Delta_r A|), so every token is compared with every other one
  of its window. Above `matrix_max_tokens` tokens the windows are consecutive runs of that many
  tokens along the scan order (a block-diagonal M); a Hilbert window is a compact patch.

Glossary (code -> symbol): h heads, p headdim, N d_state, g ngroups, K directions, L = H W,
W window, `A_log` -> log(-A_h), `dt_bias` -> Delta bias, `B_bias`/`C_bias` -> b_B, b_C, `trap`
-> lambda logit, `angles` -> theta (rotary angles, shared by heads), `gate` -> g (d_inner,),
`q`, `k` -> C, B after bias and rotation (per head), `xbar` -> the weighted input of the scans,
`log_a` -> Delta A, `shifted` -> DT_{t+1} (1 - lambda_{t+1}) (trapezoid, M3.6).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mambaadv2_ref.blocks.common import DirectionScanner, DropPath
from mambaadv2_ref.blocks.compiled import compile_mixer, memory_budget
from mambaadv2_ref.blocks.norms import RMSNorm, RMSNormGated
from mambaadv2_ref.blocks.ss2d import dt_bias_init
from mambaadv2_ref.config import MATRIX_IMPLS, PATH_MODES
from mambaadv2_ref.scanning import StagePlan
from mambaadv2_ref.scans.mamba3 import prepare
from mambaadv2_ref.scans.ssd import expand_groups, ssd_matrix_core
from mambaadv2_ref.scans.two_sided import (
    diagonal_scores,
    ssd_causal_anticausal_core,
    ssd_causal_core,
    ssd_two_sided_core,
    two_sided_from_scans,
)


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
    """Entries of the materialised matrix path's mask per head and sequence: L * min(L, W)."""
    return L * min(L, max_tokens)


def scans_in_float32(enabled: bool, device_type: str):
    """The context the HSS scans run in: autocast switched off when `enabled` and autocast is
    on for `device_type` (`scan_float32`), so that their inputs stay float32 and their matrix
    products run in float32 instead of casting back and forth to bf16; else a no-op. Outside
    autocast both are the same computation."""
    if enabled and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return nullcontext()


class HSS(nn.Module):
    """The HSS mixer (eqs. 1-8 without the residual): K-direction dual-path SSD / Mamba-3.

    Args:
        dim: C, model width.
        plan: StagePlan (curve, num_directions) of the stage.
        cfg: the model config (`ModelConfig`); the block reads d_state (N), headdim (p),
            expand (d_inner = expand C), ngroups (g), chunk_size (Q), path_mode, matrix_causal,
            matrix_max_tokens (W), matrix_impl, stack_scans, checkpoint_matrix, scan_float32,
            position_aware, rope_fraction, dwconv, bc_norm and backend.
    """

    def __init__(self, dim: int, plan: StagePlan, cfg):
        super().__init__()
        d_inner, headdim, ngroups, d_state = cfg.expand * dim, cfg.headdim, cfg.ngroups, cfg.d_state
        if cfg.path_mode not in PATH_MODES:
            raise ValueError(f"path_mode must be one of {list(PATH_MODES)}, got {cfg.path_mode!r}")
        if cfg.matrix_impl not in MATRIX_IMPLS:
            raise ValueError(f"matrix_impl must be one of {list(MATRIX_IMPLS)}, got "
                             f"{cfg.matrix_impl!r}")
        if d_inner % headdim or (d_inner // headdim) % ngroups:
            raise ValueError(f"headdim={headdim} must divide expand * dim = {d_inner} into a "
                             f"number of heads divisible by ngroups={ngroups}")
        h = d_inner // headdim
        self.cfg = cfg
        self.d_inner, self.heads, self.headdim, self.d_state, self.ngroups = (
            d_inner, h, headdim, d_state, ngroups)
        self.num_angles = int(d_state * cfg.rope_fraction) // 2 if cfg.position_aware else 0
        self.split_sizes = [d_inner, ngroups * d_state, ngroups * d_state, h,
                            h if cfg.position_aware else 0, self.num_angles]  # x B C dt trap th
        self.scanner = DirectionScanner(plan)
        self.in_proj = nn.Linear(dim, d_inner + sum(self.split_sizes), bias=False)  # z first
        self.conv2d = (nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
                       if cfg.dwconv else None)
        if cfg.bc_norm:
            self.B_norm, self.C_norm = RMSNorm(d_state), RMSNorm(d_state)
            self.B_bias = nn.Parameter(torch.ones(h, d_state))
            self.C_bias = nn.Parameter(torch.ones(h, d_state))
        self.A_log = nn.Parameter(torch.log(torch.empty(h).uniform_(1, 16)))
        self.dt_bias = nn.Parameter(dt_bias_init((h,)))
        self.D = nn.Parameter(torch.ones(h))
        self.gate = nn.Parameter(torch.zeros(d_inner)) if cfg.path_mode == "gate" else None
        self.norm = RMSNormGated(d_inner, group_size=d_inner // ngroups)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Equations (1)-(8) on u (B, H, W, C), already layer-normed; returns (B, H, W, C)."""
        if u.ndim != 4:
            raise ValueError(f"u must be (B, H, W, C), got {tuple(u.shape)}")
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
        if self.cfg.bc_norm:  # eq. (3); the biases are added per head in `scan_inputs`
            B, C = self.B_norm(B), self.C_norm(C)
        delta = F.softplus(dt + self.dt_bias)  # eq. (4), (BK, L, h)
        A = -torch.exp(self.A_log)
        with scans_in_float32(self.cfg.scan_float32, u.device.type):
            y = self.dual_paths(x, delta, A, B, C, trap, angles)  # eqs. (5)-(6), fused: (7)
        y = y + self.D[:, None] * x  # eq. (7)
        y = y.reshape(Bsz, -1, H * W, self.d_inner)  # (B, K, L, d_inner)
        y = self.scanner.merge(y, H, W)  # eq. (8)
        return self.out_proj(self.norm(y, z))

    def scan_inputs(self, x, delta, A, B, C, trap, angles):
        """The inputs both paths scan: q, k (C, B biased, rotated), xbar, log_a, shifted.

        Args:
            x (BK, L, h, p); delta (BK, L, h); A (h,); B, C (BK, L, g, N); trap (BK, L, h) and
            angles (BK, L, n_angles) (empty without position awareness).
        Returns:
            q, k (BK, L, h, N) (g groups without bc_norm and position awareness); xbar
            (BK, L, h, p); log_a (BK, L, h); shifted (BK, L, h) or None, in the compute dtype.
        Implements: (M3.1), (M3.4), (M3.5) with position awareness; else SSD's xbar = Delta x.
        """
        if self.cfg.position_aware:
            zeros = B.new_zeros(self.heads, self.d_state)
            q, k, v, log_a, gamma, shifted, _ = prepare(
                C, B, x, (delta * A).transpose(1, 2), delta.transpose(1, 2), trap.transpose(1, 2),
                self.C_bias if self.cfg.bc_norm else zeros,
                self.B_bias if self.cfg.bc_norm else zeros,
                angles[:, :, None, :].expand(-1, -1, self.heads, -1))
            return q, k, v * (gamma + shifted)[..., None], log_a, shifted
        if self.cfg.bc_norm:
            B, C = expand_groups(B, self.heads) + self.B_bias, expand_groups(C, self.heads) + \
                self.C_bias
        dtype = torch.promote_types(x.dtype, torch.float32)
        return (C.to(dtype), B.to(dtype), (delta[..., None] * x).to(dtype),
                (delta * A).to(dtype), None)

    def dual_paths(self, x, delta, A, B, C, trap, angles) -> torch.Tensor:
        """The recurrence path (5) and the matrix path (6) from one set of scan inputs, fused (7).

        Args: as `scan_inputs`. Returns (BK, L, h, p), without D x.
        """
        q, k, xbar, log_a, shifted = self.scan_inputs(x, delta, A, B, C, trap, angles)
        if not self.cfg.scan_float32:
            q, k, xbar = q.to(x.dtype), k.to(x.dtype), xbar.to(x.dtype)  # bf16 under autocast
        diagonal = 0.0  # the trapezoid's previous-step term counted at s = t (M3.6)
        if shifted is not None:
            qk = diagonal_scores(k, q, self.heads)  # (BK, L, h)
            diagonal = (qk * shifted)[..., None] * x
        fits = x.shape[1] <= self.cfg.matrix_max_tokens
        shared = fits and self.cfg.matrix_impl == "scan"  # one causal scan serves both paths
        checkpointed = self.cfg.checkpoint_matrix and not self.cfg.checkpoint_block
        causal = y_mat = y_rec = None
        if (shared and self.cfg.stack_scans and self.cfg.path_mode != "recurrence"
                and not self.cfg.matrix_causal):  # both paths' scans in one call (TS.5),
            # recomputed with checkpoint_matrix in the backward pass, its causal half too
            causal, y_mat = recomputed(checkpointed, self.stacked_paths, xbar, log_a, k, q)
        elif self.cfg.path_mode != "matrix" or shared:
            causal = ssd_causal_core(xbar, log_a, k, q, self.cfg.chunk_size, self.cfg.backend)
        if self.cfg.path_mode != "matrix":
            y_rec = causal - diagonal  # eq. (5)
        if self.cfg.path_mode != "recurrence" and y_mat is None:
            path = (self.matrix_path if self.cfg.matrix_impl == "scan"
                    else self.matrix_path_materialised)
            if shifted is not None and not fits:  # each window is its own sequence (6): the
                # trapezoid term of a window's last token, which belongs to the next token,
                # leaves the window (DT_{t+1} := 0 there, M3.6)
                size = self.cfg.matrix_max_tokens
                ends = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
                ends[size - 1::size] = True
                cut = shifted * ends[:, None]  # (BK, L, h)
                xbar = xbar - (cut[..., None] * x).to(xbar.dtype)
                diagonal = (qk * (shifted - cut))[..., None] * x
            y_mat = recomputed(checkpointed, path, xbar, log_a, k, q, causal if fits else None)
        if y_mat is not None:
            y_mat = y_mat - diagonal
        return self.fuse(y_rec, y_mat)  # eq. (7)

    def stacked_paths(self, xbar, log_a, k, q) -> tuple[torch.Tensor, torch.Tensor]:
        """When L <= W: the causal scan of the recurrence path and the two-sided matrix path from
        one scan call.

        Args:
            xbar (b, L, h, p); log_a (b, L, h); k, q (b, L, h, N), L <= W.
        Returns:
            causal (b, L, h, p): (5) without the diagonal term; (b, L, h, p): (6) without it.
        Implements: (TS.5), then (TS.1) on the whole sequence (one window).
        """
        causal, anticausal = ssd_causal_anticausal_core(xbar, log_a, k, q, self.cfg.chunk_size,
                                                        self.cfg.backend)
        return causal, two_sided_from_scans(causal, anticausal, xbar, k, q)

    def matrix_path(self, xbar, log_a, k, q, causal=None) -> torch.Tensor:
        """(M o q k^T) xbar in windows of W tokens by two scans per window (TS.1): O(L); with
        `stack_scans` the windows' causal and anticausal scans are one call (TS.5).

        Args:
            xbar (b, L, h, p); log_a (b, L, h); k, q (b, L, h, N); causal: the causal scan of
                the same inputs when L <= W (reused, not recomputed).
        Returns:
            (b, L, h, p).
        Implements: eq. (6) without the diagonal term, by (TS.1) on each window.
        """
        b, L = xbar.shape[:2]
        size, Q, backend = self.cfg.matrix_max_tokens, self.cfg.chunk_size, self.cfg.backend
        if L > size:
            xbar, log_a, k, q = (windows(t, size) for t in (xbar, log_a, k, q))
        if self.cfg.matrix_causal:
            y = causal if causal is not None else ssd_causal_core(xbar, log_a, k, q, Q, backend)
        else:
            y = ssd_two_sided_core(xbar, log_a, k, q, Q, backend, causal=causal,
                                   stack=self.cfg.stack_scans)
        return unwindows(y, b, L) if L > size else y

    def matrix_path_materialised(self, xbar, log_a, k, q, causal=None) -> torch.Tensor:
        """Slow twin of `matrix_path`: the (W x W) matrix (M o q k^T) materialised per window.

        Args: as `matrix_path` (`causal` is ignored). Returns (b, L, h, p).
        Implements: eq. (6) without the diagonal term, as (SSD.3) with the two-sided mask.
        """
        b, L = xbar.shape[:2]
        size = self.cfg.matrix_max_tokens
        if L > size:
            xbar, log_a, k, q = (windows(t, size) for t in (xbar, log_a, k, q))
        y = ssd_matrix_core(xbar, log_a, k, q, causal=self.cfg.matrix_causal).to(xbar.dtype)
        return unwindows(y, b, L) if L > size else y

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
        """Sizes of one forward at grid H x W: tokens, directions, scanned tokens, scans per
        direction, scan calls (the directions are folded into the batch of each call; with
        `stack_scans` a causal-anticausal pair is one call, TS.5), and the entries of the mask
        that the materialised matrix path would build (per head, summed over directions)."""
        L, K, size = H * W, self.scanner.num_directions, self.cfg.matrix_max_tokens
        recurrence, matrix = self.cfg.path_mode != "matrix", self.cfg.path_mode != "recurrence"
        two_sided = matrix and not self.cfg.matrix_causal
        scans_per_direction = int(recurrence or (matrix and L <= size))  # the whole-sequence scan
        if matrix:  # a windowed causal scan when windows are cut; the anticausal one if two-sided
            scans_per_direction += (L > size) + two_sided
        return {"tokens": L, "directions": K, "scanned_tokens": L * K,
                "scans_per_direction": scans_per_direction,
                "scan_calls": scans_per_direction - (two_sided and self.cfg.stack_scans),
                "matrix_window": min(L, size),
                "matrix_entries": K * matrix_cost(L, size) if matrix else 0}


class HSSBlock(nn.Module):
    """HSS block with its residual: x + DropPath(HSS(LayerNorm(x))) (eq. 8); with
    `cfg.checkpoint_block` the whole block is recomputed in the backward pass (it keeps only
    its input: same values and gradients, one more forward); with `cfg.compile_mixer` the HSS
    mixer runs compiled (`blocks.compiled`; the residual and DropPath stay eager), each call
    under `cfg.compile_memory_budget` (`compiled.memory_budget`: the partition of its forward
    and backward is chosen when it compiles, at a call).

    Args:
        dim: C.  plan: StagePlan.  cfg: the model config (see HSS).  drop_path: rate.
    """

    def __init__(self, dim: int, plan: StagePlan, cfg, drop_path: float = 0.0):
        super().__init__()
        self.checkpointed = cfg.checkpoint_block
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.hss = HSS(dim, plan, cfg)
        self.compiled = cfg.compile_mixer != "off"
        self.budget = cfg.compile_memory_budget
        if self.compiled:
            compile_mixer(self.hss, cfg.compile_mixer, self.budget)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (B, H, W, C). Returns (B, H, W, C)."""
        return recomputed(self.checkpointed, self.residual, x)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """x + DropPath(HSS(LayerNorm(x))) (eq. 8)."""
        # the scan orders of this grid are built (once) here, eagerly: a compiled mixer then
        # reads them from the scanner's cache instead of tracing the curve construction
        self.hss.scanner.orders(x.shape[1], x.shape[2], x.device)
        u = self.norm(x)
        with memory_budget(self.budget) if self.compiled else nullcontext():
            y = self.hss(u)
        return x + self.drop_path(y)
