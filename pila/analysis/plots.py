"""matplotlib figures of the analyses; every function returns its ``Figure``.

Functions taking ``ax`` draw into it when given (so several panels share one figure) and
otherwise make their own figure. Nothing here computes a statistic: the numbers come from
:mod:`pila.analysis.routing`, :mod:`pila.analysis.maps` and :mod:`pila.analysis.scalars`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from pila.analysis.scalars import CurveMatrix, Series
from pila.categories import CATEGORIES
from pila.io import atomic_path

CATEGORY_COLORS: dict[str, Any] = {
    name: plt.get_cmap("tab10")(i) for i, name in enumerate(CATEGORIES)
}
"""One colour per category, shared by every figure."""


def pretty(name: str) -> str:
    """``"compressible_flow"`` → ``"compressible flow"``."""
    return name.replace("_", " ")


def _array(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _annotate(ax: Axes, values: np.ndarray, fmt: str, dark: Callable[[float], bool]) -> None:
    """Write each finite cell's value; white where ``dark(value)`` says the cell is dark."""
    for (i, j), v in np.ndenumerate(values):
        if math.isfinite(v):
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=7,
                    color="white" if dark(v) else "black")  # fmt: skip


def plot_category_table(
    table: Tensor | np.ndarray,
    counts: Tensor | np.ndarray | None = None,
    *,
    title: str,
    cbar_label: str,
    vmin: float | None = 0.0,
    vmax: float | None = None,
    fmt: str = ".2f",
    ax: Axes | None = None,
) -> Figure:
    """Heat map of a (ground-truth category × expert) table, each cell annotated.

    Args:
        table: (C, E) values, e.g. from :func:`~pila.analysis.routing.mean_by_category`.
        counts: (C,) samples per category, shown in the row labels.
        title: axes title.
        cbar_label: colour-bar label.
        vmin: bottom of the colour scale (None: the data's).
        vmax: top of the colour scale (None: the data's).
        fmt: format of the cell annotations.
        ax: draw into this axes.
    """
    values = _array(table)
    fig, ax = _axes(ax, (6.4, 5.4))
    image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax)
    rows = [pretty(c) for c in CATEGORIES[: values.shape[0]]]
    if counts is not None:
        rows = [f"{r} ({int(n)})" for r, n in zip(rows, _array(counts), strict=True)]
    columns = [pretty(c) for c in CATEGORIES[: values.shape[1]]]
    ax.set_xticks(range(values.shape[1]), columns, rotation=45, ha="right")
    ax.set_yticks(range(values.shape[0]), rows)
    ax.set_xlabel("expert")
    ax.set_ylabel("ground-truth category" + (" (clips)" if counts is not None else ""))
    ax.set_title(title)
    low, high = image.get_clim()
    middle = low + 0.6 * (high - low)
    _annotate(ax, values, fmt, dark=lambda v: v < middle)  # viridis is dark at its low end
    fig.colorbar(image, ax=ax, label=cbar_label, shrink=0.8)
    return fig


def plot_selection_rates(
    rates: Tensor | np.ndarray,
    counts: Tensor | np.ndarray | None = None,
    *,
    title: str = "Expert selection rate by ground-truth category",
    ax: Axes | None = None,
) -> Figure:
    """Fig. 6 left: :func:`~pila.analysis.routing.selection_rate_by_category` (C × E) on [0, 1]."""
    return plot_category_table(
        rates, counts, title=title, cbar_label="selection rate", vmin=0.0, vmax=1.0, ax=ax
    )


def plot_correlation(
    corr: Tensor | np.ndarray,
    *,
    title: str = "Expert co-activation correlation",
    ax: Axes | None = None,
) -> Figure:
    """Heat map of an (E × E) correlation matrix on a diverging scale [−1, 1]."""
    values = _array(corr)
    fig, ax = _axes(ax, (6.0, 5.4))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    labels = [pretty(c) for c in CATEGORIES[: values.shape[0]]]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("expert")
    ax.set_ylabel("expert")
    ax.set_title(title)
    _annotate(ax, values, ".2f", dark=lambda v: abs(v) > 0.6)
    fig.colorbar(image, ax=ax, label="Pearson correlation of selections", shrink=0.8)
    return fig


