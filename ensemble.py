"""Snapshot ensembles (the paper's Section 4.3): average the softmax outputs of the networks saved at
the ends of warm-restart cycles, with equal weights, and report test error for M = 1, 2, 3 ...

    python ensemble.py outputs/runs/wr_s10_m2 [more run folders ...]

With several runs, M counts snapshots per run: M = 3 over 3 runs is the paper's "3 runs x 3
snapshots". The members are each run's last M snapshots (just before the last M restarts).
Beside each row, SWA of the same snapshots: their weights averaged and BatchNorm's statistics
recomputed over the run's training images, one network per run (several runs: those networks'
softmax outputs averaged). A run trained with --ema: its moving average's test error at the last
snapshot's epoch, as the run recorded it. A run of SWA's own schedule (--swa-start) keeps no snapshots:
it is refused, with its own average's test error. See docs/averaging.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sgdr.cli import Parser, UserError, int_at_least, reports_user_errors
from sgdr.data import cifar
from sgdr.paper.averages import AverageOutputs, last_m_swa_errors
from sgdr.paper.ensembles import SnapshotOutputs, last_m_errors, run_snapshots
from sgdr.parallel import devices
from sgdr.parallel.devices import pick_device
from sgdr.run import layout, record
from sgdr.run.outputs import read_metrics
from sgdr.run.record import read_record
from sgdr.run.settings import trains_swa


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (outputs/runs/wr_...) holding snapshots/")
    parser.add_argument("--data-dir", default=cifar.DATA_DIR, help="folder holding the data set")
    parser.add_argument("--device", type=devices.device_name, default=devices.AUTO, help="as train.py's --device")
    parser.add_argument(
        "--largest-m",
        type=int_at_least(1),
        default=None,
        metavar="M",
        help="the largest M shown (default: the fewest snapshots a run has)",
    )
    return parser


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for run in args.runs:
        if not run.is_dir():
            raise UserError(f"{run} is not a folder: give run folders such as outputs/runs/wr_s10_m2.")
    # The same run given twice, or a copy of it (the same settings, seed and images): counted once, the copy with
    # the most snapshots kept.
    args.runs, copies = record.counted_once(args.runs, record.folder_key, lambda run: len(layout.snapshots_in(run)[0]))
    for copy, kept in copies:
        print(f"warning: {copy} is the same run as {kept}: counted once", file=sys.stderr)
    runs = [run_snapshots(run) for run in args.runs]
    for run, snapshots in zip(args.runs, runs):
        if not snapshots:
            raise UserError(
                f"{run} has no snapshots: they are taken at the end of each warm-restart cycle "
                f"(python train.py --warm-restart ...), in <run folder>/snapshots/.{swa_said(run)}"
            )
    fewest = min(len(snapshots) for snapshots in runs)
    if args.largest_m is not None and args.largest_m > fewest:
        which = min(zip(runs, args.runs), key=lambda pair: len(pair[0]))[1]
        raise UserError(
            f"--largest-m {args.largest_m} is more snapshots than {which} has ({fewest}): "
            f"give --largest-m {fewest} or less, or leave it out."
        )
    test = SnapshotOutputs(args.data_dir, pick_device(args.device))
    average = AverageOutputs(test)
    print(f"{len(runs)} run(s); snapshots per run: {', '.join(str(len(s)) for s in runs)}")
    print("| M | members (epochs, per run) | test error | SWA of the same snapshots |")
    print("| --- | --- | --- | --- |")
    swa = dict(last_m_swa_errors(runs, average, args.largest_m))
    for m, error in last_m_errors(runs, test, args.largest_m):
        epochs = "; ".join(", ".join(str(layout.snapshot_epoch(p)) for p in snapshots[-m:]) for snapshots in runs)
        print(f"| {m} | {epochs} | {error:.2%} | {swa[m]:.2%} |")
    print(f"networks at test time: the ensemble M x {len(runs)}, SWA {len(runs)}")
    for run, snapshots in zip(args.runs, runs):
        if (ema := ema_error(run, layout.snapshot_epoch(snapshots[-1]))) is not None:
            print(f"{run}: EMA of the weights (--ema) at epoch {layout.snapshot_epoch(snapshots[-1])}: {ema:.2%}")
    return 0


def swa_said(run: Path) -> str:
    """For a run of SWA's own schedule (train.py --swa-start), which keeps no snapshots: where its own average's
    result is, and the result once validated; "" for another run."""
    try:
        config = read_record(layout.record_of(run)).config
    except (OSError, ValueError):
        return ""
    if not trains_swa(config):
        return ""
    said = (
        " It is a run of SWA's own schedule (--swa-start), which averages its weights as it trains and validates "
        "the average after its last epoch (swa_test_error in metrics.jsonl)"
    )
    validated = [row for row in recorded_metrics(run) if "swa_test_error" in row]
    if not validated:
        return f"{said}: not yet (resume it to its last epoch)."
    return f"{said}: after epoch {validated[-1]['epoch']}, {validated[-1]['swa_test_error']:.2%}."


def ema_error(run: Path, epoch: int) -> float | None:
    """The test error its run recorded for the moving average of its weights (train.py --ema) at ``epoch``, or
    None (a run without --ema, or metrics that cannot be read)."""
    row = next((row for row in recorded_metrics(run) if row.get("epoch") == epoch), {})
    return row.get("ema_test_error")


def recorded_metrics(run: Path) -> list[dict]:
    """The rows of the run's metrics.jsonl; none where it cannot be read (what they would add is left unsaid)."""
    try:
        return read_metrics(layout.metrics_of(run))
    except (OSError, ValueError):
        return []


if __name__ == "__main__":
    sys.exit(main())
