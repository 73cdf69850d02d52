"""Snapshot ensembles (the paper's Section 4.3): average the softmax outputs of the networks saved at
the ends of warm-restart cycles, with equal weights, and report test error for M = 1, 2, 3 ...

    python ensemble.py outputs/runs/wr_s10_m2 [more run folders ...]

With several runs, M counts snapshots per run: M = 3 over 3 runs is the paper's "3 runs x 3
snapshots". The members are each run's last M snapshots (just before the last M restarts).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from distributed import pick_device
from errors import ShowDefaults, UserError, reports_user_errors
from snapshots import TestSet, last_m_errors, snapshots_in


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=ShowDefaults,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (outputs/runs/wr_...) holding snapshots/")
    parser.add_argument("--data-dir", default="data", help="folder holding the data set (default: data)")
    parser.add_argument("--device", default="auto", help="as train.py's --device (default: auto)")
    return parser


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for run in args.runs:
        if not run.is_dir():
            raise UserError(f"{run} is not a folder: give run folders such as outputs/runs/wr_s10_m2.")
    folders = [run.resolve() for run in args.runs]
    if len(set(folders)) < len(folders):
        twice = sorted({str(run) for run, folder in zip(args.runs, folders) if folders.count(folder) > 1})
        print(f"warning: {', '.join(twice)} given more than once: each run counted once", file=sys.stderr)
        args.runs = [run for k, run in enumerate(args.runs) if folders.index(folders[k]) == k]
    runs = [snapshots_in(run) for run in args.runs]
    for run, snapshots in zip(args.runs, runs):
        if not snapshots:
            raise UserError(
                f"{run} has no snapshots: they are taken at the end of each warm-restart cycle "
                "(python train.py --warm-restart ...), in <run folder>/snapshots/."
            )
    test = TestSet(args.data_dir, pick_device(args.device))
    print(f"{len(runs)} run(s); snapshots per run: {', '.join(str(len(s)) for s in runs)}")
    print("| M | members (epochs, per run) | test error |")
    print("| --- | --- | --- |")
    for m, error in last_m_errors(runs, test):
        epochs = "; ".join(", ".join(str(int(p.stem.split("_")[1])) for p in snapshots[-m:]) for snapshots in runs)
        print(f"| {m} | {epochs} | {error:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
