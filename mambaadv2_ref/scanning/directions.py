"""Scan directions: K permutations of one grid, and the gather / un-permute-and-sum around a scan.

MambaAD's HS encoder (book appendix A.1.3) reads an H x W feature map in up to
8 directions: 4 spatial views of the grid (identity, transpose, rot90, transpose of rot90), each
flattened and permuted by the scan curve, and the time-reversed copy of each. Its HS decoder
un-permutes every output sequence back to the grid and sums the K of them.

Here every direction is simply a permutation of the H*W original row-major flat indices: the
curve is laid over the *view's* shape and mapped back through the view, so

    scan:    y[b, k, t, :] = x[b, orders[k, t], :]                                   (6.1)
    unscan:  x_hat[b, p, :] = sum_k y[b, k, inv_k[p], :],  inv_k[orders[k, t]] = t    (6.2)

and unscan(scan(x)) = K * x.

Glossary: b batch; K number of directions; L = H*W sequence length; C channels;
orders (K, L) LongTensor; inverse_orders (K, L) their inverse permutations.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from mambaadv2_ref.scanning.curves import check_grid_size, curve_order

VIEWS: tuple[str, ...] = ("identity", "transpose", "rot90", "transpose_rot90")
NUM_DIRECTIONS: tuple[int, ...] = (1, 2, 4, 8)
# which views each direction count uses; the second half of the directions are the reversals
_VIEWS_USED = {1: 1, 2: 1, 4: 2, 8: 4}


def view_grid(grid: torch.Tensor, view: str) -> torch.Tensor:
    """Apply one of MambaAD's four spatial views to a grid (H, W, ...).

    Args:
        grid: tensor whose first two dims are (H, W).
        view: one of VIEWS.
    Returns:
        (H, W, ...) for identity and transpose_rot90, (W, H, ...) for transpose and rot90.
    Implements: the spatial variants of the HS encoder (section 1.3): x, x^T, rot90(x),
    rot90(x)^T, with rot90 turning counter-clockwise as torch.rot90(k=1) does.
    """
    if view == "identity":
        return grid
    if view == "transpose":
        return grid.transpose(0, 1)
    if view == "rot90":
        return torch.rot90(grid, 1, dims=(0, 1))
    if view == "transpose_rot90":
        return torch.rot90(grid, 1, dims=(0, 1)).transpose(0, 1)
    raise ValueError(f"view must be one of {list(VIEWS)}, got {view!r}")


def view_order(curve: str, H: int, W: int, view: str) -> torch.Tensor:
    """The curve laid over one spatial view, as original row-major flat indices.

    Returns:
        LongTensor (H*W,): the pixel of the original H x W grid visited at each time step.
    Implements: flatten(view(x))[curve] of the HS encoder, written as one permutation.
    """
    viewed = view_grid(torch.arange(H * W).reshape(H, W), view)  # (Hv, Wv) original indices
    Hv, Wv = viewed.shape
    return viewed.reshape(-1)[curve_order(curve, Hv, Wv)]


def build_orders(curve: str, H: int, W: int, num_directions: int) -> torch.Tensor:
    """The K scan orders of one grid, in MambaAD's direction order.

    num_directions chooses the subset: 1 = identity view; 2 = identity and its reversal;
    4 = identity, transpose, then both reversed; 8 = the 4 views, then the 4 reversed.

    Args:
        curve: scan curve name (see curves.CURVES).
        H, W: grid height and width.
        num_directions: K in {1, 2, 4, 8}.
    Returns:
        LongTensor (K, H*W); every row is a permutation of range(H*W). A fresh copy.
    Implements: the 8 directions of the HS encoder (section 1.3).
    """
    if num_directions not in NUM_DIRECTIONS:
        raise ValueError(f"num_directions must be one of {list(NUM_DIRECTIONS)} "
                         f"(1: identity view, 2: + its reversal, 4: identity and transpose "
                         f"+ reversals, 8: all 4 views + reversals), got {num_directions!r}")
    check_grid_size(H, W)
    return _cached_orders(curve, H, W, num_directions).clone()


@lru_cache(maxsize=256)
def _cached_orders(curve: str, H: int, W: int, num_directions: int) -> torch.Tensor:
    forward = torch.stack([view_order(curve, H, W, view)
                           for view in VIEWS[:_VIEWS_USED[num_directions]]])  # (K or K/2, L)
    if num_directions == 1:
        return forward
    return torch.cat([forward, forward.flip(-1)])  # (K, L): forward views, then reversed


def direction_names(num_directions: int) -> list[str]:
    """Names of the K directions of `build_orders`, e.g. "transpose reversed"."""
    if num_directions not in NUM_DIRECTIONS:
        raise ValueError(f"num_directions must be one of {list(NUM_DIRECTIONS)}, "
                         f"got {num_directions!r}")
    views = list(VIEWS[:_VIEWS_USED[num_directions]])
    return views if num_directions == 1 else views + [f"{v} reversed" for v in views]


def inverse(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutation(s): inv[..., order[..., t]] = t.

    Args:
        order: LongTensor (L,) or (K, L), each row a permutation of range(L).
    Returns:
        LongTensor of the same shape.
    Implements: inv_k of eq. (6.2), by one scatter (argsort would also do, in O(L log L)).
    """
    _check_orders(order, "order", allow_1d=True)
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def scan(x: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Read a token grid in K directions: y[b, k, t] = x[b, orders[k, t]].

    Args:
        x: (b, L, C) tokens in row-major order, or the grid (b, H, W, C).
        orders: LongTensor (K, L) from `build_orders`.
    Returns:
        y: (b, K, L, C).
    Implements: eq. (6.1), one batched index_select (no loop over pixels or directions).
    """
    x = _as_sequence(x)
    _check_orders(orders, "orders")
    b, L, C = x.shape
    K = orders.shape[0]
    if orders.shape[1] != L:
        raise ValueError(f"orders must have shape (K, L={L}) to match x, got {tuple(orders.shape)}")
    y = x.index_select(1, orders.to(x.device).reshape(-1))  # (b, K*L, C)
    return y.view(b, K, L, C)


def unscan(y: torch.Tensor, orders: torch.Tensor,
           inverse_orders: torch.Tensor | None = None) -> torch.Tensor:
    """Put K scanned sequences back in row-major order and sum them.

    Args:
        y: (b, K, L, C) outputs along the K scan orders.
        orders: LongTensor (K, L), the orders `y` was scanned with.
        inverse_orders: optional precomputed `inverse(orders)` (K, L), to skip recomputing it
            (it is not checked to be the inverse of `orders`).
    Returns:
        x_hat: (b, L, C), sum over k of the un-permuted y[:, k]; unscan(scan(x)) == K * x.
    Implements: eq. (6.2), the HS decoder (section 1.3), by one index_select and a sum.
    """
    if y.dim() != 4:
        raise ValueError(f"y must have shape (b, K, L, C), got {tuple(y.shape)}")
    _check_orders(orders, "orders")
    if tuple(orders.shape) != tuple(y.shape[1:3]):
        raise ValueError(f"orders must have shape (K, L)={tuple(y.shape[1:3])} to match y, "
                         f"got {tuple(orders.shape)}")
    if inverse_orders is None:
        inverse_orders = inverse(orders)
    elif inverse_orders.shape != orders.shape:
        raise ValueError(f"inverse_orders must have shape {tuple(orders.shape)}, "
                         f"got {tuple(inverse_orders.shape)}")
    b, K, L, C = y.shape
    # row of y.reshape(b, K*L, C) that holds pixel p of direction k: k*L + inv_k[p]
    rows = inverse_orders.to(y.device) + L * torch.arange(K, device=y.device)[:, None]  # (K, L)
    y = y.reshape(b, K * L, C).index_select(1, rows.reshape(-1))  # (b, K*L, C), row-major per k
    return y.view(b, K, L, C).sum(1)


def _as_sequence(x: torch.Tensor) -> torch.Tensor:
    """(b, L, C) unchanged, (b, H, W, C) flattened row-major to (b, H*W, C)."""
    if x.dim() == 4:
        return x.reshape(x.shape[0], -1, x.shape[-1])
    if x.dim() != 3:
        raise ValueError(f"x must have shape (b, L, C) or (b, H, W, C), got {tuple(x.shape)}")
    return x


def _check_orders(order: torch.Tensor, name: str, allow_1d: bool = False) -> None:
    if not isinstance(order, torch.Tensor) or order.dtype != torch.long:
        raise TypeError(f"{name} must be a torch.LongTensor, got "
                        f"{getattr(order, 'dtype', type(order).__name__)}")
    if order.dim() != 2 and not (allow_1d and order.dim() == 1):
        shape = "(L,) or (K, L)" if allow_1d else "(K, L)"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(order.shape)}")
