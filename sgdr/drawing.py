"""The figures the scripts draw: one size, style and set of colours, and the per-run loss and
learning-rate figures train.py writes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.style
from matplotlib.figure import Figure

from sgdr import storage

# Figures are built with matplotlib's object API (no pyplot): nothing global, no GUI
# backend, nothing that can block a headless machine.
FIGSIZE = (10, 7)
STYLE = "ggplot"
# Curves take their colours in this order: the reference figure's multistep run red, then its warm-restart
# runs green and gray (the tutorial's colours); the report's schedules the same way.
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


def draw(curves: Sequence[tuple], xlabel: str, ylabel: str, clip: bool = False, marks: Sequence[tuple] = ()) -> Figure:
    """One 10x7-inch ggplot-style figure of (values, colour, label) curves against 1, 2, 3, ...,
    or of (values, colour, label, x) curves against x, drawn with a marker at each point. With
    ``clip``, spikes (see ``clipped_limits``) are cut off the axis, drawn as triangles on its top
    edge, and the title says so with the largest value. ``marks``: (x, y, colour, label) points
    drawn as stars, without a line."""
    with matplotlib.style.context(STYLE):
        fig = Figure(figsize=FIGSIZE)
        ax = fig.subplots()
        limits = clipped_limits([v for curve in curves for v in curve[0]]) if clip else None
        top = limits[1] if limits else None
        above = []
        for values, color, label, *x in curves:
            xs = list(x[0] if x else range(1, len(values) + 1))
            ax.plot(xs, values, color=color, label=label, marker="o" if x else None)
            if top is not None:
                spikes = [(at, v) for at, v in zip(xs, values) if v > top]
                ax.plot([at for at, _ in spikes], [top] * len(spikes), "^", color=color, clip_on=False)
                above += [v for _, v in spikes]
        for at, value, color, label in marks:
            ax.plot([at], [value], "*", color=color, label=label, markersize=14, markeredgecolor="black")
        if limits is not None:
            ax.set_ylim(*limits)
            ax.set_title(
                f"{ylabel} axis cut at {top:.3g}: {len(above)} point{'s' * (len(above) != 1)} above it "
                f"(triangles; the largest {max(above):.4g})",
                fontsize="medium",
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if any(curve[2] for curve in curves) or any(mark[3] for mark in marks):
            ax.legend()
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
