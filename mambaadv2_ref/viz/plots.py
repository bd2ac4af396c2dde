"""Pure plotting functions for the book: each takes tensors or arrays and returns a Figure.

The figures are plain `matplotlib.figure.Figure` objects (not pyplot's), so a notebook shows a
returned figure exactly once and tests can build them without a display. The widgets in
`widgets.py` redraw these figures when a slider moves; the book also shows them statically.

Glossary: kernel -> K (chapter 2), M -> a materialised (L, L) sequence-mixing matrix such as
L o C B^T (chapter 4), maps -> anomaly maps (H, W), masks -> ground-truth masks (H, W).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from mambaadv2_ref.overlay import to_numpy
from mambaadv2_ref.scans.lti import (
    continuous_impulse_response,
    discretize,
    kernel_matrix,
    ssm_kernel,
    ssm_recurrent,
)


def plot_curves(curves: Mapping[str, tuple], xlabel: str = "", ylabel: str = "",
                title: str = "", logx: bool = False, logy: bool = False,
                figsize=(6, 3.5)) -> Figure:
    """Line plot of named curves.

    Args:
        curves: name -> (x, y), each a 1-D sequence of the same length.
        xlabel, ylabel, title: axis labels and title.
        logx, logy: logarithmic axes.
        figsize: figure size in inches.

    Returns:
        Figure with one Axes holding one line per curve (and a legend).
    """
    if not curves:
        raise ValueError("curves must hold at least one name -> (x, y) pair")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    for name, (x, y) in curves.items():
        x, y = to_numpy(x, f"x of {name!r}", 1), to_numpy(y, f"y of {name!r}", 1)
        if x.shape != y.shape:
            raise ValueError(f"x and y of {name!r} must have the same length, got "
                             f"{x.shape} and {y.shape}")
        ax.plot(x, y, marker="o" if len(x) <= 12 else None, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_kernels(kernels: Mapping[str, torch.Tensor], dt: float | None = None,
                 continuous: tuple | None = None, title: str = "SSM kernels",
                 figsize=(6, 3.5)) -> Figure:
    """Discrete kernels K_k as stems, optionally divided by dt over the continuous response.

    Args:
        kernels: name -> (L,) kernel.
        dt: step; when given, the x axis is time k dt and kernels are divided by dt, so they
            compare with the continuous impulse response y(t).
        continuous: optional (t, y) of the continuous impulse response, drawn as a line.
        title: axes title.
        figsize: figure size in inches.

    Returns:
        Figure with one Axes: a line per kernel (plus the continuous curve).
    """
    if not kernels:
        raise ValueError("kernels must hold at least one name -> kernel pair")
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    if continuous is not None:
        t, y = (to_numpy(v, "continuous", 1) for v in continuous)
        ax.plot(t, y, color="black", lw=1.5, label="continuous y(t)")
    for name, kernel in kernels.items():
        k = to_numpy(kernel, f"kernel {name!r}", 1)
        steps = np.arange(len(k))
        x, y = (steps * dt, k / dt) if dt else (steps, k)
        ax.plot(x, y, marker=".", ls="--", lw=1, label=name)
    ax.set(xlabel="time t = k dt" if dt else "lag k", ylabel="K_k / dt" if dt else "K_k",
           title=title)
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def plot_matrices(matrices: Mapping[str, torch.Tensor], cmap: str = "RdBu_r",
                  symmetric: bool = True, size: float = 3.0) -> Figure:
    """Materialised (L, L) matrices side by side as images (e.g. the mask L and L o C B^T).

    Args:
        matrices: title -> (L, L) matrix (rows t: outputs, columns s: inputs).
        cmap: colour map.
        symmetric: colour limits +-max|M| (diverging data) instead of min..max.
        size: width of each panel in inches.

    Returns:
        Figure with one image Axes per matrix, each with a colour bar.
    """
    if not matrices:
        raise ValueError("matrices must hold at least one title -> matrix pair")
    fig = Figure(figsize=(size * len(matrices) + 0.6, size), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(matrices)))
    for ax, (name, m) in zip(axes, matrices.items(), strict=True):
        m = to_numpy(m, f"matrix {name!r}", 2)
        vmax = float(np.abs(m).max()) or 1.0
        limits = dict(vmin=-vmax, vmax=vmax) if symmetric else {}
        image = ax.imshow(m, cmap=cmap, interpolation="nearest", **limits)
        ax.set(title=name, xlabel="input position s", ylabel="output position t")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def ssm_explorer_figure(dt: float, A: float, trap: float = 0.5, angle: float = 0.0,
                        length: int = 32, seed: int = 0) -> Figure:
    """The SSM explorer's picture for a one-state system with eigenvalue A + i angle.

    Left: the continuous impulse response y(t) = Re(exp((A + i angle) t)) and the discrete
    kernel K_k / dt of the exponential trapezoid with factor `trap`. Middle: the kernel as the
    materialised lower-triangular matrix M[t, s] = K_{t-s}. Right: for a random input, the
    recurrence and the matrix form y = M u, drawn on top of each other (they coincide).

    Args:
        dt, A, trap, angle: see `mambaadv2_ref.scans.lti.impulse_response`.
        length: number of steps L.
        seed: seed of the random input.

    Returns:
        Figure with three Axes.
    """
    A_complex = torch.tensor([complex(A, angle)], dtype=torch.complex128)
    one = torch.ones(1, dtype=torch.complex128)
    system = discretize("exp_trapezoid", dt, A_complex, one, trap=trap)
    kernel = ssm_kernel(system.A_bar, system.B_bar, one, length, B_bar_prev=system.B_bar_prev)
    t = torch.linspace(0, dt * (length - 1), 200, dtype=torch.float64)
    u = torch.randn(length, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y_rec = ssm_recurrent(system.A_bar, system.B_bar, one, u, B_bar_prev=system.B_bar_prev)
    M = kernel_matrix(kernel)
    y_mat = M @ u
    kernel, t, y_rec, y_mat, M = (v.numpy() for v in (kernel, t, y_rec, y_mat, M))
    y_cont = continuous_impulse_response(A_complex, one, one, torch.from_numpy(t)).numpy()

    fig = Figure(figsize=(12, 3.4), layout="constrained")
    ax_k, ax_m, ax_y = fig.subplots(1, 3)
    ax_k.plot(t, y_cont, color="black", label="continuous y(t)")
    ax_k.plot(dt * np.arange(length), kernel / dt, "o--", ms=3, lw=1, label="K_k / dt")
    ax_k.set(xlabel="time t", title=f"impulse response (dt={dt:g}, A={A:g}, "
             f"trap={trap:g}, angle={angle:g})")
    ax_k.title.set_fontsize("small")
    ax_k.legend(fontsize="small")
    vmax = float(np.abs(M).max()) or 1.0
    image = ax_m.imshow(M, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax_m, shrink=0.8)
    ax_m.set(title="matrix form M[t, s] = K[t-s]", xlabel="input s", ylabel="output t")
    ax_y.plot(y_rec, lw=3, alpha=0.5, label="recurrence")
    ax_y.plot(y_mat, "k.", ms=4, label="matrix form M u")
    err = float(np.abs(y_rec - y_mat).max())
    ax_y.set(xlabel="step t", title=f"same output (max |diff| = {err:.1e})")
    ax_y.legend(fontsize="small")
    for ax in (ax_k, ax_y):
        ax.grid(alpha=0.3)
    return fig


def plot_image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 6,
                    size: float = 1.8, cmap: str = "gray") -> Figure:
    """A grid of images (RGB (H, W, 3) in [0, 1] or single-channel (H, W)) with titles.

    Args:
        images: sequence of images.
        titles: optional titles, one per image.
        ncols: number of columns.
        size: side of each panel in inches.
        cmap: colour map for single-channel images.

    Returns:
        Figure with one image Axes per image (empty cells hidden).
    """
    if len(images) == 0:
        raise ValueError("images must hold at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles must have one entry per image ({len(images)}), "
                         f"got {len(titles)}")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(size * ncols, size * nrows + 0.3 * (titles is not None)),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(to_numpy(images[i], f"images[{i}]", (2, 3)), cmap=cmap)
            if titles is not None:
                ax.set_title(titles[i], fontsize="small")
    return fig


def plot_against_band(entries: Sequence[Mapping], spread: Mapping[str, Mapping],
                      metric: str = "mAD", k: float = 2.0, title: str = "",
                      figsize=(8, 3.6)) -> Figure:
    """One panel per readout: each ablation's metric as a dot, beside the reference's band.

    Args:
        entries: rows of `studies.ablations.against_seed_spread` (keys "ablation", "seeds",
            "{readout} {metric}", "{readout} beyond").
        spread: {readout: {"mean", "std", "n"}} of the reference configuration over its seeds
            (percent); the band is mean +- k std.
        metric: the metric plotted.  k: the band's half-width in standard deviations.
        title: figure title.  figsize: figure size in inches.

    Returns:
        the figure; dots outside the band are filled, dots inside are hollow, and each label
        carries its number of seeds.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, len(spread), sharey=True, squeeze=False)[0]
    labels = [f"{e['ablation']} ({len(e['seeds'])})" for e in entries]
    ys = np.arange(len(entries))
    for ax, (readout, ref) in zip(axes, spread.items(), strict=True):
        lo, hi = ref["mean"] - k * ref["std"], ref["mean"] + k * ref["std"]
        ax.axvspan(lo, hi, color="tab:blue", alpha=0.15,
                   label=f"v2: mean +- {k:g} std over {ref['n']} seeds")
        ax.axvline(ref["mean"], color="tab:blue", lw=1)
        for y, e in zip(ys, entries, strict=True):
            value = e.get(f"{readout} {metric}")
            if value is None:
                continue
            beyond = e.get(f"{readout} beyond")
            ax.plot([value], [y], "o", color="tab:red" if beyond else "black",
                    mfc="tab:red" if beyond else "none", ms=7)
        ax.set_title(f"{readout} readout")
        ax.set_xlabel(f"{metric} (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, labels)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
