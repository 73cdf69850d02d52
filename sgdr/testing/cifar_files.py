"""Tiny data sets in CIFAR-10's own on-disk format, so tests run torchvision's real loader.

torchvision verifies each file's md5 against its class table; a test swaps that table for
the sums of the files written here (``use_checksums_of``); sgdr/testing/harness.py does the same
in a fresh process.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{k}" for k in range(1, 6)]


def _batch(rng: np.random.Generator, count: int, label: str, classes: int = 10) -> dict:
    labels = [int(x) for x in rng.integers(0, classes, count)]
    # Each class gets its own mean colour, so a network can learn something in a few steps.
    base = np.array(labels, dtype=np.int64)[:, None] * (200 // classes) + 30
    images = np.clip(base + rng.integers(-30, 30, (count, 3072)), 0, 255).astype(np.uint8)
    key = "labels" if classes == 10 else "fine_labels"
    batch = {"batch_label": label, key: labels, "data": images, "filenames": [f"{i}.png" for i in range(count)]}
    if classes == 100:
        batch["coarse_labels"] = [x // 5 for x in labels]
    return batch


def write_cifar10(root: Path, train_per_file: int = 8, test: int = 16, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with 5 training files of ``train_per_file`` images and a test file."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in TRAIN_FILES:
        (folder / name).write_bytes(pickle.dumps(_batch(rng, train_per_file, name)))
    (folder / "test_batch").write_bytes(pickle.dumps(_batch(rng, test, "test_batch")))
    meta = {"label_names": LABEL_NAMES, "num_cases_per_batch": train_per_file, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return Path(root)


def write_cifar100(root: Path, train: int = 40, test: int = 16, seed: int = 0) -> Path:
    """``root/cifar-100-python`` with its ``train``, ``test`` and ``meta`` files (fine and coarse labels)."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (folder / "train").write_bytes(pickle.dumps(_batch(rng, train, "training batch 1 of 1", 100)))
    (folder / "test").write_bytes(pickle.dumps(_batch(rng, test, "testing batch 1 of 1", 100)))
    meta = {
        "fine_label_names": [f"class{i}" for i in range(100)],
        "coarse_label_names": [f"super{i}" for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta))
    return Path(root)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def use_checksums_of(root: Path, setattr_=setattr) -> None:
    """Make torchvision's CIFAR10 and CIFAR100 accept the files under ``root`` (``setattr_``: e.g.
    monkeypatch.setattr), for whichever of the two data sets ``root`` holds, and its archive
    (``cifar-10-python.tar.gz``) when ``root`` holds one (see ``write_archive``)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    for source in (CIFAR10, CIFAR100):
        folder = Path(root) / source.base_folder
        if folder.is_dir():
            setattr_(source, "train_list", [[n, _md5(folder / n)] for n, _ in source.train_list])
            setattr_(source, "test_list", [[n, _md5(folder / n)] for n, _ in source.test_list])
            setattr_(source, "meta", {**source.meta, "md5": _md5(folder / source.meta["filename"])})
            if (Path(root) / source.filename).is_file():
                setattr_(source, "tgz_md5", _md5(Path(root) / source.filename))


def write_archive(root: Path) -> Path:
    """``root/cifar-10-python.tar.gz``: the files ``write_cifar10`` wrote under ``root``, packed as the
    real archive is (the ``cifar-10-batches-py`` folder, gzipped tar)."""
    import tarfile

    path = Path(root) / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(Path(root) / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path
