"""Tests of mambaadv2_ref.scanning: curves, directions (scan/unscan), locality, plans."""

import math

import pytest
import torch

from mambaadv2_ref.scanning import (
    CURVES,
    PLAN_NAMES,
    ScanPlan,
    StagePlan,
    build_orders,
    curve_order,
    direction_names,
    get_plan,
    inverse,
    locality_stats,
    locality_table,
    neighbour_distance,
    plan_cost,
    resolve_plan,
    scan,
    unscan,
)
from mambaadv2_ref.scanning.curves import gilbert_cells
from mambaadv2_ref.scanning.locality import step_lengths

SIZES = [(1, 1), (2, 2), (5, 7), (7, 5), (8, 8), (16, 12), (1, 9), (9, 1), (4, 6)]


# ---------------------------------------------------------------- slow, obviously correct twins
def classical_hilbert_cells(n):
    """Textbook index -> (x, y) Hilbert map of an n x n grid (n = 2^k), as (row, col) = (y, x)."""
    cells = []
    for d in range(n * n):
        x = y = 0
        t, s = d, 1
        while s < n:
            rx = 1 & (t // 2)
            ry = 1 & (t ^ rx)
            if ry == 0:
                if rx == 1:
                    x, y = s - 1 - x, s - 1 - y
                x, y = y, x
            x, y = x + s * rx, y + s * ry
            t //= 4
            s *= 2
        cells.append((y, x))
    return cells


def zigzag_loop(H, W):
    """JPEG zigzag written as MambaAD writes it, one anti-diagonal at a time, for any H x W."""
    seq = []
    for d in range(H + W - 1):
        if d % 2 == 1:  # down-left: row grows
            seq += [r * W + (d - r) for r in range(max(0, d - W + 1), min(d, H - 1) + 1)]
        else:  # up-right: column grows
            seq += [(d - c) * W + c for c in range(max(0, d - H + 1), min(d, W - 1) + 1)]
    return seq


def morton_loop(H, W):
    """Morton order by brute force: all codes of a big enough square, skipping missing pixels."""
    n = 1 << max(H, W).bit_length()
    cells = []
    for code in range(n * n):
        r = sum(((code >> (2 * i + 1)) & 1) << i for i in range(n.bit_length()))
        c = sum(((code >> (2 * i)) & 1) << i for i in range(n.bit_length()))
        if r < H and c < W:
            cells.append(r * W + c)
    return cells


def scan_loop(x, orders):
    b, L, C = x.shape
    y = torch.empty(b, orders.shape[0], L, C, dtype=x.dtype)
    for k in range(orders.shape[0]):
        for t in range(L):
            y[:, k, t] = x[:, orders[k, t]]
    return y


def unscan_loop(y, orders):
    b, K, L, C = y.shape
    out = torch.zeros(b, L, C, dtype=y.dtype)
    for k in range(K):
        for t in range(L):
            out[:, orders[k, t]] += y[:, k, t]
    return out


def mambaad_style_directions(x, curve):
    """MambaAD's HS encoder written with tensor views: x (b, C, H, W) -> (b, 8, C, L)."""
    b, C, H, W = x.shape
    views = [x, x.transpose(2, 3), torch.rot90(x, 1, dims=(2, 3)),
             torch.rot90(x, 1, dims=(2, 3)).transpose(2, 3)]
    seqs = [v.reshape(b, C, -1)[:, :, curve_order(curve, v.shape[2], v.shape[3])] for v in views]
    xs = torch.stack(seqs, dim=1)
    return torch.cat([xs, xs.flip(-1)], dim=1)


# ---------------------------------------------------------------- curves
@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("H,W", SIZES)
def test_every_curve_is_a_permutation(curve, H, W):
    seq = curve_order(curve, H, W)
    assert seq.dtype == torch.long and seq.shape == (H * W,)
    assert torch.equal(seq.sort().values, torch.arange(H * W))


def test_known_small_cases():
    assert curve_order("raster", 2, 3).tolist() == [0, 1, 2, 3, 4, 5]
    assert curve_order("snake", 3, 3).tolist() == [0, 1, 2, 5, 4, 3, 6, 7, 8]
    assert curve_order("zigzag", 3, 3).tolist() == [0, 1, 3, 6, 4, 2, 5, 7, 8]
    assert curve_order("zigzag", 2, 3).tolist() == [0, 1, 3, 4, 2, 5]
    assert curve_order("zorder", 2, 2).tolist() == [0, 1, 2, 3]
    assert curve_order("zorder", 4, 4).tolist() == [0, 1, 4, 5, 2, 3, 6, 7,
                                                    8, 9, 12, 13, 10, 11, 14, 15]
    # Morton order with the missing codes skipped: 3x3 keeps the 2x2 "Z" of the top-left block
    assert curve_order("zorder", 3, 3).tolist() == [0, 1, 3, 4, 2, 5, 6, 7, 8]
    assert curve_order("hilbert", 2, 2).tolist() == [0, 2, 3, 1]
    assert curve_order("hilbert", 4, 4).tolist() == [0, 1, 5, 4, 8, 12, 13, 9,
                                                     10, 14, 15, 11, 7, 6, 2, 3]


@pytest.mark.parametrize("H,W", SIZES)
def test_zigzag_and_zorder_match_loops(H, W):
    assert curve_order("zigzag", H, W).tolist() == zigzag_loop(H, W)
    assert curve_order("zorder", H, W).tolist() == morton_loop(H, W)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 64])
