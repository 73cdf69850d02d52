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

from sgdr.cli import ShowDefaults, UserError, reports_user_errors
from sgdr.paper.ensembles import SnapshotOutputs, last_m_errors, run_snapshots
from sgdr.parallel.devices import pick_device
from sgdr.run import layout
from sgdr.run.record import DamagedRecord, read_record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=ShowDefaults,
        epilog="\n".join(__doc__.splitlines()[1:]),
        allow_abbrev=False,
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (outputs/runs/wr_...) holding snapshots/")
    parser.add_argument("--data-dir", default="data", help="folder holding the data set (default: data)")
    parser.add_argument("--device", default="auto", help="as train.py's --device (default: auto)")
    return parser


def same_run_key(run: Path) -> str:
    """What makes two run folders the same run (``settings.same_run``: its settings, seed and images, from its
    run.json), or the folder itself when there is no readable record."""
    try:
        return read_record(layout.record_of(run)).same_run
    except (OSError, DamagedRecord):
        return str(run.resolve())


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for run in args.runs:
        if not run.is_dir():
            raise UserError(f"{run} is not a folder: give run folders such as outputs/runs/wr_s10_m2.")
    # The same run given twice, or a copy of it (the same settings and seed): counted once.
    seen: dict[str, Path] = {}
    kept = []
    for run in args.runs:
        key = same_run_key(run)
        if key in seen:
            print(f"warning: {run} is the same run as {seen[key]}: counted once", file=sys.stderr)
        else:
            seen[key] = run
            kept.append(run)
    args.runs = kept
    runs = [run_snapshots(run) for run in args.runs]
    for run, snapshots in zip(args.runs, runs):
        if not snapshots:
            raise UserError(
                f"{run} has no snapshots: they are taken at the end of each warm-restart cycle "
                "(python train.py --warm-restart ...), in <run folder>/snapshots/."
            )
    test = SnapshotOutputs(args.data_dir, pick_device(args.device))
    print(f"{len(runs)} run(s); snapshots per run: {', '.join(str(len(s)) for s in runs)}")
    print("| M | members (epochs, per run) | test error |")
    print("| --- | --- | --- |")
    for m, error in last_m_errors(runs, test):
        epochs = "; ".join(", ".join(str(int(p.stem.split("_")[1])) for p in snapshots[-m:]) for snapshots in runs)
        print(f"| {m} | {epochs} | {error:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
