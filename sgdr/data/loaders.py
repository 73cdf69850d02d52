"""The loaders that feed a run: CIFAR held on the device and augmented there in batches, or the reference
DataLoader with PIL transforms; both yield batches on the training device."""

from __future__ import annotations

import itertools
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from sgdr.cli import UserError
from sgdr.data.cifar import DATASETS
from sgdr.training.recipes import TUTORIAL, Recipe


def train_transform(dataset: str = "cifar10") -> transforms.Compose:
    """The reference augmentation: flip (p=0.5), 32x32 crop of a 4-pixel reflect-padded image."""
    spec = DATASETS[dataset]
    return transforms.Compose(
        [
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomCrop(32, padding=4, padding_mode="reflect"),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )


def test_transform(dataset: str = "cifar10") -> transforms.Compose:
    spec = DATASETS[dataset]
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])


class _Transformed(Dataset):
    """A dataset of PIL images with a transform applied to each (the reference pipeline)."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.transform(image), label


def _arrays(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(N x 3 x 32 x 32 uint8 images, N labels) of a CIFAR dataset or a Subset of one."""
    if isinstance(dataset, Subset):
        images, labels = _arrays(dataset.dataset)
        index = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return images.index_select(0, index), labels.index_select(0, index)
    images = torch.from_numpy(np.asarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(dataset.targets, dtype=torch.long)


def _pad_table(device: torch.device, padding: str) -> torch.Tensor:
    """Source index of each position -4..35 of a row or column padded by 4 pixels: reflected
    into 0..31, or -1 (a zero) outside the image."""
    position = torch.arange(-4, 36, device=device)
    if padding == "zeros":
        return torch.where((position < 0) | (position > 31), -1, position)
    position = position.abs()
    return torch.where(position > 31, 62 - position, position)


def augment(
    images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: str = "reflect"
) -> torch.Tensor:
    """Flip each image when ``flip``, pad it by 4 pixels (``reflect``: the tutorial's; ``zeros``:
    the SGDR script's), crop 32x32 at offset (dy, dx) in 0..8, each image with its own draws.

    Done as one gather: output pixel (i, j) is source pixel (P[dy + i], P[dx + j]), with the
    column mirrored (31 - c) for flipped images, where P maps -4..35 to a source row or column
    (or to a zero). The padded image is never built. ``images``: B x C x 32 x 32, any dtype.
    """
    b, c = images.shape[:2]
    table = _pad_table(images.device, padding)
    span = torch.arange(32, device=images.device)
    rows = table[dy[:, None] + span]
    cols = table[dx[:, None] + span]
    cols = torch.where(flip[:, None] & (cols >= 0), 31 - cols, cols)
    flat = rows[:, :, None] * 32 + cols[:, None, :]
    source = images.reshape(b, c, 1024)
    if padding == "zeros":  # outside positions read an extra zero pixel at index 1024
        flat = torch.where((rows[:, :, None] < 0) | (cols[:, None, :] < 0), 1024, flat)
        source = torch.cat([source, source.new_zeros(b, c, 1)], dim=2)
    flat = flat.view(b, 1, 1024).expand(b, c, 1024)
    return source.gather(2, flat).view(b, c, 32, 32)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 -> float as ToTensor and Normalize do it, operation for operation (same bits)."""
    return images.float().div_(255).sub_(mean).div_(std)


def mean_image(dataset: Dataset) -> torch.Tensor:
    """The per-pixel mean (1 x 3 x 32 x 32) of ``dataset``'s images scaled to [0, 1]: what the
    SGDR script subtracts from every image, computed over the images a run trains on."""
    images, _ = _arrays(dataset)
    return images.double().div(255).mean(dim=0, keepdim=True).float()


def epoch_batches(samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches in an epoch of ``samples``: full ones only with ``drop_last``, else the last partial one too."""
    return samples // batch_size if drop_last else -(-samples // batch_size)


class DeviceLoader:
    """CIFAR held on the training device as one uint8 tensor; batches are drawn, augmented
    and normalised there with batched tensor operations, so the device never waits for Python.

    By default the tutorial's batches (shuffled every epoch, last partial batch kept) and the
    same augmentation distribution, each image with its own crop and flip. ``mirrored``: the
    SGDR script's epoch instead, every image once plain and once mirrored, shuffled together
    (2N samples, no random flip). ``padding`` and ``drop_last`` as the recipe says. All
    randomness comes from ``generator`` (on the CPU), drawn once per epoch: a permutation,
    then per sample a row offset, a column offset and (unless ``mirrored``) a flip. Process
    ``rank`` of ``world`` gets its share of every batch (the same number of batches on every
    process). Inputs are ``(x / 255 - mean) / std``, with ``mean`` and ``std`` per channel
    (``stats``' data set) unless given (e.g. a mean image and a std of 1).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator | None = None,
        augment: bool = False,
        channels_last: bool = False,
        stats: str = "cifar10",
        rank: int = 0,
        world: int = 1,
        mirrored: bool = False,
        padding: str = "reflect",
        drop_last: bool = False,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ):
        images, labels = _arrays(dataset)
        self.rank, self.world = rank, world
        self.dataset = dataset
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size, self.device, self.generator, self.augment = batch_size, device, generator, augment
        self.mirrored, self.padding, self.drop_last = mirrored, padding, drop_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.mean = (torch.tensor(DATASETS[stats].mean).view(1, 3, 1, 1) if mean is None else mean).to(device)
        self.std = (torch.tensor(DATASETS[stats].std).view(1, 3, 1, 1) if std is None else std).to(device)

    @property
    def samples(self) -> int:
        """Samples an epoch draws from: every image, and with ``mirrored`` every mirror too."""
        return len(self.labels) * (2 if self.mirrored else 1)

    def __len__(self) -> int:
        return epoch_batches(self.samples, self.batch_size, self.drop_last)

    def _draws(self) -> tuple[torch.Tensor, ...]:
        n, g = len(self.labels), self.generator
        if g is None:  # evaluation: in order, as stored
            return (torch.arange(n, device=self.device),)
        order = torch.randperm(self.samples, generator=g)
        if not self.augment:
            return (order.to(self.device),)
        dy = torch.randint(0, 9, (self.samples,), generator=g)
        dx = torch.randint(0, 9, (self.samples,), generator=g)
        # Sample k >= n is the mirror of image k - n.
        flip = order >= n if self.mirrored else torch.rand(n, generator=g) < 0.5
        return tuple(t.to(self.device) for t in (order % n, dy, dx, flip))

    def __iter__(self):
        draws = self._draws()
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            # With several processes each takes its part of the global batch, and the draws made
            # for those positions: together they train exactly the batch one process would.
            index, *random = (t[start : start + self.batch_size].tensor_split(self.world)[self.rank] for t in draws)
            # Normalised first: a per-channel normalisation commutes with the crop (same bits as
            # cropping the raw pixels), a mean image does not, and zero padding means the mean pixel.
            images = normalize(self.images.index_select(0, index), self.mean, self.std)
            if random:
                images = augment(images, *random, padding=self.padding)
            yield images.contiguous(memory_format=self.memory_format), self.labels.index_select(0, index)


class ToDevice:
    """A DataLoader whose batches arrive on the training device (and memory format)."""

    world = 1  # one process only

    def __init__(self, loader: DataLoader, device: torch.device, channels_last: bool = False, stats: str = "cifar10"):
        self.loader, self.device, self.stats = loader, device, stats
        self.dataset = loader.dataset.dataset  # the images, under the reference transforms
        self.samples, self.batch_size, self.drop_last = len(self.dataset), loader.batch_size, loader.drop_last
        self.mean, self.std = (torch.tensor(v).view(1, 3, 1, 1) for v in (DATASETS[stats].mean, DATASETS[stats].std))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield (
                images.to(self.device, non_blocking=True, memory_format=self.memory_format),
                labels.to(self.device, non_blocking=True),
            )


def in_order(dataset: Dataset, like, batch_size: int):
    """``dataset`` read as ``like`` (a validation loader of this module's) reads its images: in order, not
    augmented, on the same device, layout and normalisation; all of it in every process. A last batch of a
    single image, on which BatchNorm cannot compute statistics, is left out."""
    single = len(dataset) % batch_size == 1
    if isinstance(like, DeviceLoader):
        layout = dict(channels_last=like.memory_format is torch.channels_last, mean=like.mean, std=like.std)
        return DeviceLoader(dataset, batch_size, like.device, drop_last=single, **layout)
    plain = DataLoader(_Transformed(dataset, test_transform(like.stats)), batch_size=batch_size, drop_last=single)
    return ToDevice(plain, like.device, like.memory_format is torch.channels_last, like.stats)


def batch_sizes(loader) -> list[int]:
    """The sizes of an epoch's batches of ``loader`` (any of this module's), largest first: the full batch and,
    unless it is dropped, the last partial one; under torchrun rank 0's share of them."""
    samples, full = loader.samples, loader.batch_size
    counts = [full] * (samples // full) + ([samples % full] if samples % full and not loader.drop_last else [])
    return sorted({-(-count // loader.world) for count in counts[: len(loader)]}, reverse=True)


class WithoutLastBatch:
    """A training loader without its last batch, for a last batch BatchNorm cannot train on (one image).

    The loader still draws that batch's shuffle and augmentation, so every other batch is what it
    would be with it.
    """

    def __init__(self, loader):
        self.loader, self.dataset = loader, loader.dataset
        self.samples, self.batch_size, self.drop_last, self.world = (
            loader.samples,
            loader.batch_size,
            loader.drop_last,
            loader.world,
        )

    def __len__(self) -> int:
        return len(self.loader) - 1

    def __iter__(self):
        return itertools.islice(self.loader, len(self))


LOADERS = ("device", "torchvision")


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    """Worker processes ignore Ctrl-C and SIGTERM: the main process stops the run at a batch
    boundary and then shuts them down (a worker that died first would break that batch)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loaders(
    train_set: Dataset,
    test_set: Dataset,
    kind: str,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    workers: int = 0,
    channels_last: bool = False,
    dataset: str = "cifar10",
    rank: int = 0,
    world: int = 1,
    recipe: Recipe = TUTORIAL,
):
    """Training and validation loaders of either kind; both yield batches on ``device``.

    ``device``: the on-device path (DeviceLoader). ``torchvision``: the reference pipeline,
    a DataLoader over PIL transforms in ``workers`` processes. Either way ``generator`` owns
    the shuffle and the augmentation draws (through the worker seeds for torchvision), so one
    seed fixes every epoch. ``rank`` and ``world``: this process's share (on-device loader only).
    ``recipe`` decides the epoch, padding, inputs and last batch (see recipes.py); the
    torchvision pipeline is the tutorial's only.
    """
    if kind == "device":
        shared = dict(channels_last=channels_last, stats=dataset, rank=rank, world=world)
        if recipe.mean_image:  # the training images' mean image, no division by a std
            shared.update(mean=mean_image(train_set), std=torch.ones(1, 3, 1, 1))
        train = DeviceLoader(
            train_set,
            batch_size,
            device,
            generator,
            augment=True,
            mirrored=recipe.mirrored_epoch,
            padding=recipe.padding,
            drop_last=recipe.drop_last,
            **shared,
        )
        return train, DeviceLoader(test_set, recipe.test_batch_size or batch_size, device, **shared)
    if recipe is not TUTORIAL:
        raise UserError(
            f"--loader torchvision trains the tutorial's recipe only; --recipe {recipe.name} needs --loader device."
        )
    if world > 1:
        raise UserError("--loader torchvision runs in one process; under torchrun use the default --loader device.")
    common = dict(
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_leave_signals_to_the_main_process,
    )
    train = DataLoader(_Transformed(train_set, train_transform(dataset)), shuffle=True, generator=generator, **common)
    val = DataLoader(_Transformed(test_set, test_transform(dataset)), shuffle=False, **common)
    return ToDevice(train, device, channels_last, dataset), ToDevice(val, device, channels_last, dataset)