def test_hilbert_matches_the_classical_curve_on_power_of_two_squares(n):
    assert list(gilbert_cells(n, n)) == classical_hilbert_cells(n)


def test_hilbert_steps_are_all_4_adjacent_for_every_size_up_to_32():
    sizes = [(H, W) for H in range(1, 33) for W in range(1, 33)]
    for H, W in sizes + [(63, 64), (64, 63), (33, 50), (2, 61)]:
        cells = list(gilbert_cells(H, W))
        assert len(set(cells)) == H * W, (H, W)
        assert all(0 <= r < H and 0 <= c < W for r, c in cells), (H, W)
        pairs = zip(cells, cells[1:], strict=False)
        steps = {abs(r1 - r0) + abs(c1 - c0) for (r0, c0), (r1, c1) in pairs}
        assert steps <= {1}, (H, W, steps)


@pytest.mark.parametrize("H,W", [(8, 8), (64, 64), (5, 7), (16, 12), (3, 4)])
def test_hilbert_and_snake_locality(H, W):
    for curve in ("hilbert", "snake"):
        stats = locality_stats(curve_order(curve, H, W), H, W)
        assert stats["max_step"] == 1.0 and stats["frac_adjacent"] == 1.0
    assert locality_stats(curve_order("raster", H, W), H, W)["max_step"] > 1


def test_curve_order_is_cached_but_returns_a_copy():
    a = curve_order("hilbert", 8, 8)
    a[0] = 99
    assert curve_order("hilbert", 8, 8)[0] == 0


@pytest.mark.parametrize("args,match", [(("spiral", 4, 4), "raster"), (("hilbert", 0, 4), "H"),
                                        (("hilbert", 4, 2.0), "W"), (("snake", True, 3), "H")])
def test_curve_order_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        curve_order(*args)


# ---------------------------------------------------------------- directions
@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("H,W", [(5, 7), (8, 8), (16, 12), (1, 9)])
def test_unscan_of_scan_is_K_times_x(curve, H, W):
    x = torch.randn(2, H * W, 3, dtype=torch.float64)
    for K in (1, 2, 4, 8):
        orders = build_orders(curve, H, W, K)
        assert orders.shape == (K, H * W)
        assert torch.equal(orders.sort(dim=1).values, torch.arange(H * W).expand(K, -1))
        y = scan(x, orders)
        assert y.shape == (2, K, H * W, 3)
        torch.testing.assert_close(unscan(y, orders), K * x)
        torch.testing.assert_close(unscan(y, orders, inverse(orders)), K * x)


@pytest.mark.parametrize("H,W", [(5, 7), (4, 4)])
def test_scan_and_unscan_agree_with_loops(H, W):
    orders = build_orders("hilbert", H, W, 8)
    x = torch.randn(2, H * W, 3, dtype=torch.float64)
    torch.testing.assert_close(scan(x, orders), scan_loop(x, orders))
    y = torch.randn(2, 8, H * W, 3, dtype=torch.float64)
    torch.testing.assert_close(unscan(y, orders), unscan_loop(y, orders))


