"""Weight averages of a run's snapshots: Stochastic Weight Averaging (SWA) of its last M cycle-end
snapshots, with no extra training. The parameters are averaged with torch's ``AveragedModel`` (equal
weights), BatchNorm's running statistics recomputed with ``update_bn`` over the run's training images,
read in order and without augmentation, normalised as the run normalised them; the one network that
results is evaluated on the test set as a snapshot is (``SnapshotOutputs.evaluate``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from sgdr.cli import UserError
from sgdr.data import cifar, loaders
from sgdr.paper.ensembles import SnapshotOutputs, average_softmax, error_rate, network_of
from sgdr.run import checkpoint
from sgdr.run.settings import same_run


def averaged_snapshot(members: Sequence[Path]) -> dict:
    """A snapshot (as ``checkpoint.load_snapshot`` reads one) whose network is the equal-weight average of the
    parameters of the snapshots ``members`` (one run's), made by ``AveragedModel``. Its buffers, BatchNorm's
    running statistics among them, are the last member's (``AveragedModel`` keeps them in step with the
    network it last read) until ``recompute_batch_norm`` replaces them."""
    if not members:
        raise ValueError("an average needs at least one snapshot")
    average = None
    first = None
    for path in members:
        snapshot = checkpoint.load_snapshot(path)
        config = snapshot["config"]
        if first is None:
            first = snapshot
        elif config["model"] != first["config"]["model"] or snapshot["num_classes"] != first["num_classes"]:
            raise UserError(
                f"the snapshot {path} holds a {config['model']} ({snapshot['num_classes']} classes), "
                f"{members[0]} a {first['config']['model']} ({first['num_classes']} classes): weights of "
                "different networks cannot be averaged. Move it out of its run's snapshots/."
            )
        elif same_run(config) != same_run(first["config"]):
            raise UserError(
                f"the snapshots {members[0]} and {path} are of different runs: a weight average is taken "
                "over one run's snapshots. Move the other run's snapshot out of this run's snapshots/."
            )
        network = network_of(snapshot, path)
        if average is None:
            average = AveragedModel(network)
        average.update_parameters(network)
    # The last member's settings and inputs: all members share them but the epoch.
    return {**snapshot, "model": average.module.state_dict(), "members": [str(p) for p in members]}


def batch_norm_images(snapshot: dict, data_dir: str | Path, test_loader: loaders.DeviceLoader):
    """The training images of the snapshot's run (its --train-subset of its data set), in order, not
    augmented, normalised as ``test_loader`` normalises them (the run's inputs), in its batch size; a
    UserError when the images in ``data_dir`` are not those the run trained on."""
    config = snapshot["config"]
    train_set = cifar.load_train_set(data_dir, config["train_subset"], config["dataset"])
    if config.get("data") is not None:
        test_set = cifar.load_test_set(data_dir, config["test_subset"], config["dataset"])
        if cifar.data_digest(train_set, test_set) != config["data"]:
            raise UserError(
                f"the images in {data_dir} are not those the run of {snapshot['members'][-1]} trained on "
                f"(data {config['data']}): BatchNorm's statistics would be recomputed on other images. "
                "Point --data-dir at the data set the run used."
            )
    return loaders.in_order(train_set, test_loader, config["batch_size"])


def recompute_batch_norm(snapshot: dict, data_dir: str | Path):
    """The ``prepare`` step of ``SnapshotOutputs.evaluate`` for an averaged snapshot: BatchNorm's running
    statistics replaced by their averages over the run's training images as they pass the averaged
    network (``update_bn``: one pass in train mode, momentum None)."""

    def prepare(model: torch.nn.Module, test_loader: loaders.DeviceLoader) -> None:
        update_bn(batch_norm_images(snapshot, data_dir, test_loader), model)

    return prepare


class AverageOutputs:
    """Test-set logits of SWA networks, each computed once, evaluated by ``test`` (the ensembles' evaluator:
    the same test set, device and arithmetic as the snapshots)."""

    def __init__(self, test: SnapshotOutputs):
        self.test = test
        self.cache: dict[tuple[Path, ...], torch.Tensor] = {}

    def logits(self, members: Sequence[Path]) -> torch.Tensor:
        key = tuple(members)
        if key not in self.cache:
            snapshot = averaged_snapshot(members)
            prepare = recompute_batch_norm(snapshot, self.test.data_dir)
            self.cache[key] = self.test.evaluate(snapshot, members[-1], prepare)
        return self.cache[key]


def swa_error(runs: Sequence[Sequence[Path]], average: AverageOutputs) -> float:
    """Test error (a fraction) of SWA over each run's snapshots ``runs[i]``: one network per run; with several
    runs, the equal-weight ensemble (averaged softmax) of their SWA networks, one network per run."""
    return error_rate(average_softmax([average.logits(members) for members in runs]), average.test.labels())


def last_m_swa_errors(
    runs: Sequence[Sequence[Path]], average: AverageOutputs, largest_m: int | None = None
) -> list[tuple[int, float]]:
    """(M, test error) of SWA of every run's last M snapshots, for the M ``ensembles.last_m_errors`` gives."""
    fewest = min(len(snapshots) for snapshots in runs)
    return [
        (m, swa_error([snapshots[-m:] for snapshots in runs], average))
        for m in range(1, min(fewest, largest_m or fewest) + 1)
    ]
