"""The figures the scripts draw: one size, style and set of colours, and the per-run loss and
learning-rate figures train.py writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.style
from matplotlib.figure import Figure

import runfiles

# Figures are built with matplotlib's object API (no pyplot): nothing global, no GUI
# backend, nothing that can block a headless machine.
FIGSIZE = (10, 7)
STYLE = "ggplot"
WR_COLORS = ("green", "gray", "blue", "purple", "brown", "olive")
# The warm-restart runs of the reference figure (run.sh's, T_mult 1), in that order of colours.
REFERENCE_T_ZEROS = (50, 200)


def _save(fig: Figure, path: Path) -> None:
    with runfiles.atomic_write(path) as f:
        fig.savefig(f, format=path.suffix.lstrip("."))


def line_figure(curves: Sequence[tuple], xlabel: str, ylabel: str, path: Path) -> None:
    """One 10x7-inch ggplot-style figure of (values, colour, label) curves against 1, 2, 3, ...,
    or of (values, colour, label, x) curves against x, drawn with a marker at each point."""
    with matplotlib.style.context(STYLE):
        fig = Figure(figsize=FIGSIZE)
        ax = fig.subplots()
        for values, color, label, *x in curves:
            xs = x[0] if x else range(1, len(values) + 1)
            ax.plot(xs, values, color=color, label=label, marker="o" if x else None)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if any(curve[2] for curve in curves):
            ax.legend()
        _save(fig, path)


def save_loss_figure(train_losses: Sequence[float], val_losses: Sequence[float], path: Path) -> None:
    """A run's training loss (orange) and validation loss (red) against epochs."""
    curves = [(train_losses, "orange", "train loss"), (val_losses, "red", "validation loss")]
    line_figure(curves, "Epochs", "Loss", path)


def save_lr_figure(lrs: Sequence[float], path: Path) -> None:
    """The learning rate of every training iteration (blue) against iterations."""
    line_figure([(lrs, "blue", "")], "Iterations", "Learning rate", path)
