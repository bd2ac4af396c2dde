"""Scan curves: the order in which a 2-D grid of H x W tokens is read as a 1-D sequence.

A curve is a permutation `seq` of the H*W row-major flat pixel indices: `seq[t]` is the pixel
visited at time t. MambaAD (book appendix A.1.3) names five curves; we keep
its names beside ours:

    raster   MambaAD "sweep": row by row, left to right
    snake    MambaAD "scan": boustrophedon, odd rows right to left
    zigzag   JPEG order: anti-diagonals r + c = d, alternating direction
    zorder   Morton order: sort pixels by the bit interleaving of (row, col)
    hilbert  generalized Hilbert curve ("gilbert") for any H x W, not only powers of two

Glossary: H, W grid height/width; L = H*W sequence length; t time step; (r, c) = (row, col);
flat index p = r * W + c.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import torch

CURVES: tuple[str, ...] = ("raster", "snake", "zigzag", "zorder", "hilbert")


def raster_order(H: int, W: int) -> torch.Tensor:
    """Row-major order: seq[t] = t.

    Returns:
        LongTensor (H*W,).
    Implements: MambaAD "sweep" curve (book appendix A.1.3).
    """
    return torch.arange(H * W)


def snake_order(H: int, W: int) -> torch.Tensor:
    """Boustrophedon order: even rows left to right, odd rows right to left.

    Returns:
        LongTensor (H*W,).
    Implements: MambaAD "scan" curve (section 1.3).
    """
    grid = torch.arange(H * W).reshape(H, W)
    grid[1::2] = grid[1::2].flip(-1)
    return grid.reshape(-1)


def zigzag_order(H: int, W: int) -> torch.Tensor:
    """JPEG zigzag: anti-diagonals d = r + c in turn; odd d go down-left, even d go up-right.

    Returns:
        LongTensor (H*W,). For 3x3: 0, 1, 3, 6, 4, 2, 5, 7, 8.
    Implements: MambaAD "zigzag" curve (section 1.3), extended to H != W.
    """
    r, c = _row_col(H, W)
    d = r + c
    along = torch.where(d % 2 == 1, r, c)  # odd diagonal: row grows; even: column grows
    return torch.argsort(d * (H + W) + along)


def zorder_order(H: int, W: int) -> torch.Tensor:
    """Morton (Z) order: sort the pixels that exist by their interleaved (row, col) bits.

    The column bit is the lower bit of each pair, so the 2x2 unit is read as a "Z":
    (0,0), (0,1), (1,0), (1,1). For H x W that is not a power-of-two square, the codes of the
    missing pixels are simply skipped.

    Returns:
        LongTensor (H*W,).
    Implements: MambaAD "zorder" curve (section 1.3), extended to any H x W.
    """
    r, c = _row_col(H, W)
    code = torch.zeros_like(r)
    for bit in range(max(H, W).bit_length()):
        code |= ((c >> bit) & 1) << (2 * bit)
        code |= ((r >> bit) & 1) << (2 * bit + 1)
    return torch.argsort(code)


def hilbert_order(H: int, W: int) -> torch.Tensor:
    """Generalized Hilbert curve for any H x W (the "gilbert" recursion), as flat indices.

    For power-of-two squares it is the classical Hilbert curve, starting at the top-left
    pixel and ending at the top-right one. For every size, each step moves to a 4-neighbour
    (see `gilbert_cells` for the one choice that makes this hold).

    Returns:
        LongTensor (H*W,).
    Implements: MambaAD "hilbert" curve (section 1.3), generalized to any H x W.
    """
    cells = list(gilbert_cells(H, W))
    return torch.tensor([r * W + c for r, c in cells], dtype=torch.long)


def gilbert_cells(H: int, W: int) -> Iterator[tuple[int, int]]:
    """Yield the (row, col) cells of the generalized Hilbert curve over an H x W grid.

    The recursion fills a rectangle from one corner to the far corner of its major side. By
    the checkerboard colouring, a 4-neighbour path between those two corners cannot exist when
    the major side is odd and the other side even (both corners then share a colour while an
    even number of cells needs endpoints of different colours); Cerveny's gilbert then takes one
    diagonal step. We run the major side along the longer side, as gilbert does, except in that
    case, where we run it along the shorter one: then no diagonal step is needed (we checked every
    size up to 64 x 64; tests/test_scanning.py checks up to 32 x 32 and a few larger ones).

    Returns:
        iterator of H*W (row, col) pairs, starting at (0, 0).
    Implements: generalized Hilbert curve (Cerveny's "gilbert" recursion), section 1.3.
    """
    long_side, short_side = max(H, W), min(H, W)
    along_longer = not (long_side % 2 == 1 and short_side % 2 == 0)
    if (W >= H) == along_longer:
        yield from _gilbert(0, 0, (0, W), (H, 0))
    else:
        yield from _gilbert(0, 0, (H, 0), (0, W))


def _gilbert(r: int, c: int, a: tuple[int, int], b: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Fill the rectangle at (r, c) spanned by the major vector a and the minor vector b.

    a and b are (d_row, d_col) vectors along one grid axis each; the curve enters at (r, c)
    and runs along a, leaving at (or, in a rectangle two cells thick, next to) the far end of a.
    """
    length_a, length_b = abs(a[0] + a[1]), abs(b[0] + b[1])
    unit_a, unit_b = _sign(a), _sign(b)
    if length_b == 1:  # a single row along a
        for i in range(length_a):
            yield r + i * unit_a[0], c + i * unit_a[1]
        return
    if length_a == 1:  # a single column along b
        for i in range(length_b):
            yield r + i * unit_b[0], c + i * unit_b[1]
        return
    half_a, half_b = _half(a), _half(b)
    if 2 * length_a > 3 * length_b:
        # long rectangle: two halves side by side along a; an even first half keeps both
        # halves' corner-to-corner paths possible
        if abs(half_a[0] + half_a[1]) % 2 and length_a > 2:
            half_a = _add(half_a, unit_a)
        yield from _gilbert(r, c, half_a, b)
        yield from _gilbert(r + half_a[0], c + half_a[1], _sub(a, half_a), b)
        return
    if abs(half_b[0] + half_b[1]) % 2 and length_b > 2:
        half_b = _add(half_b, unit_b)
    # standard Hilbert step: up the first half of b, across the whole of a, back down
    yield from _gilbert(r, c, half_b, half_a)
    yield from _gilbert(r + half_b[0], c + half_b[1], a, _sub(b, half_b))
    yield from _gilbert(r + (a[0] - unit_a[0]) + (half_b[0] - unit_b[0]),
                        c + (a[1] - unit_a[1]) + (half_b[1] - unit_b[1]),
                        _neg(half_b), _neg(_sub(a, half_a)))


def _sign(v: tuple[int, int]) -> tuple[int, int]:
    return ((v[0] > 0) - (v[0] < 0), (v[1] > 0) - (v[1] < 0))


def _half(v: tuple[int, int]) -> tuple[int, int]:
    return (int(v[0] / 2), int(v[1] / 2))  # rounds toward zero for negative vectors


def _add(u: tuple[int, int], v: tuple[int, int]) -> tuple[int, int]:
    return (u[0] + v[0], u[1] + v[1])


def _sub(u: tuple[int, int], v: tuple[int, int]) -> tuple[int, int]:
    return (u[0] - v[0], u[1] - v[1])


def _neg(v: tuple[int, int]) -> tuple[int, int]:
    return (-v[0], -v[1])


def _row_col(H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every row-major flat index, each LongTensor (H*W,)."""
    p = torch.arange(H * W)
    return p // W, p % W


_CURVE_FUNCTIONS = {
    "raster": raster_order,
    "snake": snake_order,
    "zigzag": zigzag_order,
    "zorder": zorder_order,
    "hilbert": hilbert_order,
}


def curve_order(name: str, H: int, W: int) -> torch.Tensor:
    """The scan curve `name` over an H x W grid, as flat pixel indices in visiting order.

    Args:
        name: one of CURVES ("raster", "snake", "zigzag", "zorder", "hilbert").
        H, W: grid height and width, positive ints.
    Returns:
        LongTensor (H*W,), a permutation: seq[t] = r * W + c of the pixel visited at time t.
        A fresh copy of a cached table, so callers may modify it.
    Implements: the curve permutations of section 1.3 (HS encoder).
    """
    if name not in _CURVE_FUNCTIONS:
        raise ValueError(f"curve name must be one of {list(CURVES)}, got {name!r}")
    check_grid_size(H, W)
    return _cached_curve_order(name, H, W).clone()


def check_grid_size(H: int, W: int) -> None:
    """Raise ValueError unless H and W are positive ints (bool excluded)."""
    for arg, value in (("H", H), ("W", W)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")


@lru_cache(maxsize=256)
def _cached_curve_order(name: str, H: int, W: int) -> torch.Tensor:
    return _CURVE_FUNCTIONS[name](H, W)
