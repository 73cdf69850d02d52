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

import torch

import checkpoint
import cifar
import runfiles
from distributed import pick_device
from errors import ShowDefaults, UserError, reports_user_errors
from models import build_network, top1_correct


def average_softmax(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Equal-weight mean of the members' softmax probabilities (not of their logits)."""
    return torch.stack([member.float().softmax(dim=1) for member in logits]).mean(dim=0)


def error_rate(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 test error of ``scores`` (probabilities or logits), as a fraction."""
    return 1 - top1_correct(scores, labels).item() / len(labels)


def snapshots_in(run: Path) -> list[Path]:
    """A run folder's snapshots, oldest first; other files in its snapshots/ are named once, and left alone."""
    snapshots, others = runfiles.snapshots_in(run)
    if others:
        print(f"note: ignoring {', '.join(map(str, others))}: not snapshots written by train.py.", file=sys.stderr)
    return snapshots


class TestSet:
    """Test-set outputs of snapshots, each computed once: the test set of the snapshots' data set
    (the subset they were validated on), evaluated on ``device``."""

    def __init__(self, data_dir: str | Path, device: torch.device, batch_size: int = 500):
        self.data_dir, self.device, self.batch_size = data_dir, device, batch_size
        self.key: tuple | None = None
        self.loader = None
        self.cache: dict[Path, torch.Tensor] = {}

    def logits(self, path: Path) -> torch.Tensor:
        if path not in self.cache:
            snapshot = checkpoint.load_snapshot(path)
            config = snapshot["config"]
            key = (config["dataset"], config["val_subset"])
            if self.key is None:
                self.key = key
                _, val_set = cifar.load_splits(self.data_dir, None, config["val_subset"], config["dataset"])
                self.loader = cifar.DeviceLoader(val_set, self.batch_size, self.device, stats=config["dataset"])
                self.stats = {"mean": self.loader.mean, "std": self.loader.std}
            elif key != self.key:
                raise UserError(
                    f"{path} was evaluated on {key}, the other snapshots on {self.key}: an ensemble needs one test set."
                )
            # Each snapshot's inputs as its run normalised them (the paper's recipe: its training mean image);
            # snapshots from before recipes: the data set's per-channel statistics.
            inputs = snapshot.get("inputs", {})
            self.loader.mean, self.loader.std = (
                inputs[k].to(self.device) if k in inputs else self.stats[k] for k in ("mean", "std")
            )
            model = build_network(config["model"], snapshot["num_classes"])
            model.load_state_dict(snapshot["model"])
            model.to(self.device).eval()
            with torch.inference_mode():
                self.cache[path] = torch.cat([model(images).float().cpu() for images, _ in self.loader])
        return self.cache[path]

    def labels(self) -> torch.Tensor:
        return self.loader.labels.cpu()


def last_m_errors(
    runs: Sequence[Sequence[Path]], test: TestSet, largest_m: int | None = None
) -> list[tuple[int, float]]:
    """(M, test error) of the ensemble of every run's last M snapshots, for M = 1 .. the fewest any run has."""
    fewest = min(len(snapshots) for snapshots in runs)
    rows = []
    for m in range(1, min(fewest, largest_m or fewest) + 1):
        members = [test.logits(path) for snapshots in runs for path in snapshots[-m:]]
        rows.append((m, error_rate(average_softmax(members), test.labels())))
    return rows


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
