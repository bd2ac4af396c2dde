"""Images to sequences: scan curves, scan directions (scan / unscan), locality, progressive plans.

    curves       curve_order(name, H, W): raster, snake, zigzag, zorder, hilbert
    directions   build_orders, scan, unscan, inverse (MambaAD's 8 directions)
    locality     step lengths and neighbour distance of an order
    progressive  StagePlan / ScanPlan presets per decoder stage, plan_cost
"""

from mambaadv2_ref.scanning.curves import CURVES, curve_order
from mambaadv2_ref.scanning.directions import (
    NUM_DIRECTIONS,
    VIEWS,
    build_orders,
    direction_names,
    inverse,
    scan,
    unscan,
)
from mambaadv2_ref.scanning.locality import locality_stats, locality_table, neighbour_distance
from mambaadv2_ref.scanning.progressive import (
    PLAN_NAMES,
    ScanPlan,
    StagePlan,
    get_plan,
    plan_cost,
    resolve_plan,
)

__all__ = [
    "CURVES", "NUM_DIRECTIONS", "PLAN_NAMES", "VIEWS", "ScanPlan", "StagePlan", "build_orders",
    "curve_order", "direction_names", "get_plan", "inverse", "locality_stats", "locality_table",
    "neighbour_distance", "plan_cost", "resolve_plan", "scan", "unscan",
]
