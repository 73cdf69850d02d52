"""Merge the reference runs' validation losses into one figure (loss_plot_combined.jpg).

The figures themselves (size, style, colours) are drawing.py's, shared with train.py's per-run figures.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sgdr import storage
from sgdr.cli import Parser, UserError, int_at_least, reports_user_errors
from sgdr.drawing import REFERENCE_T_ZEROS, color, line_figure
from sgdr.paper.grid import part_of_grid
from sgdr.run import layout
from sgdr.run.record import DamagedRecord, read_record


def load_losses(path: Path, command: str) -> list[float]:
    """A ``*.pkl`` list of per-epoch losses, read without running code from it; a message naming the file
    and its producer if unusable."""
    if path.exists() and not path.is_file():
        raise UserError(f"{path} is a folder, not a pickle of losses. Move or remove it; it is written by: {command}")
    if not path.is_file():
        raise UserError(f"{path} is missing. It is written by: {command}")
    try:
        values = storage.load_floats(path)
    except UserError as error:
        raise UserError(f"{error} Rerun: {command}") from None
    if not values:
        raise UserError(f"{path} is not a list of per-epoch losses. Rerun: {command}")
    return values


def unfinished(files: layout.RunFiles, losses: list[float]) -> str:
    """ "" for a finished run; else how far it got (``not finished: 12 of 200 epochs``), from its record."""
    try:
        record = read_record(layout.record_of(files.run_dir))
    except (OSError, DamagedRecord):
        return ""  # no record to read (runs from before records): drawn as they are
    return (
        ""
        if record.finished and len(losses) >= record.epochs
        else f"not finished: {len(losses)} of {record.epochs} epochs"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=layout.OUTPUT_DIR, help="folder with the runs' pickles")
    parser.add_argument(
        "--t-zeros",
        type=int_at_least(1),
        nargs="+",
        default=list(REFERENCE_T_ZEROS),
        metavar="T0",
        help="T_0 of the warm-restart runs to draw, T_mult 1 (default: 50 200)",
    )
    return parser


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output-dir {out} is a file, not a folder: name the folder the reference runs wrote to.")
    runs = [(False, 0, color(0), "Multistep (default)")]
    runs += [(True, t0, color(1 + i), f"Warm restarts, T_0 = {t0}") for i, t0 in enumerate(args.t_zeros)]
    if part_of_grid(out):  # a grid's seed folder holds a multistep run's pickles too: they are not the reference runs
        raise UserError(
            f"{out} holds a grid: plot.py draws the reference runs (sh run.sh writes them to outputs/), and "
            f"report.py reads a grid: python report.py --runs {out}"
        )
    curves, notes = [], []
    for warm_restart, t0, colour, label in runs:
        files = layout.run_files(out, warm_restart, t0, 1)
        command = layout.train_command(warm_restart, t0, 1, out) + " (sh run.sh runs the reference runs)"
        losses = load_losses(files.val_loss, command)
        if said := unfinished(files, losses):
            label = f"{label} ({said})"
            notes.append(f"note: {label}: sh run.sh again (with the same arguments) continues it.")
        curves.append((losses, colour, label))
    target = layout.combined_figure(out)
    line_figure(curves, "Epochs", "Validation loss", target, clip=True)
    print("\n".join([*notes, f"Saved {target}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
