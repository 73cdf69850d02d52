"""The figures the scripts draw: one size, style and set of colours, and the per-run loss and
learning-rate figures train.py writes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.style
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sgdr import storage

# Figures are built with matplotlib's object API (no pyplot): nothing global, no GUI
# backend, nothing that can block a headless machine.
FIGSIZE = (10, 7)
STYLE = "ggplot"
# Curves take their colours in this order: the reference figure's multistep run red, then its warm-restart
# runs green and gray (the tutorial's colours). The report's schedules have styles of their own (report.py).
PALETTE = ("red", "green", "gray", "blue", "purple", "orange", "brown", "olive", "cyan", "black")


def color(k: int) -> str:
    """The colour of the k-th curve (from 0) of a figure."""
    return PALETTE[k % len(PALETTE)]


# The warm-restart runs of the reference figure (run.sh's, T_mult 1), in that order of colours.
REFERENCE_T_ZEROS = (50, 200)
# A loss figure's y axis is clipped when some losses exceed SPIKE times the upper quartile of all
# its losses: the first epochs of a short run can be 10^4 (BatchNorm's running statistics are not
# yet the data's) and would flatten every later epoch into a line at zero.
SPIKE = 10


def _save(fig: Figure, path: Path) -> None:
    with storage.atomic_write(path) as f:
        fig.savefig(f, format=path.suffix.lstrip("."))


def clipped_limits(values: Sequence[float]) -> tuple[float, float] | None:
    """The y axis of a figure whose few spikes would flatten the rest: the other values with
    matplotlib's 5% margins, spikes being the values above SPIKE x the upper quartile of all of
    them; None when there is no spike, and matplotlib chooses the axis as always."""
    finite = sorted(v for v in values if math.isfinite(v))
    if len(finite) < 4:
        return None
    quartile = finite[(3 * len(finite)) // 4]
    if quartile <= 0 or finite[-1] <= SPIKE * quartile:
        return None
    kept = [v for v in finite if v <= SPIKE * quartile]
    margin = 0.05 * (kept[-1] - kept[0])
    return kept[0] - margin, kept[-1] + margin


def draw(curves: Sequence[tuple], xlabel: str, ylabel: str, clip: bool = False) -> Figure:
    """One 10x7-inch ggplot-style figure of (values, colour, label) curves against 1, 2, 3, ... With
    ``clip``, spikes (see ``clipped_limits``) are cut off the axis, drawn as triangles on its top
    edge, and the title says so with the largest value. (The report's comparisons are
    ``comparison_figure``'s.)"""
    with matplotlib.style.context(STYLE):
        fig = Figure(figsize=FIGSIZE)
        ax = fig.subplots()
        limits = clipped_limits([v for curve in curves for v in curve[0]]) if clip else None
        top = limits[1] if limits else None
        above = []
        for values, color, label in curves:
            xs = list(range(1, len(values) + 1))
            ax.plot(xs, values, color=color, label=label)
            if top is not None:
                spikes = [(at, v) for at, v in zip(xs, values) if v > top]
                ax.plot([at for at, _ in spikes], [top] * len(spikes), "^", color=color, clip_on=False)
                above += [v for _, v in spikes]
        if limits is not None:
            ax.set_ylim(*limits)
            ax.set_title(
                f"{ylabel} axis cut at {top:.3g}: {len(above)} point{'s' * (len(above) != 1)} above it "
                f"(triangles; the largest {max(above):.4g})",
                fontsize="medium",
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if any(curve[2] for curve in curves):
            ax.legend()
    return fig


@dataclass(frozen=True)
class Style:
    """How one series is drawn in every figure it appears in: its colour, line style and (hollow) marker."""

    color: str
    linestyle: str
    marker: str


@dataclass
class Series:
    """A curve of a comparison figure: ``values`` at ``x``, drawn in ``style``; ``marked``: the indices of the
    points that always get a marker (a long series gets markers on some points only)."""

    x: Sequence[float]
    values: Sequence[float]
    label: str
    style: Style
    marked: Sequence[int] = field(default_factory=list)


MARKERS_PER_SERIES = 24  # at most, besides the marked points: markers on every epoch of 200 would be a smear


def _markevery(series: Series, k: int, count: int) -> list[int]:
    """The points of the k-th of ``count`` series that get markers: all of a short series; of a long one, every
    step-th, shifted by k / count of a step so that two series on the same curve show each other's markers."""
    n = len(series.values)
    if n <= MARKERS_PER_SERIES:
        return list(range(n))
    step = math.ceil(n / MARKERS_PER_SERIES)
    return sorted({*range((k * step) // max(count, 1), n, step), *series.marked, n - 1})


def comparison_figure(
    series: Sequence[Series],
    xlabel: str,
    ylabel: str,
    title: str,
    marks: Sequence[tuple] = (),
    note: str = "",
    integer_x: bool = False,
) -> Figure:
    """A figure that compares series where none can hide another: each in its own style with hollow markers
    (where two series coincide, both markers show), the legend outside the data area, a ``title`` and, under
    the axes, a ``note`` (what the figure cannot show). ``marks``: (x, y, colour, label) points drawn as stars.
    ``integer_x``: ticks at whole numbers only (counts such as M)."""
    with matplotlib.style.context(STYLE):
        fig = Figure(figsize=FIGSIZE, layout="constrained")
        ax = fig.subplots()
        for k, one in enumerate(series):
            ax.plot(
                list(one.x),
                list(one.values),
                color=one.style.color,
                linestyle=one.style.linestyle,
                marker=one.style.marker,
                markerfacecolor="none",
                markersize=9 if len(one.values) == 1 else 7,
                markevery=_markevery(one, k, len(series)),
                label=one.label,
            )
        for at, value, color, _ in marks:
            ax.plot([at], [value], "*", color=color, markersize=14, markeredgecolor="black")
        for label in dict.fromkeys(mark[3] for mark in marks if mark[3]):  # in the legend once, in no one's colour
            ax.plot([], [], "*", color="white", markeredgecolor="black", markersize=14, label=label)
        if integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            xs = [x for one in series for x in one.x]
            if xs and min(xs) == max(xs):  # one point: a little room either side, not a unit interval of ticks
                ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.suptitle(title, fontsize="medium")
        if note:  # over the axes, where the layout makes room for it
            ax.set_title(note, fontsize="small", loc="left", wrap=True)
        if handles := ax.get_legend_handles_labels()[0]:  # below the axes: the data keep the figure's width
            fig.legend(loc="outside lower center", fontsize="small", ncols=2 if len(handles) > 3 else 1)
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """``fig`` saved to ``path`` (its type from the suffix) in the figures' style."""
    with matplotlib.style.context(STYLE):
        _save(fig, path)


def line_figure(curves: Sequence[tuple], xlabel: str, ylabel: str, path: Path, clip: bool = False) -> None:
    """``draw``'s figure, saved to ``path`` (its type from the suffix) in the same style."""
    save_figure(draw(curves, xlabel, ylabel, clip), path)


def save_loss_figure(train_losses: Sequence[float], val_losses: Sequence[float], path: Path) -> None:
    """A run's training loss (orange) and validation loss (red) against epochs."""
    curves = [(train_losses, "orange", "train loss"), (val_losses, "red", "validation loss")]
    line_figure(curves, "Epochs", "Loss", path, clip=True)


def save_lr_figure(lrs: Sequence[float], path: Path) -> None:
    """The learning rate of every training iteration (blue) against iterations."""
    line_figure([(lrs, "blue", "")], "Iterations", "Learning rate", path)
