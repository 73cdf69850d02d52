"""Tiny data sets in CIFAR-10's own on-disk format, so tests run torchvision's real loader.

torchvision verifies each file's md5 against its class table; a test swaps that table for
the sums of the files written here (``use_checksums_of``); tests/harness.py does the same
in a fresh process.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{k}" for k in range(1, 6)]


def _batch(rng: np.random.Generator, count: int, label: str) -> dict:
    labels = [int(x) for x in rng.integers(0, 10, count)]
    # Each class gets its own mean colour, so a network can learn something in a few steps.
    base = np.array(labels, dtype=np.int64)[:, None] * 20 + 30
    images = np.clip(base + rng.integers(-30, 30, (count, 3072)), 0, 255).astype(np.uint8)
    return {"batch_label": label, "labels": labels, "data": images, "filenames": [f"{i}.png" for i in range(count)]}


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


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def use_checksums_of(root: Path, setattr_=setattr) -> None:
    """Make torchvision's CIFAR10 accept the files under ``root`` (``setattr_``: e.g. monkeypatch.setattr)."""
    from torchvision.datasets import CIFAR10

    folder = Path(root) / CIFAR10.base_folder
    setattr_(CIFAR10, "train_list", [[n, _md5(folder / n)] for n in TRAIN_FILES])
    setattr_(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    setattr_(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})

