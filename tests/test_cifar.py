"""The reference data path: augmentation, normalisation, loading, batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

import cifar
from cifar_format import use_checksums_of, write_cifar10
from errors import UserError

SPEC_MEAN = (0.4914, 0.4822, 0.4465)
SPEC_STD = (0.247, 0.243, 0.261)
CPU = torch.device("cpu")


def to_uint8(normalised: torch.Tensor) -> np.ndarray:
    """Undo Normalize and ToTensor: CHW floats back to the HWC bytes they came from."""
    mean = torch.tensor(SPEC_MEAN).view(3, 1, 1)
    std = torch.tensor(SPEC_STD).view(3, 1, 1)
    return (normalised * std + mean).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_normalisation_uses_the_reference_constants():
    assert cifar.MEAN == SPEC_MEAN and cifar.STD == SPEC_STD
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    got = cifar.val_transform()(Image.fromarray(image))
    want = (torch.from_numpy(image).permute(2, 0, 1) / 255 - torch.tensor(SPEC_MEAN).view(3, 1, 1)) / torch.tensor(
        SPEC_STD
    ).view(3, 1, 1)
    assert got.shape == (3, 32, 32)
    assert torch.allclose(got, want, atol=1e-6)


def test_training_augmentation_is_a_fair_flip_and_a_uniform_crop_of_a_reflect_padded_image():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    # Every output the reference can produce: flip first, then a crop of the reflect-padded image.
    candidates = {}
    for flip in (False, True):
        source = image[:, ::-1] if flip else image
        padded = np.pad(source, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        for dy in range(9):
            for dx in range(9):
                candidates[padded[dy : dy + 32, dx : dx + 32].tobytes()] = (flip, dy, dx)
    torch.manual_seed(0)
    transform = cifar.train_transform()
    n = 2000
    draws = [candidates.get(to_uint8(transform(Image.fromarray(image))).tobytes()) for _ in range(n)]
    assert None not in draws, "an output is no flip/crop of the reflect-padded image (zero padding?)"
    flips = sum(flip for flip, _, _ in draws)
    assert 0.45 * n < flips < 0.55 * n
    for axis in (1, 2):
        counts = Counter(d[axis] for d in draws)
        assert sorted(counts) == list(range(9)), "crop offsets must cover 0..8"
        assert all(150 < c < 300 for c in counts.values()), counts  # uniform: n/9 = 222 each


def test_loaders_keep_the_last_partial_batch_and_reshuffle_every_epoch(cifar_dir):
    generator = torch.Generator().manual_seed(3)
    train, val = cifar.build_loaders(cifar_dir, 16, 0, generator, CPU)
    assert [len(labels) for _, labels in train] == [16, 16, 8]
    assert [len(labels) for _, labels in val] == [16]
    first, second = ([labels.tolist() for _, labels in train] for _ in range(2))
    assert first != second
    images, _ = next(iter(val))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32


def test_the_same_seed_gives_the_same_batches(cifar_dir):
    def epoch(seed):
        torch.manual_seed(seed)  # augmentation draws (no worker processes)
        train, _ = cifar.build_loaders(cifar_dir, 8, 0, torch.Generator().manual_seed(seed), CPU)
        return torch.cat([images for images, _ in train])

    assert torch.equal(epoch(5), epoch(5))
    assert not torch.equal(epoch(5), epoch(6))


def test_full_cifar10_gives_the_reference_batch_counts(tmp_path, monkeypatch):
    write_cifar10(tmp_path, train_per_file=10_000, test=10_000)
    use_checksums_of(tmp_path, monkeypatch.setattr)
    train, val = cifar.build_loaders(tmp_path, 128, 0, torch.Generator(), CPU)
    assert (len(train.dataset), len(val.dataset)) == (50_000, 10_000)
    assert (len(train), len(val)) == (391, 79)


def test_subsets_take_the_first_images_and_must_fit(cifar_dir):
    train, val = cifar.build_loaders(cifar_dir, 8, 0, torch.Generator(), CPU, train_subset=12, val_subset=5)
    assert (len(train.dataset), len(val.dataset)) == (12, 5)
    assert list(train.dataset.indices) == list(range(12))
    with pytest.raises(UserError, match="--train-subset 41 is larger than the 40 images"):
        cifar.build_loaders(cifar_dir, 8, 0, torch.Generator(), CPU, train_subset=41)


def test_missing_data_offline_says_where_it_looked_and_how_to_fix_it(tmp_path, offline):
    with pytest.raises(UserError) as caught:
        cifar.load_cifar10(tmp_path / "nowhere", train=True)
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "Name or service not known" in message
    assert "--data-dir" in message


def test_corrupt_data_offline_gets_the_same_clear_message(tiny_cifar, offline):
    # The tiny files fail torchvision's real checksums: corrupt as far as it can tell.
    with pytest.raises(UserError, match="incomplete or corrupt"):
        cifar.load_cifar10(tiny_cifar, train=False)
