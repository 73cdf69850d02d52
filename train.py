"""Train ResNet34 on CIFAR-10 with the multistep schedule or SGDR's cosine annealing with warm restarts."""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import cifar
import plot
import runfiles
from errors import UserError, reports_user_errors
from models import build_model, count_parameters
from schedules import Schedule, build_schedule

# The reference optimiser: SGD, momentum 0.9 (dampening 0, no Nesterov), weight decay 5e-4.
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
# Drawing the figures takes ~0.3 s; pickles are written every epoch, figures at most this
# often (in seconds) and after the last epoch.
FIGURE_INTERVAL = 60.0


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _subset_of(total: int, what: str):
    parse_positive = _int_at_least(1)

    def parse(text: str) -> int:
        value = parse_positive(text)
        if value > total:
            raise argparse.ArgumentTypeError(f"CIFAR-10 has {total:,} {what} images, got {value:,}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The reference flags (-wr, -t0, -tm, -e) with their defaults, and options added beside them."""
    parser = argparse.ArgumentParser(description=__doc__)
    positive = _int_at_least(1)
    ref = parser.add_argument_group("reference flags")
    ref.add_argument("-wr", "--warm-restart", action="store_true",
                     help="cosine annealing with warm restarts, stepped every batch (default: multistep)")
    ref.add_argument("-t0", "--t-zero", type=positive, default=50, help="T_0: epochs until the first restart (default: 50)")
    ref.add_argument("-tm", "--t-mult", type=positive, default=1, help="T_mult: factor by which each cycle grows (default: 1)")
    ref.add_argument("-e", "--epochs", type=positive, default=100, help="epochs to train (default: 100)")
    extra = parser.add_argument_group("added options")
    extra.add_argument("--milestones", type=positive, nargs="+", default=[60, 120, 160], metavar="EPOCH",
                       help="epochs at which the multistep schedule multiplies the lr by 0.2 (default: 60 120 160)")
    extra.add_argument("-b", "--batch-size", type=positive, default=128, help="images per batch (default: 128)")
    extra.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py (default: data)")
    extra.add_argument("--output-dir", default="outputs", help="folder for figures and pickles (default: outputs)")
    extra.add_argument("--train-subset", type=_subset_of(cifar.TRAIN_IMAGES, "training"), metavar="N",
                       help="train on the first N training images only (default: all 50,000)")
    extra.add_argument("--val-subset", type=_subset_of(cifar.TEST_IMAGES, "test"), metavar="N",
                       help="validate on the first N test images only (default: all 10,000)")
    extra.add_argument("--seed", type=_int_at_least(0), help="seed for a reproducible run (default: a fresh one, printed)")
    extra.add_argument("--workers", type=_int_at_least(0), default=min(4, os.cpu_count() or 1),
                       help="data-loading worker processes (default: min(4, CPUs))")
    extra.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if any(b <= a for a, b in zip(args.milestones, args.milestones[1:])):
        parser.error(f"argument --milestones: must increase strictly, got {' '.join(map(str, args.milestones))}")
    return args


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available here; use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported.")
    return device


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


def train_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    epoch: int,
    device: torch.device,
    lrs: list[float],
) -> float:
    """One pass over ``loader``; returns the mean training loss per sample.

    Appends to ``lrs`` the rate each batch is trained with. The loss is summed on the
    device and read once at the end, so the loop never waits for the device.
    """
    model.train()
    batches = len(loader)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    samples = 0
    for i, (images, labels) in enumerate(tqdm(loader, desc="Training", total=batches, disable=None)):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        lrs.append(current_lr(optimizer))
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        schedule.after_batch(epoch, i, batches)
        loss_sum += loss.detach() * labels.size(0)
        samples += labels.size(0)
    return (loss_sum / samples).item()


@torch.inference_mode()
def validate(model: nn.Module, loader, device: torch.device) -> float:
    """Mean cross-entropy per sample over ``loader`` (the reference averaged batch means)."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    samples = 0
    for images, labels in tqdm(loader, desc="Validation", total=len(loader), disable=None):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        loss_sum += F.cross_entropy(model(images), labels, reduction="sum")
        samples += labels.size(0)
    return (loss_sum / samples).item()


def save_outputs(files: runfiles.RunFiles, history: dict[str, list[float]], figures: bool) -> None:
    """Write the reference files for the epochs so far, each atomically; figures only if asked."""
    runfiles.save_floats(files.train_loss, history["train_loss"])
    runfiles.save_floats(files.val_loss, history["val_loss"])
    if files.lr_values is not None:
        runfiles.save_floats(files.lr_values, history["lr"])
    if figures:
        plot.save_loss_figure(history["train_loss"], history["val_loss"], files.loss_figure)
        if files.lr_figure is not None:
            plot.save_lr_figure(history["lr"], files.lr_figure)


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    """The whole experiment for parsed ``args``; returns the per-epoch losses and per-batch rates."""
    device = pick_device(args.device)
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_loader, val_loader = cifar.build_loaders(
        args.data_dir, args.batch_size, args.workers, generator, device, args.train_subset, args.val_subset
    )
    files = runfiles.run_files(args.output_dir, args.warm_restart, args.t_zero, args.t_mult)

    model = build_model(pretrained=False, requires_grad=True, num_classes=10).to(device)
    total, trainable = count_parameters(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    schedule = build_schedule(optimizer, args.warm_restart, args.t_zero, args.t_mult, args.milestones)
    print(f"Computation device: {device}")
    print(f"{total:,} total parameters.")
    print(f"{trainable:,} training parameters.")
    print(f"Seed: {seed} (--seed {seed} repeats this run)")
    print(schedule.describe())
    print(f"{len(train_loader.dataset):,} training images in {len(train_loader)} batches, "
          f"{len(val_loader.dataset):,} validation images in {len(val_loader)} batches.")

    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "lr": []}
    figures_due = time.monotonic() + FIGURE_INTERVAL
    for epoch in range(args.epochs):
        started = time.perf_counter()
        print(f"[INFO]: Epoch {epoch + 1} of {args.epochs}")
        print(f"LR at beginning of epoch: {current_lr(optimizer)}")
        train_loss = train_epoch(model, train_loader, optimizer, schedule, epoch, device, history["lr"])
        val_loss = validate(model, val_loader, device)
        schedule.after_epoch()
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        figures = epoch == args.epochs - 1 or time.monotonic() >= figures_due
        save_outputs(files, history, figures)
        if figures:
            figures_due = time.monotonic() + FIGURE_INTERVAL
        print(f"LR at end of epoch: {current_lr(optimizer)}")
        print(f"Training loss: {train_loss:.3f}")
        print(f"Validation loss: {val_loss:.3f}")
        print(f"Epoch time: {time.perf_counter() - started:.1f} s")
        print("-" * 50)
    print("Finished Training")
    print(f"Saved {', '.join(str(p) for p in files.all())}")
    return history


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
