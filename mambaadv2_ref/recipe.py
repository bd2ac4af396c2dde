"""MambaAD's optimisation recipe (book appendix A.1.4): AdamW with weight decay on matrices only,
and the learning-rate plan (the base rate, x0.1 from 80 % of the steps on).
"""

from __future__ import annotations

import torch


def lr_plan(num_steps: int, lr: float, decay_at: float = 0.8, decay: float = 0.1) -> list[dict]:
    """The learning-rate plan of `step_lr` as segments [{"from_step", "lr"}], for the run JSON."""
    first_decayed = next(t for t in range(num_steps + 1) if t >= decay_at * num_steps)
    return [{"from_step": 0, "lr": lr}, {"from_step": first_decayed, "lr": lr * decay}]


def step_lr(step: int, num_steps: int, lr: float, decay_at: float = 0.8,
            decay: float = 0.1) -> float:
    """Learning rate of step `step`: `lr`, times `decay` from `decay_at * num_steps` on.

    Implements: the single x0.1 StepLR decay at 80% of training (book appendix A.1).
    """
    return lr * decay if step >= decay_at * num_steps else lr


def param_groups(params, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on matrices/kernels, none on 1-D parameters (biases, norms).

    Implements: ADer's `get_optim` grouping (book appendix A.1).
    """
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float
                   ) -> torch.optim.AdamW:
    """AdamW(betas 0.9/0.999, eps 1e-8) over `param_groups` of the trainable parameters."""
    return torch.optim.AdamW(param_groups(model.parameters(), weight_decay), lr=lr,
                             betas=(0.9, 0.999), eps=1e-8)
