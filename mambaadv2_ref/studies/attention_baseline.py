"""The quadratic baseline of the resolution-scaling study: softmax attention in the HSS block.

Not MambaADv2: every HSS mixer of a built MambaADv2 decoder is replaced by one that keeps the
projections, the scan gather, the gated norm and the output projection, and puts per-head softmax
attention over all L tokens in place of both state space paths (eqs. 5-6 of the HSS block):

    y = softmax(C B^T / sqrt(N)) x                                                      (S.1)

so the decoder keeps its width and only the token mixer changes. Attention ignores the order of
the tokens, so the study scans one direction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mambaadv2_ref.blocks.hss import HSS, HSSBlock
from mambaadv2_ref.scans.ssd import expand_groups


class AttentionHSS(HSS):
    """An HSS mixer whose two paths are replaced by softmax attention (S.1)."""

    def dual_paths(self, x, delta, A, B, C, trap, angles) -> torch.Tensor:
        """Per head softmax(C B^T / sqrt(N)) x over all tokens, with C, B biased as the HSS
        block's (without bc_norm they stay per group).

        Args: as `HSS.dual_paths`: x (BK, L, h, p); B, C (BK, L, g, N). Returns (BK, L, h, p).
        Implements: (S.1).
        """
        if self.cfg.bc_norm:
            B, C = (expand_groups(B, self.heads) + self.B_bias,
                    expand_groups(C, self.heads) + self.C_bias)
        q, k = (expand_groups(M, self.heads).transpose(1, 2) for M in (C, B))
        y = F.scaled_dot_product_attention(q, k, x.transpose(1, 2).to(q.dtype))
        return y.transpose(1, 2).to(x.dtype)


def with_attention(net: nn.Module) -> nn.Module:
    """Replace the HSS mixer of every HSS block of `net` by an `AttentionHSS` of the same size
    (fresh weights: the study times it, it does not train it). Returns `net`."""
    for block in net.modules():
        if isinstance(block, HSSBlock):
            old = block.hss
            block.hss = AttentionHSS(old.in_proj.in_features, old.scanner.plan, old.cfg).to(
                old.in_proj.weight.device)
    return net
