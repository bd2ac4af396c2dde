"""Semantics-adaptive progressive scanning: a scan plan per decoder stage, and its cost.

MambaADv2's abstract speaks of a "semantics-adaptive progressive scanning strategy that decays
scanning complexity along the feature pyramid"; the paper body is not public. We read it as a
plan: one (curve, number of directions) per decoder stage, deep/coarse stage first (8x8 at 256 px)
to shallow/fine last (64x64). Which end gets more directions is our choice, so both are presets
and the ablation picks the default (book appendix A.2.2, item (d)):

    uniform        hilbert x 8 at every stage (MambaAD v1)
    decay_deep     8, 8, 4, 2 directions: many at the cheap coarse stages, few at the large fine
                   ones (the compute-driven reading: cost decays where tokens are many)
    decay_shallow  2, 4, 8, 8 directions: the opposite reading (few at the semantic deep stages)
    curve_decay    hilbert, hilbert, snake, raster, 8 directions each: the curve's complexity,
                   not the direction count, decays towards the fine stages

The scanning cost of a stage is the number of tokens read by the scans, L_s * K_s:

    cost = sum_s H_s * W_s * K_s                                                     (9.1)

Glossary: s stage index (0 = deepest); H_s, W_s stage grid; L_s = H_s * W_s tokens;
K_s number of directions; plan = ScanPlan.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mambaadv2_ref.scanning.curves import CURVES
from mambaadv2_ref.scanning.directions import NUM_DIRECTIONS, build_orders


@dataclass(frozen=True)
class StagePlan:
    """How one decoder stage is scanned.

    Args:
        curve: scan curve name, one of curves.CURVES.
        num_directions: K in {1, 2, 4, 8} (see directions.build_orders).

    Implements: one stage's term H_s W_s K_s of the scanning cost (9.1).
    """

    curve: str = "hilbert"
    num_directions: int = 8

    def __post_init__(self):
        if self.curve not in CURVES:
            raise ValueError(f"curve must be one of {list(CURVES)}, got {self.curve!r}")
        if self.num_directions not in NUM_DIRECTIONS:
            raise ValueError(f"num_directions must be one of {list(NUM_DIRECTIONS)}, "
                             f"got {self.num_directions!r}")

    def orders(self, H: int, W: int) -> torch.Tensor:
        """The (K, H*W) scan orders of this stage at grid size H x W (directions.build_orders)."""
        return build_orders(self.curve, H, W, self.num_directions)


@dataclass(frozen=True)
class ScanPlan:
    """One StagePlan per decoder stage, deepest (coarsest) stage first.

    Args:
        stages: tuple of StagePlan, len = number of decoder stages.
        name: label for tables and plots.
    """

    stages: tuple[StagePlan, ...]
    name: str = "custom"

    def __post_init__(self):
        if not isinstance(self.stages, tuple) or not self.stages:
            raise ValueError(f"stages must be a non-empty tuple of StagePlan, got {self.stages!r}")
        for s, stage in enumerate(self.stages):
            if not isinstance(stage, StagePlan):
                raise TypeError(f"stage {s} must be a StagePlan, got {type(stage).__name__}")

    def __len__(self) -> int:
        return len(self.stages)

    def to_dict(self) -> dict:
        """JSON-ready form: {"name": ..., "stages": [{"curve": ..., "num_directions": ...}]}."""
        return {"name": self.name,
                "stages": [{"curve": st.curve, "num_directions": st.num_directions}
                           for st in self.stages]}

    @classmethod
    def from_dict(cls, d: dict) -> ScanPlan:
        """Inverse of to_dict; errors name the stage and the bad value."""
        if not isinstance(d, dict) or not isinstance(d.get("stages"), list | tuple):
            raise ValueError(f"a plan dict needs a list under 'stages', got {d!r}")
        stages = []
        for s, stage in enumerate(d["stages"]):
            try:
                if not isinstance(stage, dict):
                    raise TypeError(f"expected a dict with curve and num_directions, got {stage!r}")
                stages.append(StagePlan(**stage))
            except (TypeError, ValueError) as err:
                raise ValueError(f"stage {s}: {err}") from err
        return cls(tuple(stages), name=d.get("name", "custom"))


PLAN_NAMES: tuple[str, ...] = ("uniform", "decay_deep", "decay_shallow", "curve_decay")


def get_plan(name: str, num_stages: int = 4) -> ScanPlan:
    """A named preset plan for `num_stages` decoder stages (deepest first).

    Directions of decay_deep are 8 at the two deepest stages, then halved per stage (never
    below 1); decay_shallow is its mirror; curve_decay uses hilbert up to the last two stages,
    then snake, then raster (for fewer than 3 stages: hilbert, then raster).

    Args:
        name: one of PLAN_NAMES.
        num_stages: number of decoder stages (4 in MambaAD/MambaADv2).
    Returns:
        ScanPlan with len == num_stages; for 4 stages exactly the presets in the module docstring.
    Implements: the plans of section 2 item (d) (our reading of the abstract).
    """
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 1:
        raise ValueError(f"num_stages must be a positive int, got {num_stages!r}")
    decaying = [max(8 >> max(s - 1, 0), 1) for s in range(num_stages)]  # 8, 8, 4, 2, 1, ...
    if name == "uniform":
        stages = [StagePlan("hilbert", 8) for _ in range(num_stages)]
    elif name == "decay_deep":
        stages = [StagePlan("hilbert", k) for k in decaying]
    elif name == "decay_shallow":
        stages = [StagePlan("hilbert", k) for k in reversed(decaying)]
    elif name == "curve_decay":
        tail = ["snake", "raster"] if num_stages >= 3 else ["raster"][:num_stages - 1]
        curves = ["hilbert"] * (num_stages - len(tail)) + tail
        stages = [StagePlan(curve, 8) for curve in curves]
    else:
        raise ValueError(f"plan name must be one of {list(PLAN_NAMES)}, got {name!r}")
    return ScanPlan(tuple(stages), name=name)


def resolve_plan(plan: str | dict | ScanPlan, num_stages: int) -> ScanPlan:
    """Accept a preset name, a to_dict() dict or a ScanPlan; check it has num_stages stages."""
    if isinstance(plan, str):
        plan = get_plan(plan, num_stages)
    elif isinstance(plan, dict):
        plan = ScanPlan.from_dict(plan)
    elif not isinstance(plan, ScanPlan):
        raise TypeError(f"plan must be a preset name, a dict or a ScanPlan, got "
                        f"{type(plan).__name__}")
    if len(plan) != num_stages:
        raise ValueError(f"plan {plan.name!r} has {len(plan)} stages, the decoder has {num_stages}")
    return plan


def plan_cost(plan: ScanPlan, stage_sizes: list[tuple[int, int]]) -> list[dict]:
    """Scanning cost of a plan per stage and in total.

    Args:
        plan: a ScanPlan (or a preset name) with one stage per entry of stage_sizes.
        stage_sizes: [(H_s, W_s), ...] grid size of each decoder stage, deepest first.
    Returns:
        list of dicts, one per stage with stage, size "HxW", curve, tokens (H_s W_s),
        directions (K_s) and scanned_tokens (H_s W_s K_s), then a last "total" row summing
        tokens, scanned_tokens and (per stage) directions.
    Implements: eq. (9.1).
    """
    plan = resolve_plan(plan, len(stage_sizes)) if isinstance(plan, str) else plan
    if not isinstance(plan, ScanPlan):
        raise TypeError(f"plan must be a ScanPlan or a preset name, got {type(plan).__name__}")
    if len(stage_sizes) != len(plan):
        raise ValueError(f"stage_sizes must have one (H, W) per stage ({len(plan)}), "
                         f"got {len(stage_sizes)}")
    rows = []
    for s, (stage, size) in enumerate(zip(plan.stages, stage_sizes, strict=True)):
        if (len(size) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                  for n in size)):
            raise ValueError(f"stage {s}: size must be (H, W) positive ints, got {size!r}")
        H, W = size
        rows.append({"stage": s, "size": f"{H}x{W}", "curve": stage.curve, "tokens": H * W,
                     "directions": stage.num_directions,
                     "scanned_tokens": H * W * stage.num_directions})
    rows.append({"stage": "total", "size": "", "curve": "",
                 "tokens": sum(r["tokens"] for r in rows),
                 "directions": sum(r["directions"] for r in rows),
                 "scanned_tokens": sum(r["scanned_tokens"] for r in rows)})
    return rows