@pytest.mark.parametrize("curve", ["hilbert", "zigzag"])
@pytest.mark.parametrize("H,W", [(8, 8), (5, 7)])
def test_directions_match_mambaad_tensor_views(curve, H, W):
    x = torch.randn(2, 3, H, W)
    expected = mambaad_style_directions(x, curve)  # (b, 8, C, L)
    got = scan(x.permute(0, 2, 3, 1), build_orders(curve, H, W, 8))  # grid input (b, H, W, C)
    torch.testing.assert_close(got, expected.transpose(2, 3))


def test_scan_and_unscan_gradients():
    orders = build_orders("hilbert", 3, 4, 4)
    x = torch.randn(1, 12, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 4, 12, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: scan(x, orders), (x,))
    assert torch.autograd.gradcheck(lambda y: unscan(y, orders), (y,))


def test_direction_subsets_and_reversals():
    eight = build_orders("hilbert", 6, 4, 8)
    assert torch.equal(build_orders("hilbert", 6, 4, 1), eight[:1])
    assert torch.equal(build_orders("hilbert", 6, 4, 2), torch.stack([eight[0], eight[4]]))
    assert torch.equal(build_orders("hilbert", 6, 4, 4), eight[[0, 1, 4, 5]])
    assert torch.equal(eight[4:], eight[:4].flip(-1))
    assert direction_names(4) == ["identity", "transpose", "identity reversed",
                                  "transpose reversed"]


def test_inverse():
    order = curve_order("hilbert", 5, 3)
    inv = inverse(order)
    assert torch.equal(order[inv], torch.arange(15)) and torch.equal(inv[order], torch.arange(15))
    assert torch.equal(inv, torch.argsort(order))


def test_directions_bad_input():
    orders = build_orders("raster", 2, 3, 2)
    with pytest.raises(ValueError, match="num_directions"):
        build_orders("raster", 2, 3, 3)
    with pytest.raises(ValueError, match="curve name"):
        build_orders("spiral", 2, 3, 2)
    with pytest.raises(ValueError, match="W must be a positive int"):
        build_orders("raster", 2, 3.0, 2)
    with pytest.raises(ValueError, match=r"\(K, L=5\)"):
        scan(torch.randn(1, 5, 2), orders)
    with pytest.raises(ValueError, match=r"\(b, L, C\)"):
        scan(torch.randn(6, 2), orders)
    with pytest.raises(TypeError, match="LongTensor"):
        scan(torch.randn(1, 6, 2), orders.float())
    with pytest.raises(ValueError, match=r"\(b, K, L, C\)"):
        unscan(torch.randn(2, 6, 3), orders)
    with pytest.raises(ValueError, match="orders must have shape"):
        unscan(torch.randn(1, 3, 6, 2), orders)
    with pytest.raises(ValueError, match="inverse_orders"):
        unscan(torch.randn(1, 2, 6, 2), orders, inverse(orders[:1]))


# ---------------------------------------------------------------- locality
def test_locality_against_hand_computed_raster():
    H, W = 3, 4
    order = curve_order("raster", H, W)
    steps = step_lengths(order, H, W)
    row_jump = math.sqrt(1 + 3 ** 2)
    torch.testing.assert_close(steps, torch.tensor([1, 1, 1, row_jump] * 2 + [1, 1, 1.],
                                                   dtype=torch.float64))
    stats = locality_stats(order, H, W)
    assert stats["frac_adjacent"] == pytest.approx(9 / 11)
    assert stats["max_step"] == pytest.approx(row_jump)
    # 9 horizontal pairs at gap 1, 8 vertical pairs at gap W=4
    assert stats["neighbour_distance"] == pytest.approx((9 * 1 + 8 * 4) / 17)
    assert stats["neighbour_distance_geo"] == pytest.approx(4 ** (8 / 17))
    # with the transpose view every vertical pair is adjacent in some direction
    assert neighbour_distance(build_orders("raster", H, W, 4), H, W) == 1.0


