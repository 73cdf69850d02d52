"""Reproduction report: this project's test errors beside the SGDR paper's Tables 1 and 2.

    python report.py --runs outputs/grid

Reads every finished run under --runs (their run.json, metrics.jsonl and snapshots), groups
them by their complete settings but the seed and the schedule, and writes report.md and
figures to --out: for each schedule, the median over seeds of the test error of the network
the paper reports (the recommended solution, see RECOMMENDED) beside the last epoch's (Table
1), the recommended solutions against epochs (Figure 2), and snapshot ensembles for M = 1, 2,
3 (Table 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sgdr.cli import Parser, reports_user_errors
from sgdr.data import cifar
from sgdr.paper import grid
from sgdr.paper.report import write_report
from sgdr.parallel import devices


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path(grid.DEFAULTS["GRID_DIR"]),
        help="folder searched for runs (grid.sh's GRID_DIR)",
    )
    parser.add_argument("--out", type=Path, help="folder for report.md and figures (default: <runs>/report)")
    parser.add_argument("--data-dir", default=cifar.DATA_DIR, help="data set folder, for the ensembles' test set")
    parser.add_argument("--device", type=devices.device_name, default=devices.AUTO, help="as train.py's --device")
    parser.add_argument("--skip-ensembles", action="store_true", help="leave out Table 2 (needs no data set then)")
    return parser


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(write_report(args.runs, args.out or args.runs / "report", args.data_dir, args.device, args.skip_ensembles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