def plot_router_statistics(
    rates: Tensor | np.ndarray,
    corr: Tensor | np.ndarray,
    counts: Tensor | np.ndarray | None = None,
    *,
    suptitle: str | None = None,
) -> Figure:
    """Fig. 6: selection rate by category (left) and co-activation correlation (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13.0, 5.6), layout="constrained")
    plot_selection_rates(rates, counts, ax=left)
    plot_correlation(corr, ax=right)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_generated_routing(
    weights: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    prompts: Sequence[str],
    *,
    title: str = "Routing of the generated videos",
    max_chars: int = 48,
) -> Figure:
    """Heat map of routing weights (prompts × experts); the parser's labels are outlined.

    Args:
        weights: (N, E) routing weights, e.g. averaged over the corrected steps
            (:attr:`~pila.analysis.routing.GeneratedRouting.weights`).
        labels: (N, C) the parser's multi-hot labels.
        prompts: (N,) prompts, cut to ``max_chars`` for the row labels.
        title: axes title.
        max_chars: longest row label.
    """
    from matplotlib.patches import Rectangle

    values, y = _array(weights), _array(labels)
    n, e = values.shape
    fig, ax = plt.subplots(figsize=(10.0, 2.2 + 0.42 * n), layout="constrained")
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    rows = [p if len(p) <= max_chars else p[: max_chars - 1] + "…" for p in prompts]
    ax.set_yticks(range(n), rows, fontsize=8)
    ax.set_xticks(range(e), [pretty(c) for c in CATEGORIES[:e]], rotation=45, ha="right")
    ax.set_xlabel("expert (outlined: the parser's labels)")
    ax.set_title(title)
    _annotate(ax, values, ".2f", dark=lambda v: v < 0.6)
    for i, j in zip(*np.nonzero(y[:, :e] > 0.5), strict=True):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(image, ax=ax, label="mean routing weight π")
    return fig


def plot_expert_maps(
    maps: Tensor | np.ndarray,
    *,
    frames: np.ndarray | None = None,
    frame_times: Sequence[int] | None = None,
    weights: Tensor | np.ndarray | None = None,
    experts: Sequence[int] | None = None,
    normalize: bool = False,
    title: str | None = None,
) -> Figure:
    """Fig. 7: one row per expert, one column per latent frame.

    Args:
        maps: (E, T, H, W) update magnitudes of one clip (zero for unselected experts).
        frames: (F, H_px, W_px, 3) uint8 pixel frames of the clip, drawn as a first row.
        frame_times: pixel frame of each latent frame
            (:func:`~pila.analysis.maps.latent_frame_times`).
        weights: (E,) routing weights, shown in the row labels.
        experts: the rows to draw (default: the experts with a nonzero map, else all).
        normalize: divide each expert's map by its own maximum over the clip (shows *where*
            each expert acts; its maximum goes into the row label); otherwise every row
            shares one colour scale (shows *how much*).
        title: figure title.
    """
    values = _array(maps)  # (E, T, H, W)
    e, t = values.shape[:2]
    if experts is None:
        active = [k for k in range(e) if np.any(values[k] != 0)]
        experts = active or list(range(e))
    experts = list(experts)
    peaks = values.reshape(e, -1).max(axis=1)  # (E,)
    if normalize:
        values = values / np.where(peaks > 0, peaks, 1.0)[:, None, None, None]
    show_frames = frames is not None
    if show_frames and frame_times is None:
        raise ValueError(
            "frame_times is required with frames (latent frame t ↔ pixel frame frame_times[t])"
        )
    rows = len(experts) + int(show_frames)
    fig, axes = plt.subplots(
        rows, t, figsize=(1.15 * t + 1.8, 1.15 * rows + 0.6), squeeze=False, layout="constrained"
    )
    vmax = float(values[experts].max()) if experts else 1.0
    vmax = vmax if vmax > 0 else 1.0
    image = None
    for col in range(t):
        if show_frames:
            ax = axes[0, col]
            ax.imshow(frames[frame_times[col]])
            ax.set_title(f"t = {col}", fontsize=8)
        for r, k in enumerate(experts):
            ax = axes[r + int(show_frames), col]
            image = ax.imshow(
                values[k, col], cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest"
            )
            if not show_frames and r == 0:
                ax.set_title(f"t = {col}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if show_frames:
        axes[0, 0].set_ylabel("clip", fontsize=8)
    w = _array(weights) if weights is not None else None
    for r, k in enumerate(experts):
        label = pretty(CATEGORIES[k]) if k < len(CATEGORIES) else f"expert {k}"
        if w is not None:
            label += f"\nπ = {w[k]:.2f}"
        if normalize:
            label += f"\nmax {peaks[k]:.2g}"
        axes[r + int(show_frames), 0].set_ylabel(label, fontsize=8)
    if image is not None:
        what = "mean |ΔP_k| over channels" + (" / its maximum" if normalize else "")
        fig.colorbar(image, ax=axes[int(show_frames):, :].ravel().tolist(), label=what, shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_expert_curves(
    curves: Mapping[str, Series],
    *,
    ylabel: str,
    title: str,
    logy: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """One line per expert (``{category: Series}``).

    The curves come e.g. from :func:`~pila.analysis.scalars.expert_curves`.
    """
    fig, ax = _axes(ax, (6.4, 4.0))
    for name, series in curves.items():
        ax.plot(series.steps, series.values, marker=".", markersize=3, label=pretty(name),
                color=CATEGORY_COLORS.get(name))  # fmt: skip
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if curves:
        ax.legend(fontsize=7, ncols=2)
    ax.grid(alpha=0.3)
    return fig


def plot_residual_curves(
    curves: Mapping[tuple[str, str], Series],
    *,
    title: str = "Per-term residuals",
    logy: bool = True,
    ncols: int = 4,
) -> Figure:
    """One panel per category, one line per residual term (``{(category, term): Series}``)."""
    by_category: dict[str, list[tuple[str, Series]]] = {c: [] for c in CATEGORIES}
    for (category, term), series in curves.items():
        by_category.setdefault(category, []).append((term, series))
    nrows = max(1, math.ceil(len(by_category) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.4 * ncols, 2.7 * nrows), squeeze=False, layout="constrained"
    )
    for ax, (category, terms) in zip(axes.flat, by_category.items(), strict=False):
        for term, series in terms:
            ax.plot(series.steps, series.values, marker=".", markersize=3, label=term)
        ax.set_title(pretty(category), color=CATEGORY_COLORS.get(category, "black"), fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("mean m·r²", fontsize=8)
        ax.tick_params(labelsize=7)
        if terms:
            if logy:
                ax.set_yscale("log")
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
        else:
            ax.text(
                0.5, 0.5, "never routed",
                ha="center", va="center", transform=ax.transAxes, color="grey",
            )  # fmt: skip
    for ax in list(axes.flat)[len(by_category):]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def plot_scalars(
    curves: Mapping[str, Series],
    *,
    title: str,
    ylabel: str = "value",
    logy: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Several scalar curves ``{label: Series}`` on one axes (losses, schedules)."""
    fig, ax = _axes(ax, (6.4, 4.0))
    for label, series in curves.items():
        ax.plot(series.steps, series.values, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if curves:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_curve_matrix(
    matrix: CurveMatrix,
    *,
    title: str,
    cbar_label: str = "log10 value",
    log: bool = True,
    row_label: Callable[[Any], str] = str,
) -> Figure:
    """Heat map of aligned curves (keys × steps, :func:`~pila.analysis.scalars.align_curves`).

    Cells without a value stay blank, and so do values ≤ 0 when ``log`` is set.
    """
    values = np.log10(np.where(matrix.values > 0, matrix.values, np.nan)) if log else matrix.values
    k, n = values.shape
    fig, ax = plt.subplots(figsize=(min(6.0 + 0.1 * n, 14.0), 1.2 + 0.24 * k), layout="constrained")
    image = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(k), [row_label(key) for key in matrix.keys], fontsize=7)
    ticks = np.linspace(0, n - 1, min(n, 6)).round().astype(int) if n else []
    ax.set_xticks(ticks, [str(matrix.steps[i]) for i in ticks])
    ax.set_xlabel("step")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=cbar_label)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 80) -> None:
    """Write ``fig`` to ``path`` (format from the suffix) atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=os.fspath(path).rsplit(".", 1)[-1])
