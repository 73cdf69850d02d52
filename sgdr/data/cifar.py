"""CIFAR-10 and CIFAR-100 as torchvision reads them: downloaded once for many processes, cut to subsets, and
the digest that tells one set of images from another."""

from __future__ import annotations

import fcntl
import hashlib
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import CIFAR10, CIFAR100

from sgdr.cli import UserError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.247, 0.243, 0.261)
DATA_DIR = "data"  # where the scripts look for the data sets, unless --data-dir says
TRAIN_IMAGES = 50_000
TEST_IMAGES = 10_000


@dataclass(frozen=True)
class Spec:
    """What differs between the two data sets: torchvision class, classes, normalisation."""

    title: str
    source: type[CIFAR10]
    classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    first_file: str  # a file of the unpacked archive, named in the offline message


DATASETS = {
    "cifar10": Spec("CIFAR-10", CIFAR10, 10, MEAN, STD, "data_batch_1"),
    # CIFAR-100's per-channel mean and standard deviation over its 50,000 training images.
    "cifar100": Spec("CIFAR-100", CIFAR100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "train"),
}


def load_cifar(root: str | Path, train: bool, dataset: str = "cifar10", download: bool = True) -> CIFAR10:
    """torchvision's CIFAR10 or CIFAR100 under ``root``, downloaded when absent (unless ``download`` is
    False: the read-only tools create nothing); a clear error when it can't be had."""
    spec = DATASETS[dataset]
    check_folder(root)
    try:
        return spec.source(str(root), train=train)  # checks every file's md5; writes nothing (root may be read-only)
    except (OSError, RuntimeError):  # absent, incomplete or corrupt
        if not download:
            raise UserError(
                f"{spec.title} {where_it_stands(root, spec)}. This tool reads the data set "
                f"and downloads nothing: point --data-dir at the folder that holds it, or fetch it with "
                f"python -m sgdr.data --data-dir {root}{'' if dataset == 'cifar10' else f' --dataset {dataset}'} "
                "(from the project's folder)."
            ) from None
        fetch(root, dataset)
    try:
        return spec.source(str(root), train=train)
    except (OSError, RuntimeError) as error:
        raise UserError(_data_unavailable(root, spec, error)) from None


def fetch(root: str | Path, dataset: str = "cifar10") -> None:
    """Download and unpack the data set into ``root`` unless it is there already: once per machine.

    torchvision writes the archive straight to its final name and unpacks it in place, so several
    processes fetching at once (torchrun's ranks, run.sh --parallel's jobs) cut off or rewrite the
    files the others are checking or reading. A lock on a file in ``root`` lets one process
    download and unpack while the others wait; they then find the data complete. An archive left
    half-written by a killed process fails torchvision's md5 check and is downloaded again.
    """
    spec = DATASETS[dataset]
    check_folder(root)
    try:
        spec.source(str(root), train=False)  # complete already: nothing to lock or write
        return
    except (OSError, RuntimeError):
        pass
    try:
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, f".{spec.source.filename}.lock"), "a") as lock:  # unlocked when closed
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"Another process is fetching {spec.title} into {root}; waiting for it.", flush=True)
                fcntl.flock(lock, fcntl.LOCK_EX)
            spec.source(str(root), train=False, download=True)  # checks, downloads and unpacks what is missing
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad checksum, RuntimeError
        raise UserError(_data_unavailable(root, spec, error)) from None


def check_folder(root: str | Path) -> None:
    """A ``UserError`` when ``root`` cannot be a folder of data: a file, a link that leads nowhere (a loop),
    or a path through a file."""
    path = Path(root)
    if path.is_symlink() and not path.exists():
        raise UserError(
            f"--data-dir {root} is a link that leads nowhere (to itself, or to nothing): point it at a folder."
        )
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        said = "is a file, not a folder" if existing == path else f"goes through {existing}, which is a file"
        raise UserError(f"--data-dir {root} {said}: point it at a folder (created if it does not exist).")


