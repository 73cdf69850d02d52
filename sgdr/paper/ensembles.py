"""Snapshot ensembles (the paper's Section 4.3): the snapshots a run keeps at the ends of its
warm-restart cycles, their test-set outputs, and the test error of equal-weight averages of their
softmax outputs. ensemble.py and report.py print them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from sgdr.cli import UserError
from sgdr.data import cifar, loaders
from sgdr.parallel.devices import arithmetic, autocast_of
from sgdr.run import checkpoint, layout
from sgdr.run.record import DamagedRecord, read_record
from sgdr.run.settings import same_run, upgrade
from sgdr.training.networks import build_network, deterministic_pooling, top1_correct


def average_softmax(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Equal-weight mean of the members' softmax probabilities (not of their logits)."""
    return torch.stack([member.float().softmax(dim=1) for member in logits]).mean(dim=0)


def error_rate(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 test error of ``scores`` (probabilities or logits), as a fraction."""
    return 1 - top1_correct(scores, labels).item() / len(labels)


def run_snapshots(run: Path) -> list[Path]:
    """A run folder's snapshots, oldest first; other files in its snapshots/ are named once, and left alone."""
    snapshots, others = layout.snapshots_in(run)
    if others:
        print(f"note: ignoring {', '.join(map(str, others))}: not snapshots written by train.py.", file=sys.stderr)
    return snapshots


class SnapshotOutputs:
    """Test-set outputs of snapshots, each computed once: the test set of the snapshots' data set
    (the subset they were validated on), evaluated on ``device``."""

    def __init__(self, data_dir: str | Path, device: torch.device, batch_size: int = 500):
        self.data_dir, self.device, self.batch_size = data_dir, device, batch_size
        self.key: tuple | None = None
        self.loader = None
        self.cache: dict[Path, torch.Tensor] = {}

    def logits(self, path: Path) -> torch.Tensor:
        if path not in self.cache:
            self.cache[path] = self.evaluate(checkpoint.load_snapshot(path), path)
        return self.cache[path]

    def evaluate(
        self, snapshot: dict, path: Path, prepare: Callable[[torch.nn.Module, loaders.DeviceLoader], None] | None = None
    ) -> torch.Tensor:
        """Test-set logits (on the CPU) of the network a snapshot holds (as ``checkpoint.load_snapshot`` reads
        it; ``path`` names it in errors and says whose run it is). ``prepare(model, test_loader)``, if given,
        runs first in the run's arithmetic, with the network on the device and the loader normalising as the
        run did (the weight averages recompute BatchNorm's statistics there)."""
        config = snapshot["config"]
        key = (config["dataset"], config["test_subset"])
        if self.key is None:
            self.key = key
            test_set = cifar.load_test_set(self.data_dir, config["test_subset"], config["dataset"])
            self.loader = loaders.DeviceLoader(test_set, self.batch_size, self.device, stats=config["dataset"])
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
        model = network_of(snapshot, path)
        check_owner(path, config)
        # Evaluated as its run validated it: in the run's precision (TF32, autocast), determinism,
        # pooling and memory format; snapshots from before a setting existed, as they trained.
        run = upgrade(config)
        if run["deterministic"]:
            deterministic_pooling(model)
        layout_ = torch.channels_last if run["channels_last"] else torch.contiguous_format
        model.to(self.device, memory_format=layout_)
        self.loader.memory_format = layout_
        autocast = autocast_of(run["amp"], self.device)
        with arithmetic(run["tf32"], run["deterministic"], self.device):
            if prepare is not None:
                with torch.no_grad(), autocast():
                    prepare(model, self.loader)
            model.eval()
            with torch.inference_mode(), autocast():
                return torch.cat([model(images).float().cpu() for images, _ in self.loader])

    def labels(self) -> torch.Tensor:
        return self.loader.labels.cpu()


def network_of(snapshot: dict, path: Path) -> torch.nn.Module:
    """The network a snapshot (as ``checkpoint.load_snapshot`` reads it, from ``path``) holds, on the CPU; a
    UserError naming the file when this version does not build that network as saved."""
    config = snapshot["config"]
    try:
        model = build_network(config["model"], snapshot["num_classes"])
        model.load_state_dict(snapshot["model"])
    except (ValueError, RuntimeError) as error:
        raise UserError(
            f"the snapshot {path} does not hold the {config['model']} its settings name "
            f"({str(error).splitlines()[0]}). Leave it out, or restore it from a backup."
        ) from None
    return model


def check_owner(path: Path, config: dict) -> None:
    """A UserError when the snapshot at ``path`` holds another run's network than its folder's record names (a
    snapshot copied in from another run would join this run's ensembles)."""
    owner = path.parent.parent  # <run folder>/snapshots/epoch_NNNN.pt
    try:
        recorded = read_record(layout.record_of(owner)).same_run
    except (OSError, DamagedRecord):
        return  # no record to hold it against
    if recorded != same_run(config):
        raise UserError(
            f"the snapshot {path} is another run's: its settings are not those of {layout.record_of(owner)}. "
            f"Move it out of {path.parent}, or leave this run out."
        )


def ensemble_error(members: Sequence[Path], test: SnapshotOutputs) -> float:
    """Test error (a fraction) of the equal-weight ensemble of the snapshots ``members``."""
    return error_rate(average_softmax([test.logits(path) for path in members]), test.labels())


def last_m_errors(
    runs: Sequence[Sequence[Path]], test: SnapshotOutputs, largest_m: int | None = None
) -> list[tuple[int, float]]:
    """(M, test error) of the ensemble of every run's last M snapshots, for M = 1 .. the fewest any run has."""
    fewest = min(len(snapshots) for snapshots in runs)
    rows = []
    for m in range(1, min(fewest, largest_m or fewest) + 1):
        rows.append((m, ensemble_error([path for snapshots in runs for path in snapshots[-m:]], test)))
    return rows
