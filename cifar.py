"""CIFAR-10: torchvision datasets, the reference transforms, and the loaders that feed a run."""

from __future__ import annotations

import os
import signal
import urllib.error
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms
from torchvision.datasets import CIFAR10

from errors import UserError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.243, 0.261)
TRAIN_IMAGES = 50_000
TEST_IMAGES = 10_000


def train_transform() -> transforms.Compose:
    """The reference augmentation: flip (p=0.5), 32x32 crop of a 4-pixel reflect-padded image."""
    return transforms.Compose(
        [
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


def val_transform() -> transforms.Compose:
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def load_cifar10(root: str | Path, train: bool, transform=None) -> CIFAR10:
    """torchvision's CIFAR10 under ``root``, downloaded when absent; a clear error when it can't be."""
    try:
        return CIFAR10(str(root), train=train, transform=transform, download=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad checksum, RuntimeError
        raise UserError(_data_unavailable(root, error)) from None


def _data_unavailable(root: str | Path, error: Exception) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    folder = os.path.join(root, CIFAR10.base_folder)
    return (
        f"CIFAR-10 is not in {folder} (or is incomplete or corrupt) and could not be "
        f"downloaded ({reason}).\n"
        f"Download {CIFAR10.url} on a machine with a network and put the file in "
        f"{root}/ (it is checked and unpacked on the next run), or unpack it there so that "
        f"{os.path.join(folder, 'data_batch_1')} exists. --data-dir points elsewhere."
    )


def _first(dataset: Dataset, count: int | None, flag: str, root: str | Path) -> Dataset:
    """The first ``count`` images (all of them when ``count`` is None)."""
    if count is None:
        return dataset
    if count > len(dataset):
        raise UserError(f"{flag} {count} is larger than the {len(dataset)} images found in {root}.")
    return Subset(dataset, range(count))


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    """Worker processes ignore Ctrl-C and SIGTERM: the main process stops the run at a batch
    boundary and then shuts them down (a worker that died first would break that batch)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def build_loaders(
    data_dir: str | Path,
    batch_size: int,
    workers: int,
    generator: torch.Generator,
    device: torch.device,
    train_subset: int | None = None,
    val_subset: int | None = None,
) -> tuple[DataLoader, DataLoader]:
    """The reference loaders: training shuffled every epoch, last partial batch kept.

    ``generator`` owns the shuffle and the seeds of the worker processes, so one seed
    fixes the order and the augmentation of every epoch (for a given ``workers``).
    """
    train_set = _first(load_cifar10(data_dir, True, train_transform()), train_subset, "--train-subset", data_dir)
    val_set = _first(load_cifar10(data_dir, False, val_transform()), val_subset, "--val-subset", data_dir)
    common = dict(batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda",
                  worker_init_fn=_leave_signals_to_the_main_process)
    train_loader = DataLoader(train_set, shuffle=True, generator=generator, **common)
    val_loader = DataLoader(val_set, shuffle=False, **common)
    return train_loader, val_loader
