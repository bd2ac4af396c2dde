"""Checks of chapters 6-10: scan curves, the HSS block, the DSS module, scan plans, the model.

The blocks and the model are imported inside the checks that use them: importing them loads timm,
which takes seconds, and a student of chapters 0-6 should not wait for it.
"""

from __future__ import annotations

import torch

from mambaadv2_ref.checks.basics import trainable_count
from mambaadv2_ref.checks.harness import (
    Exercise,
    Wrong,
    compare_functions,
    compare_number,
    random_cases,
    require_keys,
    zero_and_nonzero,
)
from mambaadv2_ref.config import preset, stage_sizes
from mambaadv2_ref.scanning import (
    StagePlan,
    build_orders,
    curve_order,
    get_plan,
    locality_stats,
    neighbour_distance,
    plan_cost,
    resolve_plan,
)
from mambaadv2_ref.scans import segsum_two_sided


def check_spiral(answer) -> None:
    """A clockwise inward spiral: a permutation from (0, 0), heading right, never turning left."""
    if not callable(answer):
        raise Wrong(f"the answer must be a function, got {type(answer).__name__}")
    for H, W in ((1, 1), (1, 5), (4, 1), (3, 4), (5, 5), (6, 3), (16, 16)):
        try:
            order = torch.as_tensor(answer(H, W)).long().flatten()
        except Exception as err:  # the student's code
            raise Wrong(f"{H}x{W}: your function raised {type(err).__name__}: {err}") from None
        if sorted(order.tolist()) != list(range(H * W)):
            raise Wrong(f"{H}x{W}: the order is not a permutation of 0 .. {H * W - 1}")
        if order[0] != 0:
            raise Wrong(f"{H}x{W}: the spiral must start at the top-left pixel (index 0)")
        moves = torch.stack([order // W, order % W], dim=1).diff(dim=0)
        if (moves.abs().sum(1) != 1).any():
            raise Wrong(f"{H}x{W}: some step is not to a 4-neighbour")
        heading = torch.tensor([0, 1])                                  # right first
        for k, move in enumerate(moves):
            right_turn = torch.stack([heading[1], -heading[0]])        # clockwise
            if not (torch.equal(move, heading) or torch.equal(move, right_turn)):
                raise Wrong(f"{H}x{W}: step {k} goes back or turns anticlockwise")
            heading = move


def check_spiral_gap(answer) -> None:
    got = require_keys(answer, ("spiral", "hilbert"), "your answer")
    hilbert = locality_stats(curve_order("hilbert", 16, 16), 16, 16)["neighbour_distance_geo"]
    compare_number(got["hilbert"], hilbert, 1e-9, "your Hilbert gap")
    if got["spiral"] <= hilbert:
        raise Wrong("a spiral keeps neighbours on different rings far apart: its geometric gap "
                    "should come out larger than Hilbert's")


def check_matrix_paths(answer) -> None:
    zero_and_nonzero(answer, ("causal", 1e-4, "with matrix_causal=True the matrix path computes "
                              "the same operator as the recurrence: did both blocks start from "
                              "the same seed?"),
                     ("two_sided", 1e-3, "the two-sided matrix path should differ from the "
                      "recurrence: did you set matrix_causal=False?"))


def _mask_inputs(g: torch.Generator, shape: tuple) -> tuple:
    L, h = shape
    delta = torch.nn.functional.softplus(torch.randn(L, h, generator=g, dtype=torch.float64))
    return delta, -torch.rand(h, generator=g, dtype=torch.float64) - 0.1


def check_two_sided_mask(answer) -> None:
    compare_functions(answer, lambda delta, A: torch.exp(segsum_two_sided(
        (delta * A).T)).permute(1, 2, 0), random_cases(_mask_inputs, [(1, 1), (20, 2), (64, 4)]),
        1e-9, 1e-12)


def _filter_inputs(g: torch.Generator, shape: tuple) -> tuple:
    B, C, H, W = shape
    return (torch.randn(B, C, H, W, generator=g), torch.randn(C, 2, 17, 9, generator=g))


def check_fft_filter(answer) -> None:
    from mambaadv2_ref.blocks.freq_conv import fft_filter

    compare_functions(answer, fft_filter, random_cases(_filter_inputs, [
        (1, 3, 8, 10), (2, 4, 16, 16), (1, 2, 5, 7)]), 1e-4, 1e-5)


def _dss_params(use_fft: bool) -> int:
    from mambaadv2_ref.blocks.dss import DSSModule

    cfg = preset("tiny", d_state=8, headdim=8, use_fft=use_fft)
    module = DSSModule(32, 2, StagePlan("hilbert", 2), cfg)
    return sum(p.numel() for p in module.parameters())


def check_dss_params(answer) -> None:
    got = require_keys(answer, ("with_fft", "without_fft"), "your answer")
    for key, use_fft in (("with_fft", True), ("without_fft", False)):
        compare_number(got[key], _dss_params(use_fft), 0, f"your {key!r} count")


def _paper_sizes() -> list[tuple[int, int]]:
    """Decoder grid sizes of the paper preset, deepest first."""
    return stage_sizes(preset("paper").image_size)


def check_quarter_plan(answer) -> None:
    if not isinstance(answer, dict) or "plan" not in answer or "ratio" not in answer:
        raise Wrong("give a dict with your 'plan' (a ScanPlan) and the 'ratio' you measured")
    try:
        plan = resolve_plan(answer["plan"], 4)
    except (TypeError, ValueError) as err:
        raise Wrong(f"your plan is not a 4-stage plan: {err}") from None
    if plan.stages[0].num_directions != 8:
        raise Wrong("the deepest (8x8) stage must keep 8 directions")
    sizes = _paper_sizes()
    ratio = (plan_cost(plan, sizes)[-1]["scanned_tokens"]
             / plan_cost(get_plan("uniform"), sizes)[-1]["scanned_tokens"])
    compare_number(answer["ratio"], ratio, 1e-6, "your ratio (for your plan)")
    if ratio > 0.25:
        raise Wrong("your plan reads more than a quarter of the uniform plan's tokens")


def check_matrix_cost(answer) -> None:
    got = require_keys(answer, ("uniform", "decay_deep"), "your answer")
    for name in got:
        rows = plan_cost(get_plan(name), _paper_sizes())[:-1]
        compare_number(got[name], sum(r["directions"] * r["tokens"] ** 2 for r in rows), 0,
                       f"your {name!r} sum")


def check_finest_share(answer) -> None:
    compare_number(answer, 3 * 4**3 / (4**4 - 1), 1e-3, "your share")


def check_custom_config(answer) -> None:
    if not hasattr(answer, "plan") or not callable(answer.plan):
        raise Wrong(f"give the ModelConfig that preset returns, got {type(answer).__name__}")
    if answer.profile != "tiny" or answer.model != "mambaadv2":
        raise Wrong("build it with preset('tiny', ...) for MambaADv2")
    want = [("hilbert", 4), ("hilbert", 4), ("snake", 2), ("snake", 2)]
    got = [(st.curve, st.num_directions) for st in answer.plan().stages]
    if got != want:
        raise Wrong(f"its plan reads {got}, deepest stage first")


def check_path_params(answer) -> None:
    got = require_keys(answer, ("sum", "recurrence", "gate"), "your answer")
    for mode, value in got.items():
        compare_number(value, trainable_count(path_mode=mode), 0, f"your {mode!r} count")


def _map_inputs(g: torch.Generator, shape: tuple) -> tuple:
    b, size, scales = shape
    enc = [torch.randn(b, 8 * 2**k, 16 // 2**k, 16 // 2**k, generator=g) for k in range(scales)]
    dec = [f + 0.5 * torch.randn(f.shape, generator=g) for f in enc]
    return enc, dec, size


def check_cosine_maps(answer) -> None:
    from mambaadv2_ref.model.anomaly_map import cosine_distance_maps

    compare_functions(answer, cosine_distance_maps, random_cases(_map_inputs, [
        (2, (32, 32), 3), (1, (20, 24), 1)]), 1e-4, 1e-5)


EXERCISES = {
    "ch06.ex1": Exercise("conceptual", "merging a scan gives K x"),
    "ch06.ex2": Exercise("numeric", "the raster gap with two directions", lambda a: compare_number(
        a, neighbour_distance(build_orders("raster", 8, 8, 2), 8, 8), 1e-9, "your gap"),
        "count the 112 neighbour pairs of an 8x8 grid: how far apart are the horizontal and "
        "the vertical ones, in the best of the two directions?"),
    "ch06.ex3": Exercise("conceptual", "a checkerboard argument"),
    "ch06.ex4": Exercise("code", "a spiral order", check_spiral, "return a LongTensor (H*W,) of "
                         "row-major indices: along the top row, down the right column, back "
                         "along the bottom, up the left, then the next ring"),
    "ch06.ex5": Exercise("measure", "spiral against Hilbert", check_spiral_gap,
                         "locality_stats(order, 16, 16)['neighbour_distance_geo'] for both"),
    "ch07.ex1": Exercise("measure", "causal or two-sided matrix path", check_matrix_paths,
                         "build three HSS blocks from the same seed (recurrence; matrix with "
                         "matrix_causal=True; matrix with matrix_causal=False) and compare "
                         "outputs on one input"),
    "ch07.ex2": Exercise("conceptual", "same receptive field, different cost"),
    "ch07.ex3": Exercise("numeric", "what a window lets the matrix path see", lambda a: (
        compare_number(a, 64.5 / 256, 0.5 / 256 + 1e-9, "your fraction")),  # 64 or 65 pixels
        "the chapter's receptive_field with path_mode='matrix', matrix_max_tokens=64; count "
        "pixels with a gradient above 1e-6"),
    "ch07.ex4": Exercise("code", "a stable two-sided mask", check_two_sided_mask,
                         "mask[t, s, h] = exp of minus the sum of delta[r, h] * |A[h]| over r "
                         "between s and t, excluding the smaller end; no cumsum differences"),
    "ch08.ex1": Exercise("conceptual", "circular borders"),
    "ch08.ex2": Exercise("code", "the FFT filter", check_fft_filter,
                         "rfft2 with norm='ortho', multiply by sample_filter(grid, H, W), "
                         "irfft2 with s=(H, W) and norm='ortho'"),
    "ch08.ex3": Exercise("numeric", "multiply-adds of a 7x7 depthwise conv", lambda a: (
        compare_number(a, 64 * 64 * 64 * 7 * 7, 0, "your count")), "one multiply-add per kernel "
        "tap, per output pixel, per channel"),
    "ch08.ex4": Exercise("measure", "what the FFT path costs in parameters", check_dss_params,
                         "DSSModule(32, 2, StagePlan('hilbert', 2), preset('tiny', d_state=8, "
                         "headdim=8, use_fft=...)); sum p.numel() over its parameters"),
    "ch08.ex5": Exercise("conceptual", "a shift as a filter"),
    "ch09.ex1": Exercise("measure", "a plan at a quarter of the cost", check_quarter_plan,
                         "plan_cost(plan, PAPER_SIZES)[-1]['scanned_tokens'] over the uniform "
                         "plan's"),
    "ch09.ex2": Exercise("numeric", "the matrix path's cost per plan", check_matrix_cost,
                         "for each stage: directions x tokens^2, from plan_cost's rows"),
    "ch09.ex3": Exercise("numeric", "the finest stage's share", check_finest_share,
                         "tokens per stage grow by 4; sum a geometric series"),
    "ch09.ex4": Exercise("code", "a custom plan in a config", check_custom_config,
                         "preset('tiny', scan_plan={...}) with 'stages' deepest first"),
    "ch10.ex1": Exercise("conceptual", "MSE loss, cosine map"),
    "ch10.ex2": Exercise("conceptual", "the unsupervised stage 0"),
    "ch10.ex3": Exercise("measure", "parameters of the path modes", check_path_params,
                         "build_model('mambaadv2', 'tiny', pretrained=False, path_mode=...) after "
                         "torch.manual_seed(0); count model.trainable_parameters()"),
    "ch10.ex4": Exercise("code", "the summed cosine distances", check_cosine_maps,
                         "per scale 1 - cosine similarity over channels, bilinear upsampling "
                         "with align_corners=True to `size`, then the sum; no smoothing"),
}
