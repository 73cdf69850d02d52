"""Figures from saved results: per-run losses and learning rates, and the combined validation losses.

Run as a script, it merges the three reference runs' validation losses into one figure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.style
from matplotlib.figure import Figure

import runfiles
from errors import ShowDefaults, UserError, reports_user_errors

# Figures are built with matplotlib's object API (no pyplot): nothing global, no GUI
# backend, nothing that can block a headless machine.
FIGSIZE = (10, 7)
STYLE = "ggplot"
WR_COLORS = ("green", "gray", "blue", "purple", "brown", "olive")


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


def load_losses(path: Path, command: str) -> list[float]:
    """A ``*.pkl`` list of per-epoch losses, read without running code from it; a message naming the file
    and its producer if unusable."""
    if not path.is_file():
        raise UserError(f"{path} is missing. It is written by: {command}")
    try:
        values = runfiles.load_floats(path)
    except UserError as error:
        raise UserError(f"{error} Rerun: {command}") from None
    if not values:
        raise UserError(f"{path} is not a list of per-epoch losses. Rerun: {command}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=ShowDefaults)
    parser.add_argument("--output-dir", default="outputs", help="folder with the runs' pickles (default: outputs)")
    parser.add_argument(
        "--t-zeros",
        type=int,
        nargs="+",
        default=[50, 200],
        metavar="T0",
        help="T_0 of the warm-restart runs to draw, T_mult 1 (default: 50 200)",
    )
    return parser


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output_dir)
    runs = [(False, 0, "red", "Multistep (default)")]
    runs += [
        (True, t0, WR_COLORS[i % len(WR_COLORS)], f"Warm restarts, T_0 = {t0}") for i, t0 in enumerate(args.t_zeros)
    ]
    curves = []
    for warm_restart, t0, color, label in runs:
        path = runfiles.run_files(out, warm_restart, t0, 1).val_loss
        command = runfiles.train_command(warm_restart, t0, 1, out) + " (sh run.sh runs the reference runs)"
        curves.append((load_losses(path, command), color, label))
    target = runfiles.combined_figure(out)
    line_figure(curves, "Epochs", "Validation loss", target)
    print(f"Saved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