def where_it_stands(root: str | Path, spec: Spec) -> str:
    """What ``root`` holds of the data set, for a message: nothing, part of it, or all of its files but with
    other checksums than the published ones."""
    folder = Path(root) / spec.source.base_folder
    names = [name for name, _ in spec.source.train_list + spec.source.test_list] + [spec.source.meta["filename"]]
    missing = [name for name in names if not (folder / name).is_file()]
    if len(missing) == len(names):
        return f"is not in {folder}"
    if missing:
        return f"is incomplete in {folder} (no {', '.join(missing)})"
    return (
        f"fails its checksums in {folder}: the files are there, but they differ from the published ones "
        "(re-packed or damaged; the download replaces them)"
    )


def _data_unavailable(root: str | Path, spec: Spec, error: Exception) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    folder = os.path.join(root, spec.source.base_folder)
    return (
        f"{spec.title} {where_it_stands(root, spec)}, and could not be downloaded ({reason}).\n"
        f"Download {spec.source.url} on a machine with a network and put the file in "
        f"{root}/ (it is checked and unpacked on the next run), or unpack it there so that "
        f"{os.path.join(folder, spec.first_file)} exists. Or point --data-dir at the folder that holds it."
    )


def _first(dataset: Dataset, count: int | None, flag: str, root: str | Path) -> Dataset:
    """The first ``count`` images (all of them when ``count`` is None)."""
    if count is None:
        return dataset
    if count > len(dataset):
        raise UserError(f"{flag} {count} is larger than the {len(dataset)} images found in {root}.")
    return Subset(dataset, range(count))


def load_splits(
    data_dir: str | Path, train_subset: int | None = None, test_subset: int | None = None, dataset: str = "cifar10"
) -> tuple[Dataset, Dataset]:
    """The training and test sets (PIL images and labels), cut to their first N images if asked."""
    train_set = _first(load_cifar(data_dir, True, dataset), train_subset, "--train-subset", data_dir)
    test_set = _first(load_cifar(data_dir, False, dataset), test_subset, "--test-subset", data_dir)
    return train_set, test_set


def load_test_set(data_dir: str | Path, test_subset: int | None = None, dataset: str = "cifar10") -> Dataset:
    """The test set as ``load_splits`` gives it, for the tools that only read: nothing is downloaded or
    created (no folder, no lock) when it is not there."""
    return _first(load_cifar(data_dir, False, dataset, download=False), test_subset, "--test-subset", data_dir)


def load_train_set(data_dir: str | Path, train_subset: int | None = None, dataset: str = "cifar10") -> Dataset:
    """The training set as ``load_splits`` gives it, for the tools that only read (nothing downloaded)."""
    return _first(load_cifar(data_dir, True, dataset, download=False), train_subset, "--train-subset", data_dir)


class InMemoryCIFAR(Dataset):
    """Images in CIFAR's in-memory layout (N x 32 x 32 x 3 uint8, and labels), served as
    torchvision's CIFAR10 serves them: a PIL image and an int."""

    def __init__(self, data: np.ndarray, targets: list[int]):
        self.data, self.targets = data, targets

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.data[index]), self.targets[index]


def data_digest(*datasets: Dataset) -> str:
    """A short digest of the images and labels of ``datasets`` (CIFAR sets or Subsets of them), in
    order: the same data wherever its folder is, other data (other images, another subset) another
    digest. About a second for the whole of CIFAR-10."""
    digest = hashlib.blake2b(digest_size=8)
    for dataset in datasets:
        base, index = (dataset.dataset, list(dataset.indices)) if isinstance(dataset, Subset) else (dataset, None)
        images, labels = np.asarray(base.data), np.asarray(base.targets, dtype=np.int64)
        if index is not None:
            picked = slice(0, len(index)) if index == list(range(len(index))) else index
            images, labels = images[picked], labels[picked]
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()
