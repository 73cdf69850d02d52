"""The reference data path: augmentation, normalisation, loading, batches."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from sgdr.cli import UserError
from sgdr.data import cifar, loaders
from sgdr.testing.cifar_files import use_checksums_of, write_cifar10

SPEC_MEAN = (0.4914, 0.4822, 0.4465)
SPEC_STD = (0.247, 0.243, 0.261)
CPU = torch.device("cpu")


def to_uint8(normalised: torch.Tensor) -> np.ndarray:
    """Undo Normalize and ToTensor: CHW floats back to the HWC bytes they came from."""
    mean = torch.tensor(SPEC_MEAN).view(3, 1, 1)
    std = torch.tensor(SPEC_STD).view(3, 1, 1)
    return (normalised * std + mean).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def reference_outputs(image: np.ndarray) -> dict[bytes, tuple[bool, int, int]]:
    """Every image the reference augmentation can make of ``image`` (flip first, then a 32x32 crop
    of the 4-pixel reflect-padded image), as bytes, with its (flip, dy, dx)."""
    outputs = {}
    for flip in (False, True):
        source = image[:, ::-1] if flip else image
        padded = np.pad(source, ((4, 4), (4, 4), (0, 0)), mode="reflect")
        for dy in range(9):
            for dx in range(9):
                outputs[padded[dy : dy + 32, dx : dx + 32].tobytes()] = (flip, dy, dx)
    return outputs


def test_normalisation_uses_the_reference_constants():
    assert cifar.MEAN == SPEC_MEAN and cifar.STD == SPEC_STD
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    got = loaders.test_transform()(Image.fromarray(image))
    want = (torch.from_numpy(image).permute(2, 0, 1) / 255 - torch.tensor(SPEC_MEAN).view(3, 1, 1)) / torch.tensor(
        SPEC_STD
    ).view(3, 1, 1)
    assert got.shape == (3, 32, 32)
    assert torch.allclose(got, want, atol=1e-6)


def test_training_augmentation_is_a_fair_flip_and_a_uniform_crop_of_a_reflect_padded_image():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    candidates = reference_outputs(image)
    torch.manual_seed(0)
    transform = loaders.train_transform()
    n = 2000
    draws = [candidates.get(to_uint8(transform(Image.fromarray(image))).tobytes()) for _ in range(n)]
    assert None not in draws, "an output is no flip/crop of the reflect-padded image (zero padding?)"
    flips = sum(flip for flip, _, _ in draws)
    assert 0.45 * n < flips < 0.55 * n
    for axis in (1, 2):
        counts = Counter(d[axis] for d in draws)
        assert sorted(counts) == list(range(9)), "crop offsets must cover 0..8"
        assert all(150 < c < 300 for c in counts.values()), counts  # uniform: n/9 = 222 each


def loaders_of(root, kind: str, batch_size: int, seed: int = 0, **subsets):
    train_set, val_set = cifar.load_splits(root, **subsets)
    return loaders.make_loaders(train_set, val_set, kind, batch_size, torch.Generator().manual_seed(seed), CPU)


@pytest.mark.parametrize("kind", loaders.LOADERS)
def test_loaders_keep_the_last_partial_batch_and_reshuffle_every_epoch(cifar_dir, kind):
    train, val = loaders_of(cifar_dir, kind, 16, seed=3)
    assert len(train) == 3 and len(val) == 1
    assert [len(labels) for _, labels in train] == [16, 16, 8]
    assert [len(labels) for _, labels in val] == [16]
    first, second = ([labels.tolist() for _, labels in train] for _ in range(2))
    assert first != second
    assert sorted(sum(first, [])) == sorted(cifar.load_cifar(cifar_dir, True).targets)  # every image once
    images, labels = next(iter(val))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.long


@pytest.mark.parametrize("kind", loaders.LOADERS)
def test_the_same_seed_gives_the_same_batches(cifar_dir, kind):
    def epoch(seed):
        torch.manual_seed(seed)  # the torchvision path augments with the global generator (no workers)
        train, _ = loaders_of(cifar_dir, kind, 8, seed=seed)
        return torch.cat([images for images, _ in train])

    assert torch.equal(epoch(5), epoch(5))
    assert not torch.equal(epoch(5), epoch(6))


@pytest.mark.parametrize("kind", loaders.LOADERS)
def test_validation_batches_are_the_reference_tensors(cifar_dir, kind):
    _, val = loaders_of(cifar_dir, kind, 16)
    images, labels = next(iter(val))
    test_set = cifar.load_cifar(cifar_dir, False)
    want = torch.stack([loaders.test_transform()(test_set[i][0]) for i in range(16)])
    assert torch.equal(images, want)  # bit for bit, un-augmented and in order
    assert labels.tolist() == test_set.targets[:16]


def test_full_cifar10_gives_the_reference_batch_counts(tmp_path, monkeypatch):
    write_cifar10(tmp_path, train_per_file=10_000, test=10_000)
    use_checksums_of(tmp_path, monkeypatch.setattr)
    for kind in loaders.LOADERS:
        train, val = loaders_of(tmp_path, kind, 128)
        assert (len(train.dataset), len(val.dataset)) == (50_000, 10_000)
        assert (len(train), len(val)) == (391, 79)


def test_subsets_take_the_first_images_and_must_fit(cifar_dir):
    train_set, val_set = cifar.load_splits(cifar_dir, train_subset=12, test_subset=5)
    assert (len(train_set), len(val_set)) == (12, 5)
    assert list(train_set.indices) == list(range(12))
    train, _ = loaders.make_loaders(train_set, val_set, "device", 8, torch.Generator(), CPU)
    full = cifar.load_cifar(cifar_dir, True)
    assert sorted(sum((labels.tolist() for _, labels in train), [])) == sorted(full.targets[:12])
    with pytest.raises(UserError, match="--train-subset 41 is larger than the 40 images"):
        cifar.load_splits(cifar_dir, train_subset=41)


def test_on_device_augmentation_is_torchvisions_flip_reflect_pad_and_crop():
    """Every one of the 162 (flip, dy, dx) draws against torchvision's own functions on a PIL image."""
    import torchvision.transforms.functional as TF

    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    draws = [(flip, dy, dx) for flip in (False, True) for dy in range(9) for dx in range(9)]
    batch = torch.from_numpy(image).permute(2, 0, 1).expand(len(draws), 3, 32, 32)
    flip, dy, dx = (torch.tensor(column) for column in zip(*draws))
    got = loaders.augment(batch, dy, dx, flip)
    for k, (f, y, x) in enumerate(draws):
        pil = Image.fromarray(image)
        pil = TF.hflip(pil) if f else pil
        want = np.asarray(TF.crop(TF.pad(pil, 4, padding_mode="reflect"), y, x, 32, 32))
        assert np.array_equal(got[k].permute(1, 2, 0).numpy(), want), (f, y, x)