def test_neighbour_distance_matches_pair_loop():
    H, W = 5, 6
    orders = build_orders("zorder", H, W, 8)
    pos = [{p: t for t, p in enumerate(o.tolist())} for o in orders]
    gaps = []
    for r in range(H):
        for c in range(W):
            for r2, c2 in ((r, c + 1), (r + 1, c)):
                if r2 < H and c2 < W:
                    gaps.append(min(abs(P[r * W + c] - P[r2 * W + c2]) for P in pos))
    assert neighbour_distance(orders, H, W) == pytest.approx(sum(gaps) / len(gaps))
    geo = math.exp(sum(math.log(g) for g in gaps) / len(gaps))
    assert neighbour_distance(orders, H, W, "geomean") == pytest.approx(geo)


def test_locality_table_and_bad_input():
    table = locality_table(8, 8, num_directions=2)
    assert set(table) == set(CURVES)
    assert table["hilbert"]["neighbour_distance_geo"] < table["raster"]["neighbour_distance_geo"]
    assert locality_stats(torch.zeros(1, dtype=torch.long), 1, 1)["max_step"] == 0.0
    with pytest.raises(ValueError, match="H\\*W"):
        step_lengths(torch.arange(5), 2, 3)
    with pytest.raises(ValueError, match="reduce"):
        neighbour_distance(torch.arange(6), 2, 3, reduce="max")


# ---------------------------------------------------------------- progressive plans
def test_presets():
    directions = {name: [s.num_directions for s in get_plan(name).stages] for name in PLAN_NAMES}
    assert directions == {"uniform": [8, 8, 8, 8], "decay_deep": [8, 8, 4, 2],
                          "decay_shallow": [2, 4, 8, 8], "curve_decay": [8, 8, 8, 8]}
    assert [s.curve for s in get_plan("curve_decay").stages] == ["hilbert", "hilbert", "snake",
                                                                 "raster"]
    assert all(s.curve == "hilbert" for s in get_plan("decay_deep").stages)
    for n in (1, 2, 3, 5):
        for name in PLAN_NAMES:
            assert len(get_plan(name, n)) == n


def test_plan_cost_at_paper_sizes():
    sizes = [(8, 8), (16, 16), (32, 32), (64, 64)]
    rows = plan_cost(get_plan("decay_deep"), sizes)
    assert [r["scanned_tokens"] for r in rows] == [512, 2048, 4096, 8192, 14848]
    assert rows[-1]["tokens"] == 64 + 256 + 1024 + 4096
    uniform = plan_cost("uniform", sizes)[-1]
    assert uniform["scanned_tokens"] == 8 * 5440 and uniform["directions"] == 32


def test_plan_round_trip_and_orders():
    plan = get_plan("decay_shallow")
    assert ScanPlan.from_dict(plan.to_dict()) == plan
    assert resolve_plan(plan.to_dict(), 4) == plan == resolve_plan("decay_shallow", 4)
    assert torch.equal(plan.stages[1].orders(4, 4), build_orders("hilbert", 4, 4, 4))


def test_plan_bad_input():
    with pytest.raises(ValueError, match="num_directions .* got 3"):
        StagePlan("hilbert", 3)
    with pytest.raises(ValueError, match="curve must be one of"):
        StagePlan("spiral", 2)
    with pytest.raises(ValueError, match="stage 1: .*num_directions"):
        ScanPlan.from_dict({"stages": [{"curve": "snake", "num_directions": 2},
                                       {"curve": "snake", "num_directions": 6}]})
    with pytest.raises(TypeError, match="stage 0"):
        ScanPlan(("hilbert",))
    with pytest.raises(ValueError, match="stage 0: expected a dict"):
        ScanPlan.from_dict({"stages": ["hilbert"]})
    with pytest.raises(ValueError, match="'stages'"):
        ScanPlan.from_dict({"name": "no stages"})
    with pytest.raises(ValueError, match="plan name"):
        get_plan("greedy")
    with pytest.raises(ValueError, match="has 4 stages, the decoder has 3"):
        resolve_plan(get_plan("uniform"), 3)
    with pytest.raises(ValueError, match="one \\(H, W\\) per stage"):
        plan_cost(get_plan("uniform"), [(8, 8)])
    with pytest.raises(ValueError, match="stage 2: size"):
        plan_cost(get_plan("uniform"), [(8, 8), (16, 16), (0, 32), (64, 64)])
