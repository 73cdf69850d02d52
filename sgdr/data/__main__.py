"""``python -m sgdr.data [train.py flags]``: fetch the data set that train.py with these flags reads (its
--data-dir and --dataset; the other flags are ignored), once. run.sh --parallel does this before starting its
jobs, so a missing network is one message rather than one failed log per job."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from sgdr.cli import Parser, reports_user_errors
from sgdr.data.cifar import DATA_DIR, DATASETS, fetch


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(
        prog="python -m sgdr.data",
        description="Download CIFAR once, before several runs start.",
    )
    parser.add_argument("--data-dir", default=DATA_DIR, help="as train.py's")
    parser.add_argument(
        "--dataset", choices=sorted(DATASETS), default="cifar10", help="as train.py's (default: cifar10)"
    )
    args, _ = parser.parse_known_args(argv)
    fetch(args.data_dir, args.dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