def test_on_device_normalisation_is_bit_for_bit_the_reference():
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = torch.tensor(SPEC_MEAN).view(1, 3, 1, 1), torch.tensor(SPEC_STD).view(1, 3, 1, 1)
    got = loaders.normalize(torch.from_numpy(image).permute(2, 0, 1)[None], mean, std)[0]
    assert torch.equal(got, loaders.test_transform()(Image.fromarray(image)))


def test_on_device_draws_are_uniform_and_independent_per_image():
    # 2,304 copies of one image: each output reveals its own (flip, dy, dx).
    image = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    n = 2304
    dataset = cifar.InMemoryCIFAR(np.repeat(image[None], n, axis=0), [0] * n)
    loader = loaders.DeviceLoader(dataset, 128, CPU, torch.Generator().manual_seed(0), augment=True)
    candidates = reference_outputs(image)
    draws, per_batch = [], []
    for images, _ in loader:
        batch = [candidates[to_uint8(x).tobytes()] for x in images]
        draws += batch
        per_batch.append(len(set(batch)))
    assert len(draws) == n
    assert 0.45 * n < sum(f for f, _, _ in draws) < 0.55 * n
    for axis in (1, 2):
        counts = Counter(d[axis] for d in draws)
        assert sorted(counts) == list(range(9)) and all(200 < c < 320 for c in counts.values()), counts  # 256 each
    # Independent: every (dy, dx) pair turns up, and the draws differ inside each batch (not one per batch).
    assert len({(dy, dx) for _, dy, dx in draws}) == 81
    assert min(per_batch) > 60
    pairs = Counter((draws[k][0], draws[k + 1][0]) for k in range(0, n - 1, 2))  # consecutive images' flips
    assert all(0.2 * n / 2 < c < 0.3 * n / 2 for c in pairs.values()), pairs


def test_missing_data_offline_says_where_it_looked_and_how_to_fix_it(tmp_path, offline):
    with pytest.raises(UserError) as caught:
        cifar.load_cifar(tmp_path / "nowhere", train=True)
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "Name or service not known" in message
    assert "--data-dir" in message


def test_files_that_fail_their_checksums_are_said_to_be_there(tiny_cifar, offline):
    # The tiny files fail torchvision's real checksums: there, but not the published ones.
    with pytest.raises(UserError) as caught:
        cifar.load_cifar(tiny_cifar, train=False)
    folder = tiny_cifar / "cifar-10-batches-py"
    assert f"CIFAR-10 fails its checksums in {folder}: the files are there, but they differ" in str(caught.value)
    assert "could not be downloaded" in str(caught.value)


def test_an_incomplete_data_set_names_the_files_it_lacks(tiny_cifar, tmp_path, offline):
    import shutil

    shutil.copytree(tiny_cifar, tmp_path / "part")
    (tmp_path / "part" / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"CIFAR-10 is incomplete in .*cifar-10-batches-py \(no data_batch_3\)"):
        cifar.load_cifar(tmp_path / "part", train=True)


def test_a_data_dir_that_cannot_be_a_folder_is_named_as_what_it_is(tmp_path, offline):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cases = {
        tmp_path / "file": "is a file, not a folder",
        tmp_path / "file" / "below": f"goes through {tmp_path / 'file'}, which is a file",
        tmp_path / "loop": "is a link that leads nowhere",
    }
    for root, said in cases.items():
        for load, args in ((cifar.load_cifar, (root, True)), (cifar.fetch, (root,))):
            with pytest.raises(UserError) as caught:
                load(*args)
            assert f"--data-dir {root} {said}" in str(caught.value) and "File exists" not in str(caught.value)
